"""Shared inputs for the renderer tests: awkward values of every supported type, and helpers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from export_pipelines.render import ExportFormat, RenderOptions, ReportContext, render

UTC = dt.timezone.utc

# Text that breaks naive writers: delimiters, quotes, line breaks, markup, unicode
# (Greek, CJK, emoji), formula starters, a URL, whitespace at the edges, empty, null.
TEXTS = [
    "plain",
    'say "hi", then leave',
    "two\nlines",
    "carriage\r\nreturn",
    "semi;colon\ttab",
    "<b>&amp; markup</b>",
    "Ωμέγα αβγ",
    "東京 漢字",
    "rocket 🚀 party 🎉",
    "=SUM(A1:A2)",
    "+1 555 0100",
    "-42",
    "@mention",
    "\tleading tab",
    "\rleading CR",
    "https://example.com/path?a=1&b=2",
    "  padded  ",
    "",
    None,
    "naïve café",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
N = len(TEXTS)


def sample_table() -> pa.Table:
    """N rows covering every contract type, with nulls in every column."""
    ints = [i * 1_000_003 - 7 for i in range(N)]
    ints[3] = None
    ints[4] = 2**53 + 1
    floats = [i / 7 - 1.5 for i in range(N)]
    floats[1] = None
    floats[2] = 1e20
    floats[5] = 1e-7
    floats[6] = 0.1 + 0.2
    bools = [i % 3 == 0 for i in range(N)]
    bools[7] = None
    base = dt.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
    stamps = [base + dt.timedelta(hours=i, microseconds=i * 123_457) for i in range(N)]
    stamps[0] = dt.datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)  # no fraction
    stamps[8] = None
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(N)]
    days[9] = None
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("text", pa.string()),
            ("amount", pa.float64()),
            ("active", pa.bool_()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
            ("note", pa.large_string()),
        ],
        metadata={b"source": b"tests"},
    )
    return pa.table(
        [
            pa.array(ints, pa.int64()),
            pa.array(TEXTS, pa.string()),
            pa.array(floats, pa.float64()),
            pa.array(bools, pa.bool_()),
            pa.array(stamps, pa.timestamp("us", tz="UTC")),
            pa.array(days, pa.date32()),
            pa.array(
                [None if t is None else f"note {i}: {t}" for i, t in enumerate(TEXTS)],
                pa.large_string(),
            ),
        ],
        schema=schema,
    )


def reader(table: pa.Table, chunk: int = 3) -> pa.RecordBatchReader:
    """A single-pass stream of small batches (so batch boundaries are exercised)."""
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=chunk))


def context(**overrides) -> ReportContext:
    values = {
        "export_type": "orders",
        "title": "Orders — March 2026",
        "organization_id": "org-42",
        "period": "2026-03",
        "as_of": "2026-03-31T23:59:59Z",
        "summary": (("Total amount", "1,234.50 EUR"), ("Source", "tests")),
        "full_file_name": "orders_org-42_2026-03.csv.gz",
    }
    values.update(overrides)
    return ReportContext(**values)


def render_file(
    fmt: ExportFormat,
    table: pa.Table,
    path: Path,
    options: RenderOptions | None = None,
    ctx: ReportContext | None = None,
) -> tuple[Path, int]:
    rendered = render(fmt, reader(table), path, options or RenderOptions(), ctx or context())
    assert rendered.format is fmt
    return rendered.path, rendered.rows


def renders_identically(
    fmt: ExportFormat, table: pa.Table, folder: Path, options: RenderOptions | None = None
) -> bool:
    """Render twice into different folders; True when the two files are byte-identical."""
    first, second = folder / "a", folder / "b"
    first.mkdir()
    second.mkdir()
    name = f"export.{fmt.extension}"
    one, _ = render_file(fmt, table, first / name, options)
    two, _ = render_file(fmt, table, second / name, options)
    return one.read_bytes() == two.read_bytes()


def iso_utc(value: dt.datetime) -> str:
    """The shared timestamp style, computed independently of the renderers."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds") + "Z"


def guarded(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text
