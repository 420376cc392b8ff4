"""S3Store against a real S3 endpoint on loopback (moto's server), through dagster-aws's client."""

from __future__ import annotations

import datetime as dt
import hashlib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster_aws.s3 import S3Resource

from export_pipelines.cli import main as cli
from export_pipelines.manifest import MANIFEST, publish_folder, read_manifest
from export_pipelines.render import ExportFormat, RenderedFile, render
from export_pipelines.store import LocalStore, S3Store, Store, open_store, sha256_file

from .s3_server import moto_s3_server

BUCKET = "export-pipelines-test"
EXPORT_TYPE = "scan_results"
ORG = "org-7f3a"
DAY = dt.date(2026, 3, 1)
FORMATS = (ExportFormat.CSV, ExportFormat.PARQUET, ExportFormat.XML)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """One moto server per module; boto3 finds it through the standard AWS_* variables."""
    with moto_s3_server() as endpoint, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # A developer's ~/.aws profile or a service-specific endpoint must not leak in.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        S3Resource().get_client().create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture
def s3_client(s3_endpoint) -> Any:
    """The client the deployment uses: dagster-aws's S3Resource, configured by the environment."""
    return S3Resource().get_client()


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    """A fresh prefix per test, so tests sharing the module's bucket never see each other."""
    return f"s3://{BUCKET}/exports-{uuid.uuid4().hex[:12]}"


def store_prefix(url: str) -> str:
    return url.split("/", 3)[3]


def partition_folder(day: dt.date = DAY, org: str = ORG) -> str:
    return f"{EXPORT_TYPE}/org={org}/date={day.isoformat()}"


