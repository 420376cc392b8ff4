"""The Dagster layer: definitions only, each calling the core (everything outside `defs/`).

- `partitions`  organization × UTC day, and the sensor that adds organizations
- `exports`     every export type's assets and checks, made from its spec
- `requests`    the on-demand request sensor, jobs and failure sensor
- `expiry`      the schedule that deletes expired deliverables
- `reports`     the report schedules, job and failure sensor
- `statistics`  the on-demand service's statistics asset
- `resources`   source, store, work area: the only place that reaches the outside world
"""

import warnings

import dagster as dg

# Dagster marks `owners` and `backfill_policy` as beta; we rely on both knowingly. Silenced
# here, in one place, so that real warnings stay visible in every run's log.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions() -> dg.Definitions:
    from export_pipelines.catalog import SPECS
    from export_pipelines.defs.expiry import expire_exports_job, expire_exports_schedule
    from export_pipelines.defs.exports import all_export_assets
    from export_pipelines.defs.partitions import organizations_sensor
    from export_pipelines.defs.reports import (
        deliver_report_job,
        report_failure_sensor,
        report_schedules,
    )
    from export_pipelines.defs.requests import (
        export_request_failure_sensor,
        export_requests_sensor,
        serve_export_request_job,
        serve_export_requests_job,
    )
    from export_pipelines.defs.resources import default_resources
    from export_pipelines.defs.statistics import (
        export_statistics,
        statistics_job,
        statistics_schedule,
    )

    export_assets = all_export_assets(SPECS)
    # Materialize every export type for a partition (or a range of them, as a backfill).
    all_exports_job = dg.define_asset_job(
        "all_exports",
        # The GDPR export is per person and needs a user id: it is requested, not batch-run.
        selection=dg.AssetSelection.assets(*export_assets)
        - dg.AssetSelection.groups("user_data_export"),
        description="Extract, transform, render and publish every export type for the chosen "
        "partitions.",
        # Eleven independent types: a process per step lets them use every core.
        executor_def=dg.multiprocess_executor,
    )
    return dg.Definitions(
        assets=[*export_assets, export_statistics],
        jobs=[
            all_exports_job,
            serve_export_request_job,
            serve_export_requests_job,
            expire_exports_job,
            deliver_report_job,
            statistics_job,
        ],
        schedules=[expire_exports_schedule, statistics_schedule, *report_schedules],
        sensors=[
            organizations_sensor,
            export_requests_sensor,
            export_request_failure_sensor,
            report_failure_sensor,
        ],
        resources=default_resources(),
        # A type's four stages run one after another, so a process per step (the default)
        # only adds a code load per step: tens of seconds of a run that does seconds of
        # work. One process per run, for every job that does not choose otherwise.
        executor=dg.in_process_executor,
    )
