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
import re
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
MAX_NAMES_IN_MESSAGE = 5  # unknown keys, columns, projects: the first few, then a count
MAX_ID_LENGTH = 200
MAX_PDF_ROW_LIMIT = 1_000_000
MAX_ADDRESS_LENGTH = 254  # RFC 5321's limit on a forward path
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# One address, nothing a mail header could read as a second one or as a display name.
_ADDRESS = re.compile(r'[^\s@,;:<>()\[\]\\"]+@[^\s@,;:<>()\[\]\\"]+')
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


def _json(text: str, what: str) -> Any:
    """`text` parsed as JSON; anything unreadable is refused with a sentence."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestRejected(
            f"{what} is not valid JSON ({error.msg} at position {error.pos:,})"
        ) from None
    except RecursionError:
        raise RequestRejected(
            f"{what} is nested too deeply to read; send a flat JSON object"
        ) from None
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise RequestRejected(f"{what} holds a number too long to read") from None


def _json_object(text: Any, what: str) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    value = _json(text, what) if isinstance(text, str) else text
    if value is None:  # JSON null: none given, like SQL NULL
        return {}
    if not isinstance(value, dict):
        raise RequestRejected(f"{what} must be a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (not Python's type names)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a value JSON cannot hold"


def _date(value: Any, name: str) -> dt.date:
    if not isinstance(value, str):
        raise RequestRejected(
            f"filter {name} must be a date string YYYY-MM-DD, got {_shown(value)}"
        )
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise RequestRejected(
            f"filter {name} must be a date YYYY-MM-DD, got {_shown(value)}"
        ) from None
    if day == dt.date.max:  # its window would end after the calendar does
        raise RequestRejected(f"filter {name} must be a date before {dt.date.max}")
    return day


def parse_filters(
    raw: Any, spec: ExportSpec, today: dt.date, period: tuple[dt.date, dt.date] | None = None
) -> dict[str, Any]:
    """Validate filter names and types; return date_from, date_to, project_ids, user_id.

    With `period` (a report's), the date filters must still be dates, but the period
    replaces them (docs/CONTRACT.md §7).
    """
    filters = _json_object(raw, "filters")
    unknown = sorted(set(filters) - FILTER_KEYS)
    if unknown:
        raise RequestRejected(
            f"unknown filter {_names(unknown)}; allowed filters: {', '.join(sorted(FILTER_KEYS))}"
        )
    date_to = _date(filters["date_to"], "date_to") if "date_to" in filters else today
    date_from = (
        _date(filters["date_from"], "date_from")
        if "date_from" in filters
        # Never before the calendar's first day (a date_to in year 1).
        else dt.date.fromordinal(max(1, date_to.toordinal() - (DEFAULT_RANGE_DAYS - 1)))
    )
    if period is not None:
        date_from, date_to = period
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
    if user_id is not None:
        _check_id(user_id, "filter user_id")
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
            f"unknown parameter {_names(unknown)}; allowed: {', '.join(sorted(PARAMETER_KEYS))}"
        )
    delimiter = params.get("delimiter", ",")
    if (
        not isinstance(delimiter, str)
        or len(delimiter) != 1
        or delimiter in '"\r\n'
        or "\ud800" <= delimiter <= "\udfff"  # a lone surrogate has no UTF-8 form
    ):
        raise RequestRejected(
            "parameter delimiter must be one character (not a quote or newline), "
            f"got {_shown(delimiter)}"
        )
    for flag in ("bom", "formula_guard"):
        if flag in params and not isinstance(params[flag], bool):
            raise RequestRejected(
                f"parameter {flag} must be true or false, got {_shown(params[flag])}"
            )
    compression_name = params.get("compression")
    known = ", ".join(c.value for c in Compression)
    if compression_name is not None and not isinstance(compression_name, str):
        raise RequestRejected(
            f"parameter compression must be one of {known}, got {_shown(compression_name)}"
        )
    try:
        compression = Compression.parse(compression_name)
    except ValueError:
        raise RequestRejected(
            f"parameter unknown compression {_shown(compression_name)}; known: {known}"
        ) from None
    row_limit = params.get("pdf_row_limit", 100_000)
    if (
        not isinstance(row_limit, int)
        or isinstance(row_limit, bool)
        or not 1 <= row_limit <= MAX_PDF_ROW_LIMIT
    ):
        raise RequestRejected(
            f"parameter pdf_row_limit must be a whole number from 1 to {MAX_PDF_ROW_LIMIT:,}, "
            f"got {_shown(row_limit)}"
        )
    columns = params.get("columns")
    if columns is not None:
        if (
            not isinstance(columns, list)
            or not columns
            or not all(isinstance(c, str) for c in columns)
        ):
            raise RequestRejected("parameter columns must be a non-empty list of column names")
        unknown_columns = [c for c in dict.fromkeys(columns) if c not in spec.column_names]
        if unknown_columns:
            raise RequestRejected(
                f"unknown column {_names(unknown_columns)} for {spec.key}; "
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
    """A value quoted in a message: bounded, and printable whatever was sent.

    Text is quoted with its control characters, line breaks and invalid Unicode escaped
    (`repr` escapes every character `str.isprintable` refuses) and cut to
    `MAX_TEXT_IN_MESSAGE`; numbers and literals read as JSON; a list or an object is
    described, never spelled out (it may be huge, or nested past any recursion limit).
    """
    if isinstance(value, str):
        quoted = repr(value[:MAX_TEXT_IN_MESSAGE])
        if len(value) <= MAX_TEXT_IN_MESSAGE and len(quoted) <= MAX_TEXT_IN_MESSAGE:
            return quoted
        cut = value[: MAX_TEXT_IN_MESSAGE - 3]
        while len(repr(cut)) > MAX_TEXT_IN_MESSAGE - 1:
            cut = cut[:-1]
        quoted = repr(cut)
        return f"{quoted[:-1]}…{quoted[-1]}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}" if abs(value) < 10**18 else "a very large number"
    if isinstance(value, float):
        return repr(value)  # nan, inf, 1e+300: bounded
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value):,} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return f"an object with {len(value):,} key{'' if len(value) == 1 else 's'}"
    return "a value JSON cannot hold"


def shown(value: Any) -> str:
    """`value` quoted for a message written elsewhere (bounded, printable; see `_shown`)."""
    return _shown(value)


def id_in_message(value: Any) -> str:
    """An id for a message: as it is if it is a valid id (`_check_id`), else quoted."""
    if isinstance(value, str) and value and len(value) <= MAX_ID_LENGTH and value.isprintable():
        return value
    return _shown(value)


def _name(value: Any) -> str:
    """A key or column name in a message: as it is if plain, else quoted like `_shown`."""
    return value if isinstance(value, str) and _PLAIN_NAME.fullmatch(value) else _shown(value)


def _names(values: list[Any]) -> str:
    """The first few names, then how many more: a message stays one readable sentence."""
    listed = ", ".join(_name(v) for v in values[:MAX_NAMES_IN_MESSAGE])
    more = len(values) - MAX_NAMES_IN_MESSAGE
    return f"{listed} and {more:,} more" if more > 0 else listed


def _check_id(value: Any, what: str) -> str:
    """An id as the application writes them (UUIDs): text, printable, at most 200 characters.

    Refused otherwise, before it names a run, a folder or a query parameter: PostgreSQL
    cannot even compare text holding NUL, and no engine encodes a lone surrogate.
    """
    if not isinstance(value, str):
        raise RequestRejected(f"{what} must be an id string, got {_kind(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise RequestRejected(
            f"{what} {_shown(value)} is {len(value):,} characters long; an id has at most "
            f"{MAX_ID_LENGTH}"
        )
    if not value.isprintable():
        raise RequestRejected(
            f"{what} {_shown(value)} holds characters no id can have (control, invisible or "
            "unassigned characters, line breaks or invalid Unicode)"
        )
    return value


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
    _check_id(user_id, "user id")
    _check_id(org_id, "organization id")
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
    # The organization's projects, compared here: a list of any length binds no parameter
    # per id (SQLite allows 32,766), and a hostile id (NUL, a lone surrogate) never reaches
    # the database, which could not even take it as a parameter.
    found = set(
        db.fetch_table("SELECT id FROM projects WHERE organization_id = :org", {"org": org_id})
        .column("id")
        .to_pylist()
    )
    missing = [p for p in project_ids if p not in found]
    if missing:
        listed = ", ".join(_shown(p) for p in missing[:MAX_NAMES_IN_MESSAGE])
        more = len(missing) - MAX_NAMES_IN_MESSAGE
        raise RequestRejected(
            f"project_ids not found in this organization: {listed}"
            + (f" and {more:,} more" if more > 0 else "")
        )


def _check_kind(spec: ExportSpec, fmt: ExportFormat, columns: tuple[str, ...] | None) -> None:
    if spec.kind is Kind.USER_BUNDLE:
        if fmt not in (ExportFormat.JSON, ExportFormat.CSV):
            raise RequestRejected(f"{spec.key} is delivered as JSON or CSV, not {fmt.value}")
        if columns is not None:
            raise RequestRejected(f"{spec.key} always holds every column; drop parameter columns")


def _format(value: Any) -> ExportFormat:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return ExportFormat.parse(value)
    except ValueError:
        known = ", ".join(f.value for f in ExportFormat)
        raise RequestRejected(
            f"unknown export format {_shown(value)}; known formats: {known}"
        ) from None


def _created(value: Any, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The hour up to a request's creation (`now` if its created_at is unreadable)."""
    try:
        created = (parse_timestamp(value) or now).astimezone(dt.timezone.utc)
        return created - dt.timedelta(hours=1), created
    except (TypeError, ValueError, OverflowError):  # text, or a year-1 timestamp
        return now - dt.timedelta(hours=1), now


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
    _check_id(request_id, "the request id")
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
    since, created = _created(row.get("created_at"), now)
    recent = db.scalar(
        "SELECT count(*) FROM export_requests WHERE user_id = :user AND created_at >= :since "
        "AND created_at <= :created",
        {"user": user_id, "since": since, "created": created},
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
    _check_id(subscription_id, "the subscription id")
    spec = export_spec(sub.get("export_type"))
    fmt = _format(sub.get("export_format"))
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
        _check_projects(db, org_id, filters["project_ids"])
    _check_kind(spec, fmt, None)
    recipients = _recipients(sub.get("email_recipients"))
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


def _recipients(raw: Any) -> list[str]:
    """A JSON list of one or more plain addresses, each of which a header reads as one."""
    value = _json(raw, "email_recipients") if isinstance(raw, str) else raw
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise RequestRejected("email_recipients must be a JSON list of addresses")
    if not value:
        raise RequestRejected("the subscription has no email recipients")
    for address in value:
        if (
            len(address) > MAX_ADDRESS_LENGTH
            or not address.isprintable()
            or not _ADDRESS.fullmatch(address)
        ):
            raise RequestRejected(
                f"email_recipients holds {_shown(address)}, which is not one email address"
            )
    return value


def launchpad_options(spec: ExportSpec, parameters: dict[str, Any]) -> RenderOptions:
    """The Launchpad's render config, checked by the request rules for parameters."""
    options, _ = parse_parameters(parameters, spec)
    return options
