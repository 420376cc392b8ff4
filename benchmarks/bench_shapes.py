"""CSV / JSON / JSONL / Parquet renderers against the fastest library primitive, per table shape.

    python benchmarks/bench_shapes.py [--rows 1000000 100000] [--shapes demo wide numeric]
                                      [--formats CSV JSON JSONL PARQUET] [--modes file memory]
                                      [--repeat 3] [--out FILE]

Three shapes, each saved once as Parquet (zstd, 64k-row groups) by a helper process:

- ``demo``: the real 12-column ``scan_results`` export over demo data (`bench_data.py`);
- ``wide``: 13 text-heavy columns — a UUID-like text id, a short unicode name, a 5-value
  status, two int64 and two int32 counts, two float64 scores, two naive timestamps, a
  bool and a ~120-character description with commas, quotes, CR/LF, tabs, formula
  starters and non-ASCII text; ~3 % nulls in every column but the id (numpy, seeded);
- ``numeric``: an int64 and a UUID-like text id, then four int64, two int32 and six
  float64 columns (three of them with ~3 % nulls).

Every measurement runs in a process of its own (imports before the clock starts) that
prints its wall time and its peak RSS (``ru_maxrss``; the parent stays small, so the
fork's share of it is negligible). The variants of one (shape, rows) run interleaved —
round 1 of every variant, then round 2, ... — and the fastest of `--repeat` rounds is
kept, with the highest peak RSS of the rounds. Two modes:

- ``file``: from the Parquet file to the output file. Ours gets the stream of 64k-row
  batches the pipeline hands it (`pq.ParquetFile.iter_batches`); the primitives use
  their own (parallel) readers: `pl.scan_parquet(...).sink_*`, `pl.read_parquet` +
  `write_*`, `pq.read_table` + `pyarrow.csv.write_csv` / `pq.write_table(zstd)`;
- ``memory``: the table is in memory before the clock starts (ours: a reader over its
  64k-row batches; polars: a frame made with `pl.from_arrow`), so only rendering counts.

The ratio is ours over the fastest primitive of the same format and mode (JSON and JSONL
share the NDJSON primitives: polars has no streaming JSON-array writer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH_ROWS = 65_536
SHAPES = ["demo", "wide", "numeric"]
FORMATS = ["CSV", "JSON", "JSONL", "PARQUET"]
MODES = ["file", "memory"]
EXTENSIONS = {"CSV": "csv", "JSON": "json", "JSONL": "jsonl", "PARQUET": "parquet"}
# Primitives per format: (variant name, what it does).
PRIMITIVES = {
    "CSV": ["polars sink_csv", "polars write_csv", "pyarrow.csv"],
    "JSON": ["polars sink_ndjson", "polars write_ndjson"],
    "JSONL": ["polars sink_ndjson", "polars write_ndjson"],
    "PARQUET": ["pyarrow.parquet zstd"],
}
MEMORY_SKIPS = {"polars sink_csv", "polars sink_ndjson"}  # a sink needs a lazy source
NULL_SHARE = 0.03


# --- the tables ----------------------------------------------------------------------------


def _uuid_text(rng, n: int):
    import numpy as np
    import pyarrow as pa

    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    digits = hex_digits[rng.integers(0, 16, size=(n, 32), dtype=np.uint8)]
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src, width in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        chars[:, dst : dst + width] = digits[:, src : src + width]
    offsets = np.arange(0, 36 * n + 1, 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _with_nulls(rng, array):
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pa.array(rng.random(len(array)) < NULL_SHARE)
    return pc.if_else(mask, pa.nulls(len(array), array.type), array)


# Words of the descriptions: commas, quotes, CR/LF, a tab, formula starters, non-ASCII.
WORDS = (
    "scan finished with warnings, see report; retry scheduled "
    'the "primary" host answered slowly naïve café résumé Ωμέγα 東京 漢字 🚀 '
    "certificate expired, renewal pending. owner notified via e-mail "
    "=SUM(A1) -42 +1 @ops line\nbreak cr\r\nlf tab\there 100% done"
).split(" ")


def _descriptions(rng, n: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    words = pa.array(WORDS, pa.string())
    parts = [words.take(pa.array(rng.integers(0, len(WORDS), n))) for _ in range(18)]
    return pc.utf8_slice_codeunits(pc.binary_join_element_wise(*parts, " "), 0, 120)


def _stamps(rng, n: int):
    import numpy as np
    import pyarrow as pa

    start = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
    return pa.array(start + rng.integers(0, 365 * 86_400 * 10**6, n), pa.timestamp("us"))


def wide_table(rows: int, seed: int = 13):
    """The independent 13-column text-heavy table (see the module's docstring)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    names = pa.array(["Ωμέγα", "東京 project", "naïve café", "plain", "rocket 🚀"])
    statuses = pa.array(["open", "closed", "pending", "failed", "done"])
    columns = {
        "id": _uuid_text(rng, rows),
        "name": names.take(pa.array(rng.integers(0, 5, rows))),
        "status": statuses.take(pa.array(rng.integers(0, 5, rows))),
        "count_a": pa.array(rng.integers(0, 10**12, rows), pa.int64()),
        "count_b": pa.array(rng.integers(-(10**6), 10**6, rows), pa.int64()),
        "small_a": pa.array(rng.integers(0, 10_000, rows, dtype=np.int32)),
        "small_b": pa.array(rng.integers(-500, 500, rows, dtype=np.int32)),
        "score_a": pa.array(rng.random(rows) * 100),
        "score_b": pa.array(rng.normal(0, 1e3, rows)),
        "created_at": _stamps(rng, rows),
        "updated_at": _stamps(rng, rows),
        "flag": pa.array(rng.random(rows) < 0.5),
        "description": _descriptions(rng, rows),
    }
    return pa.table({k: v if k == "id" else _with_nulls(rng, v) for k, v in columns.items()})


def numeric_table(rows: int, seed: int = 7):
    """Two ids and twelve numeric columns (see the module's docstring)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns = {
        "row_id": pa.array(np.arange(rows, dtype=np.int64) + 10**9),
        "uid": _uuid_text(rng, rows),
    }
    for i in range(4):
        columns[f"i64_{i}"] = pa.array(rng.integers(-(10**9), 10**12, rows))
    for i in range(2):
        columns[f"i32_{i}"] = pa.array(rng.integers(0, 2**31 - 1, rows, dtype=np.int32))
    for i in range(6):
        values = pa.array(rng.normal(0, 10.0**i, rows))
        columns[f"f64_{i}"] = _with_nulls(rng, values) if i % 2 else values
    return pa.table(columns)


def build(shape: str, rows: int):
    if shape == "demo":
        sys.path.insert(0, str(HERE))
        from bench_data import build_table

        return build_table(rows)
    return {"wide": wide_table, "numeric": numeric_table}[shape](rows)


def prepare(shape: str, rows: int, path: Path) -> None:
    """(helper process) Save the shape's table as Parquet, so the parent stays small."""
    import pyarrow.parquet as pq

    pq.write_table(build(shape, rows), path, compression="zstd", row_group_size=BATCH_ROWS)


# --- child side: one measurement -----------------------------------------------------------


def _stream(source: Path, table=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table is not None:
        return pa.RecordBatchReader.from_batches(
            table.schema, table.to_batches(max_chunksize=BATCH_ROWS)
        )
    parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
    batches = parquet.iter_batches(batch_size=BATCH_ROWS)
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, batches)


def _run(variant: str, fmt: str, source: Path, out: Path, loaded) -> int:
    """Write `out`; `loaded` is the in-memory input (memory mode) or None (file mode)."""
    import polars as pl
    import pyarrow.parquet as pq

    if variant == "ours":
        from export_pipelines.render import ExportFormat, RenderOptions, render

        table = loaded
        return render(ExportFormat(fmt), _stream(source, table), out, RenderOptions()).rows
    if variant == "read":
        out.write_bytes(b"")
        return sum(batch.num_rows for batch in _stream(source, loaded))
    if variant.startswith("polars sink"):
        lazy = pl.scan_parquet(source)
        (lazy.sink_csv if fmt == "CSV" else lazy.sink_ndjson)(out)
        return 0  # not counted: that would read the file again
    if variant.startswith("polars write"):
        frame = loaded if loaded is not None else pl.read_parquet(source)
        (frame.write_csv if fmt == "CSV" else frame.write_ndjson)(out)
        return frame.height
    table = loaded if loaded is not None else pq.read_table(source)
    if variant == "pyarrow.csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    else:
        pq.write_table(table, out, compression="zstd")
    return table.num_rows


def child(variant: str, fmt: str, mode: str, source: Path, out: Path) -> None:
    """Run one measurement and print it as JSON (imports and memory-mode loading first)."""
    import polars as pl
    import pyarrow.csv  # noqa: F401
    import pyarrow.parquet as pq

    # `render` imports every renderer (reportlab, openpyxl...): a worker has them loaded.
    for module in ("compress", "csv", "json", "parquet", "pdf", "xlsx", "xml"):
        importlib.import_module(f"export_pipelines.render.{module}")
    loaded = None
    if mode == "memory":
        loaded = pq.read_table(source)
        if variant.startswith("polars"):
            loaded = pl.from_arrow(loaded)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    rows = _run(variant, fmt, source, out, loaded)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    size = out.stat().st_size if out.exists() else 0
    digest = ""
    if variant == "ours" and size:  # after the clock: ours and before must write the same
        hasher = hashlib.sha256()
        with open(out, "rb") as written:
            while block := written.read(1 << 20):
                hasher.update(block)
        digest = hasher.hexdigest()
    result = {"seconds": seconds, "cpu_seconds": cpu, "rss_mb": after.ru_maxrss / 1024}
    print(json.dumps({**result, "rows": rows, "bytes": size, "sha256": digest}))


# --- parent side ---------------------------------------------------------------------------


@dataclass
class Result:
    shape: str
    rows: int
    mode: str
    fmt: str
    variant: str
    seconds: float | None = None
    cpu_seconds: float | None = None
    rss_mb: float = 0.0
    out_bytes: int = 0
    note: str = ""
    digests: set[str] = field(default_factory=set)


def _python(*args: str, timeout: int, root: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def measure(result: Result, source: Path, work: Path, timeout: int, baseline: Path | None) -> None:
    """Run one round of `result`'s variant and fold it into `result` (min time, max RSS).

    ``before`` is ours with the package imported from `baseline` (another source tree).
    """
    out = work / f"out.{EXTENSIONS.get(result.fmt, 'none')}"
    before = result.variant == "before"
    variant = "ours" if before else result.variant
    try:
        args = ("--child", variant, result.fmt, result.mode, str(source), str(out))
        done = _python(*args, timeout=timeout, root=baseline if before and baseline else ROOT)
    except subprocess.TimeoutExpired:
        result.note = f"did not finish in {timeout} s"
        return
    finally:
        out.unlink(missing_ok=True)
    if done.returncode != 0:
        result.note = "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:120]
        return
    data = json.loads(done.stdout.strip().splitlines()[-1])
    if result.seconds is None or data["seconds"] < result.seconds:
        result.seconds = data["seconds"]
    if result.cpu_seconds is None or data["cpu_seconds"] < result.cpu_seconds:
        result.cpu_seconds = data["cpu_seconds"]
    result.rss_mb = max(result.rss_mb, data["rss_mb"])
    result.out_bytes = data["bytes"]
    result.digests.add(data.get("sha256") or "")


def plan(
    shape: str, rows: int, modes: list[str], formats: list[str], baseline: bool
) -> list[Result]:
    results = []
    for mode in modes:
        results.append(Result(shape, rows, mode, "READ", "read"))
        seen: set[tuple[str, str]] = set()
        for fmt in formats:
            if baseline:
                results.append(Result(shape, rows, mode, fmt, "before"))
            results.append(Result(shape, rows, mode, fmt, "ours"))
            for variant in PRIMITIVES[fmt]:
                if mode == "memory" and variant in MEMORY_SKIPS:
                    continue
                key = ("CSV" if fmt == "CSV" else fmt.replace("JSONL", "JSON"), variant)
                if key in seen:  # JSON and JSONL share the NDJSON primitives
                    continue
                seen.add(key)
                results.append(Result(shape, rows, mode, fmt, variant))
    return results


def _machine(load_before: tuple[float, ...]) -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    versions = []
    for name in ("pyarrow", "polars", "numpy"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load_after = os.getloadavg()
    return [
        f"- Date: {dt.date.today().isoformat()}",
        f"- CPU: {cpu}, {os.cpu_count()} cores (shared with other work)",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- Libraries: {', '.join(versions)}",
        f"- Load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f}",
    ]


def _primitive_for(fmt: str, index: dict, key: tuple) -> Result | None:
    candidates = []
    for variant in PRIMITIVES.get(fmt, []):
        for f in (fmt, "JSON", "JSONL") if fmt in ("JSON", "JSONL") else (fmt,):
            found = index.get((*key, f, variant))
            if found and found.seconds is not None:
                candidates.append(found)
                break
    return min(candidates, key=lambda r: r.seconds, default=None)


def report(
    results: list[Result], repeat: int, load_before: tuple[float, ...], baseline: str | None
) -> str:
    index = {(r.shape, r.rows, r.mode, r.fmt, r.variant): r for r in results}
    lines = [
        "## Renderers by table shape",
        "",
        (
            "Generated by `python benchmarks/bench_shapes.py`. Each measurement runs in its "
            f"own process; the variants of a table ran interleaved, {repeat} rounds, and the "
            "fastest round is shown (wall and CPU time each their own minimum) with the "
            "highest peak RSS (`ru_maxrss`, interpreter and imports included). `file`: from "
            "the Parquet file (ours reads the 64k-row batch stream the pipeline hands it; the "
            "primitives use their own parallel readers). `memory`: the input is in memory "
            "before the clock starts. `READ` is the floor of ours: reading the stream and "
            "writing nothing. Ratio: ours / the fastest primitive of the format in the same "
            "mode (≤ 1.5 is the target)."
            + (
                f" `Before`: the renderers of {baseline}, run interleaved with ours on the "
                "same input; `same bytes` compares the SHA-256 of their outputs."
                if baseline
                else ""
            )
        ),
        "",
        *_machine(load_before),
    ]
    groups = sorted({(r.shape, r.rows) for r in results}, key=lambda k: (SHAPES.index(k[0]), -k[1]))
    for shape, rows in groups:
        head = ["Mode", "Format"]
        if baseline:
            head += ["Before s", "Before CPU s", "Before ratio"]
        head += ["Ours s", "Ours CPU s", "Fastest primitive", "Primitive s", "Primitive CPU s"]
        head += ["Ratio", "Ours RSS MB", "Primitive RSS MB", "Output MB"]
        if baseline:
            head += ["Before RSS MB", "Same bytes"]
        lines += ["", f"### {shape}, {rows:,} rows", "", "| " + " | ".join(head) + " |"]
        lines.append(
            "|"
            + "|".join(
                "---" if h in ("Mode", "Format", "Fastest primitive", "Same bytes") else "---:"
                for h in head
            )
            + "|"
        )
        for r in results:
            if (r.shape, r.rows) != (shape, rows) or r.variant not in ("ours", "read"):
                continue
            if r.variant == "read":
                cells = [r.mode, "READ (floor)"] + ([""] * 3 if baseline else [])
                cells += [_secs(r), _cpu(r)] + [""] * 4 + [f"{r.rss_mb:.0f}", "", ""]
                cells += ["", ""] if baseline else []
                lines.append("| " + " | ".join(cells) + " |")
                continue
            prim = _primitive_for(r.fmt, index, (shape, rows, r.mode))
            cells = [r.mode, r.fmt]
            before = index.get((shape, rows, r.mode, r.fmt, "before"))
            if baseline:
                cells += [_secs(before), _cpu(before), _ratio(before, prim)]
            cells += [_secs(r), _cpu(r), prim.variant if prim else "n/a", _secs(prim), _cpu(prim)]
            cells += [_ratio(r, prim), f"{r.rss_mb:.0f}", f"{prim.rss_mb:.0f}" if prim else ""]
            cells.append(f"{r.out_bytes / 1e6:.1f}")
            if baseline:
                same = before is not None and before.digests == r.digests and len(r.digests) == 1
                cells += [f"{before.rss_mb:.0f}" if before else "", "yes" if same else "NO"]
            lines.append("| " + " | ".join(cells) + " |")
        others = [
            f"{r.variant} ({r.mode}, {r.fmt}) {_secs(r)} s"
            for r in results
            if (r.shape, r.rows) == (shape, rows) and r.variant not in ("ours", "read", "before")
        ]
        lines += ["", "All primitives: " + "; ".join(others) + "."]
    return "\n".join(lines) + "\n"


def _ratio(r: Result | None, prim: Result | None) -> str:
    if r is None or prim is None or r.seconds is None or prim.seconds is None:
        return ""
    return f"{r.seconds / prim.seconds:.2f}"


def _cpu(r: Result | None) -> str:
    return f"{r.cpu_seconds:.2f}" if r is not None and r.cpu_seconds is not None else ""


def _secs(r: Result | None) -> str:
    if r is None:
        return "n/a"
    return f"{r.seconds:.2f}" if r.seconds is not None else r.note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 100_000])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, choices=SHAPES)
    parser.add_argument("--formats", nargs="+", default=FORMATS, type=str.upper)
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; min is kept")
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: print)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another source tree (e.g. `git archive` of the last release): its renderers "
        "run interleaved with ours as `before`",
    )
    parser.add_argument("--child", nargs=5, metavar=("VARIANT", "FORMAT", "MODE", "SRC", "OUT"))
    parser.add_argument("--prepare", nargs=3, metavar=("SHAPE", "ROWS", "PATH"))
    args = parser.parse_args()
    if args.child:
        variant, fmt, mode, source, out = args.child
        child(variant, fmt, mode, Path(source), Path(out))
        return
    if args.prepare:
        shape, rows, path = args.prepare
        prepare(shape, int(rows), Path(path))
        return

    load_before = os.getloadavg()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as folder:
        work = Path(folder)
        for shape in args.shapes:
            for rows in args.rows:
                source = work / f"{shape}-{rows}.parquet"
                done = _python("--prepare", shape, str(rows), str(source), timeout=600)
                if done.returncode != 0:
                    sys.exit(f"could not build {shape} at {rows} rows: {done.stderr[-500:]}")
                group = plan(shape, rows, args.modes, args.formats, args.baseline is not None)
                for _ in range(args.repeat):  # interleaved: every variant once per round
                    for result in group:
                        measure(result, source, work, args.timeout, args.baseline)
                for r in group:
                    print(
                        f"{shape:8s} {rows:>9,} {r.mode:6s} {r.fmt:8s} {r.variant:22s} "
                        f"{_secs(r):>8s} s {r.rss_mb:6.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
                results += group
                source.unlink()
    label = str(args.baseline) if args.baseline else None
    text = report(results, args.repeat, load_before, label)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)


if __name__ == "__main__":
    main()
