"""What a reader sees of each column in the Excel file: its place, header, number format, width.

Excel is the format people open, filter and print, so it follows the spec's reader metadata
(`export_pipelines.columns`): headers are labels ("DCS score", "Scanned (UTC)"), the columns
a reader works with come first and machine identifiers last, and numbers carry a format per
unit (separators for counts and credits, one decimal for scores, two for money). Every
column is kept except `organization_id`: a file holds one organization's rows (contract §4),
so the Summary sheet names the organization once instead of repeating its id on every row.

The stylesheet lives here too, because a cell's style index and its number format are one
decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.columns import Column, ColumnType, Role, Unit
from export_pipelines.render import ReportContext

ORGANIZATION_COLUMN = "organization_id"
MAX_COLUMN_WIDTH = 60
MIN_COLUMN_WIDTH = 6
FILTER_BUTTON = 3  # characters the autofilter's drop-down button covers in a header cell
# Widths count Calibri's digits; LibreOffice substitutes wider fonts, hence the padding.
PADDING = 3
TIMESTAMP_FORMAT = 'yyyy-mm-dd hh:mm:ss "UTC"'
TIMESTAMP_CHARS = len("2026-03-01 10:00:00 UTC")

# cellXfs indices of the stylesheet below.
STYLE_HEADER = 1
STYLE_DATETIME = 2
STYLE_DATE = 3
STYLE_COUNT = 4  # also credits: whole numbers, signed, with separators
STYLE_IDENTIFIER = 5  # a numeric id: all digits, no separators
STYLE_SCORE = 6
STYLE_MONEY = 7
STYLE_PERCENT = 8
STYLE_DECIMAL = 9
STYLE_TITLE = 10
STYLE_LABEL = 11
STYLE_WRAPPED = 12
STYLE_SUMMARY_COUNT = 13  # a count beside wrapped text: left-aligned like it

_UNIT_STYLES = {
    Unit.COUNT: STYLE_COUNT,
    Unit.CREDITS: STYLE_COUNT,
    Unit.SCORE: STYLE_SCORE,
    Unit.MONEY: STYLE_MONEY,
    Unit.PERCENT: STYLE_PERCENT,
    Unit.DECIMAL: STYLE_DECIMAL,
}
# Digits after the decimal point each number style shows (for column widths).
_DECIMALS = {STYLE_SCORE: 1, STYLE_MONEY: 2, STYLE_PERCENT: 1, STYLE_DECIMAL: 2}


@dataclass(frozen=True)
class SheetColumn:
    """One column of a data sheet: the stream's field, its header and its cell style."""

    name: str
    heading: str
    style: int


def _column_type(type_: pa.DataType) -> ColumnType:
    if pa.types.is_integer(type_):
        return ColumnType.INT
    if pa.types.is_floating(type_):
        return ColumnType.FLOAT
    if pa.types.is_boolean(type_):
        return ColumnType.BOOL
    if pa.types.is_timestamp(type_):
        return ColumnType.TIMESTAMP
    if pa.types.is_date(type_):
        return ColumnType.DATE
    return ColumnType.STRING


def spec_column(context: ReportContext, field: pa.Field) -> Column:
    """The spec's column of that field; one derived from its Arrow type when the spec has none."""
    for column in context.columns:
        if column.name == field.name:
            return column
    return Column(field.name, _column_type(field.type))


def _style(column: Column) -> int:
    if column.type is ColumnType.TIMESTAMP:
        return STYLE_DATETIME
    if column.type is ColumnType.DATE:
        return STYLE_DATE
    unit = column.reader_unit
    if unit is None:
        return 0
    if column.reader_role is Role.IDENTIFIER and column.type is ColumnType.INT:
        return STYLE_IDENTIFIER
    return _UNIT_STYLES[unit]


def _heading(column: Column) -> str:
    # Excel has no time zones: cells hold UTC wall-clock times, so the header says so.
    return f"{column.heading} (UTC)" if column.type is ColumnType.TIMESTAMP else column.heading


def sheet_columns(schema: pa.Schema, context: ReportContext) -> list[SheetColumn]:
    """The data sheets' columns in reading order: readers' columns first, identifiers last."""
    first, last = [], []
    for field in schema:
        if field.name == ORGANIZATION_COLUMN and context.organization_id:
            continue
        column = spec_column(context, field)
        place = first if column.for_readers else last
        place.append(SheetColumn(field.name, _heading(column), _style(column)))
    return first + last


def check_organization(batch: pa.RecordBatch, context: ReportContext) -> None:
    """Refuse rows of another organization: the dropped column must hold only the named one."""
    if ORGANIZATION_COLUMN not in batch.schema.names or not context.organization_id:
        return
    values = batch.column(ORGANIZATION_COLUMN)
    same = pc.equal(values, pa.scalar(context.organization_id, values.type))
    if not pc.all(pc.fill_null(same, False)).as_py():
        raise ValueError(
            "an Excel file names one organization, but these rows belong to another one"
        )


