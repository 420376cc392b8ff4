"""Benchmark the renderers against the seed-style code and the fastest library primitive.

    python benchmarks/bench_render.py [--rows 100000 1000000] [--formats CSV EXCEL ...]
                                      [--out BENCHMARKS-render.md] [--timeout 300]

For each row count the 12-column table of `bench_data.build_table` is saved once as
Parquet (64k-row groups); every measurement then runs in its own process, which reads
that file, writes one output file and prints its wall time and its own peak RSS:

(a) seed: the whole table as a Python list of dicts, then csv.DictWriter / json.dumps /
    pandas.to_excel / one reportlab Table of every row / an ElementTree of every row;
(b) ours: `export_pipelines.render.render` over a stream of 64k-row batches;
(c) primitive: pyarrow.csv.write_csv, pyarrow.parquet.write_table (zstd), polars
    write_ndjson, rustpy-xlsxwriter (Excel) — nothing for PDF and XML.

Every variant's time includes reading the Parquet file (the same input for all).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH_ROWS = 65_536
FORMATS = ["CSV", "JSON", "JSONL", "PARQUET", "XML", "EXCEL", "PDF"]
EXTENSIONS = {
    "READ": "none",
    "CSV": "csv",
    "JSON": "json",
    "JSONL": "jsonl",
    "PARQUET": "parquet",
    "XML": "xml",
    "EXCEL": "xlsx",
    "PDF": "pdf",
}
# Row counts for PDF (a person's report; capped at pdf_row_limit=100,000 rows drawn).
PDF_ROWS = [10_000, 100_000]
# Seed paths known to run for many minutes are measured at smaller sizes only:
# pandas.to_excel takes ~25 s per 100k rows; one reportlab Table of all rows is quadratic.
SEED_MAX_ROWS = {"EXCEL": 100_000, "PDF": 100_000}
SEED_PDF_TIMEOUT = 120


# --- child side: one measurement -----------------------------------------------------------


def _rss_mb() -> float:
    """This process's peak RSS since exec.

    VmHWM belongs to the process's own address space; ru_maxrss on Linux also carries the
    peak of the forked parent from before exec, which here would be the benchmark's.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seed(fmt: str, source: Path, out: Path) -> int:
    import pyarrow.parquet as pq

    rows = pq.read_table(source).to_pylist()
    if fmt == "CSV":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        out.write_text(buffer.getvalue(), encoding="utf-8")
    elif fmt == "JSON":
        out.write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")
    elif fmt == "JSONL":
        out.write_text("\n".join(json.dumps(r, default=str) for r in rows), encoding="utf-8")
    elif fmt == "EXCEL":
        import pandas as pd

        frame = pd.DataFrame(rows)
        for column in frame.columns:  # Excel writers refuse zone-aware datetimes
            if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
                frame[column] = frame[column].dt.tz_localize(None)
        frame.to_excel(out, index=False)
    elif fmt == "XML":
        import xml.etree.ElementTree as ET

        root = ET.Element("export")
        for row in rows:
            element = ET.SubElement(root, "row")
            for key, value in row.items():
                ET.SubElement(element, key).text = "" if value is None else str(value)
        ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    elif fmt == "PDF":
        from reportlab.lib import colors
        from reportlab.lib.pagesizes import A4, landscape
        from reportlab.platypus import SimpleDocTemplate, Table, TableStyle

        data = [list(rows[0])] + [["" if v is None else str(v) for v in r.values()] for r in rows]
        table = Table(data, repeatRows=1)
        table.setStyle(
            TableStyle(
                [("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("FONTSIZE", (0, 0), (-1, -1), 6)]
            )
        )
        SimpleDocTemplate(str(out), pagesize=landscape(A4)).build([table])
    else:
        raise ValueError(f"no seed implementation for {fmt}")
    return len(rows)


def _stream(source: Path):
    """The input as a stream of batches (no pre-buffering: ~60 MB less, no slower)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
    batches = parquet.iter_batches(batch_size=BATCH_ROWS)
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, batches)


def _floor(fmt: str, source: Path, out: Path) -> int:
    """Read the stream and drop it: the time and memory every streaming variant starts from."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pc.binary_join_element_wise(pa.array(["a"]), pa.array(["b"]), ",")  # loads Arrow compute
    out.write_bytes(b"")
    return sum(batch.num_rows for batch in _stream(source))


def _xlsxwriter(fmt: str, source: Path, out: Path) -> int:
    """The runner-up Excel candidate: xlsxwriter in constant_memory mode, row by row."""
    import pyarrow as pa
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(out), {"constant_memory": True, "strings_to_urls": False})
    sheet = workbook.add_worksheet("Data")
    stream = _stream(source)
    sheet.write_row(0, 0, stream.schema.names)
    row = 1
    for batch in stream:
        for column, field in enumerate(batch.schema):
            if pa.types.is_timestamp(field.type):
                batch = batch.set_column(
                    column, field.name, batch.column(column).cast(pa.timestamp("us"))
                )
        for values in zip(*(c.to_pylist() for c in batch.columns)):
            sheet.write_row(row, 0, values)
            row += 1
    workbook.close()
    return row - 1


def _ours(fmt: str, source: Path, out: Path) -> int:

    import datetime as dt

    import pyarrow.parquet as pq

    from export_pipelines.catalog import CATALOG
    from export_pipelines.render import ExportFormat, RenderOptions, ReportContext, render

    spec = CATALOG["scan_results"]
    reader = _stream(source)
    # What a real deliverable passes: the data's own organization, the spec's columns and
    # charts, a month's window.
    organization = pq.ParquetFile(source).read_row_group(0, columns=["organization_id"])
    context = ReportContext(
        export_type=spec.key,
        title=spec.title,
        organization_id=organization.column(0)[0].as_py(),
        period="2026-01",
        as_of="2026-02-01 00:00 UTC",
        summary=(("Source", "benchmarks/bench_data.py"),),
        full_file_name="scan_results.csv.gz",
        organization_name="Bench organization",
        columns=spec.columns,
        charts=spec.charts,
        window_start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        window_end=dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc),
    )
    rendered = render(ExportFormat(fmt), reader, out, RenderOptions(), context)
    return rendered.rows


