"""Who may receive which export: the permission matrix (docs/CONTRACT.md §6, §7; README).

Every cell of {admin, member, member of another organization, unknown user, former admin
(demoted), former member (moved to another organization)} × every export type of the
catalog × {request, subscription} is checked against the documented rule, on SQLite and on
PostgreSQL:

- requests: a real `export_requests` row (inserted with `RequestLedger.insert`, read back)
  through `validate`; a sample of cells also end to end through `export_requests_sensor`
  (refused: FAILED with a sentence naming the reason; allowed: exactly one run);
- subscriptions: a real `report_subscriptions` row through `validate_subscription`.

The "former" users lose their right *after* the row is created (UPDATE users): the check
is against the database as it is at delivery. Every cell uses users of its own, in a
database of this module's own (the session's shared `postgres_source` is left untouched).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass

import dagster as dg
import pytest

from export_pipelines.catalog import CATALOG
from export_pipelines.defs.requests import (
    ORG_TAG,
    REQUEST_TAG,
    USER_TAG,
    export_requests_sensor,
    serve_export_request_job,
    serve_export_requests_job,
)
from export_pipelines.defs.resources import SourceResource
from export_pipelines.requests.ledger import RequestLedger, utc_now
from export_pipelines.requests.validation import (
    RequestRejected,
    validate,
    validate_subscription,
)
from export_pipelines.source.database import SourceDatabase

from .conftest import organization_ids, scratch_postgres_database, seed

# -- the documented rules ------------------------------------------------------------------

# README "Export catalog", column "access" (and CONTRACT §6 for the admin-only types).
DOCUMENTED_ACCESS = {
    "projects_summary": "member",
    "project_detailed": "member",
    "scan_results": "member",
    "scan_history": "member",
    "generated_content": "member",
    "content_analytics": "member",
    "usage_analytics": "admin",
    "credit_usage_report": "member",
    "audit_log_export": "admin",
    "user_data_export": "self",
    "organization_bundle": "admin",
}

ROLES = (
    "admin",  # an admin of the organization
    "member",  # a member, not an admin
    "other_org_member",  # an admin of another organization (rights elsewhere count for nothing)
    "unknown",  # no such user
    "former_admin",  # an admin when the row was created, demoted before delivery
    "former_member",  # an admin of the organization when the row was created, then moved
)

# The rule per access kind: role -> allowed? The same for a request (by its requester) and
# a subscription (by its owner, at every delivery: CONTRACT §7 "exactly like a request").
# `self` types are split by whose data is asked for: the user's own, or someone else's.
RULES = {
    "member": {
        "admin": True,
        "member": True,
        "other_org_member": False,
        "unknown": False,
        "former_admin": True,
        "former_member": False,
    },
    "admin": {
        "admin": True,
        "member": False,
        "other_org_member": False,
        "unknown": False,
        "former_admin": False,
        "former_member": False,
    },
    "self/own data": {
        "admin": True,
        "member": True,
        "other_org_member": False,
        "unknown": False,
        "former_admin": True,
        "former_member": False,
    },
    "self/someone else's data": {
        "admin": False,
        "member": False,
        "other_org_member": False,
        "unknown": False,
        "former_admin": False,
        "former_member": False,
    },
}

# What a refusal must say (a fragment of the sentence), by cause.
REASONS = {
    "not a member": "is not a member of organization",
    "no such user": "does not exist",
    "admins only": "is available to organization admins only",
    "request for someone else": "can only be requested by a user for their own data",
    "subscription for someone else": "can only be delivered to its own subject",
}
SUBSCRIPTION_REFUSAL = "the subscription's owner may no longer receive this report"

KINDS = ("request", "subscription")
# Inside the demo data (conftest.DEMO: 2026-03-01 .. 2026-03-04), long past.
FIRST, LAST = dt.date(2026, 3, 3), dt.date(2026, 3, 4)
FILTERS = {"date_from": FIRST.isoformat(), "date_to": LAST.isoformat()}


@dataclass(frozen=True)
class Cell:
    kind: str  # request | subscription
    export_type: str
    access: str  # a key of RULES
    role: str

    @property
    def id(self) -> str:
        whose = f"[{self.access.split('/')[1]}]" if "/" in self.access else ""
        return f"{self.kind}-{self.export_type}{whose}-{self.role}"

    @property
    def allowed(self) -> bool:
        return RULES[self.access][self.role]

    @property
    def reason(self) -> str | None:
        """The fragment a refusal must contain: who the user is is checked first."""
        if self.allowed:
            return None
        if self.role == "unknown":
            return REASONS["no such user"]
        if self.role in ("other_org_member", "former_member"):
            return REASONS["not a member"]
        if self.access == "admin":
            return REASONS["admins only"]
        return REASONS[f"{self.kind} for someone else"]


def accesses_of(export_type: str) -> tuple[str, ...]:
    access = DOCUMENTED_ACCESS[export_type]
    return ("self/own data", "self/someone else's data") if access == "self" else (access,)


CELLS = [
    Cell(kind, export_type, access, role)
    for kind in KINDS
    for export_type in sorted(CATALOG)
    for access in accesses_of(export_type)
    for role in ROLES
]

# End to end through the sensor: every role × one type of each access kind. The sensor
# serves small requests of one organization in one shared run and an organization bundle
# in a run of its own (CONTRACT §6): the sample takes both ways.
SENSOR_TYPES = {
    "member": "scan_results",
    "admin": "organization_bundle",
    "self/own data": "user_data_export",
    "self/someone else's data": "user_data_export",
}
SENSOR_CELLS = [c for c in CELLS if c.kind == "request" and c.export_type == SENSOR_TYPES[c.access]]

ENGINES = ("sqlite", "postgresql")
RESULTS: Counter = Counter()


# -- databases and users -------------------------------------------------------------------


@pytest.fixture(scope="module")
def databases(tmp_path_factory, demo_sqlite_template):
    """This module's own copies of the demo data: it adds users and changes their rights.

    Not the session's `postgres_source` (other tests read its users and requests); the
    PostgreSQL one is made on first use and dropped at the end of the module.
    """
    path = tmp_path_factory.mktemp("permissions") / "source.db"
    path.write_bytes(demo_sqlite_template.read_bytes())
    made = {"sqlite": SourceDatabase(f"sqlite:///{path}")}
    with contextlib.ExitStack() as stack:

        def get(engine: str) -> SourceDatabase:
            if engine not in made:
                url = stack.enter_context(scratch_postgres_database())  # fails in CI
                made[engine] = seed(SourceDatabase(url))
            return made[engine]

        yield get


@pytest.fixture(scope="module", autouse=True)
def record_counts():
    """One JSON line of counts for the reliability report, when asked for."""
    yield
    out = os.environ.get("EXPORT_RELIABILITY_OUT")
    if not out or not RESULTS:
        return

    def total(what: str, engine: str | None = None, allowed: bool | None = None) -> int:
        return sum(
            n
            for (w, e, a), n in RESULTS.items()
            if w == what and engine in (None, e) and allowed in (None, a)
        )

    line = {
        "test": "test_permissions",
        "cells_checked": total("matrix"),
        "allowed": total("matrix", allowed=True),
        "refused": total("matrix", allowed=False),
        "by_engine": {
            engine: {
                "cells": total("matrix", engine),
                "allowed": total("matrix", engine, True),
                "refused": total("matrix", engine, False),
            }
            for engine in ENGINES
        },
        "sensor_cells_checked": total("sensor"),
        "sensor_allowed": total("sensor", allowed=True),
        "sensor_refused": total("sensor", allowed=False),
    }
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Cast:
    """Who a cell's row names, and the organizations, as they are when the row is created."""

    org: str
    other_org: str
    user_id: str
    bystander: str  # another member of `org`: their data is not the user's


