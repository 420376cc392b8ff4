"""Preparing days: a partition's rows extracted from the source, then conformed and checked.

extract    source rows of one (organization, day) window → Parquet in the working area
transform  the spec's exact types, the tenant check, totals → Parquet + summary.json

Every deliverable is rendered from prepared days. A prepared day is reused only when it is
provably current: made by the same code version, and the source rows of its window have the
same fingerprint now as when it was made. The fingerprint is computed by the database over
the export's own query (PostgreSQL: an order-independent MD5 over every row's text), before
the rows are read, so a change racing the extract can only cause a rebuild, never a stale
reuse. Where the engine cannot compute it (the embedded SQLite database has no hash
function), days are always rebuilt.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from export_pipelines.catalog.spec import ExportSpec, Window, WindowKind
from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.pipeline.totals import TenantViolation, Totals, foreign_rows, null_counts
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.source.database import SourceDatabase

CODE_VERSION = "0.2.0"
BATCH_ROWS = 65_536
PREVIEW_ROWS = 10
DATA = "data.parquet"
SUMMARY = "summary.json"


def code_version(spec: ExportSpec) -> str:
    """What made a prepared day: the package's stage code and the spec's query and columns."""
    return f"{CODE_VERSION}+{spec.code_version}"


def read_batches(paths: Sequence[Path], schema: pa.Schema) -> pa.RecordBatchReader:
    """Stream the rows of several Parquet files, in order, as one reader."""

    def batches() -> Iterator[pa.RecordBatch]:
        # Many small files (a year of days) are regrouped into full-size batches: renderers
        # pay a cost per batch, not per row.
        pending: list[pa.RecordBatch] = []
        size = 0
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                pending.append(batch.select(schema.names).cast(schema))
                size += batch.num_rows
                if size >= BATCH_ROWS:
                    yield pa.concat_batches(pending)
                    pending, size = [], 0
        if pending:
            yield pa.concat_batches(pending)

    return pa.RecordBatchReader.from_batches(schema, batches())


def write_parquet(reader: pa.RecordBatchReader, path: Path, metadata: dict[str, str]) -> int:
    schema = reader.schema.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    rows = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def query_parameters(spec: ExportSpec, window: Window, organization_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {"org_id": organization_id, "window_end": window.end}
    if spec.window is WindowKind.EVENT:
        params["window_start"] = window.start
    return {**spec.parameters, **params}


# -- fingerprints ------------------------------------------------------------------------


def source_fingerprints(
    spec: ExportSpec, db: SourceDatabase, organization_id: str, days: Sequence[dt.date]
) -> dict[dt.date, str] | None:
    """Each day's fingerprint of the source rows, or None where the engine cannot tell."""
    if db.dialect != "postgresql" or not days:
        return None
    row_hash = "md5(CAST(q AS text))"
    aggregate = f"count(*) AS n, md5(string_agg({row_hash}, '' ORDER BY {row_hash})) AS h"
    found: dict[dt.date, str] = {}
    if spec.window is WindowKind.EVENT and spec.time_column is not None:
        for first, last in contiguous_ranges(days):
            params = query_parameters(spec, Window.for_days(first, last), organization_id)
            rows = db.fetch_rows(
                f"SELECT CAST(q.{spec.time_column} AS date) AS day, {aggregate} "
                f"FROM ({spec.query}) AS q GROUP BY 1",
                params,
            )
            for row in rows:
                day = row["day"]
                day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
                found[day] = f"{row['n']}:{row['h']}"
    else:
        for day in days:
            params = query_parameters(spec, Window.for_days(day, day), organization_id)
            row = db.fetch_rows(f"SELECT {aggregate} FROM ({spec.query}) AS q", params)[0]
            found[day] = f"{row['n']}:{row['h'] or ''}"
    return {day: found.get(day, "0:") for day in days}


# -- extract -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractResult:
    partition: ExportPartition
    rows: int
    path: Path
    window: Window


def _extract_metadata(window: Window, fingerprint: str | None) -> dict[str, str]:
    return {"window": window.label, "fingerprint": fingerprint or ""}


def extract_partition(
    spec: ExportSpec,
    db: SourceDatabase,
    work: WorkArea,
    partition: ExportPartition,
    fingerprint: str | None = None,
) -> ExtractResult:
    window = partition.window
    params = query_parameters(spec, window, partition.organization_id)
    stage = work.stage_dir(spec.key, "extract", partition)

    def build(folder: Path) -> tuple[int, Path]:
        reader = db.stream(spec.query, params, spec.columns)
        return write_parquet(reader, folder / DATA, _extract_metadata(window, fingerprint)), folder

    rows, _ = work.build(stage, build)
    return ExtractResult(partition, rows, work.current(stage) / DATA, window)


