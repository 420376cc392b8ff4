"""On-demand requests: a row in export_requests, served by the sensor and a real run."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from export_pipelines.defs.expiry import expire_exports_job
from export_pipelines.defs.requests import (
    REQUEST_TAG,
    export_request_failure_sensor,
    export_requests_sensor,
    serve_export_request_job,
    serve_export_requests_job,
)
from export_pipelines.defs.resources import SourceResource
from export_pipelines.requests.ledger import RequestLedger

from .conftest import DEMO, evaluate_failure_sensor, export_resources, organization_ids

FIRST_DAY = DEMO.end_date - dt.timedelta(days=DEMO.days)
LAST_DAY = DEMO.end_date - dt.timedelta(days=1)


@pytest.fixture
def env(sqlite_source, tmp_path, monkeypatch):
    """A ledger with the seed's pending requests already handled, and the resources."""
    # The demo's own PENDING rows are served elsewhere; start from a clean ledger here.
    sqlite_source.execute("DELETE FROM export_requests")
    resources = export_resources(sqlite_source, tmp_path / "exports", tmp_path / "work")
    return sqlite_source, RequestLedger(sqlite_source), resources, tmp_path / "exports"


def a_user(db, admin: bool, org: str | None = None) -> dict:
    org = org or organization_ids(db)[0]
    rows = db.fetch_rows(
        "SELECT id, organization_id FROM users WHERE organization_id = :org AND is_admin = :admin "
        "ORDER BY id",
        {"org": org, "admin": admin},
    )
    return rows[0]


def tick(instance, db, cursor=None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"source": SourceResource(url=db.url)}
    ) as context:
        return export_requests_sensor(context)


def run(instance, run_request, resources):
    job = (
        serve_export_requests_job
        if run_request.job_name == serve_export_requests_job.name
        else serve_export_request_job
    )
    return job.execute_in_process(
        run_config=run_request.run_config,
        tags=run_request.tags,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def sql_count(db, org, first, last, project_ids=None):
    sql = (
        "SELECT count(*) FROM scan_results s JOIN audits a ON a.id = s.audit_id "
        "JOIN projects p ON p.id = a.project_id WHERE p.organization_id = :org "
        "AND s.created_at >= :start AND s.created_at < :end"
    )
    params = {
        "org": org,
        "start": dt.datetime.combine(first, dt.time()),
        "end": dt.datetime.combine(last + dt.timedelta(days=1), dt.time()),
    }
    if project_ids:
        sql += " AND p.id IN (" + ", ".join(f":p{i}" for i in range(len(project_ids))) + ")"
        params.update({f"p{i}": p for i, p in enumerate(project_ids)})
    return db.scalar(sql, params)


def test_valid_request_is_served_once_and_written_back(env, instance):
    db, ledger, resources, store_dir = env
    user = a_user(db, admin=False)
    org = user["organization_id"]
    project = db.scalar(
        "SELECT id FROM projects WHERE organization_id = :org ORDER BY id", {"org": org}
    )
    request_id = ledger.insert(
        org,
        user["id"],
        "SCAN_RESULTS",
        "CSV",
        filters={
            "date_from": FIRST_DAY.isoformat(),
            "date_to": LAST_DAY.isoformat(),
            "project_ids": [project],
        },
        parameters={
            "delimiter": ";",
            "columns": ["scan_id", "project_id", "dcs_score", "scanned_at", "organization_id"],
        },
    )

    result = tick(instance, db)
    assert [r.run_key for r in result.run_requests] == [request_id]
    assert result.run_requests[0].tags[REQUEST_TAG] == request_id

    again = tick(instance, db, cursor=result.cursor)
    assert isinstance(again, dg.SkipReason), "a second tick must not launch the request again"

    outcome = run(instance, result.run_requests[0], resources)
    assert outcome.success

    row = ledger.get(request_id)
    assert row["status"] == "COMPLETED" and row["progress_percentage"] == 100
    assert row["run_id"] == outcome.run_id
    for field in ("started_at", "completed_at", "expires_at", "file_path", "checksum_sha256"):
        assert row[field], field
    path = Path(row["file_path"])
    data = path.read_bytes()
    assert row["file_size"] == len(data)
    assert row["checksum_sha256"] == hashlib.sha256(data).hexdigest()
    assert path.parent == store_dir / "requests" / request_id

    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=";"))
    expected = sql_count(db, org, FIRST_DAY, LAST_DAY, [project])
    assert expected > 0
    assert len(rows) == row["row_count"] == expected
    assert set(rows[0]) == {"scan_id", "project_id", "dcs_score", "scanned_at", "organization_id"}
    assert {r["project_id"] for r in rows} == {project}

    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["request_id"] == request_id and manifest["row_count"] == expected
    audit = db.fetch_rows(
        "SELECT action, actor_user_id FROM audit_log WHERE target_id = :id", {"id": request_id}
    )
    assert audit == [{"action": "export.completed", "actor_user_id": user["id"]}]


