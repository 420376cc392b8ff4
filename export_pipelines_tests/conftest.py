"""Shared fixtures: real databases (embedded SQLite and PostgreSQL), a real Dagster instance."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

# Tests name their own days (2026-03-…): the partitions must not start where a developer's
# embedded demo database begins (settings.partitions_start), whatever `make dev` left.
os.environ.setdefault("EXPORT_PARTITIONS_START", "2026-01-01")

import dagster as dg  # noqa: E402 - after the setting above, which the definitions read
import pytest

from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase

PG_ADMIN_URL = os.environ.get("EXPORT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Small but complete: every table filled, several organizations sharing timestamps.
DEMO = demo_data.DemoParams(
    organizations=3, days=4, events_per_day=25, end_date=dt.date(2026, 3, 5)
)
DEMO_DAY = dt.date(2026, 3, 3)


def postgres_or_skip() -> None:
    """Skip when PostgreSQL is unreachable — except in CI, where that is a failure."""
    try:
        SourceDatabase(PG_ADMIN_URL).scalar("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any connection error means "not there"
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def scratch_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    postgres_or_skip()
    name = f"export_test_{uuid.uuid4().hex[:12]}"
    admin = SourceDatabase(PG_ADMIN_URL)
    _autocommit(admin, f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        _autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _autocommit(db: SourceDatabase, statement: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(db.url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(statement)


def seed(db: SourceDatabase, params: demo_data.DemoParams = DEMO) -> SourceDatabase:
    if db.dialect == "sqlite":
        db.ensure_embedded(params)
    else:
        db.create_schema()
        db.ingest(demo_data.generate(params))
    return db


@pytest.fixture(scope="session")
def demo_sqlite_template(tmp_path_factory) -> Path:
    """The demo database, generated once per session; tests copy it."""
    path = tmp_path_factory.mktemp("template") / "source.db"
    seed(SourceDatabase(f"sqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_source(tmp_path, demo_sqlite_template) -> SourceDatabase:
    path = tmp_path / "source.db"
    path.write_bytes(demo_sqlite_template.read_bytes())
    return SourceDatabase(f"sqlite:///{path}")


@pytest.fixture(scope="session")
def postgres_source() -> Iterator[SourceDatabase]:
    """The demo data in a PostgreSQL database of its own (one per test session)."""
    with scratch_postgres_database() as url:
        yield seed(SourceDatabase(url))


@pytest.fixture(params=["sqlite", "postgresql"])
def source(request) -> SourceDatabase:
    """The same demo data on both engines the project supports."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_source")
    return request.getfixturevalue("postgres_source")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "exports"


@pytest.fixture
def resources(tmp_path, source, store_dir) -> dict:
    return export_resources(source, store_dir, tmp_path / "work")


def export_resources(source: SourceDatabase, store_dir: Path, work_dir: Path) -> dict:
    from dagster_aws.s3 import S3Resource

    s3 = S3Resource()
    return {
        "source": SourceResource(url=source.url),
        "store": StoreResource(url=str(store_dir), s3=s3),
        "work": WorkAreaResource(path=str(work_dir)),
        "s3": s3,
    }


def organization_ids(db: SourceDatabase) -> list[str]:
    return db.fetch_table("SELECT id FROM organizations ORDER BY id").column("id").to_pylist()


def evaluate_failure_sensor(sensor, instance: dg.DagsterInstance, run_id: str, resources: dict):
    """Run a run-failure sensor on a failed run, as the daemon would after the failure."""
    failure = next(
        e
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
    )
    with dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        dagster_event=failure.dagster_event,
        resources=resources,
    ) as context:
        return sensor(context.for_run_failure())
