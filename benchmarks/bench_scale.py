"""How far one deployment goes: organization × day partitions at scale (issue 13).

One production-style instance (deploy/dagster.yaml: Dagster's storage in a scratch
PostgreSQL database) and a scratch PostgreSQL source with `--organizations` organizations,
every export asset partitioned by organization × the last `--days` days. Measured:

- loading the code location (`export_pipelines.definitions`) in a fresh interpreter;
- one tick of `organizations_sensor` that finds `--new-organizations` organizations not
  yet registered, and the instance applying its partition request;
- one tick of `export_requests_sensor` with `--pending` waiting rows;
- the UI's GraphQL partition-status query (`assetPartitionStatuses`, `partitionStats`) of
  `scan_results/publish` with `--materialized` of its partitions materialized, served by
  `dagster-webserver` (first query after start, then again, then after one more
  organization is registered: that changes the partitions definition's identity, so
  Dagster rebuilds the asset's stored status);
- launching a `--days`-day backfill of one organization's `scan_results` group (the UI's
  `launchPartitionBackfill` mutation; no daemon runs it);
- the asset's partitions page in headless Chromium (Debian's, through Playwright): time
  until the page has painted anything, and until the partition status is on screen.

Honest shortcuts, printed with the results: organizations are registered as dynamic
partitions directly (`instance.add_dynamic_partitions`), and "materialized" partitions are
runless materialization events written in batches through the instance's event-log
storage (the rows a run would write), chosen at random (seed 13) — no export runs.

Usage: python benchmarks/bench_scale.py [--organizations 200] [--days 365]
    [--new-organizations 200] [--pending 500] [--materialized 0.1] [--no-browser]
    [--out FILE] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_requests import machine  # noqa: E402
from export_pipelines_tests.dev_server import (  # noqa: E402
    ASSET_QUERY,
    database,
    free_port,
    graphql,
    mixed_requests,
)

SLOW_QUERY_TIMEOUT_S = 1800  # at 730,000 partitions a query may take minutes: measure it

ASSET = ["scan_results", "publish"]
STAGES = ("extract", "transform", "render", "publish")
EVENT_BATCH = 2_000

STATUS_QUERY = """
query Status($key: AssetKeyInput!) {
  assetNodes(assetKeys: [$key]) {
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    assetPartitionStatuses {
      __typename
      ... on MultiPartitionStatuses {
        primaryDimensionName
        ranges {
          primaryDimStartKey primaryDimEndKey
          secondaryDim {
            ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
          }
        }
      }
    }
  }
}
"""
BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def record(rows: list[tuple[str, str]], row: tuple[str, str]) -> None:
    """Keep a figure for the table, and show it at once: a large run takes a while."""
    rows.append(row)
    print(f"{row[0]}: {row[1]}", file=sys.stderr, flush=True)


def seed_source(source_url: str, organizations: int, pending: int, end: dt.date) -> list[str]:
    """The source: `organizations` tenants with a day of data, `pending` waiting requests."""
    from export_pipelines.requests.ledger import RequestLedger
    from export_pipelines.source import demo_data
    from export_pipelines.source.database import SourceDatabase

    db = SourceDatabase(source_url)
    try:
        db.create_schema()
        params = demo_data.DemoParams(
            organizations=organizations, days=1, events_per_day=1, end_date=end
        )
        db.ingest(demo_data.generate(params))
        db.execute("DELETE FROM export_requests")
        ledger = RequestLedger(db)
        for ask in mixed_requests(db, pending, end - dt.timedelta(days=1)):
            ledger.insert(ask["org"], ask["user"], ask["type"], ask["format"], ask["filters"])
        return db.fetch_table("SELECT id FROM organizations ORDER BY id").column("id").to_pylist()
    finally:
        db.close()


def load_seconds(env: dict) -> float:
    """The code location loaded in a fresh interpreter, as a code server does (best of 2)."""
    script = (
        "import time; t = time.perf_counter(); "
        "from export_pipelines.definitions import defs; defs.get_repository_def(); "
        "print(time.perf_counter() - t)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", script],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
        )
        for _ in range(2)
    ]
    return min(runs)


def sensor_tick(instance, defs, name: str):
    """One tick of a sensor of the real definitions, evaluated as the code server does for
    the daemon."""
    import dagster as dg

    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance,
        repository_def=repository,
        sensor_name=name,
        resources=repository.get_top_level_resources(),
    ) as context:
        return sensor.evaluate_tick(context)


def materialize_fraction(instance, partitions_def, fraction: float) -> int:
    """Record `fraction` of the asset's partitions as materialized (runless events)."""
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    chosen = random.Random(13).sample(keys, int(len(keys) * fraction))
    for start in range(0, len(chosen), EVENT_BATCH):
        entries = [
            EventLogEntry(
                user_message="",
                level="INFO",
                job_name=RUNLESS_JOB_NAME,
                run_id=RUNLESS_RUN_ID,
                error_info=None,
                timestamp=time.time(),
                dagster_event=DagsterEvent(
                    event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                    event_specific_data=StepMaterializationData(
                        dg.AssetMaterialization(asset_key=ASSET, partition=key)
                    ),
                    job_name=RUNLESS_JOB_NAME,
                ),
            )
            for key in chosen[start : start + EVENT_BATCH]
        ]
        instance.event_log_storage.store_event_batch(entries)
    return len(chosen)


