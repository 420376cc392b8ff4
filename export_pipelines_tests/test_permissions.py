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

import datetime as dt
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass

import dagster as dg
import pytest

from export_pipelines.catalog import CATALOG
from export_pipelines.defs.requests import REQUEST_TAG, USER_TAG, export_requests_sensor
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

# End to end through the sensor: every role × one type of each access kind.
SENSOR_TYPES = {
    "member": "scan_results",
    "admin": "audit_log_export",
    "self/own data": "user_data_export",
    "self/someone else's data": "user_data_export",
}
SENSOR_CELLS = [
    c
    for c in CELLS
    if c.kind == "request" and SENSOR_TYPES[c.access] == c.export_type and c.access in SENSOR_TYPES
]

ENGINES = ("sqlite", "postgresql")
RESULTS: Counter = Counter()


# -- databases and users -------------------------------------------------------------------


@pytest.fixture(scope="module")
def databases(tmp_path_factory, demo_sqlite_template):
    """This module's own copies of the demo data: it adds users and changes their rights."""
    made: dict[str, SourceDatabase] = {}
    path = tmp_path_factory.mktemp("permissions") / "source.db"
    path.write_bytes(demo_sqlite_template.read_bytes())
    made["sqlite"] = SourceDatabase(f"sqlite:///{path}")
    pg = None
    try:
        yield made, lambda: made.setdefault("postgresql", _postgres(pg_holder))
    finally:
        for context in pg_holder:
            context.__exit__(None, None, None)
        pg_holder.clear()
    del pg


pg_holder: list = []


def _postgres(holder: list) -> SourceDatabase:
    context = scratch_postgres_database()  # fails, not skips, when CI=true
    url = context.__enter__()
    holder.append(context)
    return seed(SourceDatabase(url))


@pytest.fixture(params=ENGINES)
def db(request, databases) -> SourceDatabase:
    made, postgres = databases
    return made["sqlite"] if request.param == "sqlite" else postgres()


@pytest.fixture(scope="module", autouse=True)
def record_counts():
    """One JSON line of counts for the reliability report, when asked for."""
    yield
    out = os.environ.get("EXPORT_RELIABILITY_OUT")
    if not out or not RESULTS:
        return
    cells = {key: n for key, n in RESULTS.items()}
    line = {
        "test": "test_permissions",
        "cells_checked": sum(n for (what, _, _), n in cells.items() if what == "matrix"),
        "allowed": sum(n for (what, _, ok), n in cells.items() if what == "matrix" and ok),
        "refused": sum(n for (what, _, ok), n in cells.items() if what == "matrix" and not ok),
        "sensor_cells_checked": sum(n for (what, _, _), n in cells.items() if what == "sensor"),
        "by_engine": {
            engine: sum(n for (what, e, _), n in cells.items() if what == "matrix" and e == engine)
            for engine in ENGINES
        },
    }
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def add_user(db: SourceDatabase, org: str, admin: bool, label: str) -> str:
    user_id = f"perm-{label}-{uuid.uuid4().hex[:10]}"
    db.execute(
        "INSERT INTO users (id, organization_id, email, full_name, is_admin, is_verified, "
        "created_at, last_login_at) VALUES (:id, :org, :email, :name, :admin, :yes, :at, NULL)",
        {
            "id": user_id,
            "org": org,
            "email": f"{user_id}@example.org",
            "name": f"Permission {label}",
            "admin": admin,
            "yes": True,
            "at": dt.datetime(2026, 1, 1, 12, 0),
        },
    )
    return user_id


@dataclass
class Cast:
    org: str
    other_org: str
    user_id: str
    bystander: str  # another member of `org`, whose data is not the user's


def cast(db: SourceDatabase, role: str) -> Cast:
    """The cell's own users, as they are when the row is created."""
    org, other_org = organization_ids(db)[:2]
    bystander = add_user(db, org, False, "bystander")
    if role == "unknown":
        user_id = f"perm-nobody-{uuid.uuid4().hex[:10]}"
    elif role == "other_org_member":
        user_id = add_user(db, other_org, True, role)
    else:
        # former_admin and former_member are admins of `org` until after the row exists.
        admin = role in ("admin", "former_admin", "former_member")
        user_id = add_user(db, org, admin, role)
    return Cast(org, other_org, user_id, bystander)


def lose_rights(db: SourceDatabase, role: str, who: Cast) -> None:
    """What happened to the "former" users between the row's creation and its delivery."""
    if role == "former_admin":
        db.execute("UPDATE users SET is_admin = :no WHERE id = :id", {"no": False, "id": who.user_id})
    elif role == "former_member":
        db.execute(
            "UPDATE users SET organization_id = :other WHERE id = :id",
            {"other": who.other_org, "id": who.user_id},
        )


def filters_of(cell: Cell, who: Cast) -> dict:
    if cell.access == "self/someone else's data":
        return {**FILTERS, "user_id": who.bystander}
    return dict(FILTERS)


