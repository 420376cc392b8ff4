"""Publishing a folder of rendered files with its manifest, and verifying one (docs/CONTRACT.md §5)."""

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
    """Publish `files` and their manifest as the new version of `folder`.

    `header` holds the manifest's descriptive fields (export_type, organization_id, date,
    row_count, columns, code_version, run_id, request_id, …). Files an earlier publish
    left in the folder that this manifest does not list are dropped; sub-folders stay.

    At every instant, and after an error or a kill at any point, `verify_folder` finds
    nothing wrong with the folder, and publishing it again succeeds:

    - a store that can swap folders (`Store.replace_folder`: a local store) gets the
      whole new version built aside and swapped in at once, so the folder is always
      exactly the old version or exactly the new one (where the OS lacks an atomic
      exchange of two directories the swap is two renames, and between them, or after
      a kill there until the next publish, the folder is absent: never a mix);
    - other stores (S3, where no group of objects changes at once) are updated in place
      in an order that keeps the manifest true (`_publish_in_place`): it never lists a
      file whose bytes are not the ones it names. Readers there may meet a folder in
      transition, which its manifest marks with a "publishing" field.
    """
    published = []
    for rendered in files:
        key = _key(folder, rendered.path.name)
        published.append(
            PublishedFile(
                name=rendered.path.name,
                format=rendered.format_name,
                bytes=rendered.path.stat().st_size,
                sha256=sha256_file(rendered.path),
                rows=rendered.rows,
                location=store.location(key),
            )
        )
    manifest = {
        **header,
        "files": [p.as_manifest_entry() for p in published],
        "generated_at": utc_now_iso(),
    }
    data = _manifest_bytes(manifest)

    def build(staging: str) -> None:
        for rendered, entry in zip(files, published):
            store.put_file(rendered.path, f"{staging}/{entry.name}", entry.sha256)
        store.put_bytes(data, f"{staging}/{MANIFEST}")

    if not store.replace_folder(folder, build):
        _publish_in_place(store, folder, files, published, data)
    return manifest, published


def _publish_in_place(
    store: Store,
    folder: str,
    files: Sequence[RenderedFile],
    published: list[PublishedFile],
    data: bytes,
) -> None:
    """Overwrite the folder's objects one by one, with the manifest true at every step.

    1. If the current manifest lists files this publish changes, rewrite it first without
       them (the other entries still hold), with a "publishing" field naming the files
       on their way. From here until step 3 the folder vouches only for what is stable.
    2. PUT every file (each PUT is atomic: an object is whole or absent).
    3. PUT the new manifest: now it lists exactly the new files.
    4. Delete files the new manifest does not list.

    So `verify_folder` stays strict (each listed entry must match its object exactly)
    and never fails mid-way or after a kill. What this cannot give, and no ordering of
    S3 PUTs can: between steps 1 and 3 the folder is neither version, its manifest lists
    fewer files (the "publishing" field says why), and a reader who fetched the old
    manifest before step 1 may download a file already replaced. A failed or killed
    publish leaves that state until the next publish of the folder completes.
    """
    manifest_key = _key(folder, MANIFEST)
    incoming = {p.name: p for p in published}
    try:
        current = json.loads(store.read_bytes(manifest_key))
        listed = list(current.get("files", []))
    except Exception:  # no folder yet, or no usable manifest: nothing is vouched for
        current, listed = None, []
    stable = [
        entry
        for entry in listed
        if entry.get("name") not in incoming
        or (
            entry.get("sha256") == incoming[entry["name"]].sha256
            and entry.get("bytes") == incoming[entry["name"]].bytes
        )
    ]
    if current is not None and len(stable) != len(listed):
        withdrawn = {
            **current,
            "files": stable,
            "publishing": {"since": utc_now_iso(), "files": sorted(incoming)},
        }
        store.put_bytes(_manifest_bytes(withdrawn), manifest_key)
    for rendered, entry in zip(files, published):
        store.put_file(rendered.path, _key(folder, entry.name), entry.sha256)
    store.put_bytes(data, manifest_key)
    keep = set(incoming) | {MANIFEST}
    for key in store.list_keys(folder):
        relative = key[len(folder) + 1 :] if folder else key
        if "/" not in relative and relative not in keep:
            store.delete(key)  # a format rendered by an earlier run, no longer published


def _key(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode()


def read_manifest(store: Store, folder: str) -> dict[str, Any]:
    return json.loads(store.read_bytes(_key(folder, MANIFEST)))


@dataclass(frozen=True)
class Problem:
    folder: str
    file: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.folder}/{self.file}" if self.folder else self.file
        return f"{where}: {self.reason}"


def verify_folder(store: Store, folder: str) -> list[Problem]:
    """Recompute every listed file's SHA-256 and size against the folder's manifest.

    A publish may replace the folder while this runs (the files then belong to a newer
    manifest than the one read first), so problems count only if the manifest is still
    the same afterwards; otherwise the check starts again on the new manifest.
    """
    problems: list[Problem] = []
    for _ in range(_VERIFY_ATTEMPTS):
        try:
            raw = store.read_bytes(_key(folder, MANIFEST))
            manifest = json.loads(raw)
        except Exception as error:  # OSError, ValueError, S3 client errors (no common base)
            return [Problem(folder, MANIFEST, f"unreadable manifest ({error})")]
        problems = _check_files(store, folder, manifest)
        if not problems:
            return []
        try:
            if store.read_bytes(_key(folder, MANIFEST)) == raw:
                return problems
        except Exception:
            pass  # the manifest went away meanwhile: look again
    return problems


_VERIFY_ATTEMPTS = 20


def _check_files(store: Store, folder: str, manifest: dict[str, Any]) -> list[Problem]:
    problems = []
    for entry in manifest.get("files", []):
        found = store.checksum(_key(folder, entry["name"]))
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