def cast_users(db: SourceDatabase, cells: list[Cell], label: str) -> dict[str, Cast]:
    """A user of its own for every cell (one INSERT): the "former" ones are changed later."""
    org, other_org = organization_ids(db)[:2]
    tag = uuid.uuid4().hex[:8]
    bystander = f"perm-{label}-{tag}-bystander"
    users = [(bystander, org, False)]
    casts = {}
    for n, cell in enumerate(cells):
        user_id = f"perm-{label}-{tag}-{n}-{cell.role}"
        if cell.role == "other_org_member":
            users.append((user_id, other_org, True))
        elif cell.role != "unknown":  # an unknown user has no row
            # former_admin and former_member are admins of `org` until after the row exists.
            admin = cell.role in ("admin", "former_admin", "former_member")
            users.append((user_id, org, admin))
        casts[cell.id] = Cast(org, other_org, user_id, bystander)
    values, params = [], {"yes": True, "at": dt.datetime(2026, 1, 1, 12, 0)}
    for i, (user_id, user_org, admin) in enumerate(users):
        values.append(f"(:id{i}, :org{i}, :email{i}, :name{i}, :admin{i}, :yes, :at, NULL)")
        params.update(
            {
                f"id{i}": user_id,
                f"org{i}": user_org,
                f"email{i}": f"{user_id}@example.org",
                f"name{i}": f"Permission {user_id}",
                f"admin{i}": admin,
            }
        )
    db.execute(
        "INSERT INTO users (id, organization_id, email, full_name, is_admin, is_verified, "
        "created_at, last_login_at) VALUES " + ", ".join(values),
        params,
    )
    return casts


