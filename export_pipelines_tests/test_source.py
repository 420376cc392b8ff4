"""Source access: one Arrow-native interface to SQLite and PostgreSQL, values always bound."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from export_pipelines.columns import boolean, integer, number, string, timestamp
from export_pipelines.source.database import SourceDatabase

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
