"""Configuration from the environment (docs/CONTRACT.md §2); unset means the embedded default."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_MARKER = 'module_name = "export_pipelines.definitions"'


def project_dir() -> Path:
    """The project the embedded default belongs to, whatever the current folder.

    EXPORT_PROJECT_DIR when set; else the nearest folder at or above the current one whose
    `pyproject.toml` names this code location; else the checkout this package runs from
    (an editable install); else the current folder. So `export-pipelines status` run from
    any folder of a checkout reads that checkout's database, never a new one.
    """
    explicit = os.environ.get("EXPORT_PROJECT_DIR", "").strip()
    if explicit:
        return Path(explicit).resolve()
    here = Path.cwd().resolve()
    installed = Path(__file__).resolve().parents[1]
    for folder in (here, *here.parents, installed):
        if _is_project(folder):
            return folder
    return here


def _is_project(folder: Path) -> bool:
    try:
        return PROJECT_MARKER in (folder / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def data_dir() -> Path:
    """The project's local data folder: the embedded database and the stages' working area."""
    explicit = os.environ.get("EXPORT_DATA_DIR", "").strip()
    return Path(explicit).resolve() if explicit else project_dir() / "data"


def dagster_home() -> Path:
    """The Dagster instance folder: DAGSTER_HOME, else the project's `.dagster_home`."""
    explicit = os.environ.get("DAGSTER_HOME", "").strip()
    return Path(explicit).resolve() if explicit else project_dir() / ".dagster_home"


# Connection strings may carry credentials (`postgresql://user:password@host/db`). The Dagster
# layer hands them to resources by variable *name* when they are set (defs/resources.py), so
# their values never enter run config, the UI or event logs; read them through these names.
SOURCE_URL_VAR = "EXPORT_SOURCE_URL"
STORE_URL_VAR = "EXPORT_STORE_URL"


def is_set(name: str) -> bool:
    """True if the variable holds a value (empty or blank counts as unset: the default)."""
    return bool(os.environ.get(name, "").strip())


def default_source_url() -> str:
    """The embedded database (no credentials), used when EXPORT_SOURCE_URL is unset."""
    return f"sqlite:///{data_dir() / 'source.db'}"


def default_store_url() -> str:
    """A local folder, used when EXPORT_STORE_URL is unset."""
    return str(project_dir() / "exports")


def source_url() -> str:
    """The resolved value — a secret when it holds a password: never log or configure it."""
    return os.environ.get(SOURCE_URL_VAR, "").strip() or default_source_url()


def store_url() -> str:
    return os.environ.get(STORE_URL_VAR, "").strip() or default_store_url()


def work_dir() -> Path:
    """Where stages hand files to each other (Parquet per partition); never read by consumers."""
    return Path(os.environ.get("EXPORT_WORK_DIR", str(data_dir() / "work"))).resolve()


WORK_URL_VAR = "EXPORT_WORK_URL"


def work_url() -> str:
    """Where stages hand versions to each other when machines share no disk (s3://…);
    empty: the local work area alone."""
    return os.environ.get(WORK_URL_VAR, "").strip()


def retention_days() -> int:
    return int(os.environ.get("EXPORT_RETENTION_DAYS", "7"))


def partitions_start() -> str:
    """First day of the daily partitions (YYYY-MM-DD).

    EXPORT_PARTITIONS_START when set. On the embedded default, the first day of its demo
    data, so the partition picker starts where the data does (`make dev` creates the
    database before the UI loads); otherwise 2026-01-01.
    """
    value = os.environ.get("EXPORT_PARTITIONS_START", "").strip()
    if not value and not is_set(SOURCE_URL_VAR):
        value = _embedded_first_day() or ""
    value = value or "2026-01-01"
    dt.date.fromisoformat(value)  # fail at load time, with the value in the message
    return value


PARTITIONS_DAYS_VAR = "EXPORT_PARTITIONS_DAYS"


def partitions_days() -> int | None:
    """How many recent days are Dagster partitions; None (unset): every day since
    `partitions_start()`. Dagster's cost per asset (the status query, a backfill's launch,
    the webserver's memory) grows with organizations × days (BENCHMARKS.md, "Partitions at
    scale"): a window bounds it. Older days stay published; requests serve any range."""
    value = os.environ.get(PARTITIONS_DAYS_VAR, "").strip()
    if not value:
        return None
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise ValueError(
            f"{PARTITIONS_DAYS_VAR} must be a whole number of days, at least 1: {value!r}"
        )
    return days


def _embedded_first_day() -> str | None:
    """The day of the embedded database's earliest scan, read without creating the file."""
    import sqlite3

    path = data_dir() / "source.db"
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            (first,) = conn.execute("SELECT min(created_at) FROM scan_results").fetchone()
        return dt.date.fromisoformat(str(first)[:10]).isoformat() if first else None
    except (sqlite3.Error, ValueError):
        return None


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None
    password: str | None = field(repr=False)  # never in a log line or a traceback
    starttls: bool


def smtp_settings() -> SmtpSettings | None:
    """Read at run time, where the mail is sent: the password never enters Dagster config."""
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


_REPORT_CRONS = {"daily": "0 6 * * *", "weekly": "0 6 * * 1", "monthly": "0 6 1 * *"}


def report_cron(cadence: str) -> str:
    """When a cadence's reports go out, in UTC (EXPORT_DAILY_REPORTS_CRON, …_WEEKLY_…,
    …_MONTHLY_…): 06:00 every day, on Mondays, on the 1st by default. Any time of the
    due day delivers the same period (daily: yesterday; weekly: the previous Monday–Sunday,
    on Mondays; monthly: the previous month, on the 1st), and a period goes out once."""
    value = os.environ.get(f"EXPORT_{cadence.upper()}_REPORTS_CRON", "").strip()
    value = value or _REPORT_CRONS[cadence]
    if len(value.split()) != 5:
        raise ValueError(
            f"EXPORT_{cadence.upper()}_REPORTS_CRON must be a 5-field cron, got {value!r}"
        )
    return value


def own_run_rows() -> int:
    """Requests estimated above this many rows are served in a run of their own."""
    return int(os.environ.get("EXPORT_OWN_RUN_ROWS", "200000"))


def max_recipients() -> int:
    """The most addresses one report may go to (EXPORT_MAX_RECIPIENTS, default 50)."""
    raw = os.environ.get("EXPORT_MAX_RECIPIENTS", "").strip() or "50"
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"EXPORT_MAX_RECIPIENTS must be a whole number of at least 1, got {raw!r}")
    return value


def recipient_domains() -> frozenset[str] | None:
    """The email domains reports may go to (EXPORT_RECIPIENT_DOMAINS, comma-separated), in
    lower case; None when unset: then each organization's own users' domains
    (docs/CONTRACT.md §7, export_pipelines/delivery/recipients.py)."""
    raw = os.environ.get("EXPORT_RECIPIENT_DOMAINS", "")
    domains = frozenset(d.strip().lower() for d in raw.split(",") if d.strip())
    return domains or None
