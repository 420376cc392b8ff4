"""The README's main command (`make dev`) run for real, in its own process group."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET_QUERY = "query { assetNodes { assetKey { path } groupName } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@contextlib.contextmanager
def dagster_dev(base: Path, timeout: float = 240) -> Iterator[dict]:
    """`make dev` against a fresh embedded default under `base`, until its assets load.

    Yields {"port", "env", "base"}. `dagster dev` ignores SIGTERM on some paths, so the
    whole process group is ended, then killed if it lingers.
    """
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(base / "home"),
        "EXPORT_DATA_DIR": str(base / "data"),
        "EXPORT_STORE_URL": str(base / "exports"),
        "DAGSTER_PORT": str(port),
    }
    log_path = base / "dev.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "dev"],
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
                    raise AssertionError(
                        f"dagster dev did not come up:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(2)
            yield {"port": port, "env": env, "base": base}
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """End the whole process group (make exits at once; Dagster's processes may not),
    then kill what is left after 20 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            continue
        break
    process.wait()


# -- the production configuration (deploy/dagster.yaml: PostgreSQL storage) ---------------

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


TYPES = [
    ("scan_results", False),
    ("credit_usage_report", False),
    ("generated_content", False),
    ("projects_summary", False),
    ("audit_log_export", True),
]
FORMATS = ["CSV", "JSON", "JSONL", "PARQUET", "XML", "EXCEL"]


def mixed_requests(db, count: int, day: dt.date) -> list[dict]:
    """`count` small requests as the application would send them: mixed types and formats,
    one day each, every tenth invalid in its own way."""
    admins = db.fetch_rows("SELECT id, organization_id FROM users WHERE is_admin = :y", {"y": True})
    members = db.fetch_rows("SELECT id, organization_id FROM users ORDER BY id")
    asks = []
    for i in range(count):
        export_type, admin_only = TYPES[i % len(TYPES)]
        user = (admins if admin_only else members)[i % len(admins if admin_only else members)]
        ask = {
            "org": user["organization_id"],
            "user": user["id"],
            "type": export_type,
            "format": FORMATS[i % len(FORMATS)],
            "filters": {"date_from": str(day), "date_to": str(day)},
        }
        if i % 10 == 9:  # the invalid tenth, each wrong in its own way
            ask.update(
                [
                    {"type": "no_such_export"},
                    {"format": "DOCX"},
                    {"filters": {"date_from": str(day), "date_to": "2999-01-01"}},
                    {"filters": {"project_ids": "not-a-list"}},
                ][(i // 10) % 4]
            )
        asks.append(ask)
    return asks


def production_burst(base: Path, requests: int, organizations: int, timeout: float = 1800) -> dict:
    """`requests` requests over `organizations` organizations, inserted at once and served
    by `dagster dev` on the production instance config; the runs sampled every 0.5 s."""
    import collections

    from export_pipelines.requests.ledger import RequestLedger
    from export_pipelines.source import demo_data
    from export_pipelines.source.database import SourceDatabase

    os.environ["EXPORT_REQUESTS_PER_HOUR"] = str(10 * requests)
    end = dt.datetime.now(dt.timezone.utc).date()
    with database("load_source") as (_, source_url), database("load_dagster") as (dagster_db, _):
        db = SourceDatabase(source_url)
        db.create_schema()
        params = demo_data.DemoParams(
            organizations=organizations, days=3, events_per_day=40, end_date=end
        )
        db.ingest(demo_data.generate(params))
        db.execute("DELETE FROM export_requests")
        asks = mixed_requests(db, requests, end - dt.timedelta(days=2))
        with production_dagster(base, source_url, dagster_db) as env:
            import dagster as dg

            previous = {k: os.environ.get(k) for k in env if k.startswith("DAGSTER_")}
            os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_")})
            try:
                instance = dg.DagsterInstance.get()
                ledger = RequestLedger(db)
                started = time.monotonic()
                ids = [
                    ledger.insert(a["org"], a["user"], a["type"], a["format"], filters=a["filters"])
                    for a in asks
                ]
                inserted = time.monotonic() - started
                most, most_per_org = 0, 0
                while time.monotonic() - started < timeout:
                    running = instance.get_runs(
                        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
                    )
                    per_org = collections.Counter(r.tags.get("export/org") for r in running)
                    most = max(most, len(running))
                    most_per_org = max([most_per_org, *per_org.values()])
                    settled = db.scalar(
                        "SELECT count(*) FROM export_requests "
                        "WHERE status IN ('COMPLETED', 'FAILED')"
                    )
                    if settled == len(asks):
                        break
                    time.sleep(0.5)
                elapsed = time.monotonic() - started
                rows = {r["id"]: r for r in db.fetch_rows("SELECT * FROM export_requests")}
                entries = db.fetch_rows(
                    "SELECT target_id, count(*) AS n FROM audit_log WHERE action IN "
                    "('export.completed', 'export.failed') GROUP BY target_id"
                )
                per_request = {e["target_id"]: e["n"] for e in entries}
                runs = len(
                    instance.get_runs(filters=dg.RunsFilter(tags={"export/kind": "request"}))
                )
                instance.dispose()
            finally:
                for key, value in previous.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            db.close()
    return {
        "asks": asks,
        "params": params,
        "end": end,
        "inserted_s": inserted,
        "settled_s": elapsed,
        "most": most,
        "most_per_org": most_per_org,
        "status": collections.Counter(r["status"] for r in rows.values()),
        "lost": sum(rows[i]["status"] not in ("COMPLETED", "FAILED") for i in ids),
        "twice": sum(per_request.get(i, 0) > 1 for i in ids),
        "unrecorded": sum(per_request.get(i, 0) == 0 for i in ids),
        "messages": [rows[i]["error_message"] for i in ids if rows[i]["status"] == "FAILED"],
        "runs": runs,
    }
