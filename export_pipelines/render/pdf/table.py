"""The PDF's table: column widths, then rows drawn straight onto the canvas, page by page.

Not platypus: one Table of all rows is quadratic, and even page-sized Tables of Paragraphs
are ~10x slower than needed. Cells are formatted per batch (`cells.display_text`),
measured with cached glyph widths and emitted as raw PDF operators (one text block and
one fill block per page, added with `Canvas.addLiteral`): reportlab's TextObject costs
~10 µs per call, which at ~10 cells per row was most of the time for 100,000 rows. Only
the current batch and page are held in Python.

Widths: each column gets its natural width (header and the 90th percentile of a sample of
the first rows; numbers and times their widest value), fitted to the page. A text column
never gets narrower than its longest word (up to `MAX_WORD_WIDTH`), so wrapping happens
at word boundaries; numbers and times never wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from reportlab.lib import colors
from reportlab.lib.rl_accel import escapePDF
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas

from export_pipelines.render.pdf.cells import ReaderColumn, display_text, is_text
from export_pipelines.render.pdf.page import MARGIN, PAGE_WIDTH, Pages
from export_pipelines.render.pdf.text import DEJAVU, TEXT_COLOR, Face, ellipsize, wrap

CELL_PAD = 2.5
MAX_CELL_LINES = 4
MAX_HEADER_LINES = 3
MAX_NATURAL_WIDTH = 220.0
MAX_WORD_WIDTH = 110.0
SAMPLE_ROWS = 500

HEADER_FILL = colors.Color(0.86, 0.89, 0.93)
ZEBRA_FILL = colors.Color(0.955, 0.96, 0.97)
RULE = colors.Color(0.75, 0.78, 0.82)


@dataclass
class _Placed:
    """A reader column at its place on the page."""

    column: ReaderColumn
    x: float
    width: float

    def __post_init__(self) -> None:
        self.right = self.column.right
        self.inner = self.width - 2 * CELL_PAD
        self.left_text = f"{self.x + CELL_PAD:.2f}"


def _widest_word(texts: Sequence[str], face: Face) -> float:
    return max((face.width(word) for text in texts for word in text.split()), default=0.0)


def column_layout(
    columns: Sequence[ReaderColumn], sample: pa.RecordBatch | None, face: Face, bold: Face
) -> list[_Placed]:
    """Column positions: natural widths from the header and a sample, fitted to the page."""
    available = PAGE_WIDTH - 2 * MARGIN
    natural, minimum = [], []
    for column in columns:
        pad = 2 * CELL_PAD
        header_min = _widest_word([column.heading], bold) + pad
        width = bold.width(column.heading) + pad
        values: list[str] = []
        if sample is not None and sample.num_rows:
            values = [v for v in display_text(sample.column(column.index), column) if v]
        if values:
            widths = sorted(face.width(v.split("\n")[0]) for v in values)
            width = max(width, widths[int(0.9 * (len(widths) - 1))] + pad)
            if not is_text(column.type):
                width = max(width, widths[-1] + pad)
        width = max(min(width, MAX_NATURAL_WIDTH), header_min)
        if is_text(column.type):  # down to its longest word (which may exceed the 90th %)
            word = max(header_min, min(_widest_word(values, face) + pad, MAX_WORD_WIDTH))
            natural.append(max(width, word))
            minimum.append(word)
        else:  # numbers and times are not worth wrapping or cutting: text gives way first
            natural.append(width)
            minimum.append(width)
    widths = _fit_widths(natural, minimum, available)
    placed, x = [], MARGIN
    for column, width in zip(columns, widths):
        placed.append(_Placed(column, x, width))
        x += width
    return placed


def _fit_widths(natural: list[float], minimum: list[float], available: float) -> list[float]:
    total = sum(natural)
    if not natural:
        return []
    if total <= available:  # spread the spare room over the columns, wider ones get more
        return [w + (available - total) * w / total for w in natural]
    floor = sum(minimum)
    if floor >= available:
        return [m * available / floor for m in minimum]
    scale = (available - floor) / (total - floor)
    return [m + (n - m) * scale for n, m in zip(natural, minimum)]


class _Encoder:
    """PDF text operators for strings, cached: a character's subset code never changes."""

    def __init__(self, canvas: Canvas):
        # reportlab keys a TTF font's subsets by document; the canvas's is what TextObject uses.
        self._doc = canvas._doc
        self._cache: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def encode(self, font_name: str, text: str) -> tuple[tuple[str, str], ...]:
        """((subset font resource, escaped string), …) for `text` in `font_name`."""
        key = (font_name, text)
        hit = self._cache.get(key)
        if hit is None:
            font = pdfmetrics.getFont(font_name)
            hit = tuple(
                (font.getSubsetInternalName(subset, self._doc), escapePDF(chunk))
                for subset, chunk in font.splitString(text, self._doc)
            )
            if len(self._cache) >= 100_000:  # bound memory on high-cardinality text
                self._cache.clear()
            self._cache[key] = hit
        return hit


