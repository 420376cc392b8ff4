"""project_detailed: each project with its audits and their latest scan scores."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, integer, number, string, timestamp
from export_pipelines.render import Chart

_LATEST_SCAN = """(SELECT s.{column} FROM scan_results s
                 WHERE s.audit_id = a.id AND s.created_at < :window_end
                 ORDER BY s.created_at DESC, s.id DESC LIMIT 1)"""

SPEC = ExportSpec(
    key="project_detailed",
    title="Project details",
    description="One row per audit (project fields repeated) with the latest scan scores and "
    "per-project totals, as of the end of the day.",
    window=WindowKind.SNAPSHOT,
    query=f"""
        SELECT p.organization_id AS organization_id,
               p.id AS project_id,
               p.name AS project_name,
               p.url AS project_url,
               p.created_at AS project_created_at,
               a.id AS audit_id,
               a.audit_type AS audit_type,
               a.status AS audit_status,
               a.credits_consumed AS credits_consumed,
               a.created_at AS audit_created_at,
               {_LATEST_SCAN.format(column="dcs_score")} AS latest_dcs_score,
               {_LATEST_SCAN.format(column="ai_citation_score")} AS latest_ai_citation_score,
               {_LATEST_SCAN.format(column="created_at")} AS latest_scan_at,
               (SELECT count(*) FROM audits a2
                 WHERE a2.project_id = p.id AND a2.created_at < :window_end) AS project_audits,
               (SELECT coalesce(sum(a2.credits_consumed), 0) FROM audits a2
                 WHERE a2.project_id = p.id AND a2.created_at < :window_end) AS project_credits
        FROM projects p
        LEFT JOIN audits a ON a.project_id = p.id AND a.created_at < :window_end
        WHERE p.organization_id = :org_id AND p.created_at < :window_end
        ORDER BY p.created_at, p.id, a.created_at, a.id
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
        string("project_url", "Project URL", label="Project URL", role=Role.DIMENSION),
        timestamp(
            "project_created_at",
            "When the project was created (UTC)",
            label="Project created",
            role=Role.TIME,
        ),
        string(
            "audit_id",
            "Audit id; empty for a project without audits",
            label="Audit ID",
            role=Role.IDENTIFIER,
        ),
        string("audit_type", "full | quick | ai_citation", label="Audit type", role=Role.DIMENSION),
        string(
            "audit_status",
            "pending | running | completed | failed",
            label="Audit status",
            role=Role.DIMENSION,
        ),
        integer(
            "credits_consumed",
            "Credits the audit consumed",
            label="Credits",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
        timestamp(
            "audit_created_at",
            "When the audit started (UTC)",
            label="Audit started",
            role=Role.TIME,
        ),
        number(
            "latest_dcs_score",
            "DCS score of the audit's latest scan",
            label="Latest DCS score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "latest_ai_citation_score",
            "AI citation score of the audit's latest scan",
            label="Latest AI citation score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        timestamp(
            "latest_scan_at",
            "When the audit's latest scan was recorded (UTC)",
            label="Latest scan",
            role=Role.TIME,
        ),
        integer(
            "project_audits",
            "Total audits of the project (project total)",
            label="Project audits",
            role=Role.MEASURE,
            unit=Unit.COUNT,
        ),
        integer(
            "project_credits",
            "Total credits the project's audits consumed (project total)",
            label="Project credits",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
    ),
    project_column="project_id",
    totals=(
        Aggregate("Audits", "audit_id", "count"),
        Aggregate("Credits consumed", "credits_consumed", "sum"),
        Aggregate("Mean latest DCS score", "latest_dcs_score", "mean"),
    ),
    charts=(
        Chart("Credits consumed", "bar", by="audit_type", value="credits_consumed", function="sum"),
        Chart(
            "Credits consumed", "bar", by="project_name", value="credits_consumed", function="sum"
        ),
    ),
)
