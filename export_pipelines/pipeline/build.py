"""The one deliverable pipeline: prepare the days, render the files, publish with a manifest.

`build_deliverable` is what every way of asking for an export ends in. The asset graph
runs the same three steps as separate assets (`prepare` as extract + transform,
`render_deliverable`, `publish_deliverable`), so the renderers are called from one place
(`render_formats`) and the store is written from one place (`publish_deliverable`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.catalog.spec import ExportSpec, Kind, Window
from export_pipelines.columns import Unit
from export_pipelines.manifest import PublishedFile, publish_folder
from export_pipelines.pipeline.deliverable import Deliverable, Purpose
from export_pipelines.pipeline.prepare import (
    Preparation,
    PreparedDay,
    check_tenant,
    code_version,
    prepare_days,
    read_batches,
)
from export_pipelines.pipeline.totals import Totals
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.render import ExportFormat, RenderedFile, RenderOptions, ReportContext, render
from export_pipelines.source import directory
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import Store

Progress = Callable[[int], None]


def _no_progress(percentage: int) -> None:
    return None


@dataclass(frozen=True)
class Rendered:
    """A deliverable's files, before publishing, and what its manifest adds."""

    files: list[RenderedFile]
    rows: int
    header: dict[str, Any] = field(default_factory=dict)
    built: list[dt.date] = field(default_factory=list)
    reused: list[dt.date] = field(default_factory=list)


@dataclass(frozen=True)
class Built:
    deliverable: Deliverable
    folder: str
    files: list[PublishedFile]
    manifest: dict[str, Any]
    built_days: list[dt.date]
    reused_days: list[dt.date]

    @property
    def file(self) -> PublishedFile:
        return self.files[0]


def build_deliverable(
    deliverable: Deliverable,
    db: SourceDatabase,
    work: WorkArea,
    store: Store,
    run_id: str,
    progress: Progress = _no_progress,
) -> Built:
    """Build, publish and describe `deliverable`."""
    with work.scratch(".deliverable-") as scratch:
        rendered = render_deliverable(deliverable, db, work, scratch, store, progress=progress)
        progress(80)
        return publish_deliverable(deliverable, rendered, store, run_id)


def render_deliverable(
    deliverable: Deliverable,
    db: SourceDatabase | None,
    work: WorkArea,
    folder: Path,
    store: Store | None = None,
    prepared: Preparation | None = None,
    progress: Progress = _no_progress,
) -> Rendered:
    """The files of `deliverable` in `folder`: the one place a deliverable's kind is chosen.

    `prepared` (the asset graph's transform output) is used as given; otherwise the days
    are prepared here, reusing only what is provably current.
    """
    from export_pipelines.pipeline import bundle, gdpr

    kind = deliverable.spec.kind
    if not deliverable.organization_name and db is not None:
        name = directory.organization_name(db, deliverable.organization_id)
        deliverable = dataclasses.replace(deliverable, organization_name=name)
    if kind is Kind.USER_BUNDLE:
        return gdpr.render_user_export(deliverable, db, folder)
    if kind is Kind.ORGANIZATION_BUNDLE:
        return bundle.render_organization_bundle(deliverable, db, work, folder, store, progress)
    if prepared is None:
        prepared = prepare_days(
            deliverable.spec, db, work, deliverable.organization_id, deliverable.days
        )
    check_tenant(prepared.days)
    files = render_table(deliverable, prepared.days, folder)
    rows = files[0].rows if files else sum(d.rows for d in prepared.days)
    return Rendered(files, rows, built=prepared.built, reused=prepared.reused)


def filtered(reader: pa.RecordBatchReader, deliverable: Deliverable) -> pa.RecordBatchReader:
    """Apply the deliverable's project filter and column choice to a stream of rows."""
    columns = list(deliverable.columns) if deliverable.columns else reader.schema.names
    schema = pa.schema([reader.schema.field(c) for c in columns])
    project_ids = deliverable.project_ids
    wanted = pa.array(project_ids or [], pa.string())
    project_column = deliverable.spec.project_column

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            if project_ids is not None and project_column:
                batch = batch.filter(pc.is_in(batch.column(project_column), value_set=wanted))
            yield batch.select(columns)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _display(value: Any, unit: Unit | None = None) -> str:
    """A total as a person reads it: separators, and the decimals its column's unit has."""
    if value is None:
        return "—"
    if isinstance(value, dict):  # a breakdown: the largest ten
        shown = [f"{k}: {_display(v, unit)}" for k, v in list(value.items())[:10]]
        more = len(value) - len(shown)
        return "; ".join(shown) + (f"; … {more} more" if more > 0 else "") if shown else "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if unit is Unit.SCORE:
            return f"{value:,.1f}"
        if unit in (Unit.COUNT, Unit.CREDITS) and value.is_integer():
            return f"{int(value):,}"
        if unit is Unit.PERCENT:
            return f"{value:.1%}"
        return f"{value:,.2f}"
    return str(value)


