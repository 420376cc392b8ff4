"""Parquet renderer: read back with pyarrow.parquet; schema, values, metadata, row groups."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from export_pipelines.render import ExportFormat, parquet
from export_pipelines_tests.render_fixtures import (
    context,
    render_file,
    renders_identically,
    sample_table,
)


def test_schema_and_values_round_trip(tmp_path):
    table = sample_table()
    path, rows = render_file(ExportFormat.PARQUET, table, tmp_path / "o.parquet")
    assert rows == table.num_rows
    back = pq.read_table(path)
    assert back.schema.remove_metadata() == table.schema.remove_metadata()
    assert back.to_pylist() == table.to_pylist()


def test_file_metadata_carries_the_export_identity(tmp_path):
    ctx = context(export_type="invoices", organization_id="org-7", period="2026-02")
    path, _ = render_file(ExportFormat.PARQUET, sample_table(), tmp_path / "o.parquet", ctx=ctx)
    metadata = pq.read_metadata(path).metadata
    assert metadata[b"export_type"] == b"invoices"
    assert metadata[b"organization_id"] == b"org-7"
    assert metadata[b"period"] == b"2026-02"
    assert metadata[b"source"] == b"tests"  # the input schema's own metadata is kept


def test_zstd_and_bounded_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 8)
    table = sample_table()
    path, _ = render_file(ExportFormat.PARQUET, table, tmp_path / "o.parquet")
    meta = pq.ParquetFile(path).metadata
    # 3-row input batches are gathered: fewer row groups than batches, none huge
    assert 1 < meta.num_row_groups < len(table.to_batches(max_chunksize=3))
    assert all(meta.row_group(i).num_rows <= 9 for i in range(meta.num_row_groups))
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_empty_stream_gives_a_readable_file(tmp_path):
    table = sample_table().slice(0, 0)
    path, rows = render_file(ExportFormat.PARQUET, table, tmp_path / "o.parquet")
    assert rows == 0
    back = pq.read_table(path)
    assert back.num_rows == 0
    assert back.schema.remove_metadata() == table.schema.remove_metadata()


def test_large_string_schema_preserved(tmp_path):
    table = pa.table({"s": pa.array(["a", None], pa.large_string())})
    path, _ = render_file(ExportFormat.PARQUET, table, tmp_path / "o.parquet")
    assert pq.read_table(path).schema.field("s").type == pa.large_string()


def test_deterministic(tmp_path):
    assert renders_identically(ExportFormat.PARQUET, sample_table(), tmp_path)


def test_a_column_of_distinct_values_leaves_its_dictionary_early(tmp_path):
    """Distinct floats fall back to plain encoding after a small dictionary (not after a
    whole row group's worth of hashing); a column of few values stays dictionary-encoded."""
    import numpy as np

    rng = np.random.default_rng(3)
    rows = 100_000
    table = pa.table(
        {
            "score": rng.normal(size=rows),
            "status": pa.array(rng.choice(["open", "closed", "stale"], rows)),
        }
    )
    path, _ = render_file(ExportFormat.PARQUET, table, tmp_path / "o.parquet")
    back = pq.ParquetFile(path)
    assert back.read().equals(table.replace_schema_metadata(back.schema_arrow.metadata))
    score, status = (back.metadata.row_group(0).column(i) for i in range(2))
    dictionary_bytes = score.data_page_offset - score.dictionary_page_offset
    assert dictionary_bytes <= parquet.DICTIONARY_PAGE_BYTES * 1.1  # Arrow's default: ~780 KB
    assert score.total_compressed_size < rows * 8 * 1.05  # plain doubles, not worse
    assert status.has_dictionary_page and status.total_compressed_size < 40_000
