"""PDF renderer: a report a person reads — title block, summary, optional chart, then the table.

Layout: landscape A4. Page 1 starts with the title, the export's identity (type,
organization, period, "data as of"), a summary (row count and ReportContext.summary),
a line saying how many rows the PDF shows, and the chart when ReportContext.chart is
set; the table follows, with its header row repeated on every page, numbers
right-aligned, long text wrapped (at most `MAX_CELL_LINES` lines and `MAX_CELL_CHARS`
characters per cell, cut with ``…``), times in UTC (``YYYY-MM-DD HH:MM:SS``), and a footer
"Page N of M". Text is set in the DejaVu fonts shipped in ``fonts/``; characters DejaVu
lacks are drawn from the fallback fonts shipped beside them (Droid Sans Fallback for CJK,
Symbola for emoji and symbols), or from Debian's copies of those fonts.

Row limit: only the first `options.pdf_row_limit` rows are drawn. The total is known
only at the end of the single-pass stream, so the renderer keeps reading (counting, and
feeding the chart) after the limit, and the first page's row count and note ("This PDF
shows the first N of M rows; the complete data is in <full_file_name>") are PDF form
XObjects placed on page 1 and filled in at the end — as is "of M" in the footers. The
same note closes the table on the last page. So no caller has to know the count ahead.

Speed and memory: the table is not platypus (one Table of all rows is quadratic, and
even page-sized Tables of Paragraphs are ~10x slower than needed). Cells are formatted
per batch with pyarrow.compute, measured with cached glyph widths, and drawn straight
onto the canvas page by page; only the current batch and page are held in Python.
The chart aggregates the stream into a bounded number of points (`MAX_CHART_KEYS`).
`invariant=1` keeps dates and ids out of the file, so the same input gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from reportlab import rl_config
from reportlab.graphics import renderPDF
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.rl_accel import escapePDF
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import small_batches

log = logging.getLogger(__name__)

FONT_DIR = Path(__file__).parent / "fonts"
_FALLBACK_FONT_FILES = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf",
    "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
)
_DEJAVU = {
    "body": "DejaVuSans",
    "body-bold": "DejaVuSans-Bold",
    "cell": "DejaVuSansCondensed",
    "cell-bold": "DejaVuSansCondensed-Bold",
}

PAGE_WIDTH, PAGE_HEIGHT = landscape(A4)
MARGIN = 28.0
FOOTER_SPACE = 18.0
CELL_PAD = 2.0
MAX_CELL_LINES = 4
MAX_CELL_CHARS = 300
MAX_HEADER_LINES = 3
MIN_COLUMN_WIDTH = 28.0
MAX_NATURAL_WIDTH = 220.0
SAMPLE_ROWS = 500
CHART_HEIGHT = 190.0
MAX_CHART_KEYS = 2_000  # distinct labels or time buckets kept while streaming
BAR_COUNT = 15
NOTE_HEIGHT = 30.0

HEADER_FILL = colors.Color(0.86, 0.89, 0.93)
ZEBRA_FILL = colors.Color(0.955, 0.96, 0.97)
RULE = colors.Color(0.75, 0.78, 0.82)
NOTE_COLOR = colors.Color(0.6, 0.1, 0.05)
TEXT_COLOR = colors.Color(0.1, 0.1, 0.12)
GREY_TEXT = colors.Color(0.35, 0.37, 0.4)


# --- fonts ---------------------------------------------------------------------------------


class _FontSet:
    """The DejaVu fonts plus fallbacks for characters they lack, each loaded on first need."""

    def __init__(self, fallback_files: list[Path]):
        self._fallback_files = fallback_files
        self._loaded: list[str] | None = None

    def covers(self, name: str, code: int) -> bool:
        return code in pdfmetrics.getFont(name).face.charToGlyph

    def covering(self, text: str, preferred: str) -> str:
        """The first of `preferred` and the fallbacks with a glyph for every character."""
        codes = {ord(c) for c in text if ord(c) > 32}
        for name in [preferred, *(self.fallbacks() if codes else [])]:
            if all(self.covers(name, code) for code in codes):
                return name
        return preferred

    def fallbacks(self) -> list[str]:
        # Parsing a CJK font costs ~50 MB and 0.5 s: only done once a character needs it.
        if self._loaded is None:
            self._loaded = []
            for file in self._fallback_files:
                name = f"Fallback-{file.stem}"
                try:
                    pdfmetrics.registerFont(TTFont(name, str(file)))
                except (OSError, TTFError) as error:  # an unusable font is skipped, not fatal
                    log.warning("fallback font %s not usable: %s", file, error)
                    continue
                self._loaded.append(name)
        return self._loaded


@functools.lru_cache(maxsize=1)
def fonts() -> _FontSet:
    """Register the DejaVu fonts and find the fallback font files (once per process)."""
    for name in _DEJAVU.values():
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / f"{name}.ttf")))
    extra = sorted(p for p in FONT_DIR.glob("*.ttf") if p.stem not in _DEJAVU.values())
    shipped = {p.name for p in extra}
    system = [
        Path(p) for p in _FALLBACK_FONT_FILES if Path(p).is_file() and Path(p).name not in shipped
    ]
    return _FontSet([*extra, *system])


class _Face:
    """One font at one size: glyph widths (cached per character) and fallback runs."""

    def __init__(self, name: str, size: float, font_set: _FontSet):
        self.name, self.size = name, size
        self._fonts = font_set
        self._widths: dict[str, float] = {}
        self._font_of: dict[str, str] = {}
        self.ascent = pdfmetrics.getAscent(name, size)

    def font_for(self, char: str) -> str:
        font = self._font_of.get(char)
        if font is None:
            font = self.name
            code = ord(char)
            if code > 32 and not self._fonts.covers(font, code):
                fallbacks = self._fonts.fallbacks()
                font = next((f for f in fallbacks if self._fonts.covers(f, code)), self.name)
            self._font_of[char] = font
        return font

    def char_width(self, char: str) -> float:
        width = self._widths.get(char)
        if width is None:
            width = pdfmetrics.stringWidth(char, self.font_for(char), self.size)
            self._widths[char] = width
        return width

    def width(self, text: str) -> float:
        widths = self._widths
        try:
            return sum(map(widths.__getitem__, text))
        except KeyError:
            return sum(map(self.char_width, text))

    def runs(self, text: str) -> list[tuple[str, str]]:
        """(font, text) runs: the face's own font wherever it has the glyph."""
        if text.isascii():
            return [(self.name, text)]
        fonts_used = list(map(self.font_for, text))
        if fonts_used.count(self.name) == len(fonts_used):
            return [(self.name, text)]
        runs: list[tuple[str, str]] = []
        for char, font in zip(text, fonts_used):
            if runs and runs[-1][0] == font:
                runs[-1] = (font, runs[-1][1] + char)
            else:
                runs.append((font, char))
        return runs


