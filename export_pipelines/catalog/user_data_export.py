"""user_data_export: one person's data (GDPR Art. 15), requested by that person."""

from export_pipelines.catalog.spec import Access, ExportSpec, Kind, WindowKind
from export_pipelines.pipeline.gdpr import SECTIONS
from export_pipelines.render import ExportFormat

_PROFILE = SECTIONS[0]

SPEC = ExportSpec(
    key="user_data_export",
    title="Your personal data (GDPR)",
    description="Everything held about one user — profile, projects, content, usage, audit "
    "trail, credits, requests, subscriptions — with an Art. 15(1) cover document.",
    window=WindowKind.SNAPSHOT,
    query=_PROFILE.query,
    columns=_PROFILE.columns,
    default_formats=(ExportFormat.JSON,),
    access=Access.SELF,
    kind=Kind.USER_BUNDLE,
)
