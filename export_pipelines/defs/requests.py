"""On-demand exports: the request sensor, the jobs that serve requests, and their outcome.

The `export_requests` table is the interface (docs/CONTRACT.md §6): the application inserts a
PENDING row; the sensor validates what is waiting and either marks a row FAILED with a reason
or launches it: the small requests of one organization share a run, a step each; a large one
or one alone gets a run of its own (run key = request id). The run writes progress and the
result back; a run-failure sensor turns a failed or crashed run into FAILED rows, and offers
again what the run never reached; a schedule expires old deliverables.
"""

import datetime as dt
import hashlib
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from export_pipelines import settings
from export_pipelines.catalog.spec import Kind
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.pipeline.build import build_deliverable
from export_pipelines.pipeline.deliverable import Deliverable
from export_pipelines.requests.ledger import (
    RequestLedger,
    utc_now,
)
from export_pipelines.requests.messages import people_message
from export_pipelines.requests.validation import RequestRejected, validate_many
from export_pipelines.source.database import SourceDatabase

REQUEST_TAG = "export/request_id"
BATCH_TAG = "export/requests"  # a shared run: how many requests it serves
BATCH_SIZE = 250
# Validation is set-based (a few statements per chunk, not per row), so one tick claims
# every waiting row and each organization gets about one run per tick; chunks keep a tick
# within its budget with few rows claimed but not launched if the database is slow.
CLAIMS_PER_TICK = 5000
CLAIM_CHUNK = 500
TICK_BUDGET_S = 20  # Dagster gives a sensor tick 60 s
ORG_TAG = "export/org"
USER_TAG = "export/user"
TYPE_TAG = "export/type"
MAX_RETRIES = 2
# A request whose run ended before any step served it (the run failed to launch, say) is
# offered again in a new run, up to this many launches in all; then it fails.
MAX_LAUNCHES = 3
FAILURE_GRACE_S = 120  # how long the reconciler leaves a failed run to the failure sensor


class ServeRequestConfig(dg.Config):
    request_id: str


class ServeRequestsConfig(dg.Config):
    request_ids: list[str]


@dataclass(frozen=True)
class Checked:
    """A request as its run found it, checked against the database at run time.

    `status` and `run_id` are its row's (`status` None: no such request); `outcome` is its
    deliverable, or why it may not be served: a `RequestRejected` (its sentence) or an
    internal error, raised by its step like any other.
    """

    request_id: str
    status: str | None
    run_id: str | None
    outcome: Deliverable | Exception | None


def check_at_run_time(db: SourceDatabase, request_ids: list[str]) -> list[Checked]:
    """Re-validate a run's requests together: one read of their rows, one set of checks.

    The sensor sized them already (`estimate=False`); who asks, their filters, projects
    and the rate limit are checked again against the database as it is now.
    """
    rows = RequestLedger(db).get_many(request_ids)
    found = [rows[i] for i in request_ids if i in rows]
    outcomes = dict(zip((r["id"] for r in found), validate_many(found, db, utc_now(), False)))
    return [
        Checked(i, rows[i]["status"], rows[i].get("run_id"), outcomes[i])
        if i in rows
        else Checked(i, None, None, None)
        for i in request_ids
    ]


def serve_one(
    context: dg.OpExecutionContext,
    checked: Checked,
    source: SourceResource,
    store: StoreResource,
    work: WorkAreaResource,
) -> None:
    """Serve one checked request: build and publish, write the outcome back."""
    request_id = checked.request_id
    db = source.database()
    ledger = RequestLedger(db)
    if checked.status is None:
        raise dg.Failure(f"export request {request_id} does not exist", allow_retries=False)
    run_id = context.run.run_id
    if checked.status == "PROCESSING" and checked.run_id not in (None, run_id):
        # Offered twice (a claim outlived its lease): the other run is serving it.
        context.log.warning(f"request {request_id} is being served by run {checked.run_id}")
        return
    if isinstance(checked.outcome, RequestRejected):
        # Not worth retrying: the row itself is wrong (it changed since the sensor saw it).
        ledger.fail(request_id, str(checked.outcome), context.retry_number)
        raise dg.Failure(str(checked.outcome), allow_retries=False)
    if isinstance(checked.outcome, Exception):
        raise checked.outcome
    request = checked.outcome

    if not ledger.start(request_id, run_id, context.retry_number):
        # Ended meanwhile (failed by the reconciler, expired): never flip it back.
        context.log.warning(f"request {request_id} is no longer waiting; nothing built")
        return
    target = store.store()
    try:
        deliverable = build_deliverable(
            request,
            db,
            work.work_area(),
            target,
            run_id,
            progress=lambda pct: ledger.progress(request_id, pct),
        )
    except Exception as error:
        final = context.retry_number >= MAX_RETRIES or (
            isinstance(error, dg.Failure) and not error.allow_retries
        )
        if final:  # the request says why in a sentence; the run's log keeps the detail
            ledger.fail(
                request_id,
                people_message(type(error).__name__, str(error), run_id),
                context.retry_number,
            )
        raise

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