def _primitive(fmt: str, source: Path, out: Path) -> int:
    import pyarrow.parquet as pq

    if fmt == "CSV":
        import pyarrow.csv as pacsv

        table = pq.read_table(source)
        pacsv.write_csv(table, out)
    elif fmt == "PARQUET":
        table = pq.read_table(source)
        pq.write_table(table, out, compression="zstd")
    elif fmt in ("JSON", "JSONL"):
        import polars as pl

        frame = pl.read_parquet(source)  # polars' own (parallel) reader: the fastest path
        frame.write_ndjson(out)
        return frame.height
    elif fmt == "EXCEL":
        import polars as pl
        import rustpy_xlsxwriter

        frame = pl.read_parquet(source)
        frame = frame.with_columns(pl.col(pl.Datetime).dt.replace_time_zone(None))
        rustpy_xlsxwriter.write_worksheet(frame, str(out), sheet_name="Data")
        return frame.height
    else:
        raise ValueError(f"no primitive for {fmt}")
    return table.num_rows


_RENDERERS = [
    f"export_pipelines.render.{m}"
    for m in ("compress", "csv", "json", "parquet", "pdf", "xlsx", "xml")
]


def _imports(kind: str, fmt: str) -> list[str]:
    """Modules a variant needs, loaded before its clock starts (as in a long-lived worker)."""
    if kind in ("ours", "floor"):
        return _RENDERERS + (["polars"] if fmt in ("JSON", "JSONL") else [])
    if kind == "seed":
        return {"EXCEL": ["pandas", "openpyxl"], "PDF": ["reportlab.platypus"]}.get(fmt, [])
    if kind == "primitive":
        return {
            "CSV": ["pyarrow.csv"],
            "JSON": ["polars"],
            "JSONL": ["polars"],
            "EXCEL": ["polars", "rustpy_xlsxwriter"],
        }.get(fmt, [])
    return ["xlsxwriter"] if kind == "xlsxwriter" else []


