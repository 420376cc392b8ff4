"""One recurring report delivered for one period (docs/CONTRACT.md §7), without Dagster.

`deliver_period` checks the subscription exactly like a request by its owner and its
recipients against the policy, builds one file over the period through the deliverable
pipeline, publishes it under `reports/<subscription>/<period>/`, emails it (attached under
a name a person reads, or linked when large) with the period's totals, writes the
`delivery.json` receipt, and only then sets `last_run_at`. A recipient the email server
refuses costs the others no second copy: the report counts as delivered to the accepted
ones, the refused are in the receipt and the log, and the owner is told once.

What ends a run without a delivery is a `NotDelivered` with one sentence; the Dagster op
(defs/reports.py) turns it into a failure that is never retried within the run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from export_pipelines import settings
from export_pipelines.catalog import CATALOG
from export_pipelines.catalog.spec import Kind, Window
from export_pipelines.delivery.email import (
    About,
    Download,
    Person,
    compose_partial_delivery_email,
    compose_report_email,
    one_line,
    send_message,
    send_report,
    smtp_reply,
    subscription_url,
)
from export_pipelines.delivery.recipients import check_recipients
from export_pipelines.pipeline.build import (
    Built,
    filtered,
    publish_deliverable,
    render_deliverable,
)
from export_pipelines.pipeline.deliverable import Deliverable
from export_pipelines.pipeline.prepare import Preparation, prepare_days, read_batches
from export_pipelines.pipeline.totals import Totals
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.requests.ledger import utc_now
from export_pipelines.requests.validation import (
    RequestRejected,
    id_in_message,
    validate_subscription,
)
from export_pipelines.settings import SmtpSettings
from export_pipelines.source import directory
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import Store

DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# S3's presigned links live at most 7 days (store.S3Store.download_url): the email promises
# no longer than that, whatever the retention.
MAX_LINK_SECONDS = 7 * 24 * 3600


class Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


class NotDelivered(Exception):
    """The period was not delivered, for the reason in the one sentence given. `refused`:
    the subscription fails its checks (its owner is told so; no later tick retries it)."""

    def __init__(self, sentence: str, refused: bool = False):
        super().__init__(sentence)
        self.refused = refused


@dataclass(frozen=True)
class Delivery:
    built: Built
    totals: dict[str, Any]
    emailed: bool
    delivered_to: list[str]
    refused: dict[str, str]


def max_attachment_bytes() -> int:
    return int(os.environ.get("EXPORT_MAX_ATTACHMENT_BYTES", str(DEFAULT_MAX_ATTACHMENT_BYTES)))


def deliver_period(
    db: SourceDatabase,
    store: Store,
    work: WorkArea,
    subscription_id: str,
    first: dt.date,
    last: dt.date,
    run_id: str,
    log: Log,
) -> Delivery | None:
    """Deliver one subscription's period; None when its receipt says it was delivered."""
    rows = db.fetch_rows(
        "SELECT * FROM report_subscriptions WHERE id = :id", {"id": subscription_id}
    )
    if not rows:
        raise NotDelivered(f"subscription {subscription_id} does not exist")
    sub = rows[0]
    report = checked_report(db, sub, first, last)
    receipt = f"{report.folder}/delivery.json"
    if store.exists(receipt):
        # A replayed tick, a retried period or a manual re-run: delivered already.
        log.info(f"{sub['id']} {first}..{last} was already delivered; nothing sent")
        return None
    built, totals = build_with_totals(report, db, work, store, run_id)
    file = built.file
    log.info(f"published {file.location} ({file.rows:,} rows, {file.bytes:,} bytes)")

    smtp = settings.smtp_settings()
    delivered_to: list[str] = []
    refused: dict[str, str] = {}
    about = about_report(db, sub, report)
    if smtp is None:
        log.warning(
            "email delivery skipped: EXPORT_SMTP_HOST is not set; the report is published "
            f"at {file.location}"
        )
    else:
        refused = email_report(smtp, store, work, report, built, totals, about)
        delivered_to = [r for r in report.recipients if r not in refused]
        log.info(f"emailed to {', '.join(delivered_to)}")
        if refused:
            log.warning(
                f"the email server refused {len(refused)} recipient(s) of {sub['id']} "
                f"{first}..{last}, which got nothing: "
                + "; ".join(f"{address} ({reply})" for address, reply in refused.items())
            )
    store.put_bytes(
        json.dumps(
            {
                "subscription_id": sub["id"],
                "period": [str(first), str(last)],
                "file": file.name,
                "sha256": file.sha256,
                "emailed": smtp is not None,
                "delivered_to": delivered_to,
                "refused": refused,
                "delivered_at": utc_now().isoformat(),
                "run_id": run_id,
            }
        ).encode(),
        receipt,
    )
    db.execute(
        "UPDATE report_subscriptions SET last_run_at = :now WHERE id = :id",
        {"now": utc_now(), "id": sub["id"]},
    )
    if refused and smtp is not None:
        # Once, after the receipt: a retry of this step finds the receipt and sends nothing.
        tell_owner_of_refusals(log, smtp, about, delivered_to, refused)
    return Delivery(built, totals, smtp is not None, delivered_to, refused)


