"""Excel renderer: a streaming OOXML (.xlsx) writer whose cells are built with pyarrow.compute.

What a person gets: typed cells (numbers, booleans, real Excel date-times shown as
``yyyy-mm-dd hh:mm:ss`` and dates as ``yyyy-mm-dd``, UTC), a bold header row that stays
frozen, an autofilter, column widths estimated from the header and the first batch
(capped at 60), and a new sheet every `excel_rows_per_sheet` data rows ("Data",
"Data (2)", …, each with its header). Text never becomes a formula or a hyperlink (cells
are inline strings), text over Excel's 32,767-character limit is cut and ends with
``… [truncated]``, and with `formula_guard` on, text starting with ``= + - @`` tab or CR
gets a leading ``'`` as in CSV. Characters XML forbids become U+FFFD, and literal
``_xHHHH_`` sequences are escaped so that Excel does not decode them. Int64 values are
Excel numbers (doubles: beyond 2^53 Excel shows them rounded); NaN and infinities, which
Excel cannot store, are empty cells; date-times before 1900-03-01 (Excel's calendar bug)
are written as ISO text. Document properties carry ReportContext.as_of, never the clock,
and zip entries a fixed date, so the same input gives the same bytes.

Why a writer of our own (numbers from BENCHMARKS-render.md, this 2-core machine): at
100,000 rows pandas.to_excel takes 11.9 s and xlsxwriter in constant_memory mode 5.5 s;
rustpy-xlsxwriter (Rust) is fast (0.72 s; 7.5 s at 1M rows) but, in 0.8.0, stamps the
wall clock into docProps/core.xml with no way to set it, so its output is never
byte-identical, and it takes a whole DataFrame per sheet (437 MB peak at 1M rows) or
Python dicts per row (slower). Here each batch's sheet XML is built column by column
with Arrow kernels (two threads) and deflated by zlib in a third thread while the next
batch is built: about one batch in memory, and 0.63 s / 4.5 s for 100k / 1M rows.
openpyxl, LibreOffice and the tests read the files back.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import (
    guard_formulas,
    is_text,
    iso_timestamps,
    joined_bytes,
    small_batches,
    worker_count,
)

MAX_CELL_CHARS = 32_767  # Excel's limit, counted in UTF-16 code units
MAX_COLUMNS = 16_384
TRUNCATION_MARKER = "… [truncated]"
MAX_COLUMN_WIDTH = 60
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# zlib level 1: about 3x faster than the default level 6 for ~15% larger sheets.
ZIP_LEVEL = 1
EXCEL_EPOCH_DAYS = 25_569  # 1970-01-01 as an Excel serial day (1900 date system)
US_PER_DAY = 86_400_000_000
FIRST_RELIABLE_SERIAL = 61  # 1900-03-01: earlier serials are off by Excel's 1900 leap bug

STYLE_HEADER, STYLE_DATETIME, STYLE_DATE = 1, 2, 3
_ILLEGAL_RE2 = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}]"

_NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def sheet_name(number: int) -> str:
    return "Data" if number == 1 else f"Data ({number})"


# --- cell text ---------------------------------------------------------------------------


def _truncate(array: pa.Array) -> pa.Array:
    """Cut strings longer than Excel's cell limit and mark them; counts UTF-16 code units."""
    # Only strings of more than half the limit in code points can exceed it in UTF-16 units.
    long_mask = pc.fill_null(pc.greater(pc.utf8_length(array), MAX_CELL_CHARS // 2), False)
    if not pc.any(long_mask).as_py():
        return array
    values = pc.filter(array, long_mask).to_pylist()
    replaced = [_truncate_one(v) for v in values]
    return pc.replace_with_mask(array, long_mask, pa.array(replaced, pa.string()))


def _truncate_one(value: str) -> str:
    units = len(value.encode("utf-16-le")) // 2
    if units <= MAX_CELL_CHARS:
        return value
    budget = MAX_CELL_CHARS - len(TRUNCATION_MARKER.encode("utf-16-le")) // 2
    cut, used = 0, 0
    for char in value:  # rare path (only over-long cells): a Python loop is fine here
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > budget:
            break
        used += size
        cut += 1
    return value[:cut] + TRUNCATION_MARKER


def cell_text(array: pa.Array, guard: bool) -> pa.Array:
    """Text as it goes into an inline-string cell (escaped XML, Excel's rules applied)."""
    array = array.cast(pa.string())
    if guard:
        array = guard_formulas(array)
    array = _truncate(array)
    array = pc.replace_substring_regex(array, _ILLEGAL_RE2, "\ufffd")
    # Excel decodes _xHHHH_ in text as a character; escape the underscore to keep it literal.
    array = pc.replace_substring_regex(array, r"_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1")
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        array = pc.replace_substring(array, raw, entity)
    return array


def _string_cells(text: pa.Array, ref: tuple[str, pa.Array], style: str = "") -> pa.Array:
    letter, rows = ref
    edge_space = pc.match_substring_regex(text, r"^[ \t\n]|[ \t\n]$|^&#13;|&#13;$")
    open_t = pc.if_else(edge_space, '<t xml:space="preserve">', "<t>")
    return pc.binary_join_element_wise(
        f'<c r="{letter}', rows, f'"{style} t="inlineStr"><is>', open_t, text, "</t></is></c>", ""
    )


def _number_cells(values: pa.Array, ref: tuple[str, pa.Array], style: str = "") -> pa.Array:
    letter, rows = ref
    return pc.binary_join_element_wise(
        f'<c r="{letter}', rows, f'"{style}><v>', values.cast(pa.string()), "</v></c>", ""
    )


def column_cells(array: pa.Array, letter: str, rows: pa.Array, guard: bool) -> pa.Array:
    """One XML ``<c>`` element per row for this column; empty string for a null."""
    ref = (letter, rows)
    type_ = array.type
    if is_text(type_):
        cells = _string_cells(cell_text(array, guard), ref)
    elif pa.types.is_boolean(type_):
        cells = pc.binary_join_element_wise(
            f'<c r="{letter}', rows, '" t="b"><v>', pc.if_else(array, "1", "0"), "</v></c>", ""
        )
    elif pa.types.is_floating(type_):
        finite = pc.if_else(pc.is_finite(array), array, pa.scalar(None, type_))
        cells = _number_cells(finite, ref)
    elif pa.types.is_integer(type_):
        cells = _number_cells(array, ref)
    elif pa.types.is_timestamp(type_):
        micros = array.cast(pa.timestamp("us", tz=type_.tz)).cast(pa.int64())
        serial = pc.add(pc.divide(micros.cast(pa.float64()), float(US_PER_DAY)), EXCEL_EPOCH_DAYS)
        cells = _dated(serial, iso_timestamps(array), ref, STYLE_DATETIME)
    elif pa.types.is_date(type_):
        serial = pc.add(array.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), EXCEL_EPOCH_DAYS)
        cells = _dated(serial, array.cast(pa.string()), ref, STYLE_DATE)
    else:  # not in the contract; shown as text rather than refused
        cells = _string_cells(cell_text(array.cast(pa.string()), guard), ref)
    return pc.fill_null(cells, "")


def _dated(serial: pa.Array, iso: pa.Array, ref: tuple[str, pa.Array], style: int) -> pa.Array:
    numbers = _number_cells(serial, ref, f' s="{style}"')
    early = pc.fill_null(pc.less(serial, FIRST_RELIABLE_SERIAL), False)
    if not pc.any(early).as_py():
        return numbers
    return pc.if_else(early, _string_cells(iso, ref), numbers)


def header_row(names: list[str]) -> str:
    cells = "".join(
        f'<c r="{column_letter(i)}1" s="{STYLE_HEADER}" t="inlineStr"><is><t xml:space="preserve">'
        f"{_escape_name(name)}</t></is></c>"
        for i, name in enumerate(names)
    )
    return f'<row r="1">{cells}</row>'


def _escape_name(name: str) -> str:
    array = cell_text(pa.array([name], pa.string()), guard=False)
    return array[0].as_py()


def column_widths(names: list[str], batch: pa.RecordBatch | None) -> list[float]:
    """Widths in characters from the header and the first batch, capped."""
    widths = []
    for i, name in enumerate(names):
        width = len(name)
        if batch is not None and batch.num_rows:
            column = batch.column(i)
            if pa.types.is_timestamp(column.type):
                width = max(width, 19)
            elif pa.types.is_date(column.type):
                width = max(width, 10)
            elif pa.types.is_boolean(column.type):
                width = max(width, 5)
            else:
                longest = pc.max(pc.utf8_length(column.cast(pa.string()))).as_py()
                width = max(width, longest or 0)
        widths.append(min(width + 2, MAX_COLUMN_WIDTH))
    return widths


# --- package parts -----------------------------------------------------------------------


def _sheet_head(widths: list[float], first: bool) -> str:
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{w:.2f}" customWidth="1"/>'
        for i, w in enumerate(widths, start=1)
    )
    selected = ' tabSelected="1"' if first else ""
    return (
        f'{_XML_DECL}<worksheet xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}">'
        f'<sheetViews><sheetView{selected} workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>'
        '<sheetFormatPr defaultRowHeight="15"/>'
        + (f"<cols>{cols}</cols>" if cols else "")
        + "<sheetData>"
    )


