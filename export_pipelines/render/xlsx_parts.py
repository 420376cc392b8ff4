"""The package parts of the .xlsx around the streamed cells: sheet frames with their print
setup, the Summary sheet, the workbook, relationships, content types and properties.

Every sheet prints the way a reader expects a report to: landscape, all columns scaled to
the page width (pages run down, never across), the header row repeated on every page, and
a header and footer naming the report, the sheet and "Page n of m". The Summary sheet comes
first: the title block (title, organization by name, period, data as of), the row count
and the type's totals. Document properties and zip dates come from the data's as-of, never
from the clock, so the same data gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from xml.sax.saxutils import escape as xml_escape

from export_pipelines.render import ReportContext
from export_pipelines.render.xlsx_cells import column_letter, number_cell, one_text, text_cell
from export_pipelines.render.xlsx_layout import (
    STYLE_LABEL,
    STYLE_SUMMARY_COUNT,
    STYLE_TITLE,
    STYLE_WRAPPED,
    stylesheet,
)

SUMMARY_SHEET = "Summary"
NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
# Excel refuses a header or footer longer than 255 characters; each part gets a share.
_HEADER_PART_CHARS = 80
_SUMMARY_WIDTHS = (24.0, 80.0)
# A signed number in a total ("-1,250") is no formula; other text is guarded like cells.
_NUMBER_TEXT = re.compile(r"[-+]?[\d,]+(\.\d+)?")


def data_sheet_name(number: int) -> str:
    return "Data" if number == 1 else f"Data ({number})"


def sheet_path(position: int) -> str:
    """The part of the sheet at this tab position (0 = Summary, then the data sheets)."""
    return f"xl/worksheets/sheet{position + 1}.xml"


# --- sheet frames ------------------------------------------------------------------------


def sheet_head(widths: Sequence[float], *, frozen_header: bool, selected: bool) -> str:
    """Everything of a worksheet before its rows."""
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{w:.2f}" customWidth="1"/>'
        for i, w in enumerate(widths, start=1)
    )
    pane = (
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
        if frozen_header
        else ""
    )
    tab = ' tabSelected="1"' if selected else ""
    return (
        f'{XML_DECL}<worksheet xmlns="{NS_MAIN}" xmlns:r="{NS_REL}">'
        '<sheetPr><pageSetUpPr fitToPage="1"/></sheetPr>'
        f'<sheetViews><sheetView{tab} workbookViewId="0">{pane}</sheetView></sheetViews>'
        '<sheetFormatPr defaultRowHeight="15"/>'
        + (f"<cols>{cols}</cols>" if cols else "")
        + "<sheetData>"
    )


def sheet_tail(context: ReportContext, autofilter: str | None) -> str:
    """Everything after the rows: the autofilter and the print setup."""
    return (
        "</sheetData>"
        + (f'<autoFilter ref="{autofilter}"/>' if autofilter else "")
        + '<pageMargins left="0.5" right="0.5" top="0.75" bottom="0.75" header="0.3" '
        'footer="0.3"/>'
        '<pageSetup orientation="landscape" fitToWidth="1" fitToHeight="0"/>'
        f"<headerFooter>{_header_footer(context)}</headerFooter>"
        "</worksheet>"
    )


def _header_footer(context: ReportContext) -> str:
    title = _header_text(context.title or "Export")
    organization = _header_text(context.organization_name or context.organization_id)
    period = _header_text(context.period)
    # Codes (XML-escaped): &L, &R left and right; &A the sheet's name; &P page, &N pages.
    header = f"&amp;L{title}&amp;R{organization}" + (f" · {period}" if period else "")
    footer = "&amp;L&amp;A&amp;RPage &amp;P of &amp;N"
    return f"<oddHeader>{header}</oddHeader><oddFooter>{footer}</oddFooter>"


def _header_text(text: str) -> str:
    """Text inside a header or footer: `&` doubled (it starts a code), cut, XML-escaped."""
    cut = text if len(text) <= _HEADER_PART_CHARS else text[: _HEADER_PART_CHARS - 1] + "…"
    return one_text(cut).replace("&amp;", "&amp;&amp;")


def filter_ref(columns: int, last_row: int) -> str:
    return f"A1:{column_letter(columns - 1)}{last_row}"


def header_row(headings: Sequence[str], style: int) -> str:
    cells = "".join(
        text_cell(f"{column_letter(i)}1", heading, style) for i, heading in enumerate(headings)
    )
    return f'<row r="1">{cells}</row>'


# --- the Summary sheet -------------------------------------------------------------------


def summary_sheet(context: ReportContext, rows: int, data_sheets: int) -> str:
    """The first sheet: what the file is, whose, for when, how many rows, and the totals."""
    lines = [
        ("Organization", context.organization_name or context.organization_id),
        ("Period", context.period),
        ("Data as of", context.as_of),
    ]
    body = [f'<row r="1">{text_cell("A1", context.title or "Export", STYLE_TITLE)}</row>']
    number = 3
    for label, value in lines:
        if value:
            body.append(_summary_row(number, label, text_cell(f"B{number}", value, STYLE_WRAPPED)))
            number += 1
    body.append(_summary_row(number, "Rows", number_cell(f"B{number}", rows, STYLE_SUMMARY_COUNT)))
    number += 1
    for label, value in context.summary:
        guard = not _NUMBER_TEXT.fullmatch(value)
        body.append(
            _summary_row(number, label, text_cell(f"B{number}", value, STYLE_WRAPPED, guard))
        )
        number += 1
    names = ", ".join(data_sheet_name(i) for i in range(1, data_sheets + 1))
    note = f"The rows are on the sheet{'s' if data_sheets > 1 else ''} {names}; times are UTC."
    body.append(f'<row r="{number + 1}">{text_cell(f"A{number + 1}", note)}</row>')
    return (
        sheet_head(_SUMMARY_WIDTHS, frozen_header=False, selected=True)
        + "".join(body)
        + sheet_tail(context, autofilter=None)
    )


def _summary_row(number: int, label: str, value_cell: str) -> str:
    return (
        f'<row r="{number}">{text_cell(f"A{number}", label, STYLE_LABEL, True)}{value_cell}</row>'
    )


# --- workbook and package ----------------------------------------------------------------


def workbook(data_sheet_rows: Sequence[int], columns: int) -> str:
    """The sheet list (Summary first) with each data sheet's filter range and print titles.

    `data_sheet_rows` holds the last row number of each data sheet.
    """
    names = [SUMMARY_SHEET] + [data_sheet_name(i) for i in range(1, len(data_sheet_rows) + 1)]
    entries = "".join(
        f'<sheet name="{name}" sheetId="{i}" r:id="rId{i}"/>' for i, name in enumerate(names, 1)
    )
    defined = []
    for position, last_row in enumerate(data_sheet_rows, start=1):
        sheet = f"'{names[position]}'"
        if columns:
            defined.append(
                f'<definedName name="_xlnm._FilterDatabase" localSheetId="{position}" '
                f'hidden="1">{sheet}!$A$1:${column_letter(columns - 1)}${last_row}</definedName>'
            )
        defined.append(
            f'<definedName name="_xlnm.Print_Titles" localSheetId="{position}">'
            f"{sheet}!$1:$1</definedName>"
        )
    return (
        f'{XML_DECL}<workbook xmlns="{NS_MAIN}" xmlns:r="{NS_REL}">'
        '<bookViews><workbookView activeTab="0"/></bookViews>'
        f"<sheets>{entries}</sheets><definedNames>{''.join(defined)}</definedNames></workbook>"
    )


def workbook_rels(sheet_count: int) -> str:
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{NS_REL}/worksheet" '
        f'Target="{sheet_path(i - 1).removeprefix("xl/")}"/>'
        for i in range(1, sheet_count + 1)
    )
    styles = f'<Relationship Id="rId{sheet_count + 1}" Type="{NS_REL}/styles" Target="styles.xml"/>'
    return f'{XML_DECL}<Relationships xmlns="{_NS_PKG_REL}">{rels}{styles}</Relationships>'


def content_types(sheet_count: int) -> str:
    sheet_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
    sheets = "".join(
        f'<Override PartName="/{sheet_path(i)}" ContentType="{sheet_type}"/>'
        for i in range(sheet_count)
    )
    return (
        f'{XML_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
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


ROOT_RELS = (
    f'{XML_DECL}<Relationships xmlns="{_NS_PKG_REL}">'
    f'<Relationship Id="rId1" Type="{NS_REL}/officeDocument" Target="xl/workbook.xml"/>'
    '<Relationship Id="rId2" '
    'Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" '
    'Target="docProps/core.xml"/>'
    f'<Relationship Id="rId3" Type="{NS_REL}/extended-properties" Target="docProps/app.xml"/>'
    "</Relationships>"
)

STYLES = stylesheet(NS_MAIN, XML_DECL)

APP = (
    f"{XML_DECL}<Properties "
    'xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
    "<Application>export_pipelines</Application></Properties>"
)


def as_of_moment(context: ReportContext) -> dt.datetime | None:
    """The moment the data describes, naive UTC: the window's end, else `as_of` parsed.

    `as_of` reads "2026-03-02 00:00 UTC" (the pipeline's) or ISO 8601; None when neither
    is known, and then the file claims no creation time rather than a made-up one.
    """
    moment = context.window_end
    if moment is None:
        text = context.as_of.strip().removesuffix("UTC").strip().replace("Z", "+00:00")
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def core_properties(context: ReportContext) -> str:
    moment = as_of_moment(context)
    dates = ""
    if moment is not None:
        when = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        dates = (
            f'<dcterms:created xsi:type="dcterms:W3CDTF">{when}</dcterms:created>'
            f'<dcterms:modified xsi:type="dcterms:W3CDTF">{when}</dcterms:modified>'
        )
    description = " · ".join(part for part in (context.organization_name, context.period) if part)
    return (
        f"{XML_DECL}<cp:coreProperties "
        'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{_plain(context.title)}</dc:title>"
        f"<dc:subject>{_plain(context.export_type)}</dc:subject>"
        "<dc:creator>export_pipelines</dc:creator>"
        + (f"<dc:description>{_plain(description)}</dc:description>" if description else "")
        + dates
        + "</cp:coreProperties>"
    )


def _plain(value: str) -> str:
    """Text of an XML element outside a cell: forbidden characters replaced, escaped."""
    return xml_escape(re.sub(r"[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]", "\ufffd", value))
