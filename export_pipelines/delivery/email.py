"""Recurring-report emails for people: compose them (text and HTML alike) and send them.

Every message is `multipart/alternative` — the same blocks (`layout`) as plain text and as
HTML — with the report's file attached under a name a person can read, or linked with the
date the link stops working when the file is too large. A report says what it covers (the
organization, the period, the totals), who it is sent to, and how to stop it: through the
application's page when `EXPORT_SUBSCRIPTION_URL` names one (also as `List-Unsubscribe`),
otherwise by naming the subscription's owner. The owner's notices (a failed or partial
delivery) greet them, say what happened in one sentence and what to do, then the details.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import smtplib
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from export_pipelines.delivery.layout import (
    Block,
    Facts,
    Heading,
    Items,
    Link,
    Note,
    Paragraph,
    to_html,
    to_text,
)
from export_pipelines.settings import SmtpSettings

# By extension, not `mimetypes`: its answers depend on the host's /etc/mime.types, and
# several of these (xlsx, parquet, jsonl) are missing from many of them.
MIME_TYPES = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".xml": "application/xml",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pdf": "application/pdf",
    ".parquet": "application/vnd.apache.parquet",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}
FALLBACK_MIME_TYPE = "application/octet-stream"
# A failure email quotes the error, not a whole traceback.
MAX_ERROR_CHARS = 2_000
# A refused recipient's server reply, as quoted to the owner.
MAX_REPLY_CHARS = 200
SUBSCRIPTION_URL_VARIABLE = "EXPORT_SUBSCRIPTION_URL"
SUBSCRIPTION_ID_FIELD = "{subscription_id}"
MONTHS = (
    "January February March April May June July August September October November December"
).split()
SIGN_OFF = Paragraph("Kind regards,\nThe export service")


def mime_type(path: Path) -> str:
    """The attachment's content type, from the last extension (x.csv.gz is gzip)."""
    return MIME_TYPES.get(path.suffix.lower(), FALLBACK_MIME_TYPE)


def human_size(size: int) -> str:
    """'512 bytes', '12.3 KB', '4.0 MB' (powers of 1024, as mail clients show sizes)."""
    if size < 1024:
        return f"{size:,} byte{'' if size == 1 else 's'}"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:,.1f} {unit}"


def one_line(text: str) -> str:
    """Collapse whitespace, and control characters (NUL, CR, LF, …) to spaces: names from
    the database must not break a header in two, nor put a control character in one."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def day_for_people(day: dt.date) -> str:
    """'30 November 2026' (month names in English whatever the process's locale)."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def period_for_people(first: dt.date, last: dt.date) -> str:
    """A period as a person says it: '30 November 2026', 'November 2026', '2026',
    '23–29 November 2026', '28 November – 4 December 2026'."""
    month = MONTHS[first.month - 1]
    next_month = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    if first == last:
        return day_for_people(first)
    if first.day == 1 and last == next_month - dt.timedelta(days=1):
        return f"{month} {first.year}"
    if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31) and first.year == last.year:
        return str(first.year)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{day_for_people(last)}"
    if first.year == last.year:
        return f"{first.day} {month} – {day_for_people(last)}"
    return f"{day_for_people(first)} – {day_for_people(last)}"


def subscription_url(subscription_id: str) -> str | None:
    """The application's page to manage (and stop) one subscription, from the URL template
    in EXPORT_SUBSCRIPTION_URL (`https://app.example.com/reports/{subscription_id}`; the
    id is percent-encoded), or None when unset: emails then name whom to ask instead."""
    template = os.environ.get(SUBSCRIPTION_URL_VARIABLE, "").strip()
    if not template:
        return None
    if SUBSCRIPTION_ID_FIELD not in template or not template.startswith(("https://", "http://")):
        raise ValueError(
            f"{SUBSCRIPTION_URL_VARIABLE} must be an http(s) URL holding "
            f"{SUBSCRIPTION_ID_FIELD}, got {template[:200]!r}"
        )
    return template.replace(SUBSCRIPTION_ID_FIELD, urllib.parse.quote(subscription_id, safe=""))


