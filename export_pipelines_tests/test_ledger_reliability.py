"""The request ledger on both engines: safe text, audit references, status guards, no skips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from export_pipelines.requests.ledger import (
    COMPLETED,
    EXPIRED,
    FAILED,
    PENDING,
    PROCESSING,
    Cursor,
    RequestLedger,
    parse_timestamp,
    utc_now,
)
from export_pipelines.source.database import SourceDatabase

from .conftest import scratch_postgres_database, seed


@pytest.fixture(scope="module")
def ledger_postgres() -> Iterator[SourceDatabase]:
    """The demo data in a PostgreSQL database of this module's own (its ledger is emptied)."""
    with scratch_postgres_database() as url:
        yield seed(SourceDatabase(url))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request) -> SourceDatabase:
    """Demo organizations and users, and an empty ledger, on each engine."""
    if request.param == "sqlite":
        database = request.getfixturevalue("sqlite_source")
    else:
        database = request.getfixturevalue("ledger_postgres")
    database.execute("DELETE FROM export_requests")
    database.execute("DELETE FROM audit_log WHERE target_type = 'export_request'")
    return database


@pytest.fixture
def ledger(db) -> RequestLedger:
    return RequestLedger(db)


@pytest.fixture
def user(db) -> dict:
    return db.fetch_rows("SELECT id, organization_id FROM users ORDER BY id LIMIT 1")[0]


def new_request(ledger: RequestLedger, user: dict, **fields) -> str:
    return ledger.insert(user["organization_id"], user["id"], "scan_results", "CSV", **fields)


def audit_of(db: SourceDatabase, request_id: str) -> list[dict]:
    return db.fetch_rows(
        "SELECT organization_id, actor_user_id, action FROM audit_log "
        "WHERE target_id = :id ORDER BY occurred_at, action",
        {"id": request_id},
    )


def actions_of(db: SourceDatabase, request_id: str) -> list[str]:
    return [entry["action"] for entry in audit_of(db, request_id)]


def complete(ledger: RequestLedger, request_id: str, path: str = "/exports/x.csv") -> bool:
    now = utc_now()
    return ledger.complete(
        request_id,
        file_path=path,
        file_size=10,
        row_count=1,
        checksum="0" * 64,
        completed_at=now,
        expires_at=now + dt.timedelta(days=7),
    )


# -- 1. text written back is safe ---------------------------------------------------------

