"""Export statistics: what the on-demand service delivered, per day, type, format and outcome.

pandas is imported where it is used: every run worker loads these definitions, and pandas
would add ~0.4 s to each run's start (`tests: test_run_worker_imports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from export_pipelines.defs.resources import SourceResource, WorkAreaResource

if TYPE_CHECKING:
    import pandas as pd

STATISTICS_SQL = """
    SELECT id, export_type, export_format, status, file_size, row_count,
           created_at, completed_at
    FROM export_requests
"""


def export_statistics_table(requests: pd.DataFrame) -> pd.DataFrame:
    """Per day × type × format × status: requests, bytes, rows, latency median and p95."""
    import pandas as pd

    columns = [
        "day",
        "export_type",
        "export_format",
        "status",
        "requests",
        "bytes_delivered",
        "rows_delivered",
        "latency_median_s",
        "latency_p95_s",
    ]
    if requests.empty:
        return pd.DataFrame(columns=columns)
    frame = requests.copy()
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="mixed")
    frame["completed_at"] = pd.to_datetime(frame["completed_at"], utc=True, format="mixed")
    frame["day"] = frame["created_at"].dt.strftime("%Y-%m-%d")
    frame["export_type"] = frame["export_type"].str.lower()
    frame["export_format"] = frame["export_format"].str.upper()
    done = frame["status"].isin(["COMPLETED", "EXPIRED"])
    frame["latency_s"] = (
        (frame["completed_at"] - frame["created_at"]).dt.total_seconds().where(done)
    )
    frame["bytes"] = frame["file_size"].where(done).fillna(0)
    frame["rows"] = frame["row_count"].where(done).fillna(0)
    grouped = frame.groupby(["day", "export_type", "export_format", "status"], sort=True)
    table = grouped.agg(
        requests=("id", "count"),
        bytes_delivered=("bytes", "sum"),
        rows_delivered=("rows", "sum"),
        latency_median_s=("latency_s", "median"),
        latency_p95_s=("latency_s", lambda s: s.quantile(0.95) if s.notna().any() else None),
    ).reset_index()
    for column in ("bytes_delivered", "rows_delivered"):
        table[column] = table[column].astype("int64")
    return table[columns]


@dg.asset(
    key=["operations", "export_statistics"],
    group_name="operations",
    kinds={"pandas", "parquet"},
    owners=["team:data"],
    description="Requests per day, type, format and outcome; bytes and rows delivered; "
    "time from request to completion (median, p95).",
)
def export_statistics(source: SourceResource, work: WorkAreaResource) -> dg.MaterializeResult:
    requests = source.database().fetch_table(STATISTICS_SQL).to_pandas()
    table = export_statistics_table(requests)
    path = work.work_area().root / "operations" / "export_statistics.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "requests": int(table["requests"].sum()) if len(table) else 0,
            "completed": int(table.loc[table["status"] == "COMPLETED", "requests"].sum()),
            "failed": int(table.loc[table["status"] == "FAILED", "requests"].sum()),
            "bytes_delivered": int(table["bytes_delivered"].sum()) if len(table) else 0,
            "table": dg.MetadataValue.md(table.tail(50).to_markdown(index=False)),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


# The data team's view of the on-demand service, refreshed every hour.
statistics_job = dg.define_asset_job(
    "export_statistics_job",
    selection=[export_statistics],
    description="Refresh operations/export_statistics (requests and deliveries counted).",
)
statistics_schedule = dg.ScheduleDefinition(
    job=statistics_job,
    cron_schedule="45 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh operations/export_statistics every hour.",
)
