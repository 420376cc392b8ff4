"""A rolling window of daily partitions (EXPORT_PARTITIONS_DAYS) bounds organizations × days
per asset, the figure Dagster's costs grow with (BENCHMARKS.md, "Partitions at scale")."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from export_pipelines.defs.partitions import first_partition_day

TODAY = dt.date(2026, 12, 2)


def test_the_window_starts_at_the_later_of_the_configured_day_and_the_window():
    assert first_partition_day("2026-01-01", None, TODAY) == "2026-01-01"
    assert first_partition_day("2026-01-01", 45, TODAY) == "2026-10-18"
    assert first_partition_day("2026-11-30", 45, TODAY) == "2026-11-30"


def _partition_days(**env: str) -> list[str]:
    probe = (
        "import json; from export_pipelines.defs.partitions import days; "
        "print(json.dumps(days.get_partition_keys()))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXPORT_PARTITIONS")}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_window_of_45_days_makes_45_partitions_ending_yesterday():
    keys = _partition_days(EXPORT_PARTITIONS_START="2026-01-01", EXPORT_PARTITIONS_DAYS="45")
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    assert len(keys) == 45 and keys[-1] == yesterday.isoformat()


@pytest.mark.parametrize("value", ["0", "-3", "a week"])
def test_a_window_that_is_not_a_number_of_days_is_refused_at_load(value):
    from export_pipelines import settings

    os.environ["EXPORT_PARTITIONS_DAYS"] = value
    try:
        with pytest.raises(ValueError, match="EXPORT_PARTITIONS_DAYS must be a whole number"):
            settings.partitions_days()
    finally:
        del os.environ["EXPORT_PARTITIONS_DAYS"]


def test_a_backfill_before_the_first_partition_day_is_refused_with_the_way_to_get_it(
    tmp_path, sqlite_source
):
    from export_pipelines.catalog import CATALOG
    from export_pipelines.defs.backfill import backfill
    from export_pipelines.defs.partitions import days

    first = days.start.date() - dt.timedelta(days=3)
    with dg.instance_for_test() as instance:
        with pytest.raises(ValueError, match="export-pipelines request"):
            backfill(instance, [CATALOG["scan_results"]], "org", first, first, {})
        assert instance.get_runs() == []