def _filter_ref(columns: int, last_row: int) -> str:
    return f"A1:{column_letter(max(columns, 1) - 1)}{last_row}"


def _sheet_tail(columns: int, last_row: int) -> str:
    autofilter = f'<autoFilter ref="{_filter_ref(columns, last_row)}"/>' if columns else ""
    return (
        f"</sheetData>{autofilter}"
        '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
        "</worksheet>"
    )


def _workbook(sheets: list[int], columns: int) -> str:
    entries = "".join(
        f'<sheet name="{sheet_name(i)}" sheetId="{i}" r:id="rId{i}"/>'
        for i in range(1, len(sheets) + 1)
    )
    last_col = column_letter(max(columns, 1) - 1)
    names = "".join(
        f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
        f"'{sheet_name(i + 1)}'!$A$1:${last_col}${last_row}</definedName>"
        for i, last_row in enumerate(sheets)
    )
    defined = f"<definedNames>{names}</definedNames>" if columns else ""
    return (
        f'{_XML_DECL}<workbook xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}">'
        '<bookViews><workbookView activeTab="0"/></bookViews>'
        f"<sheets>{entries}</sheets>{defined}</workbook>"
    )


def _workbook_rels(sheet_count: int) -> str:
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{_NS_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, sheet_count + 1)
    )
    styles = (
        f'<Relationship Id="rId{sheet_count + 1}" Type="{_NS_REL}/styles" Target="styles.xml"/>'
    )
    return f'{_XML_DECL}<Relationships xmlns="{_NS_PKG_REL}">{rels}{styles}</Relationships>'


