"""Deterministic demo data for the source database described by schema.sql.

`generate()` yields Arrow chunks table by table in foreign-key order. Everything derives from
`DemoParams` through numpy generators keyed by (seed, purpose, block), so the same params give
byte-identical data whatever `chunk_rows` is. Event tables are produced block by block: a block
is a span of days (or a time slice of one busy day) for all organizations at once, sized to about
`_BLOCK_ROWS` rows, so memory stays bounded however large the volume is. Rows of different
organizations are interleaved in time order, as in a real database.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_S, _I, _F, _B, _T = pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.timestamp("us")

SCHEMAS: dict[str, pa.Schema] = {
    "organizations": pa.schema([("id", _S), ("name", _S), ("plan", _S), ("created_at", _T)]),
    "users": pa.schema(
        [
            ("id", _S),
            ("organization_id", _S),
            ("email", _S),
            ("full_name", _S),
            ("is_admin", _B),
            ("is_verified", _B),
            ("created_at", _T),
            ("last_login_at", _T),
        ]
    ),
    "projects": pa.schema(
        [
            ("id", _S),
            ("organization_id", _S),
            ("user_id", _S),
            ("name", _S),
            ("url", _S),
            ("description", _S),
            ("created_at", _T),
            ("updated_at", _T),
        ]
    ),
    "audits": pa.schema(
        [
            ("id", _S),
            ("project_id", _S),
            ("audit_type", _S),
            ("status", _S),
            ("credits_consumed", _I),
            ("created_at", _T),
        ]
    ),
    "scan_results": pa.schema(
        [
            ("id", _S),
            ("audit_id", _S),
            ("dcs_score", _F),
            ("ai_citation_score", _F),
            ("created_at", _T),
        ]
    ),
    "generated_content": pa.schema(
        [
            ("id", _S),
            ("project_id", _S),
            ("user_id", _S),
            ("content_type", _S),
            ("title", _S),
            ("body", _S),
            ("word_count", _I),
            ("created_at", _T),
        ]
    ),
    "content_events": pa.schema(
        [("id", _S), ("content_id", _S), ("event_type", _S), ("occurred_at", _T)]
    ),
    "usage_events": pa.schema(
        [
            ("id", _S),
            ("organization_id", _S),
            ("user_id", _S),
            ("event_type", _S),
            ("occurred_at", _T),
            ("metadata", _S),
        ]
    ),
    "credit_ledger": pa.schema(
        [
            ("id", _S),
            ("organization_id", _S),
            ("user_id", _S),
            ("amount", _I),
            ("balance_after", _I),
            ("description", _S),
            ("reference_id", _S),
            ("created_at", _T),
        ]
    ),
    "audit_log": pa.schema(
        [
            ("id", _S),
            ("organization_id", _S),
            ("actor_user_id", _S),
            ("action", _S),
            ("target_type", _S),
            ("target_id", _S),
            ("ip_address", _S),
            ("user_agent", _S),
            ("occurred_at", _T),
        ]
    ),
    "export_requests": pa.schema(
        [
            ("id", _S),
            ("export_type", _S),
            ("export_format", _S),
            ("user_id", _S),
            ("organization_id", _S),
            ("filters", _S),
            ("parameters", _S),
            ("status", _S),
            ("progress_percentage", _I),
            ("file_path", _S),
            ("file_size", _I),
            ("row_count", _I),
            ("checksum_sha256", _S),
            ("download_count", _I),
            ("created_at", _T),
            ("started_at", _T),
            ("completed_at", _T),
            ("expires_at", _T),
            ("error_message", _S),
            ("retry_count", _I),
            ("run_id", _S),
        ]
    ),
    "report_subscriptions": pa.schema(
        [
            ("id", _S),
            ("organization_id", _S),
            ("user_id", _S),
            ("export_type", _S),
            ("export_format", _S),
            ("cadence", _S),
            ("email_recipients", _S),
            ("filters", _S),
            ("active", _B),
            ("last_run_at", _T),
            ("created_at", _T),
        ]
    ),
}

TABLE_ORDER: tuple[str, ...] = tuple(SCHEMAS)

DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_EPOCH = datetime.date(1970, 1, 1)
_BLOCK_ROWS = 65_536  # rows per generated block (all orgs together); bounds peak memory
_MAX_ORG_DAYS = 10_000_000  # keeps org * (days in µs) sort keys inside int64

# Id codes: the table an id belongs to is mixed into it, which makes ids globally unique.
_ID_CODE = {name: i + 1 for i, name in enumerate(TABLE_ORDER)} | {"export_runs": 31}

# Random-stream purposes; block streams use 100 + the table's id code.
_K_KEYS, _K_COUNTS, _K_SHARED, _K_ORGS, _K_USERS, _K_PROJECTS = 1, 2, 3, 4, 5, 6
_K_BODIES, _K_EXPORTS, _K_SUBSCRIPTIONS = 7, 8, 9

# Expected rows per organization per day, as a fraction of events_per_day.
_RATES = {
    "audits": 0.1,  # plus one audit every day, so every day has scans to point at
    "generated_content": 0.04,
    "content_events": 0.8,
    "usage_events": 1.5,
    "audit_log": 0.2,
}
_WEEKEND_FACTOR = 0.55

_PLANS = ("free", "pro", "enterprise")
_PLAN_GRANT_FACTOR = np.array([0.3, 0.6, 0.9])  # monthly grant, in days-of-usage * 30

_AUDIT_TYPES = ("full", "quick", "ai_citation")
_AUDIT_TYPE_P = (0.45, 0.25, 0.3)
_AUDIT_COST = np.array([10, 2, 5])
_AUDIT_STATUSES = ("pending", "running", "completed", "failed")
_PENDING, _RUNNING, _COMPLETED, _FAILED = range(4)
_STATUS_P = (0.01, 0.02, 0.9, 0.07)
_STATUS_P_LATE = (0.35, 0.35, 0.25, 0.05)  # the last hours of history: work still in flight
_QUICK = 1

_CONTENT_TYPES = ("article", "summary", "faq", "social_post", "meta_description", "press_release")
_CONTENT_TYPE_P = (0.35, 0.2, 0.2, 0.12, 0.08, 0.05)
_CONTENT_EVENTS = ("view", "share", "citation")
_CONTENT_EVENT_P = (0.8, 0.12, 0.08)

_USAGE_TYPES = (
    "login",
    "api_call",
    "scan_started",
    "export_downloaded",
    "content_generated",
    "project_viewed",
    "settings_updated",
    "export_requested",
)
_USAGE_P = (0.14, 0.38, 0.14, 0.05, 0.08, 0.15, 0.03, 0.03)
_API_CALL = 1

_EXPORT_TYPES = ("scan_results", "credit_usage_report", "projects_summary")
_EXPORT_FORMATS = ("CSV", "JSON", "PARQUET")
_REPORT_FORMATS = ("CSV", "EXCEL", "PDF")
_CADENCES = ("daily", "weekly", "monthly")
_EXPORTS_PER_ORG = 5  # 3 pending + 2 completed
_SUBSCRIPTIONS_PER_ORG = 4  # daily, weekly, monthly + one inactive

# (action, target kind, done by the system rather than a user, weight)
_ACTIONS = (
    ("user.login", "self", False, 26),
    ("project.updated", "project", False, 12),
    ("export.downloaded", "export_request", False, 10),
    ("export.requested", "export_request", False, 8),
    ("report.sent", "report_subscription", True, 8),
    ("session.expired", "user", True, 5),
    ("project.created", "project", False, 4),
    ("user.invited", "user", False, 4),
    ("settings.updated", "organization", False, 4),
    ("credits.purchased", "organization", False, 3),
    ("credits.granted", "organization", True, 3),
    ("subscription.updated", "report_subscription", False, 3),
    ("user.role_changed", "user", False, 2),
    ("api_key.created", "api_key", False, 2),
)
_TARGET_KINDS = (
    "user",
    "project",
    "export_request",
    "report_subscription",
    "organization",
    "api_key",
)
_ADMIN_ACTIONS = {
    "user.invited",
    "user.role_changed",
    "settings.updated",
    "credits.purchased",
    "api_key.created",
}

# (name, ascii slug). A few are hostile on purpose: quotes, commas, a leading "=".
_ORG_NAMES = (
    ("Acme Analytics", "acme-analytics"),
    ("Zürich Digital AG", "zurich-digital"),
    ("O'Brien & Daughters, Ltd.", "obrien-daughters"),
    ("北京数据科技有限公司", "beijing-data"),
    ("Αθήνα Web Studio", "athina-web"),
    ("Café Olé Media", "cafe-ole-media"),
    ("Nordlys Søk AS", "nordlys-sok"),
    ("Łódź Labs Sp. z o.o.", "lodz-labs"),
    ('"Quoted" Ventures', "quoted-ventures"),
    ("São Paulo Growth Co.", "sao-paulo-growth"),
    ("=SUM(A1:A9) Holdings", "formula-holdings"),
    ("東京コンテンツ株式会社", "tokyo-content"),
    ("Müller-Lüdenscheidt GmbH", "mueller-luedenscheidt"),
    ("Rocket 🚀 Marketing", "rocket-marketing"),
)

# (full name, email local part), in groups of four (accented latin, CJK or Korean, apostrophe or
# quotes, Greek/Cyrillic/Vietnamese) so that any four consecutive users cover every script.
_PEOPLE = (
    ("Amélie Dubois", "amelie.dubois"),
    ("王芳", "wang.fang"),
    ("Seán O'Brien", "sean.obrien"),
    ("Γιώργος Παπαδόπουλος", "giorgos.papadopoulos"),
    ("José Álvarez", "jose.alvarez"),
    ("田中 花子", "hanako.tanaka"),
    ("Chloé D'Amico", "chloe.damico"),
    ("Дмитрий Иванов", "dmitri.ivanov"),
    ("Zoë Müller-Schmidt", "zoe.mueller-schmidt"),
    ("김민준", "minjun.kim"),
    ('Robert "Bobby" Tables', "bobby.tables"),
    ("Nguyễn Thị Mai", "mai.nguyen"),
    ("Łukasz Wiśniewski", "lukasz.wisniewski"),
    ("李伟", "li.wei"),
    ("Liam O'Connor", "liam.oconnor"),
    ("Ελένη Κωνσταντίνου", "eleni.konstantinou"),
    ("Björk Guðmundsdóttir", "bjork.gudmundsdottir"),
    ("佐藤 健", "ken.sato"),
    ("Ngozi O'Neill-Okafor", "ngozi.oneill"),
    ("Анна Смирнова", "anna.smirnova"),
    ("Søren Nørgaard", "soren.norgaard"),
    ("이서연", "seoyeon.lee"),
    ("Mary-Jane D'Souza", "maryjane.dsouza"),
    ("Trần Văn Đức", "duc.tran"),
)

# (project name, url template). Every org has "Website" and "Blog", so names collide across orgs.
_PROJECTS = (
    ("Website", "https://www.{slug}.example.com/"),
    ("Blog", "https://blog.{slug}.example.com/"),
    ("Docs", "https://docs.{slug}.example.com/"),
    ("Help Center", "https://help.{slug}.example.com/"),
    ("Shop", "https://shop.{slug}.example.com/?utm_source=audit&lang=en"),
    ("Careers", "https://www.{slug}.example.com/careers/"),
    ("Status Page", "https://status.{slug}.example.com/"),
    ("Newsroom", "https://www.{slug}.example.com/news/"),
    ("Developer Portal", "https://developers.{slug}.example.com/"),
    ("Événements", "https://www.{slug}.example.com/fr/evenements/"),
    ("日本語サイト", "https://www.{slug}.example.com/ja/"),
    ("Partner Portal", "https://partners.{slug}.example.com/"),
)

_DESCRIPTIONS = (
    "Main marketing site, rebuilt in 2025",
    None,
    'Our "flagship" blog — weekly posts, guest authors',
    '=HYPERLINK("https://evil.example.net/","click me")',
    "Line one of the description\nline two, with a comma\nline three",
    "+1 (555) 010-0199 support line",
    "@channel: shared docs for the whole team",
    "Docs 📚 & help center 🚀",
    None,
    "-20% bounce rate target; see Q3 plan",
    "Ελληνική έκδοση, 日本語サイト, ünïcödé",
    "O'Brien's storefront\ttab\tseparated",
    "",
)

_TITLES = (
    "How to improve your DCS score in 30 days",
    'What "AI citations" really mean for your brand',
    "FAQ: billing, credits, and exports",
    "10 ways to write content that AI assistants cite",
    "Résumé des résultats d’audit — octobre",
    "SEO と AI 引用の基本",
    "Οδηγός για καλύτερα αποτελέσματα",
    "Why our blog traffic doubled 🚀",
    "+20% citations: what changed, and why",
    "=1+1 is not a formula here",
    "Q&A with O'Reilly's editors",
    "@mentions, hashtags, and other noise",
)

_SENTENCES = (
    (
        "Our audit found 12 pages without structured data, which limits how often "
        "assistants cite them."
    ),
    'Customers told us, "the new FAQ answered everything."',
    "Naïve schema markup isn't enough — add author, date, and sources.",
    "Les pages « produits » sont rarement citées, hélas.",
    "日本語のページは引用率が高い。",
    "Η ενότητα συχνών ερωτήσεων βελτιώθηκε σημαντικά.",
    "Emoji in headings (🚀, ✅) don't hurt rankings.",
    "Next steps:\n- fix canonical tags\n- add FAQ schema\n- re-run the audit",
    "Quote from O'Brien: 'ship it, then measure'.",
    'Tabs\tand "double quotes" should survive a CSV export.',
    "Ünïcödé, ñ, ß, ø, and ł all render correctly.",
    "Windows line endings sneak in from pasted text.\r\nLike this one.",
    "Revenue grew 3,5 % in Germany, 4.2% in the US.",
    "Один абзац на русском языке, с запятыми.",
    "=SUM(1,2) looks like a formula but is plain text.",
    "한국어 문장도 포함됩니다.",
)

_USER_AGENTS = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/129.0.0.0 Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.6 Safari/605.1.15"
    ),
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
    ),
    "python-requests/2.32.3",
    "curl/8.9.1",
)
_IPV4_NETS = ("192.0.2.", "198.51.100.", "203.0.113.")  # documentation ranges (RFC 5737)

_LEDGER_LABELS = (
    "Opening balance",
    "Monthly Free plan credits",
    "Monthly Pro plan credits",
    "Monthly Enterprise plan credits",
    "Full audit",
    "Quick audit",
    "AI citation audit",
    "Refund: failed audit",
    "Automatic top-up",
)
_L_OPENING, _L_MONTHLY, _L_DEBIT, _L_REFUND, _L_TOP_UP = 0, 1, 4, 7, 8


@dataclasses.dataclass(frozen=True)
class DemoParams:
    """What to generate: tenants, days of history, volume and seed."""

    organizations: int = 3
    days: int = 30  # days of history, ending the day before end_date (exclusive)
    events_per_day: int = 40  # scan results per org per day; other event tables scale from it
    seed: int = 42
    end_date: datetime.date = datetime.date(2026, 11, 1)
    users_per_org: int = 6
    projects_per_org: int = 4

    def __post_init__(self) -> None:
        """Reject params the generator cannot honour."""
        for name in (
            "organizations",
            "days",
            "events_per_day",
            "users_per_org",
            "projects_per_org",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        # A datetime is a date too; refuse it so nobody wonders which time of day counts.
        if isinstance(self.end_date, datetime.datetime) or not isinstance(
            self.end_date, datetime.date
        ):
            raise TypeError(f"end_date must be a datetime.date, got {self.end_date!r}")
        if self.organizations * self.days > _MAX_ORG_DAYS:
            raise ValueError(f"organizations * days must be at most {_MAX_ORG_DAYS}")


@dataclasses.dataclass(frozen=True)
class _Block:
    """Days [d0, d1) of all orgs, or the time-of-day slice [lo, hi) of one day (parts > 1)."""

    d0: int
    d1: int
    part: int
    parts: int

    @property
    def lo(self) -> int:
        """First microsecond of the day covered by this block."""
        return self.part * DAY_US // self.parts

    @property
    def hi(self) -> int:
        """Microsecond of the day where this block stops (exclusive)."""
        return (self.part + 1) * DAY_US // self.parts

    @property
    def end_rel(self) -> int:
        """Block end in microseconds since the window start (exclusive)."""
        return (self.d1 - 1) * DAY_US + self.hi


@dataclasses.dataclass
class _Rows:
    """Event rows of one block, grouped by org and in time order within each org."""

    org: np.ndarray  # org index per row
    rel: np.ndarray  # microseconds since the window start
    shared: np.ndarray  # True where the row sits on an instant shared by all orgs
    start: np.ndarray  # start[o]:start[o + 1] are the rows of org o

    def __len__(self) -> int:
        return len(self.rel)

    def local(self) -> np.ndarray:
        """Position of each row within its org's rows of the block."""
        return np.arange(len(self.rel)) - self.start[self.org]


