"""scan_history: the daily score series of every project."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, calendar_date, integer, number, string
from export_pipelines.render import Chart

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
        string(
            "organization_id",
            "Organization the project belongs to",
            label="Organization",
            role=Role.IDENTIFIER,
        ),
        string("project_id", "Project id", label="Project ID", role=Role.IDENTIFIER),
        string("project_name", "Project name", label="Project", role=Role.DIMENSION),
        calendar_date("day", "UTC day the scores summarise", label="Day", role=Role.TIME),
        integer(
            "scans", "Scans recorded that day", label="Scans", role=Role.MEASURE, unit=Unit.COUNT
        ),
        number(
            "dcs_mean",
            "Mean DCS score (scans without a score are left out)",
            label="Mean DCS score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "dcs_min",
            "Lowest DCS score",
            label="Lowest DCS score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "dcs_max",
            "Highest DCS score",
            label="Highest DCS score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "ai_citation_mean",
            "Mean AI citation score",
            label="Mean AI citation score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "ai_citation_min",
            "Lowest AI citation score",
            label="Lowest AI citation score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "ai_citation_max",
            "Highest AI citation score",
            label="Highest AI citation score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
    ),
    project_column="project_id",
    totals=(
        Aggregate("Scans", "scans", "sum"),
        Aggregate("Projects", "project_id", "count_distinct"),
        Aggregate("Best daily mean DCS", "dcs_mean", "max"),
    ),
    charts=(
        Chart("Mean DCS score", "line", by="day", value="dcs_mean", function="mean"),
        Chart("Scans", "bar", by="project_name", value="scans", function="sum"),
    ),
)