def checked_report(db: SourceDatabase, sub: dict, first: dt.date, last: dt.date) -> Deliverable:
    """The period's deliverable, if the subscription and its recipients pass their checks
    against the database as it is now; else NotDelivered."""
    label = Window.for_days(first, last).label
    not_delivered = f"report {id_in_message(sub['id'])} for {label} was not delivered"
    try:
        report = validate_subscription(sub, db, first, last)
        try:
            recipients = check_recipients(db, report.organization_id, report.recipients)
        except ValueError as misconfigured:  # EXPORT_RECIPIENT_DOMAINS, _MAX_RECIPIENTS
            # Not the subscription's fault: no refusal, so later ticks retry the period.
            raise NotDelivered(
                f"{not_delivered}: the recipient policy is misconfigured ({misconfigured})"
            ) from None
    except RequestRejected as refused:
        raise NotDelivered(f"{not_delivered}: {refused}", refused=True) from None
    # The name travels with the deliverable: the PDF's title block, the email, the
    # attachment's name.
    name = directory.organization_name(db, report.organization_id)
    return dataclasses.replace(report, recipients=recipients, organization_name=name)


def build_with_totals(
    report: Deliverable, db: SourceDatabase, work: WorkArea, store: Store, run_id: str
) -> tuple[Built, dict[str, Any]]:
    """`build.build_deliverable`, keeping the prepared days to total the period over."""
    prepared: Preparation | None = None
    with work.scratch(".deliverable-") as scratch:
        if report.spec.kind is Kind.TABLE:
            prepared = prepare_days(report.spec, db, work, report.organization_id, report.days)
        rendered = render_deliverable(report, db, work, scratch, store, prepared=prepared)
        built = publish_deliverable(report, rendered, store, run_id)
    return built, period_totals(report, prepared)


def period_totals(report: Deliverable, prepared: Preparation | None) -> dict[str, Any]:
    """The type's totals over exactly the rows the file holds (reports choose no columns);
    none for bundles, which have no one table to total."""
    if prepared is None:
        return {}
    days = prepared.days
    if report.project_ids is None and len(days) == 1:
        return days[0].totals
    totals = Totals(report.spec)
    for batch in filtered(read_batches([d.path for d in days], report.spec.schema), report):
        totals.add(batch)
    return totals.values()


def about_report(db: SourceDatabase, sub: dict, report: Deliverable) -> About:
    return About(
        subscription_id=str(sub["id"]),
        title=report.spec.title,
        organization=report.organization_name or report.organization_id,
        first=report.date_from,
        last=report.date_to,
        cadence=str(sub.get("cadence") or ""),
        owner=person(db, sub.get("user_id")),
        manage_url=subscription_url(str(sub["id"])),
    )


