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

Speed: the stream is re-cut to chunks of `CSV_CHUNK_ROWS` rows (small batches merged,
large ones sliced); chunks are formatted in `worker_count()` threads and written in
order. Within a chunk every column is turned into text by pyarrow.compute (timestamps
finished by one numpy copy, see `_fixed_width_iso`), and the lines are made by one
`binary_join_element_wise` over the cells, whose buffer is written as is, so no Python
code runs per row. Quoting and the formula guard are per-row arrays of ``"`` / ``'``
joined around the text, built only for columns whose bytes in the chunk hold a
character that needs them (ids, names and statuses usually don't). pyarrow's own CSV
writer was rejected: it quotes every string (a bare empty string and a null look alike
only in its favour) and writes timestamps with a space instead of ``T``. polars' writer
formats floats differently (``2.0``, ``-0.0``, ``NaN``), takes one-byte delimiters only,
and with floats and timestamps turned into text first it was slower than this path
(measured on the 13-column table of `benchmarks/bench_shapes.py`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
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
    text = naive.cast(pa.string())
    fixed = _fixed_width_iso(text)
    if fixed is not None:
        return fixed
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


def _fixed_width_iso(text: pa.Array) -> pa.Array | None:
    """`text` (Arrow's ``YYYY-MM-DD HH:MM:SS.ffffff``) with ``T`` and ``Z``, by numpy.

    Years 0-9999 print as 26 bytes with the first space at byte 10, so the text is a
    matrix of 26-byte rows: one vectorised copy into 27-byte rows replaces a replace and
    a join (two Arrow passes, half of the cost of a timestamp column). Anything else
    (other years, an offset) returns None and takes the general path.
    """
    _, offsets, data = text.buffers()[:3]
    count = len(text) - text.null_count
    if text.offset or data is None or not count or count * 27 >= 2**31:
        return None
    starts = np.frombuffer(offsets, np.int32, len(text) + 1)
    if starts[0] or not (np.diff(starts) == np.where(_valid(text), 26, 0)).all():
        return None
    rows = np.frombuffer(data, np.uint8, count * 26).reshape(count, 26)
    if not (rows[:, 10] == ord(" ")).all():
        return None
    out = np.empty((count, 27), np.uint8)
    out[:, :26] = rows
    out[:, 10] = ord("T")
    out[:, 26] = ord("Z")
    new_offsets = (starts // 26 * 27).astype(np.int32)
    return pa.StringArray.from_buffers(
        len(text), pa.py_buffer(new_offsets), pa.py_buffer(out), text.buffers()[0], text.null_count
    )


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
    if type_ == pa.float64():
        return float_text(array)
    # int64, bool (true/false), date32 (YYYY-MM-DD).
    return array.cast(pa.string())


def float_text(array: pa.Array) -> pa.Array:
    """float64 values as Arrow prints them (the shortest round-trip digits; decimal notation
    for 1e-6 <= |x| < 1e10, else `1.5e+10` / `1e-07` style), ~2.5x faster.

    polars (ryu) prints the same shortest digits, in decimal notation for 1e-5 <= |x| < 1e16,
    adding ".0" to an integral value. In the overlap and off integers the two texts are
    therefore the same (`test_render_csv.py` compares them on millions of values);
    every other value (integral, tiny, huge, NaN, inf) keeps Arrow's own text.
    """
    if not len(array):
        return array.cast(pa.string())
    values = array.to_numpy(zero_copy_only=False)  # nulls read as NaN: Arrow's branch
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(values)
        same = (magnitude >= 1e-5) & (magnitude < 1e10) & (values != np.trunc(values))
    if not same.any():
        return array.cast(pa.string())
    import polars as pl  # loaded by the JSON renderer too; not at definitions' load

    text = pl.from_arrow(array).cast(pl.String).to_arrow().cast(pa.string())
    other = ~same
    if array.null_count:
        other &= array.is_valid().to_numpy(zero_copy_only=False)
    if other.any():
        mask = pa.array(other, pa.bool_())
        text = pc.replace_with_mask(text, mask, array.filter(mask).cast(pa.string()))
    return text


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


# --- the writer ----------------------------------------------------------------------------
#
# Each chunk of rows becomes one string array of CSV lines. A cell is made of "parts":
# the opening quote (a per-row array, `"` or null), the formula guard's `'` (likewise),
# the text and the closing quote; nulls join as nothing, so quotes and guards exist only
# where a row needs them, and no if_else copies the text. Checks are skipped where the
# chunk's bytes show that no row can match (most columns: ids, names, statuses).

_NULL_TEXT = pa.scalar(None, pa.string())
_RISKY_FIRST_BYTES = np.zeros(256, dtype=bool)
_RISKY_FIRST_BYTES[[ord(c) for c in "=+-@\t\r"]] = True  # the class of _FORMULA_START
# Rows per formatted chunk, and the input bytes above which a chunk is halved, so the
# text built per step (several times the chunk's size) stays a few tens of MB; 32k-row
# chunks were no faster.
CSV_CHUNK_ROWS = 16_384
CSV_CHUNK_BYTES = 8 << 20
# Chunks per thread in flight (being formatted or waiting to be written).
IN_FLIGHT_PER_WORKER = 2
T = TypeVar("T")
R = TypeVar("R")
Part = pa.Array | str


def _values_bytes(text: pa.Array) -> tuple[np.ndarray, bytes]:
    """(offsets, the bytes of the values) of a string array (int32 offsets, slice-aware)."""
    _, offsets, data = text.buffers()[:3]
    starts = np.frombuffer(offsets, np.int32, len(text) + 1, text.offset * 4)
    if data is None:
        return starts, b""
    return starts, memoryview(data)[starts[0] : starts[-1]].tobytes()


def _valid(array: pa.Array) -> np.ndarray | bool:
    return array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else True


def _per_row(mask: np.ndarray, text: str) -> pa.Array:
    return pc.if_else(pa.array(mask, pa.bool_()), text, _NULL_TEXT)


def _text_parts(array: pa.Array, delimiter: str, guard: bool) -> list[Part]:
    """A string column as [opening quote], [guard], text, [closing quote]: RFC 4180 quoting
    (delimiter, quote, CR, LF, or empty) and the formula guard, like `quote_csv` and
    `guard_formulas` would, but only where the chunk holds a row that needs them."""
    text = array.cast(pa.string())
    starts, data = _values_bytes(text)
    valid = _valid(text)
    lengths = np.diff(starts)
    parts: list[Part] = []
    needs = (lengths == 0) & valid
    if guard and data:
        first = np.frombuffer(data, np.uint8)[np.minimum(starts[:-1] - starts[0], len(data) - 1)]
        risky = _RISKY_FIRST_BYTES[first] & (lengths > 0) & valid
        if risky.any():
            parts.append(_per_row(risky, "'"))
            if delimiter == "'":  # the guard itself brings the delimiter
                needs |= risky
    if any(c.encode("utf-8") in data for c in {delimiter, '"', "\r", "\n"}):
        special = pc.match_substring_regex(text, _special_chars_regex(delimiter))
        needs |= special.fill_null(False).to_numpy(zero_copy_only=False)
    if b'"' in data:
        text = pc.replace_substring(text, '"', '""')
    if needs.any():
        quote = _per_row(needs, '"')
        return [quote, *parts, text, quote]
    return [*parts, text]


def _other_parts(array: pa.Array, delimiter: str) -> list[Part]:
    """A number, boolean, date or timestamp column as text parts (see `to_text`)."""
    text = to_text(array)
    if may_occur_in_non_text(delimiter):
        # e.g. "1" in 10, "e" in true, "Z" in a timestamp: quote those. The text never
        # holds a quote, CR or LF and is never empty, so the delimiter alone decides.
        needs = pc.match_substring(text, delimiter).fill_null(False)
        if pc.any(needs).as_py():
            quote = _per_row(needs.to_numpy(zero_copy_only=False), '"')
            return [quote, text, quote]
    return [text]


def _join(parts: list[Part]) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def format_lines(batch: pa.RecordBatch, delimiter: str, guard: bool) -> pa.Array:
    """The CSV lines (CRLF included) of `batch`, as one string array."""
    if not batch.num_columns:
        return pa.array([LINE_END] * batch.num_rows, pa.string())
    # The join's cost grows with its argument count, so the parts of a cell are joined
    # first (where there are several) and the cells then with the delimiter; the last
    # cell carries the line end (also when it is null).
    cells: list[pa.Array] = []
    last = batch.num_columns - 1
    for i, array in enumerate(batch.columns):
        if is_text(array.type):
            parts = _text_parts(array, delimiter, guard)
        else:
            parts = _other_parts(array, delimiter)
        if i == last:
            parts.append(LINE_END)
        cells.append(_join(parts) if len(parts) > 1 else parts[0])
    if len(cells) == 1:
        return cells[0]
    return pc.binary_join_element_wise(
        *cells, delimiter, null_handling="replace", null_replacement=""
    )


def chunks(
    reader: Iterable[pa.RecordBatch], rows: int = CSV_CHUNK_ROWS, max_bytes: int = CSV_CHUNK_BYTES
) -> Iterator[pa.RecordBatch]:
    """The stream re-cut to chunks of at most `rows` rows and about `max_bytes` at most.

    Large batches are sliced (no copy); runs of small ones are concatenated until they
    reach half of either bound, so that the per-chunk cost (a few dozen Arrow calls) is
    paid per tens of thousands of rows however finely the stream is cut.
    """
    pending: list[pa.RecordBatch] = []
    count = size = 0
    for batch in reader:
        if not batch.num_rows:
            continue
        if not batch.num_columns:  # nothing to concatenate: pass rows through
            yield batch
            continue
        for piece in _pieces(batch, rows, max_bytes):
            piece_size = piece.nbytes
            if pending and (count + piece.num_rows > rows or size + piece_size > max_bytes):
                yield _concat(pending)
                pending, count, size = [], 0, 0
            pending.append(piece)
            count += piece.num_rows
            size += piece_size
            if count * 2 >= rows or size * 2 >= max_bytes:
                yield _concat(pending)
                pending, count, size = [], 0, 0
    if pending:
        yield _concat(pending)


def _pieces(batch: pa.RecordBatch, rows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
    start = 0
    while start < batch.num_rows:
        piece = batch.slice(start, rows)
        while piece.num_rows > 1 and piece.nbytes > max_bytes:
            piece = piece.slice(0, piece.num_rows // 2)
        start += piece.num_rows
        yield piece


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def in_order(function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """`function` of each item, computed in `worker_count()` threads, yielded in order.

    At most `IN_FLIGHT_PER_WORKER` items per thread are being computed or waiting to be
    taken, which bounds memory; the consumer writes one while the others are computed.
    """
    workers = worker_count()
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def csv_chunks(
    reader: Iterable[pa.RecordBatch], delimiter: str, guard: bool
) -> Iterator[tuple[memoryview, int]]:
    """(CSV text, rows) of the rows of `reader`, chunk by chunk, in order (no header),
    formatted in parallel (Arrow releases the GIL), see `in_order`."""

    def format_chunk(chunk: pa.RecordBatch) -> tuple[memoryview, int]:
        return joined_bytes(format_lines(chunk, delimiter, guard)), chunk.num_rows

    return in_order(format_chunk, chunks(reader, CSV_CHUNK_ROWS, CSV_CHUNK_BYTES))


def write_csv(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write `reader` to `path` as CSV; return the number of data rows."""
    delimiter = options.csv_delimiter
    _check_delimiter(delimiter)
    rows = 0
    with open(path, "wb") as out:
        if options.csv_bom:
            out.write(UTF8_BOM)
        out.write(header_line(reader.schema.names, delimiter))
        for text, count in csv_chunks(reader, delimiter, options.formula_guard):
            out.write(text)
            rows += count
    return rows
