"""Recurring reports: schedules serve subscriptions, emails arrive through a real SMTP server."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import socket
import uuid

import dagster as dg
import openpyxl
import pytest
from pypdf import PdfReader

from export_pipelines.defs.reports import (
    MAX_RETRY_RUNS,
    PERIOD_TAG,
    SUBSCRIPTION_TAG,
    deliver_report_job,
    due_period,
    report_failure_sensor,
    report_run_request,
    report_schedules,
)
from export_pipelines.defs.resources import SourceResource
from export_pipelines.delivery.email import period_for_people
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


@pytest.fixture(autouse=True)
def allow_demo_recipients(request, monkeypatch):
    """The demo's subscriptions email addresses outside their organizations' user domains,
    which the default recipient policy refuses: allow exactly the domains they use."""
    if "history" not in request.fixturenames:
        return
    db = request.getfixturevalue("history")
    rows = db.fetch_rows("SELECT email_recipients FROM report_subscriptions")
    domains = {
        address.rpartition("@")[2].lower()
        for row in rows
        for address in json.loads(row["email_recipients"] or "[]")
    }
    monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", ",".join(sorted(domains)))


def evaluate(schedule, instance, db, at: dt.datetime = TICK):
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=at,
        resources={"source": SourceResource(url=db.url)},
    ) as context:
        return schedule.evaluate_tick(context).run_requests or []


def row_count(name: str, data: bytes) -> int:
    if name.endswith(".csv"):
        return len(list(csv.DictReader(io.StringIO(data.decode("utf-8-sig")))))
    if name.endswith(".xlsx"):
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
        # The rows' sheets only: a workbook may open with a "Summary" sheet for people.
        data = [sheet for sheet in book.worksheets if sheet.title != "Summary"]
        return sum(sum(1 for _ in sheet.iter_rows(min_row=2)) for sheet in data)
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
        assert organization in subject and period_for_people(first, last) in subject
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
        text = mail.message.get_body(preferencelist=("plain",)).get_content()
        assert f"Rows: {expected:,}" in text
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
    content = told[0].message.get_body(preferencelist=("plain",)).get_content()
    assert "refused every recipient" in content and "SMTPRecipientsRefused" not in content


# -- undelivered periods are retried by later ticks; the failure sensor never raises ------

DAILY = next(s for s in report_schedules if s.name == "daily_reports")


def closed_port() -> int:
    """A loopback port nothing listens on: the kernel just handed it out, and it is closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_smtp(monkeypatch, host: str, port: int) -> None:
    monkeypatch.setenv("EXPORT_SMTP_HOST", host)
    monkeypatch.setenv("EXPORT_SMTP_PORT", str(port))
    monkeypatch.setenv("EXPORT_SMTP_FROM", "reports@export-pipelines.test")


