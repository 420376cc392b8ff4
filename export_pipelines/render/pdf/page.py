"""Page geometry, the footer on every page, and late-filled forms.

Some text is known only once the single-pass stream has ended — the row count, the note
on the row limit, "of M" pages, the charts — yet a reader expects it on page 1. Such text
is a PDF form XObject: placed (by name) where it belongs while the pages are written,
and defined once at the end (`Canvas.beginForm`), which costs nothing and keeps the
stream single-pass.
"""

from __future__ import annotations

from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfgen.canvas import Canvas

from export_pipelines.render import ReportContext
from export_pipelines.render.pdf.text import DEJAVU, GREY_TEXT, Face, draw_text

PAGE_WIDTH, PAGE_HEIGHT = landscape(A4)
MARGIN = 28.0
FOOTER_SPACE = 18.0
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN


def organization(context: ReportContext) -> str:
    """How a reader knows the organization: its name, its id only when no name is known."""
    return context.organization_name or context.organization_id


def place_form(canvas: Canvas, name: str, x: float, y: float) -> None:
    canvas.saveState()
    canvas.translate(x, y)
    canvas.doForm(name)
    canvas.restoreState()


class Pages:
    """The canvas, its page furniture and a vertical cursor."""

    def __init__(self, canvas: Canvas, context: ReportContext):
        self.canvas = canvas
        self.context = context
        self.number = 0
        self.top = PAGE_HEIGHT - MARGIN
        self.bottom = MARGIN + FOOTER_SPACE
        self.y = self.top
        self.small = Face(DEJAVU["body"], 7.5)

    def new_page(self) -> None:
        if self.number:
            self.canvas.showPage()
        self.number += 1
        self.y = self.top
        self._footer()

    def _footer(self) -> None:
        c, ctx = self.canvas, self.context
        parts = [p for p in (ctx.title, organization(ctx), ctx.period) if p]
        draw_text(c, self.small, MARGIN, MARGIN, " · ".join(parts), GREY_TEXT)
        label = f"Page {self.number:,} of "
        width = self.small.width(label) + self.small.width("0000000")
        x = PAGE_WIDTH - MARGIN - width
        draw_text(c, self.small, x, MARGIN, label, GREY_TEXT)
        place_form(c, "pages", x + self.small.width(label), MARGIN)

    def define_page_count(self) -> None:
        self.canvas.beginForm("pages")
        draw_text(self.canvas, self.small, 0, 0, f"{self.number:,}", GREY_TEXT)
        self.canvas.endForm()
