"""Dagster resources: the only place that touches the outside world.

Secrets stay out of Dagster. A connection string set in the environment reaches its resource
as `dg.EnvVar(<name>)`: Dagster keeps only the variable's *name* in the resource's config
(what the UI's Resources page, the job snapshot and every run record show) and reads the
value in the process that uses it. When the variable is unset, the
embedded default — a local path, with no credentials — is passed as a literal, because
`EnvVar` refuses an unset variable. The SMTP password is read by `settings.smtp_settings()`
where the mail is sent; S3 credentials are boto3's own (`AWS_*`): neither is config here.
"""

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from export_pipelines import settings
from export_pipelines.pipeline.workarea import SharedLocation, WorkArea
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import Store, open_store


class SourceResource(dg.ConfigurableResource):
    """The application database (EXPORT_SOURCE_URL); the embedded default seeds itself."""

    url: str = Field(
        description="`postgresql://…` or `sqlite:///path`; set from EXPORT_SOURCE_URL by name, "
        "so a password in it is never shown or stored."
    )

    def database(self) -> SourceDatabase:
        # Strip as settings.source_url() does: an EnvVar arrives exactly as it was set.
        db = SourceDatabase(self.url.strip())
        db.ensure_embedded()
        return db


class StoreResource(dg.ConfigurableResource):
    """Where exports are published (EXPORT_STORE_URL): a folder or s3://bucket/prefix."""

    url: str
    s3: dg.ResourceDependency[S3Resource]

    def store(self) -> Store:
        url = self.url.strip()
        client = self.s3.get_client() if url.startswith("s3://") else None
        return open_store(url, client)


class WorkAreaResource(dg.ConfigurableResource):
    """The stages' private working area (Parquet per partition).

    `path` alone: one local folder, which every stage of a partition must see. With `url`
    the stages hand their versions through S3 instead and `path` is this machine's cache,
    so each step may run in its own pod or task with an empty disk.
    """

    path: str
    url: str = Field(
        default="",
        description="`s3://bucket/prefix` from EXPORT_WORK_URL; empty: the local folder only.",
    )

    def work_area(self) -> WorkArea:
        url = self.url.strip()
        if not url:
            return WorkArea(Path(self.path))
        # A client of its own, configured as the store's (S3Resource's defaults): boto3
        # reads AWS_* and AWS_ENDPOINT_URL itself, in the process that uses it.
        return WorkArea(Path(self.path), SharedLocation(url, S3Resource().get_client()))


def shared_work_url(store_url: str) -> str:
    """EXPORT_WORK_URL, checked when the definitions load; empty when unset.

    It must not overlap the store: `verify`, the expiry job and consumers read the store,
    and the work area's objects are no deliverable.
    """
    url = settings.work_url()
    if not url:
        return ""
    bucket, prefix = SharedLocation.parse(url)
    if store_url.startswith("s3://"):
        store_bucket, store_prefix = SharedLocation.parse(store_url)
        if bucket == store_bucket and _nested(prefix, store_prefix):
            raise ValueError(
                f"{settings.WORK_URL_VAR} ({url}) overlaps the store ({store_url}): the work area must "
                "be a prefix of its own, outside the published exports"
            )
    return url


def _nested(first: str, second: str) -> bool:
    """Whether one '/'-separated prefix holds the other (the empty prefix holds everything)."""
    a, b = f"{first}/".lstrip("/"), f"{second}/".lstrip("/")
    return a.startswith(b) or b.startswith(a)


def from_environment(name: str, default: str) -> str:
    """`dg.EnvVar(name)` when the variable is set, else the (credential-free) `default`."""
    return dg.EnvVar(name) if settings.is_set(name) else default


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources for this deployment, chosen from the environment (docs/CONTRACT.md §2)."""
    # No keys here: boto3 reads AWS_* (and AWS_ENDPOINT_URL) itself, in the run's process.
    s3 = S3Resource()
    return {
        "source": SourceResource(
            url=from_environment(settings.SOURCE_URL_VAR, settings.default_source_url())
        ),
        "store": StoreResource(
            url=from_environment(settings.STORE_URL_VAR, settings.default_store_url()), s3=s3
        ),
        "work": WorkAreaResource(
            path=str(settings.work_dir()), url=shared_work_url(settings.store_url())
        ),
        "s3": s3,
    }
