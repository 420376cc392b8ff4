"""The stages' private working area, safe under concurrent runs of the same partition.

Each stage of each partition lives in `<root>/<T>/<stage>/org=…/date=…/`, as versions:
a version is built in a hidden folder, renamed to its own name (never onto another
folder), and then named current by replacing the one-line file `CURRENT` — an atomic
rename. Readers resolve `CURRENT` once and read that version, so a second run building
the same partition never changes the files under a first run's feet; old versions are
pruned after a grace period, and hidden leftovers of killed builds after an hour.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from export_pipelines.pipeline.naming import ExportPartition

T = TypeVar("T")
CURRENT = "CURRENT"
_GRACE_SECONDS = 15 * 60  # an older version may still be read by a run that resolved it
_ABANDONED_SECONDS = 60 * 60  # a hidden build folder this old belongs to a killed run


class WorkArea:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

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
            pointer = stage_dir / f".{CURRENT}.{uuid.uuid4().hex}"
            pointer.write_text(name)
            os.replace(pointer, stage_dir / CURRENT)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self._prune(stage_dir, keep=name)
        return result

    def current(self, stage_dir: Path) -> Path | None:
        """The current version's folder, or None if the stage was never built."""
        try:
            name = (stage_dir / CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        folder = stage_dir / name
        return folder if folder.is_dir() else None

    def version(self, stage_dir: Path, name: str) -> Path | None:
        folder = stage_dir / name
        return folder if folder.is_dir() else None

    @contextmanager
    def scratch(self, prefix: str = ".scratch-") -> Iterator[Path]:
        """A private folder for one deliverable's files, removed afterwards."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=prefix) as folder:
            yield Path(folder)

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
