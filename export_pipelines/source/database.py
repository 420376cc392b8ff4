"""One Arrow-native interface to the application database, embedded (SQLite) or PostgreSQL.

Both engines are read through ADBC, so a query's rows arrive as Arrow record batches
(no Python object per row) and every value is a bound parameter. Queries are written once
with named parameters (`:org_id`) and translated per engine (`?` for SQLite, `$n` for
PostgreSQL). Export-sized reads (`stream`) hold a bounded number of rows on both engines;
on PostgreSQL they go through a binary COPY, whose values are bound to settings the query
reads (`bind_settings`), because ADBC holds the whole result of a parameterized query.

SQLite has no column types, and ADBC's SQLite driver infers each result column's Arrow
type from the first batch it reads, failing later if a value of another storage class
shows up (a nullable score that is NULL for the first rows, then 72.5). So on SQLite every
result column is cast to a fixed storage class and a typed first row (the "witness") is
prepended, then dropped; the batches are then cast to the export's declared Arrow types.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.columns import Column, ColumnType, arrow_schema

T = TypeVar("T")
# Idle pooled PostgreSQL connections, one per (URL, thread, process): see
# `SourceDatabase._pool_key`. Closed at exit, while the driver can still close them.
_IDLE: dict[tuple[str, int, int], Any] = {}
_POOL_LOCK = threading.Lock()


@atexit.register
def _close_idle_connections() -> None:
    with _POOL_LOCK:
        mine = [key for key in _IDLE if key[2] == os.getpid()]
        idle = [_IDLE.pop(key) for key in mine]
    for conn in idle:
        with contextlib.suppress(Exception):
            conn.close()


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_SQLITE_BATCH_ROWS = "65536"

# How a result column is pinned to one storage class per engine.
_SQLITE_CAST = {
    ColumnType.STRING: "CAST({} AS TEXT)",
    ColumnType.INT: "CAST({} AS INTEGER)",
    ColumnType.FLOAT: "CAST({} AS REAL)",
    ColumnType.BOOL: "CAST({} AS INTEGER)",
    ColumnType.TIMESTAMP: "CAST({} AS TEXT)",
    ColumnType.DATE: "CAST({} AS TEXT)",
}
_SQLITE_WITNESS = {
    ColumnType.STRING: "''",
    ColumnType.INT: "0",
    ColumnType.FLOAT: "0.5",
    ColumnType.BOOL: "0",
    ColumnType.TIMESTAMP: "''",
    ColumnType.DATE: "''",
}
_POSTGRES_CAST = {
    ColumnType.STRING: "CAST({} AS TEXT)",
    ColumnType.INT: "CAST({} AS BIGINT)",
    ColumnType.FLOAT: "CAST({} AS DOUBLE PRECISION)",
    ColumnType.BOOL: "CAST({} AS BOOLEAN)",
    ColumnType.TIMESTAMP: "CAST({} AS TIMESTAMP)",
    ColumnType.DATE: "CAST({} AS DATE)",
}


# `scheme://user:password@` — the password runs to the last `@` before any whitespace, so
# an unencoded `@`, `/` or `?` in it is masked too (masking too much beats showing a secret).
_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*):\S*@")
# libpq also takes the password as a query parameter: `…/db?password=…`.
_QUERY_PASSWORD = re.compile(r"(?i)(?P<head>[?&]password=)[^&\s'\"]*")
MASK = "***"


def redact_url(text: str) -> str:
    """`text` with every URL's password masked: `user:password@` becomes `user:***@`."""
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


def _url_secrets(url: str) -> set[str]:
    """The password of `url` in every form a message may quote it (raw, decoded)."""
    found: set[str] = set()
    # Up to the first `@` (as libpq reads it) and up to the last (as urlsplit does).
    for password in (r"([^@\s]*)@", r"(\S*)@"):
        match = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:" + password, url)
        if match:
            found.add(match.group(1))
    with contextlib.suppress(ValueError):
        found.add(urlsplit(url).password or "")
    found.update(m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(url))
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}


