"""On-demand exports: the request sensor, the job that serves one request, and its outcome.

The `export_requests` table is the interface (docs/CONTRACT.md §6): the application inserts a
PENDING row; the sensor validates it and either marks it FAILED with a reason or launches
one run (run key = request id, so a request is never served twice); the run writes
progress and the result back; a run-failure sensor turns any failed or crashed run into
a FAILED row; a schedule expires old deliverables.
"""

import datetime as dt
import os

import dagster as dg

from export_pipelines import settings
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.pipeline.build import build_deliverable
from export_pipelines.pipeline.deliverable import Deliverable
from export_pipelines.pipeline.naming import request_folder
from export_pipelines.requests.ledger import (
    RequestLedger,
    parse_timestamp,
    utc_now,
)
from export_pipelines.requests.messages import people_message
from export_pipelines.requests.validation import RequestRejected, validate

REQUEST_TAG = "export/request_id"
ORG_TAG = "export/org"
USER_TAG = "export/user"
TYPE_TAG = "export/type"
MAX_RETRIES = 2


class ServeRequestConfig(dg.Config):
    request_id: str


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=MAX_RETRIES, delay=1),
    description="Build one request's deliverable from daily partitions and publish it.",
)
def serve_export_request(
    context: dg.OpExecutionContext,
    config: ServeRequestConfig,
    source: SourceResource,
    store: StoreResource,
    work: WorkAreaResource,
):
    db = source.database()
    ledger = RequestLedger(db)
    row = ledger.get(config.request_id)
    if row is None:
        raise dg.Failure(f"export request {config.request_id} does not exist")
    try:
        request = validate(row, db, utc_now(), estimate=False)
    except RequestRejected as rejected:
        # Not worth retrying: the row itself is wrong (it changed since the sensor saw it).
        ledger.fail(config.request_id, str(rejected), context.retry_number)
        raise dg.Failure(str(rejected), allow_retries=False) from None

    request_id = request.reference
    if not ledger.start(request_id, context.run.run_id, context.retry_number):
        # Ended meanwhile (failed by the reconciler, expired): never flip it back.
        context.log.warning(f"request {request_id} is no longer waiting; nothing built")
        return
    target = store.store()
    deliverable = build_deliverable(
        request,
        db,
        work.work_area(),
        target,
        context.run.run_id,
        progress=lambda pct: ledger.progress(request_id, pct),
    )

    completed = utc_now()
    expires = completed + dt.timedelta(days=settings.retention_days())
    key = f"{deliverable.folder}/{deliverable.file.name}"
    # The ledger records export.completed itself, and only if the request was still open.
    ledger.complete(
        request_id,
        file_path=target.download_url(key, int((expires - completed).total_seconds())),
        file_size=deliverable.file.bytes,
        row_count=deliverable.file.rows,
        checksum=deliverable.file.sha256,
        completed_at=completed,
        expires_at=expires,
    )
    context.log.info(
        f"request {request_id}: {deliverable.file.rows:,} rows, {deliverable.file.bytes:,} bytes "
        f"at {deliverable.file.location} ({len(deliverable.built_days)} day(s) built, "
        f"{len(deliverable.reused_days)} reused)"
    )


@dg.job(
    description="Serve one on-demand export request (launched by export_requests_sensor).",
    tags={"export/kind": "request"},
)
def serve_export_request_job():
    serve_export_request()


def run_request_for(request: Deliverable) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=request.reference,
        run_config={"ops": {"serve_export_request": {"config": {"request_id": request.reference}}}},
        tags={
            REQUEST_TAG: request.reference,
            ORG_TAG: request.organization_id,
            USER_TAG: request.requested_by,
            TYPE_TAG: request.spec.key,
        },
    )


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the run worker reported when it started (Dagster's own engine event)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        if data is not None and "pid" in data.metadata:
            return int(data.metadata["pid"].value)
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_of(instance: dg.DagsterInstance, row: dict) -> dg.DagsterRun | None:
    if row.get("run_id"):
        return instance.get_run_by_id(row["run_id"])
    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_TAG: row["id"]}), limit=1)
    return runs[0] if runs else None


