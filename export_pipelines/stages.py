"""The four stages of every export, as plain functions (the Dagster layer only calls them).

extract   source rows of one partition's window → Parquet in the working area
transform conform to the spec (types, columns, tenant), totals and a preview → Parquet
render    the conformed rows → one file per requested format
publish   rendered files → the store, with checksums, manifest last

Stages hand data to each other as Parquet files, streamed batch by batch, so a partition of
any size flows through in bounded memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from export_pipelines.catalog.spec import ExportSpec, Window, WindowKind
from export_pipelines.manifest import PublishedFile, publish_folder
from export_pipelines.render import (
    ExportFormat,
    RenderedFile,
    RenderOptions,
    ReportContext,
    render,
)
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import Store

CODE_VERSION = "0.1.0"
_BATCH_ROWS = 65_536
PREVIEW_ROWS = 10


_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def path_segment(value: str) -> str:
    """An id as one safe file-name segment: ids are values, never paths.

    Ordinary ids (UUIDs) stay as they are; anything else is percent-encoded, and a very
    long id is cut and suffixed with its hash so that it still names one folder.
    """
    if _SAFE_SEGMENT.fullmatch(value) and ".." not in value:
        return value
    encoded = quote(value, safe="").replace(".", "%2E")
    if len(encoded) > 120:
        encoded = f"{encoded[:80]}~{hashlib.sha256(value.encode()).hexdigest()[:16]}"
    return encoded


@dataclass(frozen=True)
class ExportPartition:
    """One organization on one UTC day: the unit every export is computed in."""

    organization_id: str
    date: dt.date

    @property
    def key(self) -> str:
        """The multi-partition key string (dimensions sorted by name: date, org)."""
        return f"{self.date.isoformat()}|{self.organization_id}"

    @classmethod
    def from_key(cls, key: Any) -> ExportPartition:
        by_dimension = getattr(key, "keys_by_dimension", None)
        if by_dimension:
            return cls(by_dimension["org"], dt.date.fromisoformat(by_dimension["date"]))
        date, _, org = str(key).partition("|")
        return cls(org, dt.date.fromisoformat(date))

    @property
    def window(self) -> Window:
        return Window.for_days(self.date, self.date)

    def folder(self, export_type: str) -> str:
        org = path_segment(self.organization_id)
        return f"{export_type}/org={org}/date={self.date.isoformat()}"

    def file_stem(self, export_type: str) -> str:
        return f"{export_type}_{path_segment(self.organization_id)}_{self.date.isoformat()}"


class WorkArea:
    """The stages' private working area: `<root>/<type>/<stage>/org=…/date=…/`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, spec: ExportSpec, stage: str, partition: ExportPartition) -> Path:
        return self.root / spec.key / stage / partition.folder(spec.key).split("/", 1)[1]

    def replace(self, target: Path, build: Callable[[Path], Any]) -> Any:
        """Build a stage's output in a fresh folder, then swap it in whole."""
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        staging.mkdir()
        try:
            result = build(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            return result
        finally:
            if staging.exists():
                shutil.rmtree(staging)


def _require(path: Path, stage: str, partition: ExportPartition) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{stage} output for partition {partition.key} is missing ({path}); "
            f"materialize the upstream stage for this partition first"
        )
    return path


def read_batches(paths: Sequence[Path], schema: pa.Schema) -> pa.RecordBatchReader:
    """Stream the rows of several Parquet files, in order, as one reader."""

    def batches() -> Iterator[pa.RecordBatch]:
        # Many small files (a year of days) are regrouped into full-size batches: renderers
        # pay a cost per batch, not per row.
        pending: list[pa.RecordBatch] = []
        size = 0
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS):
                pending.append(batch.select(schema.names).cast(schema))
                size += batch.num_rows
                if size >= _BATCH_ROWS:
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


# -- extract ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractResult:
    partition: ExportPartition
    rows: int
    path: Path
    window: Window


