"""Page images of the people formats for a reviewer: `make screenshots`.

Seeds a month of demo data in a scratch folder, renders each table export type's monthly
report for the demo's organizations as PDF and Excel through the real pipeline, and writes
PNGs to `screenshots/` (not committed): page 1 of every PDF (pdftoppm), and the first two
pages of every workbook as LibreOffice prints it (its Summary sheet, then the data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from export_pipelines.catalog import SPECS, Kind
from export_pipelines.pipeline.build import render_deliverable
from export_pipelines.pipeline.deliverable import Deliverable, Purpose
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.render import ExportFormat
from export_pipelines.source import demo_data
from export_pipelines.source.database import SourceDatabase

ROOT = Path(__file__).resolve().parents[1]


def png(pdf: Path, out: Path, pages: int) -> list[Path]:
    subprocess.run(
        ["pdftoppm", "-r", "70", "-png", "-f", "1", "-l", str(pages), str(pdf), str(out)],
        check=True,
    )
    return sorted(out.parent.glob(f"{out.name}*.png"))


def xlsx_to_pdf(path: Path, scratch: Path) -> Path:
    profile = (scratch / "lo-profile").as_uri()
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation={profile}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(path.parent),
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path.with_suffix(".pdf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--organizations", type=int, default=1)
    args = parser.parse_args()
    missing = [tool for tool in ("pdftoppm", "soffice") if shutil.which(tool) is None]
    if missing:
        print(f"needs {', '.join(missing)} (Debian: poppler-utils, libreoffice-calc-nogui)")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    last = dt.date(2026, 11, 30)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        db = SourceDatabase(f"sqlite:///{scratch / 'source.db'}")
        db.ensure_embedded(demo_data.DemoParams(days=31, end_date=last + dt.timedelta(days=1)))
        orgs = db.fetch_rows("SELECT id FROM organizations ORDER BY name")[: args.organizations]
        for org in orgs:
            for spec in (s for s in SPECS if s.kind is Kind.TABLE):
                deliverable = Deliverable(
                    spec,
                    org["id"],
                    last.replace(day=1),
                    last,
                    (ExportFormat.PDF, ExportFormat.EXCEL),
                    purpose=Purpose.REPORT,
                    reference="screenshots",
                )
                folder = scratch / spec.key / org["id"]
                folder.mkdir(parents=True)
                rendered = render_deliverable(deliverable, db, WorkArea(scratch / "work"), folder)
                files = {f.format: f.path for f in rendered.files}
                stem = f"{spec.key}-{len(list(args.out.glob(spec.key + '*')))}"
                shots = png(files[ExportFormat.PDF], args.out / f"{stem}-pdf", 1)
                shots += png(
                    xlsx_to_pdf(files[ExportFormat.EXCEL], scratch), args.out / f"{stem}-xlsx", 2
                )
                for shot in shots:
                    print(shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