def person(db: SourceDatabase, user_id: Any) -> Person | None:
    """The user as a person to name in an email, or None without one (or an address)."""
    rows = db.fetch_rows("SELECT email, full_name FROM users WHERE id = :id", {"id": user_id})
    if not rows or not rows[0]["email"]:
        return None
    return Person(str(rows[0]["email"]), str(rows[0]["full_name"] or ""))


def email_report(
    smtp: SmtpSettings,
    store: Store,
    work: WorkArea,
    report: Deliverable,
    built: Built,
    totals: dict[str, Any],
    about: About,
) -> dict[str, str]:
    """Email the published file to the report's recipients; returns the refused ones
    (address → the server's reply). Raises (and the op retries) only when nothing was
    sent: every recipient refused, or no server."""
    file = built.file
    key = f"{built.folder}/{file.name}"
    seconds = min(settings.retention_days() * 24 * 3600, MAX_LINK_SECONDS)
    download = Download(store.download_url(key, seconds), utc_now() + dt.timedelta(seconds=seconds))
    # The published file keeps its contract name; the copy travels under a reader's name,
    # with the published file's extensions (`.csv`, `.csv.gz`).
    attachment_name = report.reader_file_stem + file.name[len(report.stem) :]
    with work.scratch(".report-") as scratch:
        attachment = scratch / file.name
        store.download(key, attachment)
        message = compose_report_email(
            smtp,
            about,
            list(report.recipients),
            file.rows,
            totals,
            attachment,
            attachment_name,
            download,
            max_attachment_bytes(),
        )
        refusals = send_message(smtp, message)
    return {address: smtp_reply(reply) for address, reply in refusals.items()}


def tell_owner_of_refusals(
    log: Log, smtp: SmtpSettings, about: About, delivered_to: list[str], refused: dict[str, str]
) -> None:
    """Email the owner which recipients were refused; a failure here is logged, not raised
    (the report was delivered, and the refusals are in the receipt and the log)."""
    try:
        if about.owner is None:
            raise ValueError("the subscription's owner has no email address")
        send_report(
            smtp,
            compose_partial_delivery_email(smtp, about.owner, about, delivered_to, refused),
        )
        log.info(f"told the owner {about.owner.email} about the refused recipients")
    except Exception as error:  # noqa: BLE001 - the delivery stands; say why the notice did not
        log.warning(
            f"could not tell the owner of {about.subscription_id} about the refused recipients: "
            f"{type(error).__name__}: {one_line(str(error))}"
        )


def failure_about(
    db: SourceDatabase, subscription_id: str, period: str
) -> tuple[dict, About] | None:
    """What the owner's failure notice is about: the subscription (`active`, `cadence`) and
    its `About`, for a run's period tag `<first>..<last>`; None when the subscription or its
    owner no longer exists."""
    rows = db.fetch_rows(
        "SELECT u.email, u.full_name, s.export_type, s.cadence, s.active, "
        "s.organization_id, o.name AS organization FROM report_subscriptions s "
        "JOIN users u ON u.id = s.user_id "
        "LEFT JOIN organizations o ON o.id = s.organization_id WHERE s.id = :id",
        {"id": subscription_id},
    )
    if not rows or not rows[0]["email"]:
        return None
    sub = rows[0]
    export_type = sub["export_type"]
    spec = CATALOG.get(export_type.strip().lower()) if isinstance(export_type, str) else None
    # An unknown type (the refusal says so) is named as stored, on one bounded line.
    title = spec.title if spec else one_line(str(export_type))[:80] or "report"
    first, last = _period_of(period)
    about = About(
        subscription_id=subscription_id,
        title=title,
        organization=str(sub["organization"] or sub["organization_id"]),
        first=first,
        last=last,
        cadence=str(sub["cadence"] or ""),
        owner=Person(str(sub["email"]), str(sub["full_name"] or "")),
        manage_url=subscription_url(subscription_id),
    )
    return sub, about


def _period_of(tag: str) -> tuple[dt.date | None, dt.date | None]:
    first, _, last = tag.partition("..")
    try:
        return dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    except ValueError:
        return None, None
