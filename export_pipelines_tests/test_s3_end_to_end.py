"""EXPORT_STORE_URL=s3://…: the asset graph and on-demand requests publish to a real S3 endpoint."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import urllib.request
import uuid

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from export_pipelines.catalog import CATALOG
from export_pipelines.cli import main as cli
from export_pipelines.defs.expiry import expire_exports_job
from export_pipelines.defs.exports import export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.requests.ledger import RequestLedger

from .conftest import DEMO_DAY, organization_ids
from .test_requests import a_user, run, tick
from .test_s3_store import BUCKET, s3_endpoint  # noqa: F401 - the moto server fixture


@pytest.fixture
def s3_resources(s3_endpoint, sqlite_source, tmp_path):  # noqa: F811
    url = f"s3://{BUCKET}/e2e-{uuid.uuid4().hex[:10]}"
    s3 = S3Resource()
    return url, {
        "source": SourceResource(url=sqlite_source.url),
        "store": StoreResource(url=url, s3=s3),
        "work": WorkAreaResource(path=str(tmp_path / "work")),
        "s3": s3,
    }


def test_assets_publish_to_s3_and_verify(s3_resources, sqlite_source, instance):
    url, resources = s3_resources
    org = organization_ids(sqlite_source)[0]
    partition = ExportPartition(org, DEMO_DAY)
    instance.add_dynamic_partitions(organizations.name, [org])
    assert dg.materialize(
        export_assets(CATALOG["scan_results"]),
        partition_key=partition.key,
        instance=instance,
        resources=resources,
    ).success

    client = S3Resource().get_client()
    prefix = url.split("/", 3)[3]
    manifest = json.loads(
        client.get_object(
            Bucket=BUCKET, Key=f"{prefix}/{partition.folder('scan_results')}/manifest.json"
        )["Body"].read()
    )
    assert manifest["row_count"] > 0 and len(manifest["files"]) == 3
    for entry in manifest["files"]:
        key = f"{prefix}/{partition.folder('scan_results')}/{entry['name']}"
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert head["Metadata"]["sha256"] == entry["sha256"]
    assert cli(["verify", url]) == 0


def test_request_gets_a_presigned_link_that_downloads_then_expires(
    s3_resources, sqlite_source, instance
):
    url, resources = s3_resources
    sqlite_source.execute("DELETE FROM export_requests")
    ledger = RequestLedger(sqlite_source)
    user = a_user(sqlite_source, admin=False)
    request_id = ledger.insert(
        user["organization_id"],
        user["id"],
        "credit_usage_report",
        "JSON",
        filters={"date_from": "2026-03-01", "date_to": "2026-03-04"},
    )
    assert run(instance, tick(instance, sqlite_source).run_requests[0], resources).success

    row = ledger.get(request_id)
    assert row["status"] == "COMPLETED" and row["file_path"].startswith("http://127.0.0.1")
    with urllib.request.urlopen(row["file_path"], timeout=10) as response:
        body = response.read()
    assert (
        hashlib.sha256(body).hexdigest() == row["checksum_sha256"] and len(body) == row["file_size"]
    )
    assert len(json.loads(body)) == row["row_count"]
    assert cli(["verify", f"{url}/requests/{request_id}"]) == 0

    sqlite_source.execute(
        "UPDATE export_requests SET expires_at = :past WHERE id = :id",
        {"past": dt.datetime(2020, 1, 1), "id": request_id},
    )
    assert expire_exports_job.execute_in_process(instance=instance, resources=resources).success
    assert ledger.get(request_id)["status"] == "EXPIRED"
    prefix = url.split("/", 3)[3]
    listed = (
        S3Resource()
        .get_client()
        .list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/requests/{request_id}/")
    )
    assert listed.get("KeyCount", 0) == 0
