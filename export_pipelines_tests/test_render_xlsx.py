"""Excel renderer: read back with openpyxl (and LibreOffice when installed)."""

from __future__ import annotations

import csv
import datetime as dt
import math
import shutil
import subprocess
import zipfile

import openpyxl
import pyarrow as pa
import pytest

from export_pipelines.render import ExportFormat, RenderOptions
from export_pipelines.render.xlsx import MAX_CELL_CHARS, TRUNCATION_MARKER
from export_pipelines_tests.render_fixtures import (
    TEXTS,
    context,
    guarded,
    render_file,
    renders_identically,
    sample_table,
)


def _book(path):
    return openpyxl.load_workbook(path)


def _data(sheet) -> list[tuple]:
    return list(sheet.iter_rows(min_row=2, values_only=True))


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_typed_cells(tmp_path):
    table = sample_table()
    path, rows = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    assert rows == table.num_rows
    sheet = _book(path)["Data"]
    header = [c.value for c in sheet[1]]
    assert header == table.column_names
    for line, record in zip(_data(sheet), table.to_pylist()):
        got = dict(zip(header, line))
        for name, value in record.items():
            cell = got[name]
            if value is None:
                assert cell is None, name
            elif isinstance(value, bool):
                assert cell is value
            elif isinstance(value, int):
                assert isinstance(cell, int) and cell == value or math.isclose(cell, value)
            elif isinstance(value, float):
                assert isinstance(cell, float) and cell == value
            elif isinstance(value, dt.datetime):
                # a real date-time; openpyxl reads back to the millisecond
                expected = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
                assert isinstance(cell, dt.datetime)
                assert abs(cell - expected) < dt.timedelta(milliseconds=1)
            elif isinstance(value, dt.date):
                assert cell == dt.datetime(value.year, value.month, value.day)
            else:
                assert cell == guarded(value), name


def test_number_formats_header_freeze_filter_widths(tmp_path):
    table = sample_table()
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    sheet = _book(path)["Data"]
    assert all(cell.font.b for cell in sheet[1])
    assert not any(cell.font.b for cell in sheet[2])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:G{table.num_rows + 1}"
    formats = {c.column_letter: c.number_format for c in sheet[2]}
    assert formats["E"] == "yyyy-mm-dd hh:mm:ss" and formats["F"] == "yyyy-mm-dd"
    widths = [sheet.column_dimensions[letter].width for letter in "ABCDEFG"]
    assert all(4 <= w <= 62 for w in widths)
    assert widths[4] >= 19  # a date-time fits


def test_formula_guard_on_and_off(tmp_path):
    table = pa.table({"t": ["=1+1", "+x", "-y", "@z", "\tt", "\rr", "ok", "a=b"], "n": [-1] * 8})
    on, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "on.xlsx")
    off, _ = render_file(
        ExportFormat.EXCEL, table, tmp_path / "off.xlsx", RenderOptions(formula_guard=False)
    )
    guarded_cells = [row[0] for row in _data(_book(on)["Data"])]
    assert guarded_cells == ["'=1+1", "'+x", "'-y", "'@z", "'\tt", "'\rr", "ok", "a=b"]
    plain = _book(off)["Data"]
    assert [row[0] for row in _data(plain)] == table.column("t").to_pylist()
    # even unguarded, text is text: never stored as a formula
    assert all(cell.data_type == "s" for cell in plain["A"][1:])
    assert all(row[1] == -1 for row in _data(plain))


def test_sheet_split(tmp_path):
    table = sample_table()  # 20 rows
    path, rows = render_file(
        ExportFormat.EXCEL, table, tmp_path / "o.xlsx", RenderOptions(excel_rows_per_sheet=3)
    )
    book = _book(path)
    expected_sheets = math.ceil(table.num_rows / 3)
    assert book.sheetnames == ["Data"] + [f"Data ({i})" for i in range(2, expected_sheets + 1)]
    ids = []
    for sheet in book.worksheets:
        assert [c.value for c in sheet[1]] == table.column_names
        assert sheet.freeze_panes == "A2"
        data = _data(sheet)
        assert 1 <= len(data) <= 3
        assert sheet.auto_filter.ref == f"A1:G{len(data) + 1}"
        ids += [row[0] for row in data]
    assert ids == table.column("id").to_pylist()
    assert rows == table.num_rows


def test_long_text_truncated_with_marker(tmp_path):
    long_ascii = "x" * 40_000
    long_emoji = "😀" * 20_000  # 40,000 UTF-16 units in 20,000 characters
    exact = "y" * MAX_CELL_CHARS
    table = pa.table({"t": [long_ascii, long_emoji, exact]})
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    cells = [row[0] for row in _data(_book(path)["Data"])]
    for cell in cells[:2]:
        assert cell.endswith(TRUNCATION_MARKER)
        assert _utf16_units(cell) <= MAX_CELL_CHARS
        assert _utf16_units(cell) > MAX_CELL_CHARS - 20
    assert cells[0].startswith("x" * 1000) and cells[1].startswith("😀" * 1000)
    assert cells[2] == exact  # at the limit: untouched


