"""The `export_requests` table as a ledger: what the application asked, and what we did.

Every transition is conditional on the row's current status and tells whether it happened
(`UPDATE … WHERE status IN (…) RETURNING`, never a driver's row count: ADBC's PostgreSQL
driver reports -1 for parameterized statements). A transition that ends a request writes
its audit entry (`export.completed`, `export.failed`) in the same transaction, so there is
exactly one per request whoever ends it and however often.

Everything written is made safe first: PostgreSQL rejects NUL in text and no engine can
encode a lone surrogate as UTF-8, and messages quote what the user sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from export_pipelines.source.database import SourceDatabase, rows_of

PENDING, PROCESSING, COMPLETED, FAILED, EXPIRED = (
    "PENDING",
    "PROCESSING",
    "COMPLETED",
    "FAILED",
    "EXPIRED",
)

# Audit actions that record how a request ended: written by the transitions themselves.
LEDGER_ACTIONS = frozenset({"export.completed", "export.failed"})

# How long a claimed PENDING row is left alone before it is offered again (its run may
# never have been launched: the sensor tick that claimed it died before submitting it).
CLAIM_LEASE = dt.timedelta(minutes=5)

MESSAGE_LIMIT = 2000
_AGENT = "export_pipelines"
ROWS_PER_STATEMENT = 500  # set-based reads and writes: at most this many rows bound at once


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Timestamps come back as datetimes (PostgreSQL) or ISO text (SQLite)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    else:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def _bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """Messages quote what the user sent; a 10 MB filter value must not come back whole."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _safe_text(value: Any, limit: int | None = MESSAGE_LIMIT) -> str | None:
    """`value` as text every engine stores: NUL and lone surrogates become U+FFFD.

    Bounded to `limit` characters first (None: identifiers and locations, which a cut
    would corrupt); a surrogate pair (e.g. from JSON escapes) becomes its character.
    """
    if value is None:
        return None
    text = str(value)
    if limit is not None:
        text = _bounded(text, limit)
    if not text.isascii():
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Cursor:
    """The last request the sensor saw, in (created_at, id) order.

    Kept so the sensor's stored cursor still encodes and decodes; the ledger no longer
    reads "rows after it" (that skipped rows committed late or dated in the future), it
    hands out PENDING rows not yet claimed (`RequestLedger.claim_pending`).
    """

    created_at: str = ""
    id: str = ""

    @classmethod
    def of(cls, row: dict[str, Any]) -> Cursor:
        created = row["created_at"]
        text = created.isoformat() if isinstance(created, dt.datetime) else str(created)
        return cls(text, row["id"])

    def encode(self) -> str:
        return json.dumps([self.created_at, self.id])

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        created_at, request_id = json.loads(text)
        return cls(created_at, request_id)


Run = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]