def wrap(text: str, face: _Face, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap (hard breaks inside over-long words), cut to `max_lines` with ``…``."""
    lines: list[str] = []
    space = face.char_width(" ")
    for paragraph in text.split("\n"):
        line, line_width = "", 0.0
        for word in paragraph.split(" "):
            word_width = face.width(word)
            if line and line_width + space + word_width <= width:
                line, line_width = f"{line} {word}", line_width + space + word_width
                continue
            if line:
                lines.append(line)
            while word_width > width and len(lines) <= max_lines:
                cut, used = _fit(word, face, width)
                lines.append(word[:cut])
                word, word_width = word[cut:], word_width - used
            line, line_width = word, word_width
            if len(lines) > max_lines:
                break
        lines.append(line)
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = ellipsize(lines[-1], face, width)
    return lines


def _fit(word: str, face: _Face, width: float) -> tuple[int, float]:
    used = 0.0
    for i, char in enumerate(word):
        char_width = face.char_width(char)
        if used + char_width > width:
            return max(i, 1), used if i else char_width
        used += char_width
    return len(word), used


def ellipsize(text: str, face: _Face, width: float) -> str:
    """`text` cut so that it and a trailing ``…`` fit `width`."""
    text = text.rstrip("…")
    limit = width - face.char_width("…")
    while text and face.width(text) > limit:
        text = text[: max(len(text) - max(1, len(text) // 8), 0)]
    return text + "…"


# --- cell text -----------------------------------------------------------------------------


def _is_number(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def display_text(array: pa.Array) -> list[str | None]:
    """A column as the strings a reader sees (nulls stay None)."""
    type_ = array.type
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        text = array.cast(pa.string())
        text = pc.replace_substring(text, "\r\n", "\n")
        text = pc.replace_substring_regex(text, r"[\x00-\x09\x0B-\x1F\x7F]", " ")
        long = pc.fill_null(pc.greater(pc.utf8_length(text), MAX_CELL_CHARS), False)
        if pc.any(long).as_py():
            cut = pc.binary_join_element_wise(
                pc.utf8_slice_codeunits(text, 0, MAX_CELL_CHARS - 1), "…", ""
            )
            text = pc.if_else(long, cut, text)
    elif pa.types.is_floating(type_):
        # Six decimals are plenty to read; tiny magnitudes keep their exact form.
        small = pc.and_(pc.less(pc.abs(array), 1e-3), pc.not_equal(array, 0))
        text = pc.if_else(pc.fill_null(small, False), array, pc.round(array, 6)).cast(pa.string())
    elif pa.types.is_timestamp(type_):
        naive = array.cast(pa.timestamp("us", tz=type_.tz)).cast(pa.timestamp("us"))
        text = pc.utf8_slice_codeunits(naive.cast(pa.string()), 0, 19)
    else:
        text = array.cast(pa.string())
    return text.to_pylist()


# --- table ---------------------------------------------------------------------------------


@dataclass
class _Column:
    name: str
    x: float
    width: float
    right: bool

    def __post_init__(self) -> None:
        self.inner = self.width - 2 * CELL_PAD
        self.left_text = f"{self.x + CELL_PAD:.2f}"


def column_layout(
    schema: pa.Schema, sample: pa.RecordBatch | None, face: _Face, bold: _Face
) -> list[_Column]:
    """Column positions: natural widths from the header and a sample, fitted to the page."""
    available = PAGE_WIDTH - 2 * MARGIN
    natural, minimum = [], []
    for i, field in enumerate(schema):
        words = field.name.split() or [""]
        header_min = max(bold.width(w) for w in words) + 2 * CELL_PAD
        width = bold.width(field.name) + 2 * CELL_PAD
        if sample is not None and sample.num_rows:
            values = [v for v in display_text(sample.column(i)) if v]
            if values:
                widths = sorted(face.width(v.split("\n")[0]) for v in values)
                width = max(width, widths[int(0.9 * (len(widths) - 1))] + 2 * CELL_PAD)
                if _is_number(field.type):
                    width = max(width, widths[-1] + 2 * CELL_PAD)
        natural.append(min(width, MAX_NATURAL_WIDTH))
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            minimum.append(min(max(MIN_COLUMN_WIDTH, min(header_min, 60.0)), natural[-1]))
        else:  # numbers and times are not worth wrapping or cutting: text gives way first
            minimum.append(natural[-1])
    widths = _fit_widths(natural, minimum, available)
    columns, x = [], MARGIN
    for field, width in zip(schema, widths):
        columns.append(_Column(field.name, x, width, _is_number(field.type)))
        x += width
    return columns


def _fit_widths(natural: list[float], minimum: list[float], available: float) -> list[float]:
    total = sum(natural)
    if not natural:
        return []
    if total <= available:  # spread the spare room over the columns, wider ones get more
        return [w + (available - total) * w / total for w in natural]
    floor = sum(minimum)
    if floor >= available:
        return [available / len(natural)] * len(natural)
    scale = (available - floor) / (total - floor)
    return [m + (n - m) * scale for n, m in zip(natural, minimum)]


class _Pages:
    """The canvas, its page furniture and a vertical cursor."""

    def __init__(self, canvas: Canvas, context: ReportContext, font_set: _FontSet):
        self.canvas = canvas
        self.context = context
        self.number = 0
        self.top = PAGE_HEIGHT - MARGIN
        self.bottom = MARGIN + FOOTER_SPACE
        self.y = self.top
        self.small = _Face(_DEJAVU["body"], 7.5, font_set)

    def new_page(self) -> None:
        if self.number:
            self.canvas.showPage()
        self.number += 1
        self.y = self.top
        self._footer()

    def _footer(self) -> None:
        c, ctx = self.canvas, self.context
        parts = [p for p in (ctx.title, ctx.organization_id, ctx.period) if p]
        draw_text(c, self.small, MARGIN, MARGIN, " · ".join(parts), GREY_TEXT)
        label = f"Page {self.number:,} of "
        width = self.small.width(label) + self.small.width("0000000")
        x = PAGE_WIDTH - MARGIN - width
        draw_text(c, self.small, x, MARGIN, label, GREY_TEXT)
        place_form(c, "pages", x + self.small.width(label), MARGIN)


def draw_text(canvas: Canvas, face: _Face, x: float, y: float, text: str, color=TEXT_COLOR) -> None:
    """One line of text at baseline (x, y), switching to fallback fonts where needed."""
    t = canvas.beginText(x, y)
    t.setFillColor(color)
    for font, run in face.runs(text):
        t.setFont(font, face.size)
        t.textOut(run)
    canvas.drawText(t)


def place_form(canvas: Canvas, name: str, x: float, y: float) -> None:
    canvas.saveState()
    canvas.translate(x, y)
    canvas.doForm(name)
    canvas.restoreState()


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


class _Table:
    """Draws rows page by page; the header row is repeated at the top of every page.

    Cells are emitted as raw PDF operators (one text block and one fill block per page,
    added with `Canvas.addLiteral`): reportlab's TextObject costs ~10 µs per call, which
    at ~12 cells per row was most of the time for 100,000 rows.
    """

    def __init__(self, pages: _Pages, schema: pa.Schema, font_set: _FontSet):
        self.pages = pages
        self.schema = schema
        size = 7.0 if len(schema) <= 16 else 6.0
        self.face = _Face(_DEJAVU["cell"], size, font_set)
        self.bold = _Face(_DEJAVU["cell-bold"], size, font_set)
        self.leading = size * 1.22
        self.columns: list[_Column] | None = None
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
        self.columns = column_layout(self.schema, sample, self.face, self.bold)
        self.header = [wrap(c.name, self.bold, c.inner, MAX_HEADER_LINES) for c in self.columns]
        lines = max((len(h) for h in self.header), default=1)
        self.header_height = lines * self.leading + 2 * CELL_PAD
        # No usual glyph is wider than these: below len * max_advance a cell surely fits.
        self.max_advance = max(self.face.char_width(ch) for ch in "WMmw@%—")

    def add(self, batch: pa.RecordBatch) -> None:
        if not self.schema:  # nothing to tabulate; the cover still reports the row count
            return
        if self.columns is None:
            self._setup(batch.slice(0, SAMPLE_ROWS))
            self._start_table()
        texts = [display_text(column) for column in batch.columns]
        face, columns, leading = self.face, self.columns, self.leading
        max_advance = self.max_advance
        assert columns is not None
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

    def _lines(self, column: _Column, lines: list[str], top: float, face: _Face) -> None:
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

    def finish(self, closing: str) -> None:
        """End the table (header only when there were no rows) and add the closing line."""
        if self.columns is None and self.schema:
            self._setup(None)
            self._start_table()
        self._end_page()
        face = _Face(_DEJAVU["body"], 8.5, fonts())
        lines = wrap(closing, face, PAGE_WIDTH - 2 * MARGIN, 3)
        if self.pages.y - 6 - len(lines) * 11 < self.pages.bottom:
            self.pages.new_page()
        y = self.pages.y - 6 - face.ascent
        for line in lines:
            draw_text(self.pages.canvas, face, MARGIN, y, line, GREY_TEXT)
            y -= 11
        self.pages.y = y


# --- chart ---------------------------------------------------------------------------------


class ChartData:
    """Aggregates (label, value) from the stream into a bounded number of points."""

    def __init__(self, schema: pa.Schema, spec: tuple[str, str, str]):
        self.label, self.value, self.kind = spec
        names = schema.names
        self.problem: str | None = None
        self.bucket = 0.0  # x-bucket width once there are too many distinct x values
        self.sums: dict[object, float] = {}
        self.counts: dict[object, int] = {}
        self.other = 0.0
        if self.label not in names:
            self.problem = f"chart label column {self.label!r} is not in the data"
        label_type = schema.field(self.label).type if not self.problem else pa.string()
        self.counting = self.value not in names or not _is_number(schema.field(self.value).type)
        self.time_axis = pa.types.is_timestamp(label_type) or pa.types.is_date(label_type)
        self.numeric_x = self.kind == "line" and (self.time_axis or _is_number(label_type))
        # A series over time shows the mean per point (a score, a balance); a distribution
        # over categories shows the total per category.
        self.averaging = self.numeric_x and not self.counting

    def add(self, batch: pa.RecordBatch) -> None:
        if self.problem or batch.num_rows == 0:
            return
        keys = batch.column(self.label)
        if self.counting:
            values = pa.array([1.0] * batch.num_rows)
        else:
            values = batch.column(self.value).cast(pa.float64())
        keep = (
            pc.and_(pc.is_valid(keys), pc.is_finite(values))
            if not self.counting
            else pc.is_valid(keys)
        )
        keep = pc.fill_null(keep, False)
        keys, values = pc.filter(keys, keep), pc.filter(values, keep)
        if self.numeric_x:
            keys = self._x(keys)
        elif not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
            keys = keys.cast(pa.string())
        grouped = (
            pa.table({"k": keys, "v": values})
            .group_by("k")
            .aggregate([("v", "sum"), ("v", "count")])
        )
        sums, counts = self.sums, self.counts
        for key, total, count in zip(
            grouped["k"].to_pylist(), grouped["v_sum"].to_pylist(), grouped["v_count"].to_pylist()
        ):
            if key in sums:
                sums[key] += total
                counts[key] += count
            elif self.numeric_x or len(sums) < MAX_CHART_KEYS:
                sums[key] = total
                counts[key] = count
            else:
                self.other += total
        if self.numeric_x and len(sums) > MAX_CHART_KEYS:
            self._coarsen()

    def _x(self, keys: pa.Array) -> pa.Array:
        """Numeric x (days for dates and times), floored to the current bucket width."""
        if pa.types.is_timestamp(keys.type):
            x = pc.divide(
                keys.cast(pa.timestamp("us", tz=keys.type.tz)).cast(pa.int64()).cast(pa.float64()),
                86_400e6,
            )
        elif pa.types.is_date(keys.type):
            x = keys.cast(pa.date32()).cast(pa.int32()).cast(pa.float64())
        else:
            x = keys.cast(pa.float64())
        if self.bucket:
            x = pc.multiply(pc.floor(pc.divide(x, self.bucket)), self.bucket)
        return x

    def _coarsen(self) -> None:
        low, high = min(self.sums), max(self.sums)
        self.bucket = (
            self.bucket * 2 if self.bucket else max((high - low) / (MAX_CHART_KEYS / 2), 1e-9)
        )
        merged: dict[object, float] = {}
        merged_counts: dict[object, int] = {}
        for key, total in self.sums.items():
            bucket = math.floor(key / self.bucket) * self.bucket  # type: ignore[operator]
            merged[bucket] = merged.get(bucket, 0.0) + total
            merged_counts[bucket] = merged_counts.get(bucket, 0) + self.counts[key]
        self.sums, self.counts = merged, merged_counts
        if len(self.sums) > MAX_CHART_KEYS:
            self._coarsen()

    def title(self) -> str:
        what = (
            "Rows"
            if self.counting
            else f"Mean of {self.value}"
            if self.averaging
            else f"Sum of {self.value}"
        )
        per = f" per {self._bucket_label()}" if self.bucket else ""
        return f"{what} by {self.label}{per}"

    def _bucket_label(self) -> str:
        if not self.time_axis:
            return f"bucket of {self.bucket:g}"
        hours = self.bucket * 24
        return f"{hours:.3g} h bucket" if hours < 48 else f"{self.bucket:.3g} day bucket"

    def drawing(self, width: float, height: float, font_set: _FontSet) -> Drawing:
        drawing = Drawing(width, height)
        title = self.title()
        font = font_set.covering(title, _DEJAVU["body"])
        drawing.add(String(0, height - 11, title, fontName=font, fontSize=9.5))
        if self.problem or not self.sums:
            message = self.problem or "No data to chart."
            drawing.add(String(0, height - 30, message, fontName=font, fontSize=8))
            return drawing
        if self.numeric_x:
            chart = self._line(_DEJAVU["body"])
        else:
            chart = self._bars(font_set)
        chart.x, chart.y = 50, 30
        chart.width, chart.height = width - 70, height - 55
        drawing.add(chart)
        return drawing

    def _line(self, font: str) -> LinePlot:
        if self.averaging:
            points = sorted((k, v / self.counts[k]) for k, v in self.sums.items() if self.counts[k])
        else:
            points = sorted(self.sums.items())
        chart = LinePlot()
        chart.data = [points]
        chart.lines[0].strokeColor = colors.Color(0.16, 0.38, 0.65)
        chart.lines[0].strokeWidth = 1.2
        for axis in (chart.xValueAxis, chart.yValueAxis):
            axis.labels.fontName = font
            axis.labels.fontSize = 7
        chart.yValueAxis.labelTextFormat = _short_number
        if self.time_axis:
            span = points[-1][0] - points[0][0]
            pattern = "%Y-%m-%d" if span >= 3 else "%m-%d %H:%M"
            chart.xValueAxis.labelTextFormat = functools.partial(_day_label, pattern=pattern)
        return chart

    def _bars(self, font_set: _FontSet) -> VerticalBarChart:
        ranked = sorted(self.sums.items(), key=lambda kv: (-kv[1], str(kv[0])))
        shown, rest = ranked[:BAR_COUNT], ranked[BAR_COUNT:]
        other = self.other + sum(v for _, v in rest)
        labels = [_short_label(str(k)) for k, _ in shown]
        values = [v for _, v in shown]
        if other:
            labels.append("Other")
            values.append(other)
        chart = VerticalBarChart()
        chart.data = [values]
        chart.bars[0].fillColor = colors.Color(0.16, 0.38, 0.65)
        chart.categoryAxis.categoryNames = labels
        chart.categoryAxis.labels.fontName = _DEJAVU["body"]
        for i, label in enumerate(labels):  # per label: CJK may need the fallback font
            chart.categoryAxis.labels[i].fontName = font_set.covering(label, _DEJAVU["body"])
        chart.categoryAxis.labels.fontSize = 7
        chart.categoryAxis.labels.angle = 20
        chart.categoryAxis.labels.boxAnchor = "ne"
        chart.valueAxis.labels.fontName = _DEJAVU["body"]
        chart.valueAxis.labels.fontSize = 7
        chart.valueAxis.labelTextFormat = _short_number
        chart.valueAxis.valueMin = min(0.0, min(values))
        return chart


def _short_label(text: str) -> str:
    return text if len(text) <= 18 else text[:17] + "…"


def _short_number(value: float) -> str:
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _day_label(days: float, pattern: str) -> str:
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(days=days)
    return moment.strftime(pattern)


# --- report --------------------------------------------------------------------------------


def row_note(shown: int, total: int, limit: int, full_file_name: str | None) -> str:
    """What page 1 and the end of the table say about how many rows the PDF holds."""
    if total <= shown:
        return f"All {total:,} rows are shown."
    where = full_file_name or "the machine-readable export of this report"
    return f"This PDF shows the first {shown:,} of {total:,} rows; the complete data is in {where}."


def _cover(pages: _Pages, context: ReportContext, chart: ChartData | None, fs: _FontSet) -> None:
    """Title block, summary, the row note's place and the chart's place on page 1."""
    c = pages.canvas
    width = PAGE_WIDTH - 2 * MARGIN
    title = _Face(_DEJAVU["body-bold"], 18, fs)
    body = _Face(_DEJAVU["body"], 9, fs)
    label = _Face(_DEJAVU["body-bold"], 9, fs)
    y = pages.top - title.ascent
    for line in wrap(context.title or "Export", title, width, 2):
        draw_text(c, title, MARGIN, y, line)
        y -= 22
    identity = [
        ("Export", context.export_type),
        ("Organization", context.organization_id),
        ("Period", context.period),
        ("Data as of", context.as_of),
    ]
    line = "   ".join(f"{k}: {v}" for k, v in identity if v) + "   (times in UTC)"
    for text in wrap(line, body, width, 3):
        draw_text(c, body, MARGIN, y, text, GREY_TEXT)
        y -= 12
    y -= 6
    c.setStrokeColor(RULE)
    c.setLineWidth(0.6)
    c.line(MARGIN, y + 8, PAGE_WIDTH - MARGIN, y + 8)
    y -= 6
    key_width = 150.0
    draw_text(c, label, MARGIN, y, "Rows")
    place_form(c, "row_count", MARGIN + key_width, y)
    y -= 12
    for key, value in context.summary:
        key_lines = wrap(str(key), label, key_width - 8, 2)
        value_lines = wrap(str(value), body, width - key_width, 3)
        for i in range(max(len(key_lines), len(value_lines))):
            if i < len(key_lines):
                draw_text(c, label, MARGIN, y, key_lines[i])
            if i < len(value_lines):
                draw_text(c, body, MARGIN + key_width, y, value_lines[i])
            y -= 12
    y -= 4
    place_form(c, "row_note", MARGIN, y - NOTE_HEIGHT + 12)
    y -= NOTE_HEIGHT
    if chart is not None:
        place_form(c, "chart", MARGIN, y - CHART_HEIGHT + 8)
        y -= CHART_HEIGHT + 4
    pages.y = y


def _define_forms(
    pages: _Pages, note: str, total: int, chart: ChartData | None, fs: _FontSet
) -> None:
    c = pages.canvas
    body = _Face(_DEJAVU["body"], 9, fs)
    c.beginForm("row_count")
    draw_text(c, body, 0, 0, f"{total:,}")
    c.endForm()
    c.beginForm("row_note")
    note_face = _Face(_DEJAVU["body-bold"] if "first" in note else _DEJAVU["body"], 9.5, fs)
    y = 0.0
    for line in wrap(note, note_face, PAGE_WIDTH - 2 * MARGIN, 2):
        draw_text(c, note_face, 0, y, line, NOTE_COLOR if "first" in note else TEXT_COLOR)
        y -= 12
    c.endForm()
    c.beginForm("pages")
    draw_text(c, pages.small, 0, 0, f"{pages.number:,}", GREY_TEXT)
    c.endForm()
    if chart is not None:
        c.beginForm("chart")
        drawing = chart.drawing(PAGE_WIDTH - 2 * MARGIN, CHART_HEIGHT, fs)
        renderPDF.draw(drawing, c, 0, 0)
        c.endForm()


def write_pdf(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write a report of `reader` to `path`; return the number of rows shown in it."""
    font_set = fonts()
    canvas = Canvas(str(path), pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1, pageCompression=1)
    canvas.setTitle(context.title)
    canvas.setSubject(f"{context.export_type} {context.organization_id} {context.period}".strip())
    canvas.setAuthor("export_pipelines")
    canvas.setCreator("export_pipelines")
    chart = ChartData(reader.schema, context.chart) if context.chart else None
    pages = _Pages(canvas, context, font_set)
    pages.new_page()
    _cover(pages, context, chart, font_set)
    table = _Table(pages, reader.schema, font_set)
    limit = max(options.pdf_row_limit, 0)
    shown = total = 0
    for batch in small_batches(reader):
        if chart is not None:
            chart.add(batch)
        total += batch.num_rows
        if shown < limit:
            part = batch.slice(0, limit - shown)
            table.add(part)
            shown += part.num_rows
    note = row_note(shown, total, limit, context.full_file_name)
    table.finish(note if total > shown else f"End of table: {note}")
    _define_forms(pages, note, total, chart, font_set)
    canvas.showPage()
    # Plain deflate streams: ASCII85 on top adds 25% to the file and, without the
    # rl_accel C extension, seconds of pure-Python encoding. Read only during save().
    a85, rl_config.useA85 = rl_config.useA85, 0
    try:
        canvas.save()
    finally:
        rl_config.useA85 = a85
    return shown
