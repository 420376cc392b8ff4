"""CSV renderer: read back with the csv module; quoting, nulls, BOM, delimiter, formula guard."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pytest

from export_pipelines.render import ExportFormat, RenderOptions
from export_pipelines_tests.render_fixtures import (
    TEXTS,
    guarded,
    iso_utc,
    render_file,
    renders_identically,
    sample_table,
)


def _rows(data: bytes, delimiter: str = ",") -> list[list[str]]:
    text = data.decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))


def _expected_cell(value, guard: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return guarded(value) if guard else value
    if hasattr(value, "tzinfo") and hasattr(value, "hour"):
        return iso_utc(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@pytest.mark.parametrize("guard", [True, False])
def test_values_round_trip(tmp_path, guard):
    table = sample_table()
    path, rows = render_file(
        ExportFormat.CSV, table, tmp_path / "out.csv", RenderOptions(formula_guard=guard)
    )
    assert rows == table.num_rows
    parsed = _rows(path.read_bytes())
    assert parsed[0] == table.column_names
    assert len(parsed) == table.num_rows + 1
    for line, record in zip(parsed[1:], table.to_pylist()):
        for name, cell in zip(table.column_names, line):
            value = record[name]
            if isinstance(value, float):
                assert float(cell) == value, (name, cell)  # shortest form, exact round trip
            else:
                assert cell == _expected_cell(value, guard), (name, value, cell)


def test_formula_guard_only_touches_risky_text(tmp_path):
    path, _ = render_file(ExportFormat.CSV, sample_table(), tmp_path / "out.csv")
    parsed = _rows(path.read_bytes())
    texts = [line[1] for line in parsed[1:]]
    for original, written in zip(TEXTS, texts):
        if original and original[0] in "=+-@\t\r":
            assert written == "'" + original
        else:
            assert written == (original or "")
    # numbers are never prefixed, even negative ones
    assert any(line[0].startswith("-") for line in parsed[1:])


def test_quotes_only_when_needed_and_keeps_empty_distinct_from_null(tmp_path):
    table = pa.table({"t": ["plain", 'q"uote', "com,ma", "new\nline", "", None]})
    path, _ = render_file(ExportFormat.CSV, table, tmp_path / "out.csv")
    assert path.read_bytes() == (
        b't\r\nplain\r\n"q""uote"\r\n"com,ma"\r\n"new\nline"\r\n""\r\n\r\n'
    )


def test_delimiter_option(tmp_path):
    table = pa.table({"a": ["x;y", "x,y", "tab\there"], "b": [1, 2, 3]})
    for delimiter in (";", "\t", "|"):
        path, _ = render_file(
            ExportFormat.CSV,
            table,
            tmp_path / f"out{ord(delimiter)}.csv",
            RenderOptions(csv_delimiter=delimiter),
        )
        parsed = _rows(path.read_bytes(), delimiter)
        assert parsed == [["a", "b"], ["x;y", "1"], ["x,y", "2"], ["tab\there", "3"]]
        lines = path.read_bytes().decode().split("\r\n")
        for line, value in zip(lines[1:], table.column("a").to_pylist()):
            quoted = delimiter in value
            assert line.startswith('"') is quoted, (delimiter, line)


def test_invalid_delimiter_is_refused(tmp_path):
    with pytest.raises(ValueError):
        render_file(
            ExportFormat.CSV, sample_table(), tmp_path / "o.csv", RenderOptions(csv_delimiter='"')
        )


@pytest.mark.parametrize("bom", [True, False])
def test_bom(tmp_path, bom):
    path, _ = render_file(
        ExportFormat.CSV, sample_table(), tmp_path / "o.csv", RenderOptions(csv_bom=bom)
    )
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") is bom
    assert _rows(data.removeprefix(b"\xef\xbb\xbf"))[0][0] == "id"


def test_timestamps_and_unicode_are_written_as_is(tmp_path):
    path, _ = render_file(ExportFormat.CSV, sample_table(), tmp_path / "o.csv")
    raw = path.read_bytes().decode("utf-8")
    assert "2026-03-01T10:00:00.000000Z" in raw  # zero fraction kept: fixed width
    for text in ("東京 漢字", "Ωμέγα αβγ", "rocket 🚀 party 🎉"):
        assert text in raw


def test_empty_stream_writes_the_header(tmp_path):
    table = sample_table().slice(0, 0)
    path, rows = render_file(ExportFormat.CSV, table, tmp_path / "o.csv")
    assert rows == 0
    assert _rows(path.read_bytes()) == [table.column_names]


def test_deterministic(tmp_path):
    assert renders_identically(ExportFormat.CSV, sample_table(), tmp_path)
