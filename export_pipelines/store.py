"""Where exports are published: a local folder or an S3 prefix, behind one small interface.

A reader never sees a half-written file: the local store writes into a staging folder on
the same file system and renames into place; S3 makes an object visible only when its
PUT completes. Keys are '/'-separated paths relative to the store's root.

A reader never sees a half-published *folder* on a local store either: `replace_folder`
builds the new version in a hidden sibling and swaps the two directories in one
rename(2) (Linux `renameat2(RENAME_EXCHANGE)`). S3 has no multi-object operation, so
`Store.replace_folder` says it cannot, and `manifest.publish_folder` falls back to an
in-place order that keeps the manifest truthful instead (see there).

Hidden names: `.staging/` (single-file writes) and `.publish-*` (folder builds, the
old version being removed, their lock files) are never listed by `list_keys` and never
reported as manifest folders.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import stat
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # not POSIX: leftovers of dead publishes are then kept, never guessed at
    fcntl = None  # type: ignore[assignment]

_CHUNK = 1 << 20

STAGING = ".staging"
#: Prefix of every hidden name a folder publish creates beside the folder it replaces.
PUBLISH_PREFIX = ".publish-"
# `.publish-<folder name>.<32 hex>` is a build (or, after the swap, the old version);
# `….old` the old version parked by the two-rename fallback; `….lock` held while it runs.
_PUBLISH_ENTRY = re.compile(
    r"^\.publish-(?P<name>.+)\.(?P<token>[0-9a-f]{32})(?P<kind>\.old|\.lock)?$"
)


def is_hidden_part(part: str) -> bool:
    """Whether a path component is store-internal scratch (never a published key)."""
    return part == STAGING or part.startswith(PUBLISH_PREFIX)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_stream(handle: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class Store(ABC):
    """A published-files root."""

    url: str

    @abstractmethod
    def put_file(self, source: Path, key: str, sha256: str) -> None:
        """Publish `source` under `key`, visible only once complete."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def download(self, key: str, target: Path) -> None:
        """Copy `key` to a local file."""

    @abstractmethod
    def checksum(self, key: str) -> tuple[str, int] | None:
        """Recompute (sha256, size) from the stored bytes; None if the key is missing."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursively), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def location(self, key: str) -> str:
        """Where a person or program finds `key`: a path or an s3:// URL."""

    def download_url(self, key: str, expires_in_seconds: int) -> str:
        """A link to hand a user; local stores hand the file's path."""
        return self.location(key)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def replace_folder(self, folder: str, build: Callable[[str], None]) -> bool:
        """Replace everything directly in `folder` with a new version, atomically.

        `build(staging)` writes the complete new version under the key prefix `staging`
        with this store's `put_file`/`put_bytes`; then the store makes it `folder` in
        one step: a reader (or `verify`) sees the old version or the new one, never a
        mix, and an error or a kill at any point leaves the old version in place.
        Sub-folders of `folder` are kept. Returns False, having done nothing, when the
        store cannot do this for `folder` (S3; a local store's root).
        """
        return False


class LocalStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"key {key!r} escapes the store root")
        return path

    def _staging(self) -> Path:
        staging = self.root / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        return staging / uuid.uuid4().hex

    def _write(self, key: str, fill: Callable[[Path], None]) -> None:
        """Write `key` durably through `fill(path)`; visible only once complete."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if any(part.startswith(PUBLISH_PREFIX) for part in key.split("/")):
            # Inside a hidden folder build nothing is visible until the whole folder is
            # swapped in, and a partial file there goes with the build's clean-up.
            staged = target
        else:
            staged = self._staging()
        try:
            fill(staged)
            with open(staged, "rb+") as handle:
                os.fsync(handle.fileno())
            if staged != target:
                os.replace(staged, target)
        finally:
            if staged != target:
                staged.unlink(missing_ok=True)

    def put_file(self, source: Path, key: str, sha256: str) -> None:
        self._write(key, lambda staged: shutil.copyfile(source, staged))

    def put_bytes(self, data: bytes, key: str) -> None:
        self._write(key, lambda staged: staged.write_bytes(data))

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def download(self, key: str, target: Path) -> None:
        shutil.copyfile(self._path(key), target)

    def checksum(self, key: str) -> tuple[str, int] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        with open(path, "rb") as handle:
            return sha256_stream(handle)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if any(map(is_hidden_part, base.relative_to(self.root).parts)):
            return []
        keys = []
        # os.walk, unlike Path.rglob, skips a directory that vanishes while it walks (a
        # folder build or an old version being removed) instead of raising.
        for directory, subdirectories, names in os.walk(base):
            subdirectories[:] = [d for d in subdirectories if not is_hidden_part(d)]
            for name in names:
                path = Path(directory, name)
                if not is_hidden_part(name) and path.is_file():
                    keys.append(str(path.relative_to(self.root)))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        removed = super().delete_prefix(prefix)
        if prefix.strip("/"):
            target = self._path(prefix.strip("/"))
            if target != self.root:
                _remove_abandoned_builds(target)
        return removed

    def replace_folder(self, folder: str, build: Callable[[str], None]) -> bool:
        """Build the new version in a hidden sibling directory, then swap the two.

        The sibling `.publish-<name>.<id>` sits in the same parent directory (same file
        system); once `build` has filled it, the subfolders of the live folder are
        hard-linked in, it is fsynced, and `renameat2(RENAME_EXCHANGE)` swaps it with the
        live folder in one step (a plain rename when there is no live folder yet). The
        old version, now under the hidden name, is deleted. An error anywhere before the
        swap deletes the build and leaves the live folder untouched; a kill leaves a
        hidden, unlisted leftover that the next publish of the folder removes (a lock
        held for the publish's lifetime tells dead leftovers from running publishes).

        Where RENAME_EXCHANGE is unavailable (not Linux, or a file system without it)
        the swap is two renames: the live folder is parked under a hidden name, then the
        build renamed in. The folder is never a mix there either, but for the instant
        between the renames (or after a kill in it, until the next publish) it is absent.

        Sub-folders are carried over as they were when the build finished: a publish of
        a sub-folder that completes in the instant between that and the swap is undone.
        """
        folder = folder.strip("/")
        live = self._path(folder) if folder else self.root
        if live == self.root:
            return False
        parent = live.parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_builds(live)
        lock_fd, token = _take_build_lock(parent, live.name)
        build_dir = parent / token
        parked = parent / f"{token}.old"
        try:
            build_dir.mkdir()
            build(str(build_dir.relative_to(self.root)))
            _carry_over_subfolders(live, build_dir)
            _fsync_directory(build_dir)
            _swap_in(build_dir, live, parked)
            _fsync_directory(parent)
        finally:
            # After the swap these hold the old version; before it, the unfinished build.
            _remove_tree(build_dir)
            _remove_tree(parked)
            _release_build_lock(lock_fd, parent / f"{token}.lock")
        return True

    def location(self, key: str) -> str:
        return str(self._path(key))


class S3Store(Store):
    """An `s3://bucket/prefix` store; `client` is a boto3 S3 client (from dagster-aws)."""

    def __init__(self, url: str, client: Any):
        without_scheme = url[len("s3://") :]
        self.bucket, _, prefix = without_scheme.partition("/")
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = url.rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, source: Path, key: str, sha256: str) -> None:
        # A single PUT (or a completed multipart upload) is atomic: the object appears
        # whole or not at all. The SHA-256 travels with it for independent checks.
        self.client.upload_file(
            str(source), self.bucket, self._key(key), ExtraArgs={"Metadata": {"sha256": sha256}}
        )

    def put_bytes(self, data: bytes, key: str) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, Metadata={"sha256": digest}
        )

    def read_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def download(self, key: str, target: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(target))

    def checksum(self, key: str) -> tuple[str, int] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return sha256_stream(body)

    def list_keys(self, prefix: str) -> list[str]:
        # A trailing '/' keeps "requests/req-7" from matching "requests/req-70/…",
        # so a prefix means a folder, as it does on a local disk.
        folder = prefix.strip("/")
        full = self._key(f"{folder}/") if folder else self._key("")
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                key = item["Key"]
                keys.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def download_url(self, key: str, expires_in_seconds: int) -> str:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(key)},
            # SigV4 links live at most 7 days: longer retention gets a fresh link on request.
            ExpiresIn=min(max(1, int(expires_in_seconds)), 7 * 24 * 3600),
        )


def open_store(url: str, s3_client: Any = None) -> Store:
    if url.startswith("s3://"):
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        return S3Store(url, s3_client)
    return LocalStore(url)


def iter_manifest_folders(store: Store, prefix: str = "") -> Iterator[str]:
    for key in store.list_keys(prefix):
        if any(map(is_hidden_part, key.split("/"))):
            continue  # a folder build or an old version on its way out: not published
        if key.rsplit("/", 1)[-1] == "manifest.json":
            yield key.rsplit("/", 1)[0] if "/" in key else ""


# --- swapping a local folder --------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class _ExchangeUnsupported(Exception):
    pass


def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.?
    except (AttributeError, OSError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _exchange(first: Path, second: Path) -> None:
    """Swap two directory entries atomically; OSError as rename(2) raises it."""
    if _renameat2 is None:
        raise _ExchangeUnsupported("renameat2 is not available")
    result = _renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise _ExchangeUnsupported(os.strerror(code))
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def _swap_in(build_dir: Path, live: Path, parked: Path) -> None:
    """Make `build_dir` the `live` folder; afterwards `build_dir` or `parked` holds the old one."""
    for _ in range(20):  # only a concurrent publish creating or removing `live` loops
        try:
            _exchange(build_dir, live)
            return
        except FileNotFoundError:
            pass  # no live folder yet: a plain rename below
        except _ExchangeUnsupported:
            _swap_by_two_renames(build_dir, live, parked)
            return
        try:
            os.rename(build_dir, live)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EBUSY, f"{live} keeps changing under a concurrent publish")


def _swap_by_two_renames(build_dir: Path, live: Path, parked: Path) -> None:
    for _ in range(20):
        try:
            os.rename(live, parked)
        except FileNotFoundError:
            pass
        try:
            os.rename(build_dir, live)
            return
        except OSError as error:
            if parked.exists() and not live.exists():
                os.rename(parked, live)  # put the old version back
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _remove_tree(parked)
    raise OSError(errno.EBUSY, f"{live} keeps changing under a concurrent publish")


def _carry_over_subfolders(live: Path, build_dir: Path) -> None:
    """Hard-link the live folder's sub-folders into the build: publishing keeps them."""
    if not live.is_dir():
        return
    for entry in live.iterdir():
        if entry.is_dir() and not entry.is_symlink() and not is_hidden_part(entry.name):
            target = build_dir / entry.name
            if not target.exists():
                shutil.copytree(
                    entry,
                    target,
                    symlinks=True,
                    copy_function=_link_or_copy,
                    ignore=lambda _, names: [n for n in names if is_hidden_part(n)],
                )


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not openable as a directory here (Windows): nothing to flush
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    """Delete a directory tree, read-only parts included; a missing one is fine."""

    def make_writable_and_retry(function: Any, name: str, _: Any) -> None:
        try:
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
            function(name)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=make_writable_and_retry)
        else:
            shutil.rmtree(path, onerror=make_writable_and_retry)


