"""audit_log_export: the organization's audit trail for the window (admins only)."""

from export_pipelines.catalog.spec import Access, Aggregate, ExportSpec, WindowKind
from export_pipelines.columns import Role, string, timestamp
from export_pipelines.render import Chart

SPEC = ExportSpec(
    key="audit_log_export",
    title="Audit log",
    description="Audit log entries of the window with the actor's email, action, target, IP and "
    "user agent (admins only).",
    window=WindowKind.EVENT,
    access=Access.ADMIN,
    query="""
        SELECT l.organization_id AS organization_id,
               l.id AS entry_id,
               l.occurred_at AS occurred_at,
               l.actor_user_id AS actor_user_id,
               u.email AS actor_email,
               l.action AS action,
               l.target_type AS target_type,
               l.target_id AS target_id,
               l.ip_address AS ip_address,
               l.user_agent AS user_agent
        FROM audit_log l
        LEFT JOIN users u ON u.id = l.actor_user_id AND u.organization_id = l.organization_id
        WHERE l.organization_id = :org_id
          AND l.occurred_at >= :window_start AND l.occurred_at < :window_end
        ORDER BY l.occurred_at, l.id
    """,
    columns=(
        string("organization_id", "Organization", label="Organization", role=Role.IDENTIFIER),
        string("entry_id", "Audit log entry id", label="Entry ID", role=Role.IDENTIFIER),
        timestamp("occurred_at", "When it happened (UTC)", label="Occurred", role=Role.TIME),
        string(
            "actor_user_id",
            "Who did it; empty for system actions",
            label="Actor ID",
            role=Role.IDENTIFIER,
        ),
        string(
            "actor_email", "The actor's email address", pii=True, label="Actor", role=Role.DIMENSION
        ),
        string(
            "action",
            "e.g. project.created, user.invited, export.completed",
            label="Action",
            role=Role.DIMENSION,
        ),
        string("target_type", "Kind of object acted on", label="Target", role=Role.DIMENSION),
        string("target_id", "Id of the object acted on", label="Target ID", role=Role.IDENTIFIER),
        string(
            "ip_address", "Client IP address", pii=True, label="IP address", role=Role.DIMENSION
        ),
        string(
            "user_agent", "Client user agent", pii=True, label="User agent", role=Role.DIMENSION
        ),
    ),
    time_column="occurred_at",
    totals=(
        Aggregate("Entries", "entry_id", "count"),
        Aggregate("Distinct actors", "actor_user_id", "count_distinct"),
        Aggregate("Distinct actions", "action", "count_distinct"),
    ),
    charts=(
        Chart("Entries", "bar", by="action"),
        Chart("Entries", "line", by="occurred_at"),
    ),
)
