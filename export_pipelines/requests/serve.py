"""Building one request's deliverable from the organization's daily partitions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.catalog.spec import Kind
from export_pipelines.manifest import PublishedFile, publish_folder
from export_pipelines.render import ExportFormat, RenderedFile, render
from export_pipelines.requests.validation import ValidRequest
from export_pipelines.source.database import SourceDatabase
from export_pipelines.stages import (
    ExportPartition,
    Totals,
    WorkArea,
    extract_days,
    manifest_header,
    path_segment,
    read_batches,
    report_context,
)
from export_pipelines.store import Store, sha256_file


@dataclass(frozen=True)
class Deliverable:
    request_id: str
    folder: str
    file: PublishedFile
    manifest: dict[str, Any]
    built_days: list[dt.date]
    reused_days: list[dt.date]


def request_folder(request_id: str) -> str:
    return f"requests/{path_segment(request_id)}"


def is_fresh(work: WorkArea, request: ValidRequest, day: dt.date) -> bool:
    """A day's conformed rows can be reused if they were computed after the day ended."""
    partition = ExportPartition(request.organization_id, day)
    summary = work.folder(request.spec, "transform", partition) / "summary.json"
    if not summary.exists():
        return False
    written = dt.datetime.fromtimestamp(summary.stat().st_mtime, dt.timezone.utc)
    return written >= partition.window.end


def ensure_days(
    request: ValidRequest, db: SourceDatabase, work: WorkArea
) -> tuple[list[dt.date], list[dt.date]]:
    """Materialize the request's missing or stale daily partitions; return (built, reused)."""
    reused = [d for d in request.days if is_fresh(work, request, d)]
    built = [d for d in request.days if d not in set(reused)]
    if built:
        extract_days(request.spec, db, work, request.organization_id, built, conform=True)
    return built, reused


def filtered(reader: pa.RecordBatchReader, request: ValidRequest) -> pa.RecordBatchReader:
    """Apply the request's project filter and column choice to a stream of rows."""
    columns = list(request.columns) if request.columns else reader.schema.names
    schema = pa.schema([reader.schema.field(c) for c in columns])
    wanted = pa.array(request.project_ids or [], pa.string())
    project_column = request.spec.project_column

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            if request.project_ids is not None and project_column:
                batch = batch.filter(pc.is_in(batch.column(project_column), value_set=wanted))
            yield batch.select(columns)

    return pa.RecordBatchReader.from_batches(schema, batches())


def render_range(
    request: ValidRequest, db: SourceDatabase, work: WorkArea, folder: Path
) -> tuple[RenderedFile, list[dt.date], list[dt.date]]:
    """Render one table export over the request's days and filters into `folder`."""
    spec = request.spec
    built, reused = ensure_days(request, db, work)
    sources = [
        work.folder(spec, "transform", ExportPartition(request.organization_id, d)) / "data.parquet"
        for d in request.days
    ]
    totals = Totals(spec)
    if request.format is ExportFormat.PDF and request.columns is None:
        # The PDF's first page states the type's totals: one extra pass over Parquet,
        # cheap next to laying out pages.
        for batch in filtered(read_batches(sources, spec.schema), request):
            totals.add(batch)
    stem = (
        f"{spec.key}_{path_segment(request.organization_id)}_{request.date_from}_{request.date_to}"
    )
    context = report_context(
        spec, request.organization_id, request.window, totals.values(), [request.format], stem
    )
    reader = filtered(read_batches(sources, spec.schema), request)
    path = folder / f"{stem}.{request.format.extension}"
    return render(request.format, reader, path, request.options, context), built, reused


def request_header(request: ValidRequest, rows: int, run_id: str) -> dict[str, Any]:
    columns = list(request.columns) if request.columns else request.spec.column_names
    header = manifest_header(
        request.spec,
        request.organization_id,
        rows,
        run_id,
        date=None,
        request_id=request.id,
        extra={
            "date_from": request.date_from.isoformat(),
            "date_to": request.date_to.isoformat(),
            "filters": {"project_ids": list(request.project_ids)}
            if request.project_ids is not None
            else {},
        },
    )
    header["columns"] = [c for c in header["columns"] if c["name"] in columns]
    return header


