"""scan_history: the daily score series of every project."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import calendar_date, integer, number, string

SPEC = ExportSpec(
    key="scan_history",
    title="Scan history",
    description="Per project and day: number of scans and mean/min/max DCS and AI-citation scores.",
    window=WindowKind.EVENT,
    query="""
        SELECT p.organization_id AS organization_id,
               p.id AS project_id,
               p.name AS project_name,
               :window_start AS day,
               count(*) AS scans,
               avg(s.dcs_score) AS dcs_mean,
               min(s.dcs_score) AS dcs_min,
               max(s.dcs_score) AS dcs_max,
               avg(s.ai_citation_score) AS ai_citation_mean,
               min(s.ai_citation_score) AS ai_citation_min,
               max(s.ai_citation_score) AS ai_citation_max
        FROM scan_results s
        JOIN audits a ON a.id = s.audit_id
        JOIN projects p ON p.id = a.project_id
        WHERE p.organization_id = :org_id
          AND s.created_at >= :window_start AND s.created_at < :window_end
        GROUP BY p.organization_id, p.id, p.name
        ORDER BY p.id
    """,
    columns=(
        string("organization_id", "Organization the project belongs to"),
        string("project_id", "Project id"),
        string("project_name", "Project name"),
        calendar_date("day", "UTC day the scores summarise"),
        integer("scans", "Scans recorded that day"),
        number("dcs_mean", "Mean DCS score (scans without a score are left out)"),
        number("dcs_min", "Lowest DCS score"),
        number("dcs_max", "Highest DCS score"),
        number("ai_citation_mean", "Mean AI citation score"),
        number("ai_citation_min", "Lowest AI citation score"),
        number("ai_citation_max", "Highest AI citation score"),
    ),
    project_column="project_id",
    totals=(
        Aggregate("Scans", "scans", "sum"),
        Aggregate("Projects", "project_id", "count_distinct"),
        Aggregate("Best daily mean DCS", "dcs_mean", "max"),
    ),
    chart=("day", "dcs_mean", "line"),
)
