"""The foundation story: seed, materialize through Dagster, read the published files back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from export_pipelines.catalog import CATALOG
from export_pipelines.cli import main as cli
from export_pipelines.defs.exports import export_assets
from export_pipelines.defs.partitions import organizations, organizations_sensor
from export_pipelines.defs.resources import SourceResource
from export_pipelines.pipeline.naming import ExportPartition

from .conftest import DEMO_DAY, organization_ids

EXPORT_TYPES = ["scan_results", "credit_usage_report"]

# The SQL a person would write to count one organization's rows of one day.
COUNT_SQL = {
    "scan_results": """
        SELECT count(*) FROM scan_results s JOIN audits a ON a.id = s.audit_id
        JOIN projects p ON p.id = a.project_id
        WHERE p.organization_id = :org AND s.created_at >= :start AND s.created_at < :end
    """,
    "credit_usage_report": """
        SELECT count(*) FROM credit_ledger
        WHERE organization_id = :org AND created_at >= :start AND created_at < :end
    """,
}


def materialize(export_type: str, partition: ExportPartition, instance, resources) -> None:
    instance.add_dynamic_partitions(organizations.name, [partition.organization_id])
    result = dg.materialize(
        export_assets(CATALOG[export_type]),
        partition_key=partition.key,
        instance=instance,
        resources=resources,
    )
    assert result.success


def published_folder(store_dir: Path, export_type: str, partition: ExportPartition) -> Path:
    return store_dir / partition.folder(export_type)


@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_materialized_partition_reads_back_and_reconciles(
    export_type, source, instance, resources, store_dir
):
    orgs = organization_ids(source)
    org = orgs[0]
    partition = ExportPartition(org, DEMO_DAY)
    materialize(export_type, partition, instance, resources)

    window = partition.window
    expected = source.scalar(
        COUNT_SQL[export_type], {"org": org, "start": window.start, "end": window.end}
    )
    assert expected > 0, "the demo data should have rows on the test day"

    folder = published_folder(store_dir, export_type, partition)
    stem = partition.file_stem(export_type)
    with open(folder / f"{stem}.csv", newline="", encoding="utf-8") as handle:
        csv_rows = list(csv.DictReader(handle))
    json_rows = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    table = pq.read_table(folder / f"{stem}.parquet")

    assert len(csv_rows) == len(json_rows) == table.num_rows == expected
    assert {r["organization_id"] for r in csv_rows} == {org}
    assert {r["organization_id"] for r in json_rows} == {org}
    assert set(table.column("organization_id").to_pylist()) == {org}

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["row_count"] == expected
    assert manifest["organization_id"] == org and manifest["date"] == DEMO_DAY.isoformat()
    assert [c["name"] for c in manifest["columns"]] == CATALOG[export_type].column_names
    assert {f["name"] for f in manifest["files"]} == {
        f"{stem}.csv",
        f"{stem}.json",
        f"{stem}.parquet",
    }

    raw = b"".join((folder / f["name"]).read_bytes() for f in manifest["files"])
    for other in orgs[1:]:
        assert other.encode() not in raw, (
            f"a value of organization {other} leaked into {org}'s files"
        )


@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_rematerializing_unchanged_data_is_byte_identical(
    export_type, sqlite_source, instance, tmp_path
):
    from .conftest import export_resources

    partition = ExportPartition(organization_ids(sqlite_source)[1], DEMO_DAY)
    store_dir = tmp_path / "exports"
    resources = export_resources(sqlite_source, store_dir, tmp_path / "work")
    folder = published_folder(store_dir, export_type, partition)

    materialize(export_type, partition, instance, resources)
    first = json.loads((folder / "manifest.json").read_text())
    materialize(export_type, partition, instance, resources)
    second = json.loads((folder / "manifest.json").read_text())

    assert first["run_id"] != second["run_id"]
    assert [(f["name"], f["sha256"]) for f in first["files"]] == [
        (f["name"], f["sha256"]) for f in second["files"]
    ]


def test_verify_passes_then_names_the_tampered_or_missing_file(
    sqlite_source, instance, tmp_path, capsys
):
    from .conftest import export_resources

    store_dir = tmp_path / "exports"
    resources = export_resources(sqlite_source, store_dir, tmp_path / "work")
    partition = ExportPartition(organization_ids(sqlite_source)[0], DEMO_DAY)
    materialize("scan_results", partition, instance, resources)
    folder = published_folder(store_dir, "scan_results", partition)
    stem = partition.file_stem("scan_results")

    assert cli(["verify", str(store_dir)]) == 0

    target = folder / f"{stem}.csv"
    original = target.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01  # one bit of one byte
    target.write_bytes(bytes(tampered))
    assert cli(["verify", str(store_dir)]) == 1
    assert f"{stem}.csv" in capsys.readouterr().err

    target.write_bytes(original)
    assert cli(["verify", str(store_dir)]) == 0

    (folder / f"{stem}.parquet").unlink()
    assert cli(["verify", str(store_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{stem}.parquet" in err and "missing" in err


def test_organization_sensor_adds_each_organization_once(sqlite_source, instance):
    source = SourceResource(url=sqlite_source.url)
    orgs = organization_ids(sqlite_source)

    with dg.build_sensor_context(instance=instance, resources={"source": source}) as context:
        result = organizations_sensor(context)
    requests = result.dynamic_partitions_requests
    assert len(requests) == 1 and sorted(requests[0].partition_keys) == orgs
    instance.add_dynamic_partitions(organizations.name, list(requests[0].partition_keys))

    with dg.build_sensor_context(instance=instance, resources={"source": source}) as context:
        again = organizations_sensor(context)
    assert isinstance(again, dg.SkipReason)

    sqlite_source.execute(
        "INSERT INTO organizations (id, name, plan, created_at) VALUES (:id, :name, 'pro', :at)",
        {"id": "org-new-tenant", "name": "New Tenant", "at": "2026-03-04 09:00:00.000000"},
    )
    with dg.build_sensor_context(instance=instance, resources={"source": source}) as context:
        third = organizations_sensor(context)
    assert list(third.dynamic_partitions_requests[0].partition_keys) == ["org-new-tenant"]
    instance.add_dynamic_partitions(organizations.name, ["org-new-tenant"])
    assert sorted(instance.get_dynamic_partitions(organizations.name)) == sorted(
        orgs + ["org-new-tenant"]
    )


def test_a_failed_run_leaves_no_half_written_file(sqlite_source, instance, tmp_path, monkeypatch):
    """A renderer dying mid-file: readers still see the previous complete publish only."""
    from export_pipelines.render import csv as csv_renderer

    from .conftest import export_resources

    store_dir = tmp_path / "exports"
    resources = export_resources(sqlite_source, store_dir, tmp_path / "work")
    partition = ExportPartition(organization_ids(sqlite_source)[0], DEMO_DAY)
    materialize("scan_results", partition, instance, resources)
    folder = published_folder(store_dir, "scan_results", partition)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def dies_halfway(reader, path, options, context):
        path.write_bytes(b"scan_id,organization_id\nhalf-a-row")
        raise OSError("disk full")

    monkeypatch.setattr(csv_renderer, "write_csv", dies_halfway)
    result = dg.materialize(
        export_assets(CATALOG["scan_results"]),
        partition_key=partition.key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    leftovers = [
        p for p in store_dir.rglob("*") if p.is_file() and p.parent == store_dir / ".staging"
    ]
    assert leftovers == []
    assert cli(["verify", str(store_dir)]) == 0
