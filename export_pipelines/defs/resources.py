"""Dagster resources: the only place that touches the outside world."""

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from export_pipelines import settings
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import Store, open_store


class SourceResource(dg.ConfigurableResource):
    """The application database (EXPORT_SOURCE_URL); the embedded default seeds itself."""

    url: str

    def database(self) -> SourceDatabase:
        db = SourceDatabase(self.url)
        db.ensure_embedded()
        return db


class StoreResource(dg.ConfigurableResource):
    """Where exports are published (EXPORT_STORE_URL): a folder or s3://bucket/prefix."""

    url: str
    s3: dg.ResourceDependency[S3Resource]

    def store(self) -> Store:
        client = self.s3.get_client() if self.url.startswith("s3://") else None
        return open_store(self.url, client)


class WorkAreaResource(dg.ConfigurableResource):
    """The stages' private working area (Parquet per partition)."""

    path: str

    def work_area(self) -> WorkArea:
        return WorkArea(Path(self.path))


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources for this deployment, chosen from the environment (docs/CONTRACT.md §2)."""
    s3 = S3Resource()
    return {
        "source": SourceResource(url=settings.source_url()),
        "store": StoreResource(url=settings.store_url(), s3=s3),
        "work": WorkAreaResource(path=str(settings.work_dir())),
        "s3": s3,
    }
