"""organization_bundle: every other export type of one organization and day, in one zip."""

from export_pipelines.catalog.spec import Access, ExportSpec, Kind, WindowKind
from export_pipelines.columns import Role, Unit, integer, string

SPEC = ExportSpec(
    key="organization_bundle",
    title="Organization bundle",
    description="Every other export type of one organization and day in one zip archive, "
    "with a top-level manifest (admins only).",
    window=WindowKind.EVENT,
    query="SELECT id AS organization_id FROM organizations WHERE id = :org_id",
    columns=(
        string(
            "organization_id", "Organization bundled", label="Organization", role=Role.IDENTIFIER
        ),
        string("export_type", "A bundled export type", label="Export type", role=Role.DIMENSION),
        integer(
            "row_count",
            "Rows of that export type",
            label="Rows",
            role=Role.MEASURE,
            unit=Unit.COUNT,
        ),
    ),
    default_formats=(),
    access=Access.ADMIN,
    kind=Kind.ORGANIZATION_BUNDLE,
)
