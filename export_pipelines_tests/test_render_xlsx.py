"""Excel renderer: read back with openpyxl (and LibreOffice when installed)."""

from __future__ import annotations

import datetime as dt
import math
import zipfile

import openpyxl
import pyarrow as pa
import pytest

from export_pipelines.columns import Role, Unit, integer, number, string, timestamp
from export_pipelines.render import ExportFormat, RenderOptions
from export_pipelines.render.xlsx import MAX_CELL_CHARS, TRUNCATION_MARKER
from export_pipelines_tests.render_fixtures import (
    context,
    guarded,
    render_file,
    renders_identically,
    sample_table,
)


def _book(path):
    return openpyxl.load_workbook(path)


def _summary(book) -> dict:
    """The Summary sheet's label → value pairs (column A → column B)."""
    return {a: b for a, b in book["Summary"].iter_rows(min_row=2, max_col=2, values_only=True) if a}


def _data(sheet) -> list[tuple]:
    return list(sheet.iter_rows(min_row=2, values_only=True))


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# The sample's columns as a reader sees them: labels, the identifier `id` last.
HEADINGS = ["Text", "Amount", "Active", "Created at (UTC)", "Day", "Note", "ID"]
ORDER = ["text", "amount", "active", "created_at", "day", "note", "id"]


def test_typed_cells(tmp_path):
    table = sample_table()
    path, rows = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    assert rows == table.num_rows
    sheet = _book(path)["Data"]
    header = [c.value for c in sheet[1]]
    assert header == HEADINGS
    for line, record in zip(_data(sheet), table.to_pylist()):
        got = dict(zip(ORDER, line))
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


def test_header_freeze_filter_widths(tmp_path):
    table = sample_table()
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    sheet = _book(path)["Data"]
    assert all(cell.font.b for cell in sheet[1])
    assert not any(cell.font.b for cell in sheet[2])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:G{table.num_rows + 1}"
    formats = {c.column_letter: c.number_format for c in sheet[2]}
    assert formats["D"] == 'yyyy-mm-dd hh:mm:ss "UTC"' and formats["E"] == "yyyy-mm-dd"
    widths = {
        heading: sheet.column_dimensions[letter].width
        for heading, letter in zip(HEADINGS, "ABCDEFG")
    }
    assert all(len(heading) < width <= 60 for heading, width in widths.items())
    assert widths["Created at (UTC)"] >= len("2026-03-01 10:00:00 UTC")


def test_long_text_columns_are_capped(tmp_path):
    table = pa.table({"body": ["w" * 500, "short"]})
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    assert _book(path)["Data"].column_dimensions["A"].width == 60


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
    data_sheets = ["Data"] + [f"Data ({i})" for i in range(2, expected_sheets + 1)]
    assert book.sheetnames == ["Summary", *data_sheets]
    ids = []
    for name in data_sheets:
        sheet = book[name]
        assert [c.value for c in sheet[1]] == HEADINGS
        assert sheet.freeze_panes == "A2"
        assert sheet.print_title_rows == "$1:$1"  # the header on every printed page
        assert sheet.page_setup.orientation == "landscape"
        data = _data(sheet)
        assert 1 <= len(data) <= 3
        assert sheet.auto_filter.ref == f"A1:G{len(data) + 1}"
        ids += [row[-1] for row in data]
    assert ids == table.column("id").to_pylist()
    assert rows == table.num_rows
    assert _summary(book)["Rows"] == table.num_rows


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


def test_document_time_reads_the_pipelines_as_of(tmp_path):
    # build.report_context writes "2026-03-02 00:00 UTC", which used to fall back to 1980
    ctx = context(as_of="2026-03-02 00:00 UTC")
    path, _ = render_file(ExportFormat.EXCEL, sample_table(), tmp_path / "o.xlsx", ctx=ctx)
    assert _book(path).properties.created == dt.datetime(2026, 3, 2)
    with zipfile.ZipFile(path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2026, 3, 2, 0, 0, 0)}