def _take_build_lock(parent: Path, name: str) -> tuple[int | None, str]:
    """A fresh build token, with its lock file created and held (flock) by this process."""
    while True:
        token = f"{PUBLISH_PREFIX}{name}.{uuid.uuid4().hex}"
        lock = parent / f"{token}.lock"
        if fcntl is None:
            return None, token
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A cleaner may have unlinked the path between open and flock: then our lock
            # guards nothing, so start again (the standard lock-file handshake).
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd, token
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release_build_lock(fd: int | None, lock: Path) -> None:
    if fd is None:
        return
    try:
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _remove_abandoned_builds(live: Path) -> None:
    """Delete what killed or failed publishes of `live` left beside it; never a running one's."""
    if fcntl is None or not live.parent.is_dir():
        return
    tokens = set()
    for entry in live.parent.iterdir():
        match = _PUBLISH_ENTRY.match(entry.name)
        if match and match["name"] == live.name:
            tokens.add(f"{PUBLISH_PREFIX}{live.name}.{match['token']}")
    for token in sorted(tokens):
        lock = live.parent / f"{token}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # its publish removes the lock last: it has ended
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a publish is running with it
            _remove_tree(live.parent / token)
            _remove_tree(live.parent / f"{token}.old")
            if fd is not None:
                try:
                    if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                        lock.unlink()
                except FileNotFoundError:
                    pass
        finally:
            if fd is not None:
                os.close(fd)
