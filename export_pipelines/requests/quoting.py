"""How a refusal speaks: what was sent, quoted bounded and printable, and JSON read as such.

Every refusal is one sentence a person reads (docs/CONTRACT.md §6): it may quote what was
sent, so a quote is bounded and escaped whatever arrived (10 MB strings, NUL, lone
surrogates, JSON nested past any recursion limit), and ids are checked before they name a
run, a folder or a query parameter. Nothing here touches the database.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_TEXT_IN_MESSAGE = 80
MAX_NAMES_IN_MESSAGE = 5  # unknown keys, columns, projects: the first few, then a count
MAX_ID_LENGTH = 200
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class RequestRejected(Exception):
    """The request cannot be served; the message is written to `error_message`."""


def json_value(text: str, what: str) -> Any:
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


def json_object(text: Any, what: str) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    value = json_value(text, what) if isinstance(text, str) else text
    if value is None:  # JSON null: none given, like SQL NULL
        return {}
    if not isinstance(value, dict):
        raise RequestRejected(f"{what} must be a JSON object, got {kind_of(value)}")
    return value


def kind_of(value: Any) -> str:
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


def shown(value: Any) -> str:
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


def id_in_message(value: Any) -> str:
    """An id for a message: as it is if it is a valid id (`check_id`), else quoted."""
    return value if is_id(value) else shown(value)


def _name(value: Any) -> str:
    """A key or column name in a message: as it is if plain, else quoted like `shown`."""
    return value if isinstance(value, str) and _PLAIN_NAME.fullmatch(value) else shown(value)


def names(values: list[Any]) -> str:
    """The first few names, then how many more: a message stays one readable sentence."""
    listed = ", ".join(_name(v) for v in values[:MAX_NAMES_IN_MESSAGE])
    more = len(values) - MAX_NAMES_IN_MESSAGE
    return f"{listed} and {more:,} more" if more > 0 else listed


def is_id(value: Any) -> bool:
    """Would `check_id` accept `value` (and is it not empty)? Only such values are bound."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def check_id(value: Any, what: str) -> str:
    """An id as the application writes them (UUIDs): text, printable, at most 200 characters.

    Refused otherwise, before it names a run, a folder or a query parameter: PostgreSQL
    cannot even compare text holding NUL, and no engine encodes a lone surrogate.
    """
    if not isinstance(value, str):
        raise RequestRejected(f"{what} must be an id string, got {kind_of(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise RequestRejected(
            f"{what} {shown(value)} is {len(value):,} characters long; an id has at most "
            f"{MAX_ID_LENGTH}"
        )
    if not value.isprintable():
        raise RequestRejected(
            f"{what} {shown(value)} holds characters no id can have (control, invisible or "
            "unassigned characters, line breaks or invalid Unicode)"
        )
    return value