@contextlib.contextmanager
def webserver(env: dict, log_path: Path, timeout: float = 600) -> Iterator[tuple[int, int, float]]:
    """`dagster-webserver` on workspace.yaml in its own process group; (port, process group,
    seconds until it serves the asset graph)."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster_webserver",
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
            started = time.perf_counter()
            while True:
                with contextlib.suppress(OSError):
                    if graphql(port, ASSET_QUERY)["assetNodes"]:
                        break
                if process.poll() is not None or time.perf_counter() - started > timeout:
                    raise RuntimeError(log_path.read_text()[-3000:])
                time.sleep(0.5)
            yield port, process.pid, time.perf_counter() - started
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


def post(port: int, query: str, variables: dict) -> dict:
    """A GraphQL query as the UI sends it, allowed to take as long as it takes."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=SLOW_QUERY_TIMEOUT_S) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def status_query(port: int) -> tuple[float, dict]:
    seconds, data = timed(post, port, STATUS_QUERY, {"key": {"path": ASSET}})
    return seconds, data["assetNodes"][0]


def launch_backfill(port: int, org: str, first: dt.date, last: dt.date) -> tuple[float, dict]:
    selection = [
        {
            "assetKey": {"path": [ASSET[0], stage]},
            "partitions": {"ranges": [{"start": f"{first}|{org}", "end": f"{last}|{org}"}]},
        }
        for stage in STAGES
    ]
    seconds, data = timed(
        post, port, BACKFILL_MUTATION, {"params": {"partitionsByAssets": selection}}
    )
    return seconds, data["launchPartitionBackfill"]


def browser_render(port: int, screenshot: Path) -> tuple[float, float]:
    """Seconds to first contentful paint, and until the partition status is on screen."""
    from export_pipelines_tests.browser import chromium_page

    url = f"http://127.0.0.1:{port}/assets/{'/'.join(ASSET)}?view=partitions"
    with chromium_page() as page:
        page.set_default_timeout(SLOW_QUERY_TIMEOUT_S * 1000)
        started = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.get_by_text(re.compile(r"Materialized \(\d")).first.wait_for()  # the counts
        status = time.perf_counter() - started
        paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
        page.screenshot(path=screenshot)
    return paint / 1000, status


def measure_ui(rows, base: Path, env: dict, instance, orgs: list[str], first, end, args):
    """What the UI asks of the webserver: partition status, a backfill, the asset page."""
    from export_pipelines.defs.partitions import organizations

    with webserver(env, base / "webserver.log") as (port, pgid, ready):
        record(
            rows,
            ("webserver up, asset graph served (code location loaded)", f"{ready:.1f} s"),
        )
        cold, node = status_query(port)
        warm, node = status_query(port)
        stats = node["partitionStats"]
        ranges = node["assetPartitionStatuses"]["ranges"]
        record(
            rows,
            (
                f"GraphQL partition status, {stats['numMaterialized']:,} of "
                f"{stats['numPartitions']:,} materialized ({len(ranges)} date ranges): "
                "first / again",
                f"{cold:.2f} s / {warm:.2f} s",
            ),
        )
        # A new organization changes the partitions definition's identity, and
        # with it every asset's stored status: the next query rebuilds it.
        instance.add_dynamic_partitions(organizations.name, ["zz-scale-new-org"])
        rebuilt, _ = status_query(port)
        record(
            rows,
            (
                "the same query after one more organization is registered",
                f"{rebuilt:.2f} s",
            ),
        )
        seconds, launched = launch_backfill(port, orgs[0], first, end - dt.timedelta(days=1))
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        record(
            rows,
            (
                f"launch a {args.days}-day backfill of one organization (4 assets)",
                f"{seconds:.2f} s",
            ),
        )
        if not args.no_browser:
            paint, status = browser_render(port, args.screenshot or base / "page.png")
            record(
                rows,
                (
                    "asset page in Chromium: first paint / partition status shown",
                    f"{paint:.1f} s / {status:.1f} s",
                ),
            )
        record(rows, ("webserver + code server peak RSS", f"{group_peak_rss_mb(pgid):,.0f} MB"))