@dataclasses.dataclass
class _Audits:
    """Audit rows of one block, as numpy arrays (regenerated by the tables that need them)."""

    rows: _Rows
    grow: np.ndarray  # global row number, the input of the audit id
    project: np.ndarray  # project index within the org
    atype: np.ndarray
    status: np.ndarray
    credits: np.ndarray


@dataclasses.dataclass
class _Content:
    """Generated-content rows of one block, as numpy arrays."""

    rows: _Rows
    grow: np.ndarray
    project: np.ndarray
    user: np.ndarray
    ctype: np.ndarray
    title: np.ndarray
    body: np.ndarray


def generate(params: DemoParams, chunk_rows: int = 100_000) -> Iterator[tuple[str, pa.Table]]:
    """Yield (table name, chunk) in TABLE_ORDER; chunks hold at most chunk_rows rows."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    world = _World(params)  # built eagerly so bad params fail at the call, not at first next()
    return _generate(world, chunk_rows)


def _generate(world: _World, chunk_rows: int) -> Iterator[tuple[str, pa.Table]]:
    """Stream every table through the rechunker."""
    for table in TABLE_ORDER:
        for chunk in _rechunk(world.tables(table), chunk_rows):
            yield table, chunk


def _rechunk(tables: Iterator[pa.Table], chunk_rows: int) -> Iterator[pa.Table]:
    """Regroup tables of any size into contiguous chunks of exactly chunk_rows (last: fewer)."""
    pending: list[pa.Table] = []
    size = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        pending.append(table)
        size += table.num_rows
        if size < chunk_rows:
            continue
        merged = pa.concat_tables(pending).combine_chunks()
        start = 0
        while size - start >= chunk_rows:
            yield merged.slice(start, chunk_rows)
            start += chunk_rows
        pending = [merged.slice(start)] if start < size else []
        size -= start
    if size:
        yield pa.concat_tables(pending).combine_chunks()


# --- ids ---------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection on uint64, so distinct inputs stay distinct."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _nibbles(x: np.ndarray) -> np.ndarray:
    """The 16 hex digits of each uint64, most significant first."""
    octets = x.astype(">u8").view(np.uint8).reshape(-1, 8)
    out = np.empty((len(x), 16), dtype=np.uint8)
    out[:, 0::2] = octets >> 4
    out[:, 1::2] = octets & 15
    return out


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """A string array from an (n, width) uint8 matrix of ASCII, without a Python loop."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _uuid_strings(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Format as version-4 UUIDs; all 64 bits of hi survive, so distinct hi gives distinct ids."""
    h, low = _nibbles(hi), _nibbles(lo)
    digits = np.empty((len(hi), 32), dtype=np.uint8)
    digits[:, 0:12] = h[:, 0:12]
    digits[:, 12] = 4
    digits[:, 13:16] = low[:, 0:3]
    digits[:, 16] = 8 | (low[:, 3] & 3)
    digits[:, 17:28] = low[:, 4:15]
    digits[:, 28:32] = h[:, 12:16]
    chars = np.full((len(hi), 36), ord("-"), dtype=np.uint8)
    chars[:, _UUID_POS] = _HEX[digits]
    return _fixed_width_strings(chars)