def _summary(spec: ExportSpec, totals: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The totals a report for people shows: breakdowns keyed by identifiers (user ids)
    mean nothing to a reader and stay in the machine metadata."""
    aggregates = {a.label: a for a in spec.totals}
    columns = {c.name: c for c in spec.columns}
    shown = []
    for label, value in totals.items():
        aggregate = aggregates.get(label)
        column = columns.get(aggregate.column) if aggregate else None
        by = columns.get(aggregate.by) if aggregate and aggregate.by else None
        if by is not None and not by.for_readers:
            continue
        counted = aggregate is not None and aggregate.function in ("count", "count_distinct")
        unit = None if counted or column is None else column.reader_unit
        shown.append((label, _display(value, unit)))
    return tuple(shown)


def report_context(
    deliverable: Deliverable, totals: dict[str, Any], formats: Sequence[ExportFormat]
) -> ReportContext:
    spec = deliverable.spec
    # The PDF points a reader past its row limit to a complete file — only one that exists.
    full = next(
        (f for f in (ExportFormat.CSV, ExportFormat.PARQUET, ExportFormat.JSONL) if f in formats),
        None,
    )
    window = (
        deliverable.window
        if spec.window.value == "event"
        else Window.for_days(deliverable.date_to, deliverable.date_to)
    )
    return ReportContext(
        export_type=spec.key,
        title=spec.title,
        organization_id=deliverable.organization_id,
        period=window.label,
        as_of=window.end.strftime("%Y-%m-%d %H:%M UTC"),
        summary=_summary(spec, totals),
        full_file_name=f"{deliverable.stem}.{full.extension}" if full else None,
        organization_name=deliverable.organization_name,
        columns=spec.columns,
        charts=spec.charts,
        window_start=window.start,
        window_end=window.end,
    )


def _totals(deliverable: Deliverable, days: Sequence[PreparedDay]) -> dict[str, Any]:
    """The type's totals over exactly what the files hold."""
    unfiltered = deliverable.project_ids is None and deliverable.columns is None
    if unfiltered and len(days) == 1:
        return days[0].totals
    people = {ExportFormat.PDF, ExportFormat.EXCEL} & set(deliverable.formats)
    if not people or deliverable.columns is not None:
        return {}  # only PDF and Excel state totals; over a column subset they may not exist
    totals = Totals(deliverable.spec)
    reader = read_batches([d.path for d in days], deliverable.spec.schema)
    for batch in filtered(reader, deliverable):
        totals.add(batch)
    return totals.values()


def render_table(
    deliverable: Deliverable, days: Sequence[PreparedDay], folder: Path
) -> list[RenderedFile]:
    spec = deliverable.spec
    context = report_context(deliverable, _totals(deliverable, days), deliverable.formats)
    paths = [d.path for d in days]
    return render_formats(
        lambda: filtered(read_batches(paths, spec.schema), deliverable),
        folder,
        deliverable.stem,
        deliverable.formats,
        deliverable.options,
        context,
    )


def render_formats(
    rows: Callable[[], pa.RecordBatchReader],
    folder: Path,
    stem: str,
    formats: Sequence[ExportFormat],
    options: RenderOptions,
    context: ReportContext | None,
) -> list[RenderedFile]:
    """Render a stream of rows once per format into `folder` as `<stem>.<extension>`."""
    return [
        render(fmt, rows(), folder / f"{stem}.{fmt.extension}", options, context) for fmt in formats
    ]


def manifest_header(deliverable: Deliverable, rows: int, run_id: str) -> dict[str, Any]:
    """The manifest's descriptive fields: one shape for every deliverable."""
    spec = deliverable.spec
    columns = (
        []
        if spec.kind is Kind.ORGANIZATION_BUNDLE
        else [
            {"name": c.name, "type": c.type.value}
            for c in spec.columns
            if deliverable.columns is None or c.name in deliverable.columns
        ]
    )
    header: dict[str, Any] = {
        "export_type": spec.key,
        "organization_id": deliverable.organization_id,
        "date": deliverable.date_to.isoformat()
        if deliverable.purpose is Purpose.PARTITION
        else None,
        "date_from": deliverable.date_from.isoformat(),
        "date_to": deliverable.date_to.isoformat(),
        "row_count": rows,
        "columns": columns,
        "code_version": code_version(spec),
        "run_id": run_id,
        "request_id": deliverable.reference if deliverable.purpose is Purpose.REQUEST else None,
        "filters": {"project_ids": list(deliverable.project_ids)}
        if deliverable.project_ids is not None
        else {},
    }
    if deliverable.purpose is Purpose.REPORT:
        header["subscription_id"] = deliverable.reference
    if deliverable.subject_user_id is not None:
        header["user_id"] = deliverable.subject_user_id
    return header


def publish_deliverable(
    deliverable: Deliverable, rendered: Rendered, store: Store, run_id: str
) -> Built:
    """Publish the files, then the manifest: the one place the store is written."""
    header = {**manifest_header(deliverable, rendered.rows, run_id), **rendered.header}
    manifest, published = publish_folder(store, deliverable.folder, rendered.files, header)
    return Built(
        deliverable, deliverable.folder, published, manifest, rendered.built, rendered.reused
    )
