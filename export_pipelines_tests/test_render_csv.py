"""CSV renderer: read back with the csv module; quoting, nulls, BOM, delimiter, formula guard."""

from __future__ import annotations

import csv
import io
import string

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


# Every ASCII letter and digit (a backslash before them is a regex escape or an error),
# the usual separators, regex syntax, a space, non-ASCII ones (2, 3 and 4 UTF-8 bytes).
DELIMITERS = [
    *string.ascii_letters,
    *string.digits,
    ",",
    "\t",
    " ",
    ";",
    "|",
    "\\",
    "'",
    "-",
    "+",
    ".",
    ":",
    "=",
    "]",
    "^",
    "\x00",
    "\x1f",
    "§",
    "€",
    "\u00a0",
    "🎉",
]


def _delimiter_table(delimiter: str) -> pa.Table:
    """sample_table plus values (and a column name) holding the delimiter in every way."""
    d = delimiter
    base = sample_table()
    awkward = [
        f"a{d}b",
        d,
        d * 3,
        f'"{d}"',
        f"{d}lead",
        f"trail{d}",
        f"={d}SUM(A1)",
        f"-{d}1",
        f"line{d}\r\nbreak",
        "",
        None,
        "naïve € § 🎉 東京",
        'only "quotes"',
        "cr\ronly",
        "lf\nonly",
        "  spaced  ",
        "\u00a0nbsp\u00a0",
        "1e+20",
        "true",
        "2026-03-01T10:00:00.000000Z",
    ]
    assert len(awkward) == base.num_rows
    table = base.append_column(f"col {d} name", pa.array(awkward, pa.string()))
    return table.append_column(f'q"{d}\nname', pa.array(awkward[::-1], pa.large_string()))


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("delimiter", DELIMITERS, ids=lambda d: f"U+{ord(d):04X}")
def test_any_delimiter_round_trips(tmp_path, delimiter, guard):
    table = _delimiter_table(delimiter)
    path, rows = render_file(
        ExportFormat.CSV,
        table,
        tmp_path / "out.csv",
        RenderOptions(csv_delimiter=delimiter, formula_guard=guard),
    )
    assert rows == table.num_rows
    data = path.read_bytes()
    parsed = _rows(data, delimiter)
    assert parsed[0] == table.column_names
    assert len(parsed) == table.num_rows + 1
    for line, record in zip(parsed[1:], table.to_pylist()):
        assert len(line) == table.num_columns, (delimiter, line)
        for name, cell in zip(table.column_names, line):
            value = record[name]
            if isinstance(value, float):
                assert float(cell) == value, (delimiter, name, cell)
            else:
                assert cell == _expected_cell(value, guard), (delimiter, name, value, cell)
    # the last two columns: a null stays a bare empty field, an empty string is `""`
    # (rows 9 and 10; values may hold CR LF, so the text is searched, not split)
    text = data.decode("utf-8")
    assert f'{delimiter}""{delimiter}\r\n' in text  # "" then null
    assert f'{delimiter}{delimiter}""\r\n' in text  # null then ""


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        ("t", 'atb1\r\n"t"t1\r\n"at b"t10\r\nxt-1\r\n""t\r\nt2\r\n"with ""q"""t0\r\n'),
        ("€", 'a€b1\r\nt€1\r\n"a€ b"€10\r\nx€-1\r\n""€\r\n€2\r\n"with ""q"""€0\r\n'),
        ("1", 'a1"b1"\r\nt1"1"\r\n"a1 b"1"10"\r\nx1"-1"\r\n""1\r\n12\r\n"with ""q"""10\r\n'),
    ],
)
def test_delimiter_bytes_exactly(tmp_path, delimiter, expected):
    """Quoted only when needed, header included; numbers too when they hold the delimiter."""
    texts = ["t", f"a{delimiter} b", "x", "", None, 'with "q"']
    table = pa.table({"a": texts, "b1": [1, 10, -1, None, 2, 0]})
    path, _ = render_file(
        ExportFormat.CSV, table, tmp_path / "o.csv", RenderOptions(csv_delimiter=delimiter)
    )
    assert path.read_bytes().decode("utf-8") == expected


@pytest.mark.parametrize("delimiter", DELIMITERS, ids=lambda d: f"U+{ord(d):04X}")
def test_header_is_quoted_like_the_data(tmp_path, delimiter):
    names = ["plain", f"has{delimiter}it", 'say "hi"', "two\nlines", ""]
    table = pa.table({name: pa.array([1], pa.int64()) for name in names})
    path, _ = render_file(
        ExportFormat.CSV, table, tmp_path / "o.csv", RenderOptions(csv_delimiter=delimiter)
    )
    assert _rows(path.read_bytes(), delimiter)[0] == names


@pytest.mark.parametrize("delimiter", ['"', "\r", "\n", "", ",;", "\ud800", None, 44])
def test_refused_delimiters_raise_a_plain_value_error(tmp_path, delimiter):
    with pytest.raises(ValueError, match=r"^The CSV delimiter must be a single character") as err:
        render_file(
            ExportFormat.CSV,
            sample_table(),
            tmp_path / "o.csv",
            RenderOptions(csv_delimiter=delimiter),
        )
    assert str(err.value).endswith(".")
    assert "\n" not in str(err.value)