def run(request: dg.RunRequest, instance, resources):
    return deliver_report_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def step_failure(instance, run_id: str):
    """The deliberate failure (dagster.Failure) the run ended with: sentence and metadata."""
    (failure,) = [
        e.dagster_event.step_failure_data.user_failure_data
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    return failure


def retry_keys(requests) -> list[str]:
    return sorted(r.run_key for r in requests if ":retry-" in r.run_key)


def test_an_undelivered_period_is_retried_by_a_later_tick_and_delivered_once(
    history, instance, tmp_path, monkeypatch
):
    store_dir = tmp_path / "exports"
    resources = export_resources(history, store_dir, tmp_path / "work")
    request = evaluate(DAILY, instance, history)[0]
    sub_id = request.tags[SUBSCRIPTION_TAG]
    recipients = sorted(
        json.loads(
            history.scalar(
                "SELECT email_recipients FROM report_subscriptions WHERE id = :id", {"id": sub_id}
            )
        )
    )

    # The email server is down for all three attempts of the tick's run.
    use_smtp(monkeypatch, "127.0.0.1", closed_port())
    failed = run(request, instance, resources)
    assert not failed.success
    assert not list(store_dir.rglob("delivery.json")), "no receipt: not delivered"
    # Telling the owner fails the same way: logged, not raised.
    evaluate_failure_sensor(
        report_failure_sensor, instance, failed.run_id, {"source": SourceResource(url=history.url)}
    )

    with SmtpServer() as smtp:
        use_smtp(monkeypatch, smtp.host, smtp.port)
        next_tick = TICK + dt.timedelta(days=1)
        requests = evaluate(DAILY, instance, history, at=next_tick)
        assert retry_keys(requests) == [f"{request.run_key}:retry-1"]
        (retry,) = [r for r in requests if ":retry-" in r.run_key]
        assert retry.run_config == request.run_config
        assert retry.tags[PERIOD_TAG] == request.tags[PERIOD_TAG] == "2026-05-31..2026-05-31"
        replay = evaluate(DAILY, instance, history, at=next_tick)
        assert retry_keys(replay) == retry_keys(requests), "a replayed tick asks for the same run"

        assert run(retry, instance, resources).success
        (mail,) = smtp.received
        assert sorted(mail.rcpt_tos) == recipients
        assert "31 May 2026" in mail.message["Subject"]

        # Delivered: later ticks retry nothing, and a re-run of the period sends nothing.
        assert retry_keys(evaluate(DAILY, instance, history, at=next_tick)) == []
        assert retry_keys(evaluate(DAILY, instance, history, at=TICK + dt.timedelta(days=2))) == []
        assert run(request, instance, resources).success
        assert run(retry, instance, resources).success
        assert len(smtp.received) == 1, "delivered exactly once"

    (receipt,) = store_dir.rglob("delivery.json")
    data = json.loads(receipt.read_text())
    assert data["period"] == ["2026-05-31", "2026-05-31"] and data["refused"] == {}
    assert sorted(data["delivered_to"]) == recipients


def test_retries_are_bounded_and_never_follow_a_delivery_a_refusal_or_a_run_in_progress(
    history, instance, tmp_path, monkeypatch
):
    subs = {
        s["id"]: s
        for s in history.fetch_rows(
            "SELECT * FROM report_subscriptions WHERE active = :yes ORDER BY id", {"yes": True}
        )
    }
    daily_a, daily_b = [s for s in subs.values() if s["cadence"] == "daily"][:2]
    weekly = next(s for s in subs.values() if s["cadence"] == "weekly")
    status = dg.DagsterRunStatus

    def history_of(sub: dict, day: dt.date, statuses: list, last: dt.date | None = None) -> str:
        """Runs of one period, oldest first, as the daemon would have left them."""
        request = report_run_request(sub, day, last or day, f"{sub['id']}:{day}:{last or day}")
        for run_status in statuses:
            instance.create_run_for_job(
                job_def=deliver_report_job,
                run_config=request.run_config,
                tags=request.tags,
                status=run_status,
            )
        return request.run_key

    def may(day: int) -> dt.date:
        return dt.date(2026, 5, day)

    once = history_of(daily_a, may(31), [status.FAILURE])
    last_chance = history_of(daily_a, may(30), [status.FAILURE] * MAX_RETRY_RUNS)
    history_of(daily_a, may(29), [status.FAILURE] * (MAX_RETRY_RUNS + 1))  # used up
    history_of(daily_a, may(28), [status.FAILURE, status.STARTED])  # a retry is running
    history_of(daily_a, may(27), [status.FAILURE, status.CANCELED])  # canceled on purpose
    history_of(daily_a, may(26), [status.FAILURE, status.SUCCESS])  # delivered
    history_of(daily_a, may(24), [status.FAILURE])  # more than 7 daily periods back
    weekly_key = history_of(weekly, may(25), [status.FAILURE], last=may(31))

    # A refusal, for real (a recipient outside the allowed domains): never retried.
    with monkeypatch.context() as policy:
        policy.setenv("EXPORT_RECIPIENT_DOMAINS", "nowhere.test")
        refused = report_run_request(
            daily_b, may(31), may(31), f"{daily_b['id']}:{may(31)}:{may(31)}"
        )
        result = run(refused, instance, export_resources(history, tmp_path / "e", tmp_path / "w"))
    assert not result.success
    assert "outside the email domains" in step_failure(instance, result.run_id).description

    # The daily tick retries every cadence (a weekly period the day after, not a week later).
    requests = evaluate(DAILY, instance, history, at=TICK + dt.timedelta(days=1))
    assert retry_keys(requests) == sorted(
        [f"{once}:retry-1", f"{last_chance}:retry-{MAX_RETRY_RUNS}", f"{weekly_key}:retry-1"]
    )
    by_key = {r.run_key: r for r in requests}
    assert by_key[f"{once}:retry-1"].tags["export/attempt"] == "2"
    # The other schedules never retry (run keys are deduplicated per schedule).
    for schedule in report_schedules:
        if schedule is not DAILY:
            assert retry_keys(evaluate(schedule, instance, history, at=TICK)) == []


def subscribe(db, export_type: str, recipients: list[str]) -> tuple[dict, dg.RunRequest]:
    """A subscription of the first organization's first user (inactive: no tick serves it),
    and the request for its run over 2026-03-04."""
    user = db.fetch_rows("SELECT * FROM users ORDER BY organization_id, id LIMIT 1")[0]
    sub = {
        "id": f"sub-{uuid.uuid4().hex[:12]}",
        "organization_id": user["organization_id"],
        "user_id": user["id"],
        "export_type": export_type,
    }
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES (:id, :org, :user, :type, 'CSV', 'daily', :to, NULL, :no, NULL, :created)",
        {
            "id": sub["id"],
            "org": sub["organization_id"],
            "user": sub["user_id"],
            "type": export_type,
            "to": json.dumps(recipients),
            "no": False,
            "created": dt.datetime(2026, 3, 1, 9, 30),
        },
    )
    day = dt.date(2026, 3, 4)
    return user, report_run_request(sub, day, day, f"{sub['id']}:{day}:{day}")