_RETRY = dg.RetryPolicy(max_retries=MAX_RETRIES, delay=1)


@dg.op(
    retry_policy=_RETRY,
    description="Build one request's deliverable from daily partitions and publish it.",
)
def serve_export_request(
    context: dg.OpExecutionContext,
    config: ServeRequestConfig,
    source: SourceResource,
    store: StoreResource,
    work: WorkAreaResource,
):
    (checked,) = check_at_run_time(source.database(), [config.request_id])
    serve_one(context, checked, source, store, work)


@dg.job(
    description="Serve one on-demand export request in a run of its own (large requests, "
    "or one request alone).",
    # One step: run it in the run worker itself, not in a second process.
    executor_def=dg.in_process_executor,
    tags={"export/kind": "request"},
)
def serve_export_request_job():
    serve_export_request()


def step_key_for(request_id: str) -> str:
    """A mapping key Dagster accepts, readable and unique for any request id."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", request_id)[:48]
    digest = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}_{digest}"


@dg.op(
    out=dg.DynamicOut(Checked),
    retry_policy=_RETRY,
    description="The waiting requests of one organization this run serves, re-validated "
    "together at run time; one step each.",
)
def waiting_requests(config: ServeRequestsConfig, source: SourceResource):
    for checked in check_at_run_time(source.database(), list(dict.fromkeys(config.request_ids))):
        yield dg.DynamicOutput(checked, mapping_key=step_key_for(checked.request_id))


@dg.op(
    retry_policy=_RETRY,
    description="Build one request's deliverable (a step of a shared run) and publish it.",
)
def serve_waiting_request(
    context: dg.OpExecutionContext,
    checked: Checked,
    source: SourceResource,
    store: StoreResource,
    work: WorkAreaResource,
):
    serve_one(context, checked, source, store, work)


@dg.job(
    description="Serve several small requests of one organization in one warm process, one "
    "step (own logs, own retries) per request; one request's failure fails no other.",
    executor_def=dg.in_process_executor,
    tags={"export/kind": "request"},
)
def serve_export_requests_job():
    waiting_requests().map(serve_waiting_request)


def _launch_key(request_id: str, launch: int) -> str:
    """The request's part of a run key: its id, and which launch this is after the first
    (a relaunch needs a new key: Dagster launches one run per sensor run key, ever)."""
    return request_id if not launch else f"{request_id}#launch{launch + 1}"


def run_request_for(request: Deliverable, launch: int = 0) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=_launch_key(request.reference, launch),
        job_name=serve_export_request_job.name,
        run_config={"ops": {"serve_export_request": {"config": {"request_id": request.reference}}}},
        tags={
            REQUEST_TAG: request.reference,
            ORG_TAG: request.organization_id,
            USER_TAG: request.requested_by,
            TYPE_TAG: request.spec.key,
        },
    )


def batch_run_request_for(
    requests: list[Deliverable], launches: dict[str, int] | None = None
) -> dg.RunRequest:
    ids = [r.reference for r in requests]
    keys = sorted(_launch_key(i, (launches or {}).get(i, 0)) for i in ids)
    digest = hashlib.sha256("\n".join(keys).encode("utf-8", "surrogatepass")).hexdigest()
    return dg.RunRequest(
        run_key=f"requests:{digest[:24]}",
        job_name=serve_export_requests_job.name,
        run_config={"ops": {"waiting_requests": {"config": {"request_ids": ids}}}},
        tags={ORG_TAG: requests[0].organization_id, BATCH_TAG: str(len(ids))},
    )


def run_requests_for(
    requests: list[Deliverable], launches: dict[str, int] | None = None
) -> list[dg.RunRequest]:
    """Large requests (and a request alone) get a run of their own; the small requests of
    one organization share one run, a step each, at most `BATCH_SIZE` per run.

    `launches`: how often each request was launched before (its run keys change with it).
    """
    launches = launches or {}
    own, shared = [], defaultdict(list)
    for request in requests:
        large = request.estimated_rows > settings.own_run_rows() or request.spec.kind in (
            Kind.ORGANIZATION_BUNDLE,
        )
        (own.append(request) if large else shared[request.organization_id].append(request))
    runs = [run_request_for(r, launches.get(r.reference, 0)) for r in own]
    for group in shared.values():
        for start in range(0, len(group), BATCH_SIZE):
            chunk = group[start : start + BATCH_SIZE]
            runs.append(
                run_request_for(chunk[0], launches.get(chunk[0].reference, 0))
                if len(chunk) == 1
                else batch_run_request_for(chunk, launches)
            )
    return runs


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


def _runs_of(instance: dg.DagsterInstance, rows: list[dict]) -> dict[str, dg.DagsterRun]:
    """The run of each request that has one, by request id: two reads for any number.

    A started request names its run; one not yet started is found by the tag of its run
    of its own (a shared run that has not started it yet is still running or queued).
    """
    runs: dict[str, dg.DagsterRun] = {}
    named = [r for r in rows if r.get("run_id")]
    if named:
        ids = sorted({r["run_id"] for r in named})
        found = {run.run_id: run for run in instance.get_runs(dg.RunsFilter(run_ids=ids))}
        runs.update({r["id"]: found[r["run_id"]] for r in named if r["run_id"] in found})
    waiting = {r["id"]: r for r in rows if not r.get("run_id")}
    if waiting:
        for run in instance.get_runs(dg.RunsFilter(tags={REQUEST_TAG: list(waiting)})):
            row = waiting[run.tags[REQUEST_TAG]]
            # Only the run of its current launch: an earlier one that failed to launch
            # has released it (`export_request_failure_sensor`).
            key = _launch_key(row["id"], int(row.get("retry_count") or 0))
            if run.tags.get(RUN_KEY_TAG, key) == key:
                runs.setdefault(row["id"], run)  # newest first
    return runs


def _why_unfinishable(
    instance: dg.DagsterInstance, run: dg.DagsterRun, local_workers: bool
) -> str | None:
    """Why `run` can no longer finish, or None if it still may."""
    if run.status == dg.DagsterRunStatus.FAILURE:
        # The run-failure sensor settles failed runs (and offers again what they never
        # reached); this is the safety net for one it missed, after a grace period.
        record = instance.get_run_record_by_id(run.run_id)
        ended = record.end_time if record else None
        if ended is not None and time.time() - ended < FAILURE_GRACE_S:
            return None
    if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return f"the run {run.run_id} ended as {run.status.value}"
    if run.status == dg.DagsterRunStatus.STARTED and local_workers:
        pid = _worker_pid(instance, run.run_id)
        if pid is None or _process_alive(pid):
            return None
        message = f"the run worker (pid {pid}) exited without finishing the run"
        instance.report_run_failed(run, message=message)
        return message
    return None


def reconcile_unfinished(instance: dg.DagsterInstance, ledger: RequestLedger, log) -> list[str]:
    """End requests whose run can no longer finish; return their ids.

    The run-failure sensor covers runs that fail. This covers the rest: a run that was
    canceled, and — with the default launcher, whose run workers are local processes
    that Dagster's run monitoring cannot health-check — a run whose worker process died
    (killed, out of memory) and left the run STARTED and the request PENDING or PROCESSING.
    Runs are read for all unfinished rows at once and each run is judged once, however
    many requests it serves: a tick's cost follows the runs, not the waiting rows.
    """
    from dagster._core.launcher import DefaultRunLauncher

    local_workers = isinstance(instance.run_launcher, DefaultRunLauncher)
    rows = ledger.unfinished()
    runs = _runs_of(instance, rows)
    verdicts: dict[str, str | None] = {}
    ended = []
    for row in rows:
        run = runs.get(row["id"])
        if run is None:
            continue  # not launched yet
        if run.run_id not in verdicts:
            verdicts[run.run_id] = _why_unfinishable(instance, run, local_workers)
        message = verdicts[run.run_id]
        if message is not None and ledger.fail(row["id"], message):
            log.warning(f"request {row['id']}: {message}")
            ended.append(row["id"])
    return ended


_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _in_shared_runs(instance: dg.DagsterInstance) -> set[str]:
    """The requests of shared runs queued or running: a claim of theirs that outlived its
    lease (a long queue) is theirs to serve, not to be launched again in another batch.
    (A run of its own needs no such care: its run key is the request id.)"""
    runs = instance.get_runs(
        dg.RunsFilter(job_name=serve_export_requests_job.name, statuses=_IN_FLIGHT)
    )
    ops = ((run.run_config or {}).get("ops", {}) for run in runs)
    return {
        i
        for op in ops
        for i in op.get("waiting_requests", {}).get("config", {}).get("request_ids", [])
    }


@dg.sensor(
    jobs=[serve_export_request_job, serve_export_requests_job],
    minimum_interval_seconds=3,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Serves PENDING rows of export_requests: rejects invalid ones; launches one run "
    "per organization for its small requests (a step each) and a run of its own for a large "
    "one; ends PROCESSING rows whose run can no longer finish.",
)
def export_requests_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    db = source.database()
    ledger = RequestLedger(db)
    ended = reconcile_unfinished(context.instance, ledger, context.log)
    valid: list[Deliverable] = []
    rejected = 0
    # Claimed, not read after a cursor: a row committed late or stamped in the future is
    # still served, and a claim lost with a failed tick is offered again after its lease.
    # Claimed a chunk at a time within a time budget, so a tick never outlives its deadline
    # with rows claimed but not launched.
    started = time.monotonic()
    in_flight: set[str] | None = None
    launches: dict[str, int] = {}
    while len(valid) + rejected < CLAIMS_PER_TICK and time.monotonic() - started < TICK_BUDGET_S:
        claimed = ledger.claim_pending(limit=CLAIM_CHUNK)
        if not claimed:
            break
        if in_flight is None:
            in_flight = _in_shared_runs(context.instance)
        rows = [row for row in claimed if row["id"] not in in_flight]
        launches.update({row["id"]: int(row.get("retry_count") or 0) for row in rows})
        refusals = {}
        for row, result in zip(rows, validate_many(rows, db, utc_now())):
            if isinstance(result, Deliverable):
                valid.append(result)
                continue
            if not isinstance(result, RequestRejected):  # one bad row must not stop the others
                context.log.error(
                    f"request {row.get('id')!r} could not be validated", exc_info=result
                )
            refusals[row["id"]] = (
                str(result)
                if isinstance(result, RequestRejected)
                else "the request could not be read; check its export type, format, filters "
                "and parameters against the documentation"
            )
            context.log.info(f"rejected request {row['id']}: {refusals[row['id']]}")
        ledger.reject_many(refusals)
        rejected += len(refusals)
    run_requests = run_requests_for(valid, launches)
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


def _step_messages(context: dg.RunFailureSensorContext) -> dict[str, str]:
    """Each failed step's root error, as a sentence, by step key."""
    run_id = context.dagster_run.run_id
    messages = {}
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None and event.step_key:
            messages[event.step_key] = people_message(error.cls_name, error.message, run_id)
    return messages


