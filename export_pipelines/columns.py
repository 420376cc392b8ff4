"""Output columns of an export: names, logical types and their Arrow equivalents, and what a
reader sees of them.

Machine formats (CSV, JSON, JSONL, Parquet, XML) use `name` and every column, as the contract
says. The people formats (PDF, Excel) use `label` for headers, `role` to decide what a reader
needs (a PDF leaves out pure identifiers), and `unit` for number formats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pyarrow as pa


class ColumnType(str, enum.Enum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIMESTAMP = "timestamp"  # UTC instant, microseconds
    DATE = "date"

    @property
    def arrow(self) -> pa.DataType:
        return _ARROW[self]


_ARROW = {
    ColumnType.STRING: pa.string(),
    ColumnType.INT: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    ColumnType.DATE: pa.date32(),
}


class Role(str, enum.Enum):
    """What a column is to a reader."""

    IDENTIFIER = "identifier"  # a machine key (UUIDs): Excel puts it last, PDF leaves it out
    DIMENSION = "dimension"  # a name or category a reader groups by
    MEASURE = "measure"  # a number a reader sums, averages or compares
    TIME = "time"  # when something happened, or the day counted


class Unit(str, enum.Enum):
    """How a measure is shown to a reader (Excel number formats, PDF cells)."""

    COUNT = "count"  # whole numbers with thousands separators
    CREDITS = "credits"  # whole credits, signed, with thousands separators
    SCORE = "score"  # 0–100, one decimal
    MONEY = "money"  # two decimals with separators
    PERCENT = "percent"  # a 0–1 ratio shown as a percentage
    DECIMAL = "decimal"  # any other number: up to two decimals


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    description: str = ""
    # Personal data (email, full name, IP, user agent): allowed only in exports whose
    # spec says so (GDPR and admin-only types).
    pii: bool = False
    # What a person reads in a header ("DCS score"); empty = derived from the name.
    label: str = ""
    # None = derived from the type and name (see `reader_role`).
    role: Role | None = None
    unit: Unit | None = None
    # An identifier a reader needs (e.g. a reference they quote back): the PDF keeps it.
    shown: bool = False

    @property
    def heading(self) -> str:
        """The header a person reads."""
        return self.label or default_label(self.name)

    @property
    def reader_role(self) -> Role:
        if self.role is not None:
            return self.role
        if self.name == "id" or self.name.endswith("_id"):
            return Role.IDENTIFIER
        if self.type in (ColumnType.TIMESTAMP, ColumnType.DATE):
            return Role.TIME
        if self.type in (ColumnType.INT, ColumnType.FLOAT):
            return Role.MEASURE
        return Role.DIMENSION

    @property
    def reader_unit(self) -> Unit | None:
        """The number format of a numeric column; None for anything else."""
        if self.type not in (ColumnType.INT, ColumnType.FLOAT):
            return None
        if self.unit is not None:
            return self.unit
        return Unit.COUNT if self.type is ColumnType.INT else Unit.DECIMAL

    @property
    def for_readers(self) -> bool:
        """Whether a report for people (PDF) shows the column."""
        return self.shown or self.reader_role is not Role.IDENTIFIER


_ACRONYMS = {"id": "ID", "ids": "IDs", "url": "URL", "dcs": "DCS", "ai": "AI", "ip": "IP"}


def default_label(name: str) -> str:
    """`ai_citation_score` → "AI citation score": a readable fallback for unlabelled columns."""
    words = [_ACRONYMS.get(w, w) for w in name.split("_") if w]
    if not words:
        return name
    first = words[0]
    words[0] = first if first.isupper() else first[:1].upper() + first[1:]
    return " ".join(words)


def arrow_schema(columns: tuple[Column, ...] | list[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in columns])


def _column(
    name: str,
    type_: ColumnType,
    description: str,
    *,
    pii: bool = False,
    label: str = "",
    role: Role | None = None,
    unit: Unit | None = None,
    shown: bool = False,
) -> Column:
    return Column(name, type_, description, pii, label, role, unit, shown)


def string(name: str, description: str = "", pii: bool = False, **reader) -> Column:
    return _column(name, ColumnType.STRING, description, pii=pii, **reader)


def integer(name: str, description: str = "", **reader) -> Column:
    return _column(name, ColumnType.INT, description, **reader)


def number(name: str, description: str = "", **reader) -> Column:
    return _column(name, ColumnType.FLOAT, description, **reader)


def boolean(name: str, description: str = "", **reader) -> Column:
    return _column(name, ColumnType.BOOL, description, **reader)


def timestamp(name: str, description: str = "", **reader) -> Column:
    return _column(name, ColumnType.TIMESTAMP, description, **reader)


def calendar_date(name: str, description: str = "", **reader) -> Column:
    return _column(name, ColumnType.DATE, description, **reader)
