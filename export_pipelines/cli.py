"""The `export-pipelines` command line (docs/CONTRACT.md §8).

It works from any folder: without EXPORT_* variables it uses the project it belongs to
(`settings.project_dir`), and `export-pipelines config` says what that is. Commands that
read the embedded database never create it: they say how to.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence

from export_pipelines import settings


class CliError(Exception):
    """A sentence for the person at the terminal (exit code 1, no traceback)."""


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


def _instance():
    """The Dagster instance of $DAGSTER_HOME, or of the project's `.dagster_home`."""
    import shutil

    import dagster as dg

    home = settings.dagster_home()
    if not home.is_dir():
        if settings.is_set("DAGSTER_HOME"):
            raise CliError(f"DAGSTER_HOME is {home}, which is not a folder: create it or unset it")
        home.mkdir(parents=True)
        config = settings.project_dir() / "dagster.yaml"
        if config.exists():
            shutil.copy(config, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _sync_organizations(args: argparse.Namespace) -> int:
    from export_pipelines.defs.partitions import new_organizations, organizations
    from export_pipelines.defs.resources import SourceResource

    instance = _instance()
    known = set(instance.get_dynamic_partitions(organizations.name))
    added, unusable = new_organizations(SourceResource(url=settings.source_url()), known)
    for org in unusable:
        print(f"skipped organization id {org!r}: not usable as a partition key", file=sys.stderr)
    if added:
        from export_pipelines.source import directory

        instance.add_dynamic_partitions(organizations.name, added)
        names = directory.organization_names(_database(), added)
        for org in added:
            print(f"added {org}  {names.get(org, '')}".rstrip())
    print(f"{len(added)} organization partition(s) added, {len(known) + len(added)} in all")
    return 0


def _source_description() -> str:
    from export_pipelines.source.database import redact_url

    if settings.is_set(settings.SOURCE_URL_VAR):
        return f"{redact_url(settings.source_url())} (EXPORT_SOURCE_URL)"
    return f"{settings.default_source_url()} (the embedded default of {settings.project_dir()})"


def _database():
    """The source database as configured; the embedded one must exist already."""
    from export_pipelines.source.database import SourceDatabase

    db = SourceDatabase(settings.source_url())
    if db.dialect == "sqlite" and not db.sqlite_path.exists():
        raise CliError(
            f"there is no database at {db.sqlite_path}: run `make dev` or "
            "`export-pipelines seed` in the project first, or set EXPORT_SOURCE_URL "
            "(`export-pipelines config` shows what is used)"
        )
    return db


def _ledger():
    from export_pipelines.requests.ledger import RequestLedger

    return RequestLedger(_database())


def _config(args: argparse.Namespace) -> int:
    from export_pipelines.source.database import redact_url

    store = settings.store_url()
    rows = [
        ("project", str(settings.project_dir())),
        ("source", _source_description()),
        (
            "store",
            redact_url(store) + ("" if settings.is_set(settings.STORE_URL_VAR) else " (default)"),
        ),
        ("work area", str(settings.work_dir())),
        ("DAGSTER_HOME", str(settings.dagster_home())),
        ("partitions from", settings.partitions_start()),
    ]
    for key, value in rows:
        print(f"{key:16} {value}")
    return 0


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """Rows as aligned text columns, headed by the given labels."""
    cells = [[label for _, label in columns]]
    cells += [["" if r.get(key) is None else str(r[key]) for key, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _orgs(args: argparse.Namespace) -> int:
    from export_pipelines.source import directory

    rows = directory.organizations(_database())
    _table(rows, [("id", "ID"), ("name", "NAME"), ("plan", "PLAN"), ("users", "USERS")])
    return 0


def _users(args: argparse.Namespace) -> int:
    from export_pipelines.source import directory

    rows = directory.users(_database(), args.org)
    for row in rows:
        row["admin"] = "admin" if row["admin"] else ""
    _table(
        rows,
        [
            ("id", "ID"),
            ("name", "NAME"),
            ("email", "EMAIL"),
            ("admin", "ROLE"),
            ("organization", "ORGANIZATION"),
        ],
    )
    return 0


def _subscriptions(args: argparse.Namespace) -> int:
    from export_pipelines.source import directory

    rows = directory.subscriptions(_database(), args.org)
    for row in rows:
        row["active"] = "active" if row["active"] else "paused"
    _table(
        rows,
        [
            ("id", "ID"),
            ("export_type", "TYPE"),
            ("format", "FORMAT"),
            ("cadence", "CADENCE"),
            ("active", "STATE"),
            ("owner", "OWNER"),
            ("organization", "ORGANIZATION"),
        ],
    )
    return 0


def _request(args: argparse.Namespace) -> int:
    import json

    filters = {}
    if args.date_from:
        filters["date_from"] = args.date_from
    if args.date_to:
        filters["date_to"] = args.date_to
    if args.project:
        filters["project_ids"] = args.project
    try:
        parameters = json.loads(args.parameters) if args.parameters else None
    except ValueError:
        raise CliError('--parameters must be a JSON object, e.g. \'{"delimiter": ";"}\'') from None
    ledger = _ledger()
    refusal = _refusal(ledger.db, args, filters or None, parameters)
    if refusal:
        raise CliError(f"not requested: {refusal}")
    request_id = ledger.insert(
        args.org, args.user, args.type, args.format, filters or None, parameters
    )
    print(request_id)
    print(
        f"PENDING: the request sensor serves it within seconds while `make dev` (or the "
        f"daemon) runs; follow it with `export-pipelines status {request_id}`",
        file=sys.stderr,
    )
    return 0


def _refusal(db, args: argparse.Namespace, filters: dict | None, parameters: dict | None) -> str:
    """What the request sensor would refuse this request for, checked now with the same
    rules (requests/validation.py), or "" when it would accept it."""
    import json

    from export_pipelines.requests.ledger import utc_now
    from export_pipelines.requests.validation import RequestRejected, validate

    row = {
        "id": "(new request)",
        "export_type": args.type,
        "export_format": args.format,
        "user_id": args.user,
        "organization_id": args.org,
        "filters": None if filters is None else json.dumps(filters),
        "parameters": None if parameters is None else json.dumps(parameters),
        "created_at": utc_now(),
    }
    try:
        validate(row, db, utc_now())
    except RequestRejected as refused:
        return str(refused)
    return ""


def _status(args: argparse.Namespace) -> int:
    row = _ledger().get(args.request_id)
    if row is None:
        raise CliError(f"no export request {args.request_id} in {_source_description()}")
    for key, value in row.items():
        if value is not None:
            print(f"{key:20} {value}")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    import time

    from export_pipelines.catalog import get_spec
    from export_pipelines.defs.backfill import backfill
    from export_pipelines.defs.resources import default_resources

    try:
        specs = [get_spec(t) for t in args.type]
        first, last = dt.date.fromisoformat(args.date_from), dt.date.fromisoformat(args.date_to)
    except (KeyError, ValueError) as error:
        raise CliError(str(error).strip('"')) from None
    started = time.monotonic()
    try:
        runs = backfill(
            _instance(), specs, args.org, first, last, default_resources(), args.days_per_run
        )
    except ValueError as error:  # the range itself: a sentence, not a traceback
        raise CliError(str(error)) from None
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

    config = commands.add_parser("config", help="show the database, store and folders used")
    config.set_defaults(handler=_config)

    orgs = commands.add_parser("orgs", help="list organizations: id, name, plan, users")
    orgs.set_defaults(handler=_orgs)

    users = commands.add_parser("users", help="list users: id, name, email, role")
    users.add_argument("--org", help="only this organization's users")
    users.set_defaults(handler=_users)

    subscriptions = commands.add_parser("subscriptions", help="list report subscriptions")
    subscriptions.add_argument("--org", help="only this organization's subscriptions")
    subscriptions.set_defaults(handler=_subscriptions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"export-pipelines: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`… | head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
