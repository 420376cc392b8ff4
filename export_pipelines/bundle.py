"""The organization bundle: every other export of one organization and day, in one zip.

The seeds' "full database" and "comprehensive" exports, scoped to one tenant. Parts are
taken from what was published (and verified against their manifests), so the bundle
holds exactly the bytes that were delivered one by one.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export_pipelines.catalog.spec import ExportSpec
from export_pipelines.manifest import read_manifest, verify_folder
from export_pipelines.render import RenderedFile
from export_pipelines.stages import ExportPartition
from export_pipelines.store import Store

BUNDLE_FORMAT = "ZIP"  # the manifest's format name for an archive of other exports
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entry times: same parts, same bytes


def collect_parts(
    store: Store, partition: ExportPartition, specs: Sequence[ExportSpec]
) -> list[dict[str, Any]]:
    """Each part's manifest, after checking its files against it."""
    parts = []
    for spec in specs:
        folder = partition.folder(spec.key)
        problems = verify_folder(store, folder)
        if problems:
            raise RuntimeError(
                f"{spec.key} for {partition.key} does not verify: {'; '.join(map(str, problems))}"
            )
        parts.append({"folder": folder, "manifest": read_manifest(store, folder)})
    return parts


def bundle_manifest(partition: ExportPartition, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "organization_id": partition.organization_id,
        "date": partition.date.isoformat(),
        "parts": [
            {
                "export_type": p["manifest"]["export_type"],
                "row_count": p["manifest"]["row_count"],
                "files": [
                    {k: f[k] for k in ("name", "format", "bytes", "sha256", "rows")}
                    for f in p["manifest"]["files"]
                ],
            }
            for p in parts
        ],
    }


def write_bundle(
    store: Store, parts: list[dict[str, Any]], manifest: dict[str, Any], path: Path
) -> RenderedFile:
    """Zip every part's files under `<type>/` with the bundle manifest on top."""
    scratch = path.parent / ".parts"
    scratch.mkdir(exist_ok=True)
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(
                zip_entry("manifest.json"), json.dumps(manifest, indent=2, ensure_ascii=False)
            )
            for part in parts:
                export_type = part["manifest"]["export_type"]
                for entry in part["manifest"]["files"]:
                    local = scratch / entry["name"]
                    store.download(f"{part['folder']}/{entry['name']}", local)
                    with (
                        open(local, "rb") as source,
                        archive.open(zip_entry(f"{export_type}/{entry['name']}"), "w") as target,
                    ):
                        shutil.copyfileobj(source, target, 1 << 20)
                    local.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = sum(p["row_count"] for p in manifest["parts"])
    return RenderedFile(path, BUNDLE_FORMAT, rows)


def zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
