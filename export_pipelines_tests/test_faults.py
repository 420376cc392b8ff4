"""Faults injected for real while requests are served (issue: reliability).

1. `kill -9` of a request's run worker mid-render and mid-publish, under `dagster dev` on
   the embedded default (slow): a run of its own, a run shared by two requests;
2. the source connection terminated (`pg_terminate_backend` from another connection) while
   a large PostgreSQL extract runs, on every attempt: the run fails, then the next request
   is served;
3. the store's `requests/` folder made immutable (`chattr +i`, which stops root too) in the
   middle of a publish, then writable again;
4. (a known bug, xfail) every backend of the source database terminated while the ledger's
   pooled connection sits idle, as a PostgreSQL restart does: the next statement must not fail.

(Two concurrent runs of one partition are test_reliability.py's.)

After each, what must hold (docs/CONTRACT.md §5, §6): every published folder verifies
(`export-pipelines verify <store>` exits 0), no request is left PENDING or PROCESSING once
the service has reconciled, no FAILED request becomes COMPLETED, and each ended request
has exactly one `export.failed` or `export.completed` entry in the audit log.

With EXPORT_RELIABILITY_OUT set, each test appends one JSON line to that file: `test`,
`kind`, `injected`, `verify_failures`, `stuck`, `duplicates`, `lost`, `flips`, `leftovers`
(hidden entries a dead or refused publish left behind), `passed`, `seconds`, and details.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from export_pipelines.cli import main as cli
from export_pipelines.defs.requests import export_request_failure_sensor
from export_pipelines.defs.resources import SourceResource
from export_pipelines.manifest import verify_tree
from export_pipelines.pipeline.naming import path_segment, request_folder
from export_pipelines.requests.ledger import RequestLedger
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import LocalStore

from .conftest import (
    DEMO_DAY,
    evaluate_failure_sensor,
    export_resources,
    scratch_postgres_database,
    seed,
)
from .dev_server import ROOT
from .test_one_pipeline import assert_one_sentence_for_people
from .test_requests import a_user, run, sql_count, tick

ENDED = ("COMPLETED", "FAILED", "EXPIRED")
RUN_MENTION = re.compile(r" \(run [0-9a-f-]+\)")
OPEN = ("PENDING", "PROCESSING")
ENDING_ACTIONS = ("export.completed", "export.failed")

# Large enough that the step being hit lasts long enough to be hit from outside.
PG_BULK_ROWS = 150_000  # the extract query runs ~0.3 s
SQLITE_BULK_ROWS = 150_000  # a 35 MB CSV: its publish copies and fsyncs for tens of ms
DEV_BULK_ROWS = 400_000  # a 90 MB CSV: ~2 s of render, ~80 ms of publish


# -- reporting -----------------------------------------------------------------------------


@contextlib.contextmanager
def reporting(test: str, kind: str) -> Iterator[dict[str, Any]]:
    """The test's JSON line for RELIABILITY.md, written whether it passes or not."""
    line: dict[str, Any] = {
        "test": test,
        "kind": kind,
        "injected": 0,
        "verify_failures": 0,
        "stuck": 0,
        "duplicates": 0,
        "lost": 0,
        "flips": 0,
        "leftovers": 0,
    }
    started = time.monotonic()
    passed = False
    try:
        yield line
        passed = True
    finally:
        out = os.environ.get("EXPORT_RELIABILITY_OUT")
        if out:
            line.update(passed=passed, seconds=round(time.monotonic() - started, 1))
            with open(out, "a", encoding="utf-8") as file:
                file.write(json.dumps(line, default=str) + "\n")


# -- what must hold ------------------------------------------------------------------------


