"""Recurring-report emails sent through a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import os
import re
import smtplib
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_pipelines.delivery.email import (
    About,
    Download,
    Person,
    compose_failure_email,
    compose_message,
    compose_report_email,
    human_size,
    send_report,
)
from export_pipelines.delivery.layout import Paragraph
from export_pipelines.settings import SmtpSettings

from .smtp_server import Received, SmtpServer

SENDER = "exports@reports.example.com"
RECIPIENTS = ["alice@acme.example.com", "bob@acme.example.com"]
FIRST, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 7)
PERIOD = "2026-03-01 to 2026-03-07"  # the exact dates, in the details
PERIOD_FOR_PEOPLE = "1–7 March 2026"  # in the subject and the first sentence
READABLE = "Scan results — Acme Corp — 2026-03-01 to 2026-03-07.csv"
OWNER = Person("owner@acme.example.com", "Olivia Owner")
ROWS = [
    ["scan_id", "project", "owner", "score"],
    ["scan-001", "Website", "Amélie Dubois", "0.5"],
    ["scan-002", 'Blog, "new"', "王芳", "1"],
    ["scan-003", "=SUM(A1)", "Seán O'Brien", ""],
]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def settings_for(server: SmtpServer, **overrides) -> SmtpSettings:
    plain = SmtpSettings(
        host=server.host, port=server.port, sender=SENDER, user=None, password=None, starttls=False
    )
    return dataclasses.replace(plain, **overrides)


def write_csv(path: Path, rows: list[list[str]] = ROWS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)
    return path


def only(server: SmtpServer) -> Received:
    assert len(server.received) == 1, [r.message["Subject"] for r in server.received]
    return server.received[0]


def body_text(received: Received) -> str:
    return received.message.get_body(preferencelist=("plain",)).get_content()


def about(organization: str = "Acme Corp", **kw) -> About:
    fields = {"first": FIRST, "last": LAST, "cadence": "weekly", "owner": OWNER} | kw
    return About("sub-1", "Scan results", organization, **fields)


def report(
    settings: SmtpSettings,
    file: Path,
    *,
    limit: int,
    url: str | None = None,
    organization_name: str = "Acme Corp",
    row_count: int = 1234,
    name: str = READABLE,
):
    download = Download(url, dt.datetime(2026, 3, 15, 6, tzinfo=dt.timezone.utc)) if url else None
    return compose_report_email(
        settings,
        about(organization_name),
        RECIPIENTS,
        row_count,
        {"Scans": row_count},
        file,
        name,
        download,
        limit,
    )


def test_report_arrives_with_the_file_attached_byte_for_byte(smtp, tmp_path):
    settings = settings_for(smtp)
    file = write_csv(tmp_path / "scan_results_acme_2026-03-07.csv")
    unused_url = f"https://downloads.example.com/{uuid.uuid4()}"

    send_report(settings, report(settings, file, limit=1 << 20, url=unused_url))

    got = only(smtp)
    assert got.mail_from == SENDER
    assert got.rcpt_tos == RECIPIENTS
    assert got.message["To"].addresses[1].addr_spec == RECIPIENTS[1]
    assert got.message["Subject"] == f"Scan results for Acme Corp — {PERIOD_FOR_PEOPLE}"
    body = body_text(got)
    assert "Acme Corp" in body
    assert PERIOD in body
    assert "1,234" in body
    assert f"attached: {READABLE} ({human_size(file.stat().st_size)})" in body
    assert unused_url not in body
    [attachment] = got.message.iter_attachments()
    assert attachment.get_filename() == READABLE
    assert attachment.get_content_type() == "text/csv"
    data = attachment.get_payload(decode=True)
    assert data == file.read_bytes()
    assert list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""))) == ROWS


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("r.csv", "text/csv"),
        ("r.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("r.pdf", "application/pdf"),
        ("r.json", "application/json"),
        ("r.jsonl", "application/x-ndjson"),
        ("r.xml", "application/xml"),
        ("r.parquet", "application/vnd.apache.parquet"),
        ("r.csv.gz", "application/gzip"),
        ("r.xlsx.zip", "application/zip"),
        ("r.bin", "application/octet-stream"),
    ],
)
def test_attachment_type_follows_the_extension(smtp, tmp_path, name, content_type):
    settings = settings_for(smtp)
    file = tmp_path / name
    file.write_bytes(os.urandom(300) + b"\r\n\x00\r\n")  # bytes no text encoding would keep

    send_report(settings, report(settings, file, limit=1 << 20, name=f"Readable {name}"))

    [attachment] = only(smtp).message.iter_attachments()
    assert attachment.get_content_type() == content_type
    assert attachment.get_filename() == f"Readable {name}"
    assert attachment.get_payload(decode=True) == file.read_bytes()


def test_parquet_attachment_reads_back_as_the_same_table(smtp, tmp_path):
    settings = settings_for(smtp)
    table = pa.table({"id": [f"s{i}" for i in range(50)], "score": [i / 7 for i in range(50)]})
    file = tmp_path / "scan_results.parquet"
    pq.write_table(table, file)

    send_report(settings, report(settings, file, limit=1 << 20, row_count=50))

    [attachment] = only(smtp).message.iter_attachments()
    assert pq.read_table(pa.BufferReader(attachment.get_payload(decode=True))).equals(table)


@pytest.mark.parametrize(("slack", "attached"), [(0, True), (-1, False)])
def test_a_file_over_the_limit_is_linked_instead_of_attached(smtp, tmp_path, slack, attached):
    settings = settings_for(smtp)
    file = write_csv(tmp_path / "scan_results.csv")
    # Shaped like a presigned URL: '&', '=' and '%' must reach the reader unchanged.
    url = (
        "https://exports.example.com/scan_results/org%3Dacme/scan_results.csv"
        f"?X-Amz-Expires=604800&X-Amz-Signature={uuid.uuid4().hex}"
    )

    send_report(settings, report(settings, file, limit=file.stat().st_size + slack, url=url))

    got = only(smtp)
    body = body_text(got)
    attachments = list(got.message.iter_attachments())
    if attached:
        assert [a.get_filename() for a in attachments] == [READABLE]
        assert url not in body
    else:
        assert attachments == []
        assert got.message.get_content_type() == "multipart/alternative"
        assert url in body
        assert READABLE in body
        assert "until 15 March 2026 06:00 UTC" in body
        assert "attached:" not in body


def test_a_file_over_the_limit_without_a_link_is_refused(tmp_path):
    file = write_csv(tmp_path / "scan_results.csv")
    settings = SmtpSettings("127.0.0.1", 25, SENDER, None, None, False)
    with pytest.raises(ValueError, match=re.escape(file.name)):
        report(settings, file, limit=file.stat().st_size - 1, url=None)


def test_failure_email_reaches_the_owner(smtp):
    settings = settings_for(smtp)
    subscription = str(uuid.uuid4())
    error = f"S3 PutObject failed: SlowDown ({uuid.uuid4().hex})"

    send_report(
        settings,
        compose_failure_email(
            settings, OWNER, dataclasses.replace(about(), subscription_id=subscription), error
        ),
    )

    got = only(smtp)
    assert got.rcpt_tos == ["owner@acme.example.com"]
    assert "failed" in got.message["Subject"].lower()
    assert "Scan results" in got.message["Subject"]
    assert PERIOD_FOR_PEOPLE in got.message["Subject"]
    body = body_text(got)
    assert subscription in body
    assert PERIOD in body
    assert error in body
    assert list(got.message.iter_attachments()) == []


def test_failure_email_quotes_a_long_error_only_in_part(tmp_path):
    settings = SmtpSettings("127.0.0.1", 25, SENDER, None, None, False)
    error = "Traceback line\n" * 2_000
    sent = compose_failure_email(settings, OWNER, about(), error)
    body = sent.get_body(preferencelist=("plain",)).get_content()
    assert "Traceback line" in body
    assert len(body) < len(error) // 5


@pytest.mark.parametrize(
    "organization", ["東京コンテンツ株式会社", "Rocket 🚀 Marketing", "Müller-Lüdenscheidt GmbH"]
)
def test_unicode_organization_names_survive(smtp, tmp_path, organization):
    settings = settings_for(smtp)
    file = write_csv(tmp_path / "scan_results.csv")

    send_report(settings, report(settings, file, limit=1 << 20, organization_name=organization))

    got = only(smtp)
    assert got.message["Subject"] == f"Scan results for {organization} — {PERIOD_FOR_PEOPLE}"
    assert f"for {organization}" in body_text(got)
    # Headers travel RFC 2047-encoded: no SMTPUTF8 needed (the test server doesn't offer it).
    raw_headers = re.split(rb"\r?\n\r?\n", got.raw, maxsplit=1)[0]
    assert raw_headers.isascii(), raw_headers
    [attachment] = got.message.iter_attachments()
    assert attachment.get_payload(decode=True) == file.read_bytes()


def test_a_newline_in_an_organization_name_cannot_add_headers(smtp, tmp_path):
    settings = settings_for(smtp)
    file = write_csv(tmp_path / "scan_results.csv")
    organization = "Acme\r\nBcc: attacker@evil.example.com"

    send_report(settings, report(settings, file, limit=1 << 20, organization_name=organization))

    got = only(smtp)
    assert got.rcpt_tos == RECIPIENTS
    assert got.message["Bcc"] is None
    assert got.message["Subject"].startswith("Scan results for Acme Bcc: attacker")


def test_report_message_without_recipients_is_refused():
    with pytest.raises(ValueError, match="recipient"):
        compose_message(SENDER, [], "Subject", [Paragraph("Body")])


def test_a_partly_refused_delivery_raises_naming_the_refused_address(tmp_path):
    file = write_csv(tmp_path / "scan_results.csv")
    with SmtpServer(refuse=[RECIPIENTS[1]]) as server:
        settings = settings_for(server)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send_report(settings, report(settings, file, limit=1 << 20))
        assert list(refused.value.recipients) == [RECIPIENTS[1]]
        assert only(server).rcpt_tos == [RECIPIENTS[0]]


def test_sending_to_a_closed_port_raises_connection_refused(tmp_path):
    # Bind then close: the kernel just handed out this port and nothing listens on it now.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = SmtpSettings("127.0.0.1", port, SENDER, None, None, False)
    message = compose_message(SENDER, RECIPIENTS, "Subject", [Paragraph("Body")])
    with pytest.raises(ConnectionRefusedError):
        send_report(settings, message, timeout=5)


@pytest.fixture
def tls_smtp(monkeypatch) -> Iterator[SmtpServer]:
    """STARTTLS required, AUTH required; this process trusts the server's own certificate."""
    with SmtpServer(tls=True, credentials=("reports", "s3cret")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
        yield server


def test_starttls_then_login_delivers(tls_smtp, tmp_path):
    settings = settings_for(tls_smtp, starttls=True, user="reports", password="s3cret")
    file = write_csv(tmp_path / "scan_results.csv")

    send_report(settings, report(settings, file, limit=1 << 20))

    got = only(tls_smtp)
    assert got.tls
    assert got.login == "reports"
    [attachment] = got.message.iter_attachments()
    assert attachment.get_payload(decode=True) == file.read_bytes()


def test_a_wrong_password_is_an_authentication_error(tls_smtp):
    settings = settings_for(tls_smtp, starttls=True, user="reports", password="wrong")
    message = compose_message(SENDER, RECIPIENTS, "Subject", [Paragraph("Body")])
    with pytest.raises(smtplib.SMTPAuthenticationError):
        send_report(settings, message)
    assert tls_smtp.received == []


def test_without_starttls_the_server_offers_no_auth(tls_smtp):
    settings = settings_for(tls_smtp, starttls=False, user="reports", password="s3cret")
    message = compose_message(SENDER, RECIPIENTS, "Subject", [Paragraph("Body")])
    with pytest.raises(smtplib.SMTPNotSupportedError):
        send_report(settings, message)
    assert tls_smtp.received == []


def test_starttls_verifies_the_certificate(tls_smtp, monkeypatch):
    # Only the system's CAs now: the self-signed certificate must be rejected.
    monkeypatch.delenv("SSL_CERT_FILE")
    settings = settings_for(tls_smtp, starttls=True, user="reports", password="s3cret")
    message = compose_message(SENDER, RECIPIENTS, "Subject", [Paragraph("Body")])
    with pytest.raises(ssl.SSLCertVerificationError):
        send_report(settings, message)
    assert tls_smtp.received == []


def test_user_without_password_is_a_configuration_error(smtp):
    settings = settings_for(smtp, user="reports")
    message = compose_message(SENDER, RECIPIENTS, "Subject", [Paragraph("Body")])
    with pytest.raises(ValueError, match="EXPORT_SMTP_PASSWORD"):
        send_report(settings, message)
    assert smtp.received == []


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1, "1 byte"), (1023, "1,023 bytes"), (1536, "1.5 KB"), (5 << 20, "5.0 MB")],
)
def test_human_size(size, text):
    assert human_size(size) == text
