"""JSON and JSONL renderers: read back with the stdlib json module."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipelines.render import ExportFormat, RenderOptions
from export_pipelines.render import json as render_json
from export_pipelines.render.csv import IN_FLIGHT_PER_WORKER, iso_timestamps, worker_count
from export_pipelines.render.json import unique_names
from export_pipelines_tests.render_fixtures import (
    UTC,
    context,
    iso_utc,
    render_file,
    renders_identically,
    sample_table,
)
from export_pipelines_tests.test_render_csv import awkward_tables


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


def test_polars_timestamps_match_the_shared_style(tmp_path):
    # JSON formats times in polars, CSV/XML in Arrow: the text must be the same.
    moments = [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    array = pa.array(moments, pa.timestamp("us", tz="UTC"))
    path, _ = render_file(ExportFormat.JSONL, pa.table({"t": array}), tmp_path / "o.jsonl")
    polars_text = [row["t"] for row in _load(ExportFormat.JSONL, path.read_bytes())]
    assert polars_text == iso_timestamps(array).to_pylist() == [iso_utc(m) for m in moments]


@pytest.mark.parametrize("fmt", [ExportFormat.JSON, ExportFormat.JSONL])
def test_deterministic(tmp_path, fmt):
    assert renders_identically(fmt, sample_table(), tmp_path)


# --- the bytes before the performance work are the spec --------------------------------------


def reference_json(table: pa.Table, array_form: bool) -> bytes:
    """The JSON renderers' bytes before the performance work: one polars frame per
    16k-row batch, timestamps formatted by polars, the array form by replacement."""
    import polars as pl

    names = unique_names(table.column_names)
    texts = []
    for batch in table.to_batches(max_chunksize=16_384):
        frame = pl.from_arrow(pa.RecordBatch.from_arrays(batch.columns, names=names))
        stamps = [n for n, t in frame.schema.items() if isinstance(t, pl.Datetime)]
        if stamps:
            frame = frame.with_columns(
                pl.col(stamps)
                .dt.convert_time_zone("UTC")
                .dt.replace_time_zone(None)
                .dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            )
        buffer = io.BytesIO()
        frame.write_ndjson(buffer)
        texts.append(buffer.getvalue())
    text = b"".join(texts)
    if not array_form:
        return text
    if not text:
        return b"[]\n"
    return b"[\n" + text[:-1].replace(b"\n", b",\n") + b"\n]\n"


def _render(folder, table: pa.Table, fmt: ExportFormat, chunk: int) -> bytes:
    stream = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=chunk))
    path = folder / f"o.{fmt.extension}"
    write = render_json.write_json if fmt is ExportFormat.JSON else render_json.write_jsonl
    assert write(stream, path, RenderOptions(), context()) == table.num_rows
    return path.read_bytes()


@pytest.mark.parametrize("fmt", [ExportFormat.JSON, ExportFormat.JSONL])
@pytest.mark.parametrize("chunk_rows", [1, 4, 32_768])
def test_bytes_match_the_reference(tmp_path, fmt, chunk_rows):
    table = sample_table()
    expected = reference_json(table, fmt is ExportFormat.JSON)
    with mock.patch.object(render_json, "JSON_CHUNK_ROWS", chunk_rows):
        assert _render(tmp_path, table, fmt, chunk=3) == expected
        assert _render(tmp_path, table, fmt, chunk=100) == expected


@settings(max_examples=80, deadline=None, database=None)
@given(
    table=awkward_tables(),
    array_form=st.booleans(),
    batch_rows=st.integers(1, 12),
    chunk_rows=st.sampled_from([1, 3, 16, 32_768]),
)
def test_random_tables_match_the_reference(
    tmp_path_factory, table, array_form, batch_rows, chunk_rows
):
    fmt = ExportFormat.JSON if array_form else ExportFormat.JSONL
    with mock.patch.object(render_json, "JSON_CHUNK_ROWS", chunk_rows):
        written = _render(tmp_path_factory.mktemp("json"), table, fmt, chunk=batch_rows)
    assert written == reference_json(table, array_form)


def test_the_stream_is_read_as_it_is_written():
    """Bounded memory: serialising never runs ahead of the file by more than a few chunks."""
    pulled = []
    schema = pa.schema([("n", pa.int64())])

    def batches():
        for i in range(40):
            pulled.append(i)
            yield pa.record_batch([pa.array(range(i * 1000, i * 1000 + 1000))], schema=schema)

    stream = pa.RecordBatchReader.from_batches(schema, batches())
    with mock.patch.object(render_json, "JSON_CHUNK_ROWS", 1000):
        chunks = render_json.ndjson_chunks(stream)
        first, rows = next(chunks)
        assert rows == 1000 and first.startswith(b'{"n":0}\n{"n":1}\n')
        assert len(pulled) <= worker_count() * IN_FLIGHT_PER_WORKER + 2
        assert sum(rows for _, rows in chunks) == 39_000


def _json_value(value):
    """A value as JSON should hold it, from the Arrow value alone."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@settings(max_examples=60, deadline=None, database=None)
@given(table=awkward_tables(), array_form=st.booleans(), batch_rows=st.integers(1, 12))
def test_random_tables_read_back_with_the_json_module(
    tmp_path_factory, table, array_form, batch_rows
):
    """Independent of the reference: every value loads back as itself, with its JSON type
    (quotes, backslashes, control characters, NUL, non-ASCII, NaN and infinities, nulls,
    int64 extremes, years 1 and 9999)."""
    fmt = ExportFormat.JSON if array_form else ExportFormat.JSONL
    loaded = _load(fmt, _render(tmp_path_factory.mktemp("json"), table, fmt, chunk=batch_rows))
    names = unique_names(table.column_names)
    columns = [column.to_pylist() for column in table.columns]
    expected = [
        {name: _json_value(value) for name, value in zip(names, values)} for values in zip(*columns)
    ]
    assert loaded == expected
    for row, values in zip(loaded, zip(*columns)):
        for name, value in zip(names, values):
            assert type(row[name]) is type(_json_value(value)), (name, row[name], value)