def reconcile_unfinished(instance: dg.DagsterInstance, ledger: RequestLedger, log) -> list[str]:
    """End requests whose run can no longer finish; return their ids.

    The run-failure sensor covers runs that fail. This covers the rest: a run that was
    canceled, and — with the default launcher, whose run workers are local processes
    that Dagster's run monitoring cannot health-check — a run whose worker process died
    (killed, out of memory) and left the run STARTED and the request PENDING or PROCESSING.
    """
    from dagster._core.launcher import DefaultRunLauncher

    local_workers = isinstance(instance.run_launcher, DefaultRunLauncher)
    ended = []
    for row in ledger.unfinished():
        run = _run_of(instance, row)
        if run is None:
            continue  # not launched yet
        if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            message = f"the run {run.run_id} ended as {run.status.value}"
        elif run.status == dg.DagsterRunStatus.STARTED and local_workers:
            pid = _worker_pid(instance, run.run_id)
            if pid is None or _process_alive(pid):
                continue
            message = f"the run worker (pid {pid}) exited without finishing the run"
            instance.report_run_failed(run, message=message)
        else:
            continue
        if ledger.fail(row["id"], message):
            log.warning(f"request {row['id']}: {message}")
            ended.append(row["id"])
    return ended


@dg.sensor(
    job=serve_export_request_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Serves PENDING rows of export_requests: rejects invalid ones, launches a run "
    "per valid one; ends PROCESSING rows whose run can no longer finish.",
)
def export_requests_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    db = source.database()
    ledger = RequestLedger(db)
    ended = reconcile_unfinished(context.instance, ledger, context.log)
    run_requests = []
    rejected = 0
    # Claimed, not read after a cursor: a row committed late or stamped in the future is
    # still served, and a claim lost with a failed tick is offered again after its lease.
    for row in ledger.claim_pending():
        try:
            request = validate(row, db, utc_now())
        except RequestRejected as error:
            message = str(error)
        except Exception:  # noqa: BLE001 - one bad row must not stop the others
            context.log.exception(f"request {row.get('id')!r} could not be validated")
            message = (
                "the request could not be read; check its export type, format, filters and "
                "parameters against the documentation"
            )
        else:
            run_requests.append(run_request_for(request))
            continue
        rejected += 1
        context.log.info(f"rejected request {row['id']}: {message}")
        ledger.reject(row["id"], message)
    if not run_requests and not rejected and not ended:
        return dg.SkipReason("no new export requests")
    return dg.SensorResult(run_requests=run_requests)


def failure_message(context: dg.RunFailureSensorContext) -> str:
    """The run's root error as one sentence for a person (the detail stays in the run)."""
    run_id = context.dagster_run.run_id
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        # Retries wrap the real error ("Exceeded max_retries"): report the root cause.
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            return people_message(error.cls_name, error.message, run_id)
    return people_message(None, None, run_id)


@dg.run_failure_sensor(
    monitored_jobs=[serve_export_request_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks the request of a failed (or crashed) run FAILED with the error.",
)
def export_request_failure_sensor(context: dg.RunFailureSensorContext, source: SourceResource):
    request_id = context.dagster_run.tags.get(REQUEST_TAG)
    if not request_id:
        return
    RequestLedger(source.database()).fail(request_id, failure_message(context))


@dg.op(description="Delete deliverables past expires_at and mark their requests EXPIRED.")
def expire_exports(context: dg.OpExecutionContext, source: SourceResource, store: StoreResource):
    ledger = RequestLedger(source.database())
    target = store.store()
    now = utc_now()
    for row in ledger.due_for_expiry(now):
        removed = target.delete_prefix(request_folder(row["id"]))
        ledger.expire(row["id"])
        context.log.info(
            f"expired request {row['id']} (expired at {parse_timestamp(row['expires_at'])}): "
            f"{removed} file(s) deleted"
        )


@dg.job(description="Delete expired on-demand deliverables.")
def expire_exports_job():
    expire_exports()


expire_exports_schedule = dg.ScheduleDefinition(
    job=expire_exports_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every hour: delete on-demand deliverables past their expiry, mark them EXPIRED.",
)
