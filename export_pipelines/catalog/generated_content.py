"""generated_content: content items created in the window, with their text."""

from export_pipelines.catalog.spec import Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, Unit, integer, string, timestamp
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="generated_content",
    title="Generated content",
    description="Content items created in the window, with title and body text.",
    window=WindowKind.EVENT,
    query="""
        SELECT p.organization_id AS organization_id,
               c.id AS content_id,
               c.project_id AS project_id,
               c.user_id AS user_id,
               c.content_type AS content_type,
               c.title AS title,
               c.body AS body,
               c.word_count AS word_count,
               c.created_at AS created_at
        FROM generated_content c
        JOIN projects p ON p.id = c.project_id
        WHERE p.organization_id = :org_id
          AND c.created_at >= :window_start AND c.created_at < :window_end
        ORDER BY c.created_at, c.id
    """,
    columns=(
        string(
            "organization_id",
            "Organization the content belongs to",
            label="Organization",
            role=Role.IDENTIFIER,
        ),
        string("content_id", "Content item id", label="Content ID", role=Role.IDENTIFIER),
        string(
            "project_id", "Project it was generated for", label="Project ID", role=Role.IDENTIFIER
        ),
        string("user_id", "User who generated it", label="User ID", role=Role.IDENTIFIER),
        string(
            "content_type", "article | summary | faq | …", label="Content type", role=Role.DIMENSION
        ),
        string("title", "Title", label="Title", role=Role.DIMENSION),
        string("body", "Full text", label="Text", role=Role.DIMENSION),
        integer(
            "word_count", "Words in the body", label="Words", role=Role.MEASURE, unit=Unit.COUNT
        ),
        timestamp("created_at", "When it was generated (UTC)", label="Generated", role=Role.TIME),
    ),
    project_column="project_id",
    time_column="created_at",
    totals=(
        Aggregate("Items", "content_id", "count"),
        Aggregate("Words", "word_count", "sum"),
    ),
    charts=(
        Chart("Words", "bar", by="content_type", value="word_count", function="sum"),
        Chart("Items", "line", by="created_at"),
    ),
)
