"""The one totals engine and the one tenant check, over streams of record batches."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from export_pipelines.catalog.spec import ExportSpec


def foreign_rows(batch: pa.RecordBatch, organization_id: str) -> int:
    """Rows not of `organization_id`: the tenant check, on the data itself."""
    same_org = pc.equal(batch.column("organization_id"), organization_id)
    return batch.num_rows - (pc.sum(same_org).as_py() or 0)


class TenantViolation(RuntimeError):
    """Rows of another organization reached an organization's export: nothing is published."""


@dataclass
class Totals:
    """Running totals over a stream of batches (constant memory but for distinct counts)."""

    spec: ExportSpec
    rows: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _mins: dict[str, Any] = field(default_factory=dict)
    _maxs: dict[str, Any] = field(default_factory=dict)
    _distinct: dict[str, set] = field(default_factory=dict)
    _breakdowns: dict[str, dict] = field(default_factory=dict)

    @property
    def needed_columns(self) -> list[str]:
        needed = ["organization_id", *(a.column for a in self.spec.totals)]
        needed += [a.by for a in self.spec.totals if a.by]
        return list(dict.fromkeys(needed))

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name in batch.schema.names:
            self.nulls[name] = self.nulls.get(name, 0) + batch.column(name).null_count
        for agg in self.spec.totals:
            column = batch.column(agg.column)
            if agg.function in ("sum", "mean"):
                total = pc.sum(column).as_py()
                self._sums[agg.column] = self._sums.get(agg.column, 0) + (total or 0)
                self._counts[agg.column] = (
                    self._counts.get(agg.column, 0) + pc.count(column).as_py()
                )
            elif agg.function == "count":
                self._counts[agg.column] = (
                    self._counts.get(agg.column, 0) + pc.count(column).as_py()
                )
            elif agg.function == "count_distinct":
                self._distinct.setdefault(agg.column, set()).update(
                    pc.unique(column.drop_null()).to_pylist()
                )
            elif agg.function == "sum_by":
                grouped = (
                    pa.table({"k": batch.column(agg.by), "v": column})
                    .group_by("k")
                    .aggregate([("v", "sum")])
                )
                breakdown = self._breakdowns.setdefault(agg.label, {})
                for key, value in zip(grouped["k"].to_pylist(), grouped["v_sum"].to_pylist()):
                    key = "(none)" if key is None else key
                    breakdown[key] = breakdown.get(key, 0) + (value or 0)
            elif agg.function in ("min", "max"):
                found = pc.min_max(column).as_py()
                for store, value, pick in (
                    (self._mins, found["min"], min),
                    (self._maxs, found["max"], max),
                ):
                    if value is not None:
                        current = store.get(agg.column)
                        store[agg.column] = value if current is None else pick(current, value)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for agg in self.spec.totals:
            if agg.function == "sum":
                out[agg.label] = self._sums.get(agg.column, 0)
            elif agg.function == "mean":
                count = self._counts.get(agg.column, 0)
                out[agg.label] = round(self._sums[agg.column] / count, 2) if count else None
            elif agg.function == "count":
                out[agg.label] = self._counts.get(agg.column, 0)
            elif agg.function == "count_distinct":
                out[agg.label] = len(self._distinct.get(agg.column, ()))
            elif agg.function == "min":
                out[agg.label] = self._mins.get(agg.column)
            elif agg.function == "max":
                out[agg.label] = self._maxs.get(agg.column)
            elif agg.function == "sum_by":
                breakdown = self._breakdowns.get(agg.label, {})
                nonzero = {k: v for k, v in breakdown.items() if v}
                out[agg.label] = dict(sorted(nonzero.items(), key=lambda kv: (-kv[1], kv[0])))
        return {k: _plain(v) for k, v in out.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and not math.isinf(value):
        return int(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def null_counts(parquet: pq.ParquetFile) -> dict[str, int]:
    """Nulls per column from the file's statistics, without reading the data."""
    counts = dict.fromkeys(parquet.schema_arrow.names, 0)
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            stats = column.statistics
            name = column.path_in_schema
            if name in counts and stats is not None and stats.has_null_count:
                counts[name] += stats.null_count
    return counts