UNSAFE = {
    "nul": ("value \x00 sent", "value \ufffd sent"),
    "lone surrogates": ("value \ud800 sent \udfff", "value \ufffd sent \ufffd"),
    "surrogate pair": ("value \ud83d\ude00 sent", "value \U0001f600 sent"),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_reject_and_fail_store_unsafe_messages_safely(db, ledger, user, case):
    """PostgreSQL refuses NUL, UTF-8 refuses surrogates: the write must still succeed."""
    raw, stored = UNSAFE[case]
    rejected = new_request(ledger, user)
    assert ledger.reject(rejected, f"unknown project {raw}") is True
    row = ledger.get(rejected)
    assert row["status"] == FAILED
    assert row["error_message"] == f"unknown project {stored}"

    failed = new_request(ledger, user)
    assert ledger.start(failed, "run-1", attempt=0) is True
    assert ledger.fail(failed, raw) is True
    assert ledger.get(failed)["status"] == FAILED
    assert ledger.get(failed)["error_message"] == stored
    assert actions_of(db, rejected) == actions_of(db, failed) == ["export.failed"]


def test_huge_unsafe_message_is_bounded_and_cut_safely(db, ledger, user):
    """10 MB quoting the user is cut to 2,000 characters, even through a surrogate pair."""
    message = "a" * 1998 + "\ud83d\ude00" + "\x00" * 10_000_000
    request_id = new_request(ledger, user)
    assert ledger.reject(request_id, message) is True
    stored = ledger.get(request_id)["error_message"]
    assert len(stored) == 2000
    assert stored == "a" * 1998 + "\ufffd…"


def test_file_path_and_audit_fields_are_made_safe(db, ledger, user):
    request_id = new_request(ledger, user)
    assert ledger.start(request_id, "run-\x00", attempt=0) is True
    assert complete(ledger, request_id, path="/exports/\x00/\ud800.csv") is True
    row = ledger.get(request_id)
    assert row["status"] == COMPLETED
    assert row["file_path"] == "/exports/\ufffd/\ufffd.csv"
    assert row["run_id"] == "run-\ufffd"

    assert ledger.append_audit_log(
        user["organization_id"], user["id"], "export.downloaded\x00\udfff", request_id
    )
    assert sorted(actions_of(db, request_id)) == [
        "export.completed",
        "export.downloaded\ufffd\ufffd",
    ]


# -- 2. audit entries reference only what exists ------------------------------------------


def test_audit_entry_of_an_unknown_user_has_no_actor(db, ledger, user):
    ghost = ledger.insert(user["organization_id"], "no-such-user", "scan_results", "CSV")
    assert ledger.reject(ghost, "user no-such-user does not exist") is True
    assert ledger.get(ghost)["status"] == FAILED
    assert audit_of(db, ghost) == [
        {
            "organization_id": user["organization_id"],
            "actor_user_id": None,
            "action": "export.failed",
        }
    ]
    assert ledger.append_audit_log(user["organization_id"], "no-such-user", "x.y", ghost)
    assert audit_of(db, ghost)[-1]["actor_user_id"] is None


def test_audit_entry_of_an_unknown_organization_is_not_written(db, ledger, user):
    """audit_log.organization_id is NOT NULL and references organizations: no entry."""
    orphan = ledger.insert("no-such-org", user["id"], "scan_results", "CSV")
    assert ledger.reject(orphan, "organization no-such-org does not exist") is True
    assert ledger.get(orphan)["status"] == FAILED
    assert audit_of(db, orphan) == []

    running = ledger.insert("no-such-org", "no-such-user", "scan_results", "CSV")
    assert ledger.start(running, "run-1", attempt=0) is True
    assert ledger.fail(running, "boom") is True
    assert ledger.get(running)["status"] == FAILED
    assert ledger.append_audit_log("no-such-org", user["id"], "x.y", running) is False
    assert audit_of(db, running) == []


# -- 3. every transition is guarded by the current status ----------------------------------


def test_a_late_complete_after_fail_changes_nothing(db, ledger, user):
    """An orphaned worker finishing after its request was failed must not revive it."""
    request_id = new_request(ledger, user)
    assert ledger.start(request_id, "run-1", attempt=0) is True
    assert ledger.fail(request_id, "the run worker exited without finishing the run") is True

    assert complete(ledger, request_id) is False
    # What the serving op does next: append its audit entry.
    ledger.append_audit_log(user["organization_id"], user["id"], "export.completed", request_id)
    row = ledger.get(request_id)
    assert row["status"] == FAILED
    assert row["file_path"] is None and row["progress_percentage"] == 5
    assert row["error_message"] == "the run worker exited without finishing the run"
    assert actions_of(db, request_id) == ["export.failed"]
    assert ledger.progress(request_id, 50) is False
    assert ledger.start(request_id, "run-2", attempt=1) is False
    assert ledger.get(request_id)["status"] == FAILED


def test_failing_twice_records_one_failure(db, ledger, user):
    request_id = new_request(ledger, user)
    assert ledger.fail(request_id, "first") is True
    assert ledger.fail(request_id, "second") is False
    assert ledger.reject(request_id, "third") is False
    assert ledger.start(request_id, "run-late", attempt=0) is False, "nor restarts it"
    row = ledger.get(request_id)
    assert (row["status"], row["error_message"], row["run_id"]) == (FAILED, "first", None)
    assert audit_of(db, request_id) == [
        {
            "organization_id": user["organization_id"],
            "actor_user_id": user["id"],
            "action": "export.failed",
        }
    ]


def test_transitions_happen_only_from_their_statuses_and_say_so(db, ledger, user):
    request_id = new_request(ledger, user)
    assert ledger.progress(request_id, 50) is False, "not PROCESSING"
    assert ledger.expire(request_id) is False, "not COMPLETED"
    assert ledger.start(request_id, "run-1", attempt=0) is True
    assert ledger.start(request_id, "run-1", attempt=1) is True, "a retry starts again"
    assert ledger.get(request_id)["status"] == PROCESSING
    assert ledger.progress(request_id, 50) is True
    assert ledger.reject(request_id, "too late") is False, "reject only PENDING"
    assert complete(ledger, request_id) is True
    assert complete(ledger, request_id) is False
    assert ledger.fail(request_id, "too late") is False
    assert ledger.start(request_id, "run-2", attempt=0) is False
    row = ledger.get(request_id)
    assert (row["status"], row["retry_count"], row["run_id"]) == (COMPLETED, 1, "run-1")
    assert actions_of(db, request_id) == ["export.completed"]
    assert ledger.expire(request_id) is True
    assert ledger.expire(request_id) is False
    assert ledger.get(request_id)["status"] == EXPIRED

    never_started = new_request(ledger, user)
    assert complete(ledger, never_started) is True, "PENDING may complete"
    assert actions_of(db, never_started) == ["export.completed"]


# -- 4. no PENDING row is ever skipped -----------------------------------------------------


def sensor_tick(ledger: RequestLedger, stored: str | None, limit: int = 50):
    """What the request sensor does with the ledger: read, then store a cursor."""
    cursor = Cursor.decode(stored)
    seen = []
    for row in ledger.pending_after(cursor, limit=limit):
        cursor = Cursor.of(row)
        seen.append(row["id"])
    return seen, cursor.encode()


def test_a_row_committed_after_a_later_stamped_one_is_still_served(db, ledger, user):
    now = utc_now()
    first = new_request(ledger, user, created_at=now)
    seen, stored = sensor_tick(ledger, None)
    assert seen == [first]

    late = new_request(ledger, user, created_at=now - dt.timedelta(minutes=1))
    seen, stored = sensor_tick(ledger, stored)
    assert seen == [late]
    assert sensor_tick(ledger, stored)[0] == [], "nothing is offered twice"


def test_a_future_dated_row_is_served_and_blocks_nothing(db, ledger, user):
    now = utc_now()
    future = new_request(ledger, user, created_at=now + dt.timedelta(days=365))
    old = new_request(ledger, user, created_at=now - dt.timedelta(hours=1))
    seen, stored = sensor_tick(ledger, None)
    assert seen == [old, future]

    after = new_request(ledger, user)
    seen, stored = sensor_tick(ledger, stored)
    assert seen == [after]


def test_bounded_reads_are_oldest_first_and_reach_every_row(db, ledger, user):
    now = utc_now()
    future = new_request(ledger, user, created_at=now + dt.timedelta(days=3650))
    r1, r2, r3 = (
        new_request(ledger, user, created_at=now - dt.timedelta(minutes=m)) for m in (30, 20, 10)
    )
    seen, stored = sensor_tick(ledger, None, limit=2)
    assert seen == [r1, r2]

    r0 = new_request(ledger, user, created_at=now - dt.timedelta(minutes=40))  # committed late
    r4 = new_request(ledger, user, created_at=now)
    ticks = []
    while True:
        seen, stored = sensor_tick(ledger, stored, limit=2)
        if not seen:
            break
        ticks.append(seen)
    assert ticks == [[r0, r3], [r4, future]]
    assert all(ledger.get(i)["status"] == PENDING for i in (r0, r1, r2, r3, r4, future))


def test_a_claimed_row_is_offered_again_after_the_lease_and_fresh_rows_go_first(db, ledger, user):
    """A tick that claimed a row may have died before launching its run."""
    now, lease = utc_now(), dt.timedelta(minutes=5)
    claimed = new_request(ledger, user, created_at=now - dt.timedelta(hours=1))
    assert [r["id"] for r in ledger.claim_pending(now=now, lease=lease)] == [claimed]
    assert parse_timestamp(ledger.get(claimed)["started_at"]) is not None
    assert ledger.claim_pending(now=now + dt.timedelta(minutes=1), lease=lease) == []

    fresh = new_request(ledger, user, created_at=now + dt.timedelta(days=1))
    later = now + lease + dt.timedelta(seconds=1)
    assert [r["id"] for r in ledger.claim_pending(limit=1, now=later, lease=lease)] == [fresh]
    assert [r["id"] for r in ledger.claim_pending(limit=1, now=later, lease=lease)] == [claimed]

    assert ledger.start(claimed, "run-1", attempt=0) is True
    assert ledger.reject(fresh, "no") is True
    assert ledger.get(fresh)["started_at"] is None, "a rejected request never started"
    assert ledger.claim_pending(now=later + 10 * lease, lease=lease) == []
