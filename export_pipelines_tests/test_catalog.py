"""The whole catalog: every type materializes, reconciles with SQL, and keeps tenants apart."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from export_pipelines.catalog import SPECS
from export_pipelines.catalog.spec import Access, Kind, WindowKind
from export_pipelines.defs.exports import export_assets
from export_pipelines.defs.partitions import organizations
from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.pipeline.prepare import extract_partition
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.render import ExportFormat
from export_pipelines.source.database import SourceDatabase

from .conftest import DEMO_DAY, export_resources, organization_ids

TABLE_TYPES = [s.key for s in SPECS if s.kind is Kind.TABLE]  # bundles: test_gdpr, test_bundle
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Counts a person would write against the source, independently of the specs' queries.
_DAY = {"start": "start", "end": "end"}
INDEPENDENT_COUNTS = {
    "projects_summary": "SELECT count(*) FROM projects WHERE organization_id = :org AND created_at < :end",
    "project_detailed": """
        SELECT count(*) FROM projects p LEFT JOIN audits a ON a.project_id = p.id AND a.created_at < :end
        WHERE p.organization_id = :org AND p.created_at < :end""",
    "scan_results": """
        SELECT count(*) FROM scan_results s JOIN audits a ON a.id = s.audit_id
        JOIN projects p ON p.id = a.project_id
        WHERE p.organization_id = :org AND s.created_at >= :start AND s.created_at < :end""",
    "scan_history": """
        SELECT count(DISTINCT a.project_id) FROM scan_results s JOIN audits a ON a.id = s.audit_id
        JOIN projects p ON p.id = a.project_id
        WHERE p.organization_id = :org AND s.created_at >= :start AND s.created_at < :end""",
    "generated_content": """
        SELECT count(*) FROM generated_content c JOIN projects p ON p.id = c.project_id
        WHERE p.organization_id = :org AND c.created_at >= :start AND c.created_at < :end""",
    "content_analytics": """
        SELECT count(DISTINCT e.content_id) FROM content_events e
        JOIN generated_content c ON c.id = e.content_id JOIN projects p ON p.id = c.project_id
        WHERE p.organization_id = :org AND e.occurred_at >= :start AND e.occurred_at < :end""",
    "usage_analytics": """
        SELECT count(*) FROM (SELECT DISTINCT event_type, user_id FROM usage_events
        WHERE organization_id = :org AND occurred_at >= :start AND occurred_at < :end) AS q""",
    "credit_usage_report": """
        SELECT count(*) FROM credit_ledger
        WHERE organization_id = :org AND created_at >= :start AND created_at < :end""",
    "audit_log_export": """
        SELECT count(*) FROM audit_log
        WHERE organization_id = :org AND occurred_at >= :start AND occurred_at < :end""",
}

ALL_FORMATS = [f.value for f in ExportFormat]


def materialize(
    export_type, partition, instance, resources, formats=None
) -> dg.ExecuteInProcessResult:
    from export_pipelines.catalog import CATALOG

    instance.add_dynamic_partitions(organizations.name, [partition.organization_id])
    run_config = None
    if formats:
        run_config = {"ops": {f"{export_type}__render": {"config": {"formats": formats}}}}
    result = dg.materialize(
        export_assets(CATALOG[export_type]),
        partition_key=partition.key,
        instance=instance,
        resources=resources,
        run_config=run_config,
    )
    assert result.success
    return result


def file_text(path: Path) -> bytes:
    """Everything a reader of the file could see, decompressed (xlsx is a zip of XML)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix in (".xlsx", ".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return b"\n".join(archive.read(name) for name in archive.namelist())
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return json.dumps(table.to_pylist(), default=str, ensure_ascii=False).encode()
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages).encode()
    return data


def ids_of_other_organizations(db: SourceDatabase, org: str) -> set[bytes]:
    queries = [
        "SELECT id FROM organizations WHERE id <> :org",
        "SELECT id FROM users WHERE organization_id <> :org",
        "SELECT id FROM projects WHERE organization_id <> :org",
        "SELECT a.id FROM audits a JOIN projects p ON p.id = a.project_id WHERE p.organization_id <> :org",
        "SELECT s.id FROM scan_results s JOIN audits a ON a.id = s.audit_id JOIN projects p ON p.id = a.project_id WHERE p.organization_id <> :org",
        "SELECT c.id FROM generated_content c JOIN projects p ON p.id = c.project_id WHERE p.organization_id <> :org",
        "SELECT id FROM credit_ledger WHERE organization_id <> :org",
        "SELECT id FROM audit_log WHERE organization_id <> :org",
        "SELECT id FROM usage_events WHERE organization_id <> :org",
    ]
    ids: set[bytes] = set()
    for sql in queries:
        ids.update(v.encode() for v in db.fetch_table(sql, {"org": org}).column(0).to_pylist())
    return ids


