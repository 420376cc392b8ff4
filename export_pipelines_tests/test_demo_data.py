"""Tests of the deterministic demo-data generator (export_pipelines.source.demo_data)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import io
import ipaddress
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from export_pipelines.source import demo_data
from export_pipelines.source.demo_data import TABLE_ORDER, DemoParams, generate

SCHEMA_SQL = Path(demo_data.__file__).with_name("schema.sql")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SQL_TO_ARROW = {
    "TEXT": pa.string(),
    "INTEGER": pa.int64(),
    "BIGINT": pa.int64(),
    "DOUBLE PRECISION": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}
EVENT_TIME = {
    "audits": "created_at",
    "scan_results": "created_at",
    "generated_content": "created_at",
    "content_events": "occurred_at",
    "usage_events": "occurred_at",
    "credit_ledger": "created_at",
    "audit_log": "occurred_at",
}
SMALL = DemoParams(organizations=4, days=12, events_per_day=30, seed=7)
# Busy enough that every day is cut into several time slices (blocks of one day).
BUSY = DemoParams(organizations=2, days=2, events_per_day=40_000, seed=11)


# --- helpers -----------------------------------------------------------------------------------


def parse_schema() -> dict[str, list[tuple[str, str, str | None]]]:
    """(column, SQL type, referenced table) per table, in file order, from schema.sql."""
    sql = re.sub(r"--[^\n]*", "", SCHEMA_SQL.read_text())
    tables = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, flags=re.DOTALL):
        columns = []
        for line in filter(None, (line.strip() for line in body.splitlines())):
            match = re.match(
                r"(\w+)\s+(DOUBLE PRECISION|TEXT|INTEGER|BIGINT|BOOLEAN|TIMESTAMP)\b"
                r"(?:.*REFERENCES (\w+)\()?",
                line,
            )
            assert match, f"unparsed column line in {name}: {line!r}"
            columns.append(match.groups())
        tables[name] = columns
    return tables


def collect(params: DemoParams, chunk_rows: int = 100_000) -> dict[str, list[pa.Table]]:
    """All chunks of a generation, per table, in the order yielded."""
    chunks: dict[str, list[pa.Table]] = collections.defaultdict(list)
    for name, chunk in generate(params, chunk_rows=chunk_rows):
        chunks[name].append(chunk)
    return dict(chunks)


@functools.cache
def frames(params: DemoParams) -> dict[str, pd.DataFrame]:
    """One pandas frame per table (nullable values as None/NaN/NaT)."""
    return {name: pa.concat_tables(c).to_pandas() for name, c in collect(params).items()}


def ipc_bytes(table: pa.Table) -> bytes:
    """The Arrow IPC serialisation of a table, for byte-for-byte comparison."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return sink.getvalue()


def owners(f: dict[str, pd.DataFrame]) -> dict[str, dict[str, str]]:
    """For each parent table, id -> organization id."""
    projects = dict(zip(f["projects"].id, f["projects"].organization_id, strict=True))
    audits = dict(zip(f["audits"].id, f["audits"].project_id.map(projects), strict=True))
    content = dict(
        zip(f["generated_content"].id, f["generated_content"].project_id.map(projects), strict=True)
    )
    return {
        "organizations": dict(zip(f["organizations"].id, f["organizations"].id, strict=True)),
        "users": dict(zip(f["users"].id, f["users"].organization_id, strict=True)),
        "projects": projects,
        "audits": audits,
        "generated_content": content,
        "export_requests": dict(
            zip(f["export_requests"].id, f["export_requests"].organization_id, strict=True)
        ),
        "report_subscriptions": dict(
            zip(
                f["report_subscriptions"].id, f["report_subscriptions"].organization_id, strict=True
            )
        ),
    }


def check_reference(
    child: pd.Series, child_org: pd.Series, parent: dict[str, str], nullable: bool = False
) -> None:
    """Every non-null reference resolves to a parent row of the same organization."""
    present = child.notna()
    if not nullable:
        assert present.all(), "unexpected null reference"
    assert present.any(), "no references to check"
    resolved = child[present].map(parent)
    assert resolved.notna().all(), "dangling reference"
    assert (resolved == child_org[present]).all(), "reference crosses organizations"


