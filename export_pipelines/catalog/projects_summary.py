"""projects_summary: every project of the organization as of the end of the day."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, integer, string, timestamp
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="projects_summary",
    title="Projects summary",
    description="Every project as of the end of the day, with its scan count and last scan.",
    window=WindowKind.SNAPSHOT,
    query="""
        SELECT p.organization_id AS organization_id,
               p.id AS project_id,
               p.name AS name,
               p.url AS url,
               p.description AS description,
               p.created_at AS created_at,
               p.updated_at AS updated_at,
               (SELECT count(*) FROM audits a
                 WHERE a.project_id = p.id AND a.created_at < :window_end) AS scan_count,
               (SELECT max(a.created_at) FROM audits a
                 WHERE a.project_id = p.id AND a.created_at < :window_end) AS last_scan_at
        FROM projects p
        WHERE p.organization_id = :org_id AND p.created_at < :window_end
        ORDER BY p.created_at, p.id
    """,
    columns=(
        string(
            "organization_id",
            "Organization the project belongs to",
            label="Organization",
            role=Role.IDENTIFIER,
        ),
        string("project_id", "Project id", label="Project ID", role=Role.IDENTIFIER),
        string("name", "Project name", label="Project", role=Role.DIMENSION),
        string("url", "Site the project audits", label="URL", role=Role.DIMENSION),
        string(
            "description",
            "Free-text description; empty if none",
            label="Description",
            role=Role.DIMENSION,
        ),
        timestamp(
            "created_at", "When the project was created (UTC)", label="Created", role=Role.TIME
        ),
        timestamp(
            "updated_at", "When the project was last changed (UTC)", label="Updated", role=Role.TIME
        ),
        integer(
            "scan_count",
            "Audits run on the project up to the end of the day",
            label="Scans",
            role=Role.MEASURE,
            unit=Unit.COUNT,
        ),
        timestamp(
            "last_scan_at",
            "Most recent audit up to the end of the day; empty if none",
            label="Last scan",
            role=Role.TIME,
        ),
    ),
    project_column="project_id",
    totals=(
        Aggregate("Projects", "project_id", "count"),
        Aggregate("Scans", "scan_count", "sum"),
    ),
    charts=(Chart("Scans", "bar", by="name", value="scan_count", function="sum"),),
)
