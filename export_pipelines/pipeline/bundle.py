"""The organization bundle: every table export of one organization, in one zip.

The seeds' "full database" and "comprehensive" exports, scoped to one tenant. For a
partition, the parts are taken from what was published that day (and verified against
their manifests), so the bundle holds exactly the bytes delivered one by one; for a request
or a report over a range, each part is rendered over the range in the requested format.
Either way one function assembles the archive and its inner manifest, of one shape.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export_pipelines.catalog.spec import ExportSpec
from export_pipelines.manifest import read_manifest, verify_folder
from export_pipelines.pipeline.deliverable import Deliverable, Purpose
from export_pipelines.pipeline.naming import partition_folder
from export_pipelines.pipeline.workarea import WorkArea
from export_pipelines.render import RenderedFile
from export_pipelines.source.database import SourceDatabase
from export_pipelines.store import Store, sha256_file

BUNDLE_FORMAT = "ZIP"  # the manifest's format name for an archive of other exports
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entry times: same parts, same bytes


class BundlePartMissing(RuntimeError):
    """A part of a partition's bundle is not published (or does not verify) yet."""


@dataclass(frozen=True)
class PartFile:
    name: str
    format: str
    rows: int
    bytes: int
    sha256: str
    fetch: Callable[[Path], Path]  # puts the file's bytes at a local path, returns it


@dataclass(frozen=True)
class Part:
    export_type: str
    row_count: int
    files: list[PartFile]


def bundled_specs() -> tuple[ExportSpec, ...]:
    from export_pipelines.catalog import bundled_specs as specs

    return specs()


def published_parts(store: Store, deliverable: Deliverable) -> list[Part]:
    """Each part as published for the partition's day, after checking it against its manifest."""
    parts = []
    for spec in bundled_specs():
        folder = partition_folder(spec.key, deliverable.organization_id, deliverable.date_to)
        problems = verify_folder(store, folder)
        if problems:
            raise BundlePartMissing(
                f"{spec.key} for {deliverable.organization_id} on {deliverable.date_to} does not "
                f"verify: {'; '.join(map(str, problems))}; publish it again first"
            )
        manifest = read_manifest(store, folder)

        def fetch(key_folder: str = folder) -> Callable[[Path], Path]:
            def download(target: Path) -> Path:
                store.download(f"{key_folder}/{target.name}", target)
                return target

            return download

        parts.append(
            Part(
                manifest["export_type"],
                manifest["row_count"],
                [
                    PartFile(f["name"], f["format"], f["rows"], f["bytes"], f["sha256"], fetch())
                    for f in manifest["files"]
                ],
            )
        )
    return parts


def rendered_parts(
    deliverable: Deliverable,
    db: SourceDatabase,
    work: WorkArea,
    folder: Path,
    progress: Callable[[int], None],
) -> tuple[list[Part], list, list]:
    """Each part rendered over the deliverable's range, in its format."""
    from export_pipelines.pipeline.build import render_deliverable

    specs = bundled_specs()
    parts, built, reused = [], set(), set()
    for i, spec in enumerate(specs):
        part = dataclasses.replace(deliverable, spec=spec, project_ids=None, columns=None)
        rendered = render_deliverable(part, db, work, folder)
        built.update(rendered.built)
        reused.update(rendered.reused)
        files = [
            PartFile(
                f.path.name,
                f.format_name,
                f.rows,
                f.path.stat().st_size,
                sha256_file(f.path),
                lambda target, path=f.path: path,
            )
            for f in rendered.files
        ]
        parts.append(Part(spec.key, rendered.rows, files))
        progress(10 + int(60 * (i + 1) / len(specs)))
    return parts, sorted(built), sorted(reused)


def inner_manifest(deliverable: Deliverable, parts: Sequence[Part]) -> dict[str, Any]:
    return {
        "organization_id": deliverable.organization_id,
        "date_from": deliverable.date_from.isoformat(),
        "date_to": deliverable.date_to.isoformat(),
        "parts": [
            {
                "export_type": p.export_type,
                "row_count": p.row_count,
                "files": [
                    {
                        "name": f.name,
                        "format": f.format,
                        "bytes": f.bytes,
                        "sha256": f.sha256,
                        "rows": f.rows,
                    }
                    for f in p.files
                ],
            }
            for p in parts
        ],
    }


def write_bundle(path: Path, manifest: dict[str, Any], parts: Sequence[Part]) -> None:
    """Zip every part's files under `<type>/` with the inner manifest on top."""
    scratch = path.parent / ".parts"
    scratch.mkdir(exist_ok=True)
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(
                zip_entry("manifest.json"), json.dumps(manifest, indent=2, ensure_ascii=False)
            )
            for part in parts:
                for entry in part.files:
                    local = entry.fetch(scratch / entry.name)
                    with (
                        open(local, "rb") as source,
                        archive.open(zip_entry(f"{part.export_type}/{entry.name}"), "w") as target,
                    ):
                        shutil.copyfileobj(source, target, 1 << 20)
                    if local.parent == scratch:
                        local.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def render_organization_bundle(
    deliverable: Deliverable,
    db: SourceDatabase | None,
    work: WorkArea,
    folder: Path,
    store: Store | None,
    progress: Callable[[int], None],
):
    from export_pipelines.pipeline.build import Rendered

    if deliverable.purpose is Purpose.PARTITION:
        parts, built, reused = published_parts(store, deliverable), [], []
    else:
        parts_folder = folder / ".rendered-parts"
        parts_folder.mkdir()
        parts, built, reused = rendered_parts(deliverable, db, work, parts_folder, progress)
    manifest = inner_manifest(deliverable, parts)
    path = folder / f"{deliverable.stem}.zip"
    write_bundle(path, manifest, parts)
    rows = sum(p.row_count for p in parts)
    return Rendered(
        [RenderedFile(path, BUNDLE_FORMAT, rows)],
        rows,
        header={"parts": [p.export_type for p in parts]},
        built=built,
        reused=reused,
    )


def zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
