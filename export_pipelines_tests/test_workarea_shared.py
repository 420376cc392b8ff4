"""The work area on machines that share no disk: versions handed through S3 (moto's server).

Each "machine" is a `WorkArea` with its own empty local root and its own S3 client; what
one builds, another finds current, downloads and reads byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from export_pipelines.catalog import CATALOG
from export_pipelines.cli import main as cli
from export_pipelines.defs.exports import export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.defs.resources import (
    SourceResource,
    StoreResource,
    WorkAreaResource,
    default_resources,
    shared_work_url,
)
from export_pipelines.pipeline import workarea
from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.pipeline.workarea import SharedLocation, WorkArea
from export_pipelines.settings import WORK_URL_VAR

from .conftest import DEMO_DAY, organization_ids

BUCKET = "export-pipelines-work-test"
PARTITION = ExportPartition("org-7f3a", dt.date(2026, 3, 1))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, found by boto3 through AWS_*; missing moto fails in CI."""
    try:
        from .s3_server import moto_s3_server
    except ImportError as error:
        message = f"moto's S3 server is not installed: {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with moto_s3_server() as endpoint, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        S3Resource().get_client().create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture
def work_url(s3_endpoint) -> str:
    """A fresh shared location per test."""
    return f"s3://{BUCKET}/work-{uuid.uuid4().hex[:12]}"


def machine(root: Path, url: str, client: Any = None) -> WorkArea:
    """One pod: its own empty disk, its own S3 client, the shared location."""
    return WorkArea(root, SharedLocation(url, client or S3Resource().get_client()))


def stage(area: WorkArea) -> Path:
    return area.stage_dir("scan_results", "extract", PARTITION)


def writer(files: dict[str, bytes]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)

    return build


def built(area: WorkArea, files: dict[str, bytes], version: str | None = None) -> str:
    """Build a version of the stage on `area`; its name."""
    name = version or uuid.uuid4().hex
    area.build(stage(area), writer(files), version=name)
    return name


def contents(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def shared_keys(url: str) -> list[str]:
    bucket, prefix = SharedLocation.parse(url)
    listed = S3Resource().get_client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    return sorted(item["Key"][len(prefix) + 1 :] for item in listed.get("Contents", []))


class FailingClient:
    """A real S3 client that raises once `fails(operation, key)` says so: a killed upload."""

    def __init__(self, client: Any, fails: Callable[[str, str], bool]):
        self._client, self._fails = client, fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def upload_file(self, path: str, bucket: str, key: str, **kwargs: Any) -> None:
        if self._fails("upload_file", key):
            raise ConnectionError(f"injected: the upload of {key} was cut off")
        self._client.upload_file(path, bucket, key, **kwargs)

    def put_object(self, **kwargs: Any) -> Any:
        if self._fails("put_object", kwargs["Key"]):
            raise ConnectionError(f"injected: the PUT of {kwargs['Key']} was cut off")
        return self._client.put_object(**kwargs)


FIRST = {"data.parquet": b"first version " * 1000, "nested/summary.json": b'{"rows": 1}'}
SECOND = {"data.parquet": b"second version " * 1000, "nested/summary.json": b'{"rows": 2}'}


def test_what_one_machine_builds_another_reads_byte_for_byte(work_url, tmp_path):
    one, other = machine(tmp_path / "one", work_url), machine(tmp_path / "other", work_url)
    assert other.current(stage(other)) is None  # never built anywhere

    name = built(one, FIRST)
    found = other.current(stage(other))
    assert found == stage(other) / name and contents(found) == FIRST
    assert other.version(stage(other), name) == found
    assert other.version(stage(other), "run-never-built") is None

    built(one, SECOND, version="run-abc")
    assert contents(other.current(stage(other))) == SECOND
    third = machine(tmp_path / "third", work_url)  # asks for the version by name only
    assert contents(third.version(stage(third), "run-abc")) == SECOND
    assert not list(stage(other).glob(".fetch-*"))
    assert f"scan_results/extract/org={PARTITION.organization_id}/date=2026-03-01/CURRENT" in (
        shared_keys(work_url)
    )


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda op, key: key.endswith("/nested/summary.json"), id="between-files"),
        pytest.param(lambda op, key: key.endswith(".json") and op == "put_object", id="record"),
        pytest.param(lambda op, key: key.endswith("/CURRENT"), id="pointer"),
    ],
)
def test_an_interrupted_upload_leaves_every_machine_on_the_previous_version(
    work_url, tmp_path, cut
):
    one, other = machine(tmp_path / "one", work_url), machine(tmp_path / "other", work_url)
    first = built(one, FIRST)
    broken = machine(tmp_path / "broken", work_url, FailingClient(S3Resource().get_client(), cut))

    with pytest.raises(ConnectionError, match="injected"):
        built(broken, SECOND)

    for reader in (other, one, broken):
        found = reader.current(stage(reader))
        assert found.name == first and contents(found) == FIRST
    assert not (stage(broken) / "CURRENT").exists()