def insert_request(db: SourceDatabase, cell: Cell, who: Cast) -> str:
    return RequestLedger(db).insert(
        who.org, who.user_id, cell.export_type, "CSV", filters=filters_of(cell, who)
    )


def insert_subscription(db: SourceDatabase, cell: Cell, who: Cast) -> str:
    sub_id = str(uuid.uuid4())
    subscription_filters = filters_of(cell, who)
    # The delivered period replaces date filters; only whose data it is stays.
    subscription_filters = {k: v for k, v in subscription_filters.items() if k == "user_id"}
    db.execute(
        "INSERT INTO report_subscriptions (id, organization_id, user_id, export_type, "
        "export_format, cadence, email_recipients, filters, active, last_run_at, created_at) "
        "VALUES (:id, :org, :user, :type, 'CSV', 'daily', :to, :filters, :yes, NULL, :created)",
        {
            "id": sub_id,
            "org": who.org,
            "user": who.user_id,
            "type": cell.export_type,
            "to": json.dumps(["reports@example.org"]),
            "filters": json.dumps(subscription_filters) if subscription_filters else None,
            "yes": True,
            "created": dt.datetime(2026, 3, 1, 9, 30),
        },
    )
    return sub_id


def check(db: SourceDatabase, cell: Cell, row_id: str) -> str | None:
    """Validate the row as read back from its table now; None if allowed, else the reason."""
    try:
        if cell.kind == "request":
            row = RequestLedger(db).get(row_id)
            assert row is not None
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


def test_the_documented_table_covers_the_catalog():
    assert set(DOCUMENTED_ACCESS) == set(CATALOG), "every export type has a documented rule"
    for export_type, access in DOCUMENTED_ACCESS.items():
        assert CATALOG[export_type].access.value == access, (
            f"{export_type}: the spec says {CATALOG[export_type].access.value}, "
            f"the README says {access}"
        )


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_permission_matrix(db, cell):
    who = cast(db, cell.role)
    if cell.kind == "request":
        row_id = insert_request(db, cell, who)
    else:
        if cell.role == "unknown" and db.dialect == "postgresql":
            # report_subscriptions.user_id REFERENCES users(id): PostgreSQL refuses the
            # row itself, so an unknown owner never reaches a delivery.
            with pytest.raises(Exception, match="(?i)foreign key"):
                insert_subscription(db, cell, who)
            RESULTS["matrix", db.dialect, False] += 1
            return
        row_id = insert_subscription(db, cell, who)

    if cell.role.startswith("former_"):
        # Before losing their rights they were admins of the organization.
        before = Cell(cell.kind, cell.export_type, cell.access, "admin")
        assert_outcome(before, check(db, cell, row_id), when="before the change")
        lose_rights(db, cell.role, who)

    refusal = check(db, cell, row_id)
    assert_outcome(cell, refusal)
    RESULTS["matrix", db.dialect, refusal is None] += 1


# -- a sample end to end through the request sensor ------------------------------------------


@pytest.fixture(scope="module")
def sensor_instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(instance: dg.DagsterInstance, db: SourceDatabase):
    with dg.build_sensor_context(
        instance=instance, resources={"source": SourceResource(url=db.url)}
    ) as context:
        return export_requests_sensor(context)


@pytest.mark.parametrize("cell", SENSOR_CELLS, ids=[c.id for c in SENSOR_CELLS])
def test_permission_through_the_request_sensor(db, sensor_instance, cell):
    ledger = RequestLedger(db)
    # Only this cell's row waits (the matrix's rows and the demo's are not served here).
    db.execute(
        "UPDATE export_requests SET status = :failed WHERE status = :pending",
        {"failed": "FAILED", "pending": "PENDING"},
    )
    who = cast(db, cell.role)
    request_id = insert_request(db, cell, who)
    lose_rights(db, cell.role, who)

    result = tick(sensor_instance, db)
    row = ledger.get(request_id)
    if cell.allowed:
        assert isinstance(result, dg.SensorResult), f"{cell.id}: no run launched ({result})"
        assert [r.run_key for r in result.run_requests] == [request_id], cell.id
        (launched,) = result.run_requests
        assert launched.tags[REQUEST_TAG] == request_id
        assert launched.tags[USER_TAG] == who.user_id
        assert row["status"] == "PENDING" and row["started_at"] is not None, row
        assert row["error_message"] is None
        again = tick(sensor_instance, db)
        assert isinstance(again, dg.SkipReason), f"{cell.id}: a second tick launched it again"
    else:
        launched = [] if isinstance(result, dg.SkipReason) else result.run_requests
        assert launched == [], f"{cell.id}: a refused request launched a run"
        assert row["status"] == "FAILED", f"{cell.id}: {row['status']}"
        assert cell.reason in row["error_message"], f"{cell.id}: {row['error_message']!r}"
        assert row["run_id"] is None
        audit = db.fetch_rows(
            "SELECT action FROM audit_log WHERE target_id = :id", {"id": request_id}
        )
        assert audit == [{"action": "export.failed"}]
    RESULTS["sensor", db.dialect, cell.allowed] += 1