def query_parameters(spec: ExportSpec, window: Window, organization_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {"org_id": organization_id, "window_end": window.end}
    if spec.window is WindowKind.EVENT:
        params["window_start"] = window.start
    return {**spec.parameters, **params}


def extract_partition(
    spec: ExportSpec, db: SourceDatabase, work: WorkArea, partition: ExportPartition
) -> ExtractResult:
    window = partition.window
    params = query_parameters(spec, window, partition.organization_id)
    target = work.folder(spec, "extract", partition)

    def build(folder: Path) -> int:
        reader = db.stream(spec.query, params, spec.columns)
        return write_parquet(reader, folder / "data.parquet", {"window": window.label})

    rows = work.replace(target, build)
    return ExtractResult(partition, rows, target / "data.parquet", window)


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
    conform: bool = False,
) -> list[ExtractResult]:
    """Extract many days of one organization (with `conform`, transform them too).

    Row-level event exports (those with a `time_column`) read each run of consecutive
    days with one query and split the ordered rows by day, so a year costs one query,
    not 365. Other exports (snapshots, per-window aggregates) are extracted day by day.
    With `conform`, each day's transform output (checks, totals, the shared file) comes
    from the same pass over the rows instead of a second read per day.
    """
    if spec.window is not WindowKind.EVENT or spec.time_column is None or len(days) == 1:
        results = [
            extract_partition(spec, db, work, ExportPartition(organization_id, d)) for d in days
        ]
        if conform:
            for result in results:
                transform_partition(spec, work, result.partition)
        return results
    results = []
    for first, last in contiguous_ranges(days):
        results.extend(_extract_range(spec, db, work, organization_id, first, last, conform))
    return results


def _extract_range(
    spec: ExportSpec,
    db: SourceDatabase,
    work: WorkArea,
    organization_id: str,
    first: dt.date,
    last: dt.date,
    conform: bool = False,
) -> list[ExtractResult]:
    window = Window.for_days(first, last)
    params = query_parameters(spec, window, organization_id)
    partitions = [
        ExportPartition(organization_id, first + dt.timedelta(days=i))
        for i in range((last - first).days + 1)
    ]
    token = uuid.uuid4().hex
    staging = {
        p.date: work.folder(spec, "extract", p).with_name(f".date={p.date}.{token}")
        for p in partitions
    }
    counts = {p.date: 0 for p in partitions}
    totals = {p.date: Totals(spec) for p in partitions}
    foreign = {p.date: 0 for p in partitions}
    writers: dict[dt.date, pq.ParquetWriter] = {}
    done: set[dt.date] = set()

    def writer_for(day: dt.date) -> pq.ParquetWriter:
        if day not in writers:
            staging[day].mkdir(parents=True)
            label = Window.for_days(day, day).label
            schema = spec.schema.with_metadata({b"window": label.encode()})
            writers[day] = pq.ParquetWriter(
                staging[day] / "data.parquet", schema, compression="zstd"
            )
        return writers[day]

    try:
        # Rows arrive ordered by time, so a day's writer can close once a later day shows.
        for batch in db.stream(spec.query, params, spec.columns):
            batch_days = pc.cast(batch.column(spec.time_column), pa.date32())
            for day in pc.unique(batch_days).to_pylist():
                rows = batch.filter(pc.equal(batch_days, pa.scalar(day, pa.date32())))
                writer_for(day).write_batch(rows)
                counts[day] += rows.num_rows
                if conform:
                    totals[day].add(rows)
                    foreign[day] += _foreign_rows(rows, organization_id)
                for earlier in [d for d in writers if d < day]:
                    writers.pop(earlier).close()
                    done.add(earlier)
        for day in counts:
            if day not in done:
                writer_for(day)  # days without rows still get their (empty) file
        for writer in writers.values():
            writer.close()
        results = []
        for partition in partitions:
            target = work.folder(spec, "extract", partition)
            if target.exists():
                shutil.rmtree(target)
            staging[partition.date].rename(target)
            results.append(
                ExtractResult(
                    partition, counts[partition.date], target / "data.parquet", partition.window
                )
            )
        if conform:
            for result in results:
                day = result.partition.date
                if foreign[day]:
                    raise RuntimeError(
                        f"{foreign[day]} rows of {result.partition.key} belong to another "
                        "organization"
                    )
                write_conformed(work, spec, result.partition, result.path, totals[day])
        return results
    finally:
        for folder in staging.values():
            if folder.exists():
                shutil.rmtree(folder)