def test_urls_are_not_hyperlinks(tmp_path):
    table = pa.table({"u": ["https://example.com/a?b=1&c=2", "mailto:x@example.com", "www.x.org"]})
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    sheet = _book(path)["Data"]
    assert [row[0] for row in _data(sheet)] == table.column("u").to_pylist()
    assert all(cell.hyperlink is None for cell in sheet["A"])
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            assert "hyperlink" not in archive.read(name).decode("utf-8", "replace")


def test_special_text_survives(tmp_path):
    table = pa.table({"t": ["ctrl\x01\x1f", "_x0041_ literal", "  padded  ", "a\r\nb", "<&>"]})
    path, _ = render_file(
        ExportFormat.EXCEL, table, tmp_path / "o.xlsx", RenderOptions(formula_guard=False)
    )
    cells = [row[0] for row in _data(_book(path)["Data"])]
    assert cells[0] == "ctrl\ufffd\ufffd"
    # Excel decodes _xHHHH_, so the writer escapes the underscore (openpyxl shows it raw)
    assert cells[1] == "_x005F_x0041_ literal"
    assert cells[2:] == ["  padded  ", "a\r\nb", "<&>"]


def test_non_finite_floats_are_empty_cells(tmp_path):
    table = pa.table({"f": [1.25, float("nan"), float("inf")]})
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    sheet = _book(path)["Data"]
    assert [sheet.cell(row=r, column=1).value for r in (2, 3, 4)] == [1.25, None, None]


def test_dates_before_1900_march_are_text(tmp_path):
    # Excel's serial dates are off by one before 1900-03-01 (its 1900 leap-year bug)
    table = pa.table(
        {
            "t": pa.array(
                [dt.datetime(1899, 6, 1, 12, tzinfo=dt.timezone.utc), dt.datetime(1900, 3, 1)],
                pa.timestamp("us", tz="UTC"),
            ),
            "d": pa.array([dt.date(1900, 2, 28), dt.date(1900, 3, 1)], pa.date32()),
        }
    )
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    rows = _data(_book(path)["Data"])
    assert rows[0] == ("1899-06-01T12:00:00.000000Z", "1900-02-28")
    assert rows[1] == (dt.datetime(1900, 3, 1), dt.datetime(1900, 3, 1))


def test_document_properties_use_as_of(tmp_path):
    ctx = context(as_of="2026-03-31T23:59:59Z", title="Orders")
    path, _ = render_file(ExportFormat.EXCEL, sample_table(), tmp_path / "o.xlsx", ctx=ctx)
    props = _book(path).properties
    assert props.created == dt.datetime(2026, 3, 31, 23, 59, 59)
    assert props.modified == props.created
    assert props.title == "Orders"


def test_empty_stream_has_a_header_sheet(tmp_path):
    table = sample_table().slice(0, 0)
    path, rows = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    assert rows == 0
    sheet = _book(path)["Data"]
    assert [c.value for c in sheet[1]] == table.column_names
    assert _data(sheet) == []


def test_deterministic(tmp_path):
    options = RenderOptions(excel_rows_per_sheet=7)
    assert renders_identically(ExportFormat.EXCEL, sample_table(), tmp_path, options)


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice (soffice) not installed")
def test_libreoffice_reads_every_sheet(tmp_path):
    table = sample_table()
    path, _ = render_file(
        ExportFormat.EXCEL, table, tmp_path / "o.xlsx", RenderOptions(excel_rows_per_sheet=12)
    )
    out = tmp_path / "csv"
    # 44=comma 34=quote 76=UTF-8; the trailing -1 writes one CSV per sheet
    filter_options = "44,34,76,1,,0,false,true,false,false,false,-1"
    subprocess.run(
        [
            "soffice",
            "--headless",
            f"-env:UserInstallation=file://{tmp_path}/profile",
            "--convert-to",
            f"csv:Text - txt - csv (StarCalc):{filter_options}",
            "--outdir",
            str(out),
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    first = list(csv.reader((out / "o-Data.csv").open(encoding="utf-8", newline="")))
    second = list(csv.reader((out / "o-Data (2).csv").open(encoding="utf-8", newline="")))
    assert first[0] == second[0] == table.column_names
    rows = first[1:] + second[1:]
    assert len(rows) == table.num_rows
    records = table.to_pylist()
    for line, record in zip(rows, records):
        if record["id"] is None:
            assert line[0] == ""
        else:  # General format: big numbers show in scientific notation
            assert math.isclose(float(line[0]), record["id"], rel_tol=1e-14)
        expected_text = "" if record["text"] is None else guarded(record["text"])
        assert (
            line[1] == expected_text.replace("\r\n", "\n").replace("\r", "\n")
            or line[1] == expected_text
        )
        assert line[3] == {True: "TRUE", False: "FALSE", None: ""}[record["active"]]
        if record["created_at"] is not None:
            assert line[4] == record["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        if record["day"] is not None:
            assert line[5] == record["day"].isoformat()
    assert {r[1] for r in rows} >= {"東京 漢字", "Ωμέγα αβγ", "rocket 🚀 party 🎉"}
    assert TEXTS[1] in {r[1] for r in rows}