@pytest.mark.parametrize("export_type", TABLE_TYPES)
def test_every_type_materializes_and_reconciles_with_sql(export_type, source, instance, tmp_path):
    org = organization_ids(source)[0]
    partition = ExportPartition(org, DEMO_DAY)
    store_dir = tmp_path / "exports"
    materialize(
        export_type, partition, instance, export_resources(source, store_dir, tmp_path / "work")
    )

    window = partition.window
    expected = source.scalar(
        INDEPENDENT_COUNTS[export_type], {"org": org, "start": window.start, "end": window.end}
    )
    folder = store_dir / partition.folder(export_type)
    stem = partition.file_stem(export_type)
    with open(folder / f"{stem}.csv", newline="", encoding="utf-8") as handle:
        csv_rows = list(csv.DictReader(handle))
    json_rows = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    table = pq.read_table(folder / f"{stem}.parquet")
    assert len(csv_rows) == len(json_rows) == table.num_rows == expected
    assert set(table.column("organization_id").to_pylist()) <= {org}


@pytest.mark.parametrize("export_type", TABLE_TYPES)
def test_tenant_isolation_in_every_format(export_type, sqlite_source, instance, tmp_path):
    """A partition of X holds only X's rows; no id of another tenant appears in any file."""
    orgs = organization_ids(sqlite_source)
    store_dir = tmp_path / "exports"
    resources = export_resources(sqlite_source, store_dir, tmp_path / "work")
    for org in orgs[:2]:
        partition = ExportPartition(org, DEMO_DAY)
        materialize(export_type, partition, instance, resources, formats=ALL_FORMATS)
        folder = store_dir / partition.folder(export_type)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert {f["format"] for f in manifest["files"]} == set(ALL_FORMATS)
        foreign = ids_of_other_organizations(sqlite_source, org)
        for entry in manifest["files"]:
            text = file_text(folder / entry["name"])
            leaked = set(UUID.findall(text)) & foreign
            assert not leaked, (
                f"{entry['name']} of {org} holds ids of other tenants: {sorted(leaked)[:3]}"
            )
        rows = pq.read_table(folder / f"{partition.file_stem(export_type)}.parquet")
        assert set(rows.column("organization_id").to_pylist()) <= {org}


def test_personal_data_only_in_gdpr_and_admin_exports():
    for spec in SPECS:
        if any(c.pii for c in spec.columns):
            assert spec.access in (Access.ADMIN, Access.SELF), spec.key
        for column in spec.columns:
            assert column.name not in {"email", "full_name"} or column.pii, (spec.key, column.name)


def test_no_email_in_exports_without_personal_data(sqlite_source, instance, tmp_path):
    org = organization_ids(sqlite_source)[0]
    emails = {
        e.encode()
        for e in sqlite_source.fetch_table("SELECT email FROM users").column(0).to_pylist()
    }
    store_dir = tmp_path / "exports"
    resources = export_resources(sqlite_source, store_dir, tmp_path / "work")
    partition = ExportPartition(org, DEMO_DAY)
    for spec in SPECS:
        if spec.access is not Access.MEMBER:
            continue
        materialize(spec.key, partition, instance, resources)
        for path in (store_dir / partition.folder(spec.key)).iterdir():
            text = file_text(path)
            assert not any(e in text for e in emails), f"{path.name} carries an email address"


