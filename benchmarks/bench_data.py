"""The benchmark table: the real 12-column `scan_results` export over demo data.

The demo generator fills an embedded database with exactly `rows` scans (one
organization, `rows / 10,000` days), then the export's own extract query reads them
back, so the renderers are measured on the data they serve: ids, unicode project names,
URLs, nullable scores, integers and timestamps.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import pyarrow as pa

from export_pipelines.catalog import CATALOG
from export_pipelines.catalog.spec import Window
from export_pipelines.pipeline.prepare import query_parameters
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase

EVENTS_PER_DAY = 10_000
END = dt.date(2026, 1, 1)


def build_table(rows: int) -> pa.Table:
    """`rows` rows of the scan_results export (rounded up to whole days, then cut)."""
    days = max(1, math.ceil(rows / EVENTS_PER_DAY))
    per_day = min(rows, EVENTS_PER_DAY)
    spec = CATALOG["scan_results"]
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        db = SourceDatabase(f"sqlite:///{Path(folder) / 'source.db'}")
        db.ensure_embedded(
            demo_data.DemoParams(organizations=1, days=days, events_per_day=per_day, end_date=END)
        )
        org = db.scalar("SELECT id FROM organizations")
        window = Window.for_days(END - dt.timedelta(days=days), END - dt.timedelta(days=1))
        table = db.stream(spec.query, query_parameters(spec, window, org), spec.columns).read_all()
    return table.slice(0, rows)
