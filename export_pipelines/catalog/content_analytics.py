"""content_analytics: views, shares and citations of each content item in the window."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import calendar_date, integer, string

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
        string("organization_id", "Organization the content belongs to"),
        calendar_date("day", "UTC day counted"),
        string("content_id", "Content item id"),
        string("project_id", "Project it belongs to"),
        string("content_type", "article | summary | faq | …"),
        string("title", "Title"),
        integer("views", "Views that day"),
        integer("shares", "Shares that day"),
        integer("citations", "Citations that day"),
        integer("events", "All events that day"),
    ),
    project_column="project_id",
    totals=(
        Aggregate("Items with activity", "content_id", "count"),
        Aggregate("Views", "views", "sum"),
        Aggregate("Shares", "shares", "sum"),
        Aggregate("Citations", "citations", "sum"),
    ),
    chart=("content_type", "views", "bar"),
)
