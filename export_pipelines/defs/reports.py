"""Recurring reports (docs/CONTRACT.md §7): subscriptions served on their cadence, by email.

Three UTC schedules — daily, weekly (Mondays) and monthly (the 1st) — each launch one run
per due subscription and period, keyed `<subscription>:<first day>:<last day>`, so a
replayed tick or a retried launch never delivers twice. The run checks the subscription
exactly like a request by its owner, against the database as it is then (an owner who
lost the right to the type, or left the organization, gets nothing delivered, to anyone),
builds one file over the period through the deliverable pipeline, publishes it under
`reports/<subscription>/<period>/` with a manifest, emails it (attached, or linked when
large), and only then sets `last_run_at`. A run that finally fails tells the owner.
"""

import datetime as dt
import json
import os

import dagster as dg

from export_pipelines import settings
from export_pipelines.catalog import CATALOG
from export_pipelines.catalog.spec import Window
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.delivery.email import compose_failure_email, compose_report_email, send_report
from export_pipelines.pipeline.build import build_deliverable
from export_pipelines.requests.ledger import utc_now
from export_pipelines.requests.validation import RequestRejected, validate_subscription

SUBSCRIPTION_TAG = "export/subscription"
PERIOD_TAG = "export/period"
CADENCES = ("daily", "weekly", "monthly")


def due_period(cadence: str, today: dt.date) -> tuple[dt.date, dt.date] | None:
    """The period a subscription of `cadence` delivers on `today`, or None if not due."""
    if cadence == "daily":
        yesterday = today - dt.timedelta(days=1)
        return yesterday, yesterday
    if cadence == "weekly":
        if today.weekday() != 0:
            return None
        return today - dt.timedelta(days=7), today - dt.timedelta(days=1)
    if cadence == "monthly":
        if today.day != 1:
            return None
        last = today - dt.timedelta(days=1)
        return last.replace(day=1), last
    raise ValueError(f"unknown cadence {cadence!r}; expected daily, weekly or monthly")


def max_attachment_bytes() -> int:
    return int(os.environ.get("EXPORT_MAX_ATTACHMENT_BYTES", str(10 * 1024 * 1024)))


def active_subscriptions(db, cadence: str) -> list[dict]:
    return db.fetch_rows(
        "SELECT * FROM report_subscriptions WHERE active = :yes AND cadence = :cadence ORDER BY id",
        {"yes": True, "cadence": cadence},
    )


def run_requests_for(db, cadence: str, today: dt.date) -> list[dg.RunRequest]:
    period = due_period(cadence, today)
    if period is None:
        return []
    first, last = period
    return [
        dg.RunRequest(
            run_key=f"{sub['id']}:{first}:{last}",
            run_config={
                "ops": {
                    "deliver_report": {
                        "config": {
                            "subscription_id": sub["id"],
                            "date_from": first.isoformat(),
                            "date_to": last.isoformat(),
                        }
                    }
                }
            },
            tags={
                SUBSCRIPTION_TAG: sub["id"],
                PERIOD_TAG: f"{first}..{last}",
                "export/org": sub["organization_id"],
                "export/type": str(sub["export_type"]).lower(),
            },
        )
        for sub in active_subscriptions(db, cadence)
    ]


