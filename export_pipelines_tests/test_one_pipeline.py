"""The one deliverable pipeline, end to end through Dagster with a real instance.

- a report whose owner lost the right to it is delivered to no one, fails with one
  sentence, and the owner is told by email (real SMTP, aiosmtpd);
- prepared days are reused only when provably current: on PostgreSQL an unchanged day is
  reused and a changed one (insert, update, delete) rebuilt; on SQLite every day is rebuilt;
- a changed code version rebuilds the day;
- the organization bundle has one manifest shape, as an asset and as a request.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import re
import uuid
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from export_pipelines.catalog import CATALOG, SPECS
from export_pipelines.defs.exports import all_export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.defs.reports import (
    SUBSCRIPTION_TAG,
    deliver_report_job,
    report_failure_sensor,
    report_schedules,
)
from export_pipelines.defs.requests import export_requests_sensor, serve_export_request_job
from export_pipelines.defs.resources import SourceResource
from export_pipelines.delivery.email import day_for_people
from export_pipelines.pipeline import prepare
from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.pipeline.prepare import code_version, prepare_days
from export_pipelines.pipeline.workarea import CURRENT, WorkArea
from export_pipelines.requests.ledger import RequestLedger
from export_pipelines.source.database import SourceDatabase

from .conftest import (
    DEMO_DAY,
    evaluate_failure_sensor,
    export_resources,
    organization_ids,
    scratch_postgres_database,
    seed,
)
from .smtp_server import SmtpServer

# The daily schedule at this tick delivers the period 2026-03-04 (the demo's last full day).
TICK = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.timezone.utc)
REPORT_DAY = dt.date(2026, 3, 4)
DAILY = next(s for s in report_schedules if s.name == "daily_reports")
# A request over two past days; the second one is changed in the source between requests.
KEPT_DAY, CHANGED_DAY = dt.date(2026, 3, 2), dt.date(2026, 3, 3)

CLASS_NAMES = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception|Rejected|Failure)\b")
TECHNICAL = ("Traceback", 'File "', "dagster._", "Failure:", "RequestRejected", "\n")
BUILT_REUSED = re.compile(r"\((\d+) day\(s\) built, (\d+) reused\)")


# -- shared helpers ----------------------------------------------------------------------


@pytest.fixture
def smtp(monkeypatch):
    with SmtpServer() as server:
        monkeypatch.setenv("EXPORT_SMTP_HOST", server.host)
        monkeypatch.setenv("EXPORT_SMTP_PORT", str(server.port))
        monkeypatch.setenv("EXPORT_SMTP_FROM", "reports@export-pipelines.test")
        # The reports here go to example.org, named as an allowed domain.
        monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", "example.org")
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def mutable_source(request, tmp_path, demo_sqlite_template):
    """The demo data, the test's own copy (it changes rows): embedded SQLite or PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "source.db"
        path.write_bytes(demo_sqlite_template.read_bytes())
        yield SourceDatabase(f"sqlite:///{path}")
    else:
        with scratch_postgres_database() as url:  # fails, not skips, when CI=true
            yield seed(SourceDatabase(url))


def users_of(db: SourceDatabase, org: str) -> list[dict]:
    return db.fetch_rows(
        "SELECT id, organization_id, email, is_admin FROM users WHERE organization_id = :org "
        "ORDER BY id",
        {"org": org},
    )


def day_bounds(first: dt.date, last: dt.date) -> dict:
    return {
        "start": dt.datetime.combine(first, dt.time()),
        "end": dt.datetime.combine(last + dt.timedelta(days=1), dt.time()),
    }


def assert_one_sentence_for_people(text: str) -> None:
    for fragment in TECHNICAL:
        assert fragment not in text, f"{fragment!r} in {text!r}"
    assert not CLASS_NAMES.search(text), f"an exception class name in {text!r}"
    assert text.strip() == text and text, text
    # One sentence: no full stop inside it (ids and dates have none).
    assert ". " not in text.rstrip("."), text


# -- 1. a subscription is checked again at every delivery ------------------------------


