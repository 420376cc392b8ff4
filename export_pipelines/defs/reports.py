"""Recurring reports (docs/CONTRACT.md §7): subscriptions served on their cadence, by email.

Three UTC schedules — daily, weekly (Mondays) and monthly (the 1st) — each launch one run
per due subscription and period, keyed `<subscription>:<first day>:<last day>`, so a
replayed tick or a retried launch never delivers twice. The run's body is the core's
`delivery.report_run.deliver_period`: check the subscription like a request by its owner
and its recipients against the policy, build and publish the period's file, email it to
people (totals, the organization's name, a readable attachment name, how to stop it),
write the `delivery.json` receipt, then set `last_run_at`. Here it only becomes an op whose
`NotDelivered` is a failure never retried within the run (marked `refused` when the
subscription fails its checks).

A run that fails tells the owner (`report_failure_sensor`, which never raises). Each tick of
`daily_reports` also retries undelivered periods of every cadence: a recent period (the
last 7 daily, 5 weekly or 3 monthly due dates before the tick) whose latest run failed
without a refusal, with no run in progress or succeeded, gets a new run keyed
`<subscription>:<first>:<last>:retry-<n>`, at most `MAX_RETRY_RUNS` times. A refusal is
never retried; a delivered period (its receipt exists) is never sent again.
"""

import datetime as dt

import dagster as dg

from export_pipelines import settings
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.delivery.email import compose_failure_email, one_line, send_report
from export_pipelines.delivery.report_run import NotDelivered, deliver_period, failure_about
from export_pipelines.requests.ledger import utc_now

SUBSCRIPTION_TAG = "export/subscription"
PERIOD_TAG = "export/period"
ATTEMPT_TAG = "export/attempt"
CADENCES = ("daily", "weekly", "monthly")
# Retries of undelivered periods, launched by `daily_reports`: how many runs after the first
# one, and how far back (due dates before the tick, per cadence).
MAX_RETRY_RUNS = 3
RETRY_LOOKBACK = {"daily": 7, "weekly": 5, "monthly": 3}
_UNFINISHED = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


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


def active_subscriptions(db, cadence: str | None = None) -> list[dict]:
    """Active subscriptions of `cadence` (of every cadence if None), by id."""
    if cadence is None:
        return db.fetch_rows(
            "SELECT * FROM report_subscriptions WHERE active = :yes ORDER BY id", {"yes": True}
        )
    return db.fetch_rows(
        "SELECT * FROM report_subscriptions WHERE active = :yes AND cadence = :cadence ORDER BY id",
        {"yes": True, "cadence": cadence},
    )


def period_tag(first: dt.date, last: dt.date) -> str:
    return f"{first}..{last}"


def report_run_request(
    sub: dict, first: dt.date, last: dt.date, run_key: str, attempt: int = 1
) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
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
            PERIOD_TAG: period_tag(first, last),
            ATTEMPT_TAG: str(attempt),
            "export/org": sub["organization_id"],
            "export/type": str(sub["export_type"]).lower(),
        },
    )


def run_requests_for(db, cadence: str, today: dt.date) -> list[dg.RunRequest]:
    period = due_period(cadence, today)
    if period is None:
        return []
    first, last = period
    return [
        report_run_request(sub, first, last, f"{sub['id']}:{first}:{last}")
        for sub in active_subscriptions(db, cadence)
    ]