# --- small helpers -----------------------------------------------------------------------------


def _ts(us: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Microseconds since the epoch as a naive (UTC) timestamp array."""
    values = np.asarray(us, dtype=np.int64).view("datetime64[us]")
    return pa.array(values, type=_T, mask=mask)


def _labels(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """Codes turned into their labels."""
    return pa.array(values, type=_S).take(codes)


def _nullable(values: pa.Array, null: np.ndarray) -> pa.Array:
    """values with nulls where null is True."""
    return pc.if_else(pa.array(~null), values, pa.scalar(None, values.type))


def _concat(*parts: str | pa.Array) -> pa.Array:
    """Row-wise concatenation of string arrays and constant strings."""
    return pc.binary_join_element_wise(*parts, "")


def _text(values: np.ndarray) -> pa.Array:
    """Integers as decimal strings."""
    return pc.cast(pa.array(values, type=_I), _S)


def _pick(rng: np.random.Generator, values: tuple[str, ...], n: int) -> pa.Array:
    """n labels drawn uniformly from values."""
    return _labels(values, rng.integers(0, len(values), n))


def _scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """Assemble a string array from (row positions, values) parts; rows in no part are null."""
    values = pa.concat_arrays([v for _, v in parts] + [pa.nulls(1, _S)])
    source = np.full(n, len(values) - 1, dtype=np.int64)
    offset = 0
    for rows, part in parts:
        source[rows] = offset + np.arange(len(part))
        offset += len(part)
    return values.take(source)


def _split(counts: np.ndarray, part: int, parts: int) -> np.ndarray:
    """Share of counts that falls in part of parts (part 0 gets the remainder first)."""
    return counts // parts + (part < counts % parts)


def _split_before(counts: np.ndarray, part: int, parts: int) -> np.ndarray:
    """Sum of the shares of counts in the parts before part."""
    return part * (counts // parts) + np.minimum(part, counts % parts)


def _nice(x: np.ndarray) -> np.ndarray:
    """Round up to 1, 2 or 5 times a power of ten, like credit packages are priced."""
    x = np.maximum(np.asarray(x, dtype=np.float64), 1.0)
    power = 10.0 ** np.floor(np.log10(x))
    step = np.select([x <= power, x <= 2 * power, x <= 5 * power], [1, 2, 5], 10)
    return (step * power).astype(np.int64)


def _group_first(org: np.ndarray) -> np.ndarray:
    """For rows grouped by org, the index of the first row of each row's group."""
    return np.searchsorted(org, org, side="left")


def _group_last(org: np.ndarray) -> np.ndarray:
    """For rows grouped by org, the index of the last row of each row's group."""
    return np.searchsorted(org, org, side="right") - 1


def _group_cumsum(org: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative sum of values restarting at every org group."""
    total = np.cumsum(values)
    first = _group_first(org)
    return total - (total[first] - values[first])


# --- the world -----------------------------------------------------------------------------


class _World:
    """Everything derived once from the params: tenants, per-day counts and the block plan."""

    def __init__(self, params: DemoParams) -> None:
        self.p = params
        self.n_orgs, self.n_users, self.n_projects = (
            params.organizations,
            params.users_per_org,
            params.projects_per_org,
        )
        self.start_date = params.end_date - datetime.timedelta(days=params.days)
        self.start_us = (self.start_date - _EPOCH).days * DAY_US
        self.span_us = params.days * DAY_US  # also the stride of org-major sort keys
        raw = self.rng(_K_KEYS).bit_generator.random_raw(2)
        self.key_hi, self.key_lo = np.uint64(raw[0]), np.uint64(raw[1])
        weekday = (self.start_date.weekday() + np.arange(params.days)) % 7
        self.day_factor = np.where(weekday >= 5, _WEEKEND_FACTOR, 1.0)
        self._build_orgs()
        self._build_users()
        self._build_projects()
        self._build_counts()
        self._build_shared_instants()
        self._build_text_pools()
        self.export_ids = self.ids("export_requests", np.arange(self.n_orgs * _EXPORTS_PER_ORG))
        self.subscription_ids = self.ids(
            "report_subscriptions", np.arange(self.n_orgs * _SUBSCRIPTIONS_PER_ORG)
        )
        self.blocks = self._plan()

    # random streams and ids

    def rng(self, *path: int) -> np.random.Generator:
        """An independent stream for one purpose, keyed by the seed and the path."""
        return np.random.default_rng([self.p.seed, *path])

    def block_rng(self, table: str, block: _Block) -> np.random.Generator:
        """The stream of one block of one table; independent of chunking."""
        return self.rng(100 + _ID_CODE[table], block.d0, block.part)

    def ids(self, table: str, rows: np.ndarray) -> pa.Array:
        """UUID-like ids for row numbers of a table: unique across tables, seeded, repeatable."""
        rows = np.asarray(rows, dtype=np.uint64)
        if rows.size and rows.max() >= np.uint64(1 << 44):
            raise ValueError("too many rows for the id space")
        tag = np.uint64(_ID_CODE[table]) << np.uint64(44)
        hi = _mix64((rows | tag) ^ self.key_hi)
        return _uuid_strings(hi, _mix64(hi ^ self.key_lo))

    # tenants

    def _build_orgs(self) -> None:
        """Names, plans, activity weights and the credit economics of each org."""
        n, rng = self.n_orgs, self.rng(_K_ORGS)
        self.org_ids = self.ids("organizations", np.arange(n))
        names, slugs = [], []
        for o in range(n):
            name, slug = _ORG_NAMES[o % len(_ORG_NAMES)]
            if o >= len(_ORG_NAMES):
                name, slug = (
                    f"{name} {o // len(_ORG_NAMES) + 1}",
                    f"{slug}-{o // len(_ORG_NAMES) + 1}",
                )
            names.append(name)
            slugs.append(slug)
        self.org_names, self.org_slugs = names, slugs
        # The first three orgs cover every plan; the rest are drawn.
        plan = rng.choice(3, n, p=(0.5, 0.35, 0.15))
        plan[: min(n, 3)] = (2, 1, 0)[: min(n, 3)]
        self.plan = plan
        self.org_created = self.start_us - rng.integers(60 * DAY_US, 900 * DAY_US, n)
        self.weight = rng.uniform(0.6, 1.4, n)
        # Credit economics sized so that balances stay positive with an occasional top-up.
        audits_per_day = 1 + self.p.events_per_day * _RATES["audits"] * self.weight * 0.87
        daily_need = audits_per_day * 6.0  # mean cost of a charged audit
        self.package = _nice(7 * daily_need)
        self.monthly_grant = _nice(30 * daily_need * _PLAN_GRANT_FACTOR[plan])
        self.opening_balance = _nice(10 * daily_need)

    def _build_users(self) -> None:
        """Users per org: one or two admins first, then members."""
        n_orgs, n_users, rng = self.n_orgs, self.n_users, self.rng(_K_USERS)
        total = n_orgs * n_users
        self.user_ids = self.ids("users", np.arange(total))
        self.n_admins = np.array(
            [1 if n_users < 2 else min(n_users - 1, 1 + (o % 2 == 0)) for o in range(n_orgs)]
        )
        local = np.tile(np.arange(n_users), n_orgs)
        self.user_org = np.repeat(np.arange(n_orgs), n_users)
        self.is_admin = local < self.n_admins[self.user_org]
        self.is_verified = self.is_admin | (rng.random(total) < 0.75)
        fractions = np.sort(rng.random((n_orgs, n_users)), axis=1).ravel()
        org_created = self.org_created[self.user_org]
        self.user_created = org_created + (fractions * (self.start_us - org_created)).astype(
            np.int64
        )
        login = self.start_us + rng.integers(0, self.span_us, total)
        self.last_login_null = ~self.is_verified | (rng.random(total) < 0.15)
        self.last_login = login
        names, locals_, emails = [], [], []
        for g in range(total):
            o, j = divmod(g, n_users)
            full, email_local = _PEOPLE[(g + self.p.seed) % len(_PEOPLE)]
            if j >= len(_PEOPLE):  # only with more users per org than names
                email_local = f"{email_local}{j // len(_PEOPLE) + 1}"
            names.append(full)
            locals_.append(email_local)
            emails.append(f"{email_local}@{self.org_slugs[o]}.example.com")
        self.user_names, self.user_locals, self.user_emails = names, locals_, emails
        # Activity weights: a few users do most of the work.
        weights = rng.gamma(1.2, 1.0, (n_orgs, n_users)) + 0.05
        self.user_cum = self._cumulative(weights)

    def _build_projects(self) -> None:
        """Projects per org, always starting with "Website" and "Blog"."""
        n_orgs, n_projects, rng = self.n_orgs, self.n_projects, self.rng(_K_PROJECTS)
        total = n_orgs * n_projects
        self.project_ids = self.ids("projects", np.arange(total))
        names, urls, descriptions, owners, created, updated = [], [], [], [], [], []
        for o in range(n_orgs):
            order = [0, 1, *(2 + rng.permutation(len(_PROJECTS) - 2))]
            for j in range(n_projects):
                name, url = _PROJECTS[order[j % len(order)]]
                if j >= len(order):
                    name = f"{name} {j // len(order) + 1}"
                names.append(name)
                urls.append(url.format(slug=self.org_slugs[o]))
                # Cycling (rather than drawing) guarantees every hostile value shows up.
                descriptions.append(
                    _DESCRIPTIONS[(o * n_projects + j + self.p.seed) % len(_DESCRIPTIONS)]
                )
                owner = 0 if j == 0 else int(rng.integers(0, self.n_users))
                owners.append(owner)
                since = int(self.user_created[o * self.n_users + owner])
                made = since + int(rng.integers(0, max(1, self.start_us - since)))
                created.append(made)
                updated.append(made + int(rng.integers(0, self.start_us + self.span_us - made)))
        self.project_names, self.project_urls = names, urls
        self.project_descriptions = descriptions
        self.project_owner = np.array(owners)
        self.project_created, self.project_updated = np.array(created), np.array(updated)
        self.project_cum = self._cumulative(rng.gamma(1.5, 1.0, (n_orgs, n_projects)) + 0.1)
        # Each project has a typical score level, so scores look like sites, not noise.
        self.project_quality = rng.uniform(35.0, 88.0, total)

    def _cumulative(self, weights: np.ndarray) -> np.ndarray:
        """Per-org cumulative weights, flattened and shifted by org for one searchsorted."""
        cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        return (cum + np.arange(len(weights))[:, None]).ravel()

    def choose(self, cum: np.ndarray, k: int, org: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Weighted pick of an index in [0, k) per row, with each row's org's weights."""
        idx = np.searchsorted(cum, org + u, side="right") - org * k
        return np.clip(idx, 0, k - 1)

    # volumes and time

    def _build_counts(self) -> None:
        """Rows per org and day of each block-generated table, drawn up front."""
        e, days = self.p.events_per_day, self.p.days
        self.counts: dict[str, np.ndarray] = {}
        for table, rate in _RATES.items():
            lam = e * rate * self.weight[:, None] * self.day_factor[None, :]
            self.counts[table] = self.rng(_K_COUNTS, _ID_CODE[table]).poisson(lam)
        self.counts["audits"] += 1
        self.counts["scan_results"] = np.full((self.n_orgs, days), e, dtype=np.int64)
        # No content, nothing to view: events start the day an org's first content appears.
        has_content = np.cumsum(self.counts["generated_content"], axis=1) > 0
        self.counts["content_events"] *= has_content
        self.day_cum = {}
        self.org_offset = {}
        for table in ("audits", "generated_content"):  # parents: their ids come from positions
            c = self.counts[table]
            self.day_cum[table] = np.concatenate(
                [np.zeros((self.n_orgs, 1), dtype=np.int64), np.cumsum(c, axis=1)], axis=1
            )
            per_org = c.sum(axis=1)
            self.org_offset[table] = np.concatenate([[0], np.cumsum(per_org)[:-1]])

    def _build_shared_instants(self) -> None:
        """Instants every org uses on a day: some days' exact midnight and last microsecond."""
        days = self.p.days
        random_tods = self.rng(_K_SHARED).integers(0, DAY_US, (days, 2))
        shared = np.full((days, 4), -1, dtype=np.int64)
        for d in range(days):
            tods = []
            if d % 7 == 0:
                tods.append(0)
            if d % 7 == 6 or d == days - 1:
                tods.append(DAY_US - 1)
            tods.extend(int(t) for t in random_tods[d])
            shared[d, : len(tods)] = tods[:4]
        self.shared = shared

    def _build_text_pools(self) -> None:
        """Bodies for generated content, with word counts that match them."""
        rng = self.rng(_K_BODIES)
        bodies = []
        for _ in range(64):
            picks = rng.integers(0, len(_SENTENCES), int(rng.integers(3, 13)))
            paragraphs, current = [], []
            for s in picks:
                current.append(_SENTENCES[s])
                if rng.random() < 0.35:
                    paragraphs.append(" ".join(current))
                    current = []
            if current:
                paragraphs.append(" ".join(current))
            bodies.append("\n\n".join(paragraphs))
        self.bodies = pa.array(bodies, type=_S)
        self.body_words = np.array([len(b.split()) for b in bodies], dtype=np.int64)
        self.titles = pa.array(_TITLES, type=_S)

    def _plan(self) -> list[_Block]:
        """Blocks of about _BLOCK_ROWS rows: spans of quiet days, slices of busy ones."""
        day_rows = np.max([c.sum(axis=0) for c in self.counts.values()], axis=0)
        blocks, d = [], 0
        while d < self.p.days:
            if day_rows[d] > _BLOCK_ROWS:
                parts = -(-int(day_rows[d]) // _BLOCK_ROWS)
                blocks.extend(_Block(d, d + 1, part, parts) for part in range(parts))
                d += 1
                continue
            d1, total = d + 1, int(day_rows[d])
            while d1 < self.p.days and total + day_rows[d1] <= _BLOCK_ROWS:
                total += int(day_rows[d1])
                d1 += 1
            blocks.append(_Block(d, d1, 0, 1))
            d = d1
        return blocks

    def block_counts(self, table: str, block: _Block) -> np.ndarray:
        """Rows per org and day of a table within a block, shape (orgs, days in block)."""
        c = self.counts[table][:, block.d0 : block.d1]
        return c if block.parts == 1 else _split(c, block.part, block.parts)

    def prior(self, table: str, block: _Block) -> np.ndarray:
        """Rows of each org generated before the block (parent tables only)."""
        before = self.day_cum[table][:, block.d0]
        if block.parts == 1:
            return before
        return before + _split_before(self.counts[table][:, block.d0], block.part, block.parts)

    def rows(self, rng: np.random.Generator, block: _Block, counts: np.ndarray) -> _Rows:
        """Event times for a block: random microseconds plus the day's shared instants."""
        n_orgs = counts.shape[0]
        flat = counts.ravel()
        n = int(flat.sum())
        org = np.repeat(np.arange(n_orgs), counts.sum(axis=1))
        day = np.repeat(np.tile(np.arange(block.d0, block.d1), n_orgs), flat)
        pos = np.arange(n) - np.repeat(np.cumsum(flat) - flat, flat)
        tod = rng.integers(block.lo, block.hi, n)
        # Shared instants of the slice, in priority order; each org-day uses its first few.
        shared = self.shared[block.d0 : block.d1]
        valid = (shared >= block.lo) & (shared < block.hi)
        shared = np.take_along_axis(shared, np.argsort(~valid, axis=1, kind="stable"), axis=1)
        on_shared = pos < valid.sum(axis=1)[day - block.d0]
        tod[on_shared] = shared[day[on_shared] - block.d0, pos[on_shared]]
        rel = day * DAY_US + tod
        order = np.argsort(org * self.span_us + rel, kind="stable")
        start = np.concatenate([[0], np.cumsum(counts.sum(axis=1))])
        return _Rows(org, rel[order], on_shared[order], start)

    def time_order(self, rows: _Rows) -> np.ndarray:
        """Permutation that interleaves orgs in time order (ties: org order)."""
        return np.argsort(rows.rel, kind="stable")

    # dispatch

    def tables(self, table: str) -> Iterator[pa.Table]:
        """All rows of a table as a sequence of Arrow tables."""
        small = {
            "organizations": self._organizations,
            "users": self._users,
            "projects": self._projects,
            "export_requests": self._export_requests,
            "report_subscriptions": self._report_subscriptions,
        }
        if table in small:
            yield small[table]()
            return
        state = self._initial_state(table)
        build = getattr(self, f"_{table}")
        for block in self.blocks:
            yield build(block, state)

    def _initial_state(self, table: str) -> dict[str, np.ndarray]:
        """What a table carries from block to block: next row number, last parent, balances."""
        n = self.n_orgs
        zeros = np.zeros(n, dtype=np.int64)
        return {
            "next": np.zeros(1, dtype=np.int64),
            "has": np.zeros(n, dtype=bool),
            "grow": zeros.copy(),
            "atype": zeros.copy(),
            "status": zeros.copy(),
            "project": zeros.copy(),
            "balance": zeros.copy(),
            "last_rel": np.full(n, -1, dtype=np.int64),
        }

    def sequential_ids(self, table: str, state: dict[str, np.ndarray], n: int) -> pa.Array:
        """Ids for leaf tables, numbered in generation order."""
        first = int(state["next"][0])
        state["next"][0] = first + n
        return self.ids(table, np.arange(first, first + n))

    def _table(self, table: str, columns: list[pa.Array]) -> pa.Table:
        """Columns assembled under the table's schema."""
        return pa.Table.from_arrays(columns, schema=SCHEMAS[table])

    # small tables

    def _organizations(self) -> pa.Table:
        """One row per org."""
        return self._table(
            "organizations",
            [
                self.org_ids,
                pa.array(self.org_names, type=_S),
                _labels(_PLANS, self.plan),
                _ts(self.org_created),
            ],
        )

    def _users(self) -> pa.Table:
        """All users, grouped by org."""
        return self._table(
            "users",
            [
                self.user_ids,
                self.org_ids.take(self.user_org),
                pa.array(self.user_emails, type=_S),
                pa.array(self.user_names, type=_S),
                pa.array(self.is_admin),
                pa.array(self.is_verified),
                _ts(self.user_created),
                _ts(self.last_login, mask=self.last_login_null),
            ],
        )

    def _projects(self) -> pa.Table:
        """All projects, grouped by org."""
        org = np.repeat(np.arange(self.n_orgs), self.n_projects)
        return self._table(
            "projects",
            [
                self.project_ids,
                self.org_ids.take(org),
                self.user_ids.take(org * self.n_users + self.project_owner),
                pa.array(self.project_names, type=_S),
                pa.array(self.project_urls, type=_S),
                pa.array(self.project_descriptions, type=_S),
                _ts(self.project_created),
                _ts(self.project_updated),
            ],
        )

    # audits and scan results

    def audit_data(self, block: _Block) -> _Audits:
        """Regenerate the audits of a block (used by audits, scan_results and credit_ledger)."""
        rng = self.block_rng("audits", block)
        rows = self.rows(rng, block, self.block_counts("audits", block))
        n = len(rows)
        grow = self.org_offset["audits"][rows.org] + self.prior("audits", block)[rows.org]
        grow = grow + rows.local()
        project = self.choose(self.project_cum, self.n_projects, rows.org, rng.random(n))
        atype = rng.choice(3, n, p=_AUDIT_TYPE_P)
        normal = rng.choice(4, n, p=_STATUS_P)
        late = rng.choice(4, n, p=_STATUS_P_LATE)
        status = np.where(rows.rel >= self.span_us - 3 * _HOUR_US, late, normal)
        # Pending audits have not been charged yet; failed ones were charged and refunded.
        charged = (status == _RUNNING) | (status == _COMPLETED)
        credits = np.where(charged, _AUDIT_COST[atype], 0)
        return _Audits(rows, grow, project, atype, status, credits)

    def _audits(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of audits."""
        a = self.audit_data(block)
        o = self.time_order(a.rows)
        org = a.rows.org[o]
        return self._table(
            "audits",
            [
                self.ids("audits", a.grow[o]),
                self.project_ids.take(org * self.n_projects + a.project[o]),
                _labels(_AUDIT_TYPES, a.atype[o]),
                _labels(_AUDIT_STATUSES, a.status[o]),
                pa.array(a.credits[o], type=_I),
                _ts(self.start_us + a.rows.rel[o]),
            ],
        )

    def link_recent(
        self, rng: np.random.Generator, parent: _Rows, child: _Rows, has_state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Point each child row at a recent parent of its org created at or before it.

        Returns indices into the parent rows, or len(parent) + org for "the org's last parent
        from an earlier block", and the child times (moved up to the org's very first parent
        for the rare rows that would otherwise precede every parent).
        """
        pk = parent.org * self.span_us + parent.rel
        ck = child.org * self.span_us + child.rel
        k = np.searchsorted(pk, ck, side="right")
        first = parent.start[child.org]
        back = np.floor(rng.exponential(2.0, len(child))).astype(np.int64)
        idx = np.maximum(k - 1 - back, first)
        none_before = k == first
        from_state = none_before & has_state[child.org]
        clamp = none_before & ~from_state
        rel = child.rel
        if clamp.any():
            if (parent.start[child.org[clamp] + 1] == first[clamp]).any():
                raise AssertionError("child rows without any parent")  # counts prevent this
            rel = np.where(clamp, parent.rel[np.minimum(first, len(parent) - 1)], rel)
        return np.where(from_state, len(parent) + child.org, idx), rel

    def _scan_results(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of scan results, each pointing at a recent audit of its org."""
        a = self.audit_data(block)
        rng = self.block_rng("scan_results", block)
        rows = self.rows(rng, block, self.block_counts("scan_results", block))
        n = len(rows)
        idx, rel = self.link_recent(rng, a.rows, rows, state["has"])
        grow = np.concatenate([a.grow, state["grow"]])[idx]
        atype = np.concatenate([a.atype, state["atype"]])[idx]
        status = np.concatenate([a.status, state["status"]])[idx]
        project = np.concatenate([a.project, state["project"]])[idx]
        quality = self.project_quality[rows.org * self.n_projects + project]
        # Clip before rounding so that no score comes out as -0.0.
        dcs = np.round(np.clip(rng.normal(quality, 11.0, n), 0.0, 100.0), 1)
        ai = np.round(np.clip(rng.normal(quality * 0.75, 18.0, n), 0.0, 100.0), 1)
        dcs_null = (status == _FAILED) | (status == _PENDING) | (rng.random(n) < 0.04)
        ai_null = (atype == _QUICK) | (rng.random(n) < 0.06)  # quick audits skip AI checks
        self._remember_last(state, a)
        o = np.argsort(rel, kind="stable")
        return self._table(
            "scan_results",
            [
                self.sequential_ids("scan_results", state, n),
                self.ids("audits", grow[o]),
                pa.array(dcs[o], type=_F, mask=dcs_null[o]),
                pa.array(ai[o], type=_F, mask=ai_null[o]),
                _ts(self.start_us + rel[o]),
            ],
        )

    def _remember_last(self, state: dict[str, np.ndarray], a: _Audits) -> None:
        """Keep each org's latest audit for the rows of the next block."""
        present = a.rows.start[1:] > a.rows.start[:-1]
        last = a.rows.start[1:][present] - 1
        state["has"][present] = True
        for key, values in (
            ("grow", a.grow),
            ("atype", a.atype),
            ("status", a.status),
            ("project", a.project),
        ):
            state[key][present] = values[last]

    # generated content and its events

    def content_data(self, block: _Block) -> _Content:
        """Regenerate the generated content of a block."""
        rng = self.block_rng("generated_content", block)
        rows = self.rows(rng, block, self.block_counts("generated_content", block))
        n = len(rows)
        grow = self.org_offset["generated_content"][rows.org]
        grow = grow + self.prior("generated_content", block)[rows.org] + rows.local()
        project = self.choose(self.project_cum, self.n_projects, rows.org, rng.random(n))
        user = self.choose(self.user_cum, self.n_users, rows.org, rng.random(n))
        ctype = rng.choice(len(_CONTENT_TYPES), n, p=_CONTENT_TYPE_P)
        title = rng.integers(0, len(self.titles), n)
        body = rng.integers(0, len(self.bodies), n)
        return _Content(rows, grow, project, user, ctype, title, body)

    def _generated_content(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of generated content."""
        c = self.content_data(block)
        o = self.time_order(c.rows)
        org = c.rows.org[o]
        return self._table(
            "generated_content",
            [
                self.ids("generated_content", c.grow[o]),
                self.project_ids.take(org * self.n_projects + c.project[o]),
                self.user_ids.take(org * self.n_users + c.user[o]),
                _labels(_CONTENT_TYPES, c.ctype[o]),
                self.titles.take(c.title[o]),
                self.bodies.take(c.body[o]),
                pa.array(self.body_words[c.body[o]], type=_I),
                _ts(self.start_us + c.rows.rel[o]),
            ],
        )

    def _content_events(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of content events, each on content of its org created at or before it."""
        c = self.content_data(block)
        prior = self.prior("generated_content", block)
        counts = self.block_counts("content_events", block)
        if block.parts > 1:  # a busy day's early slices may precede the org's first content
            in_block = np.diff(c.rows.start)
            counts = counts * ((prior + in_block) > 0)[:, None]
        rng = self.block_rng("content_events", block)
        rows = self.rows(rng, block, counts)
        n = len(rows)
        pk = c.rows.org * self.span_us + c.rows.rel
        k = np.searchsorted(pk, rows.org * self.span_us + rows.rel, side="right")
        first = c.rows.start[rows.org]
        available = prior[rows.org] + (k - first)
        rel = rows.rel
        clamp = available == 0
        if clamp.any():  # before the org's very first content: happen when it was created
            rel = np.where(clamp, c.rows.rel[np.minimum(first, len(c.rows) - 1)], rel)
            available = np.maximum(available, 1)
        # sqrt(u) favours recent content, as views do.
        local = np.minimum((available * np.sqrt(rng.random(n))).astype(np.int64), available - 1)
        grow = self.org_offset["generated_content"][rows.org] + local
        event = rng.choice(len(_CONTENT_EVENTS), n, p=_CONTENT_EVENT_P)
        o = np.argsort(rel, kind="stable")
        return self._table(
            "content_events",
            [
                self.sequential_ids("content_events", state, n),
                self.ids("generated_content", grow[o]),
                _labels(_CONTENT_EVENTS, event[o]),
                _ts(self.start_us + rel[o]),
            ],
        )

    # usage events

    def _usage_events(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of usage events with JSON metadata."""
        rng = self.block_rng("usage_events", block)
        rows = self.rows(rng, block, self.block_counts("usage_events", block))
        n = len(rows)
        o = self.time_order(rows)
        org = rows.org[o]
        etype = rng.choice(len(_USAGE_TYPES), n, p=_USAGE_P)
        user = self.choose(self.user_cum, self.n_users, org, rng.random(n))
        # API calls made with an API key have no user; a few other events are system-made.
        no_user = rng.random(n) < np.where(etype == _API_CALL, 0.25, 0.02)
        return self._table(
            "usage_events",
            [
                self.sequential_ids("usage_events", state, n),
                self.org_ids.take(org),
                self.user_ids.take(pa.array(org * self.n_users + user, mask=no_user)),
                _labels(_USAGE_TYPES, etype),
                _ts(self.start_us + rows.rel[o]),
                self._usage_metadata(rng, etype, org),
            ],
        )

    def _usage_metadata(
        self, rng: np.random.Generator, etype: np.ndarray, org: np.ndarray
    ) -> pa.Array:
        """JSON text per event type, built column-wise; some null, some empty objects."""
        n = len(etype)
        kind = rng.random(n)
        parts: list[tuple[np.ndarray, pa.Array]] = []
        empty = np.flatnonzero((kind >= 0.04) & (kind < 0.07))
        parts.append((empty, pa.array(["{}"] * len(empty), type=_S)))
        full = kind >= 0.07
        for code, name in enumerate(_USAGE_TYPES):
            sel = np.flatnonzero(full & (etype == code))
            m = len(sel)
            project = self.project_ids.take(
                org[sel] * self.n_projects + rng.integers(0, self.n_projects, m)
            )
            if name == "login":
                text = _concat(
                    '{"method": "',
                    _pick(rng, ("password", "sso", "google"), m),
                    '", "mfa": ',
                    _pick(rng, ("true", "false"), m),
                    "}",
                )
            elif name == "api_call":
                text = _concat(
                    '{"endpoint": "',
                    _pick(
                        rng,
                        ("/v1/projects", "/v1/audits", "/v1/scans", "/v1/exports", "/v1/content"),
                        m,
                    ),
                    '", "method": "',
                    _pick(rng, ("GET", "GET", "POST", "PATCH", "DELETE"), m),
                    '", "status": ',
                    _pick(rng, ("200", "200", "200", "201", "204", "400", "404", "429", "500"), m),
                    ', "duration_ms": ',
                    _text(rng.lognormal(4.0, 0.8, m).astype(np.int64) + 1),
                    "}",
                )
            elif name == "scan_started":
                text = _concat(
                    '{"audit_type": "',
                    _pick(rng, _AUDIT_TYPES, m),
                    '", "project_id": "',
                    project,
                    '"}',
                )
            elif name == "export_downloaded":
                text = _concat(
                    '{"format": "',
                    _pick(rng, _EXPORT_FORMATS + _REPORT_FORMATS, m),
                    '", "bytes": ',
                    _text(rng.integers(512, 50_000_000, m)),
                    "}",
                )
            elif name == "content_generated":
                text = _concat(
                    '{"content_type": "',
                    _pick(rng, _CONTENT_TYPES, m),
                    '", "word_count": ',
                    _text(rng.integers(40, 2_500, m)),
                    "}",
                )
            elif name == "project_viewed":
                text = _concat(
                    '{"project_id": "',
                    project,
                    '", "tab": "',
                    _pick(rng, ("overview", "audits", "content", "settings"), m),
                    '"}',
                )
            elif name == "settings_updated":
                text = _concat(
                    '{"field": "',
                    _pick(
                        rng,
                        ("timezone", "billing_email", "default_export_format", "notifications"),
                        m,
                    ),
                    '"}',
                )
            else:  # export_requested
                text = _concat(
                    '{"export_type": "',
                    _pick(rng, _EXPORT_TYPES, m),
                    '", "format": "',
                    _pick(rng, _EXPORT_FORMATS, m),
                    '"}',
                )
            parts.append((sel, text))
        return _scatter(n, parts)

    # credit ledger

    def _credit_ledger(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of ledger rows with a per-org running balance carried between blocks."""
        a = self.audit_data(block)
        rng = self.block_rng("credit_ledger", block)
        org, rel, amount, label, user, ref, extra = self._ledger_rows(rng, block, a)
        rel = self._strictly_increasing(org, rel, state["last_rel"], block.end_rel)
        balance = state["balance"][org] + _group_cumsum(org, amount)
        if (balance < 0).any():
            org, rel, amount, label, user, ref = self._top_up(
                rng, block, state, balance, (org, rel, amount, label, user, ref)
            )
            rel = self._strictly_increasing(org, rel, state["last_rel"], block.end_rel)
            balance = state["balance"][org] + _group_cumsum(org, amount)
        if len(org):
            last = np.unique(_group_last(org))
            state["balance"][org[last]] = balance[last]
            state["last_rel"][org[last]] = rel[last]
        o = np.argsort(rel, kind="stable")
        n = len(o)
        labels = pa.concat_arrays([pa.array(_LEDGER_LABELS, type=_S), extra])
        no_user, no_ref = user[o] < 0, ref[o] < 0
        return self._table(
            "credit_ledger",
            [
                self.sequential_ids("credit_ledger", state, n),
                self.org_ids.take(org[o]),
                self.user_ids.take(
                    pa.array(org[o] * self.n_users + np.maximum(user[o], 0), mask=no_user)
                ),
                pa.array(amount[o], type=_I),
                pa.array(balance[o], type=_I),
                labels.take(label[o]),
                _nullable(self.ids("audits", np.maximum(ref[o], 0)), no_ref),
                _ts(self.start_us + rel[o]),
            ],
        )

    def _ledger_rows(
        self, rng: np.random.Generator, block: _Block, a: _Audits
    ) -> tuple[np.ndarray, ...]:
        """Grants, purchases, audit debits and refunds of a block, grouped by org, time-sorted.

        Labels index _LEDGER_LABELS, then the returned extra labels (one per purchase).
        User -1 and ref -1 mean null; ref is an audit's global row number.
        """
        n_orgs = self.n_orgs
        days = np.arange(block.d0, block.d1)
        # Grants at exactly midnight: the opening balance, then plan credits on each 1st.
        grant_days = [
            d
            for d in days
            if block.lo == 0
            and (d == 0 or (self.start_date + datetime.timedelta(days=int(d))).day == 1)
        ]
        g_org = np.repeat(np.arange(n_orgs), len(grant_days))
        g_day = np.tile(np.array(grant_days, dtype=np.int64), n_orgs)
        g_amount = np.where(g_day == 0, self.opening_balance[g_org], self.monthly_grant[g_org])
        g_label = np.where(g_day == 0, _L_OPENING, _L_MONTHLY + self.plan[g_org])
        # Purchases: now and then, by an admin, of one or a few packages.
        buys = rng.random((n_orgs, len(days))) < 0.06 / block.parts
        p_org, p_day = np.nonzero(buys)
        p_day = p_day + block.d0
        m = len(p_org)
        p_rel = p_day * DAY_US + rng.integers(block.lo, block.hi, m)
        p_amount = self.package[p_org] * rng.choice(np.array([1, 2, 5]), m, p=(0.6, 0.3, 0.1))
        extra = _concat(
            "Credit purchase (",
            _text(p_amount),
            " credits, card ending ",
            _text(rng.integers(1000, 10_000, m)),
            ")",
        )
        # Debits when audits start; failed audits are refunded a little later.
        billed = a.status != _PENDING
        cost = _AUDIT_COST[a.atype]
        delay = np.where(a.rows.shared, 0, rng.integers(1_000, 30_000_000, len(a.rows)))
        d_rel = np.minimum(a.rows.rel + delay, block.end_rel - 1)
        d_user = self.choose(self.user_cum, self.n_users, a.rows.org, rng.random(len(a.rows)))
        failed = np.flatnonzero(a.status == _FAILED)
        r_rel = np.minimum(
            d_rel[failed] + rng.integers(60_000_000, 900_000_000, len(failed)), block.end_rel - 1
        )
        b = np.flatnonzero(billed)
        pieces = [  # in tie-break order: grants, purchases, debits, refunds
            (
                g_org,
                g_day * DAY_US,
                g_amount,
                g_label,
                np.full(len(g_org), -1),
                np.full(len(g_org), -1),
            ),
            (
                p_org,
                p_rel,
                p_amount,
                len(_LEDGER_LABELS) + np.arange(m),
                np.zeros(m, np.int64),
                np.full(m, -1),
            ),
            (a.rows.org[b], d_rel[b], -cost[b], _L_DEBIT + a.atype[b], d_user[b], a.grow[b]),
            (
                a.rows.org[failed],
                r_rel,
                cost[failed],
                np.full(len(failed), _L_REFUND),
                np.full(len(failed), -1),
                a.grow[failed],
            ),
        ]
        cols = [
            np.concatenate([np.asarray(p[i], dtype=np.int64) for p in pieces]) for i in range(6)
        ]
        org, rel = cols[0], cols[1]
        order = np.lexsort((rel, org))  # stable: equal instants keep the tie-break order
        return (*(col[order] for col in cols), extra)

    def _strictly_increasing(
        self, org: np.ndarray, rel: np.ndarray, last_rel: np.ndarray, end_rel: int
    ) -> np.ndarray:
        """Nudge times by microseconds so each org's ledger is strictly ordered in time.

        A running balance is only well defined if no two rows of an org share an instant.
        Rows stay after the org's previous block and before the block end.
        """
        if not len(rel):
            return rel
        i = np.arange(len(rel))
        first, last = _group_first(org), _group_last(org)
        x = np.where(i == first, np.maximum(rel, last_rel[org] + 1), rel)
        stride = 2 * self.span_us  # larger than any x - i, so groups never mix
        lifted = np.maximum.accumulate(org * stride + x - i) - org * stride + i
        return np.minimum(lifted, end_rel - 1 - (last - i))

    def _top_up(
        self,
        rng: np.random.Generator,
        block: _Block,
        state: dict[str, np.ndarray],
        balance: np.ndarray,
        cols: tuple[np.ndarray, ...],
    ) -> tuple[np.ndarray, ...]:
        """Insert an automatic top-up just before an org's balance would go negative."""
        org, rel = cols[0], cols[1]
        block_start = block.d0 * DAY_US + block.lo
        at, rows = [], []
        for o in np.unique(org[balance < 0]):  # a loop over orgs, rarely more than a few
            s, e = np.searchsorted(org, o), np.searchsorted(org, o, side="right")
            j = s + int(np.argmax(balance[s:e] < 0))
            deficit = -int(balance[j:e].min())
            top = -(-deficit // int(self.package[o])) * int(self.package[o])
            # Just before the row that would overdraw, and still inside this block, so that
            # blocks stay in time order.
            before = rel[j - 1] + 1 if j > s else max(state["last_rel"][o] + 1, block_start)
            when = max(int(before), int(rel[j]) - int(rng.integers(1_000_000, 600_000_000)))
            at.append(j)
            rows.append((o, when, top, _L_TOP_UP, -1, -1))
        values = zip(*rows, strict=True)
        return tuple(
            np.insert(col, at, np.array(v, dtype=np.int64))
            for col, v in zip(cols, values, strict=True)
        )

    # audit log

    def _audit_log(self, block: _Block, state: dict[str, np.ndarray]) -> pa.Table:
        """One block of audit-log entries, all targets within the actor's org."""
        rng = self.block_rng("audit_log", block)
        rows = self.rows(rng, block, self.block_counts("audit_log", block))
        n = len(rows)
        o = self.time_order(rows)
        org = rows.org[o]
        weights = np.array([w for *_, w in _ACTIONS], dtype=np.float64)
        action = rng.choice(len(_ACTIONS), n, p=weights / weights.sum())
        system = np.array([s for _, _, s, _ in _ACTIONS])[action]
        kind_names = [k if k != "self" else "user" for _, k, _, _ in _ACTIONS]
        kind = np.array([_TARGET_KINDS.index(k) for k in kind_names])[action]
        is_self = np.array([k == "self" for _, k, _, _ in _ACTIONS])[action]
        admin_only = np.array([a in _ADMIN_ACTIONS for a, *_ in _ACTIONS])[action]
        actor = self.choose(self.user_cum, self.n_users, org, rng.random(n))
        admin = (rng.random(n) * self.n_admins[org]).astype(np.int64)
        actor = np.where(admin_only, admin, actor)
        u = rng.random(n)
        sizes = {
            "user": self.n_users,
            "project": self.n_projects,
            "export_request": _EXPORTS_PER_ORG,
            "report_subscription": _SUBSCRIPTIONS_PER_ORG,
        }
        pools = {
            "user": self.user_ids,
            "project": self.project_ids,
            "export_request": self.export_ids,
            "report_subscription": self.subscription_ids,
        }
        parts = []
        for code, name in enumerate(_TARGET_KINDS):
            sel = np.flatnonzero(kind == code)
            if name == "organization":
                parts.append((sel, self.org_ids.take(org[sel])))
            elif name in pools:
                local = (u[sel] * sizes[name]).astype(np.int64)
                if name == "user":  # a login's target is the user who logged in
                    local = np.where(is_self[sel], actor[sel], local)
                parts.append((sel, pools[name].take(org[sel] * sizes[name] + local)))
        target_id = _scatter(n, parts)  # api keys are not in the schema: no target id
        ip, agent = self._client_info(rng, system)
        return self._table(
            "audit_log",
            [
                self.sequential_ids("audit_log", state, n),
                self.org_ids.take(org),
                self.user_ids.take(pa.array(org * self.n_users + actor, mask=system)),
                _labels(tuple(a for a, *_ in _ACTIONS), action),
                _labels(_TARGET_KINDS, kind),
                target_id,
                ip,
                agent,
                _ts(self.start_us + rows.rel[o]),
            ],
        )

    def _client_info(
        self, rng: np.random.Generator, system: np.ndarray
    ) -> tuple[pa.Array, pa.Array]:
        """IPv4/IPv6 addresses from documentation ranges and user agents; null for the system."""
        n = len(system)
        family = rng.random(n)
        v4 = np.flatnonzero(~system & (family < 0.78))
        v6 = np.flatnonzero(~system & (family >= 0.78) & (family < 0.96))
        ipv4 = _concat(_pick(rng, _IPV4_NETS, len(v4)), _text(rng.integers(1, 255, len(v4))))
        # Groups in 0x1000..0xffff have no leading zeros, so the text is canonical (RFC 5952).
        groups = rng.integers(0x1000, 0x10000, (len(v6), 3)).astype(np.uint64)
        hexes = [_fixed_width_strings(_HEX[_nibbles(groups[:, g])[:, 12:]]) for g in range(3)]
        ipv6 = _concat("2001:db8:", hexes[0], ":", hexes[1], "::", hexes[2])
        ip = _scatter(n, [(v4, ipv4), (v6, ipv6)])
        agent_code = rng.integers(0, len(_USER_AGENTS), n)
        no_agent = system | (rng.random(n) < 0.03)
        agent = _labels(_USER_AGENTS, agent_code)
        return ip, _nullable(agent, no_agent)

    # export requests and subscriptions

    def _day_text(self, d: int) -> str:
        """ISO date of a day of the window."""
        return (self.start_date + datetime.timedelta(days=int(d))).isoformat()

    def _export_requests(self) -> pa.Table:
        """Per org: one PENDING request per export type, and two COMPLETED ones from history."""
        days = self.p.days
        cols: dict[str, list] = {f.name: [] for f in SCHEMAS["export_requests"]}
        run_ids = self.ids("export_runs", np.arange(self.n_orgs * _EXPORTS_PER_ORG))
        for o in range(self.n_orgs):
            rng = self.rng(_K_EXPORTS, o)
            org_id = self.org_ids[o].as_py()
            for j in range(_EXPORTS_PER_ORG):
                row = o * _EXPORTS_PER_ORG + j
                req_id = self.export_ids[row].as_py()
                pending = j < len(_EXPORT_TYPES)
                etype = _EXPORT_TYPES[j] if pending else _EXPORT_TYPES[int(rng.integers(0, 3))]
                fmt = _EXPORT_FORMATS[(o + j) % len(_EXPORT_FORMATS)]
                if days == 1:
                    d_from = d_to = 0
                elif pending:
                    d_from = int(rng.integers(0, days - 1))
                    d_to = int(rng.integers(d_from + 1, days))
                else:  # history: asked for a range that had already ended
                    d_to = int(rng.integers(0, days - 1))
                    d_from = int(rng.integers(0, d_to + 1))
                if pending:  # asked in the last hours before end_date
                    created = (
                        self.start_us + self.span_us - int(rng.integers(60_000_000, 6 * _HOUR_US))
                    )
                else:
                    created = (
                        self.start_us
                        + min(d_to + 1, days - 1) * DAY_US
                        + int(rng.integers(0, DAY_US))
                    )
                user = int(rng.integers(0, self.n_users))
                cols["id"].append(req_id)
                cols["export_type"].append(etype)
                cols["export_format"].append(fmt)
                cols["user_id"].append(self.user_ids[o * self.n_users + user].as_py())
                cols["organization_id"].append(org_id)
                cols["filters"].append(
                    json.dumps(
                        {"date_from": self._day_text(d_from), "date_to": self._day_text(d_to)}
                    )
                )
                cols["parameters"].append(None if rng.random() < 0.5 else "{}")
                cols["status"].append("PENDING" if pending else "COMPLETED")
                cols["progress_percentage"].append(0 if pending else 100)
                cols["created_at"].append(created)
                cols["error_message"].append(None)
                cols["retry_count"].append(0 if pending or j % 2 else 1)
                if pending:
                    for name in (
                        "file_path",
                        "file_size",
                        "row_count",
                        "checksum_sha256",
                        "started_at",
                        "completed_at",
                        "expires_at",
                        "run_id",
                    ):
                        cols[name].append(None)
                    cols["download_count"].append(0)
                    continue
                started = created + int(rng.integers(1_000_000, 30_000_000))
                completed = started + int(rng.integers(2_000_000, 120_000_000))
                cols["file_path"].append(f"exports/{org_id}/{req_id}.{fmt.lower()}")
                cols["file_size"].append(int(rng.integers(2_000, 5_000_000)))
                cols["row_count"].append(int(rng.integers(10, 50_000)))
                cols["checksum_sha256"].append(
                    hashlib.sha256(f"{self.p.seed}:{req_id}".encode()).hexdigest()
                )
                cols["download_count"].append(int(rng.integers(0, 6)))
                cols["started_at"].append(started)
                cols["completed_at"].append(completed)
                cols["expires_at"].append(completed + 7 * DAY_US)
                cols["run_id"].append(run_ids[row].as_py())
        return self._from_pylists("export_requests", cols)

    def _report_subscriptions(self) -> pa.Table:
        """Per org: an active daily, weekly and monthly subscription, and one inactive."""
        cols: dict[str, list] = {f.name: [] for f in SCHEMAS["report_subscriptions"]}
        for o in range(self.n_orgs):
            rng = self.rng(_K_SUBSCRIPTIONS, o)
            for j in range(_SUBSCRIPTIONS_PER_ORG):
                active = j < len(_CADENCES)
                cadence = _CADENCES[j] if active else _CADENCES[int(rng.integers(0, 3))]
                owner = 0 if j == 0 else int(rng.integers(0, self.n_users))
                g = o * self.n_users + owner
                # Recipients at the organization's own domain: the default recipient policy
                # lets a report reach only the domains of the organization's users.
                domain = f"{self.org_slugs[o]}.example.com"
                recipients = [f"{self.user_locals[g]}.reports@{domain}"]
                if rng.random() < 0.5:
                    recipients.append(f"reports@{domain}")
                cols["id"].append(self.subscription_ids[o * _SUBSCRIPTIONS_PER_ORG + j].as_py())
                cols["organization_id"].append(self.org_ids[o].as_py())
                cols["user_id"].append(self.user_ids[g].as_py())
                cols["export_type"].append(("scan_results", "credit_usage_report")[(o + j) % 2])
                cols["export_format"].append(_REPORT_FORMATS[(o + j) % len(_REPORT_FORMATS)])
                cols["cadence"].append(cadence)
                cols["email_recipients"].append(json.dumps(recipients))
                cols["filters"].append(None if rng.random() < 0.5 else "{}")
                cols["active"].append(active)
                # Active ones have never run; the inactive one ran until it was switched off.
                cols["last_run_at"].append(
                    None if active else self.start_us + int(rng.integers(0, self.span_us))
                )
                since = int(self.user_created[g])
                cols["created_at"].append(
                    since + int(rng.integers(0, max(1, self.start_us - since)))
                )
        return self._from_pylists("report_subscriptions", cols)

    def _from_pylists(self, table: str, cols: dict[str, list]) -> pa.Table:
        """A table from Python lists; timestamps given as microseconds since the epoch."""
        arrays = []
        for field in SCHEMAS[table]:
            values = cols[field.name]
            if field.type == _T:
                mask = np.array([v is None for v in values], dtype=bool)
                stamps = np.array([0 if v is None else v for v in values], dtype=np.int64)
                arrays.append(_ts(stamps, mask))
            else:
                arrays.append(pa.array(values, type=field.type))
        return self._table(table, arrays)
