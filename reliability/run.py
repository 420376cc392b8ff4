"""Run the reliability scenarios and write RELIABILITY.md at the repository root.

    python reliability/run.py            # every scenario, slow ones included (a few minutes)
    python reliability/run.py --fast     # without the `slow` tests (dagster dev, real runs)

One pytest session over the fault-injection and hostile-input test files that exist (some
may not yet: they are listed as missing), with EXPORT_RELIABILITY_OUT naming a JSON Lines
file where each test appends what it injected or tried and what happened. Then the report:
date, machine, one table row per line written, and pytest's counts per file. Exits with
pytest's status, so a failing scenario fails `make reliability` — after the report is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "export_pipelines_tests"
REPORT = ROOT / "RELIABILITY.md"

# What each file brings to the report, in the order it is shown.
FILES = {
    "test_faults.py": "faults injected for real: kill -9 of run workers under dagster dev, "
    "PostgreSQL connections terminated mid-extract, the store made immutable mid-publish",
    "test_publish_atomic.py": "publishes failed, refused or SIGKILLed at every step; verify "
    "racing publishes",
    "test_reliability.py": "concurrent runs of one partition, empty ids, huge ranges, "
    "operator mistakes",
    "test_ledger_reliability.py": "request ledger transitions under races and replays",
    "test_fuzz.py": "fuzzed request and subscription rows (hypothesis), both engines",
    "test_permissions.py": "the permission matrix: roles x types x requests/subscriptions",
    "test_report_delivery.py": "report delivery: refusals, retries, exactly once",
}
# Counters every fault line carries; summed over the whole run.
INVARIANTS = ("verify_failures", "stuck", "duplicates", "lost", "flips")
# Keys that are bookkeeping, not outcomes.
META = {"test", "kind", "engine", "passed", "seconds", "known_bug", "summary"}
# Which numeric field says "how many times" when a line has no `injected`.
TRIED_KEYS = (
    "injected",
    "examples",
    "rows",
    "requests",
    "cells_checked",
    "tried",
    "runs",
    "cases",
)


def machine() -> dict[str, str]:
    uname = platform.uname()
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        dagster = version("dagster")
    except Exception:  # noqa: BLE001 - the report says it could not tell
        dagster = "not installed"
    return {
        "uname": " ".join(
            [uname.system, uname.node, uname.release, uname.version, uname.machine]
        ).strip(),
        "cpus": f"{os.cpu_count()}" + (f" × {cpu}" if cpu else ""),
        "ram": ram or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "dagster": dagster,
        "postgresql": postgres_version(),
    }


def postgres_version() -> str:
    url = os.environ.get("EXPORT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        sys.path.insert(0, str(ROOT))
        from export_pipelines.source.database import SourceDatabase

        db = SourceDatabase(url)
        text = str(db.scalar("SELECT current_setting('server_version')"))
        db.close()
        return text
    except Exception:  # noqa: BLE001 - unreachable: its tests skip (or fail in CI)
        return "not reachable (its tests skip locally)"


def run_pytest(files: list[Path], fast: bool, out: Path, junit: Path) -> tuple[int, float]:
    marker = "not slow" if fast else "slow or not slow"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        marker,
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={junit}",
        *[str(f.relative_to(ROOT)) for f in files],
    ]
    print("$", " ".join(command), flush=True)
    env = {**os.environ, "EXPORT_RELIABILITY_OUT": str(out)}
    started = time.monotonic()
    code = subprocess.call(command, cwd=ROOT, env=env)
    return code, time.monotonic() - started


def junit_counts(junit: Path) -> dict[str, Counter]:
    """Per test file: passed, failed, errors, skipped, xfailed, and seconds."""
    counts: dict[str, Counter] = defaultdict(Counter)
    if not junit.exists():
        return counts
    for case in ET.parse(junit).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        module = next((p for p in parts if f"{p}.py" in FILES), parts[-1] if parts else "?")
        name = Path(case.get("file") or f"{module}.py").name
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "errors"
            elif child.tag == "skipped":
                xfail = (child.get("type") or "") == "pytest.xfail"
                outcome = "xfailed" if xfail else "skipped"
        counts[name][outcome] += 1
        counts[name]["seconds"] += float(case.get("time") or 0)
    return counts


def read_lines(out: Path) -> list[dict[str, Any]]:
    lines = []
    if out.exists():
        for raw in out.read_text(encoding="utf-8").splitlines():
            raw = raw.strip()
            if raw:
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    lines.append({"test": "(unreadable line)", "raw": raw[:200]})
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str, ensure_ascii=False)
        return text if len(text) <= 160 else text[:157] + "…"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row_for(line: dict[str, Any]) -> tuple[str, str, str, str]:
    """(what was injected or tried, how many times, what happened, passed).

    A line's own `summary` says what happened, followed by the invariant counters;
    otherwise its short scalar fields are listed (ids and long structures left out).
    """
    what = line.get("kind") or ""
    what = f"{line.get('test', '?')}" + (f" — {what}" if what else "")
    if line.get("engine"):
        what += f" ({line['engine']})"
    tried_key = next((k for k in TRIED_KEYS if isinstance(line.get(k), (int, float))), None)
    if tried_key is None:
        tried = "—"
    else:
        tried = f"{line[tried_key]}" + ("" if tried_key == "injected" else f" {tried_key}")
    happened = []
    if line.get("summary"):
        happened.append(str(line["summary"]))
        counters = [f"{k.replace('_', ' ')} {line[k]}" for k in INVARIANTS if k in line]
        if counters:
            happened.append(", ".join(counters))
    else:
        for key, value in line.items():
            if key in META or key == tried_key:
                continue
            text = _scalar(value)
            if len(text) <= 80:
                happened.append(f"{key}={text}")
    if "seconds" in line:
        happened.append(f"{line['seconds']} s")
    passed = {True: "yes", False: "**no**"}.get(line.get("passed"), "—")
    if line.get("known_bug") and line.get("passed") is False:
        passed = "xfail (known bug)"
    return what, tried, "; ".join(happened), passed


def write_report(
    lines: list[dict[str, Any]],
    counts: dict[str, Counter],
    files: list[Path],
    missing: list[str],
    code: int,
    seconds: float,
    fast: bool,
) -> str:
    info = machine()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out: list[str] = [
        "# Reliability",
        "",
        "Faults injected and hostile input tried against the real pipeline, counted. "
        "Generated by `make reliability` (`python reliability/run.py`); do not edit by hand.",
        "",
        f"- date: {now}",
        f"- machine: `{info['uname']}`",
        f"- CPUs: {info['cpus']}; RAM: {info['ram']}",
        f"- Python {info['python']}; Dagster {info['dagster']}; PostgreSQL {info['postgresql']}",
        f"- tests: `{'not slow' if fast else 'slow or not slow'}`, one pytest session, "
        f"{seconds:.0f} s, pytest exit status {code}",
        "",
        "## What must hold after every fault",
        "",
        "Every published folder verifies against its manifest (`export-pipelines verify`), no "
        "request is left PENDING or PROCESSING once the service has reconciled, no FAILED request "
        "becomes COMPLETED, and each ended request has exactly one `export.completed` or "
        "`export.failed` audit entry.",
        "",
    ]
    totals = Counter()
    for line in lines:
        for key in INVARIANTS:
            if isinstance(line.get(key), int):
                totals[key] += line[key]
    faults = sum(int(line.get("injected") or 0) for line in lines)
    out += [
        f"Over the whole run: {faults} faults injected; "
        + ", ".join(f"{key.replace('_', ' ')}: {totals[key]}" for key in INVARIANTS)
        + ".",
        "",
        "## Injected or tried, and what happened",
        "",
    ]
    if lines:
        out += [
            "| injected or tried | times | what happened | passed |",
            "|---|---|---|---|",
        ]
        for line in sorted(lines, key=lambda x: (str(x.get("test")), str(x.get("engine")))):
            out.append("| " + " | ".join(_cell(c) for c in row_for(line)) + " |")
    else:
        out.append("No test wrote a line (EXPORT_RELIABILITY_OUT).")
    out += [
        "",
        "## pytest",
        "",
        "| file | covers | passed | failed | errors | skipped | xfailed | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    grand = Counter()
    for path in files:
        c = counts.get(path.name, Counter())
        grand.update(c)
        out.append(
            f"| `{path.name}` | {_cell(FILES.get(path.name, ''))} | {c['passed']} | "
            f"{c['failed']} | {c['errors']} | {c['skipped']} | {c['xfailed']} | "
            f"{c['seconds']:.0f} |"
        )
    out.append(
        f"| **total** | | {grand['passed']} | {grand['failed']} | {grand['errors']} | "
        f"{grand['skipped']} | {grand['xfailed']} | {grand['seconds']:.0f} |"
    )
    problems = []
    for line in lines:
        if line.get("known_bug"):
            problems.append(f"`{line.get('test')}`: {line['known_bug']}")
        if isinstance(line.get("leftovers"), int) and line["leftovers"]:
            size = line.get("leftover_bytes")
            amount = f", {size / 2**20:.1f} MiB" if isinstance(size, int) else ""
            problems.append(
                f"`{line.get('test')}`: {line['leftovers']} hidden entries{amount} left "
                "behind by dead or refused publishes and renders (never removed)"
            )
    if problems:
        out += ["", "## Problems seen (the invariants held)", ""]
        out += [f"- {_cell(p)}" for p in problems]
    if missing:
        out += ["", "Not yet written (skipped): " + ", ".join(f"`{m}`" for m in missing) + "."]
    text = "\n".join(out) + "\n"
    REPORT.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="leave out the slow tests")
    args = parser.parse_args(argv)

    files = [TESTS / name for name in FILES if (TESTS / name).is_file()]
    missing = [name for name in FILES if not (TESTS / name).is_file()]
    with tempfile.TemporaryDirectory(prefix="reliability-") as scratch:
        out, junit = Path(scratch) / "reliability.jsonl", Path(scratch) / "junit.xml"
        out.touch()
        code, seconds = run_pytest(files, args.fast, out, junit) if files else (5, 0.0)
        lines = read_lines(out)
        counts = junit_counts(junit)
    write_report(lines, counts, files, missing, code, seconds, args.fast)
    print(f"wrote {REPORT.relative_to(ROOT)} ({len(lines)} lines, pytest exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
