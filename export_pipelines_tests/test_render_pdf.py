"""PDF renderer: text extracted with pypdf; title block, row-limit note, pagination, fonts."""

from __future__ import annotations

import datetime as dt
import logging

import pyarrow as pa
import pypdf
import pytest
from pypdf.generic import ContentStream

from export_pipelines.render import ExportFormat, RenderOptions, pdf
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
    "kind,label,value,title",
    [
        ("line", "at", "amount", "Mean of amount by at"),
        ("bar", "category", "amount", "Sum of amount by category"),
        ("bar", "category", "name", "Rows by category"),
    ],
)
def test_chart(tmp_path, kind, label, value, title):
    ctx = context(chart=(label, value, kind))
    path, _ = render_file(ExportFormat.PDF, _table(90), tmp_path / "o.pdf", ctx=ctx)
    first = _flat(_pages(path)[0])
    assert title in first
    if kind == "bar":
        assert all(c in first for c in ("retail", "online", "partner"))


def test_chart_aggregation_is_bounded():
    schema = pa.schema([("x", pa.float64()), ("v", pa.float64())])
    chart = pdf.ChartData(schema, ("x", "v", "line"))
    for start in range(0, 20_000, 1_000):
        xs = pa.array([float(i) for i in range(start, start + 1_000)])
        chart.add(pa.record_batch([xs, pa.array([1.0] * 1_000)], schema=schema))
    assert len(chart.sums) <= pdf.MAX_CHART_KEYS
    assert sum(chart.sums.values()) == 20_000  # nothing lost by bucketing
    assert sum(chart.counts.values()) == 20_000


def test_line_chart_shows_the_mean_per_point():
    schema = pa.schema([("x", pa.float64()), ("v", pa.float64())])
    chart = pdf.ChartData(schema, ("x", "v", "line"))
    chart.add(
        pa.record_batch([pa.array([1.0, 1.0, 2.0]), pa.array([10.0, 30.0, 5.0])], schema=schema)
    )
    assert dict(chart._line("DejaVuSans").data[0]) == {1.0: 20.0, 2.0: 5.0}


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
    ctx = context(chart=("no_such_column", "amount", "line"))
    path, rows = render_file(ExportFormat.PDF, _table(5), tmp_path / "o.pdf", ctx=ctx)
    assert rows == 5
    assert "no_such_column" in _flat(_pages(path)[0])
