"""content_analytics: views, shares and citations of each content item in the window."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, calendar_date, integer, string
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="content_analytics",
    title="Content analytics",
    description="Per content item: views, shares and citations in the window (from content_events).",
    window=WindowKind.EVENT,
    query="""
        SELECT p.organization_id AS organization_id,
               :window_start AS day,
               c.id AS content_id,
               c.project_id AS project_id,
               c.content_type AS content_type,
               c.title AS title,
               sum(CASE WHEN e.event_type = 'view' THEN 1 ELSE 0 END) AS views,
               sum(CASE WHEN e.event_type = 'share' THEN 1 ELSE 0 END) AS shares,
               sum(CASE WHEN e.event_type = 'citation' THEN 1 ELSE 0 END) AS citations,
               count(*) AS events
        FROM content_events e
        JOIN generated_content c ON c.id = e.content_id
        JOIN projects p ON p.id = c.project_id
        WHERE p.organization_id = :org_id
          AND e.occurred_at >= :window_start AND e.occurred_at < :window_end
        GROUP BY p.organization_id, c.id, c.project_id, c.content_type, c.title
        ORDER BY c.id
    """,
    columns=(
        string(
            "organization_id",
            "Organization the content belongs to",
            label="Organization",
            role=Role.IDENTIFIER,
        ),
        calendar_date("day", "UTC day counted", label="Day", role=Role.TIME),
        string("content_id", "Content item id", label="Content ID", role=Role.IDENTIFIER),
        string("project_id", "Project it belongs to", label="Project ID", role=Role.IDENTIFIER),
        string(
            "content_type", "article | summary | faq | …", label="Content type", role=Role.DIMENSION
        ),
        string("title", "Title", label="Title", role=Role.DIMENSION),
        integer("views", "Views that day", label="Views", role=Role.MEASURE, unit=Unit.COUNT),
        integer("shares", "Shares that day", label="Shares", role=Role.MEASURE, unit=Unit.COUNT),
        integer(
            "citations", "Citations that day", label="Citations", role=Role.MEASURE, unit=Unit.COUNT
        ),
        integer(
            "events", "All events that day", label="Events", role=Role.MEASURE, unit=Unit.COUNT
        ),
    ),
    project_column="project_id",
    totals=(
        Aggregate("Items with activity", "content_id", "count"),
        Aggregate("Views", "views", "sum"),
        Aggregate("Shares", "shares", "sum"),
        Aggregate("Citations", "citations", "sum"),
    ),
    charts=(
        Chart("Views", "bar", by="content_type", value="views", function="sum"),
        Chart("Views", "line", by="day", value="views", function="sum"),
    ),
)