def _content_types(sheet_count: int) -> str:
    sheet_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
    sheets = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{sheet_type}"/>'
        for i in range(1, sheet_count + 1)
    )
    return (
        f'{_XML_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        f"{sheets}"
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        '<Override PartName="/docProps/app.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
        "</Types>"
    )


_ROOT_RELS = (
    f'{_XML_DECL}<Relationships xmlns="{_NS_PKG_REL}">'
    f'<Relationship Id="rId1" Type="{_NS_REL}/officeDocument" Target="xl/workbook.xml"/>'
    '<Relationship Id="rId2" '
    'Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" '
    'Target="docProps/core.xml"/>'
    f'<Relationship Id="rId3" Type="{_NS_REL}/extended-properties" Target="docProps/app.xml"/>'
    "</Relationships>"
)

_STYLES = (
    f'{_XML_DECL}<styleSheet xmlns="{_NS_MAIN}">'
    '<numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/>'
    '<numFmt numFmtId="165" formatCode="yyyy-mm-dd"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="4"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)

_APP = (
    f"{_XML_DECL}<Properties "
    'xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
    "<Application>export_pipelines</Application></Properties>"
)


def document_time(as_of: str) -> str:
    """ReportContext.as_of as a W3CDTF UTC time; a fixed time when it does not parse."""
    try:
        moment = dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    except ValueError:
        return "1980-01-01T00:00:00Z"
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _core(context: ReportContext) -> str:
    when = document_time(context.as_of)
    return (
        f"{_XML_DECL}<cp:coreProperties "
        'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{_xml_attr_text(context.title)}</dc:title>"
        f"<dc:subject>{_xml_attr_text(context.export_type)}</dc:subject>"
        "<dc:creator>export_pipelines</dc:creator>"
        f'<dcterms:created xsi:type="dcterms:W3CDTF">{when}</dcterms:created>'
        f'<dcterms:modified xsi:type="dcterms:W3CDTF">{when}</dcterms:modified>'
        "</cp:coreProperties>"
    )


def _xml_attr_text(value: str) -> str:
    cleaned = pc.replace_substring_regex(pa.array([value]), _ILLEGAL_RE2, "\ufffd")[0].as_py()
    return xml_escape(cleaned)


# --- writing -----------------------------------------------------------------------------


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = ZIP_LEVEL  # type: ignore[attr-defined]  # no public setter in 3.11
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def _slices(
    reader: pa.RecordBatchReader, per_sheet: int
) -> Iterator[tuple[int, int, pa.RecordBatch]]:
    """(sheet number, first data row number in the sheet, rows) for each piece of the stream."""
    sheet, used = 1, 0
    for batch in small_batches(reader):
        start = 0
        while start < batch.num_rows:
            if used == per_sheet:
                sheet, used = sheet + 1, 0
            take = min(per_sheet - used, batch.num_rows - start)
            yield sheet, used + 2, batch.slice(start, take)
            used += take
            start += take


class _SheetStream:
    """Writes the parts of one worksheet, deflating in a background thread."""

    def __init__(self, archive: zipfile.ZipFile, number: int, head: str, large: bool):
        self.number = number
        self.rows = 0
        self._member = archive.open(
            _zip_info(f"xl/worksheets/sheet{number}.xml"), "w", force_zip64=large
        )
        self._writer = ThreadPoolExecutor(1)
        self._pending: Future[int] | None = None
        self.write(head.encode("utf-8"))

    def write(self, data: bytes | memoryview) -> None:
        # Wait for the previous chunk first: at most one chunk in flight bounds memory.
        if self._pending is not None:
            self._pending.result()
        self._pending = self._writer.submit(self._member.write, data)

    def close(self, tail: str) -> None:
        self.write(tail.encode("utf-8"))
        assert self._pending is not None
        self._pending.result()
        self._writer.shutdown()
        self._member.close()


def write_xlsx(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write `reader` to `path` as .xlsx; return the number of data rows."""
    if options.excel_rows_per_sheet < 1 or options.excel_rows_per_sheet > 1_048_575:
        raise ValueError("excel_rows_per_sheet must be between 1 and 1,048,575")
    names = list(reader.schema.names)
    if len(names) > MAX_COLUMNS:
        raise ValueError(f"Excel sheets hold at most {MAX_COLUMNS:,} columns, not {len(names):,}")
    letters = [column_letter(i) for i in range(len(names))]
    header = header_row(names)
    sheet_rows: list[int] = []  # last row number of each finished sheet
    total = 0
    sheet: _SheetStream | None = None
    widths: list[float] | None = None
    with (
        zipfile.ZipFile(path, "w", allowZip64=True) as archive,
        ThreadPoolExecutor(worker_count()) as pool,
    ):
        for number, first_row, piece in _slices(reader, options.excel_rows_per_sheet):
            if widths is None:
                widths = column_widths(names, piece)
            if sheet is None or sheet.number != number:
                if sheet is not None:
                    sheet_rows.append(sheet.rows + 1)
                    sheet.close(_sheet_tail(len(names), sheet.rows + 1))
                chunk = _sheet_xml(piece, letters, first_row, options.formula_guard, pool)
                large = chunk.nbytes / piece.num_rows * options.excel_rows_per_sheet > 1 << 30
                sheet = _SheetStream(archive, number, _sheet_head(widths, number == 1), large)
                sheet.write(header.encode("utf-8"))
            else:
                chunk = _sheet_xml(piece, letters, first_row, options.formula_guard, pool)
            sheet.write(chunk)
            sheet.rows += piece.num_rows
            total += piece.num_rows
        if sheet is None:  # no rows at all: one sheet with the header
            sheet = _SheetStream(archive, 1, _sheet_head(column_widths(names, None), True), False)
            sheet.write(header.encode("utf-8"))
        sheet_rows.append(sheet.rows + 1)
        sheet.close(_sheet_tail(len(names), sheet.rows + 1))

        for name, text in (
            ("xl/workbook.xml", _workbook(sheet_rows, len(names))),
            ("xl/_rels/workbook.xml.rels", _workbook_rels(len(sheet_rows))),
            ("xl/styles.xml", _STYLES),
            ("docProps/core.xml", _core(context)),
            ("docProps/app.xml", _APP),
            ("_rels/.rels", _ROOT_RELS),
            ("[Content_Types].xml", _content_types(len(sheet_rows))),
        ):
            archive.writestr(_zip_info(name), text.encode("utf-8"))
    return total


def _sheet_xml(
    piece: pa.RecordBatch,
    letters: list[str],
    first_row: int,
    guard: bool,
    pool: ThreadPoolExecutor,
) -> memoryview:
    rows = pa.array(range(first_row, first_row + piece.num_rows), pa.int64()).cast(pa.string())
    cells = list(
        pool.map(lambda c, letter: column_cells(c, letter, rows, guard), piece.columns, letters)
    )
    lines = pc.binary_join_element_wise('<row r="', rows, '">', *cells, "</row>", "")
    # The view keeps the Arrow buffer alive until the writer thread has deflated it.
    return joined_bytes(lines)
