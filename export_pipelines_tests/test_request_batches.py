"""Small requests of one organization share a warm run, a step each; one failure fails no other."""

from __future__ import annotations

from collections import Counter

from export_pipelines.cli import main as cli
from export_pipelines.defs.requests import (
    BATCH_TAG,
    ORG_TAG,
    export_request_failure_sensor,
    serve_export_requests_job,
    step_key_for,
)
from export_pipelines.defs.resources import SourceResource

from .conftest import evaluate_failure_sensor, organization_ids
from .test_requests import a_user, env, run, tick  # noqa: F401


def test_one_run_per_organization_serves_its_requests_step_by_step(env, instance):  # noqa: F811
    db, ledger, resources, store_dir = env
    orgs = organization_ids(db)[:2]
    wanted = {}
    for org in orgs:
        user = a_user(db, admin=False, org=org)
        for fmt in ("CSV", "JSON", "PARQUET"):
            wanted[ledger.insert(org, user["id"], "scan_results", fmt)] = org
    refused = ledger.insert(orgs[0], a_user(db, admin=False, org=orgs[0])["id"], "nope", "CSV")

    result = tick(instance, db)
    assert ledger.get(refused)["status"] == "FAILED"
    batches = result.run_requests
    assert [r.job_name for r in batches] == [serve_export_requests_job.name] * 2
    assert Counter(r.tags[ORG_TAG] for r in batches) == Counter(orgs)
    assert {r.tags[BATCH_TAG] for r in batches} == {"3"}

    # One request of the first batch turns invalid after the sensor saw it: its step
    # fails with a sentence, its neighbours are served all the same.
    first = batches[0]
    ids = first.run_config["ops"]["waiting_requests"]["config"]["request_ids"]
    spoiled = ids[1]
    db.execute("UPDATE export_requests SET export_format = 'DOCX' WHERE id = :id", {"id": spoiled})

    outcomes = [run(instance, batch, resources) for batch in batches]
    assert not outcomes[0].success and outcomes[1].success
    step_keys = {e.step_key for e in outcomes[0].all_events if e.event_type_value == "STEP_SUCCESS"}
    assert f"serve_waiting_request[{step_key_for(ids[0])}]" in step_keys
    evaluate_failure_sensor(
        export_request_failure_sensor,
        instance,
        outcomes[0].run_id,
        {"source": SourceResource(url=db.url)},
    )

    for request_id, org in wanted.items():
        row = ledger.get(request_id)
        outcome = outcomes[[b.tags[ORG_TAG] for b in batches].index(org)]
        if request_id == spoiled:
            assert row["status"] == "FAILED"
            assert row["error_message"].startswith("unknown export format")
            continue
        assert row["status"] == "COMPLETED", row["error_message"]
        assert row["run_id"] == outcome.run_id  # traceable to its (shared) run
        actions = db.fetch_table(
            "SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id}
        )
        assert actions.column("action").to_pylist() == ["export.completed"]
    assert cli(["verify", str(store_dir)]) == 0


def test_fifty_mixed_requests_settle_once_each_and_trace_to_their_step(env, instance, monkeypatch):  # noqa: F811
    db, ledger, resources, store_dir = env
    monkeypatch.setenv("EXPORT_REQUESTS_PER_HOUR", "1000")
    kinds = [
        ("scan_results", "CSV", False),
        ("credit_usage_report", "EXCEL", False),
        ("projects_summary", "JSON", False),
        ("generated_content", "JSONL", False),
        ("audit_log_export", "PARQUET", True),
        ("usage_analytics", "XML", True),
        ("user_data_export", "JSON", False),
    ]
    asked = []
    for i in range(50):
        org = organization_ids(db)[i % 3]
        export_type, fmt, admin = kinds[i % len(kinds)]
        user = a_user(db, admin=admin, org=org)
        if i % 10 == 9:
            export_type = "unknown_type"  # refused by the sensor, no run
        asked.append(ledger.insert(org, user["id"], export_type, fmt))

    result = tick(instance, db)
    shared = [r for r in result.run_requests if r.job_name == serve_export_requests_job.name]
    assert len(shared) == 3  # one per organization
    spoiled = shared[0].run_config["ops"]["waiting_requests"]["config"]["request_ids"][0]
    db.execute("UPDATE export_requests SET export_format = 'DOCX' WHERE id = :id", {"id": spoiled})
    outcomes = [run(instance, r, resources) for r in result.run_requests]
    for outcome in outcomes:
        if not outcome.success:
            evaluate_failure_sensor(
                export_request_failure_sensor,
                instance,
                outcome.run_id,
                {"source": SourceResource(url=db.url)},
            )
    steps_by_run = {
        o.run_id: {e.step_key for e in o.all_events if e.event_type_value == "STEP_SUCCESS"}
        for o in outcomes
    }
    statuses = Counter()
    for request_id in asked:
        row = ledger.get(request_id)
        statuses[row["status"]] += 1
        entries = db.fetch_table(
            "SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id}
        ).column("action")
        assert len(entries) == 1, (request_id, entries)  # settled exactly once
        if row["status"] == "COMPLETED":
            steps = steps_by_run[row["run_id"]]
            assert steps & {
                f"serve_waiting_request[{step_key_for(request_id)}]",
                "serve_export_request",
            }
    assert statuses == {"COMPLETED": 44, "FAILED": 6}
    assert ledger.get(spoiled)["status"] == "FAILED"
    assert cli(["verify", str(store_dir)]) == 0
