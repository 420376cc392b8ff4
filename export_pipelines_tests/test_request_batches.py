"""Small requests of one organization share a warm run, a step each; one failure fails no other."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pytest

from export_pipelines.cli import main as cli
from export_pipelines.defs.requests import (
    BATCH_TAG,
    ORG_TAG,
    export_request_failure_sensor,
    serve_export_requests_job,
    step_key_for,
)
from export_pipelines.defs.resources import SourceResource
from export_pipelines.requests.ledger import RequestLedger
from export_pipelines.source.database import SourceDatabase

from .conftest import evaluate_failure_sensor, organization_ids, scratch_postgres_database, seed
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


@pytest.fixture(params=["sqlite", "postgresql"])
def own_source(request, tmp_path) -> Iterator[SourceDatabase]:
    """The demo data on each engine, in a database this test alone writes to."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_source")
        return
    with scratch_postgres_database() as url:  # fails in CI without PostgreSQL
        db = seed(SourceDatabase(url))
        yield db
        db.close()


def test_a_tick_costs_statements_per_organization_not_per_row(own_source, instance, monkeypatch):
    """Validation is set-based: 5x the rows over the same organizations, the same statements.

    Every statement goes through `SourceDatabase.bind` (the one place `:name` parameters
    become the engine's); counting its calls counts what a tick asks the database.
    """
    db = own_source
    db.execute("DELETE FROM export_requests")
    monkeypatch.setenv("EXPORT_REQUESTS_PER_HOUR", "100000")
    ledger = RequestLedger(db)
    orgs = organization_ids(db)
    members = {org: a_user(db, admin=False, org=org)["id"] for org in orgs}
    statements: list[str] = []
    bind = SourceDatabase.bind

    def counted(self, sql, params):
        statements.append(sql)
        return bind(self, sql, params)

    def tick_over(count: int) -> tuple[int, dg.SensorResult, list[str], list[str]]:
        asked, refused = [], []
        for i in range(count):
            org = orgs[i % len(orgs)]
            export_type = (
                "no_such_export" if i % 10 == 9 else ("scan_results", "credit_usage_report")[i % 2]
            )
            (refused if i % 10 == 9 else asked).append(
                ledger.insert(org, members[org], export_type, "CSV")
            )
        statements.clear()
        with monkeypatch.context() as patch:
            patch.setattr(SourceDatabase, "bind", counted)
            result = tick(instance, db)
        return len(statements), result, asked, refused

    few, _, _, _ = tick_over(20)
    many, result, asked, refused = tick_over(100)

    assert many == few, f"{few} statements for 20 rows, {many} for 100"
    assert many <= 12, statements  # claim (2), reconcile (1), users, estimates, rate, reject (2)
    # One shared run per organization, serving every valid row of the tick.
    assert Counter(r.tags[ORG_TAG] for r in result.run_requests) == Counter(orgs)
    served = [
        i
        for r in result.run_requests
        for i in r.run_config["ops"]["waiting_requests"]["config"]["request_ids"]
    ]
    assert sorted(served) == sorted(asked)
    for request_id in refused:
        row = ledger.get(request_id)
        assert row["status"] == "FAILED" and row["error_message"].startswith("unknown export type")
        actions = db.fetch_table(
            "SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id}
        )
        assert actions.column("action").to_pylist() == ["export.failed"]
