"""The compliance recipe: 90 days of one organization's audit log, verifiable and reproducible."""

from __future__ import annotations

import datetime as dt
import json
import time

import dagster as dg
import pytest

from export_pipelines.catalog import CATALOG
from export_pipelines.cli import main as cli
from export_pipelines.defs.backfill import backfill
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase

from .conftest import export_resources, organization_ids, seed

END = dt.date(2026, 6, 1)
FIRST, LAST = END - dt.timedelta(days=90), END - dt.timedelta(days=1)


@pytest.fixture(scope="module")
def long_history(tmp_path_factory) -> SourceDatabase:
    path = tmp_path_factory.mktemp("history") / "source.db"
    params = demo_data.DemoParams(organizations=2, days=92, events_per_day=8, end_date=END)
    return seed(SourceDatabase(f"sqlite:///{path}"), params)


def checksums(store_dir) -> dict[str, str]:
    out = {}
    for manifest_path in sorted(store_dir.rglob("manifest.json")):
        for entry in json.loads(manifest_path.read_text())["files"]:
            out[f"{manifest_path.parent.relative_to(store_dir)}/{entry['name']}"] = entry["sha256"]
    return out


def test_ninety_day_audit_log_backfill(long_history, instance, tmp_path, capsys):
    org, other = organization_ids(long_history)[:2]
    store_dir = tmp_path / "exports"
    resources = export_resources(long_history, store_dir, tmp_path / "work")

    started = time.monotonic()
    runs = backfill(instance, [CATALOG["audit_log_export"]], org, FIRST, LAST, resources)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\n90-day audit_log_export backfill: {len(runs)} runs, {elapsed:.1f} s wall")

    assert [r.success for r in runs] == [True, True, True], "90 days in runs of 31 days"
    days = {(FIRST + dt.timedelta(days=i)).isoformat() for i in range(90)}
    for stage in ("extract", "transform", "render", "publish"):
        done = instance.get_materialized_partitions(dg.AssetKey(["audit_log_export", stage]))
        assert {k.split("|")[0] for k in done} == days, stage
        assert {k.split("|")[1] for k in done} == {org}, f"{stage} touched another organization"
    assert len(list(store_dir.rglob("manifest.json"))) == 90
    assert not any(other in str(p) for p in store_dir.rglob("*"))

    total = sum(json.loads(p.read_text())["row_count"] for p in store_dir.rglob("manifest.json"))
    expected = long_history.scalar(
        "SELECT count(*) FROM audit_log WHERE organization_id = :org "
        "AND occurred_at >= :start AND occurred_at < :end",
        {
            "org": org,
            "start": dt.datetime.combine(FIRST, dt.time()),
            "end": dt.datetime.combine(END, dt.time()),
        },
    )
    assert total == expected > 0
    assert cli(["verify", str(store_dir)]) == 0

    first = checksums(store_dir)
    again = backfill(instance, [CATALOG["audit_log_export"]], org, FIRST, LAST, resources)
    assert all(r.success for r in again)
    assert checksums(store_dir) == first, "re-running with unchanged data reproduces every checksum"
