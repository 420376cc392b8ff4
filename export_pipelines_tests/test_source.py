"""Source access: one Arrow-native interface to SQLite and PostgreSQL, values always bound."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from export_pipelines.columns import boolean, integer, number, string, timestamp
from export_pipelines.source.database import SourceDatabase, bind_settings

COLUMNS = [string("id"), number("score"), integer("n"), boolean("flag"), timestamp("at")]


def test_types_are_pinned_even_when_a_column_starts_with_nulls(source: SourceDatabase):
    """100k rows whose score is NULL for the first 70k: SQLite's driver must not guess int."""
    source.execute("DROP TABLE IF EXISTS probe")
    source.execute(
        "CREATE TABLE probe (id TEXT, score DOUBLE PRECISION, n INTEGER, flag BOOLEAN, at TIMESTAMP)"
    )
    rows = 100_000
    table = pa.table(
        {
            "id": [f"r{i:06d}" for i in range(rows)],
            "score": [None if i < 70_000 else i / 4 for i in range(rows)],
            "n": list(range(rows)),
            "flag": [i % 2 == 0 for i in range(rows)],
            "at": pa.array(
                [dt.datetime(2026, 3, 1) + dt.timedelta(seconds=i) for i in range(rows)],
                pa.timestamp("us"),
            ),
        }
    )
    try:
        source.ingest(iter([("probe", table)]))
        reader = source.stream(
            "SELECT id, score, n, flag, at FROM probe WHERE at >= :start ORDER BY id",
            {"start": dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)},
            COLUMNS,
        )
        batches = list(reader)
        if source.dialect == "sqlite":  # PostgreSQL's driver cuts batches by bytes (16 MB)
            assert len(batches) > 1, "the stream comes in several batches, not one table"
        result = pa.Table.from_batches(batches)
        assert result.schema.types == [
            pa.string(),
            pa.float64(),
            pa.int64(),
            pa.bool_(),
            pa.timestamp("us", tz="UTC"),
        ]
        assert result.num_rows == rows
        assert result.column("id").to_pylist() == sorted(result.column("id").to_pylist())
        assert result.column("score").null_count == 70_000
        assert result.column("score")[-1].as_py() == (rows - 1) / 4
        assert result.column("flag")[:2].to_pylist() == [True, False]
        assert result.column("at")[1].as_py() == dt.datetime(
            2026, 3, 1, 0, 0, 1, tzinfo=dt.timezone.utc
        )
    finally:
        source.execute("DROP TABLE IF EXISTS probe")


def test_values_are_parameters_never_sql(source: SourceDatabase):
    hostile = "x'); DROP TABLE organizations; --"
    count = source.scalar(
        "SELECT count(*) FROM organizations WHERE name = :name OR id = :name", {"name": hostile}
    )
    assert count == 0
    assert source.scalar("SELECT count(*) FROM organizations") > 0
    assert source.scalar("SELECT :v AS v", {"v": hostile}) == hostile


def test_streamed_values_are_bound_whatever_their_type(source: SourceDatabase):
    """Every parameter type a stream takes comes back equal, and a hostile text is only data
    (on PostgreSQL the values travel as settings the query reads, never as SQL text)."""
    hostile = "x'); DROP TABLE organizations; --"
    columns = [string("t"), integer("i"), number("f"), boolean("b"), timestamp("at")]
    at = dt.datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=dt.timezone.utc)
    sql = "SELECT :t AS t, :i AS i, :f AS f, :b AS b, :at AS at"
    if source.dialect == "postgresql":
        query, settings = bind_settings(sql, {"t": hostile, "i": 1, "f": 0.1, "b": True, "at": at})
        assert hostile not in query and "current_setting" in query
        assert settings["export_pipelines.p1"] == hostile
    params = {"t": hostile, "i": 2**40, "f": 0.1, "b": True, "at": at}
    (row,) = source.stream(sql, params, columns).read_all().to_pylist()
    assert row == {"t": hostile, "i": 2**40, "f": 0.1, "b": True, "at": at}
    assert source.scalar("SELECT count(*) FROM organizations") > 0


def test_a_value_of_a_type_a_stream_cannot_carry_is_refused():
    with pytest.raises(TypeError, match=":v: cannot stream a list"):
        bind_settings("SELECT :v AS v", {"v": [1, 2]})


def _terminate_others(url: str) -> int:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            [url.rsplit("/", 1)[1]],
        )
        return cur.fetchone()[0]