@dataclass(frozen=True)
class Person:
    email: str
    name: str = ""

    @property
    def label(self) -> str:
        """'Jane Doe (jane@acme.example)', or the address alone when the name is unknown."""
        name = one_line(self.name)
        return f"{name} ({self.email})" if name else self.email


@dataclass(frozen=True)
class About:
    """Which subscription and period an email is about, in the words a person reads."""

    subscription_id: str
    title: str  # the export type's title: "Credit usage report"
    organization: str  # the organization's name (its id when it has none)
    first: dt.date | None = None  # None: the period is unknown (a run without its tag)
    last: dt.date | None = None
    cadence: str | None = None  # daily | weekly | monthly
    owner: Person | None = None
    manage_url: str | None = None

    @property
    def period(self) -> str:
        if self.first is None or self.last is None:
            return "an unknown period"
        return period_for_people(self.first, self.last)

    @property
    def period_dates(self) -> str:
        """The exact UTC dates, as the files and the receipt name them."""
        if self.first is None or self.last is None:
            return "unknown"
        days = str(self.first) if self.first == self.last else f"{self.first} to {self.last}"
        return f"{days} (UTC)"

    @property
    def report(self) -> str:
        """'the monthly credit usage report for Acme Analytics' (the title never doubled)."""
        title = one_line(self.title)
        if title[:1].isupper() and title[1:2].islower():
            title = title[0].lower() + title[1:]
        if not title.lower().endswith("report"):
            title += " report"
        cadence = f"{self.cadence} " if self.cadence in ("daily", "weekly", "monthly") else ""
        return f"the {cadence}{title} for {one_line(self.organization)}"

    @property
    def subject(self) -> str:
        return f"{one_line(self.title)} for {one_line(self.organization)} — {self.period}"

    def how_to_stop(self) -> Block:
        """The manage link, or whom to ask."""
        if self.manage_url:
            return Link("Manage or stop this report:", self.manage_url)
        asked = f"{self.owner.label}, who set it up, or " if self.owner else ""
        return Note(
            f"To stop receiving this report or change who gets it, ask {asked}an "
            f"administrator of {one_line(self.organization)}."
        )


@dataclass(frozen=True)
class Download:
    """A link to the published file, and when it stops working."""

    url: str
    expires_at: dt.datetime


