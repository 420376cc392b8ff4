"""Organization × UTC day partitions (CONTRACT §4), and the sensor that discovers organizations."""


import dagster as dg

from export_pipelines import settings
from export_pipelines.resources import SourceResource

organizations = dg.DynamicPartitionsDefinition(name="organizations")
days = dg.DailyPartitionsDefinition(start_date=settings.partitions_start(), timezone="UTC")
export_partitions = dg.MultiPartitionsDefinition({"date": days, "org": organizations})


def new_organizations(source: SourceResource, known: set[str]) -> list[str]:
    rows = source.database().fetch_table("SELECT id FROM organizations ORDER BY id")
    return [org for org in rows.column("id").to_pylist() if org not in known]


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds every organization of the source database as an `org` partition.",
)
def organizations_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    known = set(context.instance.get_dynamic_partitions(organizations.name))
    added = new_organizations(source, known)
    if not added:
        return dg.SkipReason(f"no new organizations ({len(known)} known)")
    context.log.info(f"adding {len(added)} organization partition(s): {', '.join(added)}")
    return dg.SensorResult(dynamic_partitions_requests=[organizations.build_add_request(added)])
