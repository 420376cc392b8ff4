"""Publishing a folder of rendered files with its manifest, and verifying one (CONTRACT §5)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from export_pipelines.render import RenderedFile
from export_pipelines.store import Store, iter_manifest_folders, sha256_file

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PublishedFile:
    name: str
    format: str
    bytes: int
    sha256: str
    rows: int
    location: str

    def as_manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "rows": self.rows,
        }


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def publish_folder(
    store: Store,
    folder: str,
    files: Sequence[RenderedFile],
    header: dict[str, Any],
) -> tuple[dict[str, Any], list[PublishedFile]]:
    """Publish `files` into `folder`, then the manifest, then drop files it no longer lists.

    `header` holds the manifest's descriptive fields (export_type, organization_id, date,
    row_count, columns, code_version, run_id, request_id, …).
    """
    published = []
    for rendered in files:
        digest = sha256_file(rendered.path)
        key = f"{folder}/{rendered.path.name}"
        store.put_file(rendered.path, key, digest)
        published.append(
            PublishedFile(
                name=rendered.path.name,
                format=rendered.format_name,
                bytes=rendered.path.stat().st_size,
                sha256=digest,
                rows=rendered.rows,
                location=store.location(key),
            )
        )
    manifest = {
        **header,
        "files": [p.as_manifest_entry() for p in published],
        "generated_at": utc_now_iso(),
    }
    # The manifest goes last: once it is there, everything it names is complete.
    store.put_bytes(
        json.dumps(manifest, indent=2, ensure_ascii=False).encode(), f"{folder}/{MANIFEST}"
    )
    listed = {p.name for p in published} | {MANIFEST}
    for key in store.list_keys(folder):
        relative = key[len(folder) + 1 :]
        if "/" not in relative and relative not in listed:
            store.delete(key)  # a format rendered by an earlier run, no longer published
    return manifest, published


def read_manifest(store: Store, folder: str) -> dict[str, Any]:
    return json.loads(store.read_bytes(f"{folder}/{MANIFEST}" if folder else MANIFEST))


@dataclass(frozen=True)
class Problem:
    folder: str
    file: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.folder}/{self.file}" if self.folder else self.file
        return f"{where}: {self.reason}"


def verify_folder(store: Store, folder: str) -> list[Problem]:
    """Recompute every listed file's SHA-256 and size against the folder's manifest."""
    try:
        manifest = read_manifest(store, folder)
    except (OSError, KeyError, ValueError) as error:
        return [Problem(folder, MANIFEST, f"unreadable manifest ({error})")]
    except Exception as error:  # S3 client errors have no common base worth importing
        return [Problem(folder, MANIFEST, f"unreadable manifest ({error})")]
    problems = []
    for entry in manifest.get("files", []):
        key = f"{folder}/{entry['name']}" if folder else entry["name"]
        found = store.checksum(key)
        if found is None:
            problems.append(Problem(folder, entry["name"], "missing"))
            continue
        digest, size = found
        if digest != entry["sha256"]:
            problems.append(
                Problem(folder, entry["name"], f"sha256 {digest} != manifest {entry['sha256']}")
            )
        elif size != entry["bytes"]:
            problems.append(
                Problem(folder, entry["name"], f"{size} bytes != manifest {entry['bytes']}")
            )
    return problems


def verify_tree(store: Store, prefix: str = "") -> tuple[int, list[Problem]]:
    """Verify every manifest under `prefix`; return (folders checked, problems)."""
    folders = list(iter_manifest_folders(store, prefix))
    problems: list[Problem] = []
    for folder in folders:
        problems.extend(verify_folder(store, folder))
    return len(folders), problems
