"""PDF renderer: a report a person is glad to receive, streamed in one pass.

Landscape A4. Page 1 opens with the title block (the type's title, the organization's
name, the period, "data as of"), the summary (row count and the type's totals), a line
saying how many rows the PDF shows, and the spec's charts (`ReportContext.charts`,
aggregated per time bucket or per category); the table follows, with its header on every
page, the columns a reader needs under their labels, numbers right-aligned per unit,
text wrapped at word boundaries, times as ``2026-11-03 14:05 UTC``, and a footer "Page N
of M".

One pass: the renderer gets a single `RecordBatchReader`. Each batch feeds the charts'
bounded aggregates and, up to `options.pdf_row_limit` rows, the table; after the limit it
keeps reading only to count and aggregate. What page 1 says about the whole stream — the
row count, the note ("This PDF shows the first N of M rows; the complete data is in
<full_file_name>") and the charts — is drawn into PDF forms placed on page 1 and defined
at the end (see `page`), as is "of M" in the footers; so page 1 comes first without a
second pass, a reordering or a temporary file.

Modules: `text` (fonts, measuring, wrapping), `cells` (columns and cell text for readers),
`table`, `charts`, `cover`, `page`. `invariant=1` keeps dates and ids out of the file, so
the same input gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from reportlab import rl_config
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import small_batches
from export_pipelines.render.pdf.cells import reader_columns
from export_pipelines.render.pdf.charts import Series
from export_pipelines.render.pdf.cover import Cover, row_note
from export_pipelines.render.pdf.page import (
    CONTENT_WIDTH,
    MARGIN,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    Pages,
    organization,
)
from export_pipelines.render.pdf.table import Table
from export_pipelines.render.pdf.text import DEJAVU, GREY_TEXT, Face, draw_text, fonts, wrap

__all__ = ["write_pdf", "row_note", "pdfmetrics"]


def write_pdf(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write a report of `reader` to `path`; return the number of rows shown in it."""
    fonts()
    canvas = Canvas(str(path), pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1, pageCompression=1)
    canvas.setTitle(context.title)
    canvas.setSubject(f"{context.title} · {organization(context)} · {context.period}")
    canvas.setAuthor("export_pipelines")
    canvas.setCreator("export_pipelines")
    charts = [Series(chart, reader.schema, context) for chart in context.charts]
    pages = Pages(canvas, context)
    pages.new_page()
    cover = Cover(pages, context, charts)
    cover.draw()
    table = Table(pages, reader_columns(reader.schema, context))
    limit = max(options.pdf_row_limit, 0)
    shown = total = 0
    for batch in small_batches(reader):
        for series in charts:
            series.add(batch)
        total += batch.num_rows
        if shown < limit:
            part = batch.slice(0, limit - shown)
            table.add(part)
            shown += part.num_rows
    table.finish()
    note = row_note(shown, total, context.full_file_name)
    _closing(pages, note if total > shown else f"End of table: {note}")
    cover.finish(shown, total)
    pages.define_page_count()
    canvas.showPage()
    # Plain deflate streams: ASCII85 on top adds 25% to the file and, without the
    # rl_accel C extension, seconds of pure-Python encoding. Read only during save().
    a85, rl_config.useA85 = rl_config.useA85, 0
    try:
        canvas.save()
    finally:
        rl_config.useA85 = a85
    return shown


def _closing(pages: Pages, text: str) -> None:
    """The line under the table: how many rows it held and where the rest is."""
    face = Face(DEJAVU["body"], 8.5)
    lines = wrap(text, face, CONTENT_WIDTH, 3)
    if pages.y - 6 - len(lines) * 11 < pages.bottom:
        pages.new_page()
    y = pages.y - 6 - face.ascent
    for line in lines:
        draw_text(pages.canvas, face, MARGIN, y, line, GREY_TEXT)
        y -= 11
    pages.y = y