def subscribe(db, org: str, user_id: str, export_type: str, recipients: list[str]) -> str:
    sub_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES (:id, :org, :user, :type, 'CSV', 'daily', :to, NULL, :yes, NULL, :created)",
        {
            "id": sub_id,
            "org": org,
            "user": user_id,
            "type": export_type,
            "to": json.dumps(recipients),
            "yes": True,
            "created": dt.datetime(2026, 3, 1, 9, 30, 0, 1),
        },
    )
    return sub_id


def due_runs(instance, db) -> dict[str, dg.RunRequest]:
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=TICK,
        resources={"source": SourceResource(url=db.url)},
    ) as context:
        requests = DAILY.evaluate_tick(context).run_requests or []
    return {r.tags[SUBSCRIPTION_TAG]: r for r in requests}


def deliver(instance, request: dg.RunRequest, resources: dict):
    return deliver_report_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def step_failure_text(instance, run_id: str) -> str:
    (failure,) = [
        e.dagster_event
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    data = failure.step_failure_data
    assert data.user_failure_data is not None, "a deliberate failure, with its own sentence"
    return data.user_failure_data.description


def test_owner_without_the_right_gets_nothing_delivered_and_is_told(
    sqlite_source, instance, tmp_path, smtp
):
    db = sqlite_source
    store_dir = tmp_path / "exports"
    resources = export_resources(db, store_dir, tmp_path / "work")
    db.execute("UPDATE report_subscriptions SET active = :no", {"no": False})
    org, other_org = organization_ids(db)[:2]
    demoted, leaver, keeper = users_of(db, org)[:3]
    # Made admins to subscribe to the admin-only audit log; then the rights change.
    db.execute(
        "UPDATE users SET is_admin = :yes WHERE id IN (:a, :b, :c)",
        {"yes": True, "a": demoted["id"], "b": leaver["id"], "c": keeper["id"]},
    )
    demoted_sub = subscribe(db, org, demoted["id"], "audit_log_export", ["security@example.org"])
    leaver_sub = subscribe(db, org, leaver["id"], "scan_results", ["scans@example.org"])
    kept_sub = subscribe(db, org, keeper["id"], "audit_log_export", ["audit@example.org"])
    db.execute("UPDATE users SET is_admin = :no WHERE id = :id", {"no": False, "id": demoted["id"]})
    # Moved to another organization (users cannot be deleted: projects and subscriptions
    # reference them); the row, with its email, stays.
    db.execute(
        "UPDATE users SET organization_id = :other WHERE id = :id",
        {"other": other_org, "id": leaver["id"]},
    )

    runs = due_runs(instance, db)
    assert set(runs) == {demoted_sub, leaver_sub, kept_sub}
    reasons = {
        demoted_sub: "audit_log_export is available to organization admins only",
        leaver_sub: f"is not a member of organization '{org}'",
    }
    failed = {}
    for sub_id in reasons:
        result = deliver(instance, runs[sub_id], resources)
        assert not result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not any(
            e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
            for e in instance.all_logs(result.run_id)
        ), "a refusal is final: no retries"
        failed[sub_id] = result.run_id
    assert smtp.received == [], "nothing is sent to anyone for a refused delivery"
    assert not (store_dir / "reports").exists(), "nothing is published either"

    for sub_id, reason in reasons.items():
        sentence = step_failure_text(instance, failed[sub_id])
        assert_one_sentence_for_people(sentence)
        assert sentence.startswith(f"report {sub_id} for {REPORT_DAY} was not")
        assert "the subscription's owner may no longer receive this report" in sentence
        assert reason in sentence, sentence
        assert (
            db.scalar("SELECT last_run_at FROM report_subscriptions WHERE id = :id", {"id": sub_id})
            is None
        )

    for sub_id in reasons:
        evaluate_failure_sensor(
            report_failure_sensor, instance, failed[sub_id], {"source": SourceResource(url=db.url)}
        )
    told = {tuple(m.rcpt_tos): m for m in smtp.received}
    refusal_bodies = [
        m.message.get_body(preferencelist=("plain",)).get_content() for m in smtp.received
    ]
    # The one who left still has their user row and email: they set the report up, and
    # are told why it stopped (the mail names only the subscription and the reason).
    assert set(told) == {(demoted["email"],), (leaver["email"],)}
    for owner, sub_id in ((demoted, demoted_sub), (leaver, leaver_sub)):
        mail = told[(owner["email"],)].message
        assert mail["Subject"].startswith("Delivery failed:")
        assert not list(mail.iter_attachments()), "a failure email carries no data"
        body = mail.get_body(preferencelist=("plain",)).get_content()
        (error_line,) = [line for line in body.splitlines() if line.startswith("Error: ")]
        said = error_line.removeprefix("Error: ")
        assert_one_sentence_for_people(said)
        assert reasons[sub_id] in said and f"Subscription: {sub_id}" in body
        assert day_for_people(REPORT_DAY) in mail["Subject"]

    # Control: the owner who kept their rights gets the report, to its recipients.
    smtp.received.clear()
    result = deliver(instance, runs[kept_sub], resources)
    assert result.success
    (mail,) = smtp.received
    assert mail.rcpt_tos == ["audit@example.org"]
    attachment = next(mail.message.iter_attachments())
    data = attachment.get_content()
    data = data if isinstance(data, str) else data.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(data.lstrip("\ufeff"))))
    expected = db.fetch_rows(
        "SELECT id FROM audit_log WHERE organization_id = :org AND occurred_at >= :start "
        "AND occurred_at < :end",
        {"org": org, **day_bounds(REPORT_DAY, REPORT_DAY)},
    )
    assert len(expected) > 0
    assert sorted(r["entry_id"] for r in rows) == sorted(r["id"] for r in expected)
    assert db.scalar(
        "SELECT last_run_at FROM report_subscriptions WHERE id = :id", {"id": kept_sub}
    )

    # Checked last, after everything above: the owner's email must not promise what a
    # refusal does not do. It was not retried (the refusal is final), and later periods
    # will be refused the same way until the owner's rights or the subscription change.
    for body in refusal_bodies:
        assert "retried" not in body, body
        assert "Later periods will still be delivered" not in body, body


