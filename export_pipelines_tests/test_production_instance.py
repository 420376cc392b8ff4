"""Dagster on PostgreSQL for real (deploy/dagster.yaml): its daemon serves a request the
sensor launched and a report its schedule launched, once each, within the limits."""

from __future__ import annotations

import collections
import datetime as dt
import json
import time

import pytest

from export_pipelines.requests.ledger import RequestLedger
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase

from .conftest import postgres_or_skip
from .dev_server import database, production_dagster
from .smtp_server import SmtpServer

pytestmark = pytest.mark.slow


def _report_subscription(db: SourceDatabase) -> dict:
    """The only active subscription: a daily CSV report to its owner, an admin."""
    owner = db.fetch_rows(
        "SELECT id, organization_id, email FROM users WHERE is_admin ORDER BY id LIMIT 1"
    )[0]
    db.execute("UPDATE report_subscriptions SET active = :no", {"no": False})
    sub_id = "sub-production-daily"
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES (:id, :org, :user, 'scan_results', 'CSV', 'daily', :to, NULL, :yes, NULL, "
        ":created)",
        {
            "id": sub_id,
            "org": owner["organization_id"],
            "user": owner["id"],
            "to": json.dumps([owner["email"]]),
            "yes": True,
            "created": dt.datetime(2026, 1, 1),
        },
    )
    return {**owner, "id": sub_id}


def test_the_daemon_on_postgres_storage_serves_a_request_and_a_scheduled_report_once(
    tmp_path, monkeypatch
):
    import dagster as dg

    postgres_or_skip()
    today = dt.datetime.now(dt.timezone.utc).date()
    with (
        SmtpServer() as smtp,
        database("prod_source") as (_, source_url),
        database("prod_dagster") as (dagster_db, _),
    ):
        db = SourceDatabase(source_url)
        db.create_schema()
        db.ingest(demo_data.generate(demo_data.DemoParams(days=3, end_date=today)))
        db.execute("DELETE FROM export_requests")
        sub = _report_subscription(db)
        user = db.fetch_rows(
            "SELECT id, organization_id FROM users WHERE organization_id = :org ORDER BY id",
            {"org": sub["organization_id"]},
        )[0]
        # The daily schedule every minute: the daemon ticks it while we watch, and each
        # later tick must find the period delivered (its run key) and send nothing more.
        monkeypatch.setenv("EXPORT_DAILY_REPORTS_CRON", "* * * * *")
        monkeypatch.setenv("EXPORT_SMTP_HOST", smtp.host)
        monkeypatch.setenv("EXPORT_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", sub["email"].rsplit("@", 1)[1])
        with production_dagster(tmp_path, source_url, dagster_db) as env:
            for key in (
                "DAGSTER_HOME",
                "DAGSTER_PG_HOST",
                "DAGSTER_PG_PORT",
                "DAGSTER_PG_USER",
                "DAGSTER_PG_PASSWORD",
                "DAGSTER_PG_DB",
            ):
                monkeypatch.setenv(key, env[key])
            instance = dg.DagsterInstance.get()
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            yesterday = (today - dt.timedelta(days=1)).isoformat()
            request_id = RequestLedger(db).insert(
                user["organization_id"],
                user["id"],
                "scan_results",
                "JSON",
                {"date_from": yesterday, "date_to": yesterday},
            )
            most_per_org, status, delivered_at = 0, None, None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                running = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                per_org = collections.Counter(r.tags.get("export/org") for r in running)
                most_per_org = max([most_per_org, *per_org.values()])
                status = RequestLedger(db).get(request_id)["status"]
                if smtp.received and delivered_at is None:
                    delivered_at = time.monotonic()
                # After the report arrived, two more minutes: at least one more tick.
                if (
                    status in ("COMPLETED", "FAILED")
                    and delivered_at
                    and (time.monotonic() - delivered_at > 130)
                ):
                    break
                time.sleep(1)
            report_runs = instance.get_runs(dg.RunsFilter(job_name="deliver_report_job"))

    assert status == "COMPLETED"
    assert [tuple(m.rcpt_tos) for m in smtp.received] == [(sub["email"],)]
    subject = smtp.received[0].message["Subject"]
    assert "Scan results for " in subject
    # Dagster deduplicates a schedule's run keys per tick, not across ticks: a period may be
    # launched again by a later tick (here every minute), and its receipt makes that run
    # deliver nothing. Exactly one email is the guarantee, however many ticks ran.
    assert report_runs, "the schedule launched no report"
    assert {r.tags.get("dagster/run_key") for r in report_runs} == {
        f"{sub['id']}:{yesterday}:{yesterday}"
    }
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in report_runs)
    print(f"report runs for the period: {len(report_runs)}, emails: {len(smtp.received)}")
    # deploy/dagster.yaml: at most 2 runs of one organization at once.
    print(f"most runs of one organization seen at once: {most_per_org}")
    assert most_per_org <= 2
