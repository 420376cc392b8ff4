"""The stages' private working area, safe under concurrent runs of the same partition.

Each stage of each partition lives in `<root>/<T>/<stage>/org=…/date=…/`, as versions:
a version is built in a hidden folder, renamed to its own name (never onto another
folder), and then named current by replacing the one-line file `CURRENT` — an atomic
rename. Readers resolve `CURRENT` once and read that version, so a second run building
the same partition never changes the files under a first run's feet; old versions are
pruned after a grace period, and hidden leftovers of killed builds after an hour.

On a cluster the stages of one partition may run on machines that share no disk. There
the work area also has a `SharedLocation` (an `s3://bucket/prefix`) and the local root is
only a cache: a version built here is uploaded before it is named current (its files,
then its record, then `CURRENT`), and `current()`/`version()` of a version this machine
does not hold download it into the local folder first, so callers read local paths
either way (a folder this machine already holds is used as it is). Without a shared
location nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from export_pipelines.pipeline.naming import ExportPartition
from export_pipelines.store import sha256_file

T = TypeVar("T")
CURRENT = "CURRENT"
_GRACE_SECONDS = 15 * 60  # an older version may still be read by a run that resolved it
_ABANDONED_SECONDS = 60 * 60  # a hidden build folder this old belongs to a killed run
_RECORD = ".json"  # `<version>.json`: a shared version's record, beside its files
_RESOLVE_ATTEMPTS = 5  # re-reads of CURRENT while builders replace and prune versions


class WorkArea:
    def __init__(self, root: Path, shared: SharedLocation | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared = shared

    def stage_dir(self, export_type: str, stage: str, partition: ExportPartition) -> Path:
        return self.root / export_type / stage / partition.folder(export_type).split("/", 1)[1]

    def build(self, stage_dir: Path, build: Callable[[Path], T], version: str | None = None) -> T:
        """Build a new version of `stage_dir` with `build(folder)`, then make it current."""
        stage_dir.mkdir(parents=True, exist_ok=True)
        name = version or uuid.uuid4().hex
        staging = stage_dir / f".build-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            result = build(staging)
            final = stage_dir / name
            if final.exists():  # the same version rebuilt (a retried step): replace it
                shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            if self.shared is not None:  # other machines see it before this one calls it current
                self.shared.upload(self._key(stage_dir), name, final)
            pointer = stage_dir / f".{CURRENT}.{uuid.uuid4().hex}"
            pointer.write_text(name)
            os.replace(pointer, stage_dir / CURRENT)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self._prune(stage_dir, keep=name)
        if self.shared is not None:
            self.shared.prune(self._key(stage_dir), keep=name)
        return result

    def current(self, stage_dir: Path) -> Path | None:
        """The current version's folder, or None if the stage was never built."""
        if self.shared is not None:
            return self._current_shared(stage_dir)
        try:
            name = (stage_dir / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        folder = stage_dir / name
        return folder if folder.is_dir() else None

    def version(self, stage_dir: Path, name: str) -> Path | None:
        """The folder of the version `name`, fetched if only the shared location holds it."""
        folder = stage_dir / name
        if folder.is_dir():
            return folder
        if self.shared is None:
            return None
        record = self.shared.record(self._key(stage_dir), name)
        return None if record is None else self.shared.download(record, stage_dir)

    @contextmanager
    def scratch(self, prefix: str = ".scratch-") -> Iterator[Path]:
        """A private folder for one deliverable's files, removed afterwards."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=prefix) as folder:
            yield Path(folder)

    def _key(self, stage_dir: Path) -> str:
        return stage_dir.relative_to(self.root).as_posix()

    def _current_shared(self, stage_dir: Path) -> Path | None:
        """The shared `CURRENT`'s version, from the local cache or downloaded into it.

        `CURRENT` may move on (and the version it named be pruned, after the grace
        period) between reading it and fetching that version: then it is read again.
        """
        key = self._key(stage_dir)
        for _ in range(_RESOLVE_ATTEMPTS):
            name = self.shared.current_name(key)
            if name is None:
                return None
            if (stage_dir / name).is_dir():
                return stage_dir / name
            record = self.shared.record(key, name)
            folder = None if record is None else self.shared.download(record, stage_dir)
            if folder is not None:
                return folder
        raise RuntimeError(
            f"{self.shared.location(key)}: CURRENT keeps naming versions that are gone"
        )

    def _prune(self, stage_dir: Path, keep: str) -> None:
        now = time.time()
        try:
            current = (stage_dir / CURRENT).read_text().strip()
        except FileNotFoundError:
            current = keep
        for entry in stage_dir.iterdir():
            if entry.name in (CURRENT, keep, current):
                continue
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            limit = _ABANDONED_SECONDS if entry.name.startswith(".") else _GRACE_SECONDS
            if age > limit:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


class SharedLocation:
    """Versions handed between machines through S3, laid out beside the local layout:

        <prefix>/<T>/<stage>/org=…/date=…/CURRENT                  the current version's name
        <prefix>/<T>/<stage>/org=…/date=…/<version>.json           its record: build id, files
        <prefix>/<T>/<stage>/org=…/date=…/<version>/<build>/<file> one build's files

    S3 has no rename, so visibility is ordered instead: a build's files go under a fresh
    build id (never overwritten, so concurrent builders of one version cannot mix their
    files), then the record naming them (one PUT, atomic), then `CURRENT` (one PUT). A
    reader that finds a record finds all its files, and checks each one's SHA-256.
    """

    def __init__(self, url: str, client: Any):
        self.bucket, self.prefix = self.parse(url)
        self.client = client

    @staticmethod
    def parse(url: str) -> tuple[str, str]:
        """(bucket, prefix) of `s3://bucket[/prefix]`; ValueError for anything else."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket:
            raise ValueError(f"a shared work location is s3://bucket[/prefix], not {url!r}")
        return bucket, prefix.strip("/")

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"

    def upload(self, key: str, name: str, folder: Path) -> None:
        """Upload the version `name` from `folder`, then name it current."""
        build = uuid.uuid4().hex
        files = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            files.append(
                {"path": relative, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            )
            self.client.upload_file(
                str(path), self.bucket, self._object(f"{key}/{name}/{build}/{relative}")
            )
        record = {"key": key, "version": name, "build": build, "files": files}
        self._put(f"{key}/{name}{_RECORD}", json.dumps(record).encode())
        self._put(f"{key}/{CURRENT}", name.encode())

    def current_name(self, key: str) -> str | None:
        body = self._get(f"{key}/{CURRENT}")
        return None if body is None else body.decode().strip()

    def record(self, key: str, name: str) -> dict[str, Any] | None:
        """A complete version's record, or None if there is none (yet, or any more)."""
        body = self._get(f"{key}/{name}{_RECORD}")
        return None if body is None else json.loads(body)

    def download(self, record: dict[str, Any], stage_dir: Path) -> Path | None:
        """The recorded version as `stage_dir/<version>`, fetched aside and renamed into place;
        None if its files were pruned after the record was read.

        Two processes fetching one version at once both succeed: the second rename finds
        the first one's folder, which holds the same files, and that folder is used.
        """
        from botocore.exceptions import ClientError

        target = stage_dir / record["version"]
        stage_dir.mkdir(parents=True, exist_ok=True)
        incoming = stage_dir / f".fetch-{uuid.uuid4().hex}"
        incoming.mkdir()
        prefix = f"{record['key']}/{record['version']}/{record['build']}"
        try:
            for entry in record["files"]:
                path = incoming / entry["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                source = self._object(f"{prefix}/{entry['path']}")
                try:
                    self.client.download_file(self.bucket, source, str(path))
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                        return None
                    raise
                if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
                    raise OSError(f"s3://{self.bucket}/{source} differs from its record")
            try:
                incoming.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return target

    def prune(self, key: str, keep: str) -> None:
        """Delete versions other than `keep` and the current one, as the local prune does.

        A version whose record is older than the grace period loses its record first (no
        reader finds it any more), then its files. Files no record names are an upload in
        progress or what a killed or superseded build left: they go after an hour.
        """
        folder = self._object(f"{key}/")
        now = time.time()
        ages: dict[str, float] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder
        )
        for page in pages:
            for item in page.get("Contents", []):
                ages[item["Key"][len(folder) :]] = now - item["LastModified"].timestamp()
        protected = {keep, self.current_name(key) or keep}
        records = {
            entry[: -len(_RECORD)]: age
            for entry, age in ages.items()
            if "/" not in entry and entry.endswith(_RECORD)
        }
        expired = {n for n, age in records.items() if n not in protected and age > _GRACE_SECONDS}
        live = set()
        for name in records.keys() - expired:
            record = self.record(key, name)
            if record is not None:
                live.add(f"{name}/{record['build']}")
        leftovers = []
        for entry, age in ages.items():
            name, _, rest = entry.partition("/")
            build = f"{name}/{rest.split('/', 1)[0]}"
            if rest and build not in live and (name in expired or age > _ABANDONED_SECONDS):
                leftovers.append(entry)
        self._delete([f"{name}{_RECORD}" for name in sorted(expired)], key)
        self._delete(leftovers, key)

    def _delete(self, entries: list[str], key: str) -> None:
        for start in range(0, len(entries), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": self._object(f"{key}/{e}")} for e in entries[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._object(key), Body=body)

    def _get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