def test_concurrent_builders_and_readers_never_see_a_mixed_version(work_url, tmp_path):
    builders = [machine(tmp_path / f"builder-{i}", work_url) for i in range(3)]
    readers = [machine(tmp_path / f"reader-{i}", work_url) for i in range(2)]
    built(builders[0], {"a": b"seed", "b": b"seed"})
    errors: list[BaseException] = []
    seen: list[bytes] = []
    done = threading.Event()

    def build(index: int, area: WorkArea) -> None:
        try:
            for round_ in range(4):
                tag = f"builder-{index}:round-{round_}:".encode() * 2000
                # Half the builds reuse one version name, as retried steps of one run do.
                version = "run-shared" if round_ % 2 else None
                area.build(stage(area), writer({"a": tag, "b": tag}), version=version)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def read(area: WorkArea) -> None:
        try:
            while not done.is_set():
                files = contents(area.current(stage(area)))
                assert files["a"] == files["b"], "a version mixing two builds"
                seen.append(files["a"])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=build, args=(i, b)) for i, b in enumerate(builders)]
    reading = [threading.Thread(target=read, args=(r,)) for r in readers]
    for thread in threads + reading:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in reading:
        thread.join()

    assert not errors, errors
    assert seen, "the readers read"
    late = machine(tmp_path / "late", work_url)
    final = contents(late.current(stage(late)))
    assert final["a"] == final["b"] and final["a"].startswith(b"builder-")


