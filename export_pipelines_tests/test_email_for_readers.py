"""Report emails written for people (issue 11), received and parsed through a real SMTP
server (aiosmtpd): HTML and text parts saying the same, the totals, a readable attachment
name, how to stop the report, untrusted names escaped."""

from __future__ import annotations

import datetime as dt
import html.parser
import json
import re
import uuid
from email.message import EmailMessage

import pytest

from export_pipelines.defs.reports import deliver_report_job, report_run_request
from export_pipelines.delivery.email import (
    About,
    Person,
    compose_failure_email,
    compose_partial_delivery_email,
    compose_report_email,
    period_for_people,
    send_report,
    subscription_url,
)
from export_pipelines.settings import SmtpSettings

from .conftest import export_resources, organization_ids
from .smtp_server import SmtpServer

SENDER = "reports@export-pipelines.test"
HOSTILE = 'Acme <script>alert("x")</script> & "Partners\' Ltd'
OWNER = Person("olivia@acme.example.com", "Olivia <b>Owner</b>")
MONDAY, SUNDAY = dt.date(2026, 3, 2), dt.date(2026, 3, 8)  # the demo data's week


class _Page(html.parser.HTMLParser):
    """What a mail client would render: the text, the tags, the links."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [value for name, value in attrs if name == "href"]
        assert not any(name == "style" and "url(" in (value or "") for name, value in attrs)

    def handle_data(self, data):
        self.text.append(data)


def parsed_html(message: EmailMessage) -> _Page:
    page = _Page()
    page.feed(message.get_body(preferencelist=("html",)).get_content())
    return page


def text_of(message: EmailMessage) -> str:
    # As received: the wire's CRLF line ends, read as a person's lines.
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def one_line_text(page: _Page) -> str:
    return " ".join(" ".join(page.text).split())


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


def smtp_settings(server: SmtpServer) -> SmtpSettings:
    return SmtpSettings(server.host, server.port, SENDER, None, None, False)


def about(organization: str = HOSTILE, **kw) -> About:
    fields = {"first": MONDAY, "last": SUNDAY, "cadence": "weekly", "owner": OWNER} | kw
    return About("sub-1", "Credit usage report", organization, **fields)


def test_a_report_has_html_and_text_alike_totals_and_a_readable_attachment(smtp, tmp_path):
    file = tmp_path / "credit_usage_report_org-1_2026-03-02_2026-03-08.csv"
    file.write_bytes(b"transaction_id,amount\r\nt1,5\r\n")
    name = "Credit usage report — Tōkyō Ōsaka — 2026-03-02 to 2026-03-08.csv"
    totals = {"Entries": 1234, "Credits spent": 5678.5, "Credits spent by user": {"u1": 5}}
    url = "https://app.example.com/reports/sub-1"

    send_report(
        smtp_settings(smtp),
        compose_report_email(
            smtp_settings(smtp),
            about(manage_url=url),
            ["finance@acme.example.com"],
            1234,
            totals,
            file,
            name,
            None,
            1 << 20,
        ),
    )

    (got,) = smtp.received
    mail = got.message
    assert mail["Subject"] == f"Credit usage report for {HOSTILE} — 2–8 March 2026"
    assert mail.get_content_type() == "multipart/mixed"
    (alternative, attachment) = mail.iter_parts()
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert mail["List-Unsubscribe"] == f"<{url}>"
    assert mail["Auto-Submitted"] == "auto-generated"
    raw_headers = re.split(rb"\r?\n\r?\n", got.raw, maxsplit=1)[0]
    assert raw_headers.isascii(), "RFC 2047 / 2231 encoded, no SMTPUTF8 needed"
    assert b"filename*" in got.raw, "a non-ASCII file name travels RFC 2231-encoded"
    assert attachment.get_filename() == name
    assert attachment.get_payload(decode=True) == file.read_bytes()

    text, page = text_of(mail), parsed_html(mail)
    rendered = one_line_text(page)
    for said in (
        "Hello,",
        f"Here is the weekly credit usage report for {HOSTILE}, covering 2–8 March 2026.",
        "Entries: 1,234",
        "Credits spent: 5,678.5",
        "Period: 2026-03-02 to 2026-03-08 (UTC)",
        "This report is sent to 1 recipient: finance@acme.example.com.",
        "Olivia <b>Owner</b> (olivia@acme.example.com) set up this report.",
        "Kind regards,",
    ):
        assert said in text, said
    for said in ("Entries 1,234", "Credits spent 5,678.5", f"for {HOSTILE}, covering", name):
        assert said in rendered, said
    assert "report report" not in text.lower() and "report report" not in rendered.lower()
    assert "u1" not in text, "breakdowns by id stay in the file"
    # Escaped, so a client shows the names and runs nothing.
    assert "script" not in page.tags and "b" not in page.tags
    assert set(page.tags) <= {"html", "head", "meta", "title", "body", "div", "p", "h2"} | {
        "table",
        "tr",
        "th",
        "td",
        "br",
        "a",
        "ul",
        "li",
    }
    assert "<img" not in mail.get_body(preferencelist=("html",)).get_content()
    assert page.links == [url]
    assert f"Manage or stop this report:\n{url}" in text


def test_without_a_manage_page_the_email_says_whom_to_ask(smtp, tmp_path):
    file = tmp_path / "r.pdf"
    file.write_bytes(b"%PDF-1.4 ...")
    settings = smtp_settings(smtp)
    message = compose_report_email(
        settings, about("Acme"), ["a@acme.example.com"], 3, {}, file, "R.pdf", None, 1 << 20
    )
    send_report(settings, message)

    (got,) = smtp.received
    assert got.message["List-Unsubscribe"] is None
    expected = (
        "To stop receiving this report or change who gets it, ask Olivia <b>Owner</b> "
        "(olivia@acme.example.com), who set it up, or an administrator of Acme."
    )
    assert expected in text_of(got.message)
    assert expected in one_line_text(parsed_html(got.message))


def test_the_manage_url_comes_from_its_template(monkeypatch):
    monkeypatch.delenv("EXPORT_SUBSCRIPTION_URL", raising=False)
    assert subscription_url("sub-1") is None
    monkeypatch.setenv(
        "EXPORT_SUBSCRIPTION_URL", "https://app.example.com/r/{subscription_id}/edit"
    )
    assert subscription_url("a/b c?&") == "https://app.example.com/r/a%2Fb%20c%3F%26/edit"
    for bad in ("https://app.example.com/reports", "javascript:alert({subscription_id})"):
        monkeypatch.setenv("EXPORT_SUBSCRIPTION_URL", bad)
        with pytest.raises(ValueError, match="EXPORT_SUBSCRIPTION_URL must be an http"):
            subscription_url("sub-1")


@pytest.mark.parametrize(
    ("first", "last", "said"),
    [
        ("2026-11-30", "2026-11-30", "30 November 2026"),
        ("2026-11-01", "2026-11-30", "November 2026"),
        ("2026-02-01", "2026-02-28", "February 2026"),
        ("2026-01-01", "2026-12-31", "2026"),
        ("2026-11-23", "2026-11-29", "23–29 November 2026"),
        ("2026-11-30", "2026-12-06", "30 November – 6 December 2026"),
        ("2025-12-29", "2026-01-04", "29 December 2025 – 4 January 2026"),
    ],
)
def test_periods_as_people_say_them(first, last, said):
    assert period_for_people(dt.date.fromisoformat(first), dt.date.fromisoformat(last)) == said


def test_the_owners_notices_greet_say_what_happened_and_what_to_do(smtp):
    settings = smtp_settings(smtp)
    send_report(
        settings,
        compose_failure_email(
            settings, OWNER, about(), "the email server refused every recipient", retry_later=True
        ),
    )
    send_report(
        settings,
        compose_partial_delivery_email(
            settings,
            OWNER,
            about(),
            ["ok@acme.example.com"],
            {"gone@acme.example.com": "550 5.1.1 No such mailbox"},
        ),
    )

    failed, partial = (r.message for r in smtp.received)
    assert (
        failed["Subject"] == f"Delivery failed: Credit usage report for {HOSTILE} — 2–8 March 2026"
    )
    text = text_of(failed)
    assert text.startswith("Hello Olivia <b>Owner</b>,\n\n")
    assert (
        f"The weekly credit usage report for {HOSTILE}, covering 2–8 March 2026, could not be "
        "delivered." in text
    )
    assert "You need not do anything" in text
    assert "Error: the email server refused every recipient" in text
    page = parsed_html(failed)
    assert "b" not in page.tags and "script" not in page.tags
    assert "You need not do anything" in one_line_text(page)

    assert partial["Subject"].startswith("Partly delivered: Credit usage report for Acme")
    text = text_of(partial)
    assert text.startswith("Hello Olivia <b>Owner</b>,")
    assert "- gone@acme.example.com: 550 5.1.1 No such mailbox" in text
    assert "correct the subscription's recipients" in text
    assert "gone@acme.example.com: 550 5.1.1 No such mailbox" in one_line_text(parsed_html(partial))


def test_a_delivered_report_carries_the_pipelines_totals_and_a_readers_name(
    sqlite_source, instance, tmp_path, smtp, monkeypatch
):
    """Through deliver_report_job: the totals are the period's, over the source's rows; the
    attachment is named for people while the published file keeps its contract name."""
    db = sqlite_source
    org = organization_ids(db)[0]
    db.execute("UPDATE organizations SET name = :name WHERE id = :id", {"name": HOSTILE, "id": org})
    owner = db.fetch_rows(
        "SELECT * FROM users WHERE organization_id = :org ORDER BY id LIMIT 1", {"org": org}
    )[0]
    sub_id = f"sub-{uuid.uuid4().hex[:12]}"
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES (:id, :org, :user, 'credit_usage_report', 'CSV', 'weekly', :to, NULL, :no, "
        "NULL, :at)",
        {
            "id": sub_id,
            "org": org,
            "user": owner["id"],
            "to": json.dumps([owner["email"]]),
            "no": False,
            "at": dt.datetime(2026, 3, 1),
        },
    )
    for name, value in (("HOST", smtp.host), ("PORT", str(smtp.port)), ("FROM", SENDER)):
        monkeypatch.setenv(f"EXPORT_SMTP_{name}", value)
    monkeypatch.delenv("EXPORT_RECIPIENT_DOMAINS", raising=False)
    monkeypatch.setenv(
        "EXPORT_SUBSCRIPTION_URL", "https://app.example.com/reports/{subscription_id}"
    )
    store_dir = tmp_path / "exports"
    request = report_run_request(
        {"id": sub_id, "organization_id": org, "export_type": "credit_usage_report"},
        MONDAY,
        SUNDAY,
        f"{sub_id}:{MONDAY}:{SUNDAY}",
    )

    result = deliver_report_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=export_resources(db, store_dir, tmp_path / "work"),
    )

    assert result.success
    (got,) = smtp.received
    mail = got.message
    bounds = {"org": org, "start": dt.datetime(2026, 3, 2), "end": dt.datetime(2026, 3, 9)}
    entries, spent = db.fetch_rows(
        "SELECT count(*) AS n, sum(CASE WHEN amount < 0 THEN -amount ELSE 0 END) AS spent "
        "FROM credit_ledger WHERE organization_id = :org AND created_at >= :start "
        "AND created_at < :end",
        bounds,
    )[0].values()
    assert entries > 0
    text = text_of(mail)
    assert f"Entries: {entries:,}" in text and f"Rows: {entries:,}" in text
    assert f"Credits spent: {spent:,}" in text, text
    assert mail["Subject"] == f"Credit usage report for {HOSTILE} — 2–8 March 2026"
    assert mail["List-Unsubscribe"] == f"<https://app.example.com/reports/{sub_id}>"
    (attachment,) = mail.iter_attachments()
    # '<', '>', '"' and '/' are not safe in a file name: they become spaces, then collapse.
    assert attachment.get_filename() == (
        "Credit usage report — Acme script alert( x ) script & Partners' Ltd — "
        "2026-03-02 to 2026-03-08.csv"
    )
    (published,) = store_dir.rglob("*.csv")
    assert published.name == f"credit_usage_report_{org}_2026-03-02_2026-03-08.csv"
    assert attachment.get_payload(decode=True) == published.read_bytes()
    assert "script" not in parsed_html(mail).tags
