"""Excel for people (issue 11): a scan_results export opened as a BI recipient would.

The workbook is rendered from the real spec and `build.report_context`, read back with
openpyxl, and printed to PDF by LibreOffice, whose pages are read with pypdf.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import shutil
import subprocess
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest
from pypdf import PdfReader

from export_pipelines.catalog import CATALOG
from export_pipelines.columns import arrow_schema
from export_pipelines.pipeline.build import report_context
from export_pipelines.pipeline.deliverable import Deliverable
from export_pipelines.pipeline.totals import Totals
from export_pipelines.render import ExportFormat, RenderOptions, render
from export_pipelines_tests.render_fixtures import TEXTS, guarded, render_file, sample_table

UTC = dt.timezone.utc
ORG = "0b6f7c1e-2a43-4e8f-9d3a-5c1f2e7a9b01"
DAY = dt.date(2026, 3, 1)
SPEC = CATALOG["scan_results"]
HEADINGS = [
    "Project",
    "Project URL",
    "Audit type",
    "Status",
    "DCS score",
    "AI citation score",
    "Credits",
    "Scanned (UTC)",
    "Scan ID",
    "Project ID",
    "Audit ID",
]


def scan_results(rows: int) -> pa.Table:
    """A day of one organization's scans, shaped by the real spec."""
    start = dt.datetime(2026, 3, 1, tzinfo=UTC)
    data = {
        "organization_id": [ORG] * rows,
        "scan_id": [f"5ca{i:05d}-1111-4222-8333-444455556666" for i in range(rows)],
        "project_id": [f"9e0{i % 7:05d}-aaaa-4bbb-8ccc-ddddeeeeffff" for i in range(rows)],
        "project_name": [["Storefront", "Docs portal", "Careers"][i % 3] for i in range(rows)],
        "project_url": [f"https://example.com/p{i % 7}" for i in range(rows)],
        "audit_id": [f"a0d{i % 40:05d}-1234-4567-89ab-cdef01234567" for i in range(rows)],
        "audit_type": [["full", "quick", "ai_citation"][i % 3] for i in range(rows)],
        "status": ["completed"] * rows,
        "dcs_score": [40 + (i * 37 % 600) / 10 for i in range(rows)],
        "ai_citation_score": [None if i % 4 == 0 else 10 + i % 80 for i in range(rows)],
        "credits_consumed": [[5, 10, 1200][i % 3] for i in range(rows)],
        "scanned_at": [start + dt.timedelta(seconds=250 * i) for i in range(rows)],
    }
    return pa.table(data, schema=arrow_schema(SPEC.columns))


def render_report(table: pa.Table, path: Path) -> Path:
    deliverable = Deliverable(
        SPEC, ORG, DAY, DAY, (ExportFormat.EXCEL,), organization_name="Acme Analytics"
    )
    totals = Totals(SPEC)
    for batch in table.to_batches():
        totals.add(batch)
    context = report_context(deliverable, totals.values(), deliverable.formats)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=64))
    return render(ExportFormat.EXCEL, reader, path, RenderOptions(), context).path


def soffice() -> str:
    """LibreOffice's soffice; skip without it — except in CI, where that is a failure."""
    found = shutil.which("soffice")
    if found is None:
        message = "LibreOffice (soffice) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    """One LibreOffice profile for this module: creating it is most of a conversion's time."""
    return tmp_path_factory.mktemp("libreoffice-profile")


