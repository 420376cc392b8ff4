"""The export_pipelines code location (`dagster dev -m export_pipelines.definitions`)."""

from export_pipelines.defs import build_definitions

defs = build_definitions()
