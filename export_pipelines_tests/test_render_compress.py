"""compress(): gzip and zip wrappers with byte-identical output; the dispatcher uses them."""

from __future__ import annotations

import gzip
import os
import zipfile

import pytest

from export_pipelines.render import Compression, ExportFormat, RenderOptions, compress
from export_pipelines_tests.render_fixtures import render_file, sample_table

PAYLOAD = ("id,text\r\n" + "".join(f"{i},東京 row {i}\r\n" for i in range(5000))).encode()


def _write(path, mtime):
    path.write_bytes(PAYLOAD)
    os.utime(path, (mtime, mtime))
    return path


def test_none_returns_the_same_file(tmp_path):
    path = _write(tmp_path / "e.csv", 1_000_000)
    assert compress.compress(path, Compression.NONE) == path
    assert path.read_bytes() == PAYLOAD


def test_gzip(tmp_path):
    path = _write(tmp_path / "e.csv", 1_000_000)
    out = compress.compress(path, Compression.GZIP)
    assert out == tmp_path / "e.csv.gz"
    assert not path.exists()
    data = out.read_bytes()
    assert gzip.decompress(data) == PAYLOAD
    assert data[3] & 0x08 == 0  # no FNAME field
    assert data[4:8] == b"\0\0\0\0"  # mtime 0


def test_zip(tmp_path):
    path = _write(tmp_path / "e.csv", 1_000_000)
    out = compress.compress(path, Compression.ZIP)
    assert out == tmp_path / "e.csv.zip"
    assert not path.exists()
    with zipfile.ZipFile(out) as archive:
        (info,) = archive.infolist()
        assert info.filename == "e.csv"
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert archive.read(info) == PAYLOAD
        assert archive.testzip() is None


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZIP])
def test_same_bytes_whatever_the_file_time_and_folder(tmp_path, kind):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = compress.compress(_write(tmp_path / "a" / "e.csv", 1_000_000), kind)
    two = compress.compress(_write(tmp_path / "b" / "e.csv", 2_000_000), kind)
    assert one.read_bytes() == two.read_bytes()


def test_render_compresses_through_the_dispatcher(tmp_path):
    table = sample_table()
    path, rows = render_file(
        ExportFormat.CSV, table, tmp_path / "o.csv", RenderOptions(compression=Compression.GZIP)
    )
    assert path.name == "o.csv.gz" and rows == table.num_rows
    assert not (tmp_path / "o.csv").exists()
    assert gzip.decompress(path.read_bytes()).startswith(b"id,text,")