def lose_rights(db: SourceDatabase, cells: list[Cell], casts: dict[str, Cast]) -> None:
    """What happened to the "former" users between their rows' creation and delivery."""
    for role, assignment in (
        ("former_admin", "is_admin = :no"),
        ("former_member", "organization_id = :other"),
    ):
        ids = [casts[c.id].user_id for c in cells if c.role == role]
        if not ids:
            continue
        other_org = casts[cells[0].id].other_org
        db.execute(
            f"UPDATE users SET {assignment} WHERE id IN ("
            + ", ".join(f":u{i}" for i in range(len(ids)))
            + ")",
            {"no": False, "other": other_org, **{f"u{i}": u for i, u in enumerate(ids)}},
        )


def filters_of(cell: Cell, who: Cast) -> dict:
    if cell.access == "self/someone else's data":
        return {**FILTERS, "user_id": who.bystander}
    return dict(FILTERS)


def insert_request(db: SourceDatabase, cell: Cell, who: Cast) -> str:
    return RequestLedger(db).insert(
        who.org,
        who.user_id,
        cell.export_type,
        "CSV",
        filters=filters_of(cell, who),
        created_at=utc_now(),
    )


def subscription_values(cell: Cell, who: Cast, i: int) -> tuple[str, str, dict]:
    sub_id = str(uuid.uuid4())
    # The delivered period replaces date filters; only whose data it is stays.
    filters = {k: v for k, v in filters_of(cell, who).items() if k == "user_id"}
    values = f"(:id{i}, :org{i}, :user{i}, :type{i}, 'CSV', 'daily', :to, :f{i}, :yes, NULL, :at)"
    params = {
        f"id{i}": sub_id,
        f"org{i}": who.org,
        f"user{i}": who.user_id,
        f"type{i}": cell.export_type,
        f"f{i}": json.dumps(filters) if filters else None,
    }
    return sub_id, values, params


def insert_subscriptions(db: SourceDatabase, rows: list[tuple[str, str, dict]]) -> None:
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES " + ", ".join(values for _, values, _ in rows),
        {
            "to": json.dumps(["reports@example.org"]),
            "yes": True,
            "at": dt.datetime(2026, 3, 1, 9, 30),
            **{k: v for _, _, params in rows for k, v in params.items()},
        },
    )


def check(db: SourceDatabase, cell: Cell, row_id: str) -> str | None:
    """Validate the row as read back from its table now; None if allowed, else the reason."""
    try:
        if cell.kind == "request":
            row = RequestLedger(db).get(row_id)
            assert row is not None, row_id
            validate(row, db, utc_now())
        else:
            (sub,) = db.fetch_rows(
                "SELECT * FROM report_subscriptions WHERE id = :id", {"id": row_id}
            )
            validate_subscription(sub, db, FIRST, LAST)
    except RequestRejected as refused:
        return str(refused)
    return None


