"""scan_results: every scan of the day with its audit and project."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, integer, number, string, timestamp
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="scan_results",
    title="Scan results",
    description="Scans completed in the window, joined to their audit and project.",
    window=WindowKind.EVENT,
    query="""
        SELECT p.organization_id AS organization_id,
               s.id AS scan_id,
               p.id AS project_id,
               p.name AS project_name,
               p.url AS project_url,
               a.id AS audit_id,
               a.audit_type AS audit_type,
               a.status AS status,
               s.dcs_score AS dcs_score,
               s.ai_citation_score AS ai_citation_score,
               a.credits_consumed AS credits_consumed,
               s.created_at AS scanned_at
        FROM scan_results s
        JOIN audits a ON a.id = s.audit_id
        JOIN projects p ON p.id = a.project_id
        WHERE p.organization_id = :org_id
          AND s.created_at >= :window_start AND s.created_at < :window_end
        ORDER BY s.created_at, s.id
    """,
    columns=(
        string(
            "organization_id",
            "Organization the scan belongs to",
            label="Organization",
            role=Role.IDENTIFIER,
        ),
        string("scan_id", "Scan result id", label="Scan ID", role=Role.IDENTIFIER),
        string("project_id", "Project scanned", label="Project ID", role=Role.IDENTIFIER),
        string("project_name", "Project name", label="Project", role=Role.DIMENSION),
        string("project_url", "Project URL", label="Project URL", role=Role.DIMENSION),
        string("audit_id", "Audit the scan belongs to", label="Audit ID", role=Role.IDENTIFIER),
        string("audit_type", "full | quick | ai_citation", label="Audit type", role=Role.DIMENSION),
        string(
            "status",
            "Audit status: pending | running | completed | failed",
            label="Status",
            role=Role.DIMENSION,
        ),
        number(
            "dcs_score",
            "DCS score, 0-100; empty when not computed",
            label="DCS score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        number(
            "ai_citation_score",
            "AI citation score, 0-100; empty when not computed",
            label="AI citation score",
            role=Role.MEASURE,
            unit=Unit.SCORE,
        ),
        integer(
            "credits_consumed",
            "Credits the audit consumed",
            label="Credits",
            role=Role.MEASURE,
            unit=Unit.CREDITS,
        ),
        timestamp(
            "scanned_at", "When the scan result was recorded (UTC)", label="Scanned", role=Role.TIME
        ),
    ),
    project_column="project_id",
    time_column="scanned_at",
    totals=(
        Aggregate("Scans", "scan_id", "count"),
        Aggregate("Projects scanned", "project_id", "count_distinct"),
        Aggregate("Mean DCS score", "dcs_score", "mean"),
        Aggregate("Mean AI citation score", "ai_citation_score", "mean"),
    ),
    charts=(
        Chart("Mean DCS score", "line", by="scanned_at", value="dcs_score", function="mean"),
        Chart("Scans", "bar", by="audit_type"),
    ),
)