# -- transform ---------------------------------------------------------------------------


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


@dataclass(frozen=True)
class TransformResult:
    partition: ExportPartition
    rows: int
    path: Path
    foreign_rows: int
    totals: dict[str, Any]
    nulls: dict[str, int]
    preview: list[dict[str, Any]]


def write_conformed(
    work: WorkArea, spec: ExportSpec, partition: ExportPartition, source: Path, totals: Totals
) -> int:
    """Transform output of rows already in the spec's exact types: the same bytes, shared
    (hard link), and the summary of the checks and totals."""

    def build(folder: Path) -> int:
        try:
            os.link(source, folder / "data.parquet")
        except OSError:
            shutil.copyfile(source, folder / "data.parquet")
        (folder / "summary.json").write_text(
            json.dumps({"rows": totals.rows, "totals": totals.values(), "nulls": totals.nulls})
        )
        return totals.rows

    return work.replace(work.folder(spec, "transform", partition), build)


def _foreign_rows(batch: pa.RecordBatch, organization_id: str) -> int:
    """Rows not of `organization_id`: the tenant check, on the data itself."""
    same_org = pc.equal(batch.column("organization_id"), organization_id)
    return batch.num_rows - (pc.sum(same_org).as_py() or 0)


def transform_partition(
    spec: ExportSpec, work: WorkArea, partition: ExportPartition
) -> TransformResult:
    source = _require(
        work.folder(spec, "extract", partition) / "data.parquet", "extract", partition
    )
    target = work.folder(spec, "transform", partition)
    totals = Totals(spec)
    checked = {"foreign": 0}
    parquet = pq.ParquetFile(source)
    first = next(parquet.iter_batches(batch_size=PREVIEW_ROWS), None)
    preview = first.to_pylist() if first is not None else []

    if parquet.schema_arrow.remove_metadata().equals(spec.schema):
        # Already in the spec's exact types (the extract conforms while reading): check
        # it, reading only the columns the checks need, then share the bytes.
        needed = ["organization_id", *(a.column for a in spec.totals)]
        needed += [a.by for a in spec.totals if a.by]
        for batch in parquet.iter_batches(
            batch_size=_BATCH_ROWS, columns=list(dict.fromkeys(needed))
        ):
            checked["foreign"] += _foreign_rows(batch, partition.organization_id)
            totals.add(batch)
        totals.nulls = null_counts(parquet)
        rows = write_conformed(work, spec, partition, source, totals)
    else:

        def build(folder: Path) -> int:
            def conformed() -> Iterator[pa.RecordBatch]:
                for batch in read_batches([source], spec.schema):
                    checked["foreign"] += _foreign_rows(batch, partition.organization_id)
                    totals.add(batch)
                    yield batch

            reader = pa.RecordBatchReader.from_batches(spec.schema, conformed())
            rows = write_parquet(reader, folder / "data.parquet", {"export_type": spec.key})
            (folder / "summary.json").write_text(
                json.dumps({"rows": rows, "totals": totals.values(), "nulls": totals.nulls})
            )
            return rows

        rows = work.replace(target, build)
    return TransformResult(
        partition,
        rows,
        target / "data.parquet",
        checked["foreign"],
        totals.values(),
        totals.nulls,
        preview,
    )


# -- render ------------------------------------------------------------------------------


def _display(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):  # a breakdown: the largest ten
        shown = [f"{k}: {_display(v)}" for k, v in list(value.items())[:10]]
        more = len(value) - len(shown)
        return "; ".join(shown) + (f"; … {more} more" if more > 0 else "") if shown else "—"
    if isinstance(value, (int, float)):
        return f"{value:,}"
    return str(value)