class RequestLedger:
    def __init__(self, db: SourceDatabase):
        self.db = db

    # -- reads -----------------------------------------------------------------------------

    def get(self, request_id: str) -> dict[str, Any] | None:
        rows = self.db.fetch_rows(
            "SELECT * FROM export_requests WHERE id = :id", {"id": request_id}
        )
        return rows[0] if rows else None

    def get_many(self, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows of `request_ids` that exist, by id: one read per `ROWS_PER_STATEMENT`."""
        found: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(request_ids))
        for start in range(0, len(ids), ROWS_PER_STATEMENT):
            names = {f"r{i}": rid for i, rid in enumerate(ids[start : start + ROWS_PER_STATEMENT])}
            listed = ", ".join(f":{name}" for name in names)
            for row in self.db.fetch_rows(
                f"SELECT * FROM export_requests WHERE id IN ({listed})", names
            ):
                found[row["id"]] = row
        return found

    def claim_pending(
        self,
        limit: int = 50,
        now: dt.datetime | None = None,
        lease: dt.timedelta = CLAIM_LEASE,
    ) -> list[dict[str, Any]]:
        """Claim up to `limit` PENDING rows to serve, and return them oldest first.

        A row is claimed by stamping `started_at` (while it is PENDING that means "accepted,
        its run launched"; the run's `start` stamps it again). Unclaimed rows come first,
        oldest `created_at` first whatever it says — a row committed late or dated in the
        future is served like any other, and each call moves past the rows it claimed — then
        rows whose claim is older than `lease` (offered again; the run key dedupes a run
        already launched). No PENDING row is ever skipped.
        """
        now = now or utc_now()
        eligible = "status = :pending AND (started_at IS NULL OR started_at <= :stale)"
        params = {"pending": PENDING, "now": now, "stale": now - lease, "limit": int(limit)}
        with self._transaction() as run:
            claimed = run(
                f"UPDATE export_requests SET started_at = :now WHERE {eligible} AND id IN ("
                f"SELECT id FROM export_requests WHERE {eligible} "
                "ORDER BY CASE WHEN started_at IS NULL THEN 0 ELSE 1 END, created_at, id "
                "LIMIT :limit) RETURNING id",
                params,
            )
            if not claimed:
                return []
            ids = {f"c{i}": row["id"] for i, row in enumerate(claimed)}
            return run(
                "SELECT * FROM export_requests WHERE id IN ("
                + ", ".join(f":{name}" for name in ids)
                + ") ORDER BY created_at, id",
                ids,
            )

    def pending_after(self, cursor: Cursor, limit: int = 50) -> list[dict[str, Any]]:
        """PENDING rows to serve: `claim_pending` (the cursor no longer filters anything)."""
        del cursor  # a position in created_at order is what skipped rows
        return self.claim_pending(limit)

    def unfinished(self, limit: int = 500) -> list[dict[str, Any]]:
        """PENDING and PROCESSING rows, oldest first."""
        return self.db.fetch_rows(
            "SELECT * FROM export_requests WHERE status IN (:pending, :processing) "
            "ORDER BY created_at, id LIMIT :limit",
            {"pending": PENDING, "processing": PROCESSING, "limit": limit},
        )

    def due_for_expiry(self, now: dt.datetime) -> list[dict[str, Any]]:
        return self.db.fetch_rows(
            "SELECT * FROM export_requests WHERE status = :status AND expires_at <= :now",
            {"status": COMPLETED, "now": now},
        )

    # -- writes ----------------------------------------------------------------------------

    def insert(
        self,
        organization_id: str,
        user_id: str,
        export_type: str,
        export_format: str,
        filters: dict | None = None,
        parameters: dict | None = None,
        request_id: str | None = None,
        created_at: dt.datetime | None = None,
    ) -> str:
        request_id = _safe_text(request_id or str(uuid.uuid4()), None)
        self.db.execute(
            "INSERT INTO export_requests (id, export_type, export_format, user_id, "
            "organization_id, filters, parameters, status, progress_percentage, "
            "download_count, created_at, retry_count) VALUES (:id, :type, :format, :user, "
            ":org, :filters, :parameters, :status, 0, 0, :created_at, 0)",
            {
                "id": request_id,
                "type": _safe_text(export_type, None),
                "format": _safe_text(export_format, None),
                "user": _safe_text(user_id, None),
                "org": _safe_text(organization_id, None),
                # json.dumps escapes NUL and surrogates: the text is ASCII.
                "filters": None if filters is None else json.dumps(filters),
                "parameters": None if parameters is None else json.dumps(parameters),
                "status": PENDING,
                "created_at": created_at or utc_now(),
            },
        )
        return request_id

    def reject(self, request_id: str, message: str) -> bool:
        """A PENDING request that will not be served; return True if it changed."""
        return request_id in self.reject_many({request_id: message})

    def reject_many(self, refusals: Mapping[str, str]) -> set[str]:
        """Refuse PENDING requests, each with its sentence; return the ids that changed.

        One transaction, and two statements per `ROWS_PER_STATEMENT` rows whatever their
        number: the guarded UPDATE … RETURNING, then their `export.failed` audit entries.
        """
        items = list(refusals.items())
        changed: set[str] = set()
        with self._transaction() as run:
            for start in range(0, len(items), ROWS_PER_STATEMENT):
                chunk = range(len(items[start : start + ROWS_PER_STATEMENT]))
                params: dict[str, Any] = {"status": FAILED, "pending": PENDING, "now": utc_now()}
                for i in chunk:
                    request_id, message = items[start + i]
                    params.update({f"i{i}": request_id, f"m{i}": _safe_text(message)})
                cases = " ".join(f"WHEN :i{i} THEN :m{i}" for i in chunk)
                listed = ", ".join(f":i{i}" for i in chunk)
                ended = run(
                    f"UPDATE export_requests SET status = :status, error_message = CASE id "
                    f"{cases} END, completed_at = :now, started_at = NULL "
                    f"WHERE status = :pending AND id IN ({listed}) "
                    "RETURNING id, organization_id, user_id",
                    params,
                )
                self._audit_many(run, ended, "export.failed")
                changed.update(row["id"] for row in ended)
        return changed

    def release(self, request_id: str, launches: int) -> bool:
        """Offer a claimed request again because its run ended before serving it.

        Only a request no run ever started (still PENDING) that has been launched fewer
        than `launches` times is released: its claim is cleared, so the next tick takes
        it first, and `retry_count` counts the launch (a new run key). Return True if it
        was released; False leaves it as it was (the caller fails it, or it ended).
        """
        return self._transition(
            request_id,
            (PENDING,),
            "started_at = NULL, retry_count = retry_count + 1",
            {"launches": int(launches)},
            condition="retry_count + 1 < :launches",
        )

    def start(self, request_id: str, run_id: str, attempt: int) -> bool:
        """The run's worker begins (or retries) a PENDING or PROCESSING request.

        Return False, changing nothing, if the request already ended (failed meanwhile).
        """
        return self._transition(
            request_id,
            (PENDING, PROCESSING),
            "status = :status, started_at = :now, run_id = :run, progress_percentage = 5, "
            "retry_count = :attempt, error_message = NULL",
            {
                "status": PROCESSING,
                "now": utc_now(),
                "run": _safe_text(run_id, None),
                "attempt": int(attempt),
            },
        )

    def progress(self, request_id: str, percentage: int) -> bool:
        """Advance a PROCESSING request's progress; return False if it is not PROCESSING."""
        return self._transition(
            request_id, (PROCESSING,), "progress_percentage = :pct", {"pct": int(percentage)}
        )

    def complete(
        self,
        request_id: str,
        file_path: str,
        file_size: int,
        row_count: int,
        checksum: str,
        completed_at: dt.datetime,
        expires_at: dt.datetime,
    ) -> bool:
        """Record the delivered file and its `export.completed` audit entry.

        Only a PROCESSING (or PENDING) request completes: a worker finishing after its
        request was failed (reconciled as dead, say) returns False and changes nothing.
        """
        return self._transition(
            request_id,
            (PROCESSING, PENDING),
            "status = :status, progress_percentage = 100, file_path = :path, "
            "file_size = :size, row_count = :rows, checksum_sha256 = :sha, "
            "completed_at = :done, expires_at = :expires, error_message = NULL",
            {
                "status": COMPLETED,
                "path": _safe_text(file_path, None),
                "size": file_size,
                "rows": row_count,
                "sha": _safe_text(checksum, None),
                "done": completed_at,
                "expires": expires_at,
            },
            audit="export.completed",
        )

    def fail(self, request_id: str, message: str, retry_count: int | None = None) -> bool:
        """Mark a request FAILED unless it already ended; return True if it changed.

        Every request that ends FAILED leaves one `export.failed` entry in the
        organization's audit log, whoever noticed the failure, however often.
        """
        return self._transition(
            request_id,
            (PENDING, PROCESSING),
            "status = :status, error_message = :message, completed_at = :now, "
            "retry_count = COALESCE(:retries, retry_count), "
            # A PENDING row's started_at is only its claim: it never started.
            "started_at = CASE WHEN status = :was_pending THEN NULL ELSE started_at END",
            {
                "status": FAILED,
                "message": _safe_text(message),
                "now": utc_now(),
                "retries": None if retry_count is None else int(retry_count),
                "was_pending": PENDING,
            },
            audit="export.failed",
        )

    def expire(self, request_id: str) -> bool:
        """A COMPLETED request whose file was deleted; return False if it was not COMPLETED."""
        return self._transition(request_id, (COMPLETED,), "status = :status", {"status": EXPIRED})

    def append_audit_log(
        self,
        organization_id: str,
        actor_user_id: str | None,
        action: str,
        target_id: str,
        occurred_at: dt.datetime | None = None,
    ) -> bool:
        """Record in the application's own audit log who exported what; True if written.

        The log references organizations and users: an entry for an organization that does
        not exist is not written, an actor who does not exist is recorded as NULL. How a
        request ended (`LEDGER_ACTIONS`) is recorded by `complete`, `fail` and `reject`
        themselves, only when the transition happens; appending one here writes nothing.
        """
        if action in LEDGER_ACTIONS:
            return False
        with self._transaction() as run:
            return self._audit(run, organization_id, actor_user_id, action, target_id, occurred_at)

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Run]:
        """Statements (each returning rows) in one transaction, committed on success."""
        with self.db.connect() as conn, contextlib.closing(conn.cursor()) as cur:

            def run(sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
                query, values = self.db.bind(sql, params)
                cur.execute(query, values)
                return rows_of(cur.fetch_arrow_table())

            yield run
            conn.commit()

    def _transition(
        self,
        request_id: str,
        allowed: Sequence[str],
        assignments: str,
        params: Mapping[str, Any],
        audit: str | None = None,
        condition: str = "TRUE",
    ) -> bool:
        """UPDATE the row if its status is one of `allowed` (and `condition` holds); True
        if it did. With `audit`, the transition and its audit entry commit together.
        """
        statuses = {f"from_{i}": status for i, status in enumerate(allowed)}
        with self._transaction() as run:
            changed = run(
                f"UPDATE export_requests SET {assignments} WHERE id = :request_id "
                f"AND status IN ({', '.join(f':{name}' for name in statuses)}) "
                f"AND ({condition}) RETURNING organization_id, user_id",
                {**params, **statuses, "request_id": request_id},
            )
            if changed and audit:
                row = changed[0]
                self._audit(run, row["organization_id"], row["user_id"], audit, request_id)
        return bool(changed)

    def _audit(
        self,
        run: Run,
        organization_id: str,
        actor_user_id: str | None,
        action: str,
        target_id: str,
        occurred_at: dt.datetime | None = None,
    ) -> bool:
        row = {"organization_id": organization_id, "user_id": actor_user_id, "id": target_id}
        return bool(self._audit_many(run, [row], action, occurred_at))

    def _audit_many(
        self,
        run: Run,
        requests: Sequence[Mapping[str, Any]],
        action: str,
        occurred_at: dt.datetime | None = None,
    ) -> int:
        """One audit entry per request (its `id`, `organization_id`, `user_id` as actor).

        Only what exists is referenced (audit_log has foreign keys to organizations and
        users on PostgreSQL; SQLite keeps the same rule so both logs read alike): no entry
        for an organization that does not exist, a NULL actor for a user who does not.
        """
        if not requests:
            return 0
        params: dict[str, Any] = {
            "action": _safe_text(action),
            "target_type": "export_request",
            "agent": _AGENT,
            "at": occurred_at or utc_now(),
        }
        values = []
        for i, request in enumerate(requests):
            params.update(
                {
                    f"id{i}": str(uuid.uuid4()),
                    f"org{i}": _safe_text(request["organization_id"], None),
                    f"actor{i}": _safe_text(request["user_id"], None),
                    f"target{i}": _safe_text(request["id"], None),
                }
            )
            values.append(f"(:id{i}, :org{i}, :actor{i}, :target{i})")
        written = run(
            f"WITH v (id, org, actor, target) AS (VALUES {', '.join(values)}) "
            "INSERT INTO audit_log (id, organization_id, actor_user_id, action, target_type, "
            "target_id, ip_address, user_agent, occurred_at) "
            "SELECT v.id, o.id, u.id, :action, :target_type, v.target, NULL, :agent, :at "
            "FROM v JOIN organizations o ON o.id = v.org LEFT JOIN users u ON u.id = v.actor "
            "RETURNING id",
            params,
        )
        return len(written)
