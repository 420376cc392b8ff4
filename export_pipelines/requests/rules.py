"""The rules a request's own fields obey, for every way an export is asked for.

An `export_requests` row, a report subscription and the Launchpad's render config share
them (docs/CONTRACT.md §6, §7): the export type and format, filters, render parameters,
recipients, the configured limits. They read only the values given, never the database
(`validation` adds what the database knows), and refuse with `RequestRejected` and one
sentence: what is wrong and what would be right.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any

from export_pipelines.catalog import CATALOG
from export_pipelines.catalog.spec import ExportSpec, Kind
from export_pipelines.render import Compression, ExportFormat, RenderOptions
from export_pipelines.requests.ledger import parse_timestamp
from export_pipelines.requests.quoting import (
    RequestRejected,
    check_id,
    json_object,
    json_value,
    names,
    shown,
)

FILTER_KEYS = {"date_from", "date_to", "project_ids", "user_id"}
PARAMETER_KEYS = {"delimiter", "bom", "compression", "columns", "formula_guard", "pdf_row_limit"}
DEFAULT_RANGE_DAYS = 30
MAX_PDF_ROW_LIMIT = 1_000_000
MAX_ADDRESS_LENGTH = 254  # RFC 5321's limit on a forward path
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# One address, nothing a mail header could read as a second one or as a display name.
_ADDRESS = re.compile(r'[^\s@,;:<>()\[\]\\"]+@[^\s@,;:<>()\[\]\\"]+')
# Rough bytes per value of each column type in a rendered file, for size estimates.
_BYTES_PER_VALUE = {"string": 40, "int": 8, "float": 10, "bool": 5, "timestamp": 27, "date": 10}


def max_request_bytes() -> int:
    return int(os.environ.get("EXPORT_MAX_REQUEST_BYTES", str(2 * 1024**3)))


def requests_per_hour() -> int:
    return int(os.environ.get("EXPORT_REQUESTS_PER_HOUR", "20"))


def max_range_days() -> int:
    """The longest range one request or report may cover (default: ten years)."""
    return int(os.environ.get("EXPORT_MAX_RANGE_DAYS", "3660"))


def _date(value: Any, name: str) -> dt.date:
    if not isinstance(value, str):
        raise RequestRejected(f"filter {name} must be a date string YYYY-MM-DD, got {shown(value)}")
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise RequestRejected(
            f"filter {name} must be a date YYYY-MM-DD, got {shown(value)}"
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
    filters = json_object(raw, "filters")
    unknown = sorted(set(filters) - FILTER_KEYS)
    if unknown:
        raise RequestRejected(
            f"unknown filter {names(unknown)}; allowed filters: {', '.join(sorted(FILTER_KEYS))}"
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
        check_id(user_id, "filter user_id")
    return {
        "date_from": date_from,
        "date_to": date_to,
        "project_ids": project_ids,
        "user_id": user_id,
    }


def parse_parameters(raw: Any, spec: ExportSpec) -> tuple[RenderOptions, tuple[str, ...] | None]:
    params = json_object(raw, "parameters")
    unknown = sorted(set(params) - PARAMETER_KEYS)
    if unknown:
        raise RequestRejected(
            f"unknown parameter {names(unknown)}; allowed: {', '.join(sorted(PARAMETER_KEYS))}"
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
            f"got {shown(delimiter)}"
        )
    for flag in ("bom", "formula_guard"):
        if flag in params and not isinstance(params[flag], bool):
            raise RequestRejected(
                f"parameter {flag} must be true or false, got {shown(params[flag])}"
            )
    compression_name = params.get("compression")
    known = ", ".join(c.value for c in Compression)
    if compression_name is not None and not isinstance(compression_name, str):
        raise RequestRejected(
            f"parameter compression must be one of {known}, got {shown(compression_name)}"
        )
    try:
        compression = Compression.parse(compression_name)
    except ValueError:
        raise RequestRejected(
            f"parameter unknown compression {shown(compression_name)}; known: {known}"
        ) from None
    row_limit = params.get("pdf_row_limit", 100_000)
    if (
        not isinstance(row_limit, int)
        or isinstance(row_limit, bool)
        or not 1 <= row_limit <= MAX_PDF_ROW_LIMIT
    ):
        raise RequestRejected(
            f"parameter pdf_row_limit must be a whole number from 1 to {MAX_PDF_ROW_LIMIT:,}, "
            f"got {shown(row_limit)}"
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
                f"unknown column {names(unknown_columns)} for {spec.key}; "
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


def estimate_bytes(spec: ExportSpec, rows: int) -> int:
    if spec.kind is Kind.ORGANIZATION_BUNDLE:
        from export_pipelines.catalog import bundled_specs

        widest = max(bundled_specs(), key=lambda s: len(s.columns))
        return estimate_bytes(widest, rows)
    return rows * sum(_BYTES_PER_VALUE[c.type.value] + 1 for c in spec.columns)


def export_spec(export_type: Any) -> ExportSpec:
    spec = CATALOG.get(export_type.strip().lower()) if isinstance(export_type, str) else None
    if spec is None:
        raise RequestRejected(
            f"unknown export type {shown(export_type)}; available types: "
            f"{', '.join(sorted(CATALOG))}"
        )
    return spec


def check_kind(spec: ExportSpec, fmt: ExportFormat, columns: tuple[str, ...] | None) -> None:
    if spec.kind is Kind.USER_BUNDLE:
        if fmt not in (ExportFormat.JSON, ExportFormat.CSV):
            raise RequestRejected(f"{spec.key} is delivered as JSON or CSV, not {fmt.value}")
        if columns is not None:
            raise RequestRejected(f"{spec.key} always holds every column; drop parameter columns")


def export_format(value: Any) -> ExportFormat:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return ExportFormat.parse(value)
    except ValueError:
        known = ", ".join(f.value for f in ExportFormat)
        raise RequestRejected(
            f"unknown export format {shown(value)}; known formats: {known}"
        ) from None


def rate_window(value: Any, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The hour up to a request's creation (`now` if its created_at is unreadable)."""
    try:
        created = (parse_timestamp(value) or now).astimezone(dt.timezone.utc)
        return created - dt.timedelta(hours=1), created
    except (TypeError, ValueError, OverflowError):  # text, or a year-1 timestamp
        return now - dt.timedelta(hours=1), now


def recipients_of(raw: Any) -> list[str]:
    """A JSON list of one or more plain addresses, each of which a header reads as one."""
    value = json_value(raw, "email_recipients") if isinstance(raw, str) else raw
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
                f"email_recipients holds {shown(address)}, which is not one email address"
            )
    return value


def launchpad_options(spec: ExportSpec, parameters: dict[str, Any]) -> RenderOptions:
    """The Launchpad's render config, checked by the request rules for parameters."""
    options, _ = parse_parameters(parameters, spec)
    return options