def contiguous_ranges(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def extract_days(
    spec: ExportSpec,
    db: SourceDatabase,
    work: WorkArea,
    organization_id: str,
    days: Sequence[dt.date],
    fingerprints: dict[dt.date, str] | None = None,
    conform: bool = False,
) -> list[ExtractResult]:
    """Extract many days of one organization (with `conform`, transform them too).

    Row-level event exports (those with a `time_column`) read each run of consecutive
    days with one query and split the ordered rows by day, so a year costs one query,
    not 365. Other exports (snapshots, per-window aggregates) are extracted day by day.
    With `conform`, each day's transform output comes from the same pass over the rows.
    """
    fingerprints = fingerprints or {}
    if spec.window is not WindowKind.EVENT or spec.time_column is None or len(days) == 1:
        results = [
            extract_partition(
                spec, db, work, ExportPartition(organization_id, d), fingerprints.get(d)
            )
            for d in days
        ]
        if conform:
            for result in results:
                transform_partition(spec, work, result.partition)
        return results
    results = []
    for first, last in contiguous_ranges(days):
        results.extend(
            _extract_range(spec, db, work, organization_id, first, last, fingerprints, conform)
        )
    return results


def _extract_range(
    spec: ExportSpec,
    db: SourceDatabase,
    work: WorkArea,
    organization_id: str,
    first: dt.date,
    last: dt.date,
    fingerprints: dict[dt.date, str],
    conform: bool,
) -> list[ExtractResult]:
    params = query_parameters(spec, Window.for_days(first, last), organization_id)
    partitions = {
        first + dt.timedelta(days=i): ExportPartition(organization_id, first + dt.timedelta(days=i))
        for i in range((last - first).days + 1)
    }
    with work.scratch(".range-") as scratch:
        counts = dict.fromkeys(partitions, 0)
        totals = {day: Totals(spec) for day in partitions}
        foreign = dict.fromkeys(partitions, 0)
        open_day: dt.date | None = None
        writer: pq.ParquetWriter | None = None

        def open_writer(day: dt.date) -> pq.ParquetWriter:
            meta = _extract_metadata(partitions[day].window, fingerprints.get(day))
            schema = spec.schema.with_metadata({k.encode(): v.encode() for k, v in meta.items()})
            return pq.ParquetWriter(scratch / f"{day}.parquet", schema, compression="zstd")

        try:
            # Rows arrive ordered by time: one day's file is open at a time.
            for batch in db.stream(spec.query, params, spec.columns):
                batch_days = pc.cast(batch.column(spec.time_column), pa.date32())
                for day in pc.unique(batch_days).to_pylist():
                    rows = batch.filter(pc.equal(batch_days, pa.scalar(day, pa.date32())))
                    if day != open_day:
                        if writer is not None:
                            writer.close()
                        writer, open_day = open_writer(day), day
                    writer.write_batch(rows)
                    counts[day] += rows.num_rows
                    if conform:
                        totals[day].add(rows)
                        foreign[day] += foreign_rows(rows, organization_id)
        finally:
            if writer is not None:
                writer.close()
        results = []
        for day, partition in partitions.items():
            path = scratch / f"{day}.parquet"
            if not path.exists():  # a day without rows still gets its (empty) file
                open_writer(day).close()

            def build(folder: Path, path: Path = path) -> None:
                os.replace(path, folder / DATA)

            stage = work.stage_dir(spec.key, "extract", partition)
            work.build(stage, build)
            extracted = work.current(stage) / DATA
            results.append(ExtractResult(partition, counts[day], extracted, partition.window))
            if conform:
                totals[day].nulls = null_counts(pq.ParquetFile(extracted))
                _write_transform(
                    spec,
                    work,
                    partition,
                    extracted,
                    totals[day],
                    foreign[day],
                    fingerprints.get(day),
                )
        return results


# -- transform ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedDay:
    """One partition's conformed rows, with what was checked and totalled over them."""

    partition: ExportPartition
    rows: int
    path: Path
    foreign_rows: int
    totals: dict[str, Any]
    nulls: dict[str, int]
    code_version: str
    fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def preview(self, rows: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
        first = next(pq.ParquetFile(self.path).iter_batches(batch_size=rows), None)
        return first.to_pylist() if first is not None else []


def _write_transform(
    spec: ExportSpec,
    work: WorkArea,
    partition: ExportPartition,
    source: Path,
    totals: Totals,
    foreign: int,
    fingerprint: str | None,
) -> None:
    """Transform output of rows already in the spec's exact types: the same bytes, shared
    (hard link), and the summary of the checks and totals."""

    def build(folder: Path) -> None:
        try:
            os.link(source, folder / DATA)
        except OSError:
            shutil.copyfile(source, folder / DATA)
        _write_summary(folder, spec, totals, foreign, fingerprint)

    work.build(work.stage_dir(spec.key, "transform", partition), build)


def _write_summary(
    folder: Path, spec: ExportSpec, totals: Totals, foreign: int, fingerprint: str | None
) -> None:
    (folder / SUMMARY).write_text(
        json.dumps(
            {
                "rows": totals.rows,
                "totals": totals.values(),
                "nulls": totals.nulls,
                "foreign_rows": foreign,
                "code_version": code_version(spec),
                "fingerprint": fingerprint,
            }
        )
    )


def transform_partition(
    spec: ExportSpec, work: WorkArea, partition: ExportPartition
) -> PreparedDay:
    extracted = work.current(work.stage_dir(spec.key, "extract", partition))
    if extracted is None:
        raise FileNotFoundError(
            f"{spec.key}/extract has not been materialized for partition {partition.key}; "
            "materialize the upstream stage for this partition first"
        )
    source = extracted / DATA
    parquet = pq.ParquetFile(source)
    fingerprint = (parquet.schema_arrow.metadata or {}).get(b"fingerprint", b"").decode() or None
    totals = Totals(spec)
    checked = {"foreign": 0}

    if parquet.schema_arrow.remove_metadata().equals(spec.schema):
        # Already in the spec's exact types (the extract conforms while reading): check it,
        # reading only the columns the checks need, then share the bytes.
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=totals.needed_columns):
            checked["foreign"] += foreign_rows(batch, partition.organization_id)
            totals.add(batch)
        totals.rows = parquet.metadata.num_rows
        totals.nulls = null_counts(parquet)
        _write_transform(spec, work, partition, source, totals, checked["foreign"], fingerprint)
    else:

        def build(folder: Path) -> None:
            def conformed() -> Iterator[pa.RecordBatch]:
                for batch in read_batches([source], spec.schema):
                    checked["foreign"] += foreign_rows(batch, partition.organization_id)
                    totals.add(batch)
                    yield batch

            reader = pa.RecordBatchReader.from_batches(spec.schema, conformed())
            write_parquet(reader, folder / DATA, {"export_type": spec.key})
            _write_summary(folder, spec, totals, checked["foreign"], fingerprint)

        work.build(work.stage_dir(spec.key, "transform", partition), build)
    prepared = load_prepared(spec, work, partition)
    assert prepared is not None
    return prepared


def load_prepared(
    spec: ExportSpec, work: WorkArea, partition: ExportPartition
) -> PreparedDay | None:
    folder = work.current(work.stage_dir(spec.key, "transform", partition))
    if folder is None:
        return None
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return PreparedDay(
        partition=partition,
        rows=summary["rows"],
        path=folder / DATA,
        foreign_rows=summary.get("foreign_rows", 0),
        totals=summary["totals"],
        nulls=summary["nulls"],
        code_version=summary.get("code_version", ""),
        fingerprint=summary.get("fingerprint"),
    )


# -- the days a deliverable needs -------------------------------------------------------


@dataclass(frozen=True)
class Preparation:
    days: list[PreparedDay]
    built: list[dt.date]
    reused: list[dt.date]


def prepare_days(
    spec: ExportSpec,
    db: SourceDatabase,
    work: WorkArea,
    organization_id: str,
    days: Sequence[dt.date],
) -> Preparation:
    """Every day a deliverable covers, reusing only what is provably current."""
    fingerprints = source_fingerprints(spec, db, organization_id, days)
    current = code_version(spec)
    reusable: dict[dt.date, PreparedDay] = {}
    if fingerprints is not None:
        for day in days:
            found = load_prepared(spec, work, ExportPartition(organization_id, day))
            if (
                found is not None
                and found.code_version == current
                and found.fingerprint is not None
                and found.fingerprint == fingerprints[day]
            ):
                reusable[day] = found
    built = [d for d in days if d not in reusable]
    if built:
        extract_days(spec, db, work, organization_id, built, fingerprints, conform=True)
    prepared = []
    for day in days:
        found = reusable.get(day) or load_prepared(
            spec, work, ExportPartition(organization_id, day)
        )
        assert found is not None, f"{spec.key} {day} was prepared"
        prepared.append(found)
    check_tenant(prepared)
    return Preparation(prepared, built, sorted(reusable))


def check_tenant(days: Sequence[PreparedDay]) -> None:
    for day in days:
        if day.foreign_rows:
            raise TenantViolation(
                f"{day.foreign_rows} rows of partition {day.partition.key} belong to another "
                "organization; nothing was published"
            )
