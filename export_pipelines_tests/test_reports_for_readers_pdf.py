"""PDF for people (issue 11): monthly reports of the demo, read as a BI recipient would.

A month of demo data (30 days, 40 scans a day: 1,200 rows) is rendered through the real
pipeline (`render_deliverable`, the spec's columns and charts, the organization's name
from the database), then read back with pypdf only: the text a reader sees, each line of
text as drawn (pypdf's text visitor), and the chart forms' drawing operators.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import logging
import re
from pathlib import Path

import pyarrow as pa
import pypdf
import pytest
from pypdf.generic import ContentStream

from export_pipelines.catalog import CATALOG
from export_pipelines.pipeline.build import render_deliverable
from export_pipelines.pipeline.deliverable import Deliverable, Purpose
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.render import ExportFormat
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase
from export_pipelines_tests.render_fixtures import render_file

logging.getLogger("pypdf").setLevel(logging.ERROR)  # reportlab's emoji CMap entries warn

MONTH = demo_data.DemoParams(
    organizations=2, days=30, events_per_day=40, end_date=dt.date(2026, 11, 1)
)
FIRST, LAST = dt.date(2026, 10, 2), dt.date(2026, 10, 31)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


# --- reading a PDF as a person would ---------------------------------------------------------


def page_text(path: Path, page: int) -> str:
    return " ".join(pypdf.PdfReader(path).pages[page].extract_text().split())


def drawn_lines(path: Path) -> list[str]:
    """The text of every line as pypdf's text visitor reports it (a table row per line)."""
    lines: list[str] = []
    for page in pypdf.PdfReader(path).pages:
        page.extract_text(visitor_text=lambda text, *_: lines.append(text.strip()))
    return [line for line in lines if line]


def text_columns(path: Path) -> list[list[str]]:
    """ASCII strings drawn at one x on one page, top to bottom: a table column's lines.

    Read from the page's own operators (text matrix, then show-text), so two lines of one
    cell are two consecutive items however a text extractor would merge a row.
    """
    reader = pypdf.PdfReader(path)
    columns: list[list[str]] = []
    for page in reader.pages:
        at: dict[float, list[tuple[float, str]]] = collections.defaultdict(list)
        x = y = 0.0
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"Tm":
                x, y = round(float(operands[4]), 1), float(operands[5])
            elif operator == b"Tj":
                raw = operands[0]
                data = raw.original_bytes if hasattr(raw, "original_bytes") else bytes(raw)
                if data.isascii():
                    at[x].append((-y, data.decode("ascii")))
        columns += [[text for _, text in sorted(items)] for items in at.values()]
    return columns


def broken_words(lines: list[str], words: set[str]) -> set[str]:
    """Words of `words` drawn in two pieces: one line ends "complet", the next starts "ed"."""
    broken = set()
    for this, following in zip(lines, lines[1:]):
        end, start = re.search(r"[^\W\d_]+$", this), re.match(r"[^\W\d_]+", following)
        if end and start and end.group() + start.group() in words:
            broken.add(end.group() + start.group())
    return broken


def chart_operators(path: Path, index: int) -> list[bytes]:
    reader = pypdf.PdfReader(path)
    form = reader.pages[0]["/Resources"]["/XObject"][f"/FormXob.chart-{index}"].get_object()
    return [operator for _, operator in ContentStream(form, reader).operations]


def polyline_points(operators: list[bytes]) -> int:
    """Points of the longest polyline (a move, then one line-to per further point)."""
    longest = run = 0
    for operator in operators:
        run = run + 1 if operator == b"l" else 0
        longest = max(longest, run)
    return longest + 1


# --- the demo's monthly reports --------------------------------------------------------------


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> dict:
    """scan_results and audit_log_export over the month, for the demo's first organization."""
    root = tmp_path_factory.mktemp("month")
    db = SourceDatabase(f"sqlite:///{root / 'source.db'}")
    db.ensure_embedded(MONTH)
    org = db.scalar("SELECT id FROM organizations ORDER BY id")
    result = {
        "org": org,
        "name": db.scalar("SELECT name FROM organizations WHERE id = :id", {"id": org}),
    }
    for key in ("scan_results", "audit_log_export"):
        deliverable = Deliverable(
            CATALOG[key],
            org,
            FIRST,
            LAST,
            (ExportFormat.PDF, ExportFormat.CSV),
            purpose=Purpose.REPORT,
            reference="subscription-1",
        )
        folder = root / key
        folder.mkdir()
        rendered = render_deliverable(deliverable, db, WorkArea(root / "work"), folder)
        files = {f.format: f.path for f in rendered.files}
        result[key] = files[ExportFormat.PDF]
        with open(files[ExportFormat.CSV], newline="", encoding="utf-8-sig") as handle:
            result[f"{key}.rows"] = list(csv.DictReader(handle))
        again = root / f"{key}-again"
        again.mkdir()
        rerendered = render_deliverable(deliverable, db, WorkArea(root / "work"), again)
        result[f"{key}.again"] = next(
            f.path for f in rerendered.files if f.format is ExportFormat.PDF
        )
    return result


