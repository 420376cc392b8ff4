"""usage_analytics: who did what in the application, per event type and user (admins only)."""

from export_pipelines.catalog.spec import Access, Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, calendar_date, integer, string
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="usage_analytics",
    title="Usage analytics",
    description="Per event type and user: event counts in the window, from usage_events "
    "(admins only).",
    window=WindowKind.EVENT,
    access=Access.ADMIN,
    query="""
        SELECT u.organization_id AS organization_id,
               :window_start AS day,
               u.event_type AS event_type,
               u.user_id AS user_id,
               count(*) AS events
        FROM usage_events u
        WHERE u.organization_id = :org_id
          AND u.occurred_at >= :window_start AND u.occurred_at < :window_end
        GROUP BY u.organization_id, u.event_type, u.user_id
        ORDER BY u.event_type, u.user_id
    """,
    columns=(
        string("organization_id", "Organization", label="Organization", role=Role.IDENTIFIER),
        calendar_date("day", "UTC day counted", label="Day", role=Role.TIME),
        string(
            "event_type",
            "login | api_call | scan_started | export_downloaded | …",
            label="Event type",
            role=Role.DIMENSION,
        ),
        string(
            "user_id",
            "User; empty for events without a user (system, anonymous API)",
            label="User ID",
            role=Role.IDENTIFIER,
        ),
        integer(
            "events",
            "Events of this type by this user that day",
            label="Events",
            role=Role.MEASURE,
            unit=Unit.COUNT,
        ),
    ),
    totals=(
        Aggregate("Events", "events", "sum"),
        Aggregate("Distinct active users", "user_id", "count_distinct"),
        Aggregate("Event types", "event_type", "count_distinct"),
    ),
    charts=(
        Chart("Events", "bar", by="event_type", value="events", function="sum"),
        Chart("Events", "line", by="day", value="events", function="sum"),
    ),
)
