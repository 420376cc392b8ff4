"""One set of rules for every way an export is asked for (docs/CONTRACT.md §6, §7).

An `export_requests` row, a report subscription (at every delivery, against the database
as it is then) and the Launchpad's render config are checked with the same rules for who
may receive what, filters and render options, before any work is spent. What passes
becomes a `Deliverable`; what does not gets one sentence a person understands: what is
wrong and what would be right.

Requests are validated as a set (`validate_many`): the sensor checks every row of a tick,
and a shared run re-checks all of its requests, with a few statements for the whole set
(`facts`), not several per row. Each row still meets its checks in one fixed order, so a
row wrong in several ways is told the same first reason however many rows come with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from export_pipelines.catalog.spec import Access, ExportSpec
from export_pipelines.pipeline.deliverable import Deliverable, Purpose
from export_pipelines.render import ExportFormat, RenderOptions
from export_pipelines.requests import facts
from export_pipelines.requests.facts import estimate_rows
from export_pipelines.requests.quoting import (
    MAX_NAMES_IN_MESSAGE,
    RequestRejected,
    check_id,
    id_in_message,
    is_id,
    shown,
)
from export_pipelines.requests.rules import (
    check_kind,
    estimate_bytes,
    export_format,
    export_spec,
    launchpad_options,
    max_request_bytes,
    parse_filters,
    parse_parameters,
    rate_window,
    recipients_of,
    requests_per_hour,
)
from export_pipelines.source.database import SourceDatabase

__all__ = [
    "RequestRejected",
    "estimate_rows",
    "id_in_message",
    "launchpad_options",
    "shown",
    "validate",
    "validate_many",
    "validate_subscription",
]

Users = Mapping[str, Mapping[str, Any]]


def check_recipient(spec: ExportSpec, org_id: Any, user_id: Any, users: Users) -> None:
    """May `user_id` receive `spec` of organization `org_id`, given the `users` found?

    The one permission rule, for requests (the requester) and subscriptions (the owner,
    at every delivery): the user exists, belongs to the organization, and is an admin
    where the type is for admins.
    """
    if not isinstance(user_id, str) or not user_id:
        raise RequestRejected("the request names no user")
    if not isinstance(org_id, str) or not org_id:
        raise RequestRejected("the request names no organization")
    check_id(user_id, "user id")
    check_id(org_id, "organization id")
    user = users.get(user_id)
    if user is None:
        raise RequestRejected(f"user {shown(user_id)} does not exist")
    if user["organization_id"] != org_id:
        raise RequestRejected(
            f"user {shown(user_id)} is not a member of organization {shown(org_id)}"
        )
    if spec.access is Access.ADMIN and not bool(user["is_admin"]):
        raise RequestRejected(f"{spec.key} is available to organization admins only")


def check_recipient_of(db: SourceDatabase, spec: ExportSpec, org_id: Any, user_id: Any) -> None:
    """`check_recipient` against the database as it is now."""
    check_recipient(
        spec, org_id, user_id, facts.users_by_id(db, [user_id] if is_id(user_id) else [])
    )


def _check_projects(found: set[str], project_ids: tuple[str, ...]) -> None:
    missing = [p for p in project_ids if p not in found]
    if missing:
        listed = ", ".join(shown(p) for p in missing[:MAX_NAMES_IN_MESSAGE])
        more = len(missing) - MAX_NAMES_IN_MESSAGE
        raise RequestRejected(
            f"project_ids not found in this organization: {listed}"
            + (f" and {more:,} more" if more > 0 else "")
        )


@dataclass
class _Checking:
    """A request row part-way through its checks: what the checks so far established."""

    row: Mapping[str, Any]
    spec: ExportSpec
    fmt: ExportFormat
    filters: dict[str, Any]
    subject: str | None
    options: RenderOptions | None = None
    columns: tuple[str, ...] | None = None
    rows: int = 0

    @property
    def estimate(self) -> facts.Estimate:
        f = self.filters
        org = self.row["organization_id"]
        return facts.Estimate(self.spec.key, org, f["date_from"], f["date_to"], self.subject)

    def deliverable(self) -> Deliverable:
        return Deliverable(
            spec=self.spec,
            organization_id=self.row["organization_id"],
            date_from=self.filters["date_from"],
            date_to=self.filters["date_to"],
            formats=(self.fmt,),
            options=self.options,
            purpose=Purpose.REQUEST,
            reference=self.row["id"],
            project_ids=self.filters["project_ids"],
            columns=self.columns,
            subject_user_id=self.subject,
            requested_by=self.row["user_id"],
            estimated_rows=self.rows,
        )


def _identify(row: Mapping[str, Any], users: Users, now: dt.datetime) -> _Checking:
    """The checks up to the projects: id, type, format, who asks, filters, whose data."""
    request_id = row.get("id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise RequestRejected("the request has no id")
    check_id(request_id, "the request id")
    spec = export_spec(row.get("export_type"))
    fmt = export_format(row.get("export_format"))
    user_id = row.get("user_id")
    check_recipient(spec, row.get("organization_id"), user_id, users)
    filters = parse_filters(row.get("filters"), spec, now.date())
    subject = None
    if spec.access is Access.SELF:
        subject = filters["user_id"] or user_id
        if subject != user_id:
            raise RequestRejected(f"{spec.key} can only be requested by a user for their own data")
    elif filters["user_id"] is not None:
        raise RequestRejected(f"filter user_id applies to user_data_export only, not {spec.key}")
    return _Checking(row, spec, fmt, filters, subject)


def _shape(checking: _Checking, projects: Mapping[str, set[str]]) -> None:
    """The checks from the projects to the render parameters."""
    if checking.filters["project_ids"]:
        found = projects[checking.row["organization_id"]]
        _check_projects(found, checking.filters["project_ids"])
    checking.options, checking.columns = parse_parameters(
        checking.row.get("parameters"), checking.spec
    )
    check_kind(checking.spec, checking.fmt, checking.columns)


def _size(checking: _Checking, rows: int | Exception) -> None:
    if isinstance(rows, Exception):
        raise rows
    checking.rows = rows
    size, limit = estimate_bytes(checking.spec, rows), max_request_bytes()
    if size > limit:
        raise RequestRejected(
            f"estimated size {size / 1e6:,.1f} MB ({rows:,} rows) exceeds the limit of "
            f"{limit / 1e6:,.1f} MB; narrow the date range or the projects"
        )


def _rate(recent: int) -> None:
    if recent > requests_per_hour():
        raise RequestRejected(
            f"rate limit: {recent} requests by this user in the last hour "
            f"(at most {requests_per_hour()} per hour); try again later"
        )


def validate_many(
    rows: Sequence[Mapping[str, Any]],
    db: SourceDatabase,
    now: dt.datetime,
    estimate: bool = True,
) -> list[Deliverable | Exception]:
    """Check many export_requests rows at once; for each, its deliverable or why not.

    Every row's result is a `Deliverable`, a `RequestRejected` (its sentence), or another
    exception (an internal error, e.g. an estimate the database could not count): one
    row's trouble is never another's. `estimate=False` skips the size estimate (a count
    over the whole range): a run re-validates requests the sensor already sized. The rate
    limit counts up to each request's own creation, so re-validating gives the same answer.
    """
    results: list[Deliverable | Exception | None] = [None] * len(rows)
    live: dict[int, _Checking] = {}

    def keep_passing(check: Callable[[int, _Checking], None]) -> None:
        for i, checking in list(live.items()):
            try:
                check(i, checking)
            except Exception as error:  # noqa: BLE001 - the row's result, not the batch's
                results[i] = error
                del live[i]

    users = facts.users_by_id(db, (r.get("user_id") for r in rows if is_id(r.get("user_id"))))
    for i, row in enumerate(rows):
        try:
            live[i] = _identify(row, users, now)
        except Exception as error:  # noqa: BLE001 - the row's result, not the batch's
            results[i] = error
    with_projects = {c.row["organization_id"] for c in live.values() if c.filters["project_ids"]}
    projects = facts.projects_by_organization(db, with_projects)
    keep_passing(lambda i, c: _shape(c, projects))
    counted = facts.row_estimates(db, (c.estimate for c in live.values())) if estimate else {}
    keep_passing(lambda i, c: _size(c, counted.get(c.estimate, 0)))
    recent = facts.recent_requests(
        db,
        {
            i: (c.row["user_id"], *rate_window(c.row.get("created_at"), now))
            for i, c in live.items()
        },
    )
    keep_passing(lambda i, c: _rate(recent[i]))
    for i, checking in live.items():
        results[i] = checking.deliverable()
    return results  # type: ignore[return-value] - every row has its result now


def validate(
    row: Mapping[str, Any], db: SourceDatabase, now: dt.datetime, estimate: bool = True
) -> Deliverable:
    """Check one export_requests row; return its deliverable, or raise RequestRejected."""
    (result,) = validate_many([row], db, now, estimate)
    if isinstance(result, Exception):
        raise result
    return result


def validate_subscription(
    sub: dict[str, Any], db: SourceDatabase, first: dt.date, last: dt.date
) -> Deliverable:
    """Check one subscription for the period [first, last], against the database as it is now.

    A subscription is checked exactly like a request by its owner: the owner must still
    belong to the organization and be allowed the type; its filters and format obey the
    request rules (the period replaces any date filters).
    """
    subscription_id = sub.get("id")
    if not isinstance(subscription_id, str) or not subscription_id.strip():
        raise RequestRejected("the subscription has no id")
    check_id(subscription_id, "the subscription id")
    spec = export_spec(sub.get("export_type"))
    fmt = export_format(sub.get("export_format"))
    org_id, owner = sub.get("organization_id"), sub.get("user_id")
    try:
        check_recipient_of(db, spec, org_id, owner)
    except RequestRejected as refused:
        raise RequestRejected(
            f"the subscription's owner may no longer receive this report: {refused}"
        ) from None
    filters = parse_filters(sub.get("filters"), spec, today=last, period=(first, last))
    subject = None
    if spec.access is Access.SELF:
        subject = filters["user_id"] or owner
        if subject != owner:
            raise RequestRejected(f"{spec.key} can only be delivered to its own subject")
    elif filters["user_id"] is not None:
        raise RequestRejected(f"filter user_id applies to user_data_export only, not {spec.key}")
    if filters["project_ids"]:
        found = facts.projects_by_organization(db, [org_id])[org_id]
        _check_projects(found, filters["project_ids"])
    check_kind(spec, fmt, None)
    recipients = recipients_of(sub.get("email_recipients"))
    return Deliverable(
        spec=spec,
        organization_id=org_id,
        date_from=first,
        date_to=last,
        formats=(fmt,),
        purpose=Purpose.REPORT,
        reference=subscription_id,
        project_ids=filters["project_ids"],
        subject_user_id=subject,
        requested_by=owner,
        recipients=tuple(dict.fromkeys(recipients)),
    )
