"""Excel renderer: a streaming OOXML (.xlsx) writer for people, cells built by pyarrow.compute.

What a person gets: a first "Summary" sheet (title, organization by name, period, data as
of, rows, the totals), then the rows on "Data" (a new sheet every `excel_rows_per_sheet`
rows: "Data (2)", …). Data sheets have labelled headers, readers' columns first and ids
last, number formats per unit, UTC date-times, a bold frozen header with an autofilter,
readable widths, and print as reports (landscape, fit to width, header row on every page,
page numbers) — see `xlsx_layout` and `xlsx_parts`. Cells follow Excel's rules (no formulas
or hyperlinks from text, the 32,767-character limit, the formula guard; `xlsx_cells`).
Document properties and zip dates carry the data's as-of, never the clock, so the same
input gives the same bytes.

Why a writer of our own (numbers from BENCHMARKS-render.md, this 2-core machine): at
100,000 rows pandas.to_excel takes 11.9 s and xlsxwriter in constant_memory mode 5.5 s;
rustpy-xlsxwriter (Rust) is fast (0.72 s; 7.5 s at 1M rows) but, in 0.8.0, stamps the
wall clock into docProps/core.xml with no way to set it, so its output is never
byte-identical, and it takes a whole DataFrame per sheet (437 MB peak at 1M rows) or
Python dicts per row (slower). Here each batch's sheet XML is built column by column
with Arrow kernels (two threads) and deflated by zlib in a third thread while the next
batch is built: about one batch in memory whatever the row count. openpyxl, LibreOffice
and the tests read the files back.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import joined_bytes, small_batches, worker_count
from export_pipelines.render.xlsx_cells import (
    MAX_CELL_CHARS,
    TRUNCATION_MARKER,
    column_cells,
    column_letter,
)
from export_pipelines.render.xlsx_layout import (
    STYLE_HEADER,
    SheetColumn,
    check_organization,
    column_width,
    sheet_columns,
)
from export_pipelines.render.xlsx_parts import (
    APP,
    ROOT_RELS,
    STYLES,
    as_of_moment,
    content_types,
    core_properties,
    filter_ref,
    header_row,
    sheet_head,
    sheet_path,
    sheet_tail,
    summary_sheet,
    workbook,
    workbook_rels,
)

__all__ = ["MAX_CELL_CHARS", "MAX_COLUMNS", "TRUNCATION_MARKER", "write_xlsx"]

MAX_COLUMNS = 16_384
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
# zlib level 1: about 3x faster than the default level 6 for ~15% larger sheets.
ZIP_LEVEL = 1


def _zip_date(context: ReportContext) -> tuple[int, int, int, int, int, int]:
    moment = as_of_moment(context)
    if moment is None or moment.year < 1980:
        return ZIP_EPOCH
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _zip_info(name: str, date: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date)
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

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, head: str, large: bool):
        self.rows = 0
        self._member = archive.open(info, "w", force_zip64=large)
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


class _DataSheets:
    """The data sheets of one workbook, opened one after the other as the rows arrive."""

    def __init__(
        self,
        archive: zipfile.ZipFile,
        columns: list[SheetColumn],
        context: ReportContext,
        date: tuple[int, int, int, int, int, int],
    ):
        self._archive, self._columns, self._context, self._date = archive, columns, context, date
        self._header = header_row([c.heading for c in columns], STYLE_HEADER).encode("utf-8")
        self._widths: list[float] | None = None
        self.number = 0  # of the sheet being written; 0 before the first
        self.current: _SheetStream | None = None
        self.last_rows: list[int] = []  # last row number of each finished sheet

    def open(self, first: pa.RecordBatch | None, bytes_per_row: float, per_sheet: int) -> None:
        """Finish the current sheet and start the next; widths come from the first rows."""
        self.close()
        if self._widths is None:
            self._widths = [
                column_width(c, None if first is None else first.column(c.name))
                for c in self._columns
            ]
        self.number += 1
        info = _zip_info(sheet_path(self.number), self._date)
        head = sheet_head(self._widths, frozen_header=True, selected=False)
        large = bytes_per_row * per_sheet > 1 << 30
        self.current = _SheetStream(self._archive, info, head, large)
        self.current.write(self._header)

    def close(self) -> None:
        if self.current is None:
            return
        last_row = self.current.rows + 1
        autofilter = filter_ref(len(self._columns), last_row) if self._columns else None
        self.current.close(sheet_tail(self._context, autofilter))
        self.last_rows.append(last_row)
        self.current = None


def write_xlsx(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write `reader` to `path` as .xlsx; return the number of data rows."""
    if options.excel_rows_per_sheet < 1 or options.excel_rows_per_sheet > 1_048_575:
        raise ValueError("excel_rows_per_sheet must be between 1 and 1,048,575")
    columns = sheet_columns(reader.schema, context)
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"Excel sheets hold at most {MAX_COLUMNS:,} columns, not {len(columns):,}")
    letters = [column_letter(i) for i in range(len(columns))]
    date = _zip_date(context)
    total = 0
    with (
        zipfile.ZipFile(path, "w", allowZip64=True) as archive,
        ThreadPoolExecutor(worker_count()) as pool,
    ):
        sheets = _DataSheets(archive, columns, context, date)
        for number, first_row, piece in _slices(reader, options.excel_rows_per_sheet):
            check_organization(piece, context)
            chunk = _sheet_xml(piece, columns, letters, first_row, options.formula_guard, pool)
            if number != sheets.number:
                sheets.open(piece, chunk.nbytes / piece.num_rows, options.excel_rows_per_sheet)
            sheets.current.write(chunk)
            sheets.current.rows += piece.num_rows
            total += piece.num_rows
        if sheets.current is None:  # no rows at all: one data sheet with the header
            sheets.open(None, 0, options.excel_rows_per_sheet)
        sheets.close()

        parts = {
            sheet_path(0): summary_sheet(context, total, len(sheets.last_rows)),
            "xl/workbook.xml": workbook(sheets.last_rows, len(columns)),
            "xl/_rels/workbook.xml.rels": workbook_rels(len(sheets.last_rows) + 1),
            "xl/styles.xml": STYLES,
            "docProps/core.xml": core_properties(context),
            "docProps/app.xml": APP,
            "_rels/.rels": ROOT_RELS,
            "[Content_Types].xml": content_types(len(sheets.last_rows) + 1),
        }
        for name, text in parts.items():
            archive.writestr(_zip_info(name, date), text.encode("utf-8"))
    return total


def _sheet_xml(
    piece: pa.RecordBatch,
    columns: list[SheetColumn],
    letters: list[str],
    first_row: int,
    guard: bool,
    pool: ThreadPoolExecutor,
) -> memoryview:
    rows = pa.array(range(first_row, first_row + piece.num_rows), pa.int64()).cast(pa.string())
    cells = list(
        pool.map(
            lambda c, letter: column_cells(piece.column(c.name), letter, rows, guard, c.style),
            columns,
            letters,
        )
    )
    lines = pc.binary_join_element_wise('<row r="', rows, '">', *cells, "</row>", "")
    # The view keeps the Arrow buffer alive until the writer thread has deflated it.
    return joined_bytes(lines)