def window(params: DemoParams) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the generated history."""
    end = pd.Timestamp(params.end_date)
    return end - pd.Timedelta(days=params.days), end


# --- schema and shape --------------------------------------------------------------------------


def test_table_order_is_schema_order_with_parents_first():
    schema = parse_schema()
    assert len(schema) == 12
    assert list(TABLE_ORDER) == list(schema)
    position = {name: i for i, name in enumerate(TABLE_ORDER)}
    references = [(t, ref) for t, cols in schema.items() for *_, ref in cols if ref]
    assert references
    for table, parent in references:
        assert position[parent] < position[table], (table, parent)


@pytest.mark.parametrize("chunk_rows", [100_000, 50])
def test_columns_and_types_match_schema_sql(chunk_rows):
    schema = parse_schema()
    chunks = collect(SMALL, chunk_rows)
    assert set(chunks) == set(schema)
    for name, columns in schema.items():
        expected = [(col, SQL_TO_ARROW[sql_type]) for col, sql_type, _ in columns]
        assert chunks[name], name
        for chunk in chunks[name]:
            assert [(f.name, f.type) for f in chunk.schema] == expected, name


def test_every_table_is_non_empty_with_default_params():
    counts = {
        name: sum(c.num_rows for c in chunks) for name, chunks in collect(DemoParams()).items()
    }
    assert set(counts) == set(TABLE_ORDER)
    assert all(n > 0 for n in counts.values()), counts
    params = DemoParams()
    assert counts["organizations"] == params.organizations
    assert counts["users"] == params.organizations * params.users_per_org
    assert counts["projects"] == params.organizations * params.projects_per_org
    # The volume knob is exact for scan results.
    assert counts["scan_results"] == params.organizations * params.days * params.events_per_day


def test_tables_are_yielded_in_order_and_contiguously():
    names = [name for name, _ in generate(SMALL, chunk_rows=40)]
    deduplicated = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert deduplicated == list(TABLE_ORDER)


# --- determinism and chunking ------------------------------------------------------------------


def test_same_params_give_byte_identical_data():
    first, second = collect(SMALL), collect(SMALL)
    assert set(first) == set(second) == set(TABLE_ORDER)
    for name in TABLE_ORDER:
        assert len(first[name]) == len(second[name])
        for a, b in zip(first[name], second[name], strict=True):
            assert ipc_bytes(a) == ipc_bytes(b), name


def test_seed_changes_the_data():
    a = pa.concat_tables(collect(SMALL)["scan_results"])
    b = pa.concat_tables(collect(dataclasses.replace(SMALL, seed=8))["scan_results"])
    assert not a.column("id").equals(b.column("id"))
    assert not a.column("dcs_score").equals(b.column("dcs_score"))


@pytest.mark.parametrize("params", [SMALL, BUSY], ids=["small", "busy"])
def test_chunks_respect_chunk_rows_and_do_not_change_the_data(params):
    chunk_rows = 977 if params is BUSY else 37
    small = collect(params, chunk_rows)
    big = collect(params, 10_000_000)
    for name in TABLE_ORDER:
        sizes = [c.num_rows for c in small[name]]
        assert all(0 < s <= chunk_rows for s in sizes), name
        assert all(s == chunk_rows for s in sizes[:-1]), name  # only the last chunk is short
        assert len(big[name]) == 1
        assert ipc_bytes(pa.concat_tables(small[name])) == ipc_bytes(big[name][0]), name


def test_busy_params_really_cut_days_into_slices():
    # Guards the BUSY parametrisations above: they are only meaningful if days are sliced.
    blocks = demo_data._World(BUSY).blocks
    assert any(block.parts > 1 for block in blocks)
    assert not any(block.parts > 1 for block in demo_data._World(SMALL).blocks)


def test_a_million_rows_can_be_generated_chunk_by_chunk():
    params = DemoParams(organizations=2, days=5, events_per_day=100_000)
    rows, chunks, biggest = 0, 0, 0
    for name, chunk in generate(params, chunk_rows=100_000):
        if name == "scan_results":
            rows += chunk.num_rows
            chunks += 1
            biggest = max(biggest, chunk.num_rows)
        elif rows:
            break  # later tables are not needed here; the generator is lazy
    assert rows == 1_000_000
    assert chunks == 10
    assert biggest == 100_000


# --- ids and references ------------------------------------------------------------------------


@pytest.mark.parametrize("params", [SMALL, BUSY], ids=["small", "busy"])
def test_ids_are_uuid_shaped_and_globally_unique(params):
    f = frames(params)
    ids = pd.concat(
        [f[name].id for name in TABLE_ORDER] + [f["export_requests"].run_id.dropna()],
        ignore_index=True,
    )
    assert (
        len(ids)
        == sum(len(f[name]) for name in TABLE_ORDER) + f["export_requests"].run_id.notna().sum()
    )
    assert ids.map(lambda s: bool(UUID.match(s))).all()
    assert ids.is_unique
    # All ids have the same length, so unique ids cannot be substrings of one another.
    assert ids.str.len().nunique() == 1


@pytest.mark.parametrize("params", [SMALL, BUSY], ids=["small", "busy"])
def test_foreign_keys_resolve_within_the_organization(params):
    f = frames(params)
    own = owners(f)
    projects, audits, content = own["projects"], own["audits"], own["generated_content"]
    users = own["users"]
    check_reference(f["users"].organization_id, f["users"].organization_id, own["organizations"])
    p = f["projects"]
    check_reference(p.user_id, p.organization_id, users)
    a = f["audits"]
    check_reference(a.project_id, a.project_id.map(projects), projects)
    s = f["scan_results"]
    assert s.audit_id.isin(audits.keys()).all()
    g = f["generated_content"]
    check_reference(g.user_id, g.project_id.map(projects), users)
    e = f["content_events"]
    assert e.content_id.isin(content.keys()).all()
    u = f["usage_events"]
    check_reference(u.organization_id, u.organization_id, own["organizations"])
    check_reference(u.user_id, u.organization_id, users, nullable=True)
    ledger = f["credit_ledger"]
    check_reference(ledger.user_id, ledger.organization_id, users, nullable=True)
    check_reference(ledger.reference_id, ledger.organization_id, audits, nullable=True)
    log = f["audit_log"]
    check_reference(log.actor_user_id, log.organization_id, users, nullable=True)
    kinds = {
        "user": users,
        "project": projects,
        "organization": own["organizations"],
        "export_request": own["export_requests"],
        "report_subscription": own["report_subscriptions"],
    }
    for kind, parent in kinds.items():
        rows = log[log.target_type == kind]
        check_reference(rows.target_id, rows.organization_id, parent)
    assert log[log.target_type == "api_key"].target_id.isna().all()
    for name in ("export_requests", "report_subscriptions"):
        t = f[name]
        check_reference(t.organization_id, t.organization_id, own["organizations"])
        check_reference(t.user_id, t.organization_id, users)
    # Metadata that names a project names one of the event's organization.
    meta = u.metadata.dropna().map(json.loads)
    named = meta.map(lambda m: m.get("project_id"))
    has_project = named.notna()
    assert has_project.any()
    assert (named[has_project].map(projects) == u.organization_id[meta.index][has_project]).all()


@pytest.mark.parametrize("params", [SMALL, BUSY], ids=["small", "busy"])
def test_children_are_never_older_than_their_parents(params):
    f = frames(params)
    audit_time = dict(zip(f["audits"].id, f["audits"].created_at, strict=True))
    scans = f["scan_results"]
    assert (scans.created_at >= scans.audit_id.map(audit_time)).all()
    content_time = dict(
        zip(f["generated_content"].id, f["generated_content"].created_at, strict=True)
    )
    events = f["content_events"]
    assert len(events) > 0
    assert (events.occurred_at >= events.content_id.map(content_time)).all()
    users = f["users"]
    logged_in = users.last_login_at.notna()
    assert (users.last_login_at[logged_in] >= users.created_at[logged_in]).all()
    p = f["projects"]
    assert (p.updated_at >= p.created_at).all()


# --- values ------------------------------------------------------------------------------------


def test_scores_are_in_range_and_sometimes_null():
    scans = frames(SMALL)["scan_results"]
    for column in ("dcs_score", "ai_citation_score"):
        values = scans[column]
        assert values.isna().any(), column
        assert values.notna().mean() > 0.5, column
        present = values.dropna()
        assert present.between(0, 100).all(), column
        assert present.nunique() > 50, column
        assert not np.signbit(present).any(), column  # no -0.0
    audit_type = dict(
        zip(frames(SMALL)["audits"].id, frames(SMALL)["audits"].audit_type, strict=True)
    )
    quick = scans.audit_id.map(audit_type) == "quick"
    assert quick.any()
    assert scans.ai_citation_score[quick].isna().all()  # quick audits do no AI checks


def test_text_exercises_unicode_quotes_commas_newlines_and_formulas():
    f = frames(DemoParams())
    body = f["generated_content"].body
    text = pd.concat(
        [
            body,
            f["generated_content"].title,
            f["users"].full_name,
            f["projects"].description.dropna(),
            f["organizations"].name,
        ],
        ignore_index=True,
    )
    for needle in ('"', ",", "\n", "'", "é", "ü"):
        assert text.str.contains(needle, regex=False).any(), needle
    assert text.map(lambda s: any(ord(ch) > 0x2E80 for ch in s)).any()  # CJK
    assert text.map(lambda s: any("\u0370" <= ch <= "\u03ff" for ch in s)).any()  # Greek
    assert text.map(lambda s: any(ord(ch) > 0xFFFF for ch in s)).any()  # emoji
    assert body.str.contains("\n").mean() > 0.5
    assert (f["generated_content"].word_count == body.str.split().str.len()).all()
    descriptions = f["projects"].description
    assert descriptions.isna().any()
    assert {"=", "+", "@"} <= set(descriptions.dropna().str[:1])
    names = f["users"].full_name
    assert names.str.contains("'").any()
    assert names.map(lambda s: any(ord(ch) > 0x2E80 for ch in s)).any()
    assert names.map(lambda s: any("\u0370" <= ch <= "\u03ff" for ch in s)).any()


def test_tenants_look_real_and_share_project_names():
    f = frames(SMALL)
    assert set(f["organizations"].plan) == {"free", "pro", "enterprise"}
    users = f["users"]
    admins = users.groupby("organization_id").is_admin.sum()
    assert admins.between(1, 2).all()
    assert set(admins) == {1, 2}
    assert (users.groupby("organization_id").is_admin.count() > admins).all()  # members too
    assert set(users.is_verified) == {True, False}
    assert users.last_login_at.isna().any() and users.last_login_at.notna().any()
    assert users.email.is_unique
    assert users.email.str.fullmatch(r"[a-z0-9.\-]+@[a-z0-9.\-]+\.example\.com").all()
    names = f["projects"].groupby("name").organization_id.nunique()
    assert names["Website"] == names["Blog"] == SMALL.organizations
    assert f["projects"].url.str.startswith("https://").all()
    assert f["audits"].audit_type.isin(["full", "quick", "ai_citation"]).all()
    assert set(f["audits"].status) <= {"pending", "running", "completed", "failed"}
    assert {"completed", "failed"} <= set(f["audits"].status)
    assert f["content_events"].event_type.isin(["view", "share", "citation"]).all()
    assert set(f["content_events"].event_type) == {"view", "share", "citation"}


@pytest.mark.parametrize("params", [DemoParams(), SMALL, BUSY], ids=["default", "small", "busy"])
def test_ledger_balances_are_running_sums_in_time_order(params):
    f = frames(params)
    ledger = f["credit_ledger"]
    assert (ledger.amount > 0).any() and (ledger.amount < 0).any()
    for org, rows in ledger.groupby("organization_id"):
        rows = rows.sort_values("created_at", kind="stable")
        assert rows.created_at.is_unique, org  # a running balance needs a strict order
        assert (rows.balance_after.to_numpy() == rows.amount.cumsum().to_numpy()).all(), org
        assert (rows.balance_after >= 0).all(), org
    assert len(ledger.organization_id.unique()) == params.organizations
    # Net charges per audit are what the audit says it consumed.
    audits = f["audits"].set_index("id")
    charged = -ledger.dropna(subset=["reference_id"]).groupby("reference_id").amount.sum()
    consumed = audits.credits_consumed
    assert (charged.reindex(consumed.index, fill_value=0) == consumed).all()
    assert (consumed > 0).any()
    assert ledger.reference_id.isna().any()


def test_event_times_are_in_the_window_and_shared_across_orgs():
    params = SMALL
    f = frames(params)
    start, end = window(params)
    own = owners(f)
    for name, column in EVENT_TIME.items():
        table = f[name]
        times = table[column]
        assert times.min() >= start and times.max() < end, name
        assert (times.dt.microsecond % 1000 != 0).any(), name  # real microseconds
        org = org_of(name, table, own)
        per_time = pd.DataFrame({"t": times, "org": org}).groupby("t").org.nunique()
        shared = set(per_time[per_time > 1].index)
        orgs_sharing = set(org[times.isin(shared)])
        assert orgs_sharing == set(f["organizations"].id), name
    usage = f["usage_events"].occurred_at
    assert (usage == usage.dt.normalize()).any()  # exactly 00:00:00.000000
    last = usage.dt.normalize() + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    assert (usage == last).any()  # exactly 23:59:59.999999
    assert (usage == end - pd.Timedelta(microseconds=1)).any()  # the window's last instant
    assert (usage == start).any()  # and its first


def org_of(name: str, table: pd.DataFrame, own: dict[str, dict[str, str]]) -> pd.Series:
    """Organization id of each row of an event table."""
    if "organization_id" in table:
        return table.organization_id
    parent_column, parent = {
        "audits": ("project_id", "projects"),
        "scan_results": ("audit_id", "audits"),
        "generated_content": ("project_id", "projects"),
        "content_events": ("content_id", "generated_content"),
    }[name]
    return table[parent_column].map(own[parent])


def test_rows_of_organizations_are_interleaved_in_time_order():
    usage = frames(SMALL)["usage_events"]
    assert usage.occurred_at.is_monotonic_increasing
    switches = (usage.organization_id != usage.organization_id.shift()).sum()
    assert switches > len(usage) / 4


def test_usage_and_audit_log_details():
    f = frames(SMALL)
    usage = f["usage_events"]
    assert usage.user_id.isna().any() and usage.user_id.notna().mean() > 0.8
    assert {"login", "api_call", "scan_started", "export_downloaded"} <= set(usage.event_type)
    meta = usage.metadata.dropna()
    assert usage.metadata.isna().any()
    assert meta.map(lambda m: isinstance(json.loads(m), dict)).all()
    log = f["audit_log"]
    assert {"project.created", "user.invited", "export.downloaded"} <= set(log.action)
    assert log.actor_user_id.isna().any() and log.actor_user_id.notna().any()
    addresses = log.ip_address.dropna().map(ipaddress.ip_address)
    assert {a.version for a in addresses} == {4, 6}
    # IPv6 text is canonical, so exports and database round trips agree on it.
    assert (addresses.map(str) == log.ip_address.dropna()).all()
    assert log.user_agent.notna().any() and log.user_agent.isna().any()


def test_export_requests_are_valid_pending_requests_and_history():
    params = SMALL
    f = frames(params)
    start, end = window(params)
    requests = f["export_requests"]
    assert set(requests.status) == {"PENDING", "COMPLETED"}
    pending = requests[requests.status == "PENDING"]
    assert (pending.groupby("organization_id").size() >= 1).all()
    assert pending.organization_id.nunique() == params.organizations
    assert pending.export_type.isin(
        ["scan_results", "credit_usage_report", "projects_summary"]
    ).all()
    assert pending.export_format.isin(["CSV", "JSON", "PARQUET"]).all()
    assert pending.parameters.isna().any()
    assert pending.parameters.dropna().eq("{}").all()
    assert (pending.progress_percentage == 0).all()
    assert pending.file_path.isna().all() and pending.run_id.isna().all()
    for text in requests.filters:
        filters = json.loads(text)
        assert set(filters) == {"date_from", "date_to"}
        date_from = pd.Timestamp(datetime.date.fromisoformat(filters["date_from"]))
        date_to = pd.Timestamp(datetime.date.fromisoformat(filters["date_to"]))
        assert start <= date_from <= date_to < end
    assert (pending.created_at < end).all() and (pending.created_at >= start).all()
    done = requests[requests.status == "COMPLETED"]
    assert len(done) > 0
    assert (done.progress_percentage == 100).all()
    assert (
        done[["file_path", "file_size", "row_count", "checksum_sha256", "run_id"]]
        .notna()
        .all()
        .all()
    )
    assert done.checksum_sha256.str.fullmatch(r"[0-9a-f]{64}").all()
    assert ((done.created_at <= done.started_at) & (done.started_at <= done.completed_at)).all()
    assert (done.completed_at < done.expires_at).all()


def test_report_subscriptions_cover_every_cadence_per_org():
    params = SMALL
    subs = frames(params)["report_subscriptions"]
    active = subs[subs.active]
    per_org = active.groupby("organization_id").cadence.apply(sorted)
    assert len(per_org) == params.organizations
    assert per_org.map(lambda c: c == ["daily", "monthly", "weekly"]).all()
    assert (subs[~subs.active].groupby("organization_id").size() == 1).all()
    assert subs[~subs.active].organization_id.nunique() == params.organizations
    assert subs.export_type.isin(["scan_results", "credit_usage_report"]).all()
    assert subs.export_format.isin(["CSV", "EXCEL", "PDF"]).all()
    assert set(subs.export_format) == {"CSV", "EXCEL", "PDF"}
    recipients = subs.email_recipients.map(json.loads)
    assert recipients.map(len).between(1, 2).all()
    assert set(recipients.map(len)) == {1, 2}
    addresses = [a for group in recipients for a in group]
    assert all(re.fullmatch(r"[a-z0-9.\-]+@[a-z0-9\-]+\.example\.com", a) for a in addresses)
    # Each recipient is at the domain of the organization's own users.
    users = frames(params)["users"]
    by_org = users.assign(domain=users.email.str.split("@").str[1]).groupby("organization_id")
    domains = by_org.domain.agg(set)
    for org, group in zip(subs.organization_id, recipients):
        assert {a.split("@")[1] for a in group} <= domains[org]


# --- params ------------------------------------------------------------------------------------


def test_end_date_moves_the_window():
    params = DemoParams(
        organizations=1, days=3, events_per_day=5, end_date=datetime.date(2024, 3, 1)
    )
    times = pa.concat_tables(collect(params)["scan_results"]).column("created_at")
    start, end = window(params)
    assert pc.min(times).as_py() >= start.to_pydatetime()
    assert pc.max(times).as_py() < end.to_pydatetime()
    assert str(pc.min(times).as_py().date()) == "2024-02-27"  # 2024 is a leap year


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"organizations": 0}, ValueError),
        ({"days": -1}, ValueError),
        ({"events_per_day": 1.5}, ValueError),
        ({"seed": -3}, ValueError),
        ({"end_date": datetime.datetime(2026, 1, 1)}, TypeError),
        ({"organizations": 100_000, "days": 1_000}, ValueError),
    ],
)
def test_invalid_params_are_rejected(changes, error):
    with pytest.raises(error):
        DemoParams(**changes)


def test_invalid_chunk_rows_is_rejected_at_call_time():
    with pytest.raises(ValueError):
        generate(SMALL, chunk_rows=0)
