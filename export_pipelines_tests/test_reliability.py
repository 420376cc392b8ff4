"""Defects found as an attacker and an operator would (issue: reliability and security)."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing

import dagster as dg
import pytest

from export_pipelines.catalog import CATALOG, bundled_specs
from export_pipelines.catalog.spec import Window
from export_pipelines.cli import main as cli
from export_pipelines.defs.exports import all_export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.pipeline.naming import ExportPartition, path_segment, request_folder
from export_pipelines.requests.validation import estimate_rows

from .conftest import DEMO_DAY, export_resources, organization_ids
from .test_requests import a_user, env, run, tick  # noqa: F401


def _insert_raw(db, request_id, org, user, export_type="scan_results", filters=None):
    db.execute(
        "INSERT INTO export_requests (id, export_type, export_format, user_id, organization_id, "
        "filters, parameters, status, progress_percentage, download_count, created_at, "
        "retry_count) VALUES (:id, :type, 'CSV', :user, :org, :filters, NULL, 'PENDING', 0, 0, "
        ":created, 0)",
        {
            "id": request_id,
            "type": export_type,
            "user": user,
            "org": org,
            "filters": json.dumps(filters) if filters else None,
            "created": dt.datetime.now(dt.timezone.utc),
        },
    )


def test_an_empty_id_names_no_folder():
    with pytest.raises(ValueError):
        path_segment("")
    with pytest.raises(ValueError):
        request_folder("")


def test_an_empty_request_id_is_refused_and_touches_no_other_download(env, instance):  # noqa: F811
    db, ledger, resources, store_dir = env
    user = a_user(db, admin=False)
    other = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
    result = tick(instance, db)
    assert run(instance, result.run_requests[0], resources).success
    served = ledger.get(other)
    assert served["status"] == "COMPLETED"

    _insert_raw(db, "", user["organization_id"], user["id"])
    result = tick(instance, db)
    assert result.run_requests == []  # nothing launched for it
    rows = db.fetch_rows("SELECT status, error_message FROM export_requests WHERE id = ''")
    assert rows[0]["status"] == "FAILED" and rows[0]["error_message"] == "the request has no id"
    assert cli(["verify", str(store_dir)]) == 0
    assert (store_dir / request_folder(other) / "manifest.json").exists()


def test_a_range_of_decades_is_refused_with_a_sentence(env, instance):  # noqa: F811
    db, ledger, _, _ = env
    user = a_user(db, admin=False)
    request_id = ledger.insert(
        user["organization_id"],
        user["id"],
        "scan_results",
        "CSV",
        filters={"date_from": "1970-01-01", "date_to": "2026-11-30"},
    )
    assert tick(instance, db).run_requests == []
    row = ledger.get(request_id)
    assert row["status"] == "FAILED"
    assert "covers 20,788 days" in row["error_message"] and "at most" in row["error_message"]


def test_the_organization_bundle_estimate_counts_its_parts(sqlite_source):
    org = organization_ids(sqlite_source)[0]
    window = Window.for_days(DEMO_DAY, DEMO_DAY)
    parts = [estimate_rows(sqlite_source, s, org, window, {}) for s in bundled_specs()]
    bundle = estimate_rows(sqlite_source, CATALOG["organization_bundle"], org, window, {})
    assert bundle == sum(parts) > 1


def _materialize_in_process(source_url, org, store, work, formats, out) -> None:
    """One run of scan_results for one partition, in a process of its own."""
    from export_pipelines.source.database import SourceDatabase

    partition = ExportPartition(org, DEMO_DAY)
    resources = export_resources(SourceDatabase(source_url), store, work)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(organizations.name, [org])
        result = dg.materialize(
            all_export_assets([CATALOG["scan_results"]]),
            partition_key=partition.key,
            instance=instance,
            resources=resources,
            run_config={"ops": {"scan_results__render": {"config": {"formats": formats}}}},
            raise_on_error=False,
        )
        names = sorted(
            key.removeprefix("sha256 ")
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey(["scan_results", "publish"])
            for key in e.event_specific_data.materialization.metadata
            if key.startswith("sha256 ")
        )
    with open(out, "w") as handle:
        json.dump({"success": result.success, "published": names}, handle)


def test_two_runs_of_one_partition_publish_their_own_files(sqlite_source, tmp_path):
    """Concurrent runs share the work area: each publishes exactly what it rendered."""
    org = organization_ids(sqlite_source)[0]
    stem = ExportPartition(org, DEMO_DAY).file_stem("scan_results")
    store, work = tmp_path / "exports", tmp_path / "work"
    spawn = multiprocessing.get_context("spawn")
    wanted = {"a": ["JSON", "PARQUET"], "b": ["JSONL", "PARQUET"]}
    for attempt in range(3):
        outs = {name: tmp_path / f"{name}{attempt}.json" for name in wanted}
        processes = [
            spawn.Process(
                target=_materialize_in_process,
                args=(sqlite_source.url, org, store, work, formats, outs[name]),
            )
            for name, formats in wanted.items()
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=240)
            assert process.exitcode == 0
        for name, formats in wanted.items():
            outcome = json.loads(outs[name].read_text())
            extensions = {"JSON": "json", "JSONL": "jsonl", "PARQUET": "parquet"}
            expected = sorted(f"{stem}.{extensions[f]}" for f in formats)
            assert outcome == {"success": True, "published": expected}
        assert cli(["verify", str(store)]) == 0


def _gdpr(sqlite_source, instance, tmp_path, config):
    org = organization_ids(sqlite_source)[0]
    partition = ExportPartition(org, DEMO_DAY)
    instance.add_dynamic_partitions(organizations.name, [org])
    return partition, dg.materialize(
        all_export_assets([CATALOG["user_data_export"]]),
        partition_key=partition.key,
        instance=instance,
        resources=export_resources(sqlite_source, tmp_path / "exports", tmp_path / "work"),
        run_config={"ops": {"user_data_export": {"config": config}}},
        raise_on_error=False,
    )


def test_the_gdpr_asset_with_its_default_formats_publishes_json(sqlite_source, instance, tmp_path):
    org = organization_ids(sqlite_source)[0]
    user = sqlite_source.fetch_rows(
        "SELECT id FROM users WHERE organization_id = :org ORDER BY id", {"org": org}
    )[0]
    partition, result = _gdpr(sqlite_source, instance, tmp_path, {"user_id": user["id"]})
    assert result.success
    folder = tmp_path / "exports" / partition.folder("user_data_export") / f"user={user['id']}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["format"] for f in manifest["files"]] == ["JSON"]


def test_the_gdpr_asset_refuses_an_unknown_person_with_a_sentence(
    sqlite_source, instance, tmp_path
):
    partition, result = _gdpr(sqlite_source, instance, tmp_path, {"user_id": "../../etc/x"})
    assert not result.success
    failure = next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ).step_failure_data.error
    assert failure.cls_name == "Failure"
    assert "is not a member of organization" in failure.message
    # Nothing was written outside the store, nor any folder named after the id.
    assert not (tmp_path / "etc").exists()
    assert not list(tmp_path.rglob("manifest.json"))


_FEW_FILES = """
import datetime as dt, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
from export_pipelines.catalog import CATALOG
from export_pipelines.pipeline.prepare import prepare_days
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.source.database import SourceDatabase
db = SourceDatabase(sys.argv[1])
first = dt.date(2025, 1, 1)
days = [first + dt.timedelta(days=i) for i in range(400)]
prepared = prepare_days(CATALOG["scan_results"], db, WorkArea(Path(sys.argv[2])), sys.argv[3], days)
print(len(prepared.days), sum(d.rows for d in prepared.days))
"""


def test_a_long_range_needs_one_open_file_not_one_per_day(sqlite_source, tmp_path):
    """400 days, mostly without rows, under a limit of 128 open files."""
    import subprocess
    import sys

    org = organization_ids(sqlite_source)[0]
    done = subprocess.run(
        [sys.executable, "-c", _FEW_FILES, sqlite_source.url, str(tmp_path / "work"), org],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    days, rows = map(int, done.stdout.split())
    assert days == 400
    staging = [
        p for p in (tmp_path / "work").rglob(".*") if p.name.startswith((".build", ".range"))
    ]
    assert staging == []


def test_embedded_timestamps_sort_as_text_for_any_year():
    import datetime as dt

    from export_pipelines.source.database import sqlite_timestamp

    stamps = [dt.datetime(999, 12, 31), dt.datetime(1000, 1, 1), dt.datetime(2026, 3, 1, 0, 0, 1)]
    texts = [sqlite_timestamp(s) for s in stamps]
    assert texts == sorted(texts)
    assert texts[0] == "0999-12-31 00:00:00"
