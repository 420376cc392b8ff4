"""Turns an export spec into its four assets: T/extract → T/transform → T/render → T/publish."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from export_pipelines.catalog.spec import ExportSpec, Kind
from export_pipelines.defs.partitions import export_partitions
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.manifest import verify_folder
from export_pipelines.pipeline.build import (
    Built,
    Rendered,
    publish_deliverable,
    render_deliverable,
)
from export_pipelines.pipeline.deliverable import Deliverable
from export_pipelines.pipeline.naming import ExportPartition, path_segment
from export_pipelines.pipeline.prepare import (
    Preparation,
    extract_days,
    load_prepared,
    source_fingerprints,
    transform_partition,
)
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.render import Compression, ExportFormat, RenderedFile, RenderOptions
from export_pipelines.requests.validation import RequestRejected, launchpad_options
from export_pipelines.source import directory

# A backfill of one organization's range runs in batches of partitions, not one run per day.
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)

_KINDS = {
    ExportFormat.CSV: "csv",
    ExportFormat.JSON: "json",
    ExportFormat.JSONL: "json",
    ExportFormat.EXCEL: "excel",
    ExportFormat.PDF: "pdf",
    ExportFormat.PARQUET: "parquet",
    ExportFormat.XML: "xml",
}


class RenderConfig(dg.Config):
    """Which files to render for this materialization, and how.

    In the Launchpad (Materialize all → Open launchpad, or shift-click), under the render
    step of the type, e.g. `ops: {scan_results__render: {config: {formats: [CSV, PDF]}}}`.
    """

    formats: list[ExportFormat] = Field(
        default=[],
        description="Files to render, e.g. [CSV, EXCEL, PDF]; empty = the type's defaults. "
        "Set under ops: {<type>__render: {config: {formats: [...]}}}.",
    )
    compression: Compression = Field(
        default=Compression.NONE, description="none, gzip or zip, for every file"
    )
    csv_delimiter: str = Field(default=",", description="one character, e.g. ';' or '\\t'")
    csv_bom: bool = Field(default=False, description="start CSV files with a UTF-8 BOM (Excel)")
    formula_guard: bool = Field(
        default=True, description="show cells starting with = + - @ as text, not formulas"
    )
    pdf_row_limit: int = Field(
        default=100_000, description="rows the PDF shows; the full data stays in the other files"
    )

    def options(self, spec: ExportSpec) -> RenderOptions:
        """Checked by the same rules as a request's parameters."""
        try:
            return launchpad_options(
                spec,
                {
                    "delimiter": self.csv_delimiter,
                    "bom": self.csv_bom,
                    "formula_guard": self.formula_guard,
                    "pdf_row_limit": self.pdf_row_limit,
                    "compression": self.compression.value,
                },
            )
        except RequestRejected as refused:
            raise dg.Failure(str(refused), allow_retries=False) from None


def partitions_of(context: dg.AssetExecutionContext) -> list[ExportPartition]:
    return [ExportPartition.from_key(key) for key in context.partition_keys]


def table_schema(spec: ExportSpec) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type.value,
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=True),
            )
            for c in spec.columns
        ]
    )


def markdown_preview(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
        return text if len(text) <= 60 else text[:57] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) if rows else "_no rows in this partition_"


def _organization_metadata(names: dict[str, str]) -> dict:
    """The organizations' names beside their ids (partition keys are ids, for the contract)."""
    if len(names) == 1:
        ((org, name),) = names.items()
        return {"organization": f"{name} ({org})" if name else org}
    return {"organizations": dg.MetadataValue.json(names)}


def _partition_metadata(partitions: Sequence[ExportPartition], rows: Sequence[int]) -> dict:
    if len(partitions) == 1:
        return {}
    return {
        "partitions": len(partitions),
        "rows_by_partition": dg.MetadataValue.json({p.key: r for p, r in zip(partitions, rows)}),
    }


RENDER_LISTING = "render.json"


def render_partition(
    spec: ExportSpec,
    work: WorkArea,
    partition: ExportPartition,
    formats: tuple[ExportFormat, ...],
    options: RenderOptions,
    run_id: str,
    organization_name: str = "",
) -> Rendered:
    """The render stage: this run's own version of the partition's files.

    Versions are per run, so two runs of one partition never publish each other's files.
    """
    prepared = load_prepared(spec, work, partition)
    if prepared is None:
        raise dg.Failure(
            f"{spec.key}/transform has not been materialized for partition {partition.key}; "
            f"materialize the whole {spec.key} group for this partition (Materialize all)",
            allow_retries=False,
        )
    deliverable = Deliverable.for_partition(
        spec, partition, formats, options, organization_name=organization_name
    )
    stage = work.stage_dir(spec.key, "render", partition)

    def build(folder: Path) -> Rendered:
        rendered = render_deliverable(
            deliverable, None, work, folder, prepared=Preparation([prepared], [], [])
        )
        listing = [
            {"name": f.path.name, "format": f.format_name, "rows": f.rows} for f in rendered.files
        ]
        (folder / RENDER_LISTING).write_text(json.dumps({"rows": rendered.rows, "files": listing}))
        return rendered

    rendered = work.build(stage, build, version=_version_name(run_id))
    folder = work.version(stage, _version_name(run_id))
    return Rendered(
        [RenderedFile(folder / f.path.name, f.format, f.rows) for f in rendered.files],
        rendered.rows,
    )