HOSTILE = [
    "'; DROP TABLE users; --",
    "%",
    "_%' OR '1'='1",
    'x" OR 1=1 --',
    "Ωmega-组织-🚀",
    "o" * 5000,
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_organization_ids_are_just_values(hostile, source, tmp_path):
    """A hostile org id selects nothing of anyone else, breaks nothing, and keeps its own rows."""
    org = organization_ids(source)[0]
    project = source.fetch_rows(
        "SELECT id, user_id FROM projects WHERE organization_id = :org ORDER BY id", {"org": org}
    )[0]
    scan_id = f"scan-of-{len(hostile)}-{abs(hash(hostile))}"
    audit_id = f"audit-of-{len(hostile)}-{abs(hash(hostile))}"
    at = dt.datetime.combine(DEMO_DAY, dt.time(12))
    users_before = source.scalar("SELECT count(*) FROM users")
    source.execute(
        "INSERT INTO organizations (id, name, plan, created_at) VALUES (:id, :name, 'free', :at)",
        {"id": hostile, "name": hostile, "at": at},
    )
    source.execute(
        "INSERT INTO users (id, organization_id, email, full_name, is_admin, is_verified, created_at) "
        "VALUES (:id, :org, 'h@example.com', :name, :yes, :yes, :at)",
        {"id": f"user-{scan_id}", "org": hostile, "name": hostile, "yes": True, "at": at},
    )
    source.execute(
        "INSERT INTO projects (id, organization_id, user_id, name, url, created_at, updated_at) "
        "VALUES (:id, :org, :user, :name, 'https://h.example', :at, :at)",
        {
            "id": f"project-{scan_id}",
            "org": hostile,
            "user": f"user-{scan_id}",
            "name": hostile,
            "at": at,
        },
    )
    source.execute(
        "INSERT INTO audits (id, project_id, audit_type, status, credits_consumed, created_at) "
        "VALUES (:id, :project, 'quick', 'completed', 2, :at)",
        {"id": audit_id, "project": f"project-{scan_id}", "at": at},
    )
    source.execute(
        "INSERT INTO scan_results (id, audit_id, dcs_score, ai_citation_score, created_at) "
        "VALUES (:id, :audit, 50, NULL, :at)",
        {"id": scan_id, "audit": audit_id, "at": at},
    )
    try:
        from export_pipelines.catalog import CATALOG

        work = WorkArea(tmp_path / "work")
        for key in ("scan_results", "projects_summary"):
            result = extract_partition(
                CATALOG[key], source, work, ExportPartition(hostile, DEMO_DAY)
            )
            rows = pq.read_table(result.path).to_pylist()
            assert len(rows) == 1 and rows[0]["organization_id"] == hostile
        assert source.scalar("SELECT count(*) FROM users") == users_before + 1
        assert project["id"] not in json.dumps(rows, default=str)
    finally:
        for table, column, value in [
            ("scan_results", "id", scan_id),
            ("audits", "id", audit_id),
            ("projects", "organization_id", hostile),
            ("users", "organization_id", hostile),
            ("organizations", "id", hostile),
        ]:
            source.execute(f"DELETE FROM {table} WHERE {column} = :v", {"v": value})


BOUNDARY_TIMES = {
    "before": dt.datetime.combine(DEMO_DAY, dt.time()) - dt.timedelta(microseconds=1),
    "first": dt.datetime.combine(DEMO_DAY, dt.time()),
    "last": dt.datetime.combine(DEMO_DAY, dt.time(23, 59, 59, 999000)),
    "after": dt.datetime.combine(DEMO_DAY + dt.timedelta(days=1), dt.time()),
}


def _boundary_tenant(db: SourceDatabase) -> str:
    """A new organization whose every event happens exactly at the edges of DEMO_DAY."""
    org = "org-boundary"
    long_ago = dt.datetime(2020, 1, 1)
    rows = [
        ("INSERT INTO organizations VALUES (:org, 'Edge', 'pro', :t)", {"org": org, "t": long_ago}),
        (
            "INSERT INTO users (id, organization_id, email, full_name, is_admin, is_verified, created_at) "
            "VALUES ('edge-user', :org, 'edge@example.com', 'Edge', :yes, :yes, :t)",
            {"org": org, "t": long_ago, "yes": True},
        ),
    ]
    for name, at in BOUNDARY_TIMES.items():
        p = {"org": org, "t": at, "n": name}
        rows += [
            (
                "INSERT INTO projects (id, organization_id, user_id, name, url, created_at, updated_at) "
                "VALUES ('edge-project-' || :n, :org, 'edge-user', :n, 'https://e.example', :t, :t)",
                p,
            ),
            (
                "INSERT INTO audits (id, project_id, audit_type, status, credits_consumed, created_at) "
                "VALUES ('edge-audit-' || :n, 'edge-project-first', 'quick', 'completed', 1, :t)",
                p,
            ),
            (
                "INSERT INTO scan_results (id, audit_id, dcs_score, ai_citation_score, created_at) "
                "VALUES ('edge-scan-' || :n, 'edge-audit-' || :n, 10, 20, :t)",
                p,
            ),
            (
                "INSERT INTO generated_content (id, project_id, user_id, content_type, title, body, word_count, created_at) "
                "VALUES ('edge-content-' || :n, 'edge-project-first', 'edge-user', 'faq', :n, 'b', 1, :t)",
                p,
            ),
            (
                "INSERT INTO content_events (id, content_id, event_type, occurred_at) "
                "VALUES ('edge-event-' || :n, 'edge-content-first', 'view', :t)",
                p,
            ),
            (
                "INSERT INTO usage_events (id, organization_id, user_id, event_type, occurred_at) "
                "VALUES ('edge-usage-' || :n, :org, 'edge-user', 'login', :t)",
                p,
            ),
            (
                "INSERT INTO credit_ledger (id, organization_id, user_id, amount, balance_after, description, created_at) "
                "VALUES ('edge-credit-' || :n, :org, 'edge-user', -1, 10, 'scan', :t)",
                p,
            ),
            (
                "INSERT INTO audit_log (id, organization_id, actor_user_id, action, target_type, occurred_at) "
                "VALUES ('edge-log-' || :n, :org, 'edge-user', 'project.created', 'project', :t)",
                p,
            ),
        ]
    for sql, params in rows:
        db.execute(sql, params)
    return org


# Rows (or summed counts) a day's partition must show for the boundary tenant:
# event types see the events at 00:00:00 and 23:59:59.999 of the day, not the neighbours;
# snapshot types see everything created up to the end of the day ("before", "first", "last").
BOUNDARY_EXPECTED = {
    "scan_results": ("rows", 2),
    "scan_history": ("scans", 2),
    "generated_content": ("rows", 2),
    "content_analytics": ("events", 2),
    "usage_analytics": ("events", 2),
    "credit_usage_report": ("rows", 2),
    "audit_log_export": ("rows", 2),
    "projects_summary": ("rows", 3),
    "project_detailed": ("rows", 5),  # project "first" × its 3 audits, "before", "last"
}


@pytest.mark.parametrize("export_type", TABLE_TYPES)
def test_window_boundaries(export_type, sqlite_source, tmp_path):
    from export_pipelines.catalog import CATALOG

    spec = CATALOG[export_type]
    org = _boundary_tenant(sqlite_source)
    result = extract_partition(
        spec, sqlite_source, WorkArea(tmp_path), ExportPartition(org, DEMO_DAY)
    )
    rows = pq.read_table(result.path).to_pylist()
    measure, expected = BOUNDARY_EXPECTED[export_type]
    got = len(rows) if measure == "rows" else sum(r[measure] for r in rows)
    assert got == expected
    if spec.window is WindowKind.SNAPSHOT and export_type == "projects_summary":
        assert sorted(r["name"] for r in rows) == ["before", "first", "last"]


def test_ids_never_become_paths(tmp_path):
    from export_pipelines.pipeline.naming import path_segment
    from export_pipelines.store import LocalStore

    for hostile in [
        "../../etc/passwd",
        "..",
        "a/b",
        "\\..\\x",
        "o" * 5000,
        "'; DROP TABLE users; --",
    ]:
        segment = path_segment(hostile)
        assert "/" not in segment and segment not in (".", "..") and len(segment) <= 120
        folder = ExportPartition(hostile, DEMO_DAY).folder("scan_results")
        assert (tmp_path / folder).resolve().is_relative_to(tmp_path)
    assert (
        path_segment("0b6f2c1e-9d4a-4c55-8e1f-2a3b4c5d6e7f")
        == "0b6f2c1e-9d4a-4c55-8e1f-2a3b4c5d6e7f"
    )
    with pytest.raises(ValueError):
        LocalStore(tmp_path).put_bytes(b"x", "../outside.txt")


def test_credit_report_totals_and_per_user_breakdown_match_the_ledger(sqlite_source, tmp_path):
    from export_pipelines.catalog import CATALOG
    from export_pipelines.pipeline.prepare import transform_partition

    spec = CATALOG["credit_usage_report"]
    org = organization_ids(sqlite_source)[0]
    partition = ExportPartition(org, DEMO_DAY)
    work = WorkArea(tmp_path)
    extract_partition(spec, sqlite_source, work, partition)
    totals = transform_partition(spec, work, partition).totals
    window = {"org": org, "start": partition.window.start, "end": partition.window.end}
    where = "WHERE organization_id = :org AND created_at >= :start AND created_at < :end"
    spent = sqlite_source.fetch_rows(
        f"SELECT coalesce(user_id, '(none)') AS u, sum(-amount) AS s FROM credit_ledger {where} "
        "AND amount < 0 GROUP BY u",
        window,
    )
    assert {r["u"]: r["s"] for r in spent} == {
        k: v for k, v in totals["Credits spent by user"].items() if v
    }
    net = sqlite_source.scalar(
        f"SELECT coalesce(sum(amount), 0) FROM credit_ledger {where}", window
    )
    assert totals["Net change"] == net
    assert totals["Credits added"] - totals["Credits spent"] == net
