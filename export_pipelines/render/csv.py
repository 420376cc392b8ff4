"""CSV renderer, and the text conventions every text format (CSV, JSON, XML, Excel) shares.

Text conventions (the one style used across CSV, JSON and XML):

- timestamps: ISO-8601 in UTC, ``T`` separator, always six fraction digits, ``Z`` suffix:
  ``2026-03-01T10:00:00.000000Z``. Fixed width, so text order is time order;
- dates: ``2026-03-01``;
- booleans: ``true`` / ``false``;
- floats: the shortest text that reads back as the same double (``0.1``, ``1e+20``);
  NaN and infinities are written ``nan``, ``inf``, ``-inf`` in CSV (JSON has no such
  values and writes ``null``).

CSV specifics: UTF-8 (optional BOM), a header row, ``\\r\\n`` line ends (RFC 4180), a
field is quoted only when it holds the delimiter, a quote, CR or LF (quotes doubled) or
is the empty string: ``""`` is an empty string, a bare empty field is null. The delimiter
may be any one character but ``"``, CR and LF (a letter, a digit, tab, space, ``€``...);
numbers, dates and timestamps are quoted too when they hold it. With
`formula_guard` on, string cells starting with ``= + - @``, tab or CR get a leading
``'`` so spreadsheets show them as text instead of running them.

Speed: each batch is formatted column by column with pyarrow.compute (two threads), the
row lines are joined by Arrow, and the joined buffer is written as is, so no Python code
runs per row. pyarrow's own CSV writer was rejected: it quotes every string (a bare
empty string and a null look alike only in its favour) and writes timestamps with a
space instead of ``T``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.render import RenderOptions, ReportContext

UTF8_BOM = b"\xef\xbb\xbf"
LINE_END = "\r\n"
# Rows formatted per step: large enough that Arrow's per-call cost vanishes, small enough
# that the text made from them (several times the batch's size) stays a few tens of MB.
CHUNK_ROWS = 16_384
# Cells a spreadsheet would treat as a formula (or a DDE payload) when they start so.
_FORMULA_START = r"^[=+\-@\t\r]"


def worker_count() -> int:
    """Threads for per-column work: Arrow kernels release the GIL, so columns run in parallel."""
    return max(1, min(4, os.cpu_count() or 1))


def small_batches(reader: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The stream re-cut to at most CHUNK_ROWS rows, bounding the text built per step."""
    for batch in reader:
        for start in range(0, batch.num_rows, CHUNK_ROWS):
            yield batch.slice(start, CHUNK_ROWS)


def is_text(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def iso_timestamps(array: pa.Array) -> pa.Array:
    """Timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` text in UTC (nulls stay null)."""
    # Arrow's cast of a zone-less microsecond timestamp is fast and always prints six
    # fraction digits; the zone-aware cast and strftime are ten times slower.
    naive = array.cast(pa.timestamp("us", tz=array.type.tz)).cast(pa.timestamp("us"))
    text = pc.replace_substring(naive.cast(pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


def guard_formulas(array: pa.Array) -> pa.Array:
    """Prefix ``'`` to strings a spreadsheet would evaluate (= + - @ tab CR at the start)."""
    risky = pc.match_substring_regex(array, _FORMULA_START)
    return pc.if_else(risky, pc.binary_join_element_wise("'", array, ""), array)


def to_text(array: pa.Array) -> pa.Array:
    """Any supported column as strings in the shared text conventions (nulls stay null)."""
    type_ = array.type
    if is_text(type_):
        return array.cast(pa.string())
    if pa.types.is_timestamp(type_):
        return iso_timestamps(array)
    # int64, float64 (shortest round-trip form), bool (true/false), date32 (YYYY-MM-DD).
    return array.cast(pa.string())


def _special_chars_regex(delimiter: str) -> str:
    """An RE2 class matching the delimiter, a quote, CR or LF.

    Every character is written as a ``\\x{hex}`` code point escape, so no delimiter can be
    read as regex syntax: a backslash before a letter or digit is an escape in RE2
    (``\\t`` tab, ``\\s`` any space, ``\\0`` NUL, ``\\b`` an error), and so is a backslash
    before a non-ASCII character.
    """
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in sorted({delimiter, '"', "\r", "\n"})) + "]"


def quote_csv(array: pa.Array, delimiter: str) -> pa.Array:
    """RFC 4180: quote fields holding the delimiter, a quote, CR or LF, and empty strings."""
    special = _special_chars_regex(delimiter)
    needs = pc.or_(pc.match_substring_regex(array, special), pc.equal(pc.binary_length(array), 0))
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(array, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, array)


def joined_bytes(lines: pa.Array) -> memoryview:
    """The concatenated values of a null-free string array, without copying them."""
    lines = lines.cast(pa.large_string())
    _, offsets, data = lines.buffers()[:3]
    offs = memoryview(offsets).cast("q")
    if data is None:
        return memoryview(b"")
    return memoryview(data)[offs[lines.offset] : offs[lines.offset + len(lines)]]


def may_occur_in_non_text(delimiter: str) -> bool:
    """Whether `delimiter` can occur in a number, boolean, date or timestamp as text.

    Those are written with ASCII letters and digits and ``+ - . :`` only (``-1.5e+20``,
    ``nan``, ``true``, ``2026-03-01T10:00:00.000000Z``); with any other delimiter they never
    need quotes, and the quoting pass is skipped for them.
    """
    return (delimiter.isascii() and delimiter.isalnum()) or delimiter in "+-.: "


def _format_column(array: pa.Array, options: RenderOptions) -> pa.Array:
    text = to_text(array)
    if is_text(array.type):
        if options.formula_guard:
            text = guard_formulas(text)
        return quote_csv(text, options.csv_delimiter)
    if may_occur_in_non_text(options.csv_delimiter):
        return quote_csv(text, options.csv_delimiter)  # e.g. "1" in 10, "e" in true
    return text


def _check_delimiter(delimiter: object) -> None:
    """Refuse delimiters no CSV reader could tell apart from the data."""
    if (
        not isinstance(delimiter, str)
        or len(delimiter) != 1
        or delimiter in '"\r\n'
        or "\ud800" <= delimiter <= "\udfff"  # a lone surrogate has no UTF-8 form
    ):
        raise ValueError(
            "The CSV delimiter must be a single character other than a double quote,"
            f" a carriage return or a line feed, but it was {delimiter!r}."
        )


def header_line(names: list[str], delimiter: str) -> bytes:
    quoted = quote_csv(pa.array(names, pa.string()), delimiter).to_pylist()
    return (delimiter.join(quoted) + LINE_END).encode("utf-8")


def write_csv(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write `reader` to `path` as CSV; return the number of data rows."""
    _check_delimiter(options.csv_delimiter)
    rows = 0
    with open(path, "wb") as out, ThreadPoolExecutor(worker_count()) as pool:
        if options.csv_bom:
            out.write(UTF8_BOM)
        out.write(header_line(reader.schema.names, options.csv_delimiter))
        for batch in small_batches(reader):
            columns = list(pool.map(lambda a: _format_column(a, options), batch.columns))
            if columns:
                lines = pc.binary_join_element_wise(
                    *columns, options.csv_delimiter, null_handling="replace", null_replacement=""
                )
            else:
                lines = pa.array([""] * batch.num_rows, pa.string())
            out.write(joined_bytes(pc.binary_join_element_wise(lines, LINE_END, "")))
            rows += batch.num_rows
    return rows
