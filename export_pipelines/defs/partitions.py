"""Organization × UTC day partitions (docs/CONTRACT.md §4), and the sensor that discovers organizations."""

import datetime as dt

import dagster as dg

from export_pipelines import settings
from export_pipelines.defs.resources import SourceResource
from export_pipelines.source import directory

organizations = dg.DynamicPartitionsDefinition(name="organizations")


def first_partition_day(start: str, window_days: int | None, today: dt.date) -> str:
    """The configured first day, or the rolling window's first day when that is later.

    Days before it stay published with their manifests; requests serve them as ranges.
    The window moves when the code location loads (daily in practice).
    """
    if window_days is None:
        return start
    window = today - dt.timedelta(days=window_days)
    return max(dt.date.fromisoformat(start), window).isoformat()


days = dg.DailyPartitionsDefinition(
    start_date=first_partition_day(
        settings.partitions_start(),
        settings.partitions_days(),
        dt.datetime.now(dt.timezone.utc).date(),
    ),
    timezone="UTC",
)
export_partitions = dg.MultiPartitionsDefinition({"date": days, "org": organizations})


# Characters Dagster refuses in partition keys, and the multi-partition key separator.
_UNUSABLE = ("|", "...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def usable_as_partition(org_id: str) -> bool:
    return bool(org_id) and not any(s in org_id for s in _UNUSABLE)


def new_organizations(source: SourceResource, known: set[str]) -> tuple[list[str], list[str]]:
    """Organizations not yet partitions: (usable as partition keys, not usable)."""
    rows = source.database().fetch_table("SELECT id FROM organizations ORDER BY id")
    new = [org for org in rows.column("id").to_pylist() if org not in known]
    return [o for o in new if usable_as_partition(o)], [
        o for o in new if not usable_as_partition(o)
    ]


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds every organization of the source database as an `org` partition "
    "(partitions are keyed by id; this sensor's log and each materialization's "
    "`organization` metadata show the names; `export-pipelines orgs` lists them).",
)
def organizations_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    known = set(context.instance.get_dynamic_partitions(organizations.name))
    added, unusable = new_organizations(source, known)
    for org in unusable:
        # Still served on demand; only the partitioned asset graph cannot name it.
        context.log.warning(f"organization id {org!r} cannot be a Dagster partition key")
    if not added:
        return dg.SkipReason(f"no new organizations ({len(known)} known)")
    names = directory.organization_names(source.database(), added)
    shown = ", ".join(f"{org} ({names[org]})" if names.get(org) else org for org in added)
    context.log.info(f"adding {len(added)} organization partition(s): {shown}")
    return dg.SensorResult(dynamic_partitions_requests=[organizations.build_add_request(added)])