class DeliverReportConfig(dg.Config):
    subscription_id: str
    date_from: str
    date_to: str


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    description="Build, publish and email one subscription's report for one period.",
)
def deliver_report(
    context: dg.OpExecutionContext,
    config: DeliverReportConfig,
    source: SourceResource,
    store: StoreResource,
    work: WorkAreaResource,
):
    db = source.database()
    rows = db.fetch_rows(
        "SELECT * FROM report_subscriptions WHERE id = :id", {"id": config.subscription_id}
    )
    if not rows:
        raise dg.Failure(
            f"subscription {config.subscription_id} does not exist", allow_retries=False
        )
    sub = rows[0]
    first, last = dt.date.fromisoformat(config.date_from), dt.date.fromisoformat(config.date_to)
    try:
        # At every delivery, against the database as it is now: who may still receive it.
        report = validate_subscription(sub, db, first, last)
    except RequestRejected as refused:
        raise dg.Failure(
            f"report {sub['id']} for {Window.for_days(first, last).label} was not delivered: "
            f"{refused}",
            allow_retries=False,
            metadata={"refused": True},
        ) from None
    target = store.store()
    folder = report.folder
    receipt = f"{folder}/delivery.json"
    if target.exists(receipt):
        # A replayed tick or a manual re-run: this period was delivered already.
        context.log.info(f"{sub['id']} {first}..{last} was already delivered; nothing sent")
        return
    built = build_deliverable(report, db, work.work_area(), target, context.run_id)
    file = built.file
    context.log.info(f"published {file.location} ({file.rows:,} rows, {file.bytes:,} bytes)")

    smtp = settings.smtp_settings()
    if smtp is None:
        context.log.warning(
            "email delivery skipped: EXPORT_SMTP_HOST is not set; the report is published "
            f"at {file.location}"
        )
    else:
        organization = db.scalar(
            "SELECT name FROM organizations WHERE id = :id", {"id": report.organization_id}
        )
        link = target.download_url(f"{folder}/{file.name}", settings.retention_days() * 24 * 3600)
        with work.work_area().scratch(".report-") as scratch:
            attachment = scratch / file.name
            target.download(f"{folder}/{file.name}", attachment)
            message = compose_report_email(
                smtp,
                list(report.recipients),
                report.spec.title,
                organization or report.organization_id,
                report.window.label,
                file.rows,
                attachment,
                link,
                max_attachment_bytes(),
            )
            send_report(smtp, message)
        context.log.info(f"emailed to {', '.join(report.recipients)}")
    target.put_bytes(
        json.dumps(
            {
                "subscription_id": sub["id"],
                "period": [str(first), str(last)],
                "file": file.name,
                "sha256": file.sha256,
                "emailed": smtp is not None,
                "delivered_at": utc_now().isoformat(),
                "run_id": context.run_id,
            }
        ).encode(),
        receipt,
    )
    db.execute(
        "UPDATE report_subscriptions SET last_run_at = :now WHERE id = :id",
        {"now": utc_now(), "id": sub["id"]},
    )


@dg.job(description="Deliver one recurring report (launched by the report schedules).")
def deliver_report_job():
    deliver_report()


def _schedule(cadence: str, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{cadence}_reports",
        job=deliver_report_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Deliver every active {cadence} report subscription.",
    )
    def serve(context: dg.ScheduleEvaluationContext, source: SourceResource):
        today = context.scheduled_execution_time.astimezone(dt.timezone.utc).date()
        requests = run_requests_for(source.database(), cadence, today)
        return requests or dg.SkipReason(f"no active {cadence} subscriptions due on {today}")

    return serve


report_schedules = [
    _schedule("daily", "0 6 * * *"),
    _schedule("weekly", "0 6 * * 1"),
    _schedule("monthly", "0 6 1 * *"),
]


@dg.run_failure_sensor(
    monitored_jobs=[deliver_report_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Tells a subscription's owner by email when a delivery failed for good.",
)
def report_failure_sensor(context: dg.RunFailureSensorContext, source: SourceResource):
    from export_pipelines.defs.requests import failure_message

    subscription_id = context.dagster_run.tags.get(SUBSCRIPTION_TAG)
    smtp = settings.smtp_settings()
    if not subscription_id or smtp is None:
        return
    db = source.database()
    owner = db.fetch_rows(
        "SELECT u.email, s.export_type FROM report_subscriptions s JOIN users u ON u.id = s.user_id "
        "WHERE s.id = :id",
        {"id": subscription_id},
    )
    if not owner:
        return
    first, _, last = context.dagster_run.tags.get(PERIOD_TAG, "").partition("..")
    period = first if first == last else f"{first} to {last}"
    spec = CATALOG.get(str(owner[0]["export_type"]).strip().lower())
    spec_title = spec.title if spec else str(owner[0]["export_type"])
    send_report(
        smtp,
        compose_failure_email(
            smtp,
            owner[0]["email"],
            subscription_id,
            spec_title,
            period,
            failure_message(context),
            refused=_was_refused(context),
        ),
    )


def _was_refused(context: dg.RunFailureSensorContext) -> bool:
    """Did the run refuse the subscription (rather than fail to deliver it)?"""
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        flag = user.metadata.get("refused") if user and user.metadata else None
        if flag is not None and getattr(flag, "value", flag) is True:
            return True
    return False