def run(args, base: Path) -> tuple[list[tuple[str, str]], dict]:
    import dagster as dg

    end = dt.datetime.now(dt.timezone.utc).date()
    first = end - dt.timedelta(days=args.days)
    rows: list[tuple[str, str]] = []
    facts: dict = {}
    with database("scale_source") as (_, source_url), database("scale_dagster") as (pg_db, _):
        facts["seed_s"], orgs = timed(
            seed_source, source_url, args.organizations, args.pending, end
        )
        home = base / "home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": "5432",
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "trust",
            "DAGSTER_PG_DB": pg_db,
            "EXPORT_SOURCE_URL": source_url,
            "EXPORT_STORE_URL": str(base / "exports"),
            "EXPORT_DATA_DIR": str(base / "data"),
            "EXPORT_PARTITIONS_START": str(first),
            "EXPORT_REQUESTS_PER_HOUR": str(10 * args.pending),
        }
        os.environ.update(env)
        record(rows, ("load the definitions (fresh interpreter)", f"{load_seconds(env):.2f} s"))

        from export_pipelines.definitions import defs
        from export_pipelines.defs.partitions import export_partitions, organizations

        instance = dg.DagsterInstance.get()
        try:
            known = facts["known"] = orgs[: len(orgs) - args.new_organizations]
            facts["register_s"], _ = timed(
                instance.add_dynamic_partitions, organizations.name, known
            )
            seconds, result = timed(sensor_tick, instance, defs, "organizations_sensor")
            (request,) = result.dynamic_partitions_requests
            applied, _ = timed(
                instance.add_dynamic_partitions, organizations.name, list(request.partition_keys)
            )
            record(
                rows,
                (
                    f"organizations sensor tick ({len(request.partition_keys)} new of "
                    f"{len(orgs):,}) + applying it",
                    f"{seconds:.2f} s + {applied:.2f} s",
                ),
            )
            seconds, result = timed(sensor_tick, instance, defs, "export_requests_sensor")
            record(
                rows,
                (
                    f"request sensor tick ({args.pending} pending rows → "
                    f"{len(result.run_requests)} run requests)",
                    f"{seconds:.2f} s",
                ),
            )
            total = len(export_partitions.get_partition_keys(dynamic_partitions_store=instance))
            facts["partitions"] = total
            seconds, facts["materialized"] = timed(
                materialize_fraction, instance, export_partitions, args.materialized
            )
            facts["materialize_s"] = seconds
            measure_ui(rows, base, env, instance, orgs, first, end, args)
        finally:
            instance.dispose()
    return rows, facts


def group_peak_rss_mb(pgid: int) -> float:
    """Sum of the peak RSS (VmHWM) of every live process in the group: the webserver and
    the code server it started."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == pgid:
                status = (proc / "status").read_text().splitlines()
                total_kb += int(next(x for x in status if x.startswith("VmHWM")).split()[1])
    return total_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--organizations", type=int, default=200)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--new-organizations", type=int, default=200)
    parser.add_argument("--pending", type=int, default=500)
    parser.add_argument("--materialized", type=float, default=0.10)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--screenshot", type=Path, help="keep the asset page's screenshot here")
    args = parser.parse_args()
    if not 0 < args.new_organizations <= args.organizations:
        parser.error("--new-organizations must be in 1..--organizations")

    load_before = os.getloadavg()[1]
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        rows, facts = run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = f"load average (5 min) {load_before:.1f} before, {os.getloadavg()[1]:.1f} after"
    lines = [
        f"### {args.organizations:,} organizations × {args.days} days "
        f"({facts['partitions']:,} partitions per asset)",
        "",
        f"{dt.date.today()}, {machine()}, {load}. Dagster storage and source on "
        f"PostgreSQL (127.0.0.1; source seeded in {facts['seed_s']:.0f} s); "
        f"{len(facts['known']):,} organizations registered directly as dynamic partitions "
        f"({facts['register_s']:.1f} s), the rest by the sensor; "
        f"{facts['materialized']:,} runless materialization events of `scan_results/publish` "
        f"written in batches at random partitions ({facts['materialize_s']:.0f} s), no export "
        "runs.",
        "",
        "| figure | value |",
        "|---|---:|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
