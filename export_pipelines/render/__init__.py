"""Renderers: plain functions from a stream of Arrow record batches to one file.

Nothing here knows about Dagster. Every renderer streams: it holds at most one record
batch (plus a bounded buffer) in memory, whatever the row count, and writes the same
bytes for the same input (no wall-clock time, random ids or host names in the output),
so that re-publishing unchanged data yields byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from export_pipelines.columns import Column, ColumnType


class ExportFormat(str, enum.Enum):
    CSV = "CSV"
    JSON = "JSON"
    JSONL = "JSONL"
    EXCEL = "EXCEL"
    PDF = "PDF"
    PARQUET = "PARQUET"
    XML = "XML"

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self]

    @classmethod
    def parse(cls, value: str) -> ExportFormat:
        """Accept the contract's names and a few spellings people type (xlsx, ndjson)."""
        normalized = value.strip().upper()
        normalized = _ALIASES.get(normalized, normalized)
        try:
            return cls(normalized)
        except ValueError:
            known = ", ".join(f.value for f in cls)
            raise ValueError(f"unknown export format {value!r}; known formats: {known}") from None


_EXTENSIONS = {
    ExportFormat.CSV: "csv",
    ExportFormat.JSON: "json",
    ExportFormat.JSONL: "jsonl",
    ExportFormat.EXCEL: "xlsx",
    ExportFormat.PDF: "pdf",
    ExportFormat.PARQUET: "parquet",
    ExportFormat.XML: "xml",
}
_ALIASES = {"XLSX": "EXCEL", "NDJSON": "JSONL", "JSON_LINES": "JSONL", "JSONLINES": "JSONL"}


class Compression(str, enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZIP = "zip"

    @classmethod
    def parse(cls, value: str | None) -> Compression:
        if value is None or value == "":
            return cls.NONE
        try:
            return cls(value.strip().lower())
        except ValueError:
            known = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown compression {value!r}; known: {known}") from None


@dataclass(frozen=True)
class RenderOptions:
    """Format options a request or a run may set; defaults suit a person opening the file."""

    csv_delimiter: str = ","
    csv_bom: bool = False
    # Prefix cells starting with = + - @ tab CR with a quote so spreadsheets show them as
    # text instead of evaluating them. Machine consumers may switch it off.
    formula_guard: bool = True
    excel_rows_per_sheet: int = 1_048_575  # + the header row = Excel's 1,048,576 limit
    pdf_row_limit: int = 100_000
    compression: Compression = Compression.NONE


@dataclass(frozen=True)
class Chart:
    """An aggregate a report for people draws: one series with a readable number of points.

    `by` is a time column (bucketed per hour, day, week or month so that a line keeps at most
    about 60 points, whatever the row count) or a dimension (the `limit` largest categories as
    bars, the rest folded into "Other"). `value` is the column aggregated with `function`
    (count | sum | mean); None counts rows. `title` names the measure ("Mean DCS score"); the
    renderer adds the grouping ("per day", "by audit type").
    """

    title: str
    kind: str  # "line" (over a time column) | "bar" (per category)
    by: str
    value: str | None = None
    function: str = "count"
    limit: int = 12

    def __post_init__(self) -> None:
        if self.kind not in ("line", "bar"):
            raise ValueError(f"chart kind must be line or bar, got {self.kind!r}")
        if self.function not in ("count", "sum", "mean"):
            raise ValueError(f"chart function must be count, sum or mean, got {self.function!r}")
        if self.function != "count" and self.value is None:
            raise ValueError(f"a {self.function} chart needs a value column")


@dataclass(frozen=True)
class ReportContext:
    """What a human-facing format (PDF, Excel) says about the data it holds."""

    export_type: str
    title: str
    organization_id: str
    period: str
    # The moment the data describes (end of the window); used instead of the wall clock so
    # that the same data renders to the same bytes.
    as_of: str
    summary: Sequence[tuple[str, str]] = field(default_factory=tuple)
    # Name of the complete machine-readable file the PDF points to when it truncates.
    full_file_name: str | None = None
    # What a person reads: the organization's name (never its id), the columns' labels,
    # roles and units (the spec's `Column`s, by name), the charts, and the window
    # [start, end) in UTC, from which a chart picks its time buckets.
    organization_name: str = ""
    columns: Sequence[Column] = field(default_factory=tuple)
    charts: Sequence[Chart] = field(default_factory=tuple)
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None

    def column(self, name: str) -> Column:
        """The spec's column of that name, or a derived one (labels from the name)."""
        for column in self.columns:
            if column.name == name:
                return column
        return Column(name, ColumnType.STRING)


@dataclass(frozen=True)
class RenderedFile:
    path: Path
    format: ExportFormat | str  # a str for archives of several exports ("ZIP")
    rows: int

    @property
    def format_name(self) -> str:
        return self.format.value if isinstance(self.format, ExportFormat) else self.format


def render(
    fmt: ExportFormat,
    reader: pa.RecordBatchReader,
    path: Path,
    options: RenderOptions = RenderOptions(),
    context: ReportContext | None = None,
) -> RenderedFile:
    """Write `reader` as `fmt` to `path` (plus `.gz`/`.zip` when compressed); return the file.

    `path` carries the format's extension; the written file may gain a compression suffix.
    The caller owns atomicity (it passes a path in a staging folder and moves it later).
    """
    from export_pipelines.render import compress, csv, json, parquet, pdf, xlsx, xml

    writers = {
        ExportFormat.CSV: csv.write_csv,
        ExportFormat.JSON: json.write_json,
        ExportFormat.JSONL: json.write_jsonl,
        ExportFormat.EXCEL: xlsx.write_xlsx,
        ExportFormat.PDF: pdf.write_pdf,
        ExportFormat.PARQUET: parquet.write_parquet,
        ExportFormat.XML: xml.write_xml,
    }
    context = context or ReportContext(
        export_type="export", title="Export", organization_id="", period="", as_of=""
    )
    rows = writers[fmt](reader, path, options, context)
    final = compress.compress(path, options.compression)
    return RenderedFile(path=final, format=fmt, rows=rows)
