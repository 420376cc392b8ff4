"""Where exports are published: a local folder or an S3 prefix, behind one small interface.

A reader never sees a half-written file: the local store writes into a staging folder on
the same file system and renames into place; S3 makes an object visible only when its
PUT completes. Keys are '/'-separated paths relative to the store's root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


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
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        return staging / uuid.uuid4().hex

    def put_file(self, source: Path, key: str, sha256: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = self._staging()
        try:
            shutil.copyfile(source, staged)
            with open(staged, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = self._staging()
        try:
            with open(staged, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)

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
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and ".staging" not in p.relative_to(self.root).parts
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

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
        if key.rsplit("/", 1)[-1] == "manifest.json":
            yield key.rsplit("/", 1)[0] if "/" in key else ""