def _version_name(run_id: str) -> str:
    return f"run-{path_segment(run_id)}"


def publish_partition(
    spec: ExportSpec, work: WorkArea, store, partition: ExportPartition, run_id: str
) -> Built:
    """The publish stage: this run's rendered files if it rendered them, else the latest."""
    stage = work.stage_dir(spec.key, "render", partition)
    folder = work.version(stage, _version_name(run_id)) or work.current(stage)
    if folder is None or not (folder / RENDER_LISTING).exists():
        raise dg.Failure(
            f"{spec.key}/render has not been materialized for partition {partition.key}; "
            f"materialize the whole {spec.key} group for this partition (Materialize all)",
            allow_retries=False,
        )
    listing = json.loads((folder / RENDER_LISTING).read_text())
    files = [
        RenderedFile(folder / f["name"], ExportFormat(f["format"]), f["rows"])
        for f in listing["files"]
    ]
    deliverable = Deliverable.for_partition(spec, partition, tuple(f.format for f in files))
    return publish_deliverable(deliverable, Rendered(files, listing["rows"]), store, run_id)


def export_assets(spec: ExportSpec) -> list[dg.AssetsDefinition]:
    """The four assets (and their checks) of one export type."""
    group = spec.key
    extract_key = dg.AssetKey([spec.key, "extract"])
    transform_key = dg.AssetKey([spec.key, "transform"])
    render_key = dg.AssetKey([spec.key, "render"])
    publish_key = dg.AssetKey([spec.key, "publish"])
    common = dict(
        group_name=group,
        partitions_def=export_partitions,
        owners=list(spec.owners),
        code_version=spec.code_version,
        backfill_policy=BACKFILL_POLICY,
        tags={"export_type": spec.key, "window": spec.window.value},
    )
    schema = table_schema(spec)
    window_text = (
        "rows whose event time is in [D 00:00, D+1 00:00) UTC"
        if spec.window.value == "event"
        else "the state as of the end of day D (UTC)"
    )

    @dg.asset(
        key=extract_key,
        description=f"{spec.description} Raw rows from the source database: {window_text}.",
        kinds={"sql", "parquet"},
        **common,
    )
    def extract(
        context: dg.AssetExecutionContext, source: SourceResource, work: WorkAreaResource
    ) -> dg.MaterializeResult:
        db = source.database()
        area = work.work_area()
        days_by_org: dict[str, list] = {}
        for partition in partitions_of(context):
            days_by_org.setdefault(partition.organization_id, []).append(partition.date)
        results, versions = [], {}
        for org, days in days_by_org.items():
            # Fingerprinted first (where the engine can), so requests may reuse these days.
            fingerprints = source_fingerprints(spec, db, org, days)
            versions.update(fingerprints or {})
            results += extract_days(spec, db, area, org, days, fingerprints)
        rows = [r.rows for r in results]
        first = results[0]
        names = directory.organization_names(db, days_by_org)
        # The source fingerprint is the partition's data version: Dagster then tells a
        # re-extract that changed nothing from one that did (PostgreSQL sources).
        version = versions.get(first.partition.date) if len(results) == 1 else None
        return dg.MaterializeResult(
            data_version=dg.DataVersion(version) if version else None,
            metadata={
                **_organization_metadata({o: names.get(o, "") for o in days_by_org}),
                "dagster/row_count": sum(rows),
                "dagster/column_schema": schema,
                "source": db.dialect,
                "window": first.window.label if len(results) == 1 else f"{len(results)} days",
                "path": dg.MetadataValue.path(str(first.path)),
                **_partition_metadata([r.partition for r in results], rows),
            },
        )

    @dg.asset(
        key=transform_key,
        deps=[extract_key],
        description=(
            f"{spec.title}: rows conformed to the export's columns and types, checked to "
            "belong to the partition's organization, with totals and a preview."
        ),
        kinds={"pyarrow", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                "tenant_isolation",
                asset=transform_key,
                blocking=True,
                description="Every row belongs to the partition's organization.",
            )
        ],
        **common,
    )
    def transform(
        context: dg.AssetExecutionContext, work: WorkAreaResource
    ) -> dg.MaterializeResult:
        area = work.work_area()
        results = [transform_partition(spec, area, p) for p in partitions_of(context)]
        rows = [r.rows for r in results]
        foreign = sum(r.foreign_rows for r in results)
        first = results[0]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": sum(rows),
                "dagster/column_schema": schema,
                "preview": dg.MetadataValue.md(
                    markdown_preview(first.preview(), spec.column_names)
                ),
                "totals": dg.MetadataValue.json(first.totals),
                "null_counts": dg.MetadataValue.json(first.nulls),
                **_partition_metadata([r.partition for r in results], rows),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="tenant_isolation",
                    passed=foreign == 0,
                    metadata={"rows_of_other_organizations": foreign},
                    description=None if foreign == 0 else f"{foreign} rows of another organization",
                )
            ],
        )

    @dg.asset(
        key=render_key,
        deps=[transform_key],
        description=(
            f"{spec.title} rendered into files (default: "
            f"{', '.join(f.value for f in spec.default_formats)})."
        ),
        kinds={_KINDS[f] for f in spec.default_formats},
        **common,
    )
    def render(
        context: dg.AssetExecutionContext,
        config: RenderConfig,
        source: SourceResource,
        work: WorkAreaResource,
    ) -> dg.MaterializeResult:
        area = work.work_area()
        formats = tuple(dict.fromkeys(config.formats)) or tuple(spec.default_formats)
        options = config.options(spec)
        partitions = partitions_of(context)
        names = directory.organization_names(
            source.database(), {p.organization_id for p in partitions}
        )
        rendered = [
            render_partition(
                spec,
                area,
                p,
                formats,
                options,
                context.run.run_id,
                names.get(p.organization_id, ""),
            )
            for p in partitions
        ]
        first = rendered[0]
        return dg.MaterializeResult(
            metadata={
                **_organization_metadata(
                    {p.organization_id: names.get(p.organization_id, "") for p in partitions}
                ),
                "dagster/row_count": sum(r.rows for r in rendered),
                "formats": ", ".join(f.value for f in formats),
                "files": dg.MetadataValue.json(
                    {f.path.name: f.path.stat().st_size for f in first.files}
                ),
                **_partition_metadata(partitions, [r.rows for r in rendered]),
            }
        )

    @dg.asset(
        key=publish_key,
        deps=[render_key],
        description=(
            f"{spec.title} published to the store under "
            f"{spec.key}/org=ORGANIZATION_ID/date=YYYY-MM-DD/ with manifest.json (SHA-256 "
            "per file). Materialize it with the rest of its group (select the group → "
            "Materialize all): it publishes what render produced for the partition."
        ),
        kinds={"file"},
        check_specs=[
            dg.AssetCheckSpec(
                "manifest_verifies",
                asset=publish_key,
                description="Every published file's SHA-256 and size match manifest.json.",
            )
        ],
        **common,
    )
    def publish(context: dg.AssetExecutionContext, store: StoreResource, work: WorkAreaResource):
        area = work.work_area()
        target = store.store()
        partitions = partitions_of(context)
        outcomes = [
            publish_partition(spec, area, target, p, context.run.run_id) for p in partitions
        ]
        problems = [
            problem for built in outcomes for problem in verify_folder(target, built.folder)
        ]
        files = outcomes[0].files
        metadata: dict[str, Any] = {
            "dagster/row_count": sum(b.manifest["row_count"] for b in outcomes),
            "manifest": dg.MetadataValue.path(
                target.location(f"{outcomes[0].folder}/manifest.json")
            ),
            "files": dg.MetadataValue.md(
                "| file | bytes | rows | sha256 |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {f.location} | {f.bytes:,} | {f.rows:,} | `{f.sha256}` |" for f in files
                )
            ),
        }
        for f in files:
            metadata[f"sha256 {f.name}"] = f.sha256
        metadata.update(
            _partition_metadata(partitions, [b.manifest["row_count"] for b in outcomes])
        )
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name="manifest_verifies",
                    passed=not problems,
                    metadata={"problems": dg.MetadataValue.json([str(p) for p in problems])},
                )
            ],
        )

    return [extract, transform, render, publish]


def all_export_assets(specs: Sequence[ExportSpec]) -> list[dg.AssetsDefinition]:
    from export_pipelines.defs.bundles import organization_bundle_assets, user_bundle_assets

    builders = {
        Kind.TABLE: export_assets,
        Kind.USER_BUNDLE: user_bundle_assets,
        Kind.ORGANIZATION_BUNDLE: organization_bundle_assets,
    }
    return [asset for spec in specs for asset in builders[spec.kind](spec)]
