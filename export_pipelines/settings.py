"""Configuration from the environment (docs/CONTRACT.md §2); unset means the embedded default."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path


def data_dir() -> Path:
    """The project's local data folder: the embedded database and the stages' working area."""
    return Path(os.environ.get("EXPORT_DATA_DIR", "data")).resolve()


def source_url() -> str:
    url = os.environ.get("EXPORT_SOURCE_URL", "").strip()
    return url or f"sqlite:///{data_dir() / 'source.db'}"


def store_url() -> str:
    url = os.environ.get("EXPORT_STORE_URL", "").strip()
    return url or str(Path("exports").resolve())


def work_dir() -> Path:
    """Where stages hand files to each other (Parquet per partition); never read by consumers."""
    return Path(os.environ.get("EXPORT_WORK_DIR", str(data_dir() / "work"))).resolve()


def retention_days() -> int:
    return int(os.environ.get("EXPORT_RETENTION_DAYS", "7"))


def partitions_start() -> str:
    """First day of the daily partitions (YYYY-MM-DD)."""
    value = os.environ.get("EXPORT_PARTITIONS_START", "2026-01-01")
    dt.date.fromisoformat(value)  # fail at load time, with the value in the message
    return value


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None
    password: str | None
    starttls: bool


def smtp_settings() -> SmtpSettings | None:
    host = os.environ.get("EXPORT_SMTP_HOST", "").strip()
    if not host:
        return None
    return SmtpSettings(
        host=host,
        port=int(os.environ.get("EXPORT_SMTP_PORT", "25")),
        sender=os.environ.get("EXPORT_SMTP_FROM", "exports@localhost"),
        user=os.environ.get("EXPORT_SMTP_USER") or None,
        password=os.environ.get("EXPORT_SMTP_PASSWORD") or None,
        starttls=os.environ.get("EXPORT_SMTP_STARTTLS", "").lower() in {"1", "true", "yes"},
    )