def compose_message(
    sender: str,
    recipients: Sequence[str],
    subject: str,
    blocks: Sequence[Block],
    attachment: tuple[Path, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """A `multipart/alternative` message saying `blocks` as text and HTML, with
    `attachment` (the file, the name a person sees) if given."""
    if not recipients:
        raise ValueError("a report email needs at least one recipient")
    out = EmailMessage()
    out["From"] = sender
    out["To"] = ", ".join(recipients)
    out["Subject"] = one_line(subject)
    out["Date"] = email.utils.formatdate(usegmt=True)
    out["Message-ID"] = email.utils.make_msgid(domain=_domain(sender))
    # RFC 3834: sent by a program, so vacation responders and auto-forwarders stay quiet.
    out["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        out[name] = value
    out.set_content(to_text(blocks))
    out.add_alternative(to_html(one_line(subject), blocks), subtype="html")
    if attachment is not None:
        path, name = attachment
        maintype, subtype = mime_type(path).split("/")
        # Text formats are written in UTF-8; saying so keeps mail clients from guessing.
        # `name` on the type as well as `filename`: some clients read only the former.
        params = {"name": name} | ({"charset": "utf-8"} if maintype == "text" else {})
        # Bytes are always base64-encoded: the attachment arrives byte for byte, CRLFs
        # included; a non-ASCII name travels RFC 2231-encoded (`filename*=utf-8''…`).
        out.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=name, params=params
        )
    return out


def compose_report_email(
    settings: SmtpSettings,
    about: About,
    recipients: Sequence[str],
    rows: int,
    totals: Mapping[str, Any],
    file: Path,
    attachment_name: str,
    download: Download | None,
    max_attachment_bytes: int,
) -> EmailMessage:
    """The report: attached under `attachment_name` when it fits `max_attachment_bytes`,
    else linked (`download`)."""
    size = file.stat().st_size
    summary = [
        ("Organization", one_line(about.organization)),
        ("Period", about.period_dates),
        ("Rows", f"{rows:,}"),
        *((one_line(label), _value(value)) for label, value in scalar_totals(totals).items()),
    ]
    if size <= max_attachment_bytes:
        file_block: Block = Paragraph(
            f"The file is attached: {attachment_name} ({human_size(size)})."
        )
        attachment = (file, attachment_name)
    else:
        if download is None:
            raise ValueError(
                f"{file.name} ({human_size(size)}) is over the {human_size(max_attachment_bytes)} "
                "attachment limit and no download link was given"
            )
        file_block = Link(
            f"The file {attachment_name} ({human_size(size)}) is larger than the "
            f"{human_size(max_attachment_bytes)} attachment limit. Download it from this link "
            f"until {_moment(download.expires_at)}:",
            download.url,
        )
        attachment = None
    sent_to = ", ".join(recipients)
    why = f" {about.owner.label} set up this report." if about.owner else ""
    blocks = [
        Paragraph("Hello,"),
        Paragraph(f"Here is {about.report}, covering {about.period}."),
        Heading("Summary"),
        Facts(tuple(summary)),
        file_block,
        SIGN_OFF,
        Note(f"This report is sent to {_count(recipients, 'recipient')}: {sent_to}.{why}"),
        about.how_to_stop(),
    ]
    headers = {"List-Unsubscribe": f"<{about.manage_url}>"} if about.manage_url else {}
    return compose_message(
        settings.sender, list(recipients), about.subject, blocks, attachment, headers
    )


def scalar_totals(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The totals a summary shows: numbers and dates. Breakdowns (credits by user id) are
    left to the file: keyed by ids, they mean little in an email."""
    return {label: value for label, value in totals.items() if not isinstance(value, dict)}


def compose_failure_email(
    settings: SmtpSettings,
    owner: Person,
    about: About,
    error: str,
    refused: bool = False,
    retry_later: bool = False,
) -> EmailMessage:
    """Tell a subscription's owner that a delivery failed: for good (retries exhausted), or
    for now (`retry_later`: a later tick of `daily_reports` tries the period again), or
    was refused (`refused`: the subscription no longer passes its checks; never retried)."""
    reason = error.strip()
    if len(reason) > MAX_ERROR_CHARS:
        reason = reason[:MAX_ERROR_CHARS] + " […]"
    if refused:
        what = (
            "The subscription no longer passes its checks, so nothing was sent to anyone "
            f"for {about.period}."
        )
        todo = (
            "Later periods will not be delivered either until the reason below is resolved "
            "(for example, the owner's access is restored, the subscription is given a new "
            "owner, or its recipients are corrected)."
        )
    elif retry_later:
        what = f"It was retried and failed; no file was sent for {about.period} yet."
        todo = (
            "You need not do anything: it will be tried again automatically at the next daily "
            "delivery (06:00 UTC), and you will be told if that fails too. Later periods will "
            "still be delivered on schedule."
        )
    else:
        what = f"It was retried and has now failed for good; no file was sent for {about.period}."
        todo = (
            "Later periods will still be delivered on schedule. If the reason below is one you "
            "can fix, fix it; otherwise forward this email to your administrator."
        )
    blocks = _owner_notice(
        owner,
        about,
        f"{about.report[0].upper()}{about.report[1:]}, covering {about.period}, could not be "
        f"delivered. {what}",
        [Paragraph(todo)],
        [("Error", one_line(reason))],
    )
    return compose_message(
        settings.sender, [owner.email], f"Delivery failed: {about.subject}", blocks
    )


def compose_partial_delivery_email(
    settings: SmtpSettings,
    owner: Person,
    about: About,
    delivered_to: Sequence[str],
    refused: Mapping[str, str],
) -> EmailMessage:
    """Tell a subscription's owner that the email server refused some recipients (`refused`:
    address → the server's reply); the report reached `delivered_to` and is not re-sent."""
    blocks = _owner_notice(
        owner,
        about,
        f"{about.report[0].upper()}{about.report[1:]}, covering {about.period}, reached "
        f"{_count(delivered_to, 'recipient')}, but the email server refused "
        f"{_count(refused, 'recipient')}:",
        [
            Items(
                tuple(
                    f"{one_line(address)}: {one_line(reply)[:MAX_REPLY_CHARS]}"
                    for address, reply in refused.items()
                )
            ),
            Paragraph(
                "The report will not be re-sent for this period. If these addresses are "
                "wrong, correct the subscription's recipients so that later periods reach them."
            ),
        ],
        [("Delivered to", ", ".join(delivered_to))],
    )
    return compose_message(
        settings.sender, [owner.email], f"Partly delivered: {about.subject}", blocks
    )


def _owner_notice(
    owner: Person,
    about: About,
    what: str,
    todo: Sequence[Block],
    details: Sequence[tuple[str, str]],
) -> list[Block]:
    """Greeting, what happened, what to do, the manage link, then the details for whoever
    investigates."""
    name = one_line(owner.name)
    manage = [Link("Manage this report:", about.manage_url)] if about.manage_url else []
    return [
        Paragraph(f"Hello {name}," if name else "Hello,"),
        Paragraph(what),
        *todo,
        *manage,
        SIGN_OFF,
        Heading("Details"),
        Facts(
            (
                ("Subscription", about.subscription_id),
                ("Organization", one_line(about.organization)),
                ("Period", about.period_dates),
                *details,
            )
        ),
        Note("You receive this because you own this report subscription."),
    ]


def smtp_reply(refusal: tuple[int, bytes | str]) -> str:
    """One refused recipient's SMTP answer as text: '550 5.1.1 No such mailbox'."""
    code, text = refusal
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return one_line(f"{code} {text}")


def _count(items: Sized, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}"


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:,}"
    return one_line(str(value))


def _moment(at: dt.datetime) -> str:
    at = at.astimezone(dt.timezone.utc)
    return f"{day_for_people(at.date())} {at:%H:%M} UTC"


def send_message(
    settings: SmtpSettings, message: EmailMessage, timeout: float = 30
) -> dict[str, tuple[int, bytes]]:
    """Send over SMTP: STARTTLS when configured, AUTH when user and password are set.

    Returns the recipients the server refused ({address: (code, reply)}; empty when it
    accepted them all): the message went to the others, so a caller must not send it
    again to them. Raises `smtplib.SMTPRecipientsRefused` only when every recipient is
    refused (nothing was sent), and any other SMTP or connection error as it comes.
    """
    if bool(settings.user) != bool(settings.password):
        # Sending unauthenticated would fail later with a vaguer "relay denied".
        raise ValueError("EXPORT_SMTP_USER and EXPORT_SMTP_PASSWORD must be set together")
    with smtplib.SMTP(settings.host, settings.port, timeout=timeout) as smtp:
        if settings.starttls:
            # The system's CAs (or SSL_CERT_FILE's) and a host-name check, never a bare TLS.
            smtp.starttls(context=ssl.create_default_context())
        if settings.user and settings.password:
            smtp.login(settings.user, settings.password)
        return dict(smtp.send_message(message))


def send_report(settings: SmtpSettings, message: EmailMessage, timeout: float = 30) -> None:
    """Send over SMTP (`send_message`), and raise if any recipient was refused.

    smtplib raises only when every recipient is refused; here a partial delivery raises
    too, so no recipient silently goes without. A caller that must not re-send to the
    accepted ones (a retried report) uses `send_message` and handles the refused itself.
    """
    refused = send_message(settings, message, timeout)
    if refused:
        raise smtplib.SMTPRecipientsRefused(refused)


def _domain(address: str) -> str:
    # make_msgid's own default calls socket.getfqdn(), which can stall on DNS.
    _, parsed = email.utils.parseaddr(address)
    return parsed.rpartition("@")[2] or "localhost"