def child(kind: str, fmt: str, source: Path, out: Path) -> None:
    """Run one measurement and print it as JSON (imports happen before the clock starts)."""
    import importlib

    for module in ["pyarrow.parquet", "export_pipelines.render", *_imports(kind, fmt)]:
        importlib.import_module(module)
    run = {
        "seed": _seed,
        "ours": _ours,
        "primitive": _primitive,
        "floor": _floor,
        "xlsxwriter": _xlsxwriter,
    }[kind]
    start = time.perf_counter()
    rows = run(fmt, source, out)
    seconds = time.perf_counter() - start
    size = out.stat().st_size if out.exists() else 0
    print(json.dumps({"seconds": seconds, "rss_mb": _rss_mb(), "rows": rows, "bytes": size}))


# --- parent side ---------------------------------------------------------------------------


@dataclass
class Result:
    fmt: str
    rows: int
    kind: str
    seconds: float | None = None
    rss_mb: float | None = None
    out_bytes: int = 0
    note: str = ""


def measure(kind: str, fmt: str, rows: int, source: Path, work: Path, timeout: int) -> Result:
    out = work / f"{kind}-{rows}.{EXTENSIONS[fmt]}"
    command = [sys.executable, __file__, "--child", kind, fmt, str(source), str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return Result(fmt, rows, kind, note=f"did not finish in {timeout} s")
    finally:
        for leftover in work.glob(f"{kind}-{rows}.*"):
            leftover.unlink()
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return Result(fmt, rows, kind, note=f"failed: {tail[:120]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(fmt, rows, kind, data["seconds"], data["rss_mb"], data["bytes"])


def _machine() -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    packages = [
        "pyarrow",
        "polars",
        "pandas",
        "reportlab",
        "rl-accel",
        "openpyxl",
        "xlsxwriter",
        "rustpy-xlsxwriter",
        "pypdf",
    ]
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"- Date: {dt.date.today().isoformat()}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {mem_kb / 1024 / 1024:.1f} GiB",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- Libraries: {', '.join(versions)}",
    ]


def _fmt_seconds(r: Result | None) -> str:
    if r is None:
        return "n/a"
    return f"{r.seconds:.2f}" if r.seconds is not None else r.note


def report(results: list[Result], skipped: list[str], repeat: int) -> str:
    index = {(r.fmt, r.rows, r.kind): r for r in results}
    lines = [
        "# Renderer benchmarks",
        "",
        (
            "Generated by `python benchmarks/bench_render.py`. Each measurement runs in its "
            "own process; its time includes reading the same Parquet input (64k-row groups); "
            "peak RSS is the process's VmHWM, interpreter and imports included. `READ` is the "
            "floor: importing the libraries and reading the stream without writing anything. "
            f"Fast variants ran {repeat}× and the fastest run is shown (with the highest "
            "peak RSS of the runs); seeds ran once."
        ),
        "",
        *_machine(),
        "",
        (
            "| Format | Rows | Variant | Wall s | Rows/s | Peak RSS MB | RSS above floor MB "
            "| Output MB | Ours vs seed (speed, RSS) | Ours / primitive time |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        seed = index.get((r.fmt, r.rows, "seed"))
        prim = index.get((r.fmt, r.rows, "primitive"))
        floor = index.get(("READ", r.rows, "floor"))
        rate = f"{r.rows / r.seconds:,.0f}" if r.seconds else ""
        rss = f"{r.rss_mb:.0f}" if r.rss_mb else ""
        above = ""
        if r.rss_mb and floor and floor.rss_mb and r.kind == "ours":
            above = f"{r.rss_mb - floor.rss_mb:.0f}"
        size = f"{r.out_bytes / 1e6:.1f}" if r.out_bytes else ""
        vs_seed = vs_prim = ""
        if r.kind == "ours" and r.seconds:
            if seed and seed.seconds:
                vs_seed = (
                    f"{seed.seconds / r.seconds:.1f}× faster, {r.rss_mb / seed.rss_mb:.2f}× RSS"
                )
            elif seed:
                vs_seed = f"seed {seed.note}"
            if prim and prim.seconds:
                vs_prim = f"{r.seconds / prim.seconds:.2f}"
        lines.append(
            f"| {r.fmt} | {r.rows:,} | {r.kind} | {_fmt_seconds(r)} | {rate} | {rss} | {above} "
            f"| {size} | {vs_seed} | {vs_prim} |"
        )
    lines += ["", "## Targets", ""]
    lines += _targets(results, index)
    if skipped:
        lines += ["", "## Not measured", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def _targets(results: list[Result], index: dict) -> list[str]:
    out = []
    for r in results:
        if r.kind != "ours" or r.seconds is None:
            continue
        checks = []
        seed = index.get((r.fmt, r.rows, "seed"))
        prim = index.get((r.fmt, r.rows, "primitive"))
        if r.fmt == "PDF":
            if r.rows == 100_000:
                checks.append(f"{r.seconds:.1f} s (≤ 30 s: {_ok(r.seconds <= 30)})")
                checks.append(f"RSS {r.rss_mb:.0f} MB (≤ 500: {_ok(r.rss_mb <= 500)})")
        elif r.rows >= 1_000_000:
            if seed and seed.seconds:
                speed = seed.seconds / r.seconds
                checks.append(f"{speed:.1f}× faster than seed (≥ 5×: {_ok(speed >= 5)})")
                share = r.rss_mb / seed.rss_mb
                checks.append(f"RSS {share:.2f}× seed's (≤ 0.10: {_ok(share <= 0.10)})")
            if prim and prim.seconds:
                ratio = r.seconds / prim.seconds
                checks.append(f"{ratio:.2f}× primitive's time (≤ 1.5: {_ok(ratio <= 1.5)})")
            checks.append(f"RSS {r.rss_mb:.0f} MB (< 500: {_ok(r.rss_mb < 500)})")
        if checks:
            out.append(f"- {r.fmt} {r.rows:,} rows: " + "; ".join(checks))
    return out


def _ok(passed: bool) -> str:
    return "met" if passed else "MISSED"


def plan(formats: list[str], row_counts: list[int]) -> list[tuple[str, int, str]]:
    """(format, rows, variant) to measure, in order."""
    steps = [("READ", rows, "floor") for rows in row_counts]
    for fmt in formats:
        for rows in PDF_ROWS if fmt == "PDF" else row_counts:
            for kind in ("seed", "ours", "primitive", "xlsxwriter"):
                if kind == "primitive" and fmt in ("PDF", "XML"):
                    continue
                if kind == "seed" and fmt == "PARQUET":
                    continue
                if kind == "xlsxwriter" and (fmt != "EXCEL" or rows > 100_000):
                    continue
                steps.append((fmt, rows, kind))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", default=FORMATS, type=str.upper)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS-render.md")
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each fast variant; the fastest is kept"
    )
    parser.add_argument("--child", nargs=4, metavar=("KIND", "FORMAT", "SOURCE", "OUT"))
    args = parser.parse_args()
    if args.child:
        kind, fmt, source, out = args.child
        child(kind, fmt, Path(source), Path(out))
        return

    sys.path.insert(0, str(HERE))
    import pyarrow.parquet as pq
    from bench_data import build_table

    results: list[Result] = []
    skipped: list[str] = []
    steps = plan(args.formats, args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-render-") as folder:
        work = Path(folder)
        sources = {}
        for rows in sorted({rows for _, rows, _ in steps}):
            sources[rows] = work / f"input-{rows}.parquet"
            table = build_table(rows)
            pq.write_table(table, sources[rows], compression="zstd", row_group_size=BATCH_ROWS)
            del table
        for fmt, rows, kind in steps:
            if kind == "seed" and rows > SEED_MAX_ROWS.get(fmt, rows):
                skipped.append(
                    f"{fmt} seed at {rows:,} rows: run at {SEED_MAX_ROWS[fmt]:,} rows only "
                    "(it takes minutes; see SEED_MAX_ROWS)"
                )
                continue
            timeout = SEED_PDF_TIMEOUT if (kind, fmt) == ("seed", "PDF") else args.timeout
            # Seeds take long and vary little; the fast variants are noisy on a shared host.
            runs = 1 if kind == "seed" else args.repeat
            tries = [measure(kind, fmt, rows, sources[rows], work, timeout) for _ in range(runs)]
            result = min(tries, key=lambda r: r.seconds if r.seconds is not None else 1e9)
            result.rss_mb = max((r.rss_mb or 0 for r in tries), default=0) or None
            results.append(result)
            print(
                f"{fmt:8s} {rows:>9,} {kind:10s} {_fmt_seconds(result):>24s} "
                f"{result.rss_mb or 0:7.0f} MB",
                flush=True,
            )
    args.out.write_text(report(results, skipped, args.repeat), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
