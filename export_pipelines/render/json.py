"""JSON renderers: one array of row objects (`write_json`) or one object per line (`write_jsonl`).

Values keep their JSON types: int64 and float64 are numbers (floats in their shortest
round-trip form; NaN and infinities, which JSON cannot hold, become null), booleans are
true/false, null is null, text is UTF-8 with only what JSON requires escaped (quotes,
backslashes, control characters). Timestamps and dates are strings in the shared style
of `export_pipelines.render.csv` (``2026-03-01T10:00:00.000000Z``, ``2026-03-01``).
Duplicate column names get a ``_2``, ``_3`` … suffix, since JSON keys must be unique.

The array form is one row object per line between ``[`` and ``]``, so line tools still
work on it; empty input gives ``[]``.

Speed: the stream, re-cut to `csv.CHUNK_ROWS`-row batches, goes to polars (Rust) with
`pl.from_arrow` (zero-copy) and is written by its NDJSON writer in a second thread; the array form replaces the line breaks between objects with
``,\\n`` (a raw line break cannot occur inside a JSON value, so this is exact).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import small_batches

if TYPE_CHECKING:
    import polars as pl

# The same text as `csv.iso_timestamps` (tested to be identical), done in polars because
# there it runs in parallel over the columns of the frame.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
_IN_FLIGHT = 2


def unique_names(names: Sequence[str]) -> list[str]:
    """Names with repeats suffixed ``_2``, ``_3`` … so that every name is distinct."""
    seen: set[str] = set()
    result = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        result.append(candidate)
    return result


def _frame(batch: pa.RecordBatch, names: list[str]) -> pl.DataFrame:
    import polars as pl  # imported here: it costs ~25 MB of memory, paid only for JSON

    batch = pa.RecordBatch.from_arrays(batch.columns, names=names)
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    stamps = [n for n, t in frame.schema.items() if isinstance(t, pl.Datetime)]
    if stamps:
        frame = frame.with_columns(
            pl.col(stamps)
            .dt.convert_time_zone("UTC")
            .dt.replace_time_zone(None)
            .dt.strftime(TIMESTAMP_FORMAT)
        )
    return frame


def frames(reader: pa.RecordBatchReader) -> Iterator[pl.DataFrame]:
    """The stream as polars frames of at most CHUNK_ROWS rows, values ready for JSON."""
    names = unique_names(reader.schema.names)
    for batch in small_batches(reader):
        yield _frame(batch, names)


def _ndjson(frame: pl.DataFrame) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    frame.write_ndjson(buffer)
    return buffer.getvalue(), frame.height


def ndjson_chunks(reader: pa.RecordBatchReader) -> Iterator[tuple[bytes, int]]:
    """(NDJSON text, rows) per frame, in order, serialised in a second thread.

    polars releases the GIL while it writes, so one frame is serialised while the next is
    converted. At most `_IN_FLIGHT` frames wait at once, which bounds memory.
    """
    with ThreadPoolExecutor(1) as pool:
        pending: deque[Future[tuple[bytes, int]]] = deque()
        for frame in frames(reader):
            pending.append(pool.submit(_ndjson, frame))
            if len(pending) > _IN_FLIGHT:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def write_jsonl(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write one JSON object per line; return the number of rows."""
    rows = 0
    with open(path, "wb") as out:
        for text, count in ndjson_chunks(reader):
            out.write(text)
            rows += count
    return rows


def write_json(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write one JSON array of row objects, streamed batch by batch; return the row count."""
    rows = 0
    with open(path, "wb") as out:
        out.write(b"[")
        for text, count in ndjson_chunks(reader):
            # Every line break ends an object: each becomes ",\n", and the chunk's last
            # one (also ",\n") is left off, to be written before the next chunk.
            joined = text.replace(b"\n", b",\n")
            out.write(b",\n" if rows else b"\n")
            out.write(memoryview(joined)[:-2])
            rows += count
        out.write(b"\n]\n" if rows else b"]\n")
    return rows
