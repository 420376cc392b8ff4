"""Extraction from the source database: our extract stage on both engines, and `psql \\copy`.

    python benchmarks/bench_extract.py [--rows 1000000 5000000] [--repeat 3] [--out FILE]
                                       [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
                                       [--keep]

For each row count, the demo generator fills one organization's one day with that many
scans (and the audits, projects, users they join to; the other tables are not generated)
into a scratch PostgreSQL database and an embedded SQLite file, then both are ANALYZEd.
Every measurement then runs in a fresh process:

- ours: `extract_partition` of `scan_results` for that (organization, day), i.e. the
  export's query streamed into the stage's Parquet file; wall time, and the process's peak
  RSS (VmHWM) with the floor it started from (Python, pyarrow, the drivers imported);
- `psql -c "\\copy (the same typed query) to '/dev/null'"`: wall time (text COPY, what a
  person would try first; it writes nothing, we write zstd Parquet).

Up to a million rows the fastest of `--repeat` runs is kept; larger counts run once. The
scratch databases and files are dropped at the end (with `--keep` they are kept, named by
row count, and reused by the next run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_requests import machine  # noqa: E402
from export_pipelines.catalog import CATALOG  # noqa: E402
from export_pipelines.catalog.spec import Window  # noqa: E402
from export_pipelines.pipeline.prepare import query_parameters  # noqa: E402
from export_pipelines.source import demo_data  # noqa: E402
from export_pipelines.source.database import SourceDatabase, quote_ident  # noqa: E402

DAY = dt.date(2026, 1, 1)
# The tables scan_results reads, in the generator's order (it yields them first).
TABLES = ("organizations", "users", "projects", "audits", "scan_results")
SPEC = CATALOG["scan_results"]
REPEAT_UP_TO = 1_000_000  # larger row counts are measured once (minutes per run)


# --- child side: one measurement in a fresh process ----------------------------------------


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would carry the parent's too)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(url: str) -> None:
    from export_pipelines.pipeline.naming import ExportPartition
    from export_pipelines.pipeline.prepare import extract_partition
    from export_pipelines.pipeline.workarea import WorkArea

    db = SourceDatabase(url)
    organization_id = db.scalar("SELECT id FROM organizations")
    db.close()
    floor = _peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as folder:
        start = time.perf_counter()
        result = extract_partition(
            SPEC, db, WorkArea(Path(folder)), ExportPartition(organization_id, DAY)
        )
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {"rows": result.rows, "seconds": seconds, "rss_mb": _peak_rss_mb(), "floor_mb": floor}
        )
    )


def measure_ours(url: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", url], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the reference: psql \copy of the same query --------------------------------------------


def literal_query(db: SourceDatabase) -> str:
    """The typed extract query with its values written as SQL literals, for psql only.

    psql's `\\copy` takes no parameters; the values are ours (an id, two timestamps).
    """
    organization_id = db.scalar("SELECT id FROM organizations")
    params = query_parameters(SPEC, Window.for_days(DAY, DAY), organization_id)
    query, values = db.bind(db.typed(SPEC.query, SPEC.columns), params)
    for number, value in reversed(list(enumerate(values, 1))):
        query = query.replace(f"${number}", "'" + str(value).replace("'", "''") + "'")
    return " ".join(query.split())


def measure_copy(url: str, query: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "psql",
            url,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"\\copy ({query}) to '/dev/null'",
        ],
        check=True,
    )
    return time.perf_counter() - start


# --- seeding ---------------------------------------------------------------------------------


def seed(db: SourceDatabase, rows: int) -> None:
    """One organization, one day of `rows` scans, and only the tables scan_results reads."""
    db.create_schema()
    params = demo_data.DemoParams(
        organizations=1, days=1, events_per_day=rows, end_date=DAY + dt.timedelta(days=1)
    )
    chunks = itertools.takewhile(lambda chunk: chunk[0] in TABLES, demo_data.generate(params))
    db.ingest(chunks)
    for table in TABLES:
        db.execute(f"ANALYZE {table}")


def _seeded(db: SourceDatabase, rows: int) -> bool:
    with contextlib.suppress(Exception):
        return db.scalar("SELECT count(*) FROM scan_results") == rows
    return False


def _admin(admin_url: str, statement: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(admin_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(statement)


@contextlib.contextmanager
def sources(admin_url: str, rows: int, keep: bool, folder: Path) -> Iterator[list[SourceDatabase]]:
    """A seeded PostgreSQL database and SQLite file of `rows` scans; dropped unless `keep`."""
    name = f"bench_extract_{rows}" + ("" if keep else f"_{os.getpid()}")
    postgres = SourceDatabase(admin_url.rsplit("/", 1)[0] + f"/{name}")
    sqlite = SourceDatabase(f"sqlite:///{folder / f'{name}.db'}")
    try:
        if not _seeded(postgres, rows):
            _admin(admin_url, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            _admin(admin_url, f"CREATE DATABASE {quote_ident(name)}")
            seed(postgres, rows)
        if not _seeded(sqlite, rows):
            sqlite.sqlite_path.unlink(missing_ok=True)
            seed(sqlite, rows)
        postgres.close()
        yield [postgres, sqlite]
    finally:
        postgres.close()
        if not keep:
            _admin(admin_url, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{sqlite.sqlite_path}{suffix}").unlink(missing_ok=True)


# --- the report ------------------------------------------------------------------------------


def run(rows_list: list[int], repeat: int, admin_url: str, keep: bool) -> str:
    folder = Path(tempfile.gettempdir()) if keep else Path(tempfile.mkdtemp(prefix="bench-x-"))
    load_before = os.getloadavg()
    lines = [
        "| rows | engine | extract stage | peak RSS (floor) | `psql \\copy` | ratio |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for rows in rows_list:
        times = repeat if rows <= REPEAT_UP_TO else 1
        with sources(admin_url, rows, keep, folder) as (postgres, sqlite):
            query = literal_query(postgres)
            copy = min(measure_copy(postgres.url, query) for _ in range(times))
            for engine, db in (("PostgreSQL", postgres), ("SQLite", sqlite)):
                runs = [measure_ours(db.url) for _ in range(times)]
                assert all(r["rows"] == rows for r in runs), runs
                best = min(r["seconds"] for r in runs)
                peak = max(r["rss_mb"] for r in runs)
                floor = min(r["floor_mb"] for r in runs)
                ratio = f"{best / copy:.2f}×" if engine == "PostgreSQL" else "—"
                copied = f"{copy:.2f} s" if engine == "PostgreSQL" else "—"
                lines.append(
                    f"| {rows:,} | {engine} | {best:.2f} s | **{peak:.0f} MB** ({floor:.0f}) "
                    f"| {copied} | {ratio} |"
                )
            print(lines[-2], lines[-1], sep="\n", flush=True)
    load_after = os.getloadavg()
    server_version = SourceDatabase(admin_url).scalar("SELECT current_setting('server_version')")
    header = [
        "## Extraction (`scan_results/extract`, one organization, one day)",
        "",
        f"{dt.date.today()}, {machine()}; PostgreSQL "
        f"{server_version} on the same machine. "
        f"Load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end.",
        f"Fastest of {repeat} fresh processes up to {REPEAT_UP_TO:,} rows, one run above; "
        "peak RSS is the highest of the runs. `benchmarks/bench_extract.py`.",
        "",
    ]
    return "\n".join(header + lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the seeded data")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    text = run(sorted(args.rows), args.repeat, args.admin_url, args.keep)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
