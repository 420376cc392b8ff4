"""Who a recurring report reaches: a refused recipient costs the others nothing, and the
recipient policy (how many, what an address is, which domains) refuses with one sentence,
the owner told and nothing sent to anyone. Real SMTP server (aiosmtpd), real instance."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import dagster as dg
import pytest

from export_pipelines import settings
from export_pipelines.defs.reports import (
    SUBSCRIPTION_TAG,
    deliver_report_job,
    report_failure_sensor,
    report_run_request,
)
from export_pipelines.defs.resources import SourceResource
from export_pipelines.delivery.recipients import address_problem, configured_domains
from export_pipelines.source.database import SourceDatabase

from .conftest import evaluate_failure_sensor, export_resources, organization_ids
from .smtp_server import SmtpServer

DAY = dt.date(2026, 3, 4)  # in the demo data (conftest.DEMO)
CLASS_NAMES = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception|Rejected|Failure)\b")


@pytest.fixture
def smtp(monkeypatch):
    with SmtpServer() as server:
        monkeypatch.setenv("EXPORT_SMTP_HOST", server.host)
        monkeypatch.setenv("EXPORT_SMTP_PORT", str(server.port))
        monkeypatch.setenv("EXPORT_SMTP_FROM", "reports@export-pipelines.test")
        yield server


@pytest.fixture(autouse=True)
def default_policy(monkeypatch):
    """The defaults, whatever the environment says: 50 recipients, the org's own domains."""
    monkeypatch.delenv("EXPORT_RECIPIENT_DOMAINS", raising=False)
    monkeypatch.delenv("EXPORT_MAX_RECIPIENTS", raising=False)


def owner_of(db: SourceDatabase, org: str) -> dict:
    return db.fetch_rows(
        "SELECT * FROM users WHERE organization_id = :org ORDER BY id LIMIT 1", {"org": org}
    )[0]


def domain(address: str) -> str:
    return address.rpartition("@")[2]


def subscribe(db: SourceDatabase, owner: dict, recipients: list[str]) -> dg.RunRequest:
    """An (inactive: no tick serves it) daily scan_results subscription; its run for DAY."""
    sub = {
        "id": f"sub-{uuid.uuid4().hex[:12]}",
        "organization_id": owner["organization_id"],
        "export_type": "scan_results",
    }
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES (:id, :org, :user, 'scan_results', 'CSV', 'daily', :to, NULL, :no, NULL, :at)",
        {
            "id": sub["id"],
            "org": owner["organization_id"],
            "user": owner["id"],
            "to": json.dumps(recipients),
            "no": False,
            "at": dt.datetime(2026, 3, 1, 9, 30),
        },
    )
    return report_run_request(sub, DAY, DAY, f"{sub['id']}:{DAY}:{DAY}")


def deliver(instance, request: dg.RunRequest, resources: dict):
    return deliver_report_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def events(instance, run_id: str, kind: str) -> list:
    return [
        e
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == kind
    ]


def assert_refused(db, instance, smtp, store_dir, request, resources, owner, says: str) -> str:
    """The run fails at once with one sentence, refused; nothing is sent or published; the
    owner is told once, in the words of a refusal. Returns the sentence."""
    result = deliver(instance, request, resources)
    assert not result.success
    assert not events(instance, result.run_id, "STEP_UP_FOR_RETRY"), "a refusal is not retried"
    (failure,) = events(instance, result.run_id, "STEP_FAILURE")
    data = failure.dagster_event.step_failure_data.user_failure_data
    assert data.metadata["refused"].value is True
    sentence = data.description
    sub_id = request.tags[SUBSCRIPTION_TAG]
    assert sentence.startswith(f"report {sub_id} for {DAY} was not delivered: "), sentence
    assert says in sentence, sentence
    assert "\n" not in sentence and ". " not in sentence.rstrip(".") and len(sentence) < 600
    assert not CLASS_NAMES.search(sentence), sentence
    assert smtp.received == [], "nothing is sent to anyone"
    assert not (store_dir / "reports").exists(), "nothing is published"

    evaluate_failure_sensor(
        report_failure_sensor, instance, result.run_id, {"source": SourceResource(url=db.url)}
    )
    (told,) = smtp.received
    assert told.rcpt_tos == [owner["email"]]
    body = told.message.get_body(preferencelist=("plain",)).get_content()
    assert "The subscription no longer passes its checks" in body and "retried" not in body
    (error_line,) = [line for line in body.splitlines() if line.startswith("Error: ")]
    assert says in error_line
    return sentence