class Table:
    """Draws rows page by page; the header row is repeated at the top of every page."""

    def __init__(self, pages: Pages, columns: Sequence[ReaderColumn]):
        self.pages = pages
        self.reader_columns = list(columns)
        size = 7.0 if len(columns) <= 16 else 6.0
        self.face = Face(DEJAVU["cell"], size)
        self.bold = Face(DEJAVU["cell-bold"], size)
        self.leading = size * 1.22
        self.columns: list[_Placed] | None = None
        self.header: list[list[str]] = []
        self.header_height = 0.0
        self.max_advance = 0.0
        self.rows_on_page = 0
        self.page_top = 0.0
        self.encoder = _Encoder(pages.canvas)
        self._ops: list[str] = []
        self._fills: list[str] = []
        self._font = ""
        self._subset0: dict[str, str] = {}

    def _setup(self, sample: pa.RecordBatch | None) -> None:
        self.columns = column_layout(self.reader_columns, sample, self.face, self.bold)
        self.header = [
            wrap(c.column.heading, self.bold, c.inner, MAX_HEADER_LINES) for c in self.columns
        ]
        lines = max((len(h) for h in self.header), default=1)
        self.header_height = lines * self.leading + 2 * CELL_PAD
        # No usual glyph is wider than these: below len * max_advance a cell surely fits.
        self.max_advance = max(self.face.char_width(ch) for ch in "WMmw@%—")

    def add(self, batch: pa.RecordBatch) -> None:
        if not self.reader_columns:  # nothing to tabulate; the cover still reports the rows
            return
        if self.columns is None:
            self._setup(batch.slice(0, SAMPLE_ROWS))
            self._start_table()
        assert self.columns is not None
        columns = self.columns
        texts = [display_text(batch.column(c.column.index), c.column) for c in columns]
        face, leading, max_advance = self.face, self.leading, self.max_advance
        for row in zip(*texts):
            cells: list[str | list[str] | None] = []
            lines = 1
            for value, column in zip(row, columns):
                if not value:
                    cells.append(None)
                elif "\n" not in value and (
                    len(value) * max_advance <= column.inner or face.width(value) <= column.inner
                ):
                    cells.append(value)
                elif column.right:
                    fits = face.width(value) <= column.inner
                    cells.append(value if fits else ellipsize(value, face, column.inner))
                else:
                    wrapped = wrap(value, face, column.inner, MAX_CELL_LINES)
                    cells.append(wrapped if len(wrapped) > 1 else wrapped[0])
                    lines = max(lines, len(wrapped))
            height = lines * leading + 2 * CELL_PAD
            if self.pages.y - height < self.pages.bottom:
                self._end_page()
                self.pages.new_page()
                self._start_table()
            self._row(cells, height)

    def _start_table(self) -> None:
        """Header row at the cursor (a new page when too little room is left for it)."""
        assert self.columns is not None
        pages = self.pages
        if pages.y - (self.header_height + self.leading + 2 * CELL_PAD) < pages.bottom:
            pages.new_page()
        self.page_top = pages.y
        self._fill(HEADER_FILL, pages.y - self.header_height, self.header_height)
        self._ops, self._font = [], ""
        for column, lines in zip(self.columns, self.header):
            self._lines(column, lines, pages.y, self.bold)
        pages.y -= self.header_height
        self.rows_on_page = 0

    def _fill(self, color: colors.Color, y: float, height: float) -> None:
        assert self.columns is not None
        width = self.columns[-1].x + self.columns[-1].width - MARGIN
        self._fills.append(
            f"{color.red:.3f} {color.green:.3f} {color.blue:.3f} rg "
            f"{MARGIN:.2f} {y:.2f} {width:.2f} {height:.2f} re f"
        )

    def _row(self, cells: Sequence[str | list[str] | None], height: float) -> None:
        pages = self.pages
        assert self.columns is not None
        if self.rows_on_page % 2:
            self._fill(ZEBRA_FILL, pages.y - height, height)
        top = pages.y
        for column, cell in zip(self.columns, cells):
            if cell is not None:
                self._lines(column, [cell] if isinstance(cell, str) else cell, top, self.face)
        pages.y -= height
        self.rows_on_page += 1

    def _lines(self, column: _Placed, lines: list[str], top: float, face: Face) -> None:
        ops = self._ops
        baseline = top - CELL_PAD - face.ascent
        for line in lines:
            if column.right:
                x = f"{column.x + column.width - CELL_PAD - face.width(line):.2f}"
            else:
                x = column.left_text
            ops.append(f"1 0 0 1 {x} {baseline:.2f} Tm")
            if line.isascii():
                # ASCII sits at its own codes in subset 0 of reportlab's TTF subsets.
                resource = self._ascii_subset(face.name)
                if resource != self._font:
                    ops.append(f"{resource} {face.size:g} Tf")
                    self._font = resource
                ops.append(f"({escapePDF(line)}) Tj")
            else:
                for font_name, run in face.runs(line):
                    for resource, escaped in self.encoder.encode(font_name, run):
                        if resource != self._font:
                            ops.append(f"{resource} {face.size:g} Tf")
                            self._font = resource
                        ops.append(f"({escaped}) Tj")
            baseline -= self.leading

    def _ascii_subset(self, font_name: str) -> str:
        resource = self._subset0.get(font_name)
        if resource is None:
            resource = self.encoder.encode(font_name, " ")[0][0]
            self._subset0[font_name] = resource
        return resource

    def _end_page(self) -> None:
        """Emit the page's fills, text and the rules around the table."""
        if not self.columns:
            return
        c, pages = self.pages.canvas, self.pages
        r, g, b = TEXT_COLOR.red, TEXT_COLOR.green, TEXT_COLOR.blue
        c.addLiteral("q\n" + "\n".join(self._fills) + "\nQ")
        c.addLiteral(f"BT\n{r:.3f} {g:.3f} {b:.3f} rg\n" + "\n".join(self._ops) + "\nET")
        self._fills, self._ops, self._font = [], [], ""
        left, right = MARGIN, self.columns[-1].x + self.columns[-1].width
        c.setStrokeColor(RULE)
        c.setLineWidth(0.4)
        c.line(left, self.page_top - self.header_height, right, self.page_top - self.header_height)
        for column in self.columns[1:]:
            c.line(column.x, self.page_top, column.x, pages.y)
        c.rect(left, pages.y, right - left, self.page_top - pages.y, stroke=1, fill=0)

    def finish(self) -> None:
        """End the table (a header only when there were no rows)."""
        if self.columns is None and self.reader_columns:
            self._setup(None)
            self._start_table()
        self._end_page()