def test_the_month_is_the_size_the_issue_describes(month):
    assert len(month["scan_results.rows"]) == 1_200


@pytest.mark.parametrize("key", ["scan_results", "audit_log_export"])
def test_page_one_names_the_organization_and_shows_no_uuid(month, key):
    first = page_text(month[key], 0)
    assert month["name"] and f"Organization: {month['name']}" in first
    assert UUID.findall(first) == []
    document = " ".join(p.extract_text() for p in pypdf.PdfReader(month[key]).pages)
    assert month["org"] not in document  # never a repeated column, nor in the footer


def test_headers_are_labels_without_identifier_columns(month):
    first = page_text(month["scan_results"], 0)
    assert (
        "Project Project URL Audit type Status DCS score AI citation score Credits Scanned" in first
    )
    for name in ("scan_id", "project_id", "audit_id", "organization_id", "dcs_score", "Scan ID"):
        assert name not in first, name
    assert UUID.findall(page_text(month["scan_results"], 1)) == []


def test_charts_aggregate_per_day_and_per_category(month):
    path, rows = month["scan_results"], month["scan_results.rows"]
    first = page_text(path, 0)
    assert "Mean DCS score per day" in first and "Scans by audit type" in first
    days = {r["scanned_at"][:10] for r in rows if r["dcs_score"]}
    assert polyline_points(chart_operators(path, 0)) == len(days) <= 60
    types = collections.Counter(r["audit_type"] for r in rows)
    bars = chart_operators(path, 1).count(b"re")
    assert bars == len(types) <= 60
    for audit_type, count in types.items():  # each bar is labelled with its count
        assert f"{audit_type}" in first and f"{count:,}" in first


def test_bar_labels_are_whole_or_explained_by_a_legend(month):
    path, rows = month["audit_log_export"], month["audit_log_export.rows"]
    first = page_text(path, 0)
    assert "Entries by action" in first and "Entries per day" in first
    top = [action for action, _ in collections.Counter(r["action"] for r in rows).most_common(12)]
    assert any(len(action) > 16 for action in top)  # the labels that used to be cut
    for action in top:
        assert action in first, action
    assert polyline_points(chart_operators(path, 1)) == 30  # one point per day, zeros included


def test_no_table_cell_breaks_a_word(month):
    for key, columns in (
        ("scan_results", ("project_name", "audit_type", "status")),
        ("audit_log_export", ("action", "target_type")),
    ):
        cells = text_columns(month[key])
        words = {
            w for r in month[f"{key}.rows"] for c in columns for w in re.findall(r"[^\W\d_]+", r[c])
        }
        assert "completed" in words or key != "scan_results"
        assert (
            any("completed" in line for column in cells for line in column) or key != "scan_results"
        )
        assert set().union(*(broken_words(column, words) for column in cells)) == set(), key


def test_numbers_and_times_read_as_a_person_expects(month):
    lines = drawn_lines(month["scan_results"])
    row = month["scan_results.rows"][0]
    stamp = dt.datetime.fromisoformat(row["scanned_at"].replace("Z", "+00:00"))
    text = " ".join(lines)
    assert stamp.strftime("%Y-%m-%d %H:%M UTC") in text
    assert row["scanned_at"] not in text  # not the machine form
    if row["dcs_score"]:
        assert f" {float(row['dcs_score']):.1f} " in text


def test_the_same_month_renders_to_the_same_bytes(month):
    for key in ("scan_results", "audit_log_export"):
        assert month[key].read_bytes() == month[f"{key}.again"].read_bytes(), key


# --- crowded and awkward tables -------------------------------------------------------------


def test_words_that_fit_are_never_broken(tmp_path):
    """A crowded table: columns give way down to their longest word, never below."""
    statuses = ["completed", "running", "pending", "failed"]
    columns = {f"note_{i}": [f"some long note text number {i} " * 3] * 8 for i in range(14)}
    table = pa.table({"status": [statuses[i % 4] for i in range(8)], **columns})
    path, _ = render_file(ExportFormat.PDF, table, tmp_path / "o.pdf")
    cells = text_columns(path)
    assert ["completed"] in [column[1:2] for column in cells]  # under the header
    words = set(statuses) | {"some", "long", "note", "text", "number"}
    assert set().union(*(broken_words(column, words) for column in cells)) == set()


def test_over_long_words_break_after_a_separator(tmp_path):
    url = "https://example.com/" + "/".join(f"segment{i}" for i in range(25))
    path, _ = render_file(ExportFormat.PDF, pa.table({"u": [url], "n": [1]}), tmp_path / "o.pdf")
    lines = next(column for column in text_columns(path) if column[0] == "u")[1:]
    assert len(lines) > 1 and "".join(lines) == url
    assert all(line.endswith("/") for line in lines[:-1]), lines
