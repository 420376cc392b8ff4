"""The organization bundle: every table export of one tenant and day, verifiable, reproducible."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import dagster as dg

from export_pipelines.catalog import SPECS, bundled_specs
from export_pipelines.cli import main as cli
from export_pipelines.defs.exports import all_export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.pipeline.naming import ExportPartition

from .conftest import DEMO_DAY, export_resources, organization_ids
from .test_requests import env, run, tick  # noqa: F401


def test_bundle_holds_every_part_as_published_and_is_reproducible(
    sqlite_source, instance, tmp_path
):
    org = organization_ids(sqlite_source)[0]
    partition = ExportPartition(org, DEMO_DAY)
    store_dir = tmp_path / "exports"
    resources = export_resources(sqlite_source, store_dir, tmp_path / "work")
    instance.add_dynamic_partitions(organizations.name, [org])
    assets = all_export_assets([s for s in SPECS if s.key != "user_data_export"])

    digests = []
    for _ in range(2):
        assert dg.materialize(
            assets, partition_key=partition.key, instance=instance, resources=resources
        ).success
        folder = store_dir / partition.folder("organization_bundle")
        manifest = json.loads((folder / "manifest.json").read_text())
        digests.append(manifest["files"][0]["sha256"])
    assert digests[0] == digests[1], "unchanged data must give a byte-identical bundle"

    archive = zipfile.ZipFile(folder / manifest["files"][0]["name"])
    inner = json.loads(archive.read("manifest.json"))
    assert {p["export_type"] for p in inner["parts"]} == {s.key for s in bundled_specs()}
    for part in inner["parts"]:
        published = json.loads(
            (store_dir / partition.folder(part["export_type"]) / "manifest.json").read_text()
        )
        assert part["files"] == [
            {k: f[k] for k in ("name", "format", "bytes", "sha256", "rows")}
            for f in published["files"]
        ]
        for entry in part["files"]:
            data = archive.read(f"{part['export_type']}/{entry['name']}")
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert manifest["row_count"] == sum(p["row_count"] for p in inner["parts"])
    assert cli(["verify", str(store_dir)]) == 0


def test_bundle_request_zips_every_type_over_the_range(env, instance):  # noqa: F811
    db, ledger, resources, _ = env
    admin = db.fetch_rows(
        "SELECT id, organization_id FROM users WHERE is_admin = :yes ORDER BY id", {"yes": True}
    )[0]
    request_id = ledger.insert(
        admin["organization_id"],
        admin["id"],
        "organization_bundle",
        "CSV",
        filters={"date_from": "2026-03-02", "date_to": "2026-03-03"},
    )
    result = tick(instance, db)
    assert run(instance, result.run_requests[0], resources).success
    row = ledger.get(request_id)
    assert row["status"] == "COMPLETED", row["error_message"]
    with open(row["file_path"], "rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    inner = json.loads(archive.read("manifest.json"))
    assert {p["export_type"] for p in inner["parts"]} == {s.key for s in bundled_specs()}
    assert row["row_count"] == sum(p["row_count"] for p in inner["parts"])
    scans = next(p for p in inner["parts"] if p["export_type"] == "scan_results")
    (scan_file,) = scans["files"]
    text = archive.read(f"scan_results/{scan_file['name']}").decode()
    assert len(text.splitlines()) - 1 == scan_file["rows"] == scans["row_count"] > 0
    assert hashlib.sha256(text.encode()).hexdigest() == scan_file["sha256"]
