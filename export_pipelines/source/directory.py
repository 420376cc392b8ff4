"""Who is who in the application database: names for ids, and listings for people.

A person picks an organization, user or subscription by its name; every id the service
shows them can be looked up here (the CLI's `orgs`, `users` and `subscriptions`, the PDF's
title block, the partition picker's descriptions).
"""

from __future__ import annotations

from collections.abc import Iterable

from export_pipelines.source.database import SourceDatabase


def organization_names(db: SourceDatabase, ids: Iterable[str] | None = None) -> dict[str, str]:
    """Organization id → name, for the given ids (all organizations when None)."""
    rows = db.fetch_rows("SELECT id, name FROM organizations ORDER BY name, id")
    names = {r["id"]: r["name"] for r in rows}
    if ids is None:
        return names
    return {i: names[i] for i in ids if i in names}


def organization_name(db: SourceDatabase | None, organization_id: str) -> str:
    """The organization's name, or "" when it is unknown (or there is no database)."""
    if db is None:
        return ""
    row = db.fetch_rows(
        "SELECT name FROM organizations WHERE id = :org_id", {"org_id": organization_id}
    )
    return str(row[0]["name"]) if row else ""


def organizations(db: SourceDatabase) -> list[dict]:
    """Every organization with its plan and number of users, by name."""
    return db.fetch_rows(
        """
        SELECT o.id AS id, o.name AS name, o.plan AS plan,
               (SELECT count(*) FROM users u WHERE u.organization_id = o.id) AS users
        FROM organizations o
        ORDER BY o.name, o.id
        """
    )


def users(db: SourceDatabase, organization_id: str | None = None) -> list[dict]:
    """Users (of one organization, or all), admins first, then by name."""
    return db.fetch_rows(
        """
        SELECT u.id AS id, u.full_name AS name, u.email AS email, u.is_admin AS admin,
               o.name AS organization
        FROM users u JOIN organizations o ON o.id = u.organization_id
        WHERE :org_id IS NULL OR u.organization_id = :org_id
        ORDER BY o.name, u.is_admin DESC, u.full_name, u.id
        """,
        {"org_id": organization_id},
    )


def subscriptions(db: SourceDatabase, organization_id: str | None = None) -> list[dict]:
    """Report subscriptions (of one organization, or all) with their owner and cadence."""
    return db.fetch_rows(
        """
        SELECT s.id AS id, s.export_type AS export_type, s.cadence AS cadence,
               s.export_format AS format, s.active AS active, u.email AS owner,
               o.name AS organization
        FROM report_subscriptions s
        JOIN organizations o ON o.id = s.organization_id
        LEFT JOIN users u ON u.id = s.user_id
        WHERE :org_id IS NULL OR s.organization_id = :org_id
        ORDER BY o.name, s.export_type, s.id
        """,
        {"org_id": organization_id},
    )
