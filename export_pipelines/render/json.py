"""JSON renderers: one array of row objects (`write_json`) or one object per line (`write_jsonl`).

Values keep their JSON types: int64 and float64 are numbers (floats in their shortest
round-trip form; NaN and infinities, which JSON cannot hold, become null), booleans are
true/false, null is null, text is UTF-8 with only what JSON requires escaped (quotes,
backslashes, control characters). Timestamps and dates are strings in the shared style
of `export_pipelines.render.csv` (``2026-03-01T10:00:00.000000Z``, ``2026-03-01``).
Duplicate column names get a ``_2``, ``_3`` … suffix, since JSON keys must be unique.

The array form is one row object per line between ``[`` and ``]``, so line tools still
work on it; empty input gives ``[]``.

Speed: the stream, re-cut to `JSON_CHUNK_ROWS`-row chunks (small batches are merged,
large ones sliced), goes to polars (Rust) with `pl.from_arrow` and is written by its
NDJSON writer, chunks in parallel in `csv.worker_count()` threads (polars releases the
GIL) and in order to the file. The array form turns the line breaks between objects
into ``,\\n`` in the same threads (a raw line break cannot occur inside a JSON value, so
this is exact). The writer's own cost (~1 s per million 13-column rows) is polars'; what
is ours is the chunking, the timestamp text and the array form's separators.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import chunks, in_order

if TYPE_CHECKING:
    import polars as pl

# The same text as `csv.iso_timestamps` (tested to be identical), done in polars because
# there it runs in parallel over the columns of the frame.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
# Rows per frame, and the input bytes above which a frame is halved: a frame's text is
# a few times its input, and `csv.IN_FLIGHT_PER_WORKER` per thread are held at a time.
# 16k rows: 32k and 64k were no faster (polars' writer dominates) and held more memory.
JSON_CHUNK_ROWS = 16_384
JSON_CHUNK_BYTES = 8 << 20


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


class _Kept:
    """A write-only file that keeps what it is given: polars hands over one bytes object
    per frame, which is kept as it is (a BytesIO would copy it, twice at worst)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))  # no copy for bytes, which is what polars passes
        return len(data)

    def flush(self) -> None:
        pass

    def value(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def _serialise(batch: pa.RecordBatch, names: list[str], array_form: bool) -> tuple[bytes, int]:
    """(the NDJSON text of `batch`, its rows); with `array_form`, every object ends ",\n"."""
    frame = _frame(batch, names)
    kept = _Kept()
    frame.write_ndjson(kept)  # type: ignore[arg-type]  # polars needs only write()
    text = kept.value()
    if array_form:
        # A raw line break cannot occur inside a JSON value: each one ends an object.
        text = text.replace(b"\n", b",\n")
    return text, frame.height


def ndjson_chunks(
    reader: pa.RecordBatchReader, array_form: bool = False
) -> Iterator[tuple[bytes, int]]:
    """(NDJSON text, rows) per chunk, in order, serialised in parallel (polars releases the
    GIL while it converts and writes), see `csv.in_order`."""
    names = unique_names(reader.schema.names)
    batches = chunks(reader, JSON_CHUNK_ROWS, JSON_CHUNK_BYTES)
    return in_order(lambda batch: _serialise(batch, names, array_form), batches)


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
        for text, count in ndjson_chunks(reader, array_form=True):
            # Every object ends ",\n"; the chunk's last one is cut back to the object, and
            # its ",\n" is written before the next chunk.
            out.write(b",\n" if rows else b"\n")
            out.write(memoryview(text)[:-2])
            rows += count
        out.write(b"\n]\n" if rows else b"]\n")
    return rows
