"""Recurring reports: schedules serve subscriptions, emails arrive through a real SMTP server."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import dagster as dg
import openpyxl
import pytest
from pypdf import PdfReader

from export_pipelines.defs.reports import deliver_report_job, due_period, report_schedules
from export_pipelines.defs.resources import SourceResource
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase

from .conftest import evaluate_failure_sensor, export_resources, seed
from .smtp_server import SmtpServer

# 2026-06-01 is a Monday and the 1st: daily, weekly and monthly reports are all due.
TICK = dt.datetime(2026, 6, 1, 6, 0, tzinfo=dt.timezone.utc)
PERIODS = {
    "daily": (dt.date(2026, 5, 31), dt.date(2026, 5, 31)),
    "weekly": (dt.date(2026, 5, 25), dt.date(2026, 5, 31)),
    "monthly": (dt.date(2026, 5, 1), dt.date(2026, 5, 31)),
}


def test_due_periods():
    monday, tuesday = dt.date(2026, 6, 8), dt.date(2026, 6, 9)
    assert due_period("daily", tuesday) == (monday, monday)
    assert due_period("weekly", monday) == (dt.date(2026, 6, 1), dt.date(2026, 6, 7))
    assert due_period("weekly", tuesday) is None
    assert due_period("monthly", dt.date(2026, 3, 1)) == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    assert due_period("monthly", dt.date(2026, 3, 2)) is None
    with pytest.raises(ValueError, match="unknown cadence"):
        due_period("hourly", monday)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> SourceDatabase:
    path = tmp_path_factory.mktemp("reports") / "source.db"
    params = demo_data.DemoParams(organizations=2, days=40, events_per_day=6, end_date=TICK.date())
    return seed(SourceDatabase(f"sqlite:///{path}"), params)


def evaluate(schedule, instance, db):
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=TICK,
        resources={"source": SourceResource(url=db.url)},
    ) as context:
        return schedule.evaluate_tick(context).run_requests or []


def row_count(name: str, data: bytes) -> int:
    if name.endswith(".csv"):
        return len(list(csv.DictReader(io.StringIO(data.decode("utf-8-sig")))))
    if name.endswith(".xlsx"):
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
        return sum(sum(1 for _ in sheet.iter_rows(min_row=2)) for sheet in book.worksheets)
    if name.endswith(".pdf"):
        text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
        return int(re.search(r"Rows\s+([\d,]+)", text).group(1).replace(",", ""))
    raise AssertionError(f"unexpected attachment {name}")


def test_daily_weekly_monthly_reports_are_emailed_once(history, instance, tmp_path, monkeypatch):
    store_dir = tmp_path / "exports"
    resources = export_resources(history, store_dir, tmp_path / "work")
    subscriptions = {
        s["id"]: s
        for s in history.fetch_rows(
            "SELECT * FROM report_subscriptions WHERE active = :yes", {"yes": True}
        )
    }
    with SmtpServer() as smtp:
        monkeypatch.setenv("EXPORT_SMTP_HOST", smtp.host)
        monkeypatch.setenv("EXPORT_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("EXPORT_SMTP_FROM", "reports@export-pipelines.test")
        requests = [
            r for schedule in report_schedules for r in evaluate(schedule, instance, history)
        ]
        assert len(requests) == len(subscriptions), "one run per active subscription"
        replay = [r for schedule in report_schedules for r in evaluate(schedule, instance, history)]
        assert [r.run_key for r in replay] == [r.run_key for r in requests], (
            "replayed tick, same keys"
        )

        for request in requests + replay:  # the replay must not send anything
            result = deliver_report_job.execute_in_process(
                run_config=request.run_config,
                tags=request.tags,
                instance=instance,
                resources=resources,
            )
            assert result.success
        received = smtp.received

    assert len(received) == len(subscriptions), "each subscription emailed exactly once"
    by_recipients = {tuple(sorted(m.rcpt_tos)): m for m in received}
    for sub in subscriptions.values():
        first, last = PERIODS[sub["cadence"]]
        mail = by_recipients[tuple(sorted(json.loads(sub["email_recipients"])))]
        organization = history.scalar(
            "SELECT name FROM organizations WHERE id = :id", {"id": sub["organization_id"]}
        )
        subject = mail.message["Subject"]
        assert organization in subject and str(first) in subject
        attachment = next(mail.message.iter_attachments())
        data = attachment.get_content()
        data = data.encode() if isinstance(data, str) else data  # text/csv decodes to str
        expected = history.scalar(
            {
                "scan_results": "SELECT count(*) FROM scan_results s JOIN audits a ON a.id = s.audit_id "
                "JOIN projects p ON p.id = a.project_id WHERE p.organization_id = :org "
                "AND s.created_at >= :start AND s.created_at < :end",
                "credit_usage_report": "SELECT count(*) FROM credit_ledger WHERE organization_id = :org "
                "AND created_at >= :start AND created_at < :end",
            }[sub["export_type"]],
            {
                "org": sub["organization_id"],
                "start": dt.datetime.combine(first, dt.time()),
                "end": dt.datetime.combine(last + dt.timedelta(days=1), dt.time()),
            },
        )
        assert row_count(attachment.get_filename(), data) == expected > 0
        assert f"{expected:,} row" in subject
        stored = history.scalar(
            "SELECT last_run_at FROM report_subscriptions WHERE id = :id", {"id": sub["id"]}
        )
        assert stored is not None


def test_without_smtp_the_report_is_still_published(
    history, instance, tmp_path, monkeypatch, caplog
):
    monkeypatch.delenv("EXPORT_SMTP_HOST", raising=False)
    store_dir = tmp_path / "exports"
    request = evaluate(report_schedules[0], instance, history)[0]
    result = deliver_report_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=export_resources(history, store_dir, tmp_path / "work"),
    )
    assert result.success
    manifests = list((store_dir / "reports").rglob("manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["files"]
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("email delivery skipped: EXPORT_SMTP_HOST is not set" in m for m in logs)


def test_failed_delivery_is_retried_then_the_owner_is_told(
    history, instance, tmp_path, monkeypatch
):
    from export_pipelines.defs.reports import report_failure_sensor

    store_dir = tmp_path / "exports"
    request = evaluate(report_schedules[0], instance, history)[0]
    with SmtpServer() as smtp:
        monkeypatch.setenv("EXPORT_SMTP_HOST", smtp.host)
        monkeypatch.setenv("EXPORT_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("EXPORT_SMTP_FROM", "reports@export-pipelines.test")
        # Every recipient refused: the send fails on each of the three attempts.
        sub_id = request.tags["export/subscription"]
        recipients = json.loads(
            history.scalar(
                "SELECT email_recipients FROM report_subscriptions WHERE id = :id", {"id": sub_id}
            )
        )
        smtp.handler.refuse.update(r.lower() for r in recipients)
        result = deliver_report_job.execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            instance=instance,
            resources=export_resources(history, store_dir, tmp_path / "work"),
            raise_on_error=False,
        )
        assert not result.success
        retries = [
            e
            for e in instance.all_logs(result.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        ]
        assert len(retries) == 2
        evaluate_failure_sensor(
            report_failure_sensor,
            instance,
            result.run_id,
            {"source": SourceResource(url=history.url)},
        )
        owner = history.scalar(
            "SELECT u.email FROM report_subscriptions s JOIN users u ON u.id = s.user_id WHERE s.id = :id",
            {"id": sub_id},
        )
        told = [m for m in smtp.received if m.rcpt_tos == [owner]]
    assert len(told) == 1 and "Delivery failed" in told[0].message["Subject"]
    content = told[0].message.get_content()
    assert "refused every recipient" in content and "SMTPRecipientsRefused" not in content
