"""PDF renderer: text extracted with pypdf; title block, row-limit note, pagination, fonts."""

from __future__ import annotations

import datetime as dt
import logging

import pyarrow as pa
import pypdf
import pytest
from pypdf.generic import ContentStream

from export_pipelines.columns import Role, Unit, arrow_schema, integer, string, timestamp
from export_pipelines.columns import number as float_column
from export_pipelines.render import Chart, ExportFormat, RenderOptions, pdf
from export_pipelines.render.pdf import charts
from export_pipelines_tests.render_fixtures import (
    context,
    render_file,
    renders_identically,
    sample_table,
)

logging.getLogger("pypdf").setLevel(logging.ERROR)  # reportlab's emoji CMap entries warn


def _table(rows: int) -> pa.Table:
    base = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    return pa.table(
        {
            "id": pa.array(range(1, rows + 1), pa.int64()),
            "name": [f"customer {i} Ωμέγα" for i in range(rows)],
            "amount": [i * 1.5 for i in range(rows)],
            "category": [["retail", "online", "partner"][i % 3] for i in range(rows)],
            "at": pa.array(
                [base + dt.timedelta(hours=i) for i in range(rows)], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def _pages(path) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(path).pages]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_title_block_and_summary(tmp_path):
    ctx = context()
    path, rows = render_file(ExportFormat.PDF, sample_table(), tmp_path / "o.pdf", ctx=ctx)
    assert rows == sample_table().num_rows
    first = _flat(_pages(path)[0])
    for expected in (
        ctx.title,
        "Export: orders",
        "Organization: org-42",
        "Period: 2026-03",
        "Data as of: 2026-03-31T23:59:59Z",
        "Total amount 1,234.50 EUR",
        "Source tests",
        f"All {rows} rows are shown.",
    ):
        assert expected in first, expected
    assert "Rows 20" in first
    reader = pypdf.PdfReader(path)
    assert reader.metadata.title == ctx.title


def test_cells_text_including_greek_and_long_text(tmp_path):
    table = pa.table({"t": ["Ωμέγα αβγ", "x" * 2000, "line one\nline two"], "n": [1, 22, -333]})
    path, _ = render_file(ExportFormat.PDF, table, tmp_path / "o.pdf")
    text = _pages(path)[0]
    assert "Ωμέγα αβγ" in text
    assert "…" in text  # the long cell is cut with a marker
    assert "x" * 2000 not in text.replace("\n", "")
    assert "line one" in text and "line two" in text
    assert "-333" in text


def test_row_limit_note_on_first_and_last_page(tmp_path):
    table = _table(200)
    ctx = context(full_file_name="orders_full.csv.gz")
    path, rows = render_file(
        ExportFormat.PDF, table, tmp_path / "o.pdf", RenderOptions(pdf_row_limit=60), ctx
    )
    assert rows == 60
    pages = [_flat(p) for p in _pages(path)]
    note = "This PDF shows the first 60 of 200 rows; the complete data is in orders_full.csv.gz."
    assert note in pages[0]
    assert note in pages[-1]
    body = " ".join(pages)
    assert "customer 59 " in body and "customer 60 " not in body
    assert "Rows 200" in pages[0]


def test_no_note_below_the_limit(tmp_path):
    path, rows = render_file(
        ExportFormat.PDF, _table(30), tmp_path / "o.pdf", RenderOptions(pdf_row_limit=30)
    )
    assert rows == 30
    text = " ".join(_flat(p) for p in _pages(path))
    assert "All 30 rows are shown." in text
    assert "This PDF shows the first" not in text


def test_paginated_with_header_on_every_page(tmp_path):
    table = _table(150)
    path, _ = render_file(ExportFormat.PDF, table, tmp_path / "o.pdf")
    pages = _pages(path)
    assert len(pages) >= 3
    for number, text in enumerate(pages, start=1):
        flat = _flat(text)
        if "customer" in flat:  # every page with rows repeats the header
            assert "id name amount category at" in flat, number
        assert f"Page {number} of {len(pages)}" in flat
    ids = [
        int(line.split()[0])
        for p in pages
        for line in p.splitlines()
        if line.split() and line.split()[0].isdigit() and "customer" in line
    ]
    assert ids == list(range(1, 151))


def test_numbers_are_right_aligned(tmp_path):
    table = pa.table({"label": ["a", "b"], "n": [1, 1234567]})
    path, _ = render_file(ExportFormat.PDF, table, tmp_path / "o.pdf")
    reader = pypdf.PdfReader(path)
    operations = ContentStream(reader.pages[0].get_contents(), reader).operations
    ends, x, size = {}, 0.0, 0.0
    for operands, operator in operations:
        if operator == b"Tm":
            x = float(operands[4])
        elif operator == b"Tf":
            size = float(operands[1])
        elif operator == b"Tj":
            raw = operands[0]  # ASCII codes are themselves in reportlab's TTF subset 0
            text = raw.original_bytes.decode("latin-1") if hasattr(raw, "original_bytes") else raw
            if text in ("1", "1234567"):
                ends[text] = x + pdf.pdfmetrics.stringWidth(text, "DejaVuSansCondensed", size)
    assert set(ends) == {"1", "1234567"}
    assert abs(ends["1"] - ends["1234567"]) < 0.01


@pytest.mark.parametrize(
    "chart,title",
    [
        (
            Chart("Mean amount", "line", by="at", value="amount", function="mean"),
            "Mean amount per day",
        ),
        (
            Chart("Amount", "bar", by="category", value="amount", function="sum"),
            "Amount by category",
        ),
        (Chart("Rows", "bar", by="category"), "Rows by category"),
    ],
)
def test_chart(tmp_path, chart, title):
    ctx = context(charts=(chart,))
    path, _ = render_file(ExportFormat.PDF, _table(90), tmp_path / "o.pdf", ctx=ctx)
    first = _flat(_pages(path)[0])
    assert title in first
    if chart.kind == "bar":
        assert all(c in first for c in ("retail", "online", "partner"))


def _series(chart: Chart, schema: pa.Schema, **window) -> charts.Series:
    return charts.Series(chart, schema, context(charts=(chart,), **window))


def test_chart_aggregation_is_bounded():
    """A year of rows, one per minute: bounded keys while streaming, nothing lost, ≤ 62 points."""
    schema = pa.schema([("at", pa.timestamp("us", tz="UTC")), ("v", pa.float64())])
    series = _series(Chart("V", "line", by="at", value="v", function="sum"), schema)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    minutes = 365 * 24 * 60
    for first in range(0, minutes, 50_000):
        count = min(50_000, minutes - first)
        stamps = pa.array(
            [start + dt.timedelta(minutes=first + i) for i in range(count)],
            pa.timestamp("us", tz="UTC"),
        )
        series.add(pa.record_batch([stamps, pa.array([1.0] * count)], schema=schema))
        assert len(series.sums) <= charts.MAX_HOUR_KEYS + 24 * 7  # folded to days, not kept
    assert sum(series.sums.values()) == minutes  # nothing lost by folding
    assert sum(series.counts.values()) == minutes
    points = series.points()
    assert series.time_unit() == "week"
    assert len(points) <= charts.MAX_POINTS
    assert sum(v for _, v in points) == minutes


@pytest.mark.parametrize(
    "days,unit", [(1, "hour"), (2, "hour"), (3, "day"), (62, "day"), (90, "week"), (800, "month")]
)
def test_time_buckets_follow_the_window(days, unit):
    schema = pa.schema([("at", pa.timestamp("us", tz="UTC"))])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=days)
    series = _series(Chart("Rows", "line", by="at"), schema, window_start=start, window_end=end)
    stamps = [start + (end - start) * i / 500 for i in range(500)]
    series.add(pa.record_batch([pa.array(stamps, pa.timestamp("us", tz="UTC"))], schema=schema))
    assert series.time_unit() == unit
    points = series.points()
    assert len(points) <= charts.MAX_POINTS
    assert sum(v for _, v in points) == 500
    assert points[0][0] == dt.datetime(2026, 1, 1) - dt.timedelta(
        days=3 if unit == "week" else 0  # 2026-01-01 is a Thursday: its week starts Monday
    )


def test_line_chart_shows_the_mean_per_point():
    schema = pa.schema([("at", pa.timestamp("us", tz="UTC")), ("v", pa.float64())])
    day = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    at = pa.array(
        [day, day + dt.timedelta(hours=5), day + dt.timedelta(days=2)],
        pa.timestamp("us", tz="UTC"),
    )
    series = _series(Chart("V", "line", by="at", value="v", function="mean"), schema)
    series.add(pa.record_batch([at, pa.array([10.0, 30.0, 5.0])], schema=schema))
    # Per day: the mean of each day's rows; the day without rows has no point (not zero).
    assert series.points() == [(dt.datetime(2026, 3, 1), 20.0), (dt.datetime(2026, 3, 3), 5.0)]


def test_bars_keep_the_largest_and_fold_the_rest_into_other():
    schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
    series = _series(Chart("V", "bar", by="k", value="v", function="sum", limit=3), schema)
    keys = [f"k{i}" for i in range(10)]
    series.add(pa.record_batch([pa.array(keys), pa.array(range(10))], schema=schema))
    series.add(pa.record_batch([pa.array(["k0"]), pa.array([100])], schema=schema))
    assert series.bars() == [("k0", 100.0), ("k9", 9.0), ("k8", 8.0), ("Other", 28.0)]
    assert series.title() == "V by k"


def test_fonts_are_embedded(tmp_path):
    path, _ = render_file(ExportFormat.PDF, sample_table(), tmp_path / "o.pdf")
    reader = pypdf.PdfReader(path)
    fonts = [ref.get_object() for ref in reader.pages[0]["/Resources"]["/Font"].values()]
    truetype = [f for f in fonts if f["/Subtype"] == "/TrueType"]
    assert {"DejaVuSans", "DejaVuSans-Bold", "DejaVuSansCondensed"} <= {
        str(f["/BaseFont"]).split("+")[-1] for f in truetype
    }
    for font in truetype:
        assert "/FontFile2" in font["/FontDescriptor"].get_object()  # embedded subset


def test_empty_stream(tmp_path):
    path, rows = render_file(ExportFormat.PDF, _table(0), tmp_path / "o.pdf")
    assert rows == 0
    text = _flat(_pages(path)[0])
    assert "All 0 rows are shown." in text and "id name amount category at" in text


def test_deterministic(tmp_path):
    ctx_table = _table(120)
    assert renders_identically(
        ExportFormat.PDF, ctx_table, tmp_path, RenderOptions(pdf_row_limit=100)
    )


def test_chart_of_a_missing_column_says_so_instead_of_failing(tmp_path):
    ctx = context(charts=(Chart("Amount", "line", by="no_such_column"),))
    path, rows = render_file(ExportFormat.PDF, _table(5), tmp_path / "o.pdf", ctx=ctx)
    assert rows == 5
    assert "no_such_column" in _flat(_pages(path)[0])


# --- for readers: names, labels, units, whole words ------------------------------------------

ORG_ID = "0b6f7c1e-2a43-4e8f-9d3a-5c1f2e7a9b01"
READER_COLUMNS = (
    string("organization_id", role=Role.IDENTIFIER),
    string("entry_id", label="Entry ID", role=Role.IDENTIFIER),
    string("reference_id", label="Reference", role=Role.IDENTIFIER, shown=True),
    string("status", label="Status"),
    integer("credits_consumed", label="Credits", unit=Unit.CREDITS),
    float_column("dcs_score", label="DCS score", unit=Unit.SCORE),
    float_column("price", label="Price", unit=Unit.MONEY),
    float_column("share", label="Share", unit=Unit.PERCENT),
    timestamp("scanned_at", label="Scanned"),
)


def _reader_table() -> pa.Table:
    return pa.table(
        {
            "organization_id": [ORG_ID] * 2,
            "entry_id": ["e1f2a3b4-0000-4000-8000-000000000001"] * 2,
            "reference_id": ["INV-2026-0042", "INV-2026-0043"],
            "status": ["completed", "failed"],
            "credits_consumed": pa.array([1_234_567, -50], pa.int64()),
            "dcs_score": [72.456, None],
            "price": [1234.5, 0.0],
            "share": [0.125, 1.0],
            "scanned_at": pa.array(
                [dt.datetime(2026, 11, 3, 14, 5, 59, tzinfo=dt.timezone.utc), None],
                pa.timestamp("us", tz="UTC"),
            ),
        },
        schema=arrow_schema(READER_COLUMNS),
    )


def test_the_organization_is_named_once_and_its_id_never_shown(tmp_path):
    ctx = context(
        organization_id=ORG_ID, organization_name="Ωmega Café GmbH", columns=READER_COLUMNS
    )
    path, _ = render_file(ExportFormat.PDF, _reader_table(), tmp_path / "o.pdf", ctx=ctx)
    pages = [_flat(p) for p in _pages(path)]
    assert "Organization: Ωmega Café GmbH" in pages[0]
    assert all(ORG_ID not in page for page in pages)


def test_headers_are_labels_and_pure_identifiers_are_left_out(tmp_path):
    ctx = context(columns=READER_COLUMNS)
    path, _ = render_file(ExportFormat.PDF, _reader_table(), tmp_path / "o.pdf", ctx=ctx)
    text = _flat(_pages(path)[0])
    assert "Reference Status Credits DCS score Price Share Scanned" in text
    assert "INV-2026-0042" in text  # an identifier the spec marks as shown stays
    for hidden in ("organization_id", "entry_id", "Entry ID", "e1f2a3b4", ORG_ID):
        assert hidden not in text, hidden


def test_numbers_per_unit_and_readable_times(tmp_path):
    ctx = context(columns=READER_COLUMNS)
    path, _ = render_file(ExportFormat.PDF, _reader_table(), tmp_path / "o.pdf", ctx=ctx)
    text = _flat(_pages(path)[0])
    for expected in ("1,234,567", "-50", "72.5", "1,234.50", "0.00", "12.5 %", "100.0 %"):
        assert f" {expected} " in f" {text} ", expected
    assert "2026-11-03 14:05 UTC" in text and "14:05:59" not in text