REJECTIONS = [
    ("unknown type", {"export_type": "everything"}, "unknown export type"),
    ("unknown format", {"export_format": "DOCX"}, "unknown export format"),
    ("admin only", {"export_type": "audit_log_export"}, "admins only"),
    ("bad filter name", {"filters": {"since": "2026-03-01"}}, "unknown filter since"),
    ("bad date", {"filters": {"date_from": "March 1st"}}, "date_from must be a date"),
    (
        "reversed range",
        {"filters": {"date_from": "2026-03-04", "date_to": "2026-03-01"}},
        "is after date_to",
    ),
    ("future", {"filters": {"date_to": "2999-01-01"}}, "in the future"),
    (
        "foreign project",
        {"filters": {"project_ids": ["not-a-project-of-ours"]}},
        "not found in this organization",
    ),
    ("bad parameters", {"parameters": {"delimiter": ";;"}}, "delimiter must be one character"),
    ("unknown column", {"parameters": {"columns": ["password"]}}, "unknown column password"),
    ("malformed json", {"filters": "{not json"}, "filters is not valid JSON"),
]


@pytest.mark.parametrize("case,change,message", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_invalid_requests_are_rejected_with_a_reason_and_no_run(
    env, instance, case, change, message
):
    db, ledger, resources, _ = env
    user = a_user(db, admin=False)
    fields = {
        "export_type": "scan_results",
        "export_format": "CSV",
        "filters": None,
        "parameters": None,
    }
    fields.update(change)
    if case == "admin only" and "audit_log_export" not in _catalog():
        pytest.skip("audit_log_export is not in the catalog yet")
    request_id = ledger.insert(
        user["organization_id"], user["id"], fields["export_type"], fields["export_format"]
    )
    for column in ("filters", "parameters"):
        if fields[column] is not None:
            raw = fields[column] if isinstance(fields[column], str) else json.dumps(fields[column])
            db.execute(
                f"UPDATE export_requests SET {column} = :v WHERE id = :id",
                {"v": raw, "id": request_id},
            )
    good_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "JSON")

    result = tick(instance, db)
    assert [r.run_key for r in result.run_requests] == [good_id], (
        "the valid request is still served"
    )
    row = ledger.get(request_id)
    assert row["status"] == "FAILED"
    assert message in row["error_message"]
    audit = db.fetch_rows("SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id})
    assert audit == [{"action": "export.failed"}]


def _catalog():
    from export_pipelines.catalog import CATALOG

    return CATALOG


def test_user_of_another_organization_and_unknown_user_are_rejected(env, instance):
    db, ledger, _, _ = env
    orgs = organization_ids(db)
    outsider = a_user(db, admin=True, org=orgs[1])
    foreign = ledger.insert(orgs[0], outsider["id"], "scan_results", "CSV")
    ghost = ledger.insert(orgs[0], "no-such-user", "scan_results", "CSV")
    tick(instance, db)
    assert "is not a member of organization" in ledger.get(foreign)["error_message"]
    assert "does not exist" in ledger.get(ghost)["error_message"]


def test_size_limit_and_rate_limit(env, instance, monkeypatch):
    db, ledger, _, _ = env
    user = a_user(db, admin=False)
    monkeypatch.setenv("EXPORT_MAX_REQUEST_BYTES", "1000")
    big = ledger.insert(
        user["organization_id"],
        user["id"],
        "scan_results",
        "CSV",
        filters={"date_from": FIRST_DAY.isoformat(), "date_to": LAST_DAY.isoformat()},
    )
    result = tick(instance, db)
    message = ledger.get(big)["error_message"]
    assert "exceeds the limit" in message and "rows" in message

    monkeypatch.delenv("EXPORT_MAX_REQUEST_BYTES")
    monkeypatch.setenv("EXPORT_REQUESTS_PER_HOUR", "2")
    ids = [
        ledger.insert(user["organization_id"], user["id"], "credit_usage_report", "JSON")
        for _ in range(2)
    ]
    result = tick(instance, db, cursor=result.cursor)
    statuses = [ledger.get(i)["status"] for i in ids]
    # The big request counts too: the second of these is the user's third in the hour.
    assert statuses == ["PENDING", "FAILED"]
    assert "rate limit" in ledger.get(ids[1])["error_message"]
    assert [r.run_key for r in result.run_requests] == [ids[0]]


def test_failed_run_marks_request_failed_with_retries(env, instance, tmp_path):
    db, ledger, resources, _ = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    run_request = tick(instance, db).run_requests[0]

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    broken = export_resources(db, blocker, tmp_path / "work")
    outcome = run(instance, run_request, broken)
    assert not outcome.success

    evaluate_failure_sensor(
        export_request_failure_sensor,
        instance,
        outcome.run_id,
        {"source": SourceResource(url=db.url)},
    )
    row = ledger.get(request_id)
    assert row["status"] == "FAILED"
    assert row["retry_count"] == 2
    # A person reads a sentence; the technical detail stays in the run's log.
    assert row["error_message"].startswith("The export could not be written to the store")
    assert "NotADirectoryError" not in row["error_message"]
    assert "not-a-folder" not in row["error_message"]
    assert outcome.run_id in row["error_message"]
    logged = " ".join(
        str(e.dagster_event.step_failure_data.error.to_string())
        for e in instance.all_logs(outcome.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    )
    assert "NotADirectoryError" in logged and "not-a-folder" in logged
    actions = db.fetch_table(
        "SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id}
    )
    assert actions.column("action").to_pylist() == ["export.failed"]


def test_expiry_deletes_files_and_marks_expired(env, instance):
    db, ledger, resources, store_dir = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(user["organization_id"], user["id"], "credit_usage_report", "JSON")
    assert run(instance, tick(instance, db).run_requests[0], resources).success
    folder = store_dir / "requests" / request_id
    assert (folder / "manifest.json").exists()

    db.execute(
        "UPDATE export_requests SET expires_at = :past WHERE id = :id",
        {"past": dt.datetime(2020, 1, 1), "id": request_id},
    )
    result = expire_exports_job.execute_in_process(instance=instance, resources=resources)
    assert result.success
    assert ledger.get(request_id)["status"] == "EXPIRED"
    assert not any(folder.glob("*"))


def test_export_statistics_summarise_the_ledger(env, instance):
    from export_pipelines.defs.statistics import export_statistics, export_statistics_table

    db, ledger, resources, _ = env
    user = a_user(db, admin=False)
    served = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    ledger.insert(user["organization_id"], user["id"], "nonsense", "CSV")
    result = tick(instance, db)
    assert run(instance, result.run_requests[0], resources).success

    table = export_statistics_table(db.fetch_table("SELECT * FROM export_requests").to_pandas())
    completed = table[table["status"] == "COMPLETED"].iloc[0]
    assert completed["requests"] == 1 and completed["export_type"] == "scan_results"
    assert completed["bytes_delivered"] == ledger.get(served)["file_size"]
    assert completed["latency_median_s"] >= 0
    assert table.loc[table["status"] == "FAILED", "requests"].sum() == 1

    outcome = dg.materialize([export_statistics], instance=instance, resources=resources)
    metadata = outcome.asset_materializations_for_node("operations__export_statistics")[0].metadata
    assert metadata["completed"].value == 1 and metadata["failed"].value == 1


HOSTILE_VALUES = ["'; DROP TABLE users; --", "%", "_%' OR '1'='1", "Ωmega-组织-🚀", "x" * 10_000]


def test_hostile_filter_values_are_refused_as_values(env, instance):
    """Quotes, SQL, wildcards, unicode and huge strings: refused cleanly, nothing else harmed."""
    db, ledger, _, _ = env
    user = a_user(db, admin=False)
    org = user["organization_id"]
    users_before = db.scalar("SELECT count(*) FROM users")
    ids = []
    for value in HOSTILE_VALUES:
        ids.append(
            ledger.insert(org, user["id"], "scan_results", "CSV", filters={"project_ids": [value]})
        )
        ids.append(
            ledger.insert(org, user["id"], "scan_results", "CSV", filters={"date_from": value})
        )
    good = ledger.insert(org, user["id"], "scan_results", "CSV")
    result = tick(instance, db)
    assert [r.run_key for r in result.run_requests] == [good]
    for request_id in ids:
        row = ledger.get(request_id)
        assert row["status"] == "FAILED"
        assert (
            "not found in this organization" in row["error_message"]
            or "must be a date" in row["error_message"]
        )
    assert db.scalar("SELECT count(*) FROM users") == users_before
    # A project id that *is* in the organization still works next to the hostile ones.
    project = db.scalar(
        "SELECT id FROM projects WHERE organization_id = :org ORDER BY id", {"org": org}
    )
    mixed = ledger.insert(
        org, user["id"], "scan_results", "CSV", filters={"project_ids": [project, "%"]}
    )
    tick(instance, db, cursor=result.cursor)
    assert "%" in ledger.get(mixed)["error_message"]
    huge = ledger.get(ids[-2])["error_message"]
    assert len(huge) <= 2000, "a huge hostile value is not echoed back whole"


def started_run(instance, run_request, pid: int):
    """A run as the default launcher leaves it: STARTED, its worker's pid on record."""
    from dagster._core.events import EngineEventData

    run = instance.create_run_for_job(
        serve_export_request_job, run_config=run_request.run_config, tags=run_request.tags
    )
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value,
            job_name=run.job_name,
            message="started",
        ),
    )
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    return run


@pytest.mark.parametrize("died", ["before it started the request", "while processing"])
def test_a_run_whose_worker_died_ends_the_request_as_failed(env, instance, died):
    """The worker process is gone (killed, out of memory) while the run says STARTED."""
    import subprocess

    db, ledger, _, _ = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs anything
    run = started_run(instance, tick(instance, db).run_requests[0], dead.pid)
    if died == "while processing":
        ledger.start(request_id, run.run_id, attempt=0)

    result = tick(instance, db)  # the sensor's next tick notices
    assert not isinstance(result, dg.SkipReason)
    row = ledger.get(request_id)
    assert row["status"] == "FAILED"
    assert f"pid {dead.pid}" in row["error_message"] and "exited" in row["error_message"]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE

    alive = ledger.insert(user["organization_id"], user["id"], "credit_usage_report", "CSV")
    live_run = started_run(instance, tick(instance, db).run_requests[0], os.getpid())
    ledger.start(alive, live_run.run_id, attempt=0)
    tick(instance, db)
    assert ledger.get(alive)["status"] == "PROCESSING", "a live worker is left alone"