def check_invariants(
    db: SourceDatabase,
    store_dir: Path,
    request_ids: list[str],
    failed: set[str] = frozenset(),
    cli_verify: Callable[[Path], int] | None = None,
) -> dict[str, Any]:
    """Count what breaks the invariants; `failed` are requests that ended FAILED earlier."""
    folders, problems = verify_tree(LocalStore(store_dir))
    code = (cli_verify or (lambda path: cli(["verify", str(path)])))(store_dir)
    ledger = RequestLedger(db)
    rows = {rid: ledger.get(rid) for rid in request_ids}
    entries: Counter = Counter()
    for row in db.fetch_rows(
        "SELECT target_id, action FROM audit_log WHERE action IN (:done, :failed)",
        {"done": ENDING_ACTIONS[0], "failed": ENDING_ACTIONS[1]},
    ):
        if row["target_id"] in rows:
            entries[(row["target_id"], row["action"])] += 1

    def ends(rid: str) -> int:
        return sum(entries[(rid, action)] for action in ENDING_ACTIONS)

    return {
        "folders": folders,
        "problems": [str(p) for p in problems],
        "verify_exit": code,
        "verify_failures": len(problems) + (code != 0),
        "stuck": sum(row is not None and row["status"] in OPEN for row in rows.values()),
        "duplicates": sum(ends(rid) > 1 for rid in rows),
        "lost": sum(
            row is None or (row["status"] in ENDED and ends(rid) == 0) for rid, row in rows.items()
        ),
        "flips": sum(
            rows[rid] is None
            or rows[rid]["status"] != "FAILED"
            or entries[(rid, "export.completed")] > 0
            for rid in failed
        ),
        "statuses": {rid: row and row["status"] for rid, row in rows.items()},
    }


def assert_invariants(found: dict[str, Any]) -> None:
    assert found["problems"] == [] and found["verify_exit"] == 0, found
    for key in ("stuck", "duplicates", "lost", "flips"):
        assert found[key] == 0, (key, found)


def hidden_leftovers(root: Path, prefixes: tuple[str, ...]) -> tuple[int, int]:
    """(entries, bytes) of hidden scratch directly under `root` whose names start so."""
    entries = size = 0
    if not root.is_dir():
        return 0, 0
    for entry in root.iterdir():
        if entry.name.startswith(prefixes):
            entries += 1
            paths = [entry, *entry.rglob("*")] if entry.is_dir() else [entry]
            size += sum(p.stat().st_size for p in paths if p.is_file())
    return entries, size


# -- data large enough to be caught in the act ---------------------------------------------


def add_scans(db: SourceDatabase, org: str, day: dt.date, rows: int) -> None:
    """`rows` more scan results of `org` on `day`, made by the database itself."""
    audit = db.scalar(
        "SELECT a.id FROM audits a JOIN projects p ON p.id = a.project_id "
        "WHERE p.organization_id = :org ORDER BY a.id",
        {"org": org},
    )
    params = {"audit": audit, "n": rows}
    if db.dialect == "postgresql":
        db.execute(
            "INSERT INTO scan_results (id, audit_id, dcs_score, ai_citation_score, created_at) "
            "SELECT 'fault-' || g, :audit, CAST(g % 100 AS DOUBLE PRECISION), "
            "CASE WHEN g % 3 = 0 THEN NULL ELSE CAST(g % 97 AS DOUBLE PRECISION) END, "
            "CAST(:start AS TIMESTAMP) + (g % 86400) * INTERVAL '1 second' "
            "FROM generate_series(1, :n) AS g",
            {**params, "start": dt.datetime.combine(day, dt.time())},
        )
        db.execute("ANALYZE scan_results")
    else:
        db.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n) "
            "INSERT INTO scan_results (id, audit_id, dcs_score, ai_citation_score, created_at) "
            "SELECT 'fault-' || n, :audit, n % 100, CASE WHEN n % 3 = 0 THEN NULL ELSE n % 97 END, "
            "strftime('%Y-%m-%d %H:%M:%S', :start, '+' || (n % 86400) || ' seconds') || '.000000' "
            "FROM g",
            {**params, "start": day.isoformat()},
        )


def one_day(day: dt.date) -> dict[str, str]:
    return {"date_from": day.isoformat(), "date_to": day.isoformat()}


# -- 2. the source connection terminated mid-extract (PostgreSQL) --------------------------

# pg_stat_activity keeps the first track_activity_query_size bytes (1 kB by default) of a
# query: the extract's typed SELECT (source/database.py `typed`, run inside ADBC's
# `COPY (…) TO STDOUT`) names its columns there, long before "FROM scan_results" — which a
# LIKE '%scan_results%' never reaches.
EXTRACT_QUERY = '%SELECT CAST(q."organization_id" AS TEXT) AS "organization_id", CAST(q."scan_id"%'