def build_deliverable(
    request: ValidRequest,
    db: SourceDatabase,
    work: WorkArea,
    store: Store,
    run_id: str,
    progress: Callable[[int], None] = lambda pct: None,
) -> Deliverable:
    """Build, publish and describe the one file that answers `request`."""
    if request.spec.kind is Kind.USER_BUNDLE:
        return _user_data_deliverable(request, db, work, store, run_id, progress)
    folder = request_folder(request.id)
    with tempfile.TemporaryDirectory(dir=work.root, prefix=".request-") as scratch:
        if request.spec.kind is Kind.ORGANIZATION_BUNDLE:
            rendered, built, reused = _organization_bundle(
                request, db, work, Path(scratch), progress
            )
        else:
            rendered, built, reused = render_range(request, db, work, Path(scratch))
        progress(80)
        header = request_header(request, rendered.rows, run_id)
        manifest, published = publish_folder(store, folder, [rendered], header)
    return Deliverable(request.id, folder, published[0], manifest, built, reused)


def _organization_bundle(
    request: ValidRequest,
    db: SourceDatabase,
    work: WorkArea,
    scratch: Path,
    progress: Callable[[int], None],
) -> tuple[RenderedFile, list[dt.date], list[dt.date]]:
    """Every table export over the request's range, in the requested format, in one zip."""
    from export_pipelines.bundle import BUNDLE_FORMAT, zip_entry
    from export_pipelines.catalog import bundled_specs

    specs = bundled_specs()
    parts, built, reused = [], set(), set()
    for i, spec in enumerate(specs):
        part_request = dataclasses.replace(request, spec=spec, project_ids=None, columns=None)
        rendered, part_built, part_reused = render_range(part_request, db, work, scratch)
        built.update(part_built)
        reused.update(part_reused)
        parts.append((spec.key, rendered))
        progress(10 + int(60 * (i + 1) / len(specs)))
    manifest = {
        "organization_id": request.organization_id,
        "date_from": request.date_from.isoformat(),
        "date_to": request.date_to.isoformat(),
        "parts": [
            {
                "export_type": key,
                "name": f.path.name,
                "rows": f.rows,
                "bytes": f.path.stat().st_size,
                "sha256": sha256_file(f.path),
            }
            for key, f in parts
        ],
    }
    path = (
        scratch
        / f"organization_bundle_{path_segment(request.organization_id)}_{request.date_from}_{request.date_to}.zip"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            zip_entry("manifest.json"), json.dumps(manifest, indent=2, ensure_ascii=False)
        )
        for key, rendered in parts:
            with (
                open(rendered.path, "rb") as source,
                archive.open(zip_entry(f"{key}/{rendered.path.name}"), "w") as target,
            ):
                shutil.copyfileobj(source, target, 1 << 20)
    rows = sum(f.rows for _, f in parts)
    return RenderedFile(path, BUNDLE_FORMAT, rows), sorted(built), sorted(reused)


def _user_data_deliverable(
    request: ValidRequest,
    db: SourceDatabase,
    work: WorkArea,
    store: Store,
    run_id: str,
    progress: Callable[[int], None],
) -> Deliverable:
    """One person's data as of the request day: always computed fresh, never cached."""
    from export_pipelines.gdpr import build_user_export

    user_id = request.extra["user_id"]
    stem = f"user_data_export_{path_segment(user_id)}_{request.date_to}"
    with tempfile.TemporaryDirectory(dir=work.root, prefix=".request-") as scratch:
        files, cover = build_user_export(
            db,
            Path(scratch),
            request.organization_id,
            user_id,
            request.date_to,
            [request.format],
            stem,
        )
        progress(80)
        rows = sum(s["rows"] for s in cover["sections"])
        header = {**request_header(request, rows, run_id), "user_id": user_id}
        manifest, published = publish_folder(store, request_folder(request.id), files, header)
    return Deliverable(request.id, request_folder(request.id), published[0], manifest, [], [])
