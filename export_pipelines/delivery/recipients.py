"""Who a recurring report may be emailed to (docs/CONTRACT.md §7): limits and domain policy.

Checked at every delivery, after the subscription itself passed its checks and before
anything is built or sent. A refusal is one sentence (`RequestRejected`) and the report
goes to no one, not even to the recipients that would have passed:

* at most `EXPORT_MAX_RECIPIENTS` (default 50) distinct addresses;
* every address is one plain address a mail header reads as exactly one: ASCII, no space,
  control character or line break (no NUL, CR or LF), no display name, quotes, comments,
  angle brackets or separators, exactly one `@`, at most 254 characters (64 before the `@`),
  and a domain of dotted host-name labels;
* its domain is allowed: one of `EXPORT_RECIPIENT_DOMAINS` (comma-separated) when set,
  otherwise one of the domains of the organization's own users' emails (the `users` table
  as it is now). Domains match exactly, in any case: allowing `acme.example.com` allows
  neither `example.com` nor `mail.acme.example.com` (a parent domain such as a shared
  provider's would open one tenant's reports to another's addresses).

No Dagster here: the Dagster layer (defs/reports.py) turns a refusal into a failed run.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable, Sequence

from export_pipelines import settings
from export_pipelines.requests.validation import RequestRejected
from export_pipelines.source.database import SourceDatabase

MAX_ADDRESS_LENGTH = 254  # RFC 5321: the longest forward path, less its angle brackets
MAX_LOCAL_PART_LENGTH = 64  # RFC 5321 §4.5.3.1.1
MAX_SHOWN_CHARS = 60  # an address quoted in a refusal
MAX_ADDRESSES_SHOWN = 3  # then "and N more"

# RFC 5322 dot-atom: no quoted strings, comments, brackets, commas or spaces.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")


def domain_problem(domain: str) -> str | None:
    """Why `domain` is not a host name mail can go to (None if it is one)."""
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        return "its domain is not a host name (dotted letters, digits and hyphens)"
    if domain.rpartition(".")[2].isdigit():
        return "its domain is a number, not a host name"
    return None


def address_problem(address: object) -> str | None:
    """Why `address` is not exactly one plain email address (None if it is one)."""
    if not isinstance(address, str):
        return "it is not text"
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"it is longer than {MAX_ADDRESS_LENGTH} characters"
    if not address.isascii():
        return "it holds characters outside ASCII"
    if any(not "\x21" <= c <= "\x7e" for c in address):
        return "it holds a space, a control character or a line break"
    if address.count("@") != 1:
        return "it must hold exactly one @"
    local, _, domain = address.partition("@")
    if not local or len(local) > MAX_LOCAL_PART_LENGTH or not _LOCAL_PART.fullmatch(local):
        return (
            "its part before the @ is not a plain mailbox name of at most 64 characters "
            "(no display name, quotes, brackets, commas, or leading, trailing or double dots)"
        )
    problem = domain_problem(domain)
    if problem:
        return problem
    # Belt and braces: the standard library reads it back as this one address, no name.
    if email.utils.getaddresses([address]) != [("", address)]:
        return "a mail header would not read it as one address"
    return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def configured_domains() -> frozenset[str] | None:
    """EXPORT_RECIPIENT_DOMAINS, checked (ValueError names a bad entry), or None if unset."""
    domains = settings.recipient_domains()
    if domains is None:
        return None
    for domain in sorted(domains):
        if domain_problem(domain):
            raise ValueError(
                f"EXPORT_RECIPIENT_DOMAINS holds {_shown(domain)}, which is not a domain name; "
                "list domains such as example.com, separated by commas"
            )
    return domains


def organization_domains(db: SourceDatabase, organization_id: str) -> frozenset[str]:
    """The domains of the organization's users' emails, as the database is now."""
    emails = db.fetch_rows(
        "SELECT email FROM users WHERE organization_id = :org", {"org": organization_id}
    )
    return frozenset(
        domain_of(row["email"])
        for row in emails
        if isinstance(row["email"], str) and address_problem(row["email"]) is None
    )


def check_recipients(
    db: SourceDatabase, organization_id: str, recipients: Sequence[str]
) -> tuple[str, ...]:
    """The recipients, if the report may go to every one of them; else RequestRejected.

    Raises ValueError (not a refusal) when EXPORT_RECIPIENT_DOMAINS itself is malformed.
    """
    unique = tuple(dict.fromkeys(recipients))
    if not unique:
        raise RequestRejected("the subscription has no email recipients")
    limit = settings.max_recipients()
    if len(unique) > limit:
        raise RequestRejected(
            f"the subscription has {len(unique):,} email recipients and a report goes to at "
            f"most {limit:,}, so remove some (a mailing list counts as one)"
        )
    for address in unique:
        problem = address_problem(address)
        if problem:
            raise RequestRejected(
                f"email_recipients holds {_shown(address)}, which is not one email address: "
                f"{problem}"
            )
    configured = configured_domains()
    allowed = configured if configured is not None else organization_domains(db, organization_id)
    outside = [a for a in unique if domain_of(a) not in allowed]
    if outside:
        where = (
            "the email domains this service delivers reports to"
            if configured is not None
            else "the domains of the organization's own users' email addresses"
        )
        raise RequestRejected(
            f"email_recipients holds {_count(outside, 'address')} outside {where} "
            f"({_listed(outside)})"
        )
    return unique


def _shown(value: str) -> str:
    """An address quoted in a sentence: escaped (NUL, CR, LF show as \\x00, \\r, \\n), bounded."""
    if len(value) <= MAX_SHOWN_CHARS:
        return repr(value)
    quoted = repr(value[: MAX_SHOWN_CHARS - 1])
    return f"{quoted[:-1]}…{quoted[-1]}"


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 'es' if noun.endswith('s') else 's'}"


def _listed(addresses: Iterable[str]) -> str:
    addresses = list(addresses)
    shown = ", ".join(_shown(a) for a in addresses[:MAX_ADDRESSES_SHOWN])
    more = len(addresses) - MAX_ADDRESSES_SHOWN
    return f"{shown} and {more:,} more" if more > 0 else shown
