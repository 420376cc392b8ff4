"""What an export type is: a small declarative spec the asset factory turns into assets."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from export_pipelines.columns import Column, arrow_schema
from export_pipelines.render import Chart, ExportFormat


class WindowKind(str, enum.Enum):
    """Event exports hold rows whose event time is in [D, D+1); snapshots hold state at D+1."""

    EVENT = "event"
    SNAPSHOT = "snapshot"


class Kind(str, enum.Enum):
    """How the factory builds the type: one table, or a bundle of several."""

    TABLE = "table"
    USER_BUNDLE = "user_bundle"  # one person's data in sections (GDPR)
    ORGANIZATION_BUNDLE = "organization_bundle"  # every other type of one org and day


class Access(str, enum.Enum):
    """Who may request an export type on demand."""

    MEMBER = "member"  # any user of the organization
    ADMIN = "admin"  # organization admins only
    SELF = "self"  # a user, for their own data only


@dataclass(frozen=True)
class Aggregate:
    """A total worth showing a reader (PDF summary, materialization metadata)."""

    label: str
    column: str
    function: str  # sum | mean | min | max | count | count_distinct | sum_by
    by: str | None = None  # sum_by: the column to break the sum down by (e.g. user_id)


@dataclass(frozen=True)
class Window:
    """The half-open UTC interval [start, end) a partition or request covers."""

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def for_days(cls, first: dt.date, last: dt.date) -> Window:
        start = dt.datetime.combine(first, dt.time(), tzinfo=dt.timezone.utc)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
        return cls(start, end)

    @property
    def label(self) -> str:
        first = self.start.date()
        last = (self.end - dt.timedelta(microseconds=1)).date()
        return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"


@dataclass(frozen=True)
class ExportSpec:
    """One export type.

    `query` is SQL for both engines (SQLite and PostgreSQL) returning `columns` in order.
    It receives the bound parameters `:org_id`, `:window_start`, `:window_end` (event
    window; snapshots use `:window_end` alone = the end of day D). Partitions always hold
    the whole window; a request's `project_ids` filter applies to `project_column` when
    its deliverable is built.
    """

    key: str
    title: str
    description: str
    window: WindowKind
    query: str
    columns: tuple[Column, ...]
    default_formats: tuple[ExportFormat, ...] = (
        ExportFormat.CSV,
        ExportFormat.JSON,
        ExportFormat.PARQUET,
    )
    access: Access = Access.MEMBER
    # The output column a request's `project_ids` filter applies to; None = not filterable.
    project_column: str | None = None
    # The column holding each row's event time (event windows) — used for charts.
    time_column: str | None = None
    totals: tuple[Aggregate, ...] = ()
    # What the PDF draws (one or two aggregates; see render.Chart).
    charts: tuple[Chart, ...] = ()
    owners: tuple[str, ...] = ("team:data",)
    # Extra named parameters the query needs.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    kind: Kind = Kind.TABLE

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.columns)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def code_version(self) -> str:
        """Changes whenever what the spec produces could change (query or columns)."""
        digest = hashlib.sha256()
        digest.update(self.query.encode())
        for column in self.columns:
            digest.update(f"{column.name}:{column.type.value};".encode())
        return digest.hexdigest()[:12]