def redact_secrets(text: str, url: str) -> str:
    """`text` (an error message) with `url`'s password masked wherever it appears."""
    text = text.replace(url, redact_url(url))
    for secret in sorted(_url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_url(text)


# How a bound value is carried by a setting (text) and read back typed, per Python type.
_SETTING_TYPES: tuple[tuple[type, str, Callable[[Any], str]], ...] = (
    (bool, "BOOLEAN", lambda v: "true" if v else "false"),
    (int, "BIGINT", str),
    (float, "DOUBLE PRECISION", repr),
    (str, "TEXT", str),
    (dt.datetime, "TIMESTAMP", lambda v: v.isoformat(sep=" ")),
    (dt.date, "DATE", dt.date.isoformat),
)
SETTING_PREFIX = "export_pipelines.p"


def bind_settings(sql: str, params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """`sql` reading each `:name` from a PostgreSQL setting; the settings' text values.

    Settings are numbered (`export_pipelines.p1`, …): their names are ours, fixed and
    case-insensitive, while the values (the text form of each parameter) are only ever
    bound. A naive datetime is read back as TIMESTAMP, as a bound one would be.
    """
    settings: dict[str, str] = {}
    reads: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise KeyError(f"query parameter :{name} has no value")
        if name not in reads:
            value = params[name]
            found = [(t, text) for kind, t, text in _SETTING_TYPES if isinstance(value, kind)]
            if not found:
                raise TypeError(f"query parameter :{name}: cannot stream a {type(value).__name__}")
            (sql_type, text), setting = found[0], f"{SETTING_PREFIX}{len(settings) + 1}"
            settings[setting] = text(value)
            reads[name] = f"CAST(current_setting('{setting}') AS {sql_type})"
        return reads[name]

    return _PARAM.sub(replace, sql), settings


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_timestamp(value: dt.datetime) -> str:
    """The text form the embedded database stores timestamps in (UTC, sortable as text).

    Stored values always carry six fraction digits; a bound boundary at a whole second is
    written without them, so that '…00:00:00' sorts before '…00:00:00.000000' and a
    half-open window [start, end) compares correctly as text.
    """
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    # strftime's %Y does not pad years before 1000 ("999-12-31"), which would sort wrong.
    text = f"{value.year:04d}-{value:%m-%d %H:%M:%S}"
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def rows_of(table: pa.Table) -> list[dict]:
    """A small result as dicts; text that is not valid UTF-8 (SQLite keeps whatever bytes
    another client wrote) is decoded with U+FFFD, never raised on."""
    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        columns = {}
        for name, column in zip(table.column_names, table.columns):
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                raw = column.cast(
                    pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
                )
                columns[name] = [
                    None if v is None else v.decode("utf-8", "replace") for v in raw.to_pylist()
                ]
            else:
                columns[name] = column.to_pylist()
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


@dataclass(frozen=True, repr=False)
class SourceDatabase:
    """The application database at `url` (`sqlite:///path` or `postgresql://…`).

    `url` may hold a password: no message or repr built here shows it (see `redact_url`).
    """

    url: str

    def __repr__(self) -> str:
        return f"SourceDatabase(url={redact_url(self.url)!r})"

    def __getstate__(self) -> dict:  # the pooled connection stays with its process
        return {"url": self.url}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "url", state["url"])

    @property
    def dialect(self) -> str:
        try:
            scheme = urlparse(self.url).scheme
        except ValueError as error:  # e.g. "Invalid IPv6 URL": say which URL, masked
            invalid = error
        else:
            invalid = None
        if invalid is not None:
            raise ValueError(
                f"invalid source database URL {redact_secrets(self.url, self.url)!r}: {invalid}"
            )
        if scheme in ("postgresql", "postgres"):
            return "postgresql"
        if scheme == "sqlite":
            return "sqlite"
        raise ValueError(
            f"unsupported source database URL {redact_secrets(self.url, self.url)!r}: "
            "use postgresql://… or sqlite:///path/to/file.db"
        )

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url[len("sqlite:///") :] if self.url.startswith("sqlite:///") else "")

    # -- connections -------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, pooled: bool = True) -> Iterator[Any]:
        """A connection for one statement or transaction.

        PostgreSQL connections take ~50 ms to open, more than most of our statements: one
        idle connection per thread is kept and reused (rolled back first, so it holds no
        transaction between uses). A connection that saw an error is closed, not reused.
        The server may have ended the pooled connection while it sat idle; `fetch_table`
        and `execute` recover from that (see `_on_connection`), a caller's own block does
        not.
        """
        if self.dialect == "postgresql":
            conn = (self._take_pooled() if pooled else None) or self._connect_postgresql()
            clean = False
            try:
                yield conn
                clean = True
            finally:
                if not (clean and pooled and self._give_back(conn)):
                    with contextlib.suppress(Exception):
                        conn.close()
            return
        else:
            import adbc_driver_sqlite.dbapi as sq

            conn = sq.connect(str(self.sqlite_path))
            with contextlib.closing(conn.cursor()) as cur:
                cur.execute("PRAGMA busy_timeout = 30000")
                cur.fetchall()
        try:
            yield conn
        finally:
            conn.close()

    def _on_connection(self, statement: Callable[[Any], T], commit: bool = False) -> T:
        """`statement(cursor)` on a pooled connection, then COMMIT if `commit`.

        A pooled PostgreSQL connection may have been ended by the server while it sat idle
        (a restart, a failover, `idle_session_timeout`, `pg_terminate_backend`); the first
        statement on it then fails with a connection error. That statement is run once more
        on a new connection, and this is safe for writes too: the pooled connection held no
        transaction, so the failed statement was the whole of its transaction; autocommit
        is off, so nothing of it was committed, and the server rolls back the transaction
        of a connection that ends. What is never retried: a failure on a connection opened
        for this statement (the server is failing, not our pool), a failure of COMMIT (the
        commit may have happened with only its acknowledgement lost: running the statement
        again could apply it twice), and statements inside a caller's own `connect()`
        block (the earlier statements of its transaction died with the connection).
        """
        if self.dialect != "postgresql":
            with self.connect() as conn:
                result = _on_cursor(conn, statement)
                if commit:
                    conn.commit()
                return result
        conn = self._take_pooled()
        if conn is not None:
            try:
                result = _on_cursor(conn, statement)
            except BaseException as error:
                _close_quietly(conn)
                if not (isinstance(error, Exception) and _connection_lost(error)):
                    raise
            else:
                return self._finish(conn, result, commit)
        conn = self._connect_postgresql()
        try:
            result = _on_cursor(conn, statement)
        except BaseException:
            _close_quietly(conn)
            raise
        return self._finish(conn, result, commit)

    def _finish(self, conn: Any, result: T, commit: bool) -> T:
        """Commit if asked, then pool the connection (or close it if that fails)."""
        try:
            if commit:
                conn.commit()
        except BaseException:
            _close_quietly(conn)
            raise
        if not self._give_back(conn):
            _close_quietly(conn)
        return result

    def _pool_key(self) -> tuple[str, int, int]:
        """This thread's idle connection to this URL is shared by every `SourceDatabase` of
        the URL in the process: a run's steps each make their own, and would otherwise each
        pay a connection (~30 ms). The pid keeps a forked child off its parent's socket."""
        return (self.url, threading.get_ident(), os.getpid())

    def _take_pooled(self) -> Any:
        with _POOL_LOCK:
            return _IDLE.pop(self._pool_key(), None)

    def _give_back(self, conn: Any) -> bool:
        key = self._pool_key()
        with _POOL_LOCK:
            if key in _IDLE:
                return False
        try:
            conn.rollback()  # no transaction (and no locks) held while idle
        except Exception:  # noqa: BLE001 - a broken connection is closed, not pooled
            return False
        with _POOL_LOCK:
            return _IDLE.setdefault(key, conn) is conn

    def close(self) -> None:
        """Close this thread's idle pooled connection to this URL, if any."""
        conn = self._take_pooled()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _connect_postgresql(self) -> Any:
        import adbc_driver_postgresql.dbapi as pg

        try:
            return pg.connect(self.url)
        except Exception as error:
            redacted = self._redacted(error)
            if redacted is None:
                raise
        # Raised outside the `except`, so the original (which libpq may have written the
        # password into, e.g. "invalid percent-encoded token") is not kept as its context.
        raise redacted

    def _redacted(self, error: Exception) -> Exception | None:
        """`error` again, of the same class, with the password masked; None if it had none."""
        message = str(error)
        safe = redact_secrets(message, self.url)
        if safe == message:
            return None
        if hasattr(error, "status_code"):  # ADBC's errors: keep the codes, drop the details
            with contextlib.suppress(Exception):
                return type(error)(
                    safe,
                    status_code=error.status_code,
                    vendor_code=getattr(error, "vendor_code", None),
                    sqlstate=getattr(error, "sqlstate", None),
                )
        with contextlib.suppress(Exception):
            return type(error)(safe)
        return ConnectionError(safe)

    # -- parameters --------------------------------------------------------------------

    def bind(self, sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """Translate `:name` parameters to the engine's style and order the values."""
        values: list[Any] = []
        numbered: dict[str, int] = {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in params:
                raise KeyError(f"query parameter :{name} has no value")
            if self.dialect == "postgresql":
                if name not in numbered:
                    values.append(self._value(params[name]))
                    numbered[name] = len(values)
                return f"${numbered[name]}"
            values.append(self._value(params[name]))
            return "?"

        return _PARAM.sub(replace, sql), values

    def _value(self, value: Any) -> Any:
        if self.dialect == "sqlite":
            if isinstance(value, dt.datetime):
                return sqlite_timestamp(value)
            if isinstance(value, dt.date):
                return value.isoformat()
            if isinstance(value, bool):
                return int(value)
        elif isinstance(value, dt.datetime) and value.tzinfo is not None:
            # TIMESTAMP columns hold naive UTC; compare like with like.
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    # -- reads -------------------------------------------------------------------------

    def stream(
        self, sql: str, params: Mapping[str, Any], columns: Sequence[Column]
    ) -> pa.RecordBatchReader:
        """Run `sql` and stream its rows as batches typed exactly as `columns` declares.

        The query must return the columns in this order and with these names. Memory stays
        bounded whatever the row count: batches are yielded while the query is still read.
        """
        schema = arrow_schema(list(columns))
        wrapped = self.typed(sql, columns)
        read = self._postgres_batches if self.dialect == "postgresql" else self._sqlite_batches

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in _database_errors(read(wrapped, params)):
                if batch.num_rows:
                    yield conform(batch, schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _sqlite_batches(self, sql: str, params: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        query, values = self.bind(sql, params)
        # Its own connection: a stream may be left unfinished by its reader.
        with self.connect(pooled=False) as conn, contextlib.closing(conn.cursor()) as cur:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": _SQLITE_BATCH_ROWS})
            cur.execute(query, values)
            first = True
            for batch in cur.fetch_record_batch():
                yield batch.slice(1) if first else batch  # the first row is the witness
                first = False

    def _postgres_batches(self, sql: str, params: Mapping[str, Any]) -> Iterator[pa.RecordBatch]:
        """The rows through `COPY (query) TO STDOUT (FORMAT binary)`, in ~16 MB batches.

        ADBC's PostgreSQL driver runs a query without parameters as a binary COPY and
        decodes it as it arrives; a query with parameters it runs as a prepared statement
        whose whole result libpq holds in memory first (1 GB for a million scans). COPY
        takes no parameters, so each value is bound to a transaction-local setting
        (`set_config(name, $n, true)`, a bound parameter like any other) and the query
        reads it back typed (`CAST(current_setting(name) AS …)`, see `bind_settings`):
        no value is ever written into SQL text. The planner estimates with the settings'
        values (it folds stable functions for estimates), so the plan is the one the bound
        query gets, parallel workers included, which a server-side cursor would forgo.
        """
        query, settings = bind_settings(sql, {k: self._value(v) for k, v in params.items()})
        # Its own connection: a stream may be left unfinished by its reader.
        with self.connect(pooled=False) as conn, contextlib.closing(conn.cursor()) as cur:
            if settings:
                assign = ", ".join(
                    f"set_config('{name}', ${n}, true)" for n, name in enumerate(settings, 1)
                )
                cur.execute(f"SELECT {assign}", list(settings.values()))
                cur.fetchall()
            cur.execute(query)
            yield from cur.fetch_record_batch()

    def typed(self, sql: str, columns: Sequence[Column]) -> str:
        casts = _SQLITE_CAST if self.dialect == "sqlite" else _POSTGRES_CAST
        select = ", ".join(
            casts[c.type].format(f"q.{quote_ident(c.name)}") + f" AS {quote_ident(c.name)}"
            for c in columns
        )
        typed = f"SELECT {select} FROM ({sql}) AS q"
        if self.dialect == "postgresql":
            return typed
        witness = ", ".join(f"{_SQLITE_WITNESS[c.type]} AS {quote_ident(c.name)}" for c in columns)
        # UNION ALL runs its arms in order, so the witness is the first row read.
        return f"SELECT {witness} UNION ALL SELECT * FROM ({typed})"

    def fetch_table(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """A small query's whole result (counts, lookups); not for export-sized reads."""
        query, values = self.bind(sql, params or {})

        def read(cur: Any) -> pa.Table:
            cur.execute(query, values)
            return cur.fetch_arrow_table()

        return self._on_connection(read)

    def fetch_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict]:
        return rows_of(self.fetch_table(sql, params))

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        table = self.fetch_table(sql, params)
        return table.column(0)[0].as_py() if table.num_rows else None

    # -- writes ------------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run one statement in its own transaction; return the number of rows it changed."""
        query, values = self.bind(sql, params or {})

        def write(cur: Any) -> int:
            if self.dialect == "postgresql" and values:
                # ADBC's PostgreSQL driver reports -1 rows for a parameterized execute; as
                # a one-row executemany it runs an update and reports the real count.
                cur.executemany(query, [values])
            else:
                cur.execute(query, values)
            if self.dialect == "sqlite":
                # ADBC's SQLite driver reports -1; ask SQLite itself.
                cur.execute("SELECT changes()")
                return cur.fetchone()[0]
            return cur.rowcount

        return self._on_connection(write, commit=True)

    def create_schema(self) -> None:
        ddl = resources.files("export_pipelines.source").joinpath("schema.sql").read_text()
        if self.dialect == "sqlite":
            import adbc_driver_sqlite.dbapi as sq

            # Readers (runs) and writers (sensors updating requests) live in different
            # processes: WAL lets them proceed without blocking each other. The mode is
            # stored in the file, and can only be switched outside a transaction.
            with sq.connect(str(self.sqlite_path), autocommit=True) as conn:
                with contextlib.closing(conn.cursor()) as cur:
                    cur.execute("PRAGMA journal_mode = WAL")
                    cur.fetchall()
        with self.connect() as conn, contextlib.closing(conn.cursor()) as cur:
            for statement in _statements(ddl):
                cur.execute(statement)
            conn.commit()

    def ingest(self, chunks: Iterator[tuple[str, pa.Table]]) -> dict[str, int]:
        """Append generated (table, chunk) pairs in one transaction; return rows per table."""
        counts: dict[str, int] = {}
        column_types: dict[str, dict[str, str]] = {}
        with self.connect() as conn, contextlib.closing(conn.cursor()) as cur:
            for table, chunk in chunks:
                if self.dialect == "sqlite":
                    chunk = to_sqlite_storage(chunk)
                else:
                    if table not in column_types:
                        column_types[table] = self._postgres_column_types(table)
                    chunk = to_postgres_storage(chunk, column_types[table])
                cur.adbc_ingest(table, chunk, mode="append")
                counts[table] = counts.get(table, 0) + chunk.num_rows
            conn.commit()
        return counts

    def _postgres_column_types(self, table: str) -> dict[str, str]:
        rows = self.fetch_rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = :table AND table_schema = current_schema()",
            {"table": table},
        )
        return {r["column_name"]: r["data_type"] for r in rows}

    # -- the embedded default ----------------------------------------------------------

    def ensure_embedded(self, seed: Any = None) -> bool:
        """Create and seed the embedded database on first use; return True if it did.

        A lock serialises processes that start together (webserver, daemon, a run); the
        database is built under a temporary name and renamed, so nobody reads a half-seeded
        file.
        """
        if self.dialect != "sqlite":
            return False
        path = self.sqlite_path
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                return False
            from export_pipelines.source import demo_data

            staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            staging.unlink(missing_ok=True)
            building = SourceDatabase(f"sqlite:///{staging}")
            building.create_schema()
            params = seed or demo_data.DemoParams(end_date=dt.datetime.now(dt.timezone.utc).date())
            building.ingest(demo_data.generate(params))
            with building.connect() as conn, contextlib.closing(conn.cursor()) as cur:
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cur.fetchall()
            for suffix in ("-wal", "-shm"):
                Path(f"{staging}{suffix}").unlink(missing_ok=True)
            os.replace(staging, path)
            return True


def _database_errors(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`batches`, with a failure of the driver mid-stream raised as the database error it is.

    Once the first batch is out, the driver reports through Arrow's stream interface, which
    pyarrow raises as a plain OSError (a backend terminated mid-COPY, a locked file): it
    would read as a failure of our own files, not of the source database. It is not kept
    as the cause, which is what the request's message is chosen by; its text is kept.
    """
    from adbc_driver_manager import AdbcStatusCode, OperationalError

    try:
        yield from batches
    except OSError as error:
        raise OperationalError(str(error), status_code=AdbcStatusCode.IO) from None


def _on_cursor(conn: Any, statement: Callable[[Any], T]) -> T:
    with contextlib.closing(conn.cursor()) as cur:
        return statement(cur)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _connection_lost(error: Exception) -> bool:
    """Whether `error` says the connection itself is gone (not that a statement failed).

    ADBC's PostgreSQL driver reports a connection the server ended as an IO error ("server
    closed the connection unexpectedly", "no connection to the server"); the server's own
    word for it is SQLSTATE class 08 (connection exception) or 57P01-57P03 (shutdown).
    """
    from adbc_driver_manager import AdbcStatusCode

    sqlstate = getattr(error, "sqlstate", None) or ""
    return (
        getattr(error, "status_code", None) == AdbcStatusCode.IO
        or sqlstate.startswith("08")
        or sqlstate in ("57P01", "57P02", "57P03")
    )


def _statements(ddl: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in ddl.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a batch to `schema`: text timestamps parse as UTC, 0/1 become booleans."""
    arrays = []
    for field, array in zip(schema, batch.columns):
        if pa.types.is_timestamp(field.type) and (
            pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
        ):
            array = pc.cast(pc.cast(array, pa.timestamp("us")), field.type)
        elif pa.types.is_timestamp(field.type) and array.type.tz is None:
            array = pc.cast(array, pa.timestamp(field.type.unit)).cast(field.type)
        elif pa.types.is_date(field.type) and pa.types.is_string(array.type):
            array = pc.cast(pc.cast(array, pa.timestamp("s")), pa.date32())
        elif pa.types.is_null(array.type):
            array = pa.nulls(len(array), field.type)
        else:
            array = pc.cast(array, field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def to_sqlite_storage(table: pa.Table) -> pa.Table:
    """Store timestamps as sortable UTC text and booleans as 0/1, as the schema says."""
    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            column = pc.strftime(column.cast(pa.timestamp("us")), format="%Y-%m-%d %H:%M:%S")
        elif pa.types.is_boolean(field.type):
            column = column.cast(pa.int64())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


_POSTGRES_ARROW = {"integer": pa.int32(), "smallint": pa.int16(), "bigint": pa.int64()}


def to_postgres_storage(table: pa.Table, column_types: dict[str, str]) -> pa.Table:
    """Match integer widths to the table's columns (binary COPY accepts no implicit casts)."""
    columns = []
    for name, column in zip(table.column_names, table.columns):
        target = _POSTGRES_ARROW.get(column_types.get(name, ""))
        columns.append(column.cast(target) if target is not None else column)
    return pa.Table.from_arrays(columns, names=table.column_names)