def test_document_time_prefers_the_window_end(tmp_path):
    end = dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)
    ctx = context(as_of="end of March", window_end=end)
    path, _ = render_file(ExportFormat.EXCEL, sample_table(), tmp_path / "o.xlsx", ctx=ctx)
    assert _book(path).properties.created == dt.datetime(2026, 4, 1)


def test_unknown_as_of_claims_no_creation_time(tmp_path):
    ctx = context(as_of="")
    path, _ = render_file(ExportFormat.EXCEL, sample_table(), tmp_path / "o.xlsx", ctx=ctx)
    with zipfile.ZipFile(path) as archive:
        core = archive.read("docProps/core.xml").decode()
        assert "dcterms:created" not in core and "1980" not in core
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_empty_stream_has_a_header_sheet(tmp_path):
    table = sample_table().slice(0, 0)
    path, rows = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx")
    assert rows == 0
    book = _book(path)
    assert book.sheetnames == ["Summary", "Data"]
    sheet = book["Data"]
    assert [c.value for c in sheet[1]] == HEADINGS
    assert _data(sheet) == []
    assert _summary(book)["Rows"] == 0


def test_deterministic(tmp_path):
    options = RenderOptions(excel_rows_per_sheet=7)
    assert renders_identically(ExportFormat.EXCEL, sample_table(), tmp_path, options)


UNITS = (
    integer("scans", label="Scans"),
    integer("amount", label="Amount", unit=Unit.CREDITS),
    number("dcs", label="DCS score", unit=Unit.SCORE),
    number("price", label="Price", unit=Unit.MONEY),
    number("share", label="Share", unit=Unit.PERCENT),
    number("ratio", label="Ratio"),
    integer("legacy_id", label="Legacy ID"),
    timestamp("seen_at", label="Seen"),
)


def test_number_formats_per_unit(tmp_path):
    table = pa.table(
        {
            "scans": [1_234_567],
            "amount": [-1_250],
            "dcs": [71.25],
            "price": [1234.5],
            "share": [0.125],
            "ratio": [2.0],
            "legacy_id": [9_876_543_210],
            "seen_at": pa.array([dt.datetime(2026, 3, 1, 10)], pa.timestamp("us", tz="UTC")),
        }
    )
    ctx = context(columns=UNITS)
    path, _ = render_file(ExportFormat.EXCEL, table, tmp_path / "o.xlsx", ctx=ctx)
    sheet = _book(path)["Data"]
    header = [c.value for c in sheet[1]]
    # the identifier moves last; the time column says UTC
    assert header == [
        "Scans",
        "Amount",
        "DCS score",
        "Price",
        "Share",
        "Ratio",
        "Seen (UTC)",
        "Legacy ID",
    ]
    formats = dict(zip(header, (c.number_format for c in sheet[2])))
    assert formats == {
        "Scans": "#,##0",
        "Amount": "#,##0",
        "DCS score": "0.0",
        "Price": "#,##0.00",
        "Share": "0.0%",
        "Ratio": "#,##0.0#",
        "Seen (UTC)": 'yyyy-mm-dd hh:mm:ss "UTC"',
        "Legacy ID": "0",  # an id keeps all its digits, without separators
    }
    values = dict(zip(header, (c.value for c in sheet[2])))
    assert values["Scans"] == 1_234_567 and values["Share"] == 0.125  # values stay exact
    widths = dict(zip(header, (sheet.column_dimensions[x].width for x in "ABCDEFGH")))
    assert widths["Scans"] >= len("1,234,567") and widths["Price"] >= len("1,234.50")


ORG = "0b6f7c1e-2a43-4e8f-9d3a-5c1f2e7a9b01"


def _org_table(orgs: list[str]) -> pa.Table:
    return pa.table({"organization_id": orgs, "scan_id": ["s1", "s2"][: len(orgs)], "n": [1, 2]})


def _org_context(**overrides):
    columns = (
        string("organization_id", label="Organization", role=Role.IDENTIFIER),
        string("scan_id", label="Scan ID", role=Role.IDENTIFIER),
        integer("n", label="Scans"),
    )
    values = {"organization_id": ORG, "organization_name": "Acme Analytics", "columns": columns}
    return context(**(values | overrides))


