"""Recurring-report emails: compose them (file attached, or a link when too large) and send."""

from __future__ import annotations

import email.utils
import smtplib
import ssl
from collections.abc import Mapping, Sequence, Sized
from email.message import EmailMessage
from pathlib import Path

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


def report_message(
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    attachment: Path | None,
    link: str | None,
) -> EmailMessage:
    """A plain-text message with `body`, then `link` if given, and `attachment` if given."""
    if not recipients:
        raise ValueError("a report email needs at least one recipient")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = one_line(subject)
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=_domain(sender))
    text = body.rstrip("\n") + "\n"
    if link:
        text += f"\nDownload: {link}\n"
    message.set_content(text)
    if attachment is not None:
        maintype, subtype = mime_type(attachment).split("/")
        # Text formats are written in UTF-8; saying so keeps mail clients from guessing.
        params = {"charset": "utf-8"} if maintype == "text" else None
        # Bytes are always base64-encoded: the attachment arrives byte for byte, CRLFs included.
        message.add_attachment(
            attachment.read_bytes(),
            maintype=maintype,
            subtype=subtype,
            filename=attachment.name,
            params=params,
        )
    return message


def compose_report_email(
    settings: SmtpSettings,
    recipients: Sequence[str],
    export_title: str,
    organization_name: str,
    period_label: str,
    row_count: int,
    file: Path,
    download_url: str | None,
    max_attachment_bytes: int,
) -> EmailMessage:
    """The recurring report: attached when it fits `max_attachment_bytes`, else linked."""
    organization = one_line(organization_name)
    size = file.stat().st_size
    rows = f"{row_count:,} row{'' if row_count == 1 else 's'}"
    lines = [
        f"Your recurring {export_title} report for {organization} is ready.",
        "",
        f"Organization: {organization}",
        f"Period: {period_label}",
        f"Rows: {row_count:,}",
    ]
    if size <= max_attachment_bytes:
        lines.append(f"The file is attached: {file.name} ({human_size(size)}).")
        attachment, link = file, None
    else:
        if not download_url:
            raise ValueError(
                f"{file.name} ({human_size(size)}) is over the {human_size(max_attachment_bytes)} "
                "attachment limit and no download link was given"
            )
        lines.append(
            f"The file {file.name} ({human_size(size)}) is larger than the "
            f"{human_size(max_attachment_bytes)} attachment limit; download it from the link below."
        )
        attachment, link = None, download_url
    return report_message(
        settings.sender,
        list(recipients),
        f"{export_title} for {organization} — {period_label} ({rows})",
        "\n".join(lines),
        attachment,
        link,
    )


def compose_failure_email(
    settings: SmtpSettings,
    owner_email: str,
    subscription_id: str,
    export_title: str,
    period_label: str,
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
        what = [
            "The subscription no longer passes its checks, so nothing was sent to "
            "anyone for this period.",
            "Later periods will not be delivered either until the reason below is "
            "resolved (for example, the owner's access is restored, the subscription "
            "is given a new owner, or its recipients are corrected).",
        ]
    elif retry_later:
        what = [
            "It was retried and failed; no file was sent for this period yet.",
            "It will be tried again automatically at the next daily delivery (06:00 UTC); "
            "you will be told if that fails too.",
            "Later periods will still be delivered on schedule.",
        ]
    else:
        what = [
            "It was retried and has now failed for good; no file was sent for this period.",
            "Later periods will still be delivered on schedule.",
        ]
    body = "\n".join(
        [
            f"Your recurring {export_title} report for {period_label} could not be delivered.",
            "",
            *what,
            "",
            f"Subscription: {subscription_id}",
            f"Period: {period_label}",
            f"Error: {reason}",
        ]
    )
    return report_message(
        settings.sender,
        [owner_email],
        f"Delivery failed: {export_title} — {period_label}",
        body,
        None,
        None,
    )


def compose_partial_delivery_email(
    settings: SmtpSettings,
    owner_email: str,
    subscription_id: str,
    export_title: str,
    period_label: str,
    delivered_to: Sequence[str],
    refused: Mapping[str, str],
) -> EmailMessage:
    """Tell a subscription's owner that the email server refused some recipients (`refused`:
    address → the server's reply); the report reached `delivered_to` and is not re-sent."""
    lines = [
        f"Your recurring {export_title} report for {period_label} was delivered to "
        f"{_count(delivered_to, 'recipient')}, but the email server refused "
        f"{_count(refused, 'recipient')}:",
        "",
        *(
            f"- {one_line(address)}: {one_line(reply)[:MAX_REPLY_CHARS]}"
            for address, reply in refused.items()
        ),
        "",
        "The report will not be re-sent for this period. If these addresses are wrong, "
        "correct the subscription's recipients so that later periods reach them.",
        "",
        f"Subscription: {subscription_id}",
        f"Period: {period_label}",
        f"Delivered to: {', '.join(delivered_to)}",
    ]
    return report_message(
        settings.sender,
        [owner_email],
        f"Partly delivered: {export_title} — {period_label}",
        "\n".join(lines),
        None,
        None,
    )


def smtp_reply(refusal: tuple[int, bytes | str]) -> str:
    """One refused recipient's SMTP answer as text: '550 5.1.1 No such mailbox'."""
    code, text = refusal
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return one_line(f"{code} {text}")


def _count(items: Sized, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}"


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
