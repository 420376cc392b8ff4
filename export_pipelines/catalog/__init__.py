"""The export catalog (docs/CONTRACT.md §3): one spec per export type."""

from export_pipelines.catalog import (
    audit_log_export,
    content_analytics,
    credit_usage_report,
    generated_content,
    organization_bundle,
    project_detailed,
    projects_summary,
    scan_history,
    scan_results,
    usage_analytics,
    user_data_export,
)
from export_pipelines.catalog.spec import Access, Aggregate, ExportSpec, Kind, Window, WindowKind

SPECS: tuple[ExportSpec, ...] = (
    projects_summary.SPEC,
    project_detailed.SPEC,
    scan_results.SPEC,
    scan_history.SPEC,
    generated_content.SPEC,
    content_analytics.SPEC,
    usage_analytics.SPEC,
    credit_usage_report.SPEC,
    audit_log_export.SPEC,
    user_data_export.SPEC,
    organization_bundle.SPEC,
)
CATALOG: dict[str, ExportSpec] = {spec.key: spec for spec in SPECS}


def get_spec(export_type: str) -> ExportSpec:
    """Look up an export type by key; requests may use the upper-case form."""
    key = export_type.strip().lower()
    if key not in CATALOG:
        known = ", ".join(sorted(CATALOG))
        raise KeyError(f"unknown export type {export_type!r}; known types: {known}")
    return CATALOG[key]


__all__ = [
    "Access",
    "Aggregate",
    "CATALOG",
    "ExportSpec",
    "Kind",
    "SPECS",
    "Window",
    "WindowKind",
    "get_spec",
]


def bundled_specs() -> tuple[ExportSpec, ...]:
    """What the organization bundle holds: every per-organization table export."""
    return tuple(s for s in SPECS if s.kind is Kind.TABLE)