def report_context(
    spec: ExportSpec,
    organization_id: str,
    window: Window,
    totals: dict[str, Any],
    formats: Sequence[ExportFormat],
    stem: str,
) -> ReportContext:
    # The PDF points a reader past its row limit to a complete file — only one that exists.
    full = next(
        (f for f in (ExportFormat.CSV, ExportFormat.PARQUET, ExportFormat.JSONL) if f in formats),
        None,
    )
    # The PDF states the row count itself; the summary adds the type's own totals.
    summary = [(label, _display(value)) for label, value in totals.items()]
    return ReportContext(
        export_type=spec.key,
        title=spec.title,
        organization_id=organization_id,
        period=window.label,
        as_of=window.end.strftime("%Y-%m-%d %H:%M UTC"),
        summary=tuple(summary),
        full_file_name=f"{stem}.{full.extension}" if full else None,
        chart=spec.chart,
    )


def render_files(
    spec: ExportSpec,
    sources: Sequence[Path],
    folder: Path,
    stem: str,
    formats: Sequence[ExportFormat],
    options: RenderOptions,
    context: ReportContext,
) -> list[RenderedFile]:
    """Render the rows of `sources` once per format into `folder` as `<stem>.<ext>`."""
    files = []
    for fmt in formats:
        reader = read_batches(sources, spec.schema)
        files.append(render(fmt, reader, folder / f"{stem}.{fmt.extension}", options, context))
    return files


def render_partition(
    spec: ExportSpec,
    work: WorkArea,
    partition: ExportPartition,
    formats: Sequence[ExportFormat],
    options: RenderOptions,
) -> list[RenderedFile]:
    source_folder = work.folder(spec, "transform", partition)
    source = _require(source_folder / "data.parquet", "transform", partition)
    summary = json.loads((source_folder / "summary.json").read_text())
    stem = partition.file_stem(spec.key)
    context = report_context(
        spec,
        partition.organization_id,
        partition.window,
        summary["totals"],
        formats,
        stem,
    )
    target = work.folder(spec, "render", partition)

    def build(folder: Path) -> list[RenderedFile]:
        files = render_files(spec, [source], folder, stem, formats, options, context)
        (folder / "render.json").write_text(
            json.dumps(
                [{"name": f.path.name, "format": f.format.value, "rows": f.rows} for f in files]
            )
        )
        return files

    files = work.replace(target, build)
    return [RenderedFile(target / f.path.name, f.format, f.rows) for f in files]


def rendered_files(
    spec: ExportSpec, work: WorkArea, partition: ExportPartition
) -> list[RenderedFile]:
    folder = work.folder(spec, "render", partition)
    listing = json.loads(_require(folder / "render.json", "render", partition).read_text())
    return [
        RenderedFile(folder / item["name"], ExportFormat(item["format"]), item["rows"])
        for item in listing
    ]


# -- publish -----------------------------------------------------------------------------


def manifest_header(
    spec: ExportSpec,
    organization_id: str,
    rows: int,
    run_id: str,
    date: dt.date | None,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "export_type": spec.key,
        "organization_id": organization_id,
        "date": date.isoformat() if date else None,
        "row_count": rows,
        "columns": [{"name": c.name, "type": c.type.value} for c in spec.columns],
        "code_version": f"{CODE_VERSION}+{spec.code_version}",
        "run_id": run_id,
        "request_id": request_id,
        **(extra or {}),
    }


def publish_partition(
    spec: ExportSpec, work: WorkArea, store: Store, partition: ExportPartition, run_id: str
) -> tuple[dict[str, Any], list[PublishedFile]]:
    files = rendered_files(spec, work, partition)
    summary = json.loads((work.folder(spec, "transform", partition) / "summary.json").read_text())
    header = manifest_header(
        spec, partition.organization_id, summary["rows"], run_id, partition.date
    )
    return publish_folder(store, partition.folder(spec.key), files, header)