@contextlib.contextmanager
def terminating(url: str, pattern: str, after_ms: int = 40) -> Iterator[list[dict]]:
    """From a connection of its own, terminate every backend running `pattern` for more than
    `after_ms` milliseconds, until the block ends; yields what it terminated."""
    import adbc_driver_postgresql.dbapi as pg

    killed: list[dict] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    database = url.rsplit("/", 1)[1]

    def loop() -> None:
        try:
            with pg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute(
                        "SELECT pid, pg_terminate_backend(pid) AS terminated, "
                        "CAST(extract(epoch FROM now() - query_start) AS DOUBLE PRECISION) AS age, "
                        "left(query, 80) AS query FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend' AND state = 'active' "
                        "AND query LIKE $2 AND now() - query_start > $3 * INTERVAL '1 millisecond'",
                        [database, pattern, after_ms],
                    )
                    # A terminated backend shows as active until it has exited: once each.
                    for row in cur.fetch_arrow_table().to_pylist():
                        if row["pid"] not in {k["pid"] for k in killed}:
                            killed.append(row)
                    stop.wait(0.01)
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=loop, name="pg-terminator")
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()
    assert errors == [], errors


def step_errors(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every step error of the run, causes included, as the data team reads them."""
    texts = []
    for event in instance.all_logs(run_id):
        data = event.dagster_event.event_specific_data if event.dagster_event else None
        error = getattr(data, "error", None)
        while error is not None:
            texts.append(error.to_string())
            error = error.cause
    return "\n".join(texts)


def attempt_errors(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Each failed attempt's root error: its class and the package function it came from."""
    found = []
    for event in instance.all_logs(run_id):
        kind = event.dagster_event.event_type_value if event.dagster_event else None
        if kind not in ("STEP_UP_FOR_RETRY", "STEP_FAILURE"):
            continue
        error = getattr(event.dagster_event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:
            error = error.cause
        if error is None or error.cls_name == "RetryRequestedFromPolicy":
            continue
        frames = [f for f in error.stack if "/export_pipelines/" in f and "_tests" not in f]
        where = re.search(r", in (\w+)", frames[-1]).group(1) if frames else "?"
        found.append(f"{error.cls_name} in {where}")
    return found


def test_source_connection_terminated_mid_extract_fails_the_request_and_the_next_succeeds(
    tmp_path, instance
):
    with (
        reporting("test_faults::pg_terminate_backend", "source connection killed") as line,
        scratch_postgres_database() as url,
    ):
        db = seed(SourceDatabase(url))
        db.execute("DELETE FROM export_requests")
        user = a_user(db, admin=False)
        org = user["organization_id"]
        add_scans(db, org, DEMO_DAY, PG_BULK_ROWS)
        ledger = RequestLedger(db)
        store_dir = tmp_path / "exports"
        resources = export_resources(db, store_dir, tmp_path / "work")
        sensor_resources = {"source": SourceResource(url=db.url)}

        # Something already published, which the failure must leave verifying.
        earlier = ledger.insert(org, user["id"], "credit_usage_report", "JSON", one_day(DEMO_DAY))
        assert run(instance, tick(instance, db).run_requests[0], resources).success

        doomed = ledger.insert(org, user["id"], "scan_results", "CSV", one_day(DEMO_DAY))
        run_request = tick(instance, db).run_requests[0]
        with terminating(url, EXTRACT_QUERY) as killed:
            outcome = run(instance, run_request, resources)
        line.update(injected=len(killed), killed_after_s=[round(k["age"], 3) for k in killed])
        line["attempts"] = attempt_errors(instance, outcome.run_id)
        assert not outcome.success
        assert len(killed) >= 3, f"every attempt's extract is terminated: {killed}"
        assert all(k["terminated"] for k in killed)
        # What the daemon does next: the failure sensor, then the request sensor's tick.
        evaluate_failure_sensor(
            export_request_failure_sensor, instance, outcome.run_id, sensor_resources
        )
        tick(instance, db)

        row = ledger.get(doomed)
        line["message"] = row["error_message"]
        assert row["status"] == "FAILED" and row["retry_count"] == 2
        message = row["error_message"]
        assert message.startswith("The source database could not be read"), message
        assert outcome.run_id in message
        assert_one_sentence_for_people(message)
        for technical in ("libpq", "sqlstate", "terminat", "server closed", "adbc", "io:"):
            assert technical not in message.lower(), message
        # The detail is for the data team, in the run's log.
        assert re.search(
            r"terminat|server closed|connection", step_errors(instance, outcome.run_id)
        )

        # Nothing half-published: no folder, no build beside it, no unfinished stage.
        assert not (store_dir / request_folder(doomed)).exists()
        assert hidden_leftovers(store_dir / "requests", (".publish-",)) == (0, 0)
        work = tmp_path / "work"
        unfinished = [p for p in work.rglob(".build-*")] + [
            p for p in work.iterdir() if p.name.startswith((".deliverable-", ".range-"))
        ]
        line["leftovers"] = len(unfinished)
        assert unfinished == []

        # The source is fine again: the next request is served, the failed one stays failed.
        after = ledger.insert(org, user["id"], "scan_results", "CSV", one_day(DEMO_DAY))
        served = run(instance, tick(instance, db).run_requests[0], resources)
        assert served.success
        tick(instance, db)
        row = ledger.get(after)
        assert row["status"] == "COMPLETED"
        assert row["row_count"] == sql_count(db, org, DEMO_DAY, DEMO_DAY) >= PG_BULK_ROWS

        found = check_invariants(db, store_dir, [earlier, doomed, after], failed={doomed})
        line.update({k: found[k] for k in ("verify_failures", "stuck", "duplicates", "lost")})
        line.update(flips=found["flips"], folders=found["folders"], outcome=found["statuses"])
        ages = [k["age"] * 1000 for k in killed]
        line["summary"] = (
            f"the extract's connection terminated on each of the {len(killed)} attempts "
            f"({min(ages):.0f}-{max(ages):.0f} ms into its query; attempts failed with "
            f"{', '.join(line['attempts'])}): the run failed, the request "
            f"FAILED with “{RUN_MENTION.sub('', message)}”, nothing published; the next request "
            f"COMPLETED ({row['row_count']:,} rows)"
        )
        assert_invariants(found)
        assert found["folders"] == 2
        db.close()


def test_a_pooled_source_connection_the_server_ended_is_replaced_not_failed():
    """What a PostgreSQL restart does to each long-lived process: its idle connection dies.

    The statement after it (the sensor's next tick, or `ledger.complete` after a publish,
    which then costs a whole rebuild or, on the last attempt, fails a request whose files
    were published) must open a new connection instead of failing.
    """
    import adbc_driver_postgresql.dbapi as pg

    with (
        reporting("test_faults::pooled_connection_ended", "idle source connection killed") as line,
        scratch_postgres_database() as url,
    ):
        db = seed(SourceDatabase(url))
        user = a_user(db, admin=False)
        ledger = RequestLedger(db)
        request_id = ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV")
        assert ledger.get(request_id)["status"] == "PENDING"  # the connection is now pooled
        with pg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                [url.rsplit("/", 1)[1]],
            )
            line["injected"] = cur.fetchone()[0]
        try:
            row = ledger.get(request_id)
        except Exception as error:
            line["failed_statements"] = 1
            line["summary"] = (
                "every backend of the source database terminated while the ledger's pooled "
                f"connection sat idle: the next statement failed ({type(error).__name__})"
            )
            raise
        line["failed_statements"] = 0
        line["summary"] = "the next statement was served on a new connection"
        assert row["status"] == "PENDING"
        db.close()


# -- 3. the store made read-only mid-publish ------------------------------------------------

FREEZER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    folder, prefix, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            builds = [e for e in os.scandir(folder) if e.name.startswith(prefix) and e.is_dir()]
            for build in builds:
                sizes = [f.stat().st_size for f in os.scandir(build.path)]
                if sizes and max(sizes) > 0:
                    subprocess.run(["chattr", "+i", folder], check=True)
                    print(json.dumps({"frozen": True, "build": build.name, "bytes": sum(sizes)}))
                    sys.exit(0)
        except FileNotFoundError:
            pass  # the build was swapped in or removed while we looked
    print(json.dumps({"frozen": False}))
    """
)


def chattr_or_skip(probe: Path) -> None:
    probe.mkdir(parents=True, exist_ok=True)
    if (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", probe], capture_output=True).returncode
    ):
        pytest.skip("chattr +i is not available here (needs root and a file system with it)")
    subprocess.run(["chattr", "-i", probe], check=True)


def test_store_made_read_only_mid_publish_fails_the_request_then_recovers(
    sqlite_source, tmp_path, instance
):
    chattr_or_skip(tmp_path / "probe")
    db = sqlite_source
    with reporting("test_faults::chattr_mid_publish", "store read-only mid-publish") as line:
        db.execute("DELETE FROM export_requests")
        user = a_user(db, admin=False)
        org = user["organization_id"]
        add_scans(db, org, DEMO_DAY, SQLITE_BULK_ROWS)
        ledger = RequestLedger(db)
        store_dir = tmp_path / "exports"
        resources = export_resources(db, store_dir, tmp_path / "work")
        requests_dir = store_dir / "requests"

        earlier = ledger.insert(org, user["id"], "credit_usage_report", "JSON", one_day(DEMO_DAY))
        assert run(instance, tick(instance, db).run_requests[0], resources).success
        before = {p.name: p.read_bytes() for p in (store_dir / request_folder(earlier)).iterdir()}

        doomed = ledger.insert(org, user["id"], "scan_results", "CSV", one_day(DEMO_DAY))
        run_request = tick(instance, db).run_requests[0]
        freezer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FREEZER,
                str(requests_dir),
                f".publish-{path_segment(doomed)}.",
                "60",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert freezer.stdout is not None and freezer.stdout.readline().strip() == "ready"
            outcome = run(instance, run_request, resources)
            freezer.wait(timeout=90)
            frozen = json.loads(freezer.stdout.read().strip().splitlines()[-1])
            line.update(injected=int(frozen["frozen"]), freeze=frozen)
            assert frozen["frozen"], "the publish ended before the freezer could freeze it"
            line["attempts"] = attempt_errors(instance, outcome.run_id)
            assert not outcome.success
            evaluate_failure_sensor(
                export_request_failure_sensor,
                instance,
                outcome.run_id,
                {"source": SourceResource(url=db.url)},
            )
            tick(instance, db)
            row = ledger.get(doomed)
            line["message"] = row["error_message"]
            assert row["status"] == "FAILED" and row["retry_count"] == 2
            assert row["error_message"].startswith("The export could not be written to the store")
            assert_one_sentence_for_people(row["error_message"])
            # While read-only: nothing published for it, everything published verifies.
            assert not (store_dir / request_folder(doomed)).exists()
            frozen_check = check_invariants(db, store_dir, [earlier, doomed], failed={doomed})
            assert_invariants(frozen_check)
        finally:
            if freezer.poll() is None:
                freezer.kill()
                freezer.wait()
            subprocess.run(["chattr", "-i", requests_dir], check=False)

        # Writable again: what the refused publish left, and a new request is served.
        line["leftovers"], line["leftover_bytes"] = hidden_leftovers(
            requests_dir, (f".publish-{path_segment(doomed)}.",)
        )
        after = ledger.insert(org, user["id"], "scan_results", "CSV", one_day(DEMO_DAY))
        assert run(instance, tick(instance, db).run_requests[0], resources).success
        tick(instance, db)
        assert ledger.get(after)["status"] == "COMPLETED"
        assert {
            p.name: p.read_bytes() for p in (store_dir / request_folder(earlier)).iterdir()
        } == before

        found = check_invariants(db, store_dir, [earlier, doomed, after], failed={doomed})
        line.update({k: found[k] for k in ("verify_failures", "stuck", "duplicates", "lost")})
        line.update(flips=found["flips"], folders=found["folders"], outcome=found["statuses"])
        line["summary"] = (
            f"requests/ made immutable (chattr +i) with {frozen['bytes']:,} bytes in the build; "
            f"attempts failed with {', '.join(line['attempts'])}; the request FAILED with "
            f"“{RUN_MENTION.sub('', line['message'])}”; the earlier deliverable unchanged; "
            f"writable again, the next request COMPLETED; {line['leftovers']} hidden entries "
            "of the refused build stay in requests/"
        )
        assert_invariants(found)
        assert found["folders"] == 2


# -- 1. kill -9 of run workers under dagster dev (slow) -------------------------------------


def _proc_stat_ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def step_processes(worker: int) -> list[int]:
    """Processes the run worker started for steps (multiprocess executor), psutil-free."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _proc_stat_ppid(int(name)) == worker:
            command = _cmdline(int(name))
            if "execute_step" in command or "spawn_main" in command:
                found.append(int(name))
    return found


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the run worker reported in its engine events (what reconcile_unfinished reads)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        if data is not None and "pid" in data.metadata:
            return int(data.metadata["pid"].value)
    return None


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def rendering_csv(work_dir: Path, stem: str, at_least: int) -> Callable[[], bool]:
    """True while the deliverable's CSV is being written (at least `at_least` bytes so far)."""

    def check() -> bool:
        for scratch in work_dir.glob(".deliverable-*"):
            with contextlib.suppress(OSError):
                if (scratch / f"{stem}.csv").stat().st_size >= at_least:
                    return True
        return False

    return check


def publishing(store_dir: Path, request_id: str) -> Callable[[], bool]:
    """True while the request's folder is being built aside (a file already in it)."""
    requests_dir = store_dir / "requests"
    prefix = f".publish-{path_segment(request_id)}."

    def check() -> bool:
        try:
            for entry in os.scandir(requests_dir):
                if entry.name.startswith(prefix) and entry.is_dir():
                    if any(f.stat().st_size > 0 for f in os.scandir(entry.path)):
                        return True
        except FileNotFoundError:
            pass
        return False

    return check


def kill_worker_when(
    instance: dg.DagsterInstance,
    ledger: RequestLedger,
    request_id: str,
    home: Path,
    condition: Callable[[], bool],
    timeout: float = 120,
) -> dict[str, Any]:
    """SIGKILL the run worker serving `request_id` (and any step process) once `condition`.

    Returns what was done: `killed` False when the request ended first (the moment missed).
    """
    row = wait_for(
        f"request {request_id} to be PROCESSING",
        lambda: (r := ledger.get(request_id))["status"] != "PENDING" and r,
        timeout,
    )
    if row["status"] != "PROCESSING":
        return {"killed": False, "status": row["status"]}
    run_id = row["run_id"]
    pid = wait_for("the run worker's pid", lambda: worker_pid(instance, run_id), 30)
    # The pid is one of this session's processes (another dagster dev may run here).
    assert _environ(pid).get("DAGSTER_HOME") == str(home), (pid, _cmdline(pid))
    deadline = time.monotonic() + timeout
    checks = 0
    while not condition():
        checks += 1
        if checks % 50 == 0 and ledger.get(request_id)["status"] != "PROCESSING":
            return {"killed": False, "status": ledger.get(request_id)["status"], "run_id": run_id}
        if time.monotonic() > deadline:
            raise AssertionError(f"the moment to kill {request_id} never came")
        time.sleep(0.002)
    steps = step_processes(pid)
    at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for step in steps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(step, signal.SIGKILL)
    return {"killed": True, "pid": pid, "steps": len(steps), "run_id": run_id, "at": at}


@pytest.mark.slow
def test_kill_9_of_run_workers_mid_render_and_mid_publish_under_dagster_dev(tmp_path, monkeypatch):
    from dagster._core.instance.ref import InstanceRef

    from export_pipelines.source import demo_data

    from .dev_server import dagster_dev

    # Two requests inserted together share one run, whatever their size.
    monkeypatch.setenv("EXPORT_OWN_RUN_ROWS", str(10**9))
    today = dt.datetime.now(dt.timezone.utc).date()
    day = today - dt.timedelta(days=1)
    db = SourceDatabase(f"sqlite:///{tmp_path / 'data' / 'source.db'}")
    db.ensure_embedded(demo_data.DemoParams(end_date=today))  # what `make dev` would make
    db.execute("DELETE FROM export_requests")  # the demo's own requests are served elsewhere
    user = a_user(db, admin=False)
    org = user["organization_id"]
    add_scans(db, org, day, DEV_BULK_ROWS)
    ledger = RequestLedger(db)
    store_dir, work_dir, home = tmp_path / "exports", tmp_path / "data" / "work", tmp_path / "home"
    stem = f"scan_results_{org}_{day}_{day}"
    cli_path = str(ROOT / ".venv" / "bin" / "export-pipelines")
    kills: list[dict[str, Any]] = []
    failed: set[str] = set()
    every: list[str] = []

    def ask(export_type: str = "scan_results", fmt: str = "CSV") -> str:
        request_id = ledger.insert(org, user["id"], export_type, fmt, one_day(day))
        every.append(request_id)
        return request_id

    def ended(request_id: str, timeout: float = 90) -> dict:
        return wait_for(
            f"request {request_id} to end",
            lambda: (r := ledger.get(request_id))["status"] in ENDED and r,
            timeout,
        )

    def assert_ended_failed(request_id: str, kill: dict[str, Any]) -> None:
        row = ended(request_id)
        kill["failed_after_s"] = round(time.monotonic() - kill.pop("at"), 1)
        assert row["status"] == "FAILED", row
        failed.add(request_id)

    def verify_cli(path: Path) -> int:
        return subprocess.run([cli_path, "verify", str(path)], capture_output=True).returncode

    with (
        reporting("test_faults::kill_9_run_worker", "run worker SIGKILL (dagster dev)") as line,
        dagster_dev(tmp_path),
    ):
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        try:
            # a. A run of its own, killed while it renders.
            doomed = ask()
            kill = kill_worker_when(
                instance, ledger, doomed, home, rendering_csv(work_dir, stem, 4 << 20)
            )
            assert kill["killed"], kill
            kill = {"where": "render", "request": doomed, **kill}
            kills.append(kill)
            assert_ended_failed(doomed, kill)
            assert not (store_dir / request_folder(doomed)).exists(), "killed before publish"

            # b. A run shared by two requests, killed while its second step renders.
            small, big = ask("credit_usage_report", "JSON"), ask()
            kill = kill_worker_when(
                instance, ledger, big, home, rendering_csv(work_dir, stem, 4 << 20)
            )
            assert kill["killed"], kill
            kill = {"where": "render, shared run", "request": big, **kill}
            kills.append(kill)
            assert_ended_failed(big, kill)
            line["shared_run"] = ledger.get(small)["run_id"] == kill["run_id"]
            small_status = ended(small)["status"]

            # c. A run of its own, killed while it publishes (a new try if the moment is missed).
            missed = 0
            for _ in range(3):
                target = ask()
                kill = kill_worker_when(
                    instance, ledger, target, home, publishing(store_dir, target)
                )
                if kill["killed"]:
                    kill = {"where": "publish", "request": target, **kill}
                    kills.append(kill)
                    assert_ended_failed(target, kill)
                    break
                missed += 1
            line["publish_kills_missed"] = missed
            assert any(k["where"] == "publish" for k in kills), "no kill landed mid-publish"

            # d. The service is still whole: the next request is served.
            healthy = ask()
            assert ended(healthy)["status"] == "COMPLETED"

            # No flip afterwards: the dead requests stay failed while the daemon goes on.
            time.sleep(6)
            line["injected"] = len(kills)
            line["kills"] = [{k: v for k, v in kill.items() if k != "run_id"} for kill in kills]
            line["messages"] = {rid: ledger.get(rid)["error_message"] for rid in failed}
            line["small_request_in_killed_run"] = small_status
            builds = hidden_leftovers(store_dir / "requests", (".publish-",))
            scratch = hidden_leftovers(work_dir, (".deliverable-", ".range-"))
            line.update(
                leftovers=builds[0] + scratch[0],
                leftover_bytes=builds[1] + scratch[1],
                leftover_publish_builds=builds,
                leftover_work_scratch=scratch,
            )
            found = check_invariants(db, store_dir, every, failed=failed, cli_verify=verify_cli)
            line.update({k: found[k] for k in ("verify_failures", "stuck", "duplicates", "lost")})
            line.update(flips=found["flips"], folders=found["folders"], outcome=found["statuses"])
            for kill in kills:
                kill["run_status"] = instance.get_run_by_id(kill["run_id"]).status.value
                kill["run_failure_events"] = len(
                    instance.get_records_for_run(
                        kill["run_id"], of_type=dg.DagsterEventType.RUN_FAILURE
                    ).records
                )
            line["kills"] = [{k: v for k, v in kill.items() if k != "run_id"} for kill in kills]
            waits = [k["failed_after_s"] for k in kills]
            line["summary"] = (
                "kill -9 of the run worker mid-render (a run of its own), mid-render (a run "
                f"shared with a request that had {small_status}), mid-publish"
                + (f" (after {missed} missed)" if missed else "")
                + f": each request FAILED {min(waits)}-{max(waits)} s later and stayed FAILED, "
                f"the other request stayed {small_status}; the next request COMPLETED; "
                f"RUN_FAILURE events per killed run: {[k['run_failure_events'] for k in kills]}; "
                f"left behind: {line['leftovers']} hidden entries, "
                f"{line['leftover_bytes'] / 2**20:.0f} MiB"
            )
            assert_invariants(found)
            assert all(k["run_status"] == "FAILURE" for k in kills), kills
            # The small request of the shared run: served before the kill, or failed with it.
            assert small_status in ("COMPLETED", "FAILED")
            assert ledger.get(small)["status"] == small_status
        finally:
            instance.dispose()
    db.close()
