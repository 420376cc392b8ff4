"""The README's main command, for real: `make dev` serves the UI and its daemon serves requests."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest

from .dev_server import ASSET_QUERY, ROOT, graphql
from .dev_server import dagster_dev as running_dagster_dev

pytestmark = pytest.mark.slow

PARTITIONS_QUERY = """
query { assetNodeOrError(assetKey: {path: ["scan_results", "extract"]}) {
  ... on AssetNode { partitionKeysByDimension { name partitionKeys } } } }
"""


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    with running_dagster_dev(tmp_path_factory.mktemp("dev")) as server:
        yield server


def test_ui_shows_both_export_groups_and_organization_partitions(dagster_dev):
    from export_pipelines.source.database import SourceDatabase

    nodes = graphql(dagster_dev["port"], ASSET_QUERY)["assetNodes"]
    groups = {n["groupName"] for n in nodes}
    assert {"scan_results", "credit_usage_report"} <= groups
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    for stage in ("extract", "transform", "render", "publish"):
        assert f"scan_results/{stage}" in keys

    dimensions = graphql(dagster_dev["port"], PARTITIONS_QUERY)["assetNodeOrError"][
        "partitionKeysByDimension"
    ]
    org_keys = next(d["partitionKeys"] for d in dimensions if d["name"] == "org")
    db = SourceDatabase(f"sqlite:///{dagster_dev['base'] / 'data' / 'source.db'}")
    orgs = db.fetch_table("SELECT id FROM organizations").column("id").to_pylist()
    assert orgs and sorted(org_keys) == sorted(orgs)


def test_request_inserted_with_the_cli_is_completed_by_the_daemon(dagster_dev):
    env = dagster_dev["env"]
    cli = str(ROOT / ".venv" / "bin" / "export-pipelines")
    from export_pipelines.source.database import SourceDatabase

    db = SourceDatabase(f"sqlite:///{dagster_dev['base'] / 'data' / 'source.db'}")
    user = db.fetch_rows("SELECT id, organization_id FROM users ORDER BY id LIMIT 1")[0]
    yesterday = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    request_id = subprocess.run(
        [
            cli,
            "request",
            "--org",
            user["organization_id"],
            "--user",
            user["id"],
            "--type",
            "scan_results",
            "--format",
            "CSV",
            "--date-from",
            yesterday,
            "--date-to",
            yesterday,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    deadline = time.monotonic() + 240
    status = ""
    while time.monotonic() < deadline:
        out = subprocess.run(
            [cli, "status", request_id], env=env, capture_output=True, text=True
        ).stdout
        status = next(
            (line.split()[1] for line in out.splitlines() if line.startswith("status ")), ""
        )
        if status in ("COMPLETED", "FAILED"):
            break
        time.sleep(3)
    assert status == "COMPLETED", out
    row = db.fetch_rows(
        "SELECT file_path, row_count FROM export_requests WHERE id = :id", {"id": request_id}
    )[0]
    assert Path(row["file_path"]).is_file()


BACKFILL_MUTATION = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
BACKFILL_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status } }
  }
}
"""


def test_ui_backfill_of_one_organization_batches_days_into_few_runs(dagster_dev):
    """What the UI's "Launch backfill" does, through the same GraphQL, served by the daemon."""
    from export_pipelines.source.database import SourceDatabase

    db = SourceDatabase(f"sqlite:///{dagster_dev['base'] / 'data' / 'source.db'}")
    org = db.fetch_table("SELECT id FROM organizations ORDER BY id").column("id")[0].as_py()
    today = dt.datetime.now(dt.timezone.utc).date()
    first, last = today - dt.timedelta(days=20), today - dt.timedelta(days=1)
    selection = [
        {
            "assetKey": {"path": ["audit_log_export", stage]},
            "partitions": {"ranges": [{"start": f"{first}|{org}", "end": f"{last}|{org}"}]},
        }
        for stage in ("extract", "transform", "render", "publish")
    ]
    launched = graphql(
        dagster_dev["port"], BACKFILL_MUTATION, {"params": {"partitionsByAssets": selection}}
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = graphql(dagster_dev["port"], BACKFILL_STATUS, {"id": backfill_id})
        status = state["partitionBackfillOrError"]["status"]
        if status in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED", "COMPLETED_FAILED", "CANCELED"):
            break
        time.sleep(3)
    runs = state["runsOrError"]["results"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(r["status"] == "SUCCESS" for r in runs)
    assert len(runs) <= 2, f"20 days of one organization took {len(runs)} runs"

    store = dagster_dev["base"] / "exports" / "audit_log_export"
    folders = sorted(p.parent.name for p in store.rglob("manifest.json"))
    assert folders == [f"date={first + dt.timedelta(days=i)}" for i in range(20)]
    assert {p.parent.parent.name for p in store.rglob("manifest.json")} == {f"org={org}"}


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = "query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def _materialize_all(port: int, group: str, org: str, day: str) -> str:
    """What the UI's "Materialize all" launches for a group and one partition."""
    params = {
        "selector": {
            "repositoryLocationName": "export_pipelines",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [
                {"path": [group, stage]} for stage in ("extract", "transform", "render", "publish")
            ],
        },
        "executionMetadata": {
            "tags": [
                {"key": "dagster/partition", "value": f"{day}|{org}"},
                {"key": "dagster/partition/date", "value": day},
                {"key": "dagster/partition/org", "value": org},
            ]
        },
    }
    launched = graphql(port, LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    return status


def test_the_readmes_first_steps_work_as_written(dagster_dev):
    """README step 2 (the group → Materialize all, one organization and day), then step 4
    (the folder, then `export-pipelines verify exports`) — with the names `orgs` lists."""
    readme = (ROOT / "README.md").read_text()
    step2 = readme[readme.index("2. Open the `scan_results` group") : readme.index("3. Watch")]
    assert "**Materialize all**" in step2 and "export-pipelines orgs" in step2
    env = dagster_dev["env"]
    cli = str(ROOT / ".venv" / "bin" / "export-pipelines")
    orgs = subprocess.run([cli, "orgs"], env=env, capture_output=True, text=True, check=True)
    org, name = orgs.stdout.splitlines()[1].split(None, 1)[0], "Acme Analytics"
    assert name in orgs.stdout
    day = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=2)).isoformat()

    assert _materialize_all(dagster_dev["port"], "scan_results", org, day) == "SUCCESS"

    folder = dagster_dev["base"] / "exports" / "scan_results" / f"org={org}" / f"date={day}"
    assert (folder / "manifest.json").is_file()
    verified = subprocess.run(
        [cli, "verify", str(dagster_dev["base"] / "exports")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and verified.stdout.startswith("OK: "), verified


def test_the_dev_log_over_runs_has_no_beta_or_preview_warnings(dagster_dev):
    """`make dev`'s own log — webserver, daemon, code server and the run workers they
    start — after the runs above: the known beta warnings are silenced in one place."""
    log = (dagster_dev["base"] / "dev.log").read_text(errors="replace")
    assert "Serving dagster-webserver" in log or "dagster-webserver" in log
    for warning in ("BetaWarning", "PreviewWarning", "SupersessionWarning"):
        assert warning not in log, log[log.index(warning) - 500 : log.index(warning) + 300]
