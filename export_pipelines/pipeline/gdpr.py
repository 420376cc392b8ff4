"""The GDPR access export (Art. 15): everything the application holds about one person.

Unlike the table exports, this is a bundle of sections (profile, projects, content, usage,
audit trail, credits, export requests, report subscriptions), each one query, all scoped
to the organization and the user, with a cover document that answers Art. 15(1).
It is rendered as one JSON document, and — when CSV is asked — as a zip of one CSV per
section plus the cover, so a person can open it in a spreadsheet.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from export_pipelines.columns import Column, boolean, integer, string, timestamp
from export_pipelines.render import ExportFormat, RenderedFile, RenderOptions, ReportContext
from export_pipelines.source.database import SourceDatabase


@dataclass(frozen=True)
class Section:
    name: str
    description: str
    query: str
    columns: tuple[Column, ...]
    # The column that names the person in every row (the subject check looks at it).
    subject_column: str


_SCOPE = "organization_id = :org_id"

SECTIONS: tuple[Section, ...] = (
    Section(
        "profile",
        "Your account",
        f"""SELECT id AS user_id, organization_id, email, full_name, is_admin, is_verified,
                  created_at, last_login_at
           FROM users WHERE id = :user_id AND {_SCOPE}""",
        (
            string("user_id"),
            string("organization_id"),
            string("email", pii=True),
            string("full_name", pii=True),
            boolean("is_admin"),
            boolean("is_verified"),
            timestamp("created_at"),
            timestamp("last_login_at"),
        ),
        "user_id",
    ),
    Section(
        "projects",
        "Projects you created",
        f"""SELECT id AS project_id, user_id, name, url, description, created_at, updated_at
           FROM projects WHERE user_id = :user_id AND {_SCOPE} AND created_at < :window_end
           ORDER BY created_at, id""",
        (
            string("project_id"),
            string("user_id"),
            string("name"),
            string("url"),
            string("description"),
            timestamp("created_at"),
            timestamp("updated_at"),
        ),
        "user_id",
    ),
    Section(
        "generated_content",
        "Content you generated",
        """SELECT c.id AS content_id, c.user_id, c.project_id, c.content_type, c.title, c.body,
                  c.word_count, c.created_at
           FROM generated_content c JOIN projects p ON p.id = c.project_id
           WHERE c.user_id = :user_id AND p.organization_id = :org_id
             AND c.created_at < :window_end
           ORDER BY c.created_at, c.id""",
        (
            string("content_id"),
            string("user_id"),
            string("project_id"),
            string("content_type"),
            string("title"),
            string("body"),
            integer("word_count"),
            timestamp("created_at"),
        ),
        "user_id",
    ),
    Section(
        "usage_events",
        "What you did in the application",
        f"""SELECT id AS event_id, user_id, event_type, occurred_at, metadata
           FROM usage_events WHERE user_id = :user_id AND {_SCOPE} AND occurred_at < :window_end
           ORDER BY occurred_at, id""",
        (
            string("event_id"),
            string("user_id"),
            string("event_type"),
            timestamp("occurred_at"),
            string("metadata"),
        ),
        "user_id",
    ),
    Section(
        "audit_log",
        "Audit-log entries you performed, or that concern your account",
        # Other people in these entries (who acted on the person's account, with their IP and
        # browser; whom the person invited) are those people's data: withheld, the action
        # itself is not.
        f"""SELECT id AS entry_id, :user_id AS user_id,
                  CASE WHEN actor_user_id = :user_id THEN actor_user_id END AS actor_user_id,
                  action, target_type,
                  CASE WHEN target_type = 'user' AND target_id <> :user_id THEN NULL
                       ELSE target_id END AS target_id,
                  CASE WHEN actor_user_id = :user_id THEN ip_address END AS ip_address,
                  CASE WHEN actor_user_id = :user_id THEN user_agent END AS user_agent,
                  occurred_at
           FROM audit_log
           WHERE (actor_user_id = :user_id OR (target_type = 'user' AND target_id = :user_id))
             AND {_SCOPE} AND occurred_at < :window_end
           ORDER BY occurred_at, id""",
        (
            string("entry_id"),
            string("user_id"),
            string("actor_user_id"),
            string("action"),
            string("target_type"),
            string("target_id"),
            string("ip_address", pii=True),
            string("user_agent", pii=True),
            timestamp("occurred_at"),
        ),
        "user_id",
    ),
    Section(
        "credit_entries",
        "Credit ledger entries you caused",
        f"""SELECT id AS transaction_id, user_id, amount, balance_after, description,
                  reference_id, created_at
           FROM credit_ledger WHERE user_id = :user_id AND {_SCOPE} AND created_at < :window_end
           ORDER BY created_at, id""",
        (
            string("transaction_id"),
            string("user_id"),
            integer("amount"),
            integer("balance_after"),
            string("description"),
            string("reference_id"),
            timestamp("created_at"),
        ),
        "user_id",
    ),
    Section(
        "export_requests",
        "Exports you requested",
        f"""SELECT id AS request_id, user_id, export_type, export_format, filters, status,
                  created_at, completed_at
           FROM export_requests WHERE user_id = :user_id AND {_SCOPE} AND created_at < :window_end
           ORDER BY created_at, id""",
        (
            string("request_id"),
            string("user_id"),
            string("export_type"),
            string("export_format"),
            string("filters"),
            string("status"),
            timestamp("created_at"),
            timestamp("completed_at"),
        ),
        "user_id",
    ),
    Section(
        "report_subscriptions",
        "Recurring reports you subscribed to",
        f"""SELECT id AS subscription_id, user_id, export_type, export_format, cadence,
                  email_recipients, active, created_at, last_run_at
           FROM report_subscriptions WHERE user_id = :user_id AND {_SCOPE}
             AND created_at < :window_end
           ORDER BY created_at, id""",
        (
            string("subscription_id"),
            string("user_id"),
            string("export_type"),
            string("export_format"),
            string("cadence"),
            string("email_recipients", pii=True),
            boolean("active"),
            timestamp("created_at"),
            timestamp("last_run_at"),
        ),
        "user_id",
    ),
)

# What GDPR Art. 15(1)(a)–(h) obliges the controller to tell the person, in plain words.
COVER = {
    "title": "Your personal data — access request under GDPR Article 15",
    "purposes": (
        "Providing the service you signed up for: running website audits and scans, "
        "generating content, billing usage in credits, securing accounts (audit log), "
        "and delivering the exports and reports you ask for."
    ),
    "categories_of_personal_data": [
        "identity and contact data (name, email address)",
        "account data (role, verification, sign-up and last sign-in times)",
        "content you created (projects, generated text)",
        "usage data (events in the application, with technical metadata)",
        "security data (audit-log entries, IP addresses, user agents)",
        "billing data (credit ledger entries you caused)",
        "your export requests and report subscriptions (including recipients' addresses)",
    ],
    "recipients": (
        "Members and administrators of your organization within the service; our hosting and "
        "email-delivery processors, under data-processing agreements. No sale to third parties."
    ),
    "retention_period": (
        "Account and content data: while your account exists, then deleted within 30 days. "
        "Audit-log and billing data: 6 years after the event, for legal obligations. "
        "Published exports: 7 days after they are produced (EXPORT_RETENTION_DAYS)."
    ),
    "source_of_the_data": (
        "Provided by you, generated by your use of the service, or entered by administrators "
        "of your organization (e.g. invitations)."
    ),
    "your_rights": (
        "You may ask for rectification or erasure, restriction of or objection to processing, "
        "and data portability; you may lodge a complaint with a supervisory authority."
    ),
    "automated_decision_making": "None that produces legal or similarly significant effects.",
}


def section_params(organization_id: str, user_id: str, window_end: dt.datetime) -> dict[str, Any]:
    return {"org_id": organization_id, "user_id": user_id, "window_end": window_end}


def extract_sections(
    db: SourceDatabase, folder: Path, organization_id: str, user_id: str, window_end: dt.datetime
) -> dict[str, int]:
    """Write one Parquet file per section into `folder`; return rows per section."""
    from export_pipelines.pipeline.prepare import (
        write_parquet,
    )  # prepare imports the catalog, which imports us

    params = section_params(organization_id, user_id, window_end)
    counts = {}
    for section in SECTIONS:
        reader = db.stream(section.query, params, section.columns)
        counts[section.name] = write_parquet(reader, folder / f"{section.name}.parquet", {})
    return counts


def foreign_subject_rows(folder: Path, user_id: str) -> int:
    """Rows that do not name the person: must be 0 (nothing of any other user)."""
    count = 0
    for section in SECTIONS:
        column = pq.read_table(folder / f"{section.name}.parquet", columns=[section.subject_column])
        count += sum(1 for v in column.column(0).to_pylist() if v != user_id)
    return count


def cover_document(organization_id: str, user_id: str, as_of: str, counts: dict[str, int]) -> dict:
    return {
        **COVER,
        "subject": {"user_id": user_id, "organization_id": organization_id},
        "data_as_of": as_of,
        "sections": [
            {"name": s.name, "description": s.description, "rows": counts.get(s.name, 0)}
            for s in SECTIONS
        ],
    }


def cover_markdown(cover: dict) -> str:
    lines = [
        f"# {cover['title']}",
        "",
        f"Person: user {cover['subject']['user_id']} "
        f"of organization {cover['subject']['organization_id']}",
        f"Data as of: {cover['data_as_of']}",
        "",
    ]
    for key in (
        "purposes",
        "recipients",
        "retention_period",
        "source_of_the_data",
        "your_rights",
        "automated_decision_making",
    ):
        lines += [f"## {key.replace('_', ' ').capitalize()}", cover[key], ""]
    lines += [
        "## Categories of personal data",
        *[f"- {c}" for c in cover["categories_of_personal_data"]],
        "",
    ]
    lines += [
        "## What this export contains",
        *[f"- {s['name']}.csv — {s['description']} ({s['rows']} rows)" for s in cover["sections"]],
    ]
    return "\n".join(lines) + "\n"


def render_bundle(
    sources: Path, folder: Path, stem: str, formats: list[ExportFormat], cover: dict
) -> list[RenderedFile]:
    """JSON: one document {cover, sections}; CSV: a zip of cover.md and one CSV per section."""
    files = []
    total = sum(s["rows"] for s in cover["sections"])
    options = RenderOptions()
    context = ReportContext(
        export_type="user_data_export",
        title=cover["title"],
        organization_id=cover["subject"]["organization_id"],
        period=cover["data_as_of"],
        as_of=cover["data_as_of"],
    )
    scratch = folder / ".sections"
    scratch.mkdir(exist_ok=True)
    for fmt in formats:
        if fmt is ExportFormat.JSON:
            path = folder / f"{stem}.json"
            with open(path, "wb") as out:
                out.write(b'{"cover": ')
                out.write(json.dumps(cover, ensure_ascii=False, indent=2).encode())
                out.write(b',\n"sections": {')
                for i, section in enumerate(SECTIONS):
                    part = _render_section(sources, section, scratch, fmt, options, context)
                    out.write((("," if i else "") + f"\n{json.dumps(section.name)}: ").encode())
                    out.write(part.path.read_bytes())
                out.write(b"}}\n")
            files.append(RenderedFile(path, fmt, total))
        elif fmt is ExportFormat.CSV:
            path = folder / f"{stem}.zip"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(_entry("cover.md"), cover_markdown(cover))
                for section in SECTIONS:
                    part = _render_section(sources, section, scratch, fmt, options, context)
                    archive.writestr(_entry(f"{section.name}.csv"), part.path.read_bytes())
            files.append(RenderedFile(path, fmt, total))
        else:
            raise ValueError(f"user_data_export is delivered as JSON or CSV, not {fmt.value}")
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    return files


def _render_section(sources, section, scratch, fmt, options, context) -> RenderedFile:
    from export_pipelines.pipeline.build import render_formats

    return render_formats(
        lambda: _reader(sources, section), scratch, section.name, [fmt], options, context
    )[0]


def _reader(sources: Path, section: Section) -> pa.RecordBatchReader:
    parquet = pq.ParquetFile(sources / f"{section.name}.parquet")
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches())


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same bytes for same data
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_user_export(
    db: SourceDatabase,
    scratch: Path,
    organization_id: str,
    user_id: str,
    day: dt.date,
    formats: list[ExportFormat],
    stem: str,
) -> tuple[list[RenderedFile], dict]:
    """Extract, check and render one person's data into `scratch`; return files and cover."""
    window_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    sections = scratch / "sections"
    sections.mkdir(parents=True, exist_ok=True)
    counts = extract_sections(db, sections, organization_id, user_id, window_end)
    foreign = foreign_subject_rows(sections, user_id)
    if foreign:
        raise RuntimeError(f"{foreign} rows of the GDPR export do not belong to user {user_id}")
    if counts["profile"] == 0:
        raise LookupError(f"user {user_id} is not a member of organization {organization_id}")
    cover = cover_document(
        organization_id, user_id, window_end.strftime("%Y-%m-%d %H:%M UTC"), counts
    )
    out = scratch / "files"
    out.mkdir(exist_ok=True)
    return render_bundle(sections, out, stem, formats, cover), cover


def render_user_export(deliverable, db: SourceDatabase, folder: Path):
    """One person's data as of the deliverable's last day: always computed fresh."""
    from export_pipelines.pipeline.build import Rendered

    files, cover = build_user_export(
        db,
        folder,
        deliverable.organization_id,
        deliverable.subject_user_id,
        deliverable.date_to,
        list(deliverable.formats),
        deliverable.stem,
    )
    rows = sum(s["rows"] for s in cover["sections"])
    sections = [{"name": s["name"], "rows": s["rows"]} for s in cover["sections"]]
    return Rendered(files, rows, header={"sections": sections})
