"""What a reader sees in the table: which columns, under which headings, and cell text.

A column the spec describes (`ReportContext.columns`) is shown under its label, left out
when it is a pure identifier a reader has no use for (`Column.for_readers`), and its
numbers are written per unit: counts and credits as whole numbers with thousands
separators, scores with one decimal, money with two, ratios as percentages. A column the
spec does not describe is shown as it is named, with its numbers as they are. Timestamps
read ``2026-11-03 14:05 UTC`` (minutes are what a person compares; the zone is stated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.columns import Unit
from export_pipelines.render import ReportContext

MAX_CELL_CHARS = 300

_FORMATS: dict[Unit, Callable[[float], str]] = {
    Unit.COUNT: lambda v: f"{v:,.0f}",
    Unit.CREDITS: lambda v: f"{v:,.0f}",
    Unit.SCORE: lambda v: f"{v:,.1f}",
    Unit.MONEY: lambda v: f"{v:,.2f}",
    Unit.PERCENT: lambda v: f"{v * 100:,.1f} %",
    Unit.DECIMAL: lambda v: f"{v:,.2f}".rstrip("0").rstrip("."),
}


def format_number(value: float, unit: Unit | None) -> str:
    """One number as a reader sees it (`unit` None: as short as it is exact)."""
    if unit is None:
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, int) and unit in (Unit.COUNT, Unit.CREDITS):
        return f"{value:,}"  # exact beyond 2**53
    return _FORMATS[unit](value)


def is_number(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def is_text(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


@dataclass(frozen=True)
class ReaderColumn:
    """One column of the PDF's table: where it is in the stream and how it reads."""

    index: int  # position in the stream's schema
    name: str
    heading: str
    type: pa.DataType
    unit: Unit | None  # None: numbers as they are (or not a number)

    @property
    def right(self) -> bool:
        return is_number(self.type)


def reader_columns(schema: pa.Schema, context: ReportContext) -> list[ReaderColumn]:
    """The stream's columns a reader sees, in stream order."""
    known = {column.name: column for column in context.columns}
    shown, identifiers = [], []
    for index, field in enumerate(schema):
        spec = known.get(field.name)
        if spec is None:
            shown.append(ReaderColumn(index, field.name, field.name, field.type, None))
            continue
        unit = spec.reader_unit if is_number(field.type) else None
        column = ReaderColumn(index, field.name, spec.heading, field.type, unit)
        (shown if spec.for_readers else identifiers).append(column)
    return shown or identifiers  # a table of identifiers only still shows them


def display_text(array: pa.Array, column: ReaderColumn) -> list[str | None]:
    """A column as the strings a reader sees (nulls stay None)."""
    type_ = array.type
    if is_text(type_):
        text = array.cast(pa.string())
        text = pc.replace_substring(text, "\r\n", "\n")
        text = pc.replace_substring_regex(text, r"[\x00-\x09\x0B-\x1F\x7F]", " ")
        long = pc.fill_null(pc.greater(pc.utf8_length(text), MAX_CELL_CHARS), False)
        if pc.any(long).as_py():
            cut = pc.binary_join_element_wise(
                pc.utf8_slice_codeunits(text, 0, MAX_CELL_CHARS - 1), "…", ""
            )
            text = pc.if_else(long, cut, text)
    elif is_number(type_) and column.unit is not None:
        fmt = _FORMATS[column.unit]
        if pa.types.is_integer(type_) and column.unit in (Unit.COUNT, Unit.CREDITS):
            fmt = "{:,}".format
        return [None if v is None else fmt(v) for v in array.to_pylist()]
    elif pa.types.is_floating(type_):
        # Six decimals are plenty to read; tiny magnitudes keep their exact form.
        small = pc.and_(pc.less(pc.abs(array), 1e-3), pc.not_equal(array, 0))
        text = pc.if_else(pc.fill_null(small, False), array, pc.round(array, 6)).cast(pa.string())
    elif pa.types.is_timestamp(type_):
        # Via naive UTC text: a zone-aware strftime is ten times slower.
        naive = array.cast(pa.timestamp("us", tz=type_.tz)).cast(pa.timestamp("us"))
        minutes = pc.utf8_slice_codeunits(naive.cast(pa.string()), 0, 16)
        text = pc.binary_join_element_wise(minutes, " UTC", "")
    else:
        text = array.cast(pa.string())
    return text.to_pylist()
