"""Compress a rendered file to gzip or zip with byte-identical output for identical input."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

from export_pipelines.render import Compression

_CHUNK = 1 << 20
# zip's earliest representable time: no wall clock in the archive.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Level 6 is gzip's and zlib's default: near level 9's size at a fraction of its time.
LEVEL = 6


def compress(path: Path, compression: Compression) -> Path:
    """Return the final file: `path` itself, or `path.gz` / `path.zip` with `path` removed."""
    compression = Compression(compression)
    if compression is Compression.NONE:
        return path
    if compression is Compression.GZIP:
        target = path.with_name(path.name + ".gz")
        _gzip(path, target)
    else:
        target = path.with_name(path.name + ".zip")
        _zip(path, target)
    path.unlink()
    return target


def _gzip(source: Path, target: Path) -> None:
    # filename="" and mtime=0 keep the header free of the name and the clock.
    with (
        open(source, "rb") as src,
        open(target, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=LEVEL) as gz,
    ):
        shutil.copyfileobj(src, gz, _CHUNK)


def _zip(source: Path, target: Path) -> None:
    info = zipfile.ZipInfo(source.name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # fixed (Unix) so the bytes don't depend on the host OS
    info.external_attr = 0o644 << 16
    # A >2 GiB member needs ZIP64 headers, which must be chosen before writing it.
    large = source.stat().st_size >= zipfile.ZIP64_LIMIT
    with (
        open(source, "rb") as src,
        zipfile.ZipFile(target, "w", allowZip64=True) as archive,
        archive.open(info, "w", force_zip64=large) as member,
    ):
        shutil.copyfileobj(src, member, _CHUNK)