def test_fetching_one_version_twice_at_once_on_one_machine(work_url, tmp_path):
    """Two processes of one pod, one local cache: both get the version, whole."""
    builder = machine(tmp_path / "one", work_url)
    name = built(builder, FIRST)
    shared_root = tmp_path / "pod"
    areas = [machine(shared_root, work_url) for _ in range(4)]
    barrier = threading.Barrier(len(areas))
    found: list[Path] = []

    def fetch(area: WorkArea) -> None:
        barrier.wait()
        found.append(area.current(stage(area)))

    threads = [threading.Thread(target=fetch, args=(a,)) for a in areas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert found == [stage(areas[0]) / name] * len(areas)
    assert contents(found[0]) == FIRST
    assert [p.name for p in stage(areas[0]).iterdir()] == [name]  # no leftover fetches


def test_old_versions_and_killed_uploads_are_pruned_in_s3_after_their_grace(
    work_url, tmp_path, monkeypatch
):
    one = machine(tmp_path / "one", work_url)
    old = [built(one, FIRST) for _ in range(2)]
    killed = machine(
        tmp_path / "killed",
        work_url,
        FailingClient(S3Resource().get_client(), lambda op, key: op == "put_object"),
    )
    with pytest.raises(ConnectionError):
        built(killed, SECOND)  # its files are up, never recorded

    def versions() -> set[str]:
        return {key.split("/")[4].removesuffix(".json") for key in shared_keys(work_url)} - {
            "CURRENT"
        }

    newest = built(one, SECOND)
    assert set(old) | {newest} < versions()  # within the grace period every version stays

    monkeypatch.setattr(workarea, "_GRACE_SECONDS", -1)
    monkeypatch.setattr(workarea, "_ABANDONED_SECONDS", -1)
    last = built(one, SECOND)

    assert versions() == {last}
    prefix = f"scan_results/extract/org={PARTITION.organization_id}/date=2026-03-01"
    kept = [key.removeprefix(f"{prefix}/") for key in shared_keys(work_url)]
    assert sorted(k.split("/")[0] for k in kept) == sorted(["CURRENT", last, last, f"{last}.json"])
    other = machine(tmp_path / "other", work_url)
    assert contents(other.current(stage(other))) == SECOND


@pytest.mark.parametrize(
    ("work", "store", "accepted"),
    [
        ("s3://bucket/_work", "s3://bucket/exports", True),
        ("s3://bucket/exports_work", "s3://bucket/exports", True),
        ("s3://other/exports", "s3://bucket/exports", True),
        ("s3://bucket/_work", "/srv/exports", True),
        ("s3://bucket/exports/_work", "s3://bucket/exports", False),
        ("s3://bucket/exports", "s3://bucket/exports/", False),
        ("s3://bucket", "s3://bucket/exports", False),
        ("s3://bucket/_work", "s3://bucket", False),
        ("/mnt/work", "s3://bucket/exports", False),
        ("s3://", "/srv/exports", False),
    ],
)
def test_the_shared_location_never_overlaps_the_published_store(monkeypatch, work, store, accepted):
    monkeypatch.setenv(WORK_URL_VAR, work)
    if accepted:
        assert shared_work_url(store) == work
    else:
        with pytest.raises(ValueError, match="overlaps the store|s3://bucket"):
            shared_work_url(store)


def test_the_deployment_reads_export_work_url(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPORT_WORK_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPORT_STORE_URL", "s3://bucket/exports")
    monkeypatch.delenv(WORK_URL_VAR, raising=False)
    local = default_resources()["work"]
    assert local.url == "" and local.work_area().shared is None

    monkeypatch.setenv(WORK_URL_VAR, "s3://bucket/_work/exports")
    shared = default_resources()["work"]
    assert shared.url == "s3://bucket/_work/exports"
    assert shared.work_area().shared.location("k") == "s3://bucket/_work/exports/k"

    monkeypatch.setenv(WORK_URL_VAR, "s3://bucket/exports/_work")
    with pytest.raises(ValueError, match="overlaps the store"):
        default_resources()


@pytest.mark.slow
def test_each_stage_in_its_own_pod_publishes_a_partition_that_verifies(
    work_url, sqlite_source, instance, tmp_path
):
    org = organization_ids(sqlite_source)[0]
    partition = ExportPartition(org, DEMO_DAY)
    instance.add_dynamic_partitions(organizations.name, [org])
    store_url = f"s3://{BUCKET}/exports-{uuid.uuid4().hex[:12]}"
    assets = export_assets(CATALOG["scan_results"])

    def run_in_pod(stage_name: str, pod: Path, url: str) -> dg.ExecuteInProcessResult:
        s3 = S3Resource()
        return dg.materialize(
            assets,
            selection=[dg.AssetKey(["scan_results", stage_name])],
            partition_key=partition.key,
            instance=instance,
            raise_on_error=False,
            resources={
                "source": SourceResource(url=sqlite_source.url),
                "store": StoreResource(url=store_url, s3=s3),
                "work": WorkAreaResource(path=str(pod), url=url),
                "s3": s3,
            },
        )

    # Without a shared location a pod with an empty disk finds nothing upstream.
    assert run_in_pod("extract", tmp_path / "alone-1", "").success
    assert not run_in_pod("transform", tmp_path / "alone-2", "").success

    for stage_name in ("extract", "transform", "render", "publish"):
        assert run_in_pod(stage_name, tmp_path / f"pod-{stage_name}", work_url).success

    folder = partition.folder("scan_results")
    manifest = json.loads(
        S3Resource()
        .get_client()
        .get_object(Bucket=BUCKET, Key=f"{store_url.split('/', 3)[3]}/{folder}/manifest.json")[
            "Body"
        ]
        .read()
    )
    assert manifest["row_count"] > 0 and len(manifest["files"]) == 3
    assert cli(["verify", store_url]) == 0
    # The publish pod fetched only the render stage it publishes from.
    fetched = {
        p.relative_to(tmp_path / "pod-publish").parts[1]
        for p in (tmp_path / "pod-publish").rglob("*.json")
    }
    assert fetched == {"render"}