def convert(path: Path, target: str, out: Path, profile: Path) -> None:
    subprocess.run(
        [
            soffice(),
            "--headless",
            f"-env:UserInstallation=file://{profile}",
            "--convert-to",
            target,
            "--outdir",
            str(out),
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )


def test_a_bi_reader_gets_labels_formats_print_setup_and_a_summary(tmp_path):
    table = scan_results(50)
    book = openpyxl.load_workbook(render_report(table, tmp_path / "scans.xlsx"))
    assert book.sheetnames == ["Summary", "Data"]

    data = book["Data"]
    header = [c.value for c in data[1]]
    assert header == HEADINGS  # labels; ids last; no organization column
    formats = dict(zip(header, (c.number_format for c in data[2])))
    assert formats["DCS score"] == "0.0"
    assert formats["Credits"] == "#,##0"
    assert formats["Scanned (UTC)"] == 'yyyy-mm-dd hh:mm:ss "UTC"'
    first = dict(zip(header, (c.value for c in data[2])))
    assert first["Project"] == "Storefront" and first["Scanned (UTC)"] == dt.datetime(2026, 3, 1)
    assert data.print_title_rows == "$1:$1"
    assert data.page_setup.orientation == "landscape"
    assert (data.page_setup.fitToWidth, data.page_setup.fitToHeight) == (1, 0)
    assert data.sheet_properties.pageSetUpPr.fitToPage

    summary = book["Summary"]
    assert summary["A1"].value == "Scan results"
    pairs = {a: b for a, b in summary.iter_rows(min_row=2, max_col=2, values_only=True) if a}
    assert pairs["Organization"] == "Acme Analytics"
    assert pairs["Period"] == "2026-03-01"
    assert pairs["Data as of"] == "2026-03-02 00:00 UTC"
    assert pairs["Rows"] == 50
    assert pairs["Scans"] == "50"  # the spec's totals, as the PDF shows them
    assert summary.page_setup.orientation == "landscape"
    # generated "when the data is as of", not 1980
    assert book.properties.created == dt.datetime(2026, 3, 2)


def test_libreoffice_prints_the_header_and_every_column_on_each_page(tmp_path, profile):
    rows = 300
    path = render_report(scan_results(rows), tmp_path / "scans.xlsx")
    convert(path, "pdf", tmp_path, profile)
    pages = [page.extract_text() for page in PdfReader(tmp_path / "scans.pdf").pages]

    cover, first, *rest = pages
    assert "Scan results" in cover and "Acme Analytics" in cover and "Page 1 of" in cover
    assert ORG not in "".join(pages)  # the organization is named, never its id
    # page 2, the first of the data: the header and a row across several columns
    for heading in HEADINGS:
        assert heading in first, heading
    row = "Storefront https://example.com/p0 full completed 40.0"
    assert row in " ".join(first.split()), first[:400]
    assert "1,200" in first and "2026-03-01 00:00:00 UTC" in first
    # fit to width: every page holds every column, under the repeated header
    for text in [first, *rest]:
        assert "Project" in text and "Audit ID" in text
    assert len(pages) <= 1 + math.ceil(rows / 30)


def test_libreoffice_reads_every_sheet(tmp_path, profile):
    table = sample_table()
    path, _ = render_file(
        ExportFormat.EXCEL, table, tmp_path / "o.xlsx", RenderOptions(excel_rows_per_sheet=12)
    )
    out = tmp_path / "csv"
    # 44=comma 34=quote 76=UTF-8; the trailing -1 writes one CSV per sheet
    convert(
        path,
        "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1",
        out,
        profile,
    )
    summary = list(csv.reader((out / "o-Summary.csv").open(encoding="utf-8", newline="")))
    assert ["Rows", "20"] in [line[:2] for line in summary]
    first = list(csv.reader((out / "o-Data.csv").open(encoding="utf-8", newline="")))
    second = list(csv.reader((out / "o-Data (2).csv").open(encoding="utf-8", newline="")))
    assert (
        first[0]
        == second[0]
        == ["Text", "Amount", "Active", "Created at (UTC)", "Day"]
        + [
            "Note",
            "ID",
        ]
    )
    rows = first[1:] + second[1:]
    assert len(rows) == table.num_rows
    for line, record in zip(rows, table.to_pylist()):
        text, _amount, active, created, day, _note, id_ = line
        if record["id"] is None:
            assert id_ == ""
        else:  # values, not as shown: big numbers in scientific notation
            assert math.isclose(float(id_), record["id"], rel_tol=1e-14)
        expected_text = "" if record["text"] is None else guarded(record["text"])
        assert text in (expected_text, expected_text.replace("\r\n", "\n").replace("\r", "\n"))
        assert active == {True: "TRUE", False: "FALSE", None: ""}[record["active"]]
        if record["created_at"] is not None:
            assert created == record["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        if record["day"] is not None:
            assert day == record["day"].isoformat()
    assert {r[0] for r in rows} >= {"東京 漢字", "Ωμέγα αβγ", "rocket 🚀 party 🎉"}
    assert TEXTS[1] in {r[0] for r in rows}
