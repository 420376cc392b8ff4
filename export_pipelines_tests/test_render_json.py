"""JSON and JSONL renderers: read back with the stdlib json module."""

from __future__ import annotations

import datetime as dt
import json
import math

import pyarrow as pa
import pytest

from export_pipelines.render import ExportFormat
from export_pipelines.render.csv import iso_timestamps
from export_pipelines.render.json import unique_names
from export_pipelines_tests.render_fixtures import (
    UTC,
    iso_utc,
    render_file,
    renders_identically,
    sample_table,
)


def _expected(table: pa.Table) -> list[dict]:
    """The table as JSON values, computed independently of the renderer."""
    rows = []
    for record in table.to_pylist():
        row = {}
        for key, value in record.items():
            if isinstance(value, dt.datetime):
                value = iso_utc(value)
            elif isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            row[key] = value
        rows.append(row)
    return rows


def _load(fmt: ExportFormat, data: bytes) -> list[dict]:
    text = data.decode("utf-8")
    if fmt is ExportFormat.JSON:
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("fmt", [ExportFormat.JSON, ExportFormat.JSONL])
def test_values_and_types_round_trip(tmp_path, fmt):
    table = sample_table()
    path, rows = render_file(fmt, table, tmp_path / f"o.{fmt.extension}")
    assert rows == table.num_rows
    loaded = _load(fmt, path.read_bytes())
    assert loaded == _expected(table)
    # types survive: numbers stay numbers, booleans booleans, null null
    first = loaded[0]
    assert isinstance(first["id"], int) and isinstance(first["amount"], float)
    assert isinstance(first["active"], bool)
    assert loaded[4]["id"] == 2**53 + 1  # exact, beyond double precision


@pytest.mark.parametrize("fmt", [ExportFormat.JSON, ExportFormat.JSONL])
def test_unicode_is_not_escaped(tmp_path, fmt):
    path, _ = render_file(fmt, sample_table(), tmp_path / f"o.{fmt.extension}")
    raw = path.read_bytes().decode("utf-8")
    for text in ("東京 漢字", "Ωμέγα αβγ", "🚀", "naïve café"):
        assert text in raw
    assert "\\u" not in raw.replace("\\u000d", "")  # only control characters are escaped


def test_non_finite_floats_become_null(tmp_path):
    table = pa.table({"x": [1.5, float("nan"), float("inf"), -float("inf"), None]})
    path, _ = render_file(ExportFormat.JSONL, table, tmp_path / "o.jsonl")
    assert [row["x"] for row in _load(ExportFormat.JSONL, path.read_bytes())] == [
        1.5,
        None,
        None,
        None,
        None,
    ]


def test_json_array_has_one_object_per_line(tmp_path):
    table = sample_table()
    path, _ = render_file(ExportFormat.JSON, table, tmp_path / "o.json")
    lines = path.read_bytes().decode().split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    assert len(lines) == table.num_rows + 3


@pytest.mark.parametrize("fmt,text", [(ExportFormat.JSON, "[]\n"), (ExportFormat.JSONL, "")])
def test_empty_stream_is_valid(tmp_path, fmt, text):
    path, rows = render_file(fmt, sample_table().slice(0, 0), tmp_path / f"o.{fmt.extension}")
    assert rows == 0
    assert path.read_text() == text
    if fmt is ExportFormat.JSON:
        assert json.loads(path.read_text()) == []


def test_duplicate_column_names_get_suffixes(tmp_path):
    table = pa.Table.from_arrays(
        [pa.array([1]), pa.array([2]), pa.array([3])], names=["a", "a", "a_2"]
    )
    assert unique_names(table.column_names) == ["a", "a_2", "a_2_2"]
    path, _ = render_file(ExportFormat.JSON, table, tmp_path / "o.json")
    assert json.loads(path.read_text()) == [{"a": 1, "a_2": 2, "a_2_2": 3}]


def test_polars_timestamps_match_the_shared_style():
    # JSON formats times in polars, CSV/XML in Arrow: the text must be the same.
    moments = [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    array = pa.array(moments, pa.timestamp("us", tz="UTC"))
    from export_pipelines.render.json import frames

    stream = pa.RecordBatchReader.from_batches(
        pa.schema([("t", array.type)]), [pa.record_batch([array], names=["t"])]
    )
    polars_text = next(frames(stream))["t"].to_list()
    assert polars_text == iso_timestamps(array).to_pylist() == [iso_utc(m) for m in moments]


@pytest.mark.parametrize("fmt", [ExportFormat.JSON, ExportFormat.JSONL])
def test_deterministic(tmp_path, fmt):
    assert renders_identically(fmt, sample_table(), tmp_path)
