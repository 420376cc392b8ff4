"""Expiry of on-demand deliverables: files past `expires_at` deleted, requests EXPIRED."""

import dagster as dg

from export_pipelines.defs.resources import SourceResource, StoreResource
from export_pipelines.pipeline.naming import request_folder
from export_pipelines.requests.ledger import RequestLedger, parse_timestamp, utc_now


@dg.op(description="Delete deliverables past expires_at and mark their requests EXPIRED.")
def expire_exports(context: dg.OpExecutionContext, source: SourceResource, store: StoreResource):
    ledger = RequestLedger(source.database())
    target = store.store()
    now = utc_now()
    for row in ledger.due_for_expiry(now):
        try:
            folder = request_folder(row["id"])
        except ValueError:  # an id that names no folder never published one
            folder = None
        removed = target.delete_prefix(folder) if folder else 0
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
