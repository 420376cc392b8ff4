"""A run that fails before serving its requests (it could not be launched) loses none of them:
each is offered again in a new run, up to `MAX_LAUNCHES` launches, then fails with a sentence."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from export_pipelines.cli import main as cli
from export_pipelines.defs import requests as request_defs
from export_pipelines.defs.requests import (
    MAX_LAUNCHES,
    export_request_failure_sensor,
    serve_export_request_job,
    serve_export_requests_job,
)
from export_pipelines.defs.resources import SourceResource

from .conftest import evaluate_failure_sensor, organization_ids
from .test_requests import a_user, env, run, tick  # noqa: F401


def _ids(run_request: dg.RunRequest) -> list[str]:
    ops = run_request.run_config["ops"]
    if "waiting_requests" in ops:
        return ops["waiting_requests"]["config"]["request_ids"]
    return [ops["serve_export_request"]["config"]["request_id"]]


def failed_launch(instance: dg.DagsterInstance, run_request: dg.RunRequest) -> str:
    """The run as the daemon submits it, then failed as its dequeuer fails a run it could
    not launch (`report_run_failed`): no step ever runs."""
    job = (
        serve_export_requests_job
        if run_request.job_name == serve_export_requests_job.name
        else serve_export_request_job
    )
    created = instance.create_run_for_job(
        job,
        run_config=run_request.run_config,
        tags={**run_request.tags, RUN_KEY_TAG: run_request.run_key},
    )
    instance.report_run_failed(created, message="the run could not be launched")
    return created.run_id


def settle_failure(instance, db, run_id):
    evaluate_failure_sensor(
        export_request_failure_sensor, instance, run_id, {"source": SourceResource(url=db.url)}
    )


def audit_actions(db, request_id):
    return (
        db.fetch_table("SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id})
        .column("action")
        .to_pylist()
    )


def test_requests_of_a_run_that_failed_to_launch_are_served_by_a_new_run(env, instance):  # noqa: F811
    db, ledger, resources, store_dir = env
    first, second = organization_ids(db)[:2]
    shared = [
        ledger.insert(first, a_user(db, admin=False, org=first)["id"], "scan_results", fmt)
        for fmt in ("CSV", "JSON", "PARQUET")
    ]
    alone = ledger.insert(second, a_user(db, admin=False, org=second)["id"], "scan_results", "CSV")

    launched = tick(instance, db).run_requests
    assert sorted(len(_ids(r)) for r in launched) == [1, 3]
    for run_request in launched:
        settle_failure(instance, db, failed_launch(instance, run_request))
    for request_id in [*shared, alone]:
        row = ledger.get(request_id)
        assert (row["status"], row["started_at"], row["retry_count"]) == ("PENDING", None, 1)
        assert audit_actions(db, request_id) == []

    again = tick(instance, db).run_requests  # the reconciler in it fails none of them
    assert sorted(sorted(_ids(r)) for r in again) == sorted(sorted(_ids(r)) for r in launched)
    assert not {r.run_key for r in again} & {r.run_key for r in launched}  # new runs
    outcomes = [run(instance, r, resources) for r in again]
    assert all(o.success for o in outcomes)
    served_by = {i: o.run_id for r, o in zip(again, outcomes) for i in _ids(r)}
    for request_id in [*shared, alone]:
        row = ledger.get(request_id)
        assert row["status"] == "COMPLETED", row["error_message"]
        assert row["run_id"] == served_by[request_id]
        assert audit_actions(db, request_id) == ["export.completed"]
    assert cli(["verify", str(store_dir)]) == 0


def test_a_request_that_never_launches_fails_after_its_last_launch_with_a_sentence(env, instance):  # noqa: F811
    db, ledger, _, _ = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    keys = []
    for _ in range(MAX_LAUNCHES):
        (run_request,) = tick(instance, db).run_requests
        keys.append(run_request.run_key)
        run_id = failed_launch(instance, run_request)
        settle_failure(instance, db, run_id)
    assert len(set(keys)) == MAX_LAUNCHES
    row = ledger.get(request_id)
    assert row["status"] == "FAILED"
    assert row["error_message"] == (
        f"The export could not be started in {MAX_LAUNCHES} attempts; the data team can see "
        f"why in the log of run {run_id}."
    )
    assert audit_actions(db, request_id) == ["export.failed"]
    assert isinstance(tick(instance, db), dg.SkipReason)  # nothing left to launch


def test_a_request_whose_step_failed_is_not_launched_again(env, instance):  # noqa: F811
    """A step that ran and failed is a real failure: FAILED once, with its sentence."""
    db, ledger, resources, _ = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    (run_request,) = tick(instance, db).run_requests
    db.execute(
        "UPDATE export_requests SET export_format = 'DOCX' WHERE id = :id", {"id": request_id}
    )
    outcome = run(instance, run_request, resources)
    assert not outcome.success
    settle_failure(instance, db, outcome.run_id)
    row = ledger.get(request_id)
    assert row["status"] == "FAILED" and row["error_message"].startswith("unknown export format")
    assert audit_actions(db, request_id) == ["export.failed"]
    assert isinstance(tick(instance, db), dg.SkipReason)


def test_the_reconciler_fails_a_failed_run_the_failure_sensor_missed(env, instance, monkeypatch):  # noqa: F811
    """The safety net: a failed run's request left PENDING ends FAILED after the grace period
    the failure sensor has to offer it again, and not before."""
    db, ledger, _, _ = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    (run_request,) = tick(instance, db).run_requests
    run_id = failed_launch(instance, run_request)  # and no failure sensor ran
    tick(instance, db)
    assert ledger.get(request_id)["status"] == "PENDING"
    monkeypatch.setattr(request_defs, "FAILURE_GRACE_S", 0)
    tick(instance, db)
    row = ledger.get(request_id)
    assert row["status"] == "FAILED" and run_id in row["error_message"]
    assert audit_actions(db, request_id) == ["export.failed"]
