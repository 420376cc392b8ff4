"""Page 1's head: the title block, the summary, the note on the row limit and the charts.

The title block says what the report is and for whom: the type's title, the
organization's name, the period, "data as of" and the time zone. The summary shows the
row count and the type's totals (`ReportContext.summary`) as tiles — a small label over a
large number — and totals too long for a tile (breakdowns) as lines below. The row count,
the row note and the charts are forms (see `page`), filled in once the stream has ended.
"""

from __future__ import annotations

from collections.abc import Sequence

from reportlab.graphics import renderPDF
from reportlab.lib import colors

from export_pipelines.render import ReportContext
from export_pipelines.render.pdf.charts import Series, drawing
from export_pipelines.render.pdf.page import CONTENT_WIDTH, MARGIN, Pages, organization, place_form
from export_pipelines.render.pdf.text import DEJAVU, GREY_TEXT, TEXT_COLOR, Face, draw_text, wrap

CHART_HEIGHT = 185.0
CHART_GAP = 28.0
NOTE_HEIGHT = 26.0
TILE_GAP = 26.0
MAX_TILE_WIDTH = 200.0
ROW_COUNT_ROOM = "000,000,000"

RULE = colors.Color(0.75, 0.78, 0.82)
NOTE_COLOR = colors.Color(0.6, 0.1, 0.05)


def row_note(shown: int, total: int, full_file_name: str | None) -> str:
    """What page 1 and the end of the table say about how many rows the PDF holds."""
    if total <= shown:
        return f"All {total:,} rows are shown."
    where = full_file_name or "the machine-readable export of this report"
    return f"This PDF shows the first {shown:,} of {total:,} rows; the complete data is in {where}."


class Cover:
    """Draws page 1's head, then fills its late parts in once the rows are counted."""

    def __init__(self, pages: Pages, context: ReportContext, charts: Sequence[Series]):
        self.pages, self.context, self.charts = pages, context, list(charts)
        self.title = Face(DEJAVU["body-bold"], 18)
        self.heading = Face(DEJAVU["body"], 11)
        self.heading_bold = Face(DEJAVU["body-bold"], 11)
        self.body = Face(DEJAVU["body"], 9)
        self.label = Face(DEJAVU["body"], 8)
        self.figure = Face(DEJAVU["body-bold"], 14)

    def draw(self) -> None:
        pages = self.pages
        y = self._title_block(pages.top)
        y = self._summary(y)
        place_form(pages.canvas, "row_note", MARGIN, y - self.body.ascent)
        y -= NOTE_HEIGHT
        if self.charts:
            width = (CONTENT_WIDTH - CHART_GAP * (len(self.charts) - 1)) / len(self.charts)
            for i in range(len(self.charts)):
                place_form(
                    pages.canvas, f"chart-{i}", MARGIN + i * (width + CHART_GAP), y - CHART_HEIGHT
                )
            y -= CHART_HEIGHT + 14
        pages.y = y

    def _title_block(self, top: float) -> float:
        c, ctx = self.pages.canvas, self.context
        y = top - self.title.ascent
        for line in wrap(ctx.title or "Export", self.title, CONTENT_WIDTH, 2):
            draw_text(c, self.title, MARGIN, y, line)
            y -= 22
        y -= 2
        label = "Organization: "
        draw_text(c, self.heading, MARGIN, y, label, GREY_TEXT)
        name = wrap(organization(ctx), self.heading_bold, CONTENT_WIDTH - 90, 1)[0]
        draw_text(c, self.heading_bold, MARGIN + self.heading.width(label), y, name)
        y -= 15
        identity = [
            ("Period", ctx.period),
            ("Data as of", ctx.as_of),
            ("Export", ctx.export_type),
        ]
        line = "     ".join(f"{k}: {v}" for k, v in identity if v) + "     Times in UTC"
        for text in wrap(line, self.body, CONTENT_WIDTH, 2):
            draw_text(c, self.body, MARGIN, y, text, GREY_TEXT)
            y -= 12
        c.setStrokeColor(RULE)
        c.setLineWidth(0.6)
        c.line(MARGIN, y + 4, MARGIN + CONTENT_WIDTH, y + 4)
        return y - 8

    def _summary(self, top: float) -> float:
        """Tiles left to right (wrapping), then the totals too long to be a tile."""
        c = self.pages.canvas
        tiles: list[tuple[str, str | None]] = [("Rows", None)]
        lines: list[tuple[str, str]] = []
        for key, value in self.context.summary:
            key, value = str(key), str(value)
            fits = (
                self.figure.width(value) <= MAX_TILE_WIDTH
                and self.label.width(key) <= MAX_TILE_WIDTH
            )
            (tiles if fits else lines).append((key, value))
        x, y = MARGIN, top - self.label.ascent
        for key, value in tiles:
            room = self.figure.width(value if value is not None else ROW_COUNT_ROOM)
            width = max(self.label.width(key), room)
            if x > MARGIN and x + width > MARGIN + CONTENT_WIDTH:
                x, y = MARGIN, y - 34
            draw_text(c, self.label, x, y, key, GREY_TEXT)
            if value is None:
                place_form(c, "row_count", x, y - 17)
            else:
                draw_text(c, self.figure, x, y - 17, value)
            x += width + TILE_GAP
        y -= 36
        key_width = 150.0
        for key, value in lines:
            key_lines = wrap(key, self.label, key_width - 8, 2)
            value_lines = wrap(value, self.body, CONTENT_WIDTH - key_width, 3)
            for i in range(max(len(key_lines), len(value_lines))):
                if i < len(key_lines):
                    draw_text(c, self.label, MARGIN, y, key_lines[i], GREY_TEXT)
                if i < len(value_lines):
                    draw_text(c, self.body, MARGIN + key_width, y, value_lines[i])
                y -= 12
        return y - 2

    def finish(self, shown: int, total: int) -> None:
        """Define the forms page 1 placed: the row count, the row note, the charts."""
        c = self.pages.canvas
        c.beginForm("row_count")
        draw_text(c, self.figure, 0, 0, f"{total:,}")
        c.endForm()
        note = row_note(shown, total, self.context.full_file_name)
        cut = total > shown
        face = Face(DEJAVU["body-bold"] if cut else DEJAVU["body"], 9.5)
        c.beginForm("row_note")
        y = 0.0
        for line in wrap(note, face, CONTENT_WIDTH, 2):
            draw_text(c, face, 0, y, line, NOTE_COLOR if cut else TEXT_COLOR)
            y -= 12
        c.endForm()
        if self.charts:
            width = (CONTENT_WIDTH - CHART_GAP * (len(self.charts) - 1)) / len(self.charts)
            for i, series in enumerate(self.charts):
                c.beginForm(f"chart-{i}")
                renderPDF.draw(drawing(series, width, CHART_HEIGHT), c, 0, 0)
                c.endForm()
