"""On-demand request benchmarks.

1. Latency from insert to COMPLETED for a small request under `dagster dev` (its daemon
   runs the request sensor and launches the run), measured N times.
2. A 365-day request for one organization, served by the real job (one run, daily
   partitions built with one range query and split by day), against the same rows
   exported as a single range (one query, one render) — target ≤ 2×.

Usage: python benchmarks/bench_requests.py [--out FILE] [--events-per-day N] [--latency-runs N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(
        next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    )
    return f"{cpu}, {os.cpu_count()} cores, {memory / 1024 / 1024:.0f} GiB RAM, Python {platform.python_version()}"


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * pct / 100) - 1)]


def latency_under_dagster_dev(runs: int) -> list[float]:
    """Seconds from `export-pipelines request` to COMPLETED, with the daemon doing the work."""
    from export_pipelines.requests.ledger import RequestLedger, parse_timestamp
    from export_pipelines.source.database import SourceDatabase
    from export_pipelines_tests.dev_server import dagster_dev

    with dagster_dev(Path(tempfile.mkdtemp(prefix="bench-dev-"))) as server:
        db = SourceDatabase(f"sqlite:///{server['base'] / 'data' / 'source.db'}")
        ledger = RequestLedger(db)
        user = db.fetch_rows("SELECT id, organization_id FROM users ORDER BY id LIMIT 1")[0]
        yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
        latencies = []
        for _ in range(runs):
            started = time.monotonic()
            request_id = ledger.insert(
                user["organization_id"],
                user["id"],
                "scan_results",
                "CSV",
                filters={"date_from": str(yesterday), "date_to": str(yesterday)},
            )
            while time.monotonic() - started < 300:
                row = ledger.get(request_id)
                if row["status"] in ("COMPLETED", "FAILED"):
                    break
                time.sleep(0.25)
            assert row["status"] == "COMPLETED", row
            latencies.append(time.monotonic() - started)
            assert parse_timestamp(row["completed_at"]) >= parse_timestamp(row["created_at"])
        return latencies


def year_request(events_per_day: int) -> dict[str, float]:
    """A 365-day request served by the job vs the same rows as one range export."""
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from export_pipelines.catalog import CATALOG
    from export_pipelines.catalog.spec import Window
    from export_pipelines.defs.requests import serve_export_request_job
    from export_pipelines.defs.resources import SourceResource, StoreResource, WorkAreaResource
    from export_pipelines.manifest import publish_folder
    from export_pipelines.pipeline.prepare import query_parameters
    from export_pipelines.render import ExportFormat, RenderOptions, render
    from export_pipelines.requests.ledger import RequestLedger
    from export_pipelines.source import demo_data
    from export_pipelines.source.database import SourceDatabase
    from export_pipelines.store import LocalStore

    base = Path(tempfile.mkdtemp(prefix="bench-year-"))
    end = dt.date(2026, 1, 1)
    db = SourceDatabase(f"sqlite:///{base / 'source.db'}")
    db.ensure_embedded(
        demo_data.DemoParams(organizations=1, days=366, events_per_day=events_per_day, end_date=end)
    )
    org = db.scalar("SELECT id FROM organizations")
    user = db.scalar("SELECT id FROM users WHERE organization_id = :org ORDER BY id", {"org": org})
    first, last = end - dt.timedelta(days=365), end - dt.timedelta(days=1)
    db.execute("DELETE FROM export_requests")
    spec = CATALOG["scan_results"]

    # The same rows exported as a single range: one query, one render, one publish
    # (checksum, copy into the store, manifest) — what the request does minus partitions.
    started = time.monotonic()
    window = Window.for_days(first, last)
    reader = db.stream(spec.query, query_parameters(spec, window, org), spec.columns)
    rendered = render(ExportFormat.CSV, reader, base / "single-range.csv", RenderOptions())
    publish_folder(LocalStore(base / "single"), "range", [rendered], {"export_type": spec.key})
    single = time.monotonic() - started

    def serve(work: Path) -> tuple[float, int]:
        request_id = RequestLedger(db).insert(
            org,
            user,
            "scan_results",
            "CSV",
            filters={"date_from": str(first), "date_to": str(last)},
            created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        )
        s3 = S3Resource()
        resources = {
            "source": SourceResource(url=db.url),
            "store": StoreResource(url=str(base / "exports"), s3=s3),
            "work": WorkAreaResource(path=str(work)),
            "s3": s3,
        }
        run_config = {"ops": {"serve_export_request": {"config": {"request_id": request_id}}}}
        with dg.instance_for_test() as instance:
            t0 = time.monotonic()
            result = serve_export_request_job.execute_in_process(
                run_config=run_config, instance=instance, resources=resources
            )
            elapsed = time.monotonic() - t0
        assert result.success
        return elapsed, RequestLedger(db).get(request_id)["row_count"]

    cold, rows = serve(base / "work")
    warm, _ = serve(base / "work")  # every day reused
    assert rows == rendered.rows, (rows, rendered.rows)
    return {"rows": rows, "single": single, "cold": cold, "warm": warm}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "requests.md"))
    parser.add_argument("--events-per-day", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=20)
    args = parser.parse_args()

    year = year_request(args.events_per_day)
    latencies = latency_under_dagster_dev(args.latency_runs)
    lines = [
        "## On-demand requests",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        "### Latency, insert → COMPLETED, small request under `dagster dev`",
        "",
        f"{len(latencies)} requests (1 day of scan_results, CSV), one after the other: "
        f"p50 **{percentile(latencies, 50):.1f} s**, p95 **{percentile(latencies, 95):.1f} s** "
        f"(targets 6 s and 12 s), min {min(latencies):.1f} s, max {max(latencies):.1f} s. "
        "What it waits for: the request sensor's tick (every 3 s), the run's launch (a new "
        "process loading the code location, ~2 s of CPU) and the run's own event writes; "
        "the export itself takes ~0.1 s.",
        "",
        "### 365-day request for one organization vs the same rows as one range",
        "",
        "| what | wall s | ratio to single range |",
        "|---|---:|---:|",
        f"| single range: one query, one CSV render, one publish ({year['rows']:,} rows) | {year['single']:.2f} | 1.00 |",
        f"| request, cold: one run builds 365 daily partitions + renders | {year['cold']:.2f} | {year['cold'] / year['single']:.2f} |",
        f"| request again (PostgreSQL would reuse the 365 partitions; the embedded SQLite "
        f"database cannot prove rows unchanged, so it rebuilds them) | {year['warm']:.2f} | "
        f"{year['warm'] / year['single']:.2f} |",
        "",
        f"Target ≤ 2× for the request: {'met' if year['cold'] <= 2 * year['single'] else 'missed'} "
        f"(cold {year['cold'] / year['single']:.2f}×). The request also runs as a Dagster run "
        "(in process here), validates and updates the ledger, and writes the 365 daily "
        "partitions (one Parquet file per day, shared with the transform stage by hard link), "
        "which the single range does not. Cold and warm each ran once; the machine is shared.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
