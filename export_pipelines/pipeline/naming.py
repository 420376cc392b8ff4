"""The one place that names published folders, file stems and the unit of work.

Published layout (docs/CONTRACT.md §5):
- a partition:  `<T>/org=<org>/date=<day>/<T>_<org>_<day>.<ext>`
- a person (GDPR, as an asset): `user_data_export/org=<org>/date=<day>/user=<user>/`
- a request:    `requests/<request id>/`
- a report:     `reports/<subscription id>/<first>_<last>/`
Ids are values, never paths: every id becomes exactly one safe, non-empty segment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from export_pipelines.catalog.spec import Window

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def path_segment(value: str) -> str:
    """An id as one safe file-name segment.

    Ordinary ids (UUIDs) stay as they are; anything else is percent-encoded, and a very
    long id is cut and suffixed with its hash so that it still names one folder. An empty
    id names no folder at all: it is refused, or its folder would be its parent's.
    """
    if not isinstance(value, str) or value == "":
        raise ValueError("an empty id cannot name a folder")
    if _SAFE_SEGMENT.fullmatch(value) and ".." not in value:
        return value
    encoded = quote(value, safe="", errors="surrogatepass").replace(".", "%2E")
    if len(encoded) > 120:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        encoded = f"{encoded[:80]}~{digest}"
    return encoded


@dataclass(frozen=True)
class ExportPartition:
    """One organization on one UTC day: the unit every export is computed in."""

    organization_id: str
    date: dt.date

    @property
    def key(self) -> str:
        """The multi-partition key string (dimensions sorted by name: date, org)."""
        return f"{self.date.isoformat()}|{self.organization_id}"

    @classmethod
    def from_key(cls, key: Any) -> ExportPartition:
        by_dimension = getattr(key, "keys_by_dimension", None)
        if by_dimension:
            return cls(by_dimension["org"], dt.date.fromisoformat(by_dimension["date"]))
        date, _, org = str(key).partition("|")
        return cls(org, dt.date.fromisoformat(date))

    @property
    def window(self) -> Window:
        return Window.for_days(self.date, self.date)

    def folder(self, export_type: str) -> str:
        return partition_folder(export_type, self.organization_id, self.date)

    def file_stem(self, export_type: str) -> str:
        return file_stem(export_type, self.organization_id, self.date)


def partition_folder(export_type: str, organization_id: str, day: dt.date) -> str:
    return f"{export_type}/org={path_segment(organization_id)}/date={day.isoformat()}"


def subject_folder(organization_id: str, day: dt.date, user_id: str) -> str:
    """A person's GDPR export as an asset: the partition's folder, one level deeper."""
    return (
        f"{partition_folder('user_data_export', organization_id, day)}/user={path_segment(user_id)}"
    )


def request_folder(request_id: str) -> str:
    return f"requests/{path_segment(request_id)}"


def report_folder(subscription_id: str, first: dt.date, last: dt.date) -> str:
    return f"reports/{path_segment(subscription_id)}/{first}_{last}"


def file_stem(
    export_type: str, organization_id: str, first: dt.date, last: dt.date | None = None
) -> str:
    """`<T>_<org>_<day>` for a partition, `<T>_<org>_<first>_<last>` for a requested range."""
    days = first.isoformat() if last is None else f"{first}_{last}"
    return f"{export_type}_{path_segment(organization_id)}_{days}"


# Characters a reader's file name never holds: path separators, what Windows refuses, and
# controls (line breaks would also split a mail header).
_UNREADABLE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def period_label(first: dt.date, last: dt.date) -> str:
    """A period as a person names it: a day, a calendar month, a year, or a range."""
    if first == last:
        return first.isoformat()
    month_end = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(1)
    if first.day == 1 and last == month_end:
        return first.strftime("%Y-%m")
    if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31) and first.year == last.year:
        return str(first.year)
    return f"{first} to {last}"


def reader_file_name(title: str, organization: str, period: str, extension: str) -> str:
    """What a person sees on an attachment: `Scan results — Acme Analytics — 2026-11.pdf`.

    Safe on every file system and mail client: no separators or controls, no leading dots,
    at most 150 characters before the extension. Published files keep their contract names
    (`file_stem`); this is only the name a copy travels under.
    """
    parts = [_UNREADABLE.sub(" ", p) for p in (title, organization, period)]
    parts = [" ".join(p.split()).strip(". ") for p in parts]
    stem = " — ".join(p for p in parts if p) or "Export"
    if len(stem) > 150:
        stem = stem[:149].rstrip() + "…"
    return f"{stem}.{extension}"