def recent_periods(cadence: str, today: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The periods of the last RETRY_LOOKBACK[cadence] due dates before `today`, newest first.

    `today`'s own period is not among them: the tick launches it as a first run.
    """
    periods, day = [], today
    while len(periods) < RETRY_LOOKBACK[cadence] and (today - day).days < 400:
        day -= dt.timedelta(days=1)
        period = due_period(cadence, day)
        if period is not None:
            periods.append(period)
    return periods


def period_runs(instance: dg.DagsterInstance, subscription_id: str, period: str) -> list:
    """Every run of deliver_report_job for one subscription and period, newest first."""
    return list(
        instance.get_runs(
            dg.RunsFilter(
                job_name=deliver_report_job.name,
                tags={SUBSCRIPTION_TAG: subscription_id, PERIOD_TAG: period},
            )
        )
    )


def retry_requests_for(instance: dg.DagsterInstance, db, today: dt.date) -> list[dg.RunRequest]:
    """New runs for recent periods of active subscriptions (any cadence) left undelivered.

    A period is retried when its latest run failed and was not a refusal, none of its runs
    succeeded (a success wrote the receipt) and none is still queued or running, and it has
    had at most MAX_RETRY_RUNS runs. The run key counts the runs so far: a replayed tick
    asks for the same key, and Dagster launches it once.
    """
    periods = {cadence: recent_periods(cadence, today) for cadence in CADENCES}
    oldest = min(first for cadence in CADENCES for first, _ in periods[cadence])
    # A period's runs start once it is over; the wall clock bounds it too, for a tick
    # evaluated at another time than its own (a test, a late tick).
    since = min(
        dt.datetime.combine(oldest, dt.time(), tzinfo=dt.timezone.utc),
        utc_now() - dt.timedelta(days=100),
    )
    failed = instance.get_runs(
        dg.RunsFilter(
            job_name=deliver_report_job.name,
            statuses=[dg.DagsterRunStatus.FAILURE],
            created_after=since,
        )
    )
    candidates = {(r.tags.get(SUBSCRIPTION_TAG), r.tags.get(PERIOD_TAG)) for r in failed}
    requests = []
    for sub in active_subscriptions(db):
        for first, last in periods.get(str(sub["cadence"]), []):
            tag = period_tag(first, last)
            if (sub["id"], tag) not in candidates:
                continue
            runs = period_runs(instance, sub["id"], tag)
            if (
                not runs
                or len(runs) > MAX_RETRY_RUNS
                or runs[0].status != dg.DagsterRunStatus.FAILURE  # e.g. canceled on purpose
                or any(r.status in _UNFINISHED for r in runs)
                or any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
                or was_refused(_step_failures(instance, runs[0].run_id))
            ):
                continue
            requests.append(
                report_run_request(
                    sub, first, last, f"{sub['id']}:{first}:{last}:retry-{len(runs)}", len(runs) + 1
                )
            )
    return requests


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
    try:
        deliver_period(
            source.database(),
            store.store(),
            work.work_area(),
            config.subscription_id,
            dt.date.fromisoformat(config.date_from),
            dt.date.fromisoformat(config.date_to),
            context.run_id,
            context.log,
        )
    except NotDelivered as not_delivered:
        # Final for this run; a refusal is marked, so that no later tick retries it.
        raise dg.Failure(
            str(not_delivered),
            allow_retries=False,
            metadata={"refused": True} if not_delivered.refused else None,
        ) from None


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
        db = source.database()
        requests = run_requests_for(db, cadence, today)
        if cadence == "daily":
            # The one schedule that ticks every day retries every cadence's undelivered
            # periods (only one may: run keys are deduplicated per schedule and tick).
            requests += retry_requests_for(context.instance, db, today)
        return requests or dg.SkipReason(f"no active {cadence} subscriptions due on {today}")

    return serve


report_schedules = [
    _schedule("daily", settings.report_cron("daily")),
    _schedule("weekly", settings.report_cron("weekly")),
    _schedule("monthly", settings.report_cron("monthly")),
]


@dg.run_failure_sensor(
    monitored_jobs=[deliver_report_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Tells a subscription's owner by email when a delivery failed.",
)
def report_failure_sensor(context: dg.RunFailureSensorContext, source: SourceResource):
    # Never raises: a sensor error would only hide the failure it reports (and stall the
    # next runs' notices); what could not be told is logged in the sensor's tick.
    try:
        _tell_owner_of_failure(context, source)
    except Exception as error:  # noqa: BLE001 - anything at all: log it, go on
        context.log.error(
            f"could not tell the owner of subscription "
            f"{context.dagster_run.tags.get(SUBSCRIPTION_TAG)} that run "
            f"{context.dagster_run.run_id} failed: {type(error).__name__}: "
            f"{one_line(str(error))[:500]}"
        )


def _tell_owner_of_failure(context: dg.RunFailureSensorContext, source: SourceResource) -> None:
    from export_pipelines.defs.requests import failure_message

    subscription_id = context.dagster_run.tags.get(SUBSCRIPTION_TAG)
    smtp = settings.smtp_settings()
    if not subscription_id or smtp is None:
        return
    period = context.dagster_run.tags.get(PERIOD_TAG, "")
    found = failure_about(source.database(), subscription_id, period)
    if found is None:
        context.log.warning(f"subscription {subscription_id} or its owner no longer exists")
        return
    sub, about = found
    refused = was_refused(context.get_step_failure_events())
    send_report(
        smtp,
        compose_failure_email(
            smtp,
            about.owner,
            about,
            failure_message(context),
            refused=refused,
            retry_later=not refused
            and _will_be_retried(context.instance, sub, subscription_id, period),
        ),
    )


def _will_be_retried(instance, sub: dict, subscription_id: str, period: str) -> bool:
    """Will a later `daily_reports` tick retry this period (retry_requests_for's rule)?"""
    first, _, last = period.partition("..")
    try:
        key = (dt.date.fromisoformat(first), dt.date.fromisoformat(last))
    except ValueError:
        return False
    cadence = str(sub["cadence"])
    if not sub["active"] or cadence not in RETRY_LOOKBACK:
        return False
    tomorrow = utc_now().date() + dt.timedelta(days=1)
    if key not in recent_periods(cadence, tomorrow):
        return False
    return len(period_runs(instance, subscription_id, period)) <= MAX_RETRY_RUNS


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> list:
    return [
        record.dagster_event
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if record.dagster_event is not None
    ]


def was_refused(step_failures) -> bool:
    """Did the run refuse the subscription (rather than fail to deliver it)?"""
    for event in step_failures:
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        flag = user.metadata.get("refused") if user and user.metadata else None
        if flag is not None and getattr(flag, "value", flag) is True:
            return True
    return False