def test_organization_is_named_once_not_repeated_as_a_column(tmp_path):
    path, _ = render_file(
        ExportFormat.EXCEL, _org_table([ORG, ORG]), tmp_path / "o.xlsx", ctx=_org_context()
    )
    book = _book(path)
    assert [c.value for c in book["Data"][1]] == ["Scans", "Scan ID"]
    assert _summary(book)["Organization"] == "Acme Analytics"
    with zipfile.ZipFile(path) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/")]
        assert sum(archive.read(n).decode().count(ORG) for n in sheets) == 0


def test_rows_of_another_organization_are_refused(tmp_path):
    with pytest.raises(ValueError, match="another"):
        render_file(
            ExportFormat.EXCEL, _org_table([ORG, "other"]), tmp_path / "o.xlsx", ctx=_org_context()
        )


def test_without_a_named_organization_its_column_stays_last(tmp_path):
    ctx = _org_context(organization_id="", organization_name="")
    path, _ = render_file(
        ExportFormat.EXCEL, _org_table([ORG, "other"]), tmp_path / "o.xlsx", ctx=ctx
    )
    assert [c.value for c in _book(path)["Data"][1]] == ["Scans", "Organization", "Scan ID"]


def test_every_sheet_prints_landscape_fit_to_width_with_page_numbers(tmp_path):
    path, _ = render_file(
        ExportFormat.EXCEL,
        sample_table(),
        tmp_path / "o.xlsx",
        RenderOptions(excel_rows_per_sheet=8),
        ctx=context(title="R&D scans", organization_name="Acme & Co"),
    )
    book = _book(path)
    assert len(book.worksheets) == 4  # the Summary and three data sheets
    for sheet in book.worksheets:
        setup = sheet.page_setup
        assert sheet.sheet_properties.pageSetUpPr.fitToPage
        assert (setup.orientation, setup.fitToWidth, setup.fitToHeight) == ("landscape", 1, 0)
        assert sheet.oddFooter.right.text == "Page &P of &N"
        assert sheet.oddFooter.left.text == "&A"  # the sheet's name
    with zipfile.ZipFile(path) as archive:
        xml = archive.read("xl/worksheets/sheet2.xml").decode()
    # a literal & is doubled in a header: a single one would start a code (&D is the date)
    assert (
        "<oddHeader>&amp;LR&amp;&amp;D scans&amp;RAcme &amp;&amp; Co · 2026-03</oddHeader>" in xml
    )


def test_summary_sheet_opens_first_with_title_block_and_totals(tmp_path):
    ctx = context(
        title="Scan results",
        organization_name="Acme Analytics",
        summary=(("Credits", "-1,250"), ("Top project", "=HYPERLINK(1)"), ("Mean", "71.3")),
    )
    path, _ = render_file(
        ExportFormat.EXCEL,
        sample_table(),
        tmp_path / "o.xlsx",
        RenderOptions(excel_rows_per_sheet=12),
        ctx=ctx,
    )
    book = _book(path)
    assert book.sheetnames[0] == "Summary" and book.active.title == "Summary"
    sheet = book["Summary"]
    assert sheet["A1"].value == "Scan results" and sheet["A1"].font.b
    summary = _summary(book)
    assert summary["Organization"] == "Acme Analytics"
    assert summary["Period"] == "2026-03"
    assert summary["Data as of"] == "2026-03-31T23:59:59Z"
    assert summary["Rows"] == 20 and sheet["B6"].number_format == "#,##0"
    assert summary["Credits"] == "-1,250"  # a number is no formula: not guarded
    assert summary["Top project"] == "'=HYPERLINK(1)"
    assert summary["Mean"] == "71.3"
    note = [v for (v,) in sheet.iter_rows(min_col=1, max_col=1, values_only=True) if v][-1]
    assert note == "The rows are on the sheets Data, Data (2); times are UTC."
