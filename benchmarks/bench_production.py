"""The production configuration under load: 2,000 requests over 50 organizations.

Dagster's storage on PostgreSQL (deploy/dagster.yaml: dagster-postgres, the queued run
coordinator with at most 4 runs at once and at most 2 per organization), the source on
PostgreSQL too, served by `dagster dev`'s daemon. We insert every request at once, wait
until all are settled, and sample the runs every half second to record the most runs seen
at once, in all and per organization. Beside it, the floor: the same valid requests built
one after another in one process.

Usage: python benchmarks/bench_production.py [--requests N] [--organizations N] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_burst import plan  # noqa: E402
from benchmarks.bench_requests import machine  # noqa: E402

ADMIN_URL = os.environ.get("EXPORT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _autocommit(statement: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(ADMIN_URL) as conn:
        conn.adbc_connection.set_autocommit(True)  # CREATE DATABASE needs it
        with conn.cursor() as cur:
            cur.execute(statement)


@contextlib.contextmanager
def database(prefix: str):
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _autocommit(f'CREATE DATABASE "{name}"')
    try:
        yield name, ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _autocommit(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def production_dagster(base: Path, source_url: str, dagster_db: str, timeout: float = 240):
    from export_pipelines_tests.dev_server import ASSET_QUERY, free_port, graphql

    home = base / "home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "trust",
        "DAGSTER_PG_DB": dagster_db,
        "EXPORT_SOURCE_URL": source_url,
        "EXPORT_STORE_URL": str(base / "exports"),
        "EXPORT_DATA_DIR": str(base / "data"),
    }
    log = open(base / "dev.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if graphql(port, ASSET_QUERY)["assetNodes"]:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((base / "dev.log").read_text()[-3000:])
            time.sleep(2)
        yield env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=20)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--organizations", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["EXPORT_REQUESTS_PER_HOUR"] = str(10 * args.requests)

    from export_pipelines.requests.ledger import RequestLedger
    from export_pipelines.source import demo_data
    from export_pipelines.source.database import SourceDatabase

    base = Path(tempfile.mkdtemp(prefix="bench-prod-"))
    end = dt.datetime.now(dt.timezone.utc).date()
    with database("bench_source") as (_, source_url), database("bench_dagster") as (dagster_db, _):
        db = SourceDatabase(source_url)
        db.create_schema()
        params = demo_data.DemoParams(
            organizations=args.organizations, days=3, events_per_day=40, end_date=end
        )
        db.ingest(demo_data.generate(params))
        db.execute("DELETE FROM export_requests")
        asks = plan(db, args.requests, end - dt.timedelta(days=2))
        with production_dagster(base, source_url, dagster_db) as env:
            os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
            for key in (
                "DAGSTER_PG_HOST",
                "DAGSTER_PG_PORT",
                "DAGSTER_PG_USER",
                "DAGSTER_PG_PASSWORD",
                "DAGSTER_PG_DB",
            ):
                os.environ[key] = env[key]
            import dagster as dg

            instance = dg.DagsterInstance.get()
            ledger = RequestLedger(db)
            started = time.monotonic()
            for a in asks:
                ledger.insert(a["org"], a["user"], a["type"], a["format"], filters=a["filters"])
            inserted = time.monotonic() - started
            most, most_per_org = 0, 0
            while time.monotonic() - started < 1800:
                running = instance.get_runs(
                    filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
                )
                per_org = collections.Counter(r.tags.get("export/org") for r in running)
                most = max(most, len(running))
                most_per_org = max([most_per_org, *per_org.values()])
                settled = db.scalar(
                    "SELECT count(*) FROM export_requests WHERE status IN ('COMPLETED', 'FAILED')"
                )
                if settled == len(asks):
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            rows = db.fetch_rows("SELECT id, status, run_id FROM export_requests")
            entries = db.fetch_rows(
                "SELECT target_id, count(*) AS n FROM audit_log WHERE action IN "
                "('export.completed', 'export.failed') GROUP BY target_id"
            )
            per_request = {e["target_id"]: e["n"] for e in entries}
            runs = len(instance.get_runs(filters=dg.RunsFilter(tags={"export/kind": "request"})))
    from benchmarks.bench_burst import floor

    physical = floor(asks, end - dt.timedelta(days=2), params)
    status = collections.Counter(r["status"] for r in rows)
    text = "\n".join(
        [
            f"### Production config: {args.requests:,} requests over {args.organizations} "
            "organizations (PostgreSQL storage and source)",
            "",
            f"{dt.date.today()}, {machine()}. deploy/dagster.yaml: at most 4 runs at once, "
            "2 per organization.",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| inserted (all at once) | {inserted:.1f} s |",
            f"| all settled | **{elapsed:.1f} s** |",
            f"| completed / failed | {status['COMPLETED']} / {status['FAILED']} |",
            f"| lost / served twice | {sum(s not in ('COMPLETED', 'FAILED') for s in status.elements())}"
            f" / {sum(n > 1 for n in per_request.values())} |",
            f"| runs | {runs} |",
            f"| most runs seen at once / most per organization | {most} / **{most_per_org}** |",
            f"| floor: the valid requests built in one process (same data, embedded SQLite) | {physical:.1f} s |",
            f"| ratio settled / floor | {elapsed / physical:.1f}× |",
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
