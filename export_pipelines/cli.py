"""The `export-pipelines` command line (docs/CONTRACT.md §8)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from export_pipelines import settings


def _seed(args: argparse.Namespace) -> int:
    from export_pipelines.source import demo_data
    from export_pipelines.source.database import SourceDatabase

    db = SourceDatabase(args.source or settings.source_url())
    params = demo_data.DemoParams(
        organizations=args.organizations,
        days=args.days,
        events_per_day=args.events_per_day,
        seed=args.seed,
        end_date=dt.date.fromisoformat(args.end_date)
        if args.end_date
        else dt.datetime.now(dt.timezone.utc).date(),
    )
    if db.dialect == "sqlite":
        path = db.sqlite_path
        if path.exists():
            if not args.force:
                print(f"{path} already exists; pass --force to rebuild it", file=sys.stderr)
                return 1
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        db.ensure_embedded(params)
        counts = {
            table: db.scalar(f"SELECT count(*) FROM {table}") for table in demo_data.TABLE_ORDER
        }
    else:
        if args.force:
            for table in reversed(demo_data.TABLE_ORDER):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        db.create_schema()
        counts = db.ingest(demo_data.generate(params))
    for table, count in counts.items():
        print(f"{table:22} {count:>10,}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from export_pipelines.manifest import verify_tree
    from export_pipelines.store import open_store

    store = open_store(args.folder)
    folders, problems = verify_tree(store)
    if folders == 0:
        print(f"no manifest.json found under {args.folder}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {folders} folder(s)", file=sys.stderr)
        return 1
    print(f"OK: {folders} folder(s) verified against their manifests")
    return 0


def _sync_organizations(args: argparse.Namespace) -> int:
    import dagster as dg

    from export_pipelines.defs.partitions import new_organizations, organizations
    from export_pipelines.defs.resources import SourceResource

    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(organizations.name))
    added, unusable = new_organizations(SourceResource(url=settings.source_url()), known)
    for org in unusable:
        print(f"skipped organization id {org!r}: not usable as a partition key", file=sys.stderr)
    if added:
        instance.add_dynamic_partitions(organizations.name, added)
    print(f"{len(added)} organization partition(s) added, {len(known) + len(added)} in all")
    return 0


def _ledger():
    from export_pipelines.defs.resources import SourceResource
    from export_pipelines.requests.ledger import RequestLedger

    return RequestLedger(SourceResource(url=settings.source_url()).database())


def _request(args: argparse.Namespace) -> int:
    import json

    filters = {}
    if args.date_from:
        filters["date_from"] = args.date_from
    if args.date_to:
        filters["date_to"] = args.date_to
    if args.project:
        filters["project_ids"] = args.project
    parameters = json.loads(args.parameters) if args.parameters else None
    request_id = _ledger().insert(
        args.org, args.user, args.type, args.format, filters or None, parameters
    )
    print(request_id)
    return 0


def _status(args: argparse.Namespace) -> int:
    row = _ledger().get(args.request_id)
    if row is None:
        print(f"no export request {args.request_id}", file=sys.stderr)
        return 1
    for key, value in row.items():
        if value is not None:
            print(f"{key:20} {value}")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    import time

    import dagster as dg

    from export_pipelines.catalog import get_spec
    from export_pipelines.defs.backfill import backfill
    from export_pipelines.defs.resources import default_resources

    specs = [get_spec(t) for t in args.type]
    started = time.monotonic()
    runs = backfill(
        dg.DagsterInstance.get(),
        specs,
        args.org,
        dt.date.fromisoformat(args.date_from),
        dt.date.fromisoformat(args.date_to),
        default_resources(),
        args.days_per_run,
    )
    for run in runs:
        state = "ok" if run.success else "FAILED"
        print(f"{run.first} … {run.last}  run {run.run_id}  {state}")
    print(f"{len(runs)} run(s) in {time.monotonic() - started:.1f} s")
    return 0 if all(r.success for r in runs) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    seed = commands.add_parser("seed", help="create the source schema and fill it with demo data")
    seed.add_argument("--source", help="database URL (default: EXPORT_SOURCE_URL or embedded)")
    seed.add_argument("--organizations", type=int, default=3)
    seed.add_argument("--days", type=int, default=30)
    seed.add_argument("--events-per-day", type=int, default=40)
    seed.add_argument("--seed", type=int, default=42)
    seed.add_argument("--end-date", help="last day of data is the day before (default: today)")
    seed.add_argument("--force", action="store_true", help="replace existing demo data")
    seed.set_defaults(handler=_seed)

    verify = commands.add_parser(
        "verify", help="recompute SHA-256 of every file under a folder against its manifests"
    )
    verify.add_argument("folder", help="a local folder or s3://bucket/prefix")
    verify.set_defaults(handler=_verify)

    request = commands.add_parser("request", help="insert an export request (status PENDING)")
    request.add_argument("--org", required=True, help="organization id")
    request.add_argument("--user", required=True, help="id of the user asking")
    request.add_argument("--type", required=True, help="export type, e.g. scan_results")
    request.add_argument(
        "--format", default="CSV", help="CSV, JSON, JSONL, EXCEL, PDF, PARQUET, XML"
    )
    request.add_argument("--date-from", help="first day, YYYY-MM-DD")
    request.add_argument("--date-to", help="last day, YYYY-MM-DD (inclusive)")
    request.add_argument("--project", action="append", help="a project id (repeatable)")
    request.add_argument("--parameters", help='format options as JSON, e.g. {"delimiter": ";"}')
    request.set_defaults(handler=_request)

    status = commands.add_parser("status", help="show an export request")
    status.add_argument("request_id")
    status.set_defaults(handler=_status)

    fill = commands.add_parser(
        "backfill", help="materialize export types for one organization over a range of days"
    )
    fill.add_argument("--type", action="append", required=True, help="export type (repeatable)")
    fill.add_argument("--org", required=True, help="organization id")
    fill.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD")
    fill.add_argument("--to", dest="date_to", required=True, help="last day, YYYY-MM-DD")
    fill.add_argument("--days-per-run", type=int, default=31, help="partitions per run (31)")
    fill.set_defaults(handler=_backfill)

    sync = commands.add_parser(
        "sync-orgs", help="add the source's organizations as partitions in $DAGSTER_HOME"
    )
    sync.set_defaults(handler=_sync_organizations)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
