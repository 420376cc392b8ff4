"""A burst of on-demand requests under `dagster dev` (the embedded default), as the app would.

N small requests (mixed types and formats, ~10 % invalid) are inserted at once; we wait
until every one is settled (COMPLETED or FAILED) and check none was served twice or lost.
Beside it, the physical floor: the same valid requests built one after another in one
process, with no Dagster at all.

Usage: python benchmarks/bench_burst.py [--requests N] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_requests import machine  # noqa: E402
from export_pipelines_tests.dev_server import mixed_requests as plan  # noqa: E402


def burst(count: int) -> dict:
    from export_pipelines.requests.ledger import RequestLedger, parse_timestamp
    from export_pipelines.source.database import SourceDatabase
    from export_pipelines_tests.dev_server import dagster_dev

    os.environ["EXPORT_REQUESTS_PER_HOUR"] = str(10 * count)  # a burst, not an abuse
    with dagster_dev(Path(tempfile.mkdtemp(prefix="bench-burst-"))) as server:
        db = SourceDatabase(f"sqlite:///{server['base'] / 'data' / 'source.db'}")
        db.execute("DELETE FROM export_requests")
        ledger = RequestLedger(db)
        day = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=2)
        asks = plan(db, count, day)
        started = time.monotonic()
        ids = [
            ledger.insert(a["org"], a["user"], a["type"], a["format"], filters=a["filters"])
            for a in asks
        ]
        inserted = time.monotonic() - started
        while time.monotonic() - started < 1800:
            rows = db.fetch_rows(
                "SELECT status, count(*) AS n FROM export_requests GROUP BY status"
            )
            counts = {r["status"]: r["n"] for r in rows}
            if counts.get("COMPLETED", 0) + counts.get("FAILED", 0) == count:
                break
            time.sleep(1)
        settled = time.monotonic() - started
        rows = {r["id"]: r for r in db.fetch_rows("SELECT * FROM export_requests")}
        entries = db.fetch_rows(
            "SELECT target_id, count(*) AS n FROM audit_log WHERE action IN "
            "('export.completed', 'export.failed') GROUP BY target_id"
        )
        per_request = {e["target_id"]: e["n"] for e in entries}
        latencies = [
            (parse_timestamp(r["completed_at"]) - parse_timestamp(r["created_at"])).total_seconds()
            for r in rows.values()
            if r["status"] == "COMPLETED"
        ]
        runs = len({r["run_id"] for r in rows.values() if r["run_id"]})
        return {
            "requests": count,
            "insert_s": inserted,
            "settled_s": settled,
            "completed": sum(r["status"] == "COMPLETED" for r in rows.values()),
            "failed": sum(r["status"] == "FAILED" for r in rows.values()),
            "lost": sum(r["status"] not in ("COMPLETED", "FAILED") for r in rows.values()),
            "twice": sum(per_request.get(i, 0) > 1 for i in ids),
            "unrecorded": sum(per_request.get(i, 0) == 0 for i in ids),
            "runs": runs,
            "p50_s": statistics.median(latencies) if latencies else None,
            "max_s": max(latencies) if latencies else None,
            "asks": asks,
            "day": day,
        }


def floor(asks: list[dict], day: dt.date, params=None) -> float:
    """The export work alone: every valid request built in one process, one after another."""
    from export_pipelines.pipeline.build import build_deliverable
    from export_pipelines.pipeline.workarea import WorkArea
    from export_pipelines.requests.ledger import RequestLedger, utc_now
    from export_pipelines.requests.validation import RequestRejected, validate
    from export_pipelines.source import demo_data
    from export_pipelines.source.database import SourceDatabase
    from export_pipelines.store import LocalStore

    base = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    db = SourceDatabase(f"sqlite:///{base / 'source.db'}")
    # The data `make dev` seeds: the same organizations, users and days as the burst.
    today = dt.datetime.now(dt.timezone.utc).date()
    db.ensure_embedded(params or demo_data.DemoParams(end_date=today))
    db.execute("DELETE FROM export_requests")
    ledger = RequestLedger(db)
    work, store = WorkArea(base / "work"), LocalStore(base / "exports")
    ids = [
        ledger.insert(a["org"], a["user"], a["type"], a["format"], filters=a["filters"])
        for a in asks
    ]
    started = time.monotonic()
    for request_id in ids:
        try:
            request = validate(ledger.get(request_id), db, utc_now())
        except RequestRejected:
            continue
        build_deliverable(request, db, work, store, "floor")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["EXPORT_REQUESTS_PER_HOUR"] = str(10 * args.requests)
    result = burst(args.requests)
    physical = floor(result["asks"], result["day"])
    lines = [
        f"### Burst of {args.requests} requests under `dagster dev` (embedded default)",
        "",
        f"{dt.date.today()}, {machine()}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| inserted (all at once) | {result['insert_s']:.1f} s |",
        f"| all settled | **{result['settled_s']:.1f} s** |",
        f"| completed / failed | {result['completed']} / {result['failed']} |",
        f"| lost / served twice / no audit entry | {result['lost']} / {result['twice']} / {result['unrecorded']} |",
        f"| runs launched | {result['runs']} |",
        f"| insert → COMPLETED, median / max | {result['p50_s']:.1f} s / {result['max_s']:.1f} s |",
        f"| floor: the valid requests built in one process | {physical:.1f} s |",
        f"| ratio settled / floor | {result['settled_s'] / physical:.1f}× |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