def assert_outcome(cell: Cell, refusal: str | None, when: str = "at delivery") -> None:
    if cell.allowed:
        assert refusal is None, f"{cell.id}: documented as allowed, refused {when}: {refusal}"
        return
    assert refusal is not None, f"{cell.id}: documented as refused, allowed {when}"
    assert cell.reason in refusal, f"{cell.id}: refusal {refusal!r} lacks {cell.reason!r}"
    if cell.kind == "subscription" and cell.reason in (
        REASONS["not a member"],
        REASONS["no such user"],
        REASONS["admins only"],
    ):
        assert refusal.startswith(SUBSCRIPTION_REFUSAL), refusal


# -- the matrix ----------------------------------------------------------------------------


@dataclass
class Matrix:
    """Every cell's row, created while its user still had their rights, then the change."""

    db: SourceDatabase
    rows: dict[str, str]  # cell id -> request or subscription id
    before: dict[str, str | None]  # "former" cells: the outcome before the change
    refused_by_schema: dict[str, str]  # cell id -> the database's refusal of the row


def build_matrix(db: SourceDatabase) -> Matrix:
    casts = cast_users(db, CELLS, "matrix")
    rows: dict[str, str] = {}
    refused_by_schema: dict[str, str] = {}
    subscriptions = []
    for n, cell in enumerate(CELLS):
        who = casts[cell.id]
        if cell.kind == "request":
            rows[cell.id] = insert_request(db, cell, who)
            continue
        values = subscription_values(cell, who, n)
        if cell.role == "unknown" and db.dialect == "postgresql":
            # report_subscriptions.user_id REFERENCES users(id): PostgreSQL refuses the
            # row itself, so a subscription of an unknown owner never reaches a delivery.
            try:
                insert_subscriptions(db, [values])
            except Exception as error:  # noqa: BLE001 - the driver's integrity error
                refused_by_schema[cell.id] = str(error)
                continue
        subscriptions.append(values)
        rows[cell.id] = values[0]
    insert_subscriptions(db, subscriptions)
    before = {}
    for cell in CELLS:
        if cell.role.startswith("former_"):
            try:
                before[cell.id] = check(db, cell, rows[cell.id])
            except Exception as error:  # noqa: BLE001 - reported by the cell itself
                before[cell.id] = f"unexpected {type(error).__name__}: {error}"
    lose_rights(db, CELLS, casts)
    return Matrix(db, rows, before, refused_by_schema)


@pytest.fixture(scope="module")
def matrices(databases):
    made: dict[str, Matrix] = {}

    def get(engine: str) -> Matrix:
        if engine not in made:
            made[engine] = build_matrix(databases(engine))
        return made[engine]

    return get


def test_the_documented_table_covers_the_catalog():
    assert set(DOCUMENTED_ACCESS) == set(CATALOG), "every export type has a documented rule"
    for export_type, access in DOCUMENTED_ACCESS.items():
        assert CATALOG[export_type].access.value == access, (
            f"{export_type}: the spec says {CATALOG[export_type].access.value}, "
            f"the README says {access}"
        )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_permission_matrix(matrices, engine, cell):
    matrix = matrices(engine)
    if cell.id in matrix.refused_by_schema:
        assert "foreign key" in matrix.refused_by_schema[cell.id].lower()
        assert not cell.allowed
        RESULTS["matrix", engine, False] += 1
        return
    if cell.role.startswith("former_"):
        # Until the change they were admins of the organization.
        before = Cell(cell.kind, cell.export_type, cell.access, "admin")
        assert_outcome(before, matrix.before[cell.id], when="before the change")

    refusal = check(matrix.db, cell, matrix.rows[cell.id])
    assert_outcome(cell, refusal)
    RESULTS["matrix", engine, refusal is None] += 1


# -- a sample end to end through the request sensor ------------------------------------------


@dataclass
class Served:
    """One sensor tick over the sample's rows, then a second tick, and the rows after."""

    casts: dict[str, Cast]
    rows: dict[str, dict]  # cell id -> its export_requests row after the first tick
    launched: dict[str, list[dg.RunRequest]]  # request id -> the first tick's runs serving it
    launched_again: dict[str, list[dg.RunRequest]]  # the same, of the second tick
    audit: dict[str, list[str]]  # request id -> its audit actions


