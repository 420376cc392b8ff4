"""The GDPR access export: every row about the person, nothing about anyone else."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import dagster as dg

from export_pipelines.catalog import CATALOG
from export_pipelines.defs.exports import all_export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.pipeline.naming import ExportPartition

from .conftest import DEMO_DAY
from .test_requests import env, run, tick  # noqa: F401 - fixtures and helpers shared

# Every place the source references a user, and the section that must hold those rows.
REFERENCES = {
    "profile": ("SELECT id FROM users WHERE id = :user", "user_id"),
    "projects": ("SELECT id FROM projects WHERE user_id = :user", "project_id"),
    "generated_content": ("SELECT id FROM generated_content WHERE user_id = :user", "content_id"),
    "usage_events": ("SELECT id FROM usage_events WHERE user_id = :user", "event_id"),
    "audit_log": (
        "SELECT id FROM audit_log WHERE actor_user_id = :user "
        "OR (target_type = 'user' AND target_id = :user)",
        "entry_id",
    ),
    "credit_entries": ("SELECT id FROM credit_ledger WHERE user_id = :user", "transaction_id"),
    "export_requests": ("SELECT id FROM export_requests WHERE user_id = :user", "request_id"),
    "report_subscriptions": (
        "SELECT id FROM report_subscriptions WHERE user_id = :user",
        "subscription_id",
    ),
}


def busiest_user(db) -> dict:
    return db.fetch_rows(
        "SELECT u.id, u.organization_id, count(*) AS n FROM users u "
        "JOIN usage_events e ON e.user_id = u.id GROUP BY u.id, u.organization_id "
        "ORDER BY n DESC, u.id LIMIT 1"
    )[0]


def test_gdpr_request_holds_every_row_about_the_user_and_no_one_else(env, instance):  # noqa: F811
    db, ledger, resources, _ = env
    user = busiest_user(db)
    request_id = ledger.insert(user["organization_id"], user["id"], "user_data_export", "JSON")
    result = tick(instance, db)
    assert [r.run_key for r in result.run_requests] == [request_id]
    # What the source holds about the person when the export runs (serving it adds an
    # `export.completed` audit entry afterwards, which the next export will show).
    expected_ids = {
        section: set(db.fetch_table(sql, {"user": user["id"]}).column(0).to_pylist())
        for section, (sql, _) in REFERENCES.items()
    }
    assert run(instance, result.run_requests[0], resources).success

    row = ledger.get(request_id)
    assert row["status"] == "COMPLETED", row["error_message"]
    raw = Path(row["file_path"]).read_bytes()
    bundle = json.loads(raw)
    for key in (
        "purposes",
        "categories_of_personal_data",
        "recipients",
        "retention_period",
        "source_of_the_data",
    ):
        assert bundle["cover"][key], key

    total = 0
    for section, (_, id_column) in REFERENCES.items():
        expected = expected_ids[section]
        got = {r[id_column] for r in bundle["sections"][section]}
        assert got == expected, section
        total += len(expected)
    assert total > 5, "the chosen user should have data in several sections"
    assert row["row_count"] == total

    others = db.fetch_rows("SELECT id, email FROM users WHERE id <> :user", {"user": user["id"]})
    for other in others:
        assert other["id"].encode() not in raw, other["id"]
        assert other["email"].encode() not in raw


def test_gdpr_export_for_someone_else_is_refused(env, instance):  # noqa: F811
    db, ledger, _, _ = env
    user = busiest_user(db)
    colleague = db.scalar(
        "SELECT id FROM users WHERE organization_id = :org AND id <> :user ORDER BY id",
        {"org": user["organization_id"], "user": user["id"]},
    )
    request_id = ledger.insert(
        user["organization_id"],
        user["id"],
        "user_data_export",
        "JSON",
        filters={"user_id": colleague},
    )
    tick(instance, db)
    row = ledger.get(request_id)
    assert row["status"] == "FAILED" and "their own data" in row["error_message"]


def test_gdpr_csv_bundle_and_asset_materialization(sqlite_source, instance, tmp_path):
    from .conftest import export_resources

    user = busiest_user(sqlite_source)
    store_dir = tmp_path / "exports"
    partition = ExportPartition(user["organization_id"], DEMO_DAY)
    instance.add_dynamic_partitions(organizations.name, [partition.organization_id])
    result = dg.materialize(
        all_export_assets([CATALOG["user_data_export"]]),
        partition_key=partition.key,
        instance=instance,
        resources=export_resources(sqlite_source, store_dir, tmp_path / "work"),
        run_config={
            "ops": {
                "user_data_export": {"config": {"user_id": user["id"], "formats": ["JSON", "CSV"]}}
            }
        },
    )
    assert result.success
    folder = store_dir / partition.folder("user_data_export") / f"user={user['id']}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["format"] for f in manifest["files"]} == {"JSON", "CSV"}
    archive_name = next(f["name"] for f in manifest["files"] if f["format"] == "CSV")
    with zipfile.ZipFile(folder / archive_name) as archive:
        names = set(archive.namelist())
        assert {"cover.md", "profile.csv", "usage_events.csv"} <= names
        profile = list(csv.DictReader(io.StringIO(archive.read("profile.csv").decode())))
        assert [p["user_id"] for p in profile] == [user["id"]]
        assert "Retention period" in archive.read("cover.md").decode()
