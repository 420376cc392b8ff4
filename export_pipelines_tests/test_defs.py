"""The code location's shape, as a snapshot: a renamed asset, check, job or schedule fails here.

Deployments, schedules' run history, sensors' cursors and the UI all address definitions by
name, so a rename is a breaking change and must be made on purpose: update the literals
below in the same change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

from export_pipelines.catalog import SPECS, Kind
from export_pipelines.definitions import defs

PACKAGE = Path(__file__).resolve().parents[1] / "export_pipelines"

# docs/CONTRACT.md §3, in catalog order.
EXPORT_TYPES = (
    "projects_summary",
    "project_detailed",
    "scan_results",
    "scan_history",
    "generated_content",
    "content_analytics",
    "usage_analytics",
    "credit_usage_report",
    "audit_log_export",
    "user_data_export",
    "organization_bundle",
)
# The bundles (GDPR, organization) hold no table of their own: no tenant or manifest check.
TABLE_TYPES = (
    "projects_summary",
    "project_detailed",
    "scan_results",
    "scan_history",
    "generated_content",
    "content_analytics",
    "usage_analytics",
    "credit_usage_report",
    "audit_log_export",
)
STAGES = ("extract", "transform", "render", "publish")

EXPECTED_ASSETS = {f"{t}/{stage}" for t in EXPORT_TYPES for stage in STAGES} | {
    "operations/export_statistics"
}
EXPECTED_CHECKS = {(f"{t}/transform", "tenant_isolation") for t in TABLE_TYPES} | {
    (f"{t}/publish", "manifest_verifies") for t in TABLE_TYPES
}
EXPECTED_JOBS = {
    "all_exports",
    "deliver_report_job",
    "expire_exports_job",
    "export_statistics_job",
    "serve_export_request_job",
    "serve_export_requests_job",
}
# name: (cron, timezone, default status)
EXPECTED_SCHEDULES = {
    "daily_reports": ("0 6 * * *", "UTC", "RUNNING"),
    "weekly_reports": ("0 6 * * 1", "UTC", "RUNNING"),
    "monthly_reports": ("0 6 1 * *", "UTC", "RUNNING"),
    "expire_exports_job_schedule": ("15 * * * *", "UTC", "RUNNING"),
    "export_statistics_job_schedule": ("45 * * * *", "UTC", "RUNNING"),
}
# name: default status (the daemon runs them all without anyone switching them on)
EXPECTED_SENSORS = {
    "organizations_sensor": "RUNNING",
    "export_requests_sensor": "RUNNING",
    "export_request_failure_sensor": "RUNNING",
    "report_failure_sensor": "RUNNING",
}
EXPECTED_RESOURCES = {"source", "store", "work", "s3"}

# The Dagster layer; everything else is the core, which imports no Dagster (CONTRACT §1).
DAGSTER_LAYER = ("export_pipelines.defs", "export_pipelines.definitions", "export_pipelines.cli")


def test_the_catalog_is_the_one_this_snapshot_knows():
    assert tuple(spec.key for spec in SPECS) == EXPORT_TYPES
    assert tuple(spec.key for spec in SPECS if spec.kind == Kind.TABLE) == TABLE_TYPES


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    # Building every job resolves its selection, partitions and resource requirements.
    assert {job.name for job in repository.get_all_jobs()} >= EXPECTED_JOBS
    repository.load_all_definitions()


def test_definitions_snapshot():
    repository = defs.get_repository_def()
    graph = repository.asset_graph

    assets = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert sorted(assets) == sorted(EXPECTED_ASSETS)

    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert sorted(checks) == sorted(EXPECTED_CHECKS)

    # Dagster's implicit jobs (`__ASSET_JOB…`) are not ours to name.
    jobs = {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert sorted(jobs) == sorted(EXPECTED_JOBS)

    schedules = {
        s.name: (s.cron_schedule, s.execution_timezone, s.default_status.value)
        for s in repository.schedule_defs
    }
    assert schedules == EXPECTED_SCHEDULES

    sensors = {s.name: s.default_status.value for s in repository.sensor_defs}
    assert sensors == EXPECTED_SENSORS

    assert set(defs.resources) == EXPECTED_RESOURCES


def core_modules() -> list[str]:
    """Every module of the package outside the Dagster layer, found on disk (not by import)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if not any(name == layer or name.startswith(layer + ".") for layer in DAGSTER_LAYER):
            names.append(name)
    return names


# Imports each module in turn; reports the first one after which Dagster is loaded.
_PROBE = """
import importlib, json, sys
def dagster_loaded():
    return sorted(m for m in sys.modules if m == "dagster" or m.startswith(("dagster.", "dagster_")))
culprit = None
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    if culprit is None and dagster_loaded():
        culprit = name
print(json.dumps({"culprit": culprit, "loaded": dagster_loaded()[:5]}))
"""


def test_the_core_imports_no_dagster():
    modules = core_modules()
    assert "export_pipelines.settings" in modules and "export_pipelines.source.database" in modules
    assert not any(m.startswith("export_pipelines.defs") for m in modules)
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PACKAGE.parent,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["culprit"] is None, (
        f"importing {result['culprit']} loads Dagster ({result['loaded']}); the core must not"
    )


def test_run_worker_imports():
    """Every run worker (and code server) loads these definitions before its run starts: they
    import no library only some assets use (pandas alone cost every run ~0.4 s)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, export_pipelines.definitions; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(probe.stdout.replace("'", '"')))
    assert "dagster" in loaded  # the probe saw the definitions load
    assert not loaded & {"pandas", "polars", "reportlab", "openpyxl", "xlsxwriter", "lxml"}
