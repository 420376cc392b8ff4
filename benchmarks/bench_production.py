"""The production configuration under load: 2,000 requests over 50 organizations.

Dagster's storage on PostgreSQL (deploy/dagster.yaml: dagster-postgres, the queued run
coordinator with at most 4 runs at once and at most 2 per organization), the source on
PostgreSQL too, served by `dagster dev`'s daemon. We insert every request at once, wait
until all are settled, and sample the runs every half second to record the most runs seen
at once, in all and per organization. Beside it, the floor: the same valid requests built
one after another in one process.

Usage: python benchmarks/bench_production.py [--requests N] [--organizations N] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_requests import machine  # noqa: E402
from export_pipelines_tests.dev_server import production_burst  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--organizations", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["EXPORT_REQUESTS_PER_HOUR"] = str(10 * args.requests)

    base = Path(tempfile.mkdtemp(prefix="bench-prod-"))
    result = production_burst(base, args.requests, args.organizations)
    asks, params, end = result["asks"], result["params"], result["end"]
    inserted, elapsed, most, most_per_org = (
        result["inserted_s"],
        result["settled_s"],
        result["most"],
        result["most_per_org"],
    )
    status, runs = result["status"], result["runs"]
    twice, lost = result["twice"], result["lost"]
    from benchmarks.bench_burst import floor

    physical = floor(asks, end - dt.timedelta(days=2), params)
    text = "\n".join(
        [
            f"### Production config: {args.requests:,} requests over {args.organizations} "
            "organizations (PostgreSQL storage and source)",
            "",
            f"{dt.date.today()}, {machine()}. deploy/dagster.yaml: at most 4 runs at once, "
            "2 per organization.",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| inserted (all at once) | {inserted:.1f} s |",
            f"| all settled | **{elapsed:.1f} s** |",
            f"| completed / failed | {status['COMPLETED']} / {status['FAILED']} |",
            f"| lost / served twice | {lost} / {twice} |",
            f"| runs | {runs} |",
            f"| most runs seen at once / most per organization | {most} / **{most_per_org}** |",
            f"| floor: the valid requests built in one process (same data, embedded SQLite) | {physical:.1f} s |",
            f"| ratio settled / floor | {elapsed / physical:.1f}× |",
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
