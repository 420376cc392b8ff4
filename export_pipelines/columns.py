"""Output columns of an export: names, logical types and their Arrow equivalents."""

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


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    description: str = ""
    # Personal data (email, full name, IP, user agent): allowed only in exports whose
    # spec says so (GDPR and admin-only types).
    pii: bool = False


def arrow_schema(columns: tuple[Column, ...] | list[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in columns])


def string(name: str, description: str = "", pii: bool = False) -> Column:
    return Column(name, ColumnType.STRING, description, pii)


def integer(name: str, description: str = "") -> Column:
    return Column(name, ColumnType.INT, description)


def number(name: str, description: str = "") -> Column:
    return Column(name, ColumnType.FLOAT, description)


def boolean(name: str, description: str = "") -> Column:
    return Column(name, ColumnType.BOOL, description)


def timestamp(name: str, description: str = "") -> Column:
    return Column(name, ColumnType.TIMESTAMP, description)


def calendar_date(name: str, description: str = "") -> Column:
    return Column(name, ColumnType.DATE, description)