# -- a recipient refused by the email server ---------------------------------------------


def test_a_refused_recipient_costs_the_accepted_one_no_extra_copy(
    sqlite_source, instance, tmp_path, smtp
):
    db = sqlite_source
    store_dir = tmp_path / "exports"
    resources = export_resources(db, store_dir, tmp_path / "work")
    owner = owner_of(db, organization_ids(db)[0])
    accepted, gone = (f"{local}@{domain(owner['email'])}" for local in ("team", "left.us"))
    request = subscribe(db, owner, [accepted, gone])
    smtp.handler.refuse.add(gone.lower())

    result = deliver(instance, request, resources)
    assert result.success, "a delivery to the accepted recipient is a delivery"
    assert not events(instance, result.run_id, "STEP_UP_FOR_RETRY")
    reports = [m for m in smtp.received if m.rcpt_tos == [accepted]]
    assert len(reports) == 1, "exactly one copy"
    assert next(reports[0].message.iter_attachments()).get_filename().endswith(".csv")

    (receipt,) = store_dir.rglob("delivery.json")
    data = json.loads(receipt.read_text())
    assert data["delivered_to"] == [accepted]
    assert data["refused"] == {gone: "550 5.1.1 No such mailbox"}
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.level >= 30 and "refused 1 recipient" in e.user_message
    ]
    assert len(warnings) == 1 and gone in warnings[0]

    told = [m for m in smtp.received if m.rcpt_tos == [owner["email"]]]
    assert len(told) == 1, "the owner is told, once"
    assert told[0].message["Subject"].startswith("Partly delivered: ")
    body = told[0].message.get_body(preferencelist=("plain",)).get_content()
    assert gone in body and "550 5.1.1 No such mailbox" in body and accepted in body
    assert not list(told[0].message.iter_attachments())

    # A re-run (or a retried tick) finds the receipt: nothing more to anyone.
    assert deliver(instance, request, resources).success
    assert len(smtp.received) == 2


# -- the recipient policy ------------------------------------------------------------------


def test_ten_thousand_recipients_are_refused(sqlite_source, instance, tmp_path, smtp):
    db = sqlite_source
    store_dir = tmp_path / "exports"
    owner = owner_of(db, organization_ids(db)[0])
    many = [f"reader{i}@{domain(owner['email'])}" for i in range(10_000)]
    assert_refused(
        db,
        instance,
        smtp,
        store_dir,
        subscribe(db, owner, many),
        export_resources(db, store_dir, tmp_path / "work"),
        owner,
        "has 10,000 email recipients and a report goes to at most 50",
    )


@pytest.mark.parametrize(
    "address",
    [
        "ops\x00@{domain}",
        "ops@{domain}\r\nBcc: everyone@evil.example.net",
        '"Ops Team" <ops@{domain}>',
        "ops@evil.example.net@{domain}",
        "x" * 250 + "@{domain}",
    ],
    ids=["NUL", "CRLF", "display-name", "two-at", "too-long"],
)
def test_an_address_that_is_not_one_plain_address_is_refused(
    sqlite_source, instance, tmp_path, smtp, address
):
    db = sqlite_source
    store_dir = tmp_path / "exports"
    owner = owner_of(db, organization_ids(db)[0])
    own = domain(owner["email"])
    sentence = assert_refused(
        db,
        instance,
        smtp,
        store_dir,
        subscribe(db, owner, [f"ok@{own}", address.replace("{domain}", own)]),
        export_resources(db, store_dir, tmp_path / "work"),
        owner,
        "which is not one email address",
    )
    assert "\x00" not in sentence and "\r" not in sentence


def test_an_address_outside_the_organizations_domains_is_refused(
    sqlite_source, instance, tmp_path, smtp
):
    db = sqlite_source
    store_dir = tmp_path / "exports"
    org, other_org = organization_ids(db)[:2]
    owner, stranger = owner_of(db, org), owner_of(db, other_org)
    assert domain(owner["email"]) != domain(stranger["email"])
    # Another tenant's domain, and the parent domain every tenant's domain shares.
    outside = [stranger["email"], "reports@example.com"]
    assert_refused(
        db,
        instance,
        smtp,
        store_dir,
        subscribe(db, owner, [f"ok@{domain(owner['email'])}", *outside]),
        export_resources(db, store_dir, tmp_path / "work"),
        owner,
        f"holds 2 addresses outside the domains of the organization's own users' email "
        f"addresses ({outside[0]!r}, {outside[1]!r})",
    )