def _tried_steps(context: dg.RunFailureSensorContext) -> set[str]:
    """The steps of the failed run that ran and failed."""
    return {e.step_key for e in context.get_step_failure_events() if e.step_key}


def _fail_or_offer_again(
    context: dg.RunFailureSensorContext,
    ledger: RequestLedger,
    request_id: str,
    message: str,
    tried: bool,
) -> None:
    """A request of a failed run: offered again if no step of it ran (the run failed to
    launch, or died before reaching it) and it has launches left; else FAILED with
    `message`. Either only if no run started it: `release` and `fail` are guarded."""
    if not tried and ledger.release(request_id, MAX_LAUNCHES):
        context.log.info(
            f"request {request_id}: its run {context.dagster_run.run_id} ended before serving "
            "it; it is offered again"
        )
        return
    if not tried:
        row = ledger.get(request_id)
        if row is not None and row["status"] == "PENDING":
            message = (
                f"The export could not be started in {MAX_LAUNCHES} attempts; the data team "
                f"can see why in the log of run {context.dagster_run.run_id}."
            )
    ledger.fail(request_id, message)


@dg.run_failure_sensor(
    monitored_jobs=[serve_export_request_job, serve_export_requests_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks the requests of a failed (or crashed) run FAILED with the error, in a "
    "shared run only those not served; a request no step of the run reached (a run that "
    f"failed to launch) is offered again, up to {MAX_LAUNCHES} launches.",
)
def export_request_failure_sensor(context: dg.RunFailureSensorContext, source: SourceResource):
    ledger = RequestLedger(source.database())
    tried = _tried_steps(context)
    request_id = context.dagster_run.tags.get(REQUEST_TAG)
    if request_id:
        _fail_or_offer_again(
            context, ledger, request_id, failure_message(context), "serve_export_request" in tried
        )
        return
    config = (context.dagster_run.run_config or {}).get("ops", {}).get("waiting_requests", {})
    by_step = _step_messages(context)
    general = failure_message(context)
    for rid in config.get("config", {}).get("request_ids", []):
        row = ledger.get(rid)
        if row is None or row.get("run_id") not in (None, "", context.dagster_run.run_id):
            continue  # served by another run
        step = f"serve_waiting_request[{step_key_for(rid)}]"
        # Guarded: a request its step completed stays COMPLETED.
        _fail_or_offer_again(
            context,
            ledger,
            rid,
            by_step.get(step, general),
            step in tried or "waiting_requests" in tried,
        )
