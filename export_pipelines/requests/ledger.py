"""The `export_requests` table as a ledger: what the application asked, and what we did."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from export_pipelines.source.database import SourceDatabase

PENDING, PROCESSING, COMPLETED, FAILED, EXPIRED = (
    "PENDING",
    "PROCESSING",
    "COMPLETED",
    "FAILED",
    "EXPIRED",
)


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


def _bounded(message: str, limit: int = 2000) -> str:
    """Messages quote what the user sent; a 10 MB filter value must not come back whole."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


@dataclass(frozen=True)
class Cursor:
    """Position in the ledger: requests are read in (created_at, id) order."""

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


class RequestLedger:
    def __init__(self, db: SourceDatabase):
        self.db = db

    # -- reads -----------------------------------------------------------------------------

    def get(self, request_id: str) -> dict[str, Any] | None:
        rows = self.db.fetch_rows(
            "SELECT * FROM export_requests WHERE id = :id", {"id": request_id}
        )
        return rows[0] if rows else None

    def pending_after(self, cursor: Cursor, limit: int = 50) -> list[dict[str, Any]]:
        """PENDING rows after `cursor`, oldest first."""
        if not cursor.created_at:
            return self.db.fetch_rows(
                "SELECT * FROM export_requests WHERE status = :status "
                "ORDER BY created_at, id LIMIT :limit",
                {"status": PENDING, "limit": limit},
            )
        return self.db.fetch_rows(
            "SELECT * FROM export_requests WHERE status = :status "
            "AND (created_at > :after OR (created_at = :after AND id > :after_id)) "
            "ORDER BY created_at, id LIMIT :limit",
            {
                "status": PENDING,
                # SQLite compares the stored text as it was read; PostgreSQL a timestamp.
                "after": parse_timestamp(cursor.created_at)
                if self.db.dialect == "postgresql"
                else cursor.created_at,
                "after_id": cursor.id,
                "limit": limit,
            },
        )

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
        request_id = request_id or str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO export_requests (id, export_type, export_format, user_id, "
            "organization_id, filters, parameters, status, progress_percentage, "
            "download_count, created_at, retry_count) VALUES (:id, :type, :format, :user, "
            ":org, :filters, :parameters, :status, 0, 0, :created_at, 0)",
            {
                "id": request_id,
                "type": export_type,
                "format": export_format,
                "user": user_id,
                "org": organization_id,
                "filters": None if filters is None else json.dumps(filters),
                "parameters": None if parameters is None else json.dumps(parameters),
                "status": PENDING,
                "created_at": created_at or utc_now(),
            },
        )
        return request_id

    def reject(self, request_id: str, message: str) -> bool:
        """A PENDING request that will not be served; return True if it changed."""
        changed = self.db.execute(
            "UPDATE export_requests SET status = :status, error_message = :message, "
            "completed_at = :now WHERE id = :id AND status = :pending",
            {
                "status": FAILED,
                "message": _bounded(message),
                "now": utc_now(),
                "id": request_id,
                "pending": PENDING,
            },
        )
        if changed:
            self._record_failure(request_id)
        return changed > 0

    def start(self, request_id: str, run_id: str, attempt: int) -> None:
        self.db.execute(
            "UPDATE export_requests SET status = :status, started_at = :now, run_id = :run, "
            "progress_percentage = 5, retry_count = :attempt, error_message = NULL "
            "WHERE id = :id",
            {
                "status": PROCESSING,
                "now": utc_now(),
                "run": run_id,
                "attempt": attempt,
                "id": request_id,
            },
        )

    def progress(self, request_id: str, percentage: int) -> None:
        self.db.execute(
            "UPDATE export_requests SET progress_percentage = :pct WHERE id = :id AND status = :status",
            {"pct": int(percentage), "id": request_id, "status": PROCESSING},
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
    ) -> None:
        self.db.execute(
            "UPDATE export_requests SET status = :status, progress_percentage = 100, "
            "file_path = :path, file_size = :size, row_count = :rows, checksum_sha256 = :sha, "
            "completed_at = :done, expires_at = :expires, error_message = NULL WHERE id = :id",
            {
                "status": COMPLETED,
                "path": file_path,
                "size": file_size,
                "rows": row_count,
                "sha": checksum,
                "done": completed_at,
                "expires": expires_at,
                "id": request_id,
            },
        )

    def fail(self, request_id: str, message: str, retry_count: int | None = None) -> bool:
        """Mark a request FAILED unless it already ended; return True if it changed.

        Every request that ends FAILED leaves an `export.failed` entry in the organization's
        audit log, whoever noticed the failure.
        """
        changed = self.db.execute(
            "UPDATE export_requests SET status = :status, error_message = :message, "
            "completed_at = :now, retry_count = COALESCE(:retries, retry_count) "
            "WHERE id = :id AND status IN (:pending, :processing)",
            {
                "status": FAILED,
                "message": _bounded(message),
                "now": utc_now(),
                "retries": retry_count,
                "id": request_id,
                "pending": PENDING,
                "processing": PROCESSING,
            },
        )
        if changed:
            self._record_failure(request_id)
        return changed > 0

    def expire(self, request_id: str) -> None:
        self.db.execute(
            "UPDATE export_requests SET status = :status WHERE id = :id AND status = :completed",
            {"status": EXPIRED, "id": request_id, "completed": COMPLETED},
        )

    def _record_failure(self, request_id: str) -> None:
        row = self.get(request_id)
        self.append_audit_log(row["organization_id"], row["user_id"], "export.failed", request_id)

    def append_audit_log(
        self,
        organization_id: str,
        actor_user_id: str | None,
        action: str,
        target_id: str,
        occurred_at: dt.datetime | None = None,
    ) -> None:
        """Record in the application's own audit log who exported what."""
        self.db.execute(
            "INSERT INTO audit_log (id, organization_id, actor_user_id, action, target_type, "
            "target_id, ip_address, user_agent, occurred_at) VALUES (:id, :org, :actor, :action, "
            "'export_request', :target, NULL, 'export_pipelines', :at)",
            {
                "id": str(uuid.uuid4()),
                "org": organization_id,
                "actor": actor_user_id,
                "action": action,
                "target": target_id,
                "at": occurred_at or utc_now(),
            },
        )