def column_width(column: SheetColumn, values: pa.Array | None) -> float:
    """A width in characters that shows the header and the first rows' values, capped."""
    width = len(column.heading) + FILTER_BUTTON
    if values is not None and len(values):
        width = max(width, _content_chars(column.style, values) + PADDING)
    return float(min(max(width, MIN_COLUMN_WIDTH), MAX_COLUMN_WIDTH))


def _content_chars(style: int, values: pa.Array) -> int:
    type_ = values.type
    if style == STYLE_DATETIME:
        return TIMESTAMP_CHARS
    if style == STYLE_DATE:
        return len("2026-03-01")
    if pa.types.is_boolean(type_):
        return len("FALSE")
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        return _number_chars(style, values)
    return pc.max(pc.utf8_length(values.cast(pa.string()))).as_py() or 0


def _number_chars(style: int, values: pa.Array) -> int:
    if pa.types.is_floating(values.type):
        values = pc.filter(values, pc.is_finite(values))
    extremes = pc.min_max(values).as_py()
    numbers = [v for v in (extremes["min"], extremes["max"]) if v is not None]
    if not numbers:
        return 0
    decimals = _DECIMALS.get(style, 0)
    separator = "" if style in (0, STYLE_IDENTIFIER) else ","
    if style == STYLE_PERCENT:
        return max(len(f"{v * 100:,.{decimals}f}%") for v in numbers)
    return max(len(f"{v:{separator}.{decimals}f}") for v in numbers)


_NUMBER_FORMATS = (  # (numFmtId, format code); ids below 164 are Excel's built-in ones
    (164, TIMESTAMP_FORMAT),
    (165, "yyyy-mm-dd"),
    (166, "0.0"),
    (167, "0.0%"),
    (168, "#,##0.0#"),
)
# (numFmtId, fontId, fillId, borderId, alignment) per cellXfs index.
_CELL_FORMATS = (
    (0, 0, 0, 0, ""),
    (0, 1, 2, 1, ""),  # header: bold on light grey, a rule below
    (164, 0, 0, 0, ""),
    (165, 0, 0, 0, ""),
    (3, 0, 0, 0, ""),  # built-in #,##0
    (1, 0, 0, 0, ""),  # built-in 0
    (166, 0, 0, 0, ""),
    (4, 0, 0, 0, ""),  # built-in #,##0.00
    (167, 0, 0, 0, ""),
    (168, 0, 0, 0, ""),
    (0, 2, 0, 0, ""),  # title
    (0, 1, 0, 0, '<alignment vertical="top"/>'),
    (0, 0, 0, 0, '<alignment vertical="top" wrapText="1"/>'),
    (3, 0, 0, 0, '<alignment horizontal="left" vertical="top"/>'),
)


def _xf(num_fmt: int, font: int, fill: int, border: int, alignment: str) -> str:
    applied = "".join(
        f' {name}="1"'
        for name, used in (
            ("applyNumberFormat", num_fmt),
            ("applyFont", font),
            ("applyFill", fill),
            ("applyBorder", border),
            ("applyAlignment", alignment),
        )
        if used
    )
    attributes = f'numFmtId="{num_fmt}" fontId="{font}" fillId="{fill}" borderId="{border}"'
    if alignment:
        return f'<xf {attributes} xfId="0"{applied}>{alignment}</xf>'
    return f'<xf {attributes} xfId="0"{applied}/>'


def stylesheet(namespace: str, declaration: str) -> str:
    formats = "".join(
        f'<numFmt numFmtId="{i}" formatCode="{code.replace(chr(34), "&quot;")}"/>'
        for i, code in _NUMBER_FORMATS
    )
    font = '<sz val="{size}"/><name val="Calibri"/><family val="2"/>'
    return (
        f'{declaration}<styleSheet xmlns="{namespace}">'
        f'<numFmts count="{len(_NUMBER_FORMATS)}">{formats}</numFmts>'
        f'<fonts count="3"><font>{font.format(size=11)}</font>'
        f"<font><b/>{font.format(size=11)}</font><font><b/>{font.format(size=14)}</font></fonts>"
        '<fills count="3"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill>'
        '<fill><patternFill patternType="solid"><fgColor rgb="FFE8ECF1"/>'
        '<bgColor indexed="64"/></patternFill></fill></fills>'
        '<borders count="2"><border><left/><right/><top/><bottom/><diagonal/></border>'
        '<border><left/><right/><top/><bottom style="thin"><color rgb="FF8C96A0"/></bottom>'
        "<diagonal/></border></borders>"
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        "</cellStyleXfs>"
        f'<cellXfs count="{len(_CELL_FORMATS)}">{"".join(_xf(*f) for f in _CELL_FORMATS)}'
        "</cellXfs>"
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    )