def test_a_write_on_a_pooled_connection_the_server_ended_is_applied_once(postgres_source):
    """The pooled connection dies while idle; the next write runs on a new connection, once:
    the failed attempt committed nothing, so the counter moves by exactly one."""
    db = postgres_source
    db.execute("DROP TABLE IF EXISTS counter")
    db.execute("CREATE TABLE counter (id TEXT PRIMARY KEY, n BIGINT)")
    try:
        db.execute("INSERT INTO counter VALUES (:id, 0)", {"id": "c"})  # now pooled
        assert _terminate_others(db.url) >= 1
        assert db.execute("UPDATE counter SET n = n + 1 WHERE id = :id", {"id": "c"}) == 1
        assert db.scalar("SELECT n FROM counter WHERE id = :id", {"id": "c"}) == 1
    finally:
        db.execute("DROP TABLE IF EXISTS counter")


def test_databases_of_one_url_share_the_idle_connection_of_a_thread(postgres_source):
    """A run's steps each make their own `SourceDatabase`: the second of the same URL finds
    the first one's idle connection (one backend), where each used to open its own."""
    import threading

    url = postgres_source.url
    first = SourceDatabase(url).scalar("SELECT pg_backend_pid()")
    assert SourceDatabase(url).scalar("SELECT pg_backend_pid()") == first
    other = []
    thread = threading.Thread(
        target=lambda: other.append(SourceDatabase(url).scalar("SELECT pg_backend_pid()"))
    )
    thread.start()
    thread.join()
    assert other and other[0] != first  # one idle connection per thread, never shared
    with SourceDatabase(url).connect():  # its connection is out of the pool while in use
        assert SourceDatabase(url).scalar("SELECT pg_backend_pid()") != first


def test_a_process_with_a_pooled_connection_exits_quietly(postgres_source):
    """The idle connection is closed at exit while the driver still can: a CLI command
    that read the database prints nothing else (the driver's own finalizer, run after
    interpreter teardown, printed "Exception ignored ... TypeError")."""
    import subprocess
    import sys

    code = (
        "from export_pipelines.source.database import SourceDatabase\n"
        f"print(SourceDatabase({postgres_source.url!r}).scalar('SELECT 41 + 1'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "42\n", "")


def test_idle_pooled_connections_are_closed_at_exit(postgres_source):
    """What `atexit` runs: every idle connection of the process is closed while the driver
    is whole (left to interpreter teardown, the driver's finalizer failed noisily after
    pytest's summary), and a later statement simply opens a new one."""
    from export_pipelines.source import database

    db = postgres_source
    backend = db.scalar("SELECT pg_backend_pid()")  # now idle in the pool
    database._close_idle_connections()
    import time

    deadline = time.monotonic() + 10  # the server ends the backend soon after the close
    while SourceDatabase(db.url).scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", {"pid": backend}
    ):
        assert time.monotonic() < deadline, "the idle connection was not closed"
        time.sleep(0.05)
    assert db.scalar("SELECT pg_backend_pid()") != backend


def test_a_statement_whose_own_new_connection_ends_is_not_retried(postgres_source):
    """Only the death of an idle pooled connection is recovered from. A statement on a new
    connection that ends under it (here it ends itself) fails, having run once: a sequence
    (not transactional, so each run leaves its mark) moved by one."""
    db = postgres_source
    db.execute("DROP SEQUENCE IF EXISTS attempts")
    db.execute("CREATE SEQUENCE attempts")
    db.close()  # no pooled connection: the statement gets a new one
    try:
        with pytest.raises(Exception, match="terminat"):
            db.execute("SELECT nextval('attempts'), pg_terminate_backend(pg_backend_pid())")
        assert db.scalar("SELECT last_value FROM attempts") == 1
    finally:
        db.execute("DROP SEQUENCE IF EXISTS attempts")


def test_a_failure_mid_stream_is_the_database_s_error_not_a_file_s(postgres_source):
    """After the first batches the driver reports through Arrow's stream (an OSError in
    pyarrow); the stream raises it as a database error, which people are told about as
    such (a failure of the source, not of the store)."""
    import adbc_driver_manager

    rows = 400_000  # the division by zero comes after more than one batch
    sql = (
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :rows) "
        "SELECT CAST(n AS TEXT) || :pad AS id, 1 / (:rows - n) AS n FROM g"
    )
    reader = postgres_source.stream(
        sql, {"rows": rows, "pad": "x" * 80}, [string("id"), integer("n")]
    )
    first = reader.read_next_batch()
    assert first.num_rows < rows
    with pytest.raises(adbc_driver_manager.OperationalError, match="division by zero"):
        for _ in reader:
            pass
