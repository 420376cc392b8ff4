"""What validating requests needs to know from the database, read for many rows at once.

A sensor tick validates every waiting row, and a shared run re-validates all of its
requests. Asked one row at a time (membership, the organization's projects, the size
estimate, the rate limit) that was ~7 statements a row, and a tick of 150 rows used its
whole time budget. Each read here is one statement for a whole set of rows, whatever their
number: chunked only so that no statement binds more than `IDS_PER_STATEMENT` values or
counts more than `COUNTS_PER_STATEMENT` queries (SQLite's compound SELECT takes at most
500 arms). Only values that passed the id rules are ever bound.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from export_pipelines.catalog import CATALOG, bundled_specs
from export_pipelines.catalog.spec import ExportSpec, Kind, Window, WindowKind
from export_pipelines.source.database import SourceDatabase

IDS_PER_STATEMENT = 500
COUNTS_PER_STATEMENT = 200
# A `:name` parameter, as `SourceDatabase.bind` reads them (not `::` casts).
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    return (values[start : start + size] for start in range(0, len(values), size))


def _placeholders(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    params = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


def users_by_id(db: SourceDatabase, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`{id: {id, organization_id, is_admin}}` for the users among `ids` that exist."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids)), IDS_PER_STATEMENT):
        listed, params = _placeholders("u", chunk)
        for user in db.fetch_rows(
            f"SELECT id, organization_id, is_admin FROM users WHERE id IN ({listed})", params
        ):
            found[user["id"]] = user
    return found


def projects_by_organization(db: SourceDatabase, org_ids: Iterable[str]) -> dict[str, set[str]]:
    """Every project id of each organization in `org_ids` (an empty set for none).

    Compared in Python, not bound: a list of any length binds no parameter per id, and a
    hostile project id (NUL, a lone surrogate) never reaches the database.
    """
    projects: dict[str, set[str]] = {org: set() for org in org_ids}
    for chunk in _chunks(sorted(projects), IDS_PER_STATEMENT):
        listed, params = _placeholders("o", chunk)
        for row in db.fetch_rows(
            f"SELECT organization_id, id FROM projects WHERE organization_id IN ({listed})",
            params,
        ):
            projects[row["organization_id"]].add(row["id"])
    return projects


@dataclass(frozen=True)
class Estimate:
    """One size estimate: the rows `spec_key` would hold for an organization and range."""

    spec_key: str
    organization_id: str
    first: dt.date
    last: dt.date
    subject_user_id: str | None = None

    def counts(self) -> list[tuple[ExportSpec, dict[str, Any]]]:
        """The count queries it sums: (spec, parameters), one per bundled part for a bundle."""
        spec = CATALOG[self.spec_key]
        if spec.kind is Kind.ORGANIZATION_BUNDLE:  # every part, for real
            return [
                _count(part, self.organization_id, self.first, self.last, None)
                for part in bundled_specs()
            ]
        return [_count(spec, self.organization_id, self.first, self.last, self.subject_user_id)]


def _count(
    spec: ExportSpec, org_id: str, first: dt.date, last: dt.date, subject: str | None
) -> tuple[ExportSpec, dict[str, Any]]:
    if spec.window is WindowKind.SNAPSHOT:  # the state at the end of the range
        first = last
    window = Window.for_days(first, last)
    params = {**spec.parameters, "org_id": org_id, "window_end": window.end}
    if subject:
        params["user_id"] = subject
    if spec.window is WindowKind.EVENT:
        params["window_start"] = window.start
    return spec, params


def row_estimates(
    db: SourceDatabase, estimates: Iterable[Estimate]
) -> dict[Estimate, int | Exception]:
    """The estimated rows of each estimate, counted by the database in a few statements.

    Many counts go in one `UNION ALL` statement, each arm the export's own query with its
    parameters renamed apart. If a statement fails, its estimates are counted one by one,
    so an estimate that cannot be counted (kept as its exception) fails only its requests.
    """
    wanted = list(dict.fromkeys(estimates))
    arms = [(i, spec, params) for i, e in enumerate(wanted) for spec, params in e.counts()]
    totals: dict[int, int | Exception] = {}
    for chunk in _chunks(arms, COUNTS_PER_STATEMENT):
        try:
            totals.update(_count_arms(db, chunk))
        except Exception:  # noqa: BLE001 - retried alone below, so one failure stays one
            for index in dict.fromkeys(i for i, _, _ in chunk):
                try:
                    totals.update(_count_arms(db, [a for a in chunk if a[0] == index]))
                except Exception as error:  # noqa: BLE001 - the row's own refusal path
                    totals[index] = error
    return {estimate: totals[i] for i, estimate in enumerate(wanted)}


def _count_arms(
    db: SourceDatabase, arms: Sequence[tuple[int, ExportSpec, Mapping[str, Any]]]
) -> dict[int, int]:
    selects, bound = [], {}
    for n, (index, spec, params) in enumerate(arms):
        prefix = f"a{n}_"
        selects.append(
            f"SELECT {int(index)} AS k, count(*) AS n FROM ("
            + _PARAMETER.sub(lambda m, p=prefix: f":{p}{m.group(1)}", spec.query)
            + ") AS q"
        )
        bound.update({f"{prefix}{name}": value for name, value in params.items()})
    totals: dict[int, int] = defaultdict(int)
    for row in db.fetch_rows(" UNION ALL ".join(selects), bound):
        totals[int(row["k"])] += int(row["n"] or 0)
    return {index: totals[index] for index, _, _ in arms}


def recent_requests(
    db: SourceDatabase, windows: Mapping[Any, tuple[str, dt.datetime, dt.datetime]]
) -> dict[Any, int]:
    """For each key's (user, since, until): the user's requests created in [since, until].

    The windows travel as a `VALUES` list joined to `export_requests`, so every count is
    the one a per-row `count(*) … WHERE user_id = … AND created_at BETWEEN …` would give,
    compared by the engine exactly like it.
    """
    keys = list(windows)
    counts: dict[Any, int] = {}
    for chunk in _chunks(range(len(keys)), IDS_PER_STATEMENT):
        params: dict[str, Any] = {}
        values = []
        for i in chunk:
            user, since, until = windows[keys[i]]
            params.update({f"k{i}": i, f"u{i}": user, f"s{i}": since, f"c{i}": until})
            values.append(f"(:k{i}, :u{i}, :s{i}, :c{i})")
        rows = db.fetch_rows(
            f"WITH w (k, user_id, since, until) AS (VALUES {', '.join(values)}) "
            "SELECT w.k AS k, count(r.id) AS n FROM w LEFT JOIN export_requests r "
            "ON r.user_id = w.user_id AND r.created_at >= w.since AND r.created_at <= w.until "
            "GROUP BY w.k",
            params,
        )
        counts.update({keys[int(row["k"])]: int(row["n"]) for row in rows})
    return counts


def estimate_rows(
    db: SourceDatabase, spec: ExportSpec, organization_id: str, window: Window, extra: dict
) -> int:
    """The rows `spec` would hold for one organization and window (a bundle: its parts)."""
    last = window.end.date() - dt.timedelta(days=1)
    estimate = Estimate(spec.key, organization_id, window.start.date(), last, extra.get("user_id"))
    counted = row_estimates(db, [estimate])[estimate]
    if isinstance(counted, Exception):
        raise counted
    return counted