def tick(instance: dg.DagsterInstance, db: SourceDatabase) -> list[dg.RunRequest]:
    with dg.build_sensor_context(
        instance=instance, resources={"source": SourceResource(url=db.url)}
    ) as context:
        result = export_requests_sensor(context)
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests)


def request_ids_of(run_request: dg.RunRequest) -> list[str]:
    """The requests a run serves: its own one, or a shared run's list (CONTRACT §6)."""
    ops = run_request.run_config["ops"]
    if run_request.job_name == serve_export_request_job.name:
        return [ops["serve_export_request"]["config"]["request_id"]]
    assert run_request.job_name == serve_export_requests_job.name, run_request.job_name
    return list(ops["waiting_requests"]["config"]["request_ids"])


def by_request(run_requests: list[dg.RunRequest]) -> dict[str, list[dg.RunRequest]]:
    served: dict[str, list[dg.RunRequest]] = {}
    for run_request in run_requests:
        for request_id in request_ids_of(run_request):
            served.setdefault(request_id, []).append(run_request)
    return served


def serve_sample(db: SourceDatabase) -> Served:
    # Only the sample's rows wait: the matrix's and the demo's are not the sensor's here.
    db.execute(
        "UPDATE export_requests SET status = :failed WHERE status = :pending",
        {"failed": "FAILED", "pending": "PENDING"},
    )
    casts = cast_users(db, SENSOR_CELLS, "sensor")
    ids = {c.id: insert_request(db, c, casts[c.id]) for c in SENSOR_CELLS}
    lose_rights(db, SENSOR_CELLS, casts)
    with dg.instance_for_test() as instance:
        first = tick(instance, db)
        again = tick(instance, db)
    ledger = RequestLedger(db)
    audit: dict[str, list[str]] = {}
    for entry in db.fetch_rows(
        "SELECT target_id, action FROM audit_log WHERE target_type = :t", {"t": "export_request"}
    ):
        audit.setdefault(entry["target_id"], []).append(entry["action"])
    return Served(
        casts=casts,
        rows={cell_id: ledger.get(request_id) for cell_id, request_id in ids.items()},
        launched=by_request(first),
        launched_again=by_request(again),
        audit=audit,
    )


@pytest.fixture(scope="module")
def served(databases):
    made: dict[str, Served] = {}

    def get(engine: str) -> Served:
        if engine not in made:
            made[engine] = serve_sample(databases(engine))
        return made[engine]

    return get


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", SENSOR_CELLS, ids=[c.id for c in SENSOR_CELLS])
def test_permission_through_the_request_sensor(served, engine, cell):
    outcome = served(engine)
    row = outcome.rows[cell.id]
    request_id = row["id"]
    launched = outcome.launched.get(request_id, [])
    if cell.allowed:
        assert len(launched) == 1, f"{cell.id}: {len(launched)} runs serve it, not one"
        (run_request,) = launched
        assert run_request.tags[ORG_TAG] == row["organization_id"]
        if run_request.job_name == serve_export_request_job.name:  # a run of its own
            assert run_request.run_key == request_id
            assert run_request.tags[REQUEST_TAG] == request_id
            assert run_request.tags[USER_TAG] == outcome.casts[cell.id].user_id
        assert row["status"] == "PENDING" and row["started_at"] is not None, row
        assert row["error_message"] is None, row["error_message"]
        assert request_id not in outcome.launched_again, f"{cell.id}: launched twice"
        assert request_id not in outcome.audit, "nothing is recorded before the run ends"
    else:
        assert launched == [], f"{cell.id}: a refused request launched a run"
        assert request_id not in outcome.launched_again, f"{cell.id}: launched later"
        assert row["status"] == "FAILED", f"{cell.id}: {row['status']}"
        assert cell.reason in row["error_message"], f"{cell.id}: {row['error_message']!r}"
        assert row["run_id"] is None
        assert outcome.audit.get(request_id) == ["export.failed"], outcome.audit.get(request_id)
    RESULTS["sensor", engine, cell.allowed] += 1