def test_allowed_recipients_are_delivered(sqlite_source, instance, tmp_path, smtp, monkeypatch):
    db = sqlite_source
    resources = export_resources(db, tmp_path / "exports", tmp_path / "work")
    owner = owner_of(db, organization_ids(db)[0])
    own = domain(owner["email"])
    # The default: the organization's own users' domains, in any case.
    team = [f"team@{own}", f"Finance.Lead+reports@{own.upper()}", owner["email"]]
    assert deliver(instance, subscribe(db, owner, team), resources).success
    (mail,) = smtp.received
    assert mail.rcpt_tos == team

    # Configured: exactly the listed domains (instead of the organization's).
    monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", " partner.example.net , AUDIT.example.net")
    outside = ["ap@partner.example.net", "audit@audit.example.net"]
    assert deliver(instance, subscribe(db, owner, outside), resources).success
    assert smtp.received[1].rcpt_tos == outside
    refused = deliver(instance, subscribe(db, owner, [f"team@{own}"]), resources)
    assert not refused.success
    (failure,) = events(instance, refused.run_id, "STEP_FAILURE")
    description = failure.dagster_event.step_failure_data.user_failure_data.description
    assert "outside the email domains this service delivers reports to" in description
    assert "partner" not in description, "the allowed list is not shown to anyone"

    # The most recipients is configurable too.
    monkeypatch.setenv("EXPORT_MAX_RECIPIENTS", "1")
    too_many = deliver(instance, subscribe(db, owner, outside), resources)
    assert not too_many.success and len(smtp.received) == 2


def test_a_malformed_domain_setting_fails_the_run_without_retries_or_a_refusal(
    sqlite_source, instance, tmp_path, smtp, monkeypatch
):
    db = sqlite_source
    owner = owner_of(db, organization_ids(db)[0])
    monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", "example.net,@example.org")
    with pytest.raises(ValueError, match="EXPORT_RECIPIENT_DOMAINS holds '@example.org'"):
        configured_domains()
    result = deliver(
        instance,
        subscribe(db, owner, [owner["email"]]),
        export_resources(db, tmp_path / "exports", tmp_path / "work"),
    )
    assert not result.success and smtp.received == []
    assert not events(instance, result.run_id, "STEP_UP_FOR_RETRY")
    (failure,) = events(instance, result.run_id, "STEP_FAILURE")
    data = failure.dagster_event.step_failure_data.user_failure_data
    assert "the recipient policy is misconfigured" in data.description
    assert "refused" not in data.metadata, "not the subscription's fault: retried by later ticks"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("ops@acme.example.com", None),
        ("first.last+tag@sub.acme.example.com", None),
        ("ops\x00@acme.example.com", "control character"),
        ("ops@acme.example.com\n", "line break"),
        ("Ops <ops@acme.example.com>", "space"),
        ("<ops@acme.example.com>", "display name"),
        ('"ops"@acme.example.com', "display name"),
        ("ops@acme.example.com,evil@x.example.net", "exactly one @"),
        ("ops@@acme.example.com", "exactly one @"),
        ("ops", "exactly one @"),
        (".ops@acme.example.com", "double dots"),
        ("ops@localhost", "not a host name"),
        ("ops@[127.0.0.1]", "not a host name"),
        ("ops@127.0.0.1", "a number"),
        ("ops@-acme.example.com", "not a host name"),
        ("opé@acme.example.com", "outside ASCII"),
        ("o" * 65 + "@acme.example.com", "at most 64"),
        ("o@" + "a" * 250 + ".com", "longer than 254"),
        (42, "not text"),
    ],
)
def test_what_counts_as_one_plain_address(address, problem):
    found = address_problem(address)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_recipient_settings(monkeypatch):
    assert settings.max_recipients() == 50 and settings.recipient_domains() is None
    for bad in ("0", "-3", "fifty"):
        monkeypatch.setenv("EXPORT_MAX_RECIPIENTS", bad)
        with pytest.raises(ValueError, match=f"at least 1, got '{bad}'"):
            settings.max_recipients()
    monkeypatch.setenv("EXPORT_MAX_RECIPIENTS", " 7 ")
    assert settings.max_recipients() == 7
    monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", " , ")
    assert settings.recipient_domains() is None, "blank means unset: the default policy"
    monkeypatch.setenv("EXPORT_RECIPIENT_DOMAINS", "A.example.com, b.example.com,")
    assert settings.recipient_domains() == {"a.example.com", "b.example.com"}