# -- 2. freshness: an unchanged day is reused only where the source can vouch for it -----


def request_scans(instance, db, resources, user: dict) -> tuple[dict, tuple[int, int]]:
    """Serve one scan_results request over the two days; its row and (built, reused)."""
    ledger = RequestLedger(db)
    request_id = ledger.insert(
        user["organization_id"],
        user["id"],
        "scan_results",
        "CSV",
        filters={"date_from": KEPT_DAY.isoformat(), "date_to": CHANGED_DAY.isoformat()},
    )
    with dg.build_sensor_context(
        instance=instance, resources={"source": SourceResource(url=db.url)}
    ) as context:
        result = export_requests_sensor(context)
    (run_request,) = [r for r in result.run_requests if r.run_key == request_id]
    outcome = serve_export_request_job.execute_in_process(
        run_config=run_request.run_config,
        tags=run_request.tags,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert outcome.success
    row = ledger.get(request_id)
    assert row["status"] == "COMPLETED", row["error_message"]
    counts = [
        BUILT_REUSED.search(e.user_message)
        for e in instance.all_logs(outcome.run_id)
        if BUILT_REUSED.search(e.user_message or "")
    ]
    assert len(counts) == 1, "the run says how many days it built and reused"
    return row, (int(counts[0].group(1)), int(counts[0].group(2)))


def published_scores(row: dict) -> dict[str, float | None]:
    text = Path(row["file_path"]).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == row["row_count"]
    return {r["scan_id"]: float(r["dcs_score"]) if r["dcs_score"] else None for r in rows}


def source_scores(db, org: str, first: dt.date, last: dt.date) -> dict[str, float | None]:
    rows = db.fetch_rows(
        "SELECT s.id, s.dcs_score FROM scan_results s JOIN audits a ON a.id = s.audit_id "
        "JOIN projects p ON p.id = a.project_id WHERE p.organization_id = :org "
        "AND s.created_at >= :start AND s.created_at < :end",
        {"org": org, **day_bounds(first, last)},
    )
    return {r["id"]: r["dcs_score"] for r in rows}


def transform_version(work: WorkArea, org: str, day: dt.date) -> str:
    stage = work.stage_dir("scan_results", "transform", ExportPartition(org, day))
    return (stage / CURRENT).read_text().strip()


def test_a_changed_day_is_rebuilt_and_an_unchanged_one_reused_only_where_provable(
    mutable_source, instance, tmp_path
):
    db = mutable_source
    db.execute("DELETE FROM export_requests")
    org = organization_ids(db)[0]
    user = next(u for u in users_of(db, org) if not u["is_admin"])
    work_dir = tmp_path / "work"
    resources = export_resources(db, tmp_path / "exports", work_dir)
    work = WorkArea(work_dir)

    first_row, first_counts = request_scans(instance, db, resources, user)
    assert first_counts == (2, 0), "nothing was prepared before"
    before = source_scores(db, org, KEPT_DAY, CHANGED_DAY)
    assert published_scores(first_row) == before
    versions = {d: transform_version(work, org, d) for d in (KEPT_DAY, CHANGED_DAY)}

    # One insert, one update of an exported value, one delete — all on the changed day.
    day_rows = sorted(source_scores(db, org, CHANGED_DAY, CHANGED_DAY))
    updated, deleted = day_rows[0], day_rows[1]
    audit = db.scalar(
        "SELECT a.id FROM audits a JOIN projects p ON p.id = a.project_id "
        "WHERE p.organization_id = :org ORDER BY a.id",
        {"org": org},
    )
    inserted = str(uuid.uuid4())
    db.execute(
        "INSERT INTO scan_results (id, audit_id, dcs_score, ai_citation_score, created_at) "
        "VALUES (:id, :audit, :dcs, NULL, :at)",
        {
            "id": inserted,
            "audit": audit,
            "dcs": 42.5,
            "at": dt.datetime.combine(CHANGED_DAY, dt.time(12, 0, 0, 123456)),
        },
    )
    new_score = 99.25 if before[updated] != 99.25 else 98.75
    db.execute(
        "UPDATE scan_results SET dcs_score = :dcs WHERE id = :id", {"dcs": new_score, "id": updated}
    )
    db.execute("DELETE FROM scan_results WHERE id = :id", {"id": deleted})
    changed = source_scores(db, org, CHANGED_DAY, CHANGED_DAY)
    assert changed[inserted] == 42.5 and changed[updated] == new_score and deleted not in changed

    second_row, second_counts = request_scans(instance, db, resources, user)
    published = published_scores(second_row)
    assert published == source_scores(db, org, KEPT_DAY, CHANGED_DAY)
    assert published[inserted] == 42.5
    assert published[updated] == new_score
    assert deleted not in published
    assert len(published) == len(before)  # one in, one out

    after = {d: transform_version(work, org, d) for d in (KEPT_DAY, CHANGED_DAY)}
    assert after[CHANGED_DAY] != versions[CHANGED_DAY], "the changed day was rebuilt"
    if db.dialect == "postgresql":
        assert second_counts == (1, 1)
        assert after[KEPT_DAY] == versions[KEPT_DAY], "the unchanged day was reused"
    else:
        # No fingerprint on SQLite: nothing can be proven current, so nothing is reused.
        assert second_counts == (2, 0)
        assert after[KEPT_DAY] != versions[KEPT_DAY]


# -- 3. a changed code version rebuilds the day -----------------------------------------


def test_a_changed_code_version_rebuilds_the_day(postgres_source, tmp_path, monkeypatch):
    db = postgres_source
    spec = CATALOG["scan_results"]
    org = organization_ids(db)[0]
    work = WorkArea(tmp_path / "work")

    first = prepare_days(spec, db, work, org, [KEPT_DAY])
    assert (first.built, first.reused) == ([KEPT_DAY], [])
    again = prepare_days(spec, db, work, org, [KEPT_DAY])
    assert (again.built, again.reused) == ([], [KEPT_DAY]), "same code, same rows: reused"

    changed = dataclasses.replace(spec, query=spec.query + " ")
    assert code_version(changed) != code_version(spec)
    rebuilt = prepare_days(changed, db, work, org, [KEPT_DAY])
    assert (rebuilt.built, rebuilt.reused) == ([KEPT_DAY], [])
    assert rebuilt.days[0].code_version == code_version(changed)
    assert rebuilt.days[0].rows == first.days[0].rows > 0

    monkeypatch.setattr(prepare, "CODE_VERSION", prepare.CODE_VERSION + ".next")
    bumped = prepare_days(changed, db, work, org, [KEPT_DAY])
    assert (bumped.built, bumped.reused) == ([KEPT_DAY], []), "a new package version rebuilds"
    assert bumped.days[0].code_version.startswith(prepare.CODE_VERSION + "+")


# -- 4. the organization bundle: one manifest shape ------------------------------------


def manifest_shape(manifest: dict, archive_path: Path) -> dict:
    inner = json.loads(zipfile.ZipFile(archive_path).read("manifest.json"))
    return {
        "manifest": set(manifest),
        "files": {frozenset(f) for f in manifest["files"]},
        "inner": set(inner),
        "parts": {frozenset(p) for p in inner["parts"]},
        "part_files": {frozenset(f) for p in inner["parts"] for f in p["files"]},
        "types": [p["export_type"] for p in inner["parts"]],
    }


def test_bundle_as_asset_and_as_request_have_one_manifest_shape(sqlite_source, instance, tmp_path):
    db = sqlite_source
    db.execute("DELETE FROM export_requests")
    org = organization_ids(db)[0]
    partition = ExportPartition(org, DEMO_DAY)
    store_dir = tmp_path / "exports"
    resources = export_resources(db, store_dir, tmp_path / "work")

    instance.add_dynamic_partitions(organizations.name, [org])
    assets = all_export_assets([s for s in SPECS if s.key != "user_data_export"])
    assert dg.materialize(
        assets, partition_key=partition.key, instance=instance, resources=resources
    ).success
    folder = store_dir / partition.folder("organization_bundle")
    asset_manifest = json.loads((folder / "manifest.json").read_text())
    as_asset = manifest_shape(asset_manifest, folder / asset_manifest["files"][0]["name"])

    admin = next(u for u in users_of(db, org) if u["is_admin"])
    ledger = RequestLedger(db)
    request_id = ledger.insert(
        org,
        admin["id"],
        "organization_bundle",
        "CSV",
        filters={"date_from": DEMO_DAY.isoformat(), "date_to": DEMO_DAY.isoformat()},
    )
    with dg.build_sensor_context(
        instance=instance, resources={"source": SourceResource(url=db.url)}
    ) as context:
        (run_request,) = export_requests_sensor(context).run_requests
    assert serve_export_request_job.execute_in_process(
        run_config=run_request.run_config,
        tags=run_request.tags,
        instance=instance,
        resources=resources,
    ).success
    row = ledger.get(request_id)
    assert row["status"] == "COMPLETED", row["error_message"]
    request_folder = Path(row["file_path"]).parent
    request_manifest = json.loads((request_folder / "manifest.json").read_text())
    as_request = manifest_shape(request_manifest, Path(row["file_path"]))

    for key in as_asset:
        assert as_asset[key] == as_request[key], key
    assert len(as_request["parts"]) == len(as_request["part_files"]) == 1
    assert asset_manifest["export_type"] == request_manifest["export_type"]


# -- found on the way: what `SourceDatabase.execute` says it returns --------------------


def test_execute_returns_the_number_of_rows_changed(source):
    """`execute` documents "the number of rows it changed"; a no-op UPDATE of one row is 1."""
    user_id = source.scalar("SELECT id FROM users ORDER BY id")
    changed = source.execute("UPDATE users SET email = email WHERE id = :id", {"id": user_id})
    assert changed == 1