@pytest.mark.parametrize("cause", ["smtp_down", "owner_address_breaks_the_header"])
def test_the_failure_sensor_never_raises_and_logs_what_it_could_not_tell(
    sqlite_source, instance, tmp_path, monkeypatch, capfd, cause
):
    db = sqlite_source
    user, request = subscribe(db, "no_such_type", ["someone@elsewhere.example.net"])
    resources = export_resources(db, tmp_path / "exports", tmp_path / "work")
    failed = run(request, instance, resources)  # refused at once: an unknown type
    assert not failed.success
    with SmtpServer() as smtp:
        if cause == "smtp_down":
            use_smtp(monkeypatch, "127.0.0.1", closed_port())
        else:
            use_smtp(monkeypatch, smtp.host, smtp.port)
            db.execute(
                "UPDATE users SET email = :email WHERE id = :id",
                {"email": "owner@x.example.com\r\nBcc: all@evil.example.com", "id": user["id"]},
            )
        capfd.readouterr()
        # Must not raise. (The daemon keeps the sensor's log with its tick; here the
        # sensor logger's console handler writes it to stderr.)
        evaluate_failure_sensor(
            report_failure_sensor, instance, failed.run_id, {"source": SourceResource(url=db.url)}
        )
        assert smtp.received == []
    logged = [line for line in capfd.readouterr().err.splitlines() if " - ERROR - " in line]
    expected = (
        f"could not tell the owner of subscription {request.tags[SUBSCRIPTION_TAG]} "
        f"that run {failed.run_id} failed: "
    )
    assert any(expected in line for line in logged), logged


def test_the_failure_sensor_tells_the_owner_of_an_unknown_type_in_a_clean_header(
    sqlite_source, instance, tmp_path, monkeypatch
):
    db = sqlite_source
    user, request = subscribe(db, "no_such\x00type", ["x@y.example.com"])
    failed = run(request, instance, export_resources(db, tmp_path / "e", tmp_path / "w"))
    assert not failed.success
    assert step_failure(instance, failed.run_id).metadata["refused"].value is True
    with SmtpServer() as smtp:
        use_smtp(monkeypatch, smtp.host, smtp.port)
        evaluate_failure_sensor(
            report_failure_sensor, instance, failed.run_id, {"source": SourceResource(url=db.url)}
        )
        (told,) = smtp.received
    assert told.rcpt_tos == [user["email"]]
    subject = told.message["Subject"]
    assert subject.startswith("Delivery failed: no_such type"), subject
    assert all(c.isprintable() for c in subject), subject
    body = told.message.get_body(preferencelist=("plain",)).get_content()
    assert "unknown export type" in body and "nothing was sent to anyone" in body
