"""One set of rules for every way an export is asked for (docs/CONTRACT.md §6, §7).

An `export_requests` row, a report subscription (at every delivery, against the database
as it is then) and the Launchpad's render config are checked here, with the same rules for
who may receive what, filters and render options, before any work is spent. What passes
becomes a `Deliverable`; what does not gets one sentence a person understands: what is
wrong and what would be right. Nothing here raises anything but `RequestRejected`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from export_pipelines.catalog import CATALOG
from export_pipelines.catalog.spec import Access, ExportSpec, Kind, Window, WindowKind
from export_pipelines.pipeline.deliverable import Deliverable, Purpose
from export_pipelines.render import Compression, ExportFormat, RenderOptions
from export_pipelines.requests.ledger import parse_timestamp
from export_pipelines.source.database import SourceDatabase

FILTER_KEYS = {"date_from", "date_to", "project_ids", "user_id"}
PARAMETER_KEYS = {"delimiter", "bom", "compression", "columns", "formula_guard", "pdf_row_limit"}
DEFAULT_RANGE_DAYS = 30
MAX_TEXT_IN_MESSAGE = 80
# Rough bytes per value of each column type in a rendered file, for size estimates.
_BYTES_PER_VALUE = {"string": 40, "int": 8, "float": 10, "bool": 5, "timestamp": 27, "date": 10}


class RequestRejected(Exception):
    """The request cannot be served; the message is written to `error_message`."""


def max_request_bytes() -> int:
    return int(os.environ.get("EXPORT_MAX_REQUEST_BYTES", str(2 * 1024**3)))


def requests_per_hour() -> int:
    return int(os.environ.get("EXPORT_REQUESTS_PER_HOUR", "20"))


def max_range_days() -> int:
    """The longest range one request or report may cover (default: ten years)."""
    return int(os.environ.get("EXPORT_MAX_RANGE_DAYS", "3660"))


def _json_object(text: Any, what: str) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as error:
        raise RequestRejected(
            f"{what} is not valid JSON ({error.msg} at position {error.pos})"
        ) from None
    if not isinstance(value, dict):
        raise RequestRejected(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _date(value: Any, name: str) -> dt.date:
    if not isinstance(value, str):
        raise RequestRejected(f"filter {name} must be a date string YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RequestRejected(f"filter {name} must be a date YYYY-MM-DD, got {value!r}") from None


def parse_filters(raw: Any, spec: ExportSpec, today: dt.date) -> dict[str, Any]:
    """Validate filter names and types; return date_from, date_to, project_ids, user_id."""
    filters = _json_object(raw, "filters")
    unknown = sorted(set(filters) - FILTER_KEYS)
    if unknown:
        raise RequestRejected(
            f"unknown filter {', '.join(unknown)}; allowed filters: {', '.join(sorted(FILTER_KEYS))}"
        )
    date_to = _date(filters["date_to"], "date_to") if "date_to" in filters else today
    date_from = (
        _date(filters["date_from"], "date_from")
        if "date_from" in filters
        else date_to - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    )
    if date_from > date_to:
        raise RequestRejected(f"date_from {date_from} is after date_to {date_to}")
    if date_to > today:
        raise RequestRejected(f"date_to {date_to} is in the future (today is {today} UTC)")
    span = (date_to - date_from).days + 1
    if span > max_range_days():
        raise RequestRejected(
            f"the range {date_from} to {date_to} covers {span:,} days; one export covers at "
            f"most {max_range_days():,} days, so split it into several requests"
        )
    project_ids = filters.get("project_ids")
    if project_ids is not None:
        if not isinstance(project_ids, list) or not all(isinstance(p, str) for p in project_ids):
            raise RequestRejected("filter project_ids must be a list of project id strings")
        if spec.project_column is None:
            raise RequestRejected(f"{spec.key} cannot be filtered by project_ids")
        project_ids = tuple(dict.fromkeys(project_ids))
    user_id = filters.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise RequestRejected("filter user_id must be a user id string")
    return {
        "date_from": date_from,
        "date_to": date_to,
        "project_ids": project_ids,
        "user_id": user_id,
    }


def parse_parameters(raw: Any, spec: ExportSpec) -> tuple[RenderOptions, tuple[str, ...] | None]:
    params = _json_object(raw, "parameters")
    unknown = sorted(set(params) - PARAMETER_KEYS)
    if unknown:
        raise RequestRejected(
            f"unknown parameter {', '.join(unknown)}; allowed: {', '.join(sorted(PARAMETER_KEYS))}"
        )
    delimiter = params.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise RequestRejected(
            f"parameter delimiter must be one character (not a quote or newline), got {delimiter!r}"
        )
    for flag in ("bom", "formula_guard"):
        if flag in params and not isinstance(params[flag], bool):
            raise RequestRejected(f"parameter {flag} must be true or false, got {params[flag]!r}")
    try:
        compression = Compression.parse(params.get("compression"))
    except ValueError as error:
        raise RequestRejected(f"parameter {error}") from None
    row_limit = params.get("pdf_row_limit", 100_000)
    if not isinstance(row_limit, int) or isinstance(row_limit, bool) or row_limit < 1:
        raise RequestRejected(
            f"parameter pdf_row_limit must be a positive integer, got {row_limit!r}"
        )
    columns = params.get("columns")
    if columns is not None:
        if (
            not isinstance(columns, list)
            or not columns
            or not all(isinstance(c, str) for c in columns)
        ):
            raise RequestRejected("parameter columns must be a non-empty list of column names")
        unknown_columns = [c for c in columns if c not in spec.column_names]
        if unknown_columns:
            raise RequestRejected(
                f"unknown column {', '.join(unknown_columns)} for {spec.key}; "
                f"columns: {', '.join(spec.column_names)}"
            )
        columns = tuple(dict.fromkeys(columns))
    options = RenderOptions(
        csv_delimiter=delimiter,
        csv_bom=params.get("bom", False),
        formula_guard=params.get("formula_guard", True),
        compression=compression,
        pdf_row_limit=row_limit,
    )
    return options, columns


def estimate_rows(
    db: SourceDatabase, spec: ExportSpec, organization_id: str, window: Window, extra: dict
) -> int:
    if spec.kind is Kind.ORGANIZATION_BUNDLE:  # every part, for real
        from export_pipelines.catalog import bundled_specs

        return sum(estimate_rows(db, s, organization_id, window, {}) for s in bundled_specs())
    if spec.window is WindowKind.SNAPSHOT:
        last = window.end.date() - dt.timedelta(days=1)
        window = Window.for_days(last, last)
    params = {**spec.parameters, **extra, "org_id": organization_id, "window_end": window.end}
    if spec.window is WindowKind.EVENT:
        params["window_start"] = window.start
    return int(db.scalar(f"SELECT count(*) FROM ({spec.query}) AS q", params) or 0)


def estimate_bytes(spec: ExportSpec, rows: int) -> int:
    if spec.kind is Kind.ORGANIZATION_BUNDLE:
        from export_pipelines.catalog import bundled_specs

        widest = max(bundled_specs(), key=lambda s: len(s.columns))
        return estimate_bytes(widest, rows)
    return rows * sum(_BYTES_PER_VALUE[c.type.value] + 1 for c in spec.columns)


def _shown(value: Any) -> str:
    """A value quoted in a message: bounded, and printable whatever was sent."""
    text = repr(value)
    return text if len(text) <= MAX_TEXT_IN_MESSAGE else text[: MAX_TEXT_IN_MESSAGE - 1] + "…"


def export_spec(export_type: Any) -> ExportSpec:
    spec = CATALOG.get(export_type.strip().lower()) if isinstance(export_type, str) else None
    if spec is None:
        raise RequestRejected(
            f"unknown export type {_shown(export_type)}; available types: "
            f"{', '.join(sorted(CATALOG))}"
        )
    return spec


def check_recipient_of(db: SourceDatabase, spec: ExportSpec, org_id: Any, user_id: Any) -> None:
    """May `user_id` receive `spec` of organization `org_id`, as the database is now?

    The one permission rule, for requests (the requester) and subscriptions (the owner,
    at every delivery): the user exists, belongs to the organization, and is an admin
    where the type is for admins.
    """
    if not isinstance(user_id, str) or not user_id:
        raise RequestRejected("the request names no user")
    if not isinstance(org_id, str) or not org_id:
        raise RequestRejected("the request names no organization")
    users = db.fetch_rows(
        "SELECT id, organization_id, is_admin FROM users WHERE id = :id", {"id": user_id}
    )
    if not users:
        raise RequestRejected(f"user {_shown(user_id)} does not exist")
    user = users[0]
    if user["organization_id"] != org_id:
        raise RequestRejected(
            f"user {_shown(user_id)} is not a member of organization {_shown(org_id)}"
        )
    if spec.access is Access.ADMIN and not bool(user["is_admin"]):
        raise RequestRejected(f"{spec.key} is available to organization admins only")


def _check_projects(db: SourceDatabase, org_id: str, project_ids: tuple[str, ...]) -> None:
    found = (
        db.fetch_table(
            "SELECT id FROM projects WHERE organization_id = :org AND id IN ("
            + ", ".join(f":p{i}" for i in range(len(project_ids)))
            + ")",
            {"org": org_id, **{f"p{i}": p for i, p in enumerate(project_ids)}},
        )
        .column("id")
        .to_pylist()
    )
    missing = [p for p in project_ids if p not in set(found)]
    if missing:
        raise RequestRejected(
            f"project_ids not found in this organization: {', '.join(map(_shown, missing))}"
        )


def _check_kind(spec: ExportSpec, fmt: ExportFormat, columns: tuple[str, ...] | None) -> None:
    if spec.kind is Kind.USER_BUNDLE:
        if fmt not in (ExportFormat.JSON, ExportFormat.CSV):
            raise RequestRejected(f"{spec.key} is delivered as JSON or CSV, not {fmt.value}")
        if columns is not None:
            raise RequestRejected(f"{spec.key} always holds every column; drop parameter columns")


def _format(value: Any) -> ExportFormat:
    try:
        return ExportFormat.parse(value if isinstance(value, str) else "")
    except ValueError as error:
        raise RequestRejected(str(error)) from None


def validate(
    row: dict[str, Any], db: SourceDatabase, now: dt.datetime, estimate: bool = True
) -> Deliverable:
    """Check one export_requests row; return its deliverable, or raise RequestRejected.

    `estimate=False` skips the size estimate (a count over the whole range): the run
    re-validates a request the sensor already sized.
    """
    request_id = row.get("id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise RequestRejected("the request has no id")
    spec = export_spec(row.get("export_type"))
    fmt = _format(row.get("export_format"))
    org_id, user_id = row.get("organization_id"), row.get("user_id")
    check_recipient_of(db, spec, org_id, user_id)

    filters = parse_filters(row.get("filters"), spec, now.date())
    subject = None
    if spec.access is Access.SELF:
        subject = filters["user_id"] or user_id
        if subject != user_id:
            raise RequestRejected(f"{spec.key} can only be requested by a user for their own data")
    elif filters["user_id"] is not None:
        raise RequestRejected(f"filter user_id applies to user_data_export only, not {spec.key}")
    if filters["project_ids"]:
        _check_projects(db, org_id, filters["project_ids"])
    options, columns = parse_parameters(row.get("parameters"), spec)
    _check_kind(spec, fmt, columns)

    window = Window.for_days(filters["date_from"], filters["date_to"])
    extra = {"user_id": subject} if subject else {}
    rows = estimate_rows(db, spec, org_id, window, extra) if estimate else 0
    size = estimate_bytes(spec, rows)
    limit = max_request_bytes()
    if size > limit:
        raise RequestRejected(
            f"estimated size {size / 1e6:,.1f} MB ({rows:,} rows) exceeds the limit of "
            f"{limit / 1e6:,.1f} MB; narrow the date range or the projects"
        )

    # Counted up to this request's own creation, so re-validating later gives the same answer.
    try:
        created = parse_timestamp(row.get("created_at")) or now
    except (TypeError, ValueError):
        created = now
    recent = db.scalar(
        "SELECT count(*) FROM export_requests WHERE user_id = :user AND created_at >= :since "
        "AND created_at <= :created",
        {"user": user_id, "since": created - dt.timedelta(hours=1), "created": created},
    )
    if int(recent or 0) > requests_per_hour():
        raise RequestRejected(
            f"rate limit: {recent} requests by this user in the last hour "
            f"(at most {requests_per_hour()} per hour); try again later"
        )

    return Deliverable(
        spec=spec,
        organization_id=org_id,
        date_from=filters["date_from"],
        date_to=filters["date_to"],
        formats=(fmt,),
        options=options,
        purpose=Purpose.REQUEST,
        reference=request_id,
        project_ids=filters["project_ids"],
        columns=columns,
        subject_user_id=subject,
        requested_by=user_id,
        estimated_rows=rows,
    )


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
    spec = export_spec(sub.get("export_type"))
    fmt = _format(sub.get("export_format"))
    org_id, owner = sub.get("organization_id"), sub.get("user_id")
    try:
        check_recipient_of(db, spec, org_id, owner)
    except RequestRejected as refused:
        raise RequestRejected(
            f"the subscription's owner may no longer receive this report: {refused}"
        ) from None
    filters = parse_filters(sub.get("filters"), spec, today=last)
    subject = None
    if spec.access is Access.SELF:
        subject = filters["user_id"] or owner
        if subject != owner:
            raise RequestRejected(f"{spec.key} can only be delivered to its own subject")
    if filters["project_ids"]:
        _check_projects(db, org_id, filters["project_ids"])
    _check_kind(spec, fmt, None)
    try:
        recipients = json.loads(sub.get("email_recipients") or "[]")
    except (TypeError, ValueError):
        raise RequestRejected("email_recipients must be a JSON list of addresses") from None
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise RequestRejected("email_recipients must be a JSON list of addresses")
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


def launchpad_options(spec: ExportSpec, parameters: dict[str, Any]) -> RenderOptions:
    """The Launchpad's render config, checked by the request rules for parameters."""
    options, _ = parse_parameters(parameters, spec)
    return options
