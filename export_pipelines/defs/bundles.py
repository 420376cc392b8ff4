"""The two bundle types as assets: the GDPR export (one person) and the organization bundle.

Each is one multi-asset computing its four stage assets together, through the same
deliverable pipeline as every other export.
"""

from collections.abc import Sequence

import dagster as dg

from export_pipelines.catalog.spec import ExportSpec
from export_pipelines.defs.exports import BACKFILL_POLICY, partitions_of
from export_pipelines.defs.partitions import export_partitions
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.pipeline.build import build_deliverable
from export_pipelines.pipeline.bundle import BundlePartMissing
from export_pipelines.pipeline.deliverable import Deliverable
from export_pipelines.render import ExportFormat


class UserDataConfig(dg.Config):
    """Whose data to export (the GDPR export is one person's)."""

    user_id: str
    formats: list[ExportFormat] = ["JSON"]  # Dagster serialises enum defaults by name


STAGES = ("extract", "transform", "render", "publish")


def stage_specs(
    spec: ExportSpec,
    descriptions: dict[str, str],
    kinds: dict[str, str],
    extract_deps: Sequence[dg.AssetKey] = (),
    tags: dict[str, str] | None = None,
) -> list[dg.AssetSpec]:
    """The four stage assets of a bundle type, computed together by one multi-asset."""
    keys = [dg.AssetKey([spec.key, stage]) for stage in STAGES]
    common = dict(
        group_name=spec.key,
        partitions_def=export_partitions,
        owners=list(spec.owners),
        code_version=spec.code_version,
        tags={"export_type": spec.key, **(tags or {})},
    )
    return [
        dg.AssetSpec(
            key,
            deps=list(extract_deps) if i == 0 else [keys[i - 1]],
            description=descriptions[stage],
            kinds={kinds[stage]},
            **common,
        )
        for i, (stage, key) in enumerate(zip(STAGES, keys))
    ]


def user_bundle_assets(spec: ExportSpec) -> list[dg.AssetsDefinition]:
    """The GDPR export as one asset per stage: the person is named in the run config."""
    keys = {stage: dg.AssetKey([spec.key, stage]) for stage in STAGES}

    @dg.multi_asset(
        specs=stage_specs(
            spec,
            descriptions={
                "extract": "The person's rows, one Parquet file per section.",
                "transform": "Checked: every row names the person; none of anyone else.",
                "render": "JSON bundle (and CSV zip) with the Art. 15(1) cover document.",
                "publish": f"{spec.title} published under user_data_export/org=…/date=…/user=…/.",
            },
            kinds={"extract": "sql", "transform": "pyarrow", "render": "json", "publish": "file"},
            tags={"personal_data": "true"},
        ),
        partitions_def=export_partitions,
        can_subset=False,
    )
    def user_data_export(
        context: dg.AssetExecutionContext,
        config: UserDataConfig,
        source: SourceResource,
        store: StoreResource,
        work: WorkAreaResource,
    ):
        target = store.store()
        formats = tuple(ExportFormat.parse(getattr(f, "value", f)) for f in config.formats)
        for partition in partitions_of(context):
            deliverable = Deliverable.for_partition(
                spec, partition, formats, subject_user_id=config.user_id
            )
            try:
                built = build_deliverable(
                    deliverable, source.database(), work.work_area(), target, context.run.run_id
                )
            except LookupError as missing:
                raise dg.Failure(str(missing), allow_retries=False) from None
        rows = built.manifest["row_count"]
        published = built.files
        cover = {"sections": built.manifest.get("sections", [])}
        sections = {s["name"]: s["rows"] for s in cover["sections"]}
        yield dg.MaterializeResult(
            asset_key=keys["extract"],
            metadata={
                "dagster/row_count": rows,
                "rows_by_section": dg.MetadataValue.json(sections),
            },
        )
        yield dg.MaterializeResult(
            asset_key=keys["transform"],
            metadata={"dagster/row_count": rows, "rows_of_other_users": 0},
        )
        yield dg.MaterializeResult(
            asset_key=keys["render"], metadata={"files": ", ".join(f.name for f in published)}
        )
        yield dg.MaterializeResult(
            asset_key=keys["publish"],
            metadata={
                "dagster/row_count": rows,
                **{f"sha256 {p.name}": p.sha256 for p in published},
            },
        )

    return [user_data_export]


def organization_bundle_assets(spec: ExportSpec) -> list[dg.AssetsDefinition]:
    """One zip of every table export of the partition, built from what was published."""
    from export_pipelines.catalog import bundled_specs

    parts_specs = bundled_specs()
    keys = {stage: dg.AssetKey([spec.key, stage]) for stage in STAGES}

    @dg.multi_asset(
        specs=stage_specs(
            spec,
            descriptions={
                "extract": "Every table export published for the partition, verified against "
                "its manifest.",
                "transform": "The bundle's top-level manifest: parts, files, checksums.",
                "render": "One deterministic zip of every part.",
                "publish": "The bundle published under organization_bundle/org=…/date=…/ with "
                "manifest.json.",
            },
            kinds={"extract": "file", "transform": "json", "render": "zip", "publish": "file"},
            extract_deps=[dg.AssetKey([s.key, "publish"]) for s in parts_specs],
        ),
        partitions_def=export_partitions,
        can_subset=False,
        backfill_policy=BACKFILL_POLICY,
    )
    def organization_bundle(
        context: dg.AssetExecutionContext, store: StoreResource, work: WorkAreaResource
    ):
        target = store.store()
        total_rows, files = 0, []
        for partition in partitions_of(context):
            deliverable = Deliverable.for_partition(spec, partition)
            try:
                built = build_deliverable(
                    deliverable, None, work.work_area(), target, context.run.run_id
                )
            except BundlePartMissing as missing:
                raise dg.Failure(str(missing), allow_retries=False) from None
            total_rows += built.manifest["row_count"]
            files += built.files
        yield dg.MaterializeResult(asset_key=keys["extract"], metadata={"parts": len(parts_specs)})
        yield dg.MaterializeResult(
            asset_key=keys["transform"], metadata={"dagster/row_count": total_rows}
        )
        yield dg.MaterializeResult(
            asset_key=keys["render"], metadata={"files": ", ".join(f.name for f in files)}
        )
        yield dg.MaterializeResult(
            asset_key=keys["publish"],
            metadata={
                "dagster/row_count": total_rows,
                **{f"sha256 {f.name}": f.sha256 for f in files},
            },
        )

    return [organization_bundle]