def sample_rows(day: dt.date, count: int) -> pa.Table:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return pa.table(
        {
            "scan_id": [f"scan-{day:%d}-{i:03}" for i in range(count)],
            "scanned_at": pa.array(
                [start + dt.timedelta(minutes=7 * i) for i in range(count)],
                pa.timestamp("us", tz="UTC"),
            ),
            "score": [round(0.37 * i, 2) for i in range(count)],
            "note": ["=cmd", 'Zürich, "quoted"', ""] * (count // 3) + [""] * (count % 3),
        }
    )


def render_partition(
    directory: Path, day: dt.date = DAY, formats=FORMATS, rows: int = 12
) -> list[RenderedFile]:
    """Files as the render stage makes them: real renderers, docs/CONTRACT.md §5 file names."""
    directory.mkdir(parents=True, exist_ok=True)
    table = sample_rows(day, rows)
    files = []
    for fmt in formats:
        path = directory / f"{EXPORT_TYPE}_{ORG}_{day.isoformat()}.{fmt.extension}"
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
        files.append(render(fmt, reader, path))
    return files


def header(day: dt.date = DAY, rows: int = 12) -> dict[str, Any]:
    return {
        "export_type": EXPORT_TYPE,
        "organization_id": ORG,
        "date": day.isoformat(),
        "row_count": rows,
        "columns": [{"name": "scan_id", "type": "string"}],
        "code_version": "test",
        "run_id": "run-1",
        "request_id": None,
    }


def publish(store: Store, folder: str, files: list[RenderedFile], day: dt.date = DAY):
    return publish_folder(store, folder, files, header(day, files[0].rows))


def raw_keys(client: Any, prefix: str) -> list[str]:
    """Object keys exactly as S3 holds them, bypassing S3Store."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def without_clock(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in manifest.items() if key != "generated_at"}


def test_publish_to_s3_gives_the_local_layout_and_manifest(s3_client, s3_url, tmp_path):
    files = render_partition(tmp_path / "render")
    folder = partition_folder()
    local = LocalStore(tmp_path / "local")
    s3 = S3Store(s3_url, s3_client)

    local_manifest, _ = publish(local, folder, files)
    s3_manifest, published = publish(s3, folder, files)

    expected = sorted([f"{folder}/{f.path.name}" for f in files] + [f"{folder}/{MANIFEST}"])
    assert local.list_keys("") == expected
    assert s3.list_keys("") == expected
    # The objects really sit under the store's prefix in the bucket, not just in S3Store's view.
    prefix = store_prefix(s3_url)
    assert raw_keys(s3_client, f"{prefix}/") == [f"{prefix}/{key}" for key in expected]

    assert read_manifest(s3, folder) == s3_manifest
    assert read_manifest(local, folder) == local_manifest
    assert without_clock(s3_manifest) == without_clock(local_manifest)
    assert [entry["name"] for entry in s3_manifest["files"]] == [f.path.name for f in files]
    for rendered in files:
        key = f"{folder}/{rendered.path.name}"
        assert s3.read_bytes(key) == local.read_bytes(key) == rendered.path.read_bytes()
    assert [p.location for p in published] == [f"{s3_url}/{folder}/{f.path.name}" for f in files]


def test_republishing_fewer_formats_drops_the_stale_objects(s3_client, s3_url, tmp_path):
    folder = partition_folder()
    s3 = S3Store(s3_url, s3_client)
    publish(s3, folder, render_partition(tmp_path / "first"))
    csv_only = render_partition(tmp_path / "second", formats=(ExportFormat.CSV,), rows=5)

    manifest, _ = publish(s3, folder, csv_only)

    assert s3.list_keys(folder) == sorted(
        [f"{folder}/{csv_only[0].path.name}", f"{folder}/{MANIFEST}"]
    )
    assert [entry["rows"] for entry in manifest["files"]] == [5]
    assert s3.read_bytes(f"{folder}/{csv_only[0].path.name}") == csv_only[0].path.read_bytes()


def test_every_object_carries_its_sha256_in_metadata(s3_client, s3_url, tmp_path):
    files = render_partition(tmp_path / "render")
    folder = partition_folder()
    manifest, _ = publish(S3Store(s3_url, s3_client), folder, files)
    listed = {entry["name"]: entry for entry in manifest["files"]}

    keys = raw_keys(s3_client, f"{store_prefix(s3_url)}/")
    assert len(keys) == len(files) + 1
    for key in keys:
        head = s3_client.head_object(Bucket=BUCKET, Key=key)
        body = s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest(), key
        assert head["ContentLength"] == len(body)
        name = key.rsplit("/", 1)[1]
        if name != MANIFEST:
            assert listed[name]["sha256"] == head["Metadata"]["sha256"]
            assert listed[name]["bytes"] == len(body)
    for rendered in files:
        assert listed[rendered.path.name]["sha256"] == sha256_file(rendered.path)


def test_cli_verify_passes_then_names_the_tampered_or_missing_file(
    s3_client, s3_url, tmp_path, capsys
):
    s3 = S3Store(s3_url, s3_client)
    first, second = DAY, DAY + dt.timedelta(days=1)
    first_files = render_partition(tmp_path / "first", first)
    second_files = render_partition(tmp_path / "second", second)
    publish(s3, partition_folder(first), first_files, first)
    publish(s3, partition_folder(second), second_files, second)

    assert cli(["verify", s3_url]) == 0
    assert "OK: 2 folder(s)" in capsys.readouterr().out

    # Same size and the original metadata kept: only recomputing the digest can catch it.
    tampered = f"{partition_folder(first)}/{first_files[0].path.name}"
    original = s3.read_bytes(tampered)
    s3_client.put_object(
        Bucket=BUCKET,
        Key=f"{store_prefix(s3_url)}/{tampered}",
        Body=bytes(reversed(original)),
        Metadata={"sha256": hashlib.sha256(original).hexdigest()},
    )
    assert cli(["verify", s3_url]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {tampered}: sha256" in err
    assert "1 problem(s) in 2 folder(s)" in err

    deleted = f"{partition_folder(second)}/{second_files[1].path.name}"
    s3.delete(deleted)
    assert cli(["verify", s3_url]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {deleted}: missing" in err
    assert f"FAILED {tampered}: sha256" in err
    assert "2 problem(s) in 2 folder(s)" in err


def test_cli_verify_of_a_prefix_without_manifests_exits_2(s3_endpoint, s3_url, capsys):
    assert cli(["verify", s3_url]) == 2
    assert f"no manifest.json found under {s3_url}" in capsys.readouterr().err


def test_open_store_builds_a_boto3_client_on_the_environment_endpoint(
    s3_endpoint, s3_client, s3_url, tmp_path
):
    store = open_store(s3_url)

    assert isinstance(store, S3Store)
    assert store.client.meta.endpoint_url == s3_endpoint
    files = render_partition(tmp_path / "render", formats=(ExportFormat.CSV,))
    key = f"{partition_folder()}/{files[0].path.name}"
    store.put_file(files[0].path, key, sha256_file(files[0].path))
    # Written through boto3.client("s3"), read through dagster-aws's client: one endpoint.
    assert S3Store(s3_url, s3_client).read_bytes(key) == files[0].path.read_bytes()
    assert store.checksum(key) == (sha256_file(files[0].path), files[0].path.stat().st_size)
    assert store.checksum(f"{partition_folder()}/absent.csv") is None


def test_presigned_url_downloads_the_exact_bytes(s3_endpoint, s3_client, s3_url, tmp_path):
    files = render_partition(tmp_path / "render")
    folder = partition_folder()
    s3 = S3Store(s3_url, s3_client)
    publish(s3, folder, files)

    for rendered in files:
        url = s3.download_url(f"{folder}/{rendered.path.name}", 300)
        assert url.startswith(f"{s3_endpoint}/")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == rendered.path.read_bytes()

    # The link addresses that one object: a link to an absent key is a 404, not some file.
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(s3.download_url(f"{folder}/absent.csv", 300), timeout=10)
    assert missing.value.code == 404


def test_delete_prefix_expires_a_request_folder_and_then_everything(s3_client, s3_url, tmp_path):
    s3 = S3Store(s3_url, s3_client)
    request = f"requests/{uuid.uuid4()}"
    request_files = render_partition(tmp_path / "request")
    partition_files = render_partition(tmp_path / "partition")
    publish(s3, request, request_files)
    publish(s3, partition_folder(), partition_files)
    kept = s3.list_keys(partition_folder())

    assert s3.delete_prefix(request) == len(request_files) + 1
    assert s3.list_keys(request) == []
    assert raw_keys(s3_client, f"{store_prefix(s3_url)}/{request}") == []
    assert s3.list_keys(partition_folder()) == kept

    assert s3.delete_prefix("") == len(partition_files) + 1
    assert raw_keys(s3_client, f"{store_prefix(s3_url)}/") == []


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_list_and_delete_prefix_stop_at_the_folder_boundary(kind, request, tmp_path):
    if kind == "s3":
        store: Store = S3Store(
            request.getfixturevalue("s3_url"), request.getfixturevalue("s3_client")
        )
    else:
        store = LocalStore(tmp_path / "local")
    # export_requests.id is free TEXT: one id can be a string prefix of another.
    publish(
        store, "requests/req-7", render_partition(tmp_path / "short", formats=(ExportFormat.CSV,))
    )
    publish(
        store, "requests/req-70", render_partition(tmp_path / "long", formats=(ExportFormat.CSV,))
    )
    neighbour = store.list_keys("requests/req-70")

    assert all(key.startswith("requests/req-7/") for key in store.list_keys("requests/req-7"))
    assert store.delete_prefix("requests/req-7") == 2
    assert store.list_keys("requests/req-70") == neighbour
    assert len(neighbour) == 2
