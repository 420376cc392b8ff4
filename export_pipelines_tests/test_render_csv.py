"""CSV renderer: read back with the csv module; quoting, nulls, BOM, delimiter, formula guard."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import string
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_pipelines.render import ExportFormat, RenderOptions
from export_pipelines.render import csv as render_csv
from export_pipelines_tests.render_fixtures import (
    TEXTS,
    context,
    guarded,
    iso_utc,
    render_file,
    renders_identically,
    sample_table,
)


def _rows(data: bytes, delimiter: str = ",") -> list[list[str]]:
    text = data.decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))


def _expected_cell(value, guard: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return guarded(value) if guard else value
    if hasattr(value, "tzinfo") and hasattr(value, "hour"):
        return iso_utc(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@pytest.mark.parametrize("guard", [True, False])
def test_values_round_trip(tmp_path, guard):
    table = sample_table()
    path, rows = render_file(
        ExportFormat.CSV, table, tmp_path / "out.csv", RenderOptions(formula_guard=guard)
    )
    assert rows == table.num_rows
    parsed = _rows(path.read_bytes())
    assert parsed[0] == table.column_names
    assert len(parsed) == table.num_rows + 1
    for line, record in zip(parsed[1:], table.to_pylist()):
        for name, cell in zip(table.column_names, line):
            value = record[name]
            if isinstance(value, float):
                assert float(cell) == value, (name, cell)  # shortest form, exact round trip
            else:
                assert cell == _expected_cell(value, guard), (name, value, cell)


def test_formula_guard_only_touches_risky_text(tmp_path):
    path, _ = render_file(ExportFormat.CSV, sample_table(), tmp_path / "out.csv")
    parsed = _rows(path.read_bytes())
    texts = [line[1] for line in parsed[1:]]
    for original, written in zip(TEXTS, texts):
        if original and original[0] in "=+-@\t\r":
            assert written == "'" + original
        else:
            assert written == (original or "")
    # numbers are never prefixed, even negative ones
    assert any(line[0].startswith("-") for line in parsed[1:])


def test_quotes_only_when_needed_and_keeps_empty_distinct_from_null(tmp_path):
    table = pa.table({"t": ["plain", 'q"uote', "com,ma", "new\nline", "", None]})
    path, _ = render_file(ExportFormat.CSV, table, tmp_path / "out.csv")
    assert path.read_bytes() == (
        b't\r\nplain\r\n"q""uote"\r\n"com,ma"\r\n"new\nline"\r\n""\r\n\r\n'
    )


def test_delimiter_option(tmp_path):
    table = pa.table({"a": ["x;y", "x,y", "tab\there"], "b": [1, 2, 3]})
    for delimiter in (";", "\t", "|"):
        path, _ = render_file(
            ExportFormat.CSV,
            table,
            tmp_path / f"out{ord(delimiter)}.csv",
            RenderOptions(csv_delimiter=delimiter),
        )
        parsed = _rows(path.read_bytes(), delimiter)
        assert parsed == [["a", "b"], ["x;y", "1"], ["x,y", "2"], ["tab\there", "3"]]
        lines = path.read_bytes().decode().split("\r\n")
        for line, value in zip(lines[1:], table.column("a").to_pylist()):
            quoted = delimiter in value
            assert line.startswith('"') is quoted, (delimiter, line)


def test_invalid_delimiter_is_refused(tmp_path):
    with pytest.raises(ValueError):
        render_file(
            ExportFormat.CSV, sample_table(), tmp_path / "o.csv", RenderOptions(csv_delimiter='"')
        )


@pytest.mark.parametrize("bom", [True, False])
def test_bom(tmp_path, bom):
    path, _ = render_file(
        ExportFormat.CSV, sample_table(), tmp_path / "o.csv", RenderOptions(csv_bom=bom)
    )
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") is bom
    assert _rows(data.removeprefix(b"\xef\xbb\xbf"))[0][0] == "id"


def test_timestamps_and_unicode_are_written_as_is(tmp_path):
    path, _ = render_file(ExportFormat.CSV, sample_table(), tmp_path / "o.csv")
    raw = path.read_bytes().decode("utf-8")
    assert "2026-03-01T10:00:00.000000Z" in raw  # zero fraction kept: fixed width
    for text in ("東京 漢字", "Ωμέγα αβγ", "rocket 🚀 party 🎉"):
        assert text in raw


def test_empty_stream_writes_the_header(tmp_path):
    table = sample_table().slice(0, 0)
    path, rows = render_file(ExportFormat.CSV, table, tmp_path / "o.csv")
    assert rows == 0
    assert _rows(path.read_bytes()) == [table.column_names]


def test_deterministic(tmp_path):
    assert renders_identically(ExportFormat.CSV, sample_table(), tmp_path)


# Every ASCII letter and digit (a backslash before them is a regex escape or an error),
# the usual separators, regex syntax, a space, non-ASCII ones (2, 3 and 4 UTF-8 bytes).
DELIMITERS = [
    *string.ascii_letters,
    *string.digits,
    ",",
    "\t",
    " ",
    ";",
    "|",
    "\\",
    "'",
    "-",
    "+",
    ".",
    ":",
    "=",
    "]",
    "^",
    "\x00",
    "\x1f",
    "§",
    "€",
    "\u00a0",
    "🎉",
]


def _delimiter_table(delimiter: str) -> pa.Table:
    """sample_table plus values (and a column name) holding the delimiter in every way."""
    d = delimiter
    base = sample_table()
    awkward = [
        f"a{d}b",
        d,
        d * 3,
        f'"{d}"',
        f"{d}lead",
        f"trail{d}",
        f"={d}SUM(A1)",
        f"-{d}1",
        f"line{d}\r\nbreak",
        "",
        None,
        "naïve € § 🎉 東京",
        'only "quotes"',
        "cr\ronly",
        "lf\nonly",
        "  spaced  ",
        "\u00a0nbsp\u00a0",
        "1e+20",
        "true",
        "2026-03-01T10:00:00.000000Z",
    ]
    assert len(awkward) == base.num_rows
    table = base.append_column(f"col {d} name", pa.array(awkward, pa.string()))
    return table.append_column(f'q"{d}\nname', pa.array(awkward[::-1], pa.large_string()))


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("delimiter", DELIMITERS, ids=lambda d: f"U+{ord(d):04X}")
def test_any_delimiter_round_trips(tmp_path, delimiter, guard):
    table = _delimiter_table(delimiter)
    path, rows = render_file(
        ExportFormat.CSV,
        table,
        tmp_path / "out.csv",
        RenderOptions(csv_delimiter=delimiter, formula_guard=guard),
    )
    assert rows == table.num_rows
    data = path.read_bytes()
    parsed = _rows(data, delimiter)
    assert parsed[0] == table.column_names
    assert len(parsed) == table.num_rows + 1
    for line, record in zip(parsed[1:], table.to_pylist()):
        assert len(line) == table.num_columns, (delimiter, line)
        for name, cell in zip(table.column_names, line):
            value = record[name]
            if isinstance(value, float):
                assert float(cell) == value, (delimiter, name, cell)
            else:
                assert cell == _expected_cell(value, guard), (delimiter, name, value, cell)
    # the last two columns: a null stays a bare empty field, an empty string is `""`
    # (rows 9 and 10; values may hold CR LF, so the text is searched, not split)
    text = data.decode("utf-8")
    assert f'{delimiter}""{delimiter}\r\n' in text  # "" then null
    assert f'{delimiter}{delimiter}""\r\n' in text  # null then ""


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        ("t", 'atb1\r\n"t"t1\r\n"at b"t10\r\nxt-1\r\n""t\r\nt2\r\n"with ""q"""t0\r\n'),
        ("€", 'a€b1\r\nt€1\r\n"a€ b"€10\r\nx€-1\r\n""€\r\n€2\r\n"with ""q"""€0\r\n'),
        ("1", 'a1"b1"\r\nt1"1"\r\n"a1 b"1"10"\r\nx1"-1"\r\n""1\r\n12\r\n"with ""q"""10\r\n'),
    ],
)
def test_delimiter_bytes_exactly(tmp_path, delimiter, expected):
    """Quoted only when needed, header included; numbers too when they hold the delimiter."""
    texts = ["t", f"a{delimiter} b", "x", "", None, 'with "q"']
    table = pa.table({"a": texts, "b1": [1, 10, -1, None, 2, 0]})
    path, _ = render_file(
        ExportFormat.CSV, table, tmp_path / "o.csv", RenderOptions(csv_delimiter=delimiter)
    )
    assert path.read_bytes().decode("utf-8") == expected


@pytest.mark.parametrize("delimiter", DELIMITERS, ids=lambda d: f"U+{ord(d):04X}")
def test_header_is_quoted_like_the_data(tmp_path, delimiter):
    names = ["plain", f"has{delimiter}it", 'say "hi"', "two\nlines", ""]
    table = pa.table({name: pa.array([1], pa.int64()) for name in names})
    path, _ = render_file(
        ExportFormat.CSV, table, tmp_path / "o.csv", RenderOptions(csv_delimiter=delimiter)
    )
    assert _rows(path.read_bytes(), delimiter)[0] == names


@pytest.mark.parametrize("delimiter", ['"', "\r", "\n", "", ",;", "\ud800", None, 44])
def test_refused_delimiters_raise_a_plain_value_error(tmp_path, delimiter):
    with pytest.raises(ValueError, match=r"^The CSV delimiter must be a single character") as err:
        render_file(
            ExportFormat.CSV,
            sample_table(),
            tmp_path / "o.csv",
            RenderOptions(csv_delimiter=delimiter),
        )
    assert str(err.value).endswith(".")
    assert "\n" not in str(err.value)


# --- the bytes before the performance work are the spec --------------------------------------
#
# `reference_csv` is the renderer as it was before chunks were formatted in parallel and
# quoting became per-row parts (one Arrow pass per step over every row), frozen here: the
# renderer must write exactly its bytes, whatever the delimiter, guard, types, nulls,
# slicing and batch sizes.


def _ref_to_text(array: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(array.type):
        naive = array.cast(pa.timestamp("us", tz=array.type.tz)).cast(pa.timestamp("us"))
        text = pc.replace_substring(naive.cast(pa.string()), " ", "T", max_replacements=1)
        return pc.binary_join_element_wise(text, "Z", "")
    return array.cast(pa.string())


def _ref_quote(array: pa.Array, delimiter: str) -> pa.Array:
    chars = sorted({delimiter, '"', "\r", "\n"})
    special = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"
    needs = pc.or_(pc.match_substring_regex(array, special), pc.equal(pc.binary_length(array), 0))
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(array, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, array)


def _ref_guard(array: pa.Array) -> pa.Array:
    risky = pc.match_substring_regex(array, r"^[=+\-@\t\r]")
    return pc.if_else(risky, pc.binary_join_element_wise("'", array, ""), array)


def reference_csv(
    table: pa.Table, delimiter: str = ",", guard: bool = True, bom: bool = False
) -> bytes:
    """The CSV renderer's bytes before the performance work, computed the old way."""
    numbers_may_hold_it = (delimiter.isascii() and delimiter.isalnum()) or delimiter in "+-.: "
    header = _ref_quote(pa.array(table.column_names, pa.string()), delimiter).to_pylist()
    parts = [b"\xef\xbb\xbf" if bom else b"", (delimiter.join(header) + "\r\n").encode()]
    for batch in table.to_batches(max_chunksize=16_384):
        columns = []
        for array in batch.columns:
            text = _ref_to_text(array)
            if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
                text = _ref_quote(_ref_guard(text) if guard else text, delimiter)
            elif numbers_may_hold_it:
                text = _ref_quote(text, delimiter)
            columns.append(text)
        if columns:
            lines = pc.binary_join_element_wise(
                *columns, delimiter, null_handling="replace", null_replacement=""
            ).to_pylist()
        else:
            lines = [""] * batch.num_rows
        parts.append("".join(line + "\r\n" for line in lines).encode("utf-8"))
    return b"".join(parts)


def _render_bytes(
    tmp_path, table: pa.Table, options: RenderOptions, chunk: int = 3, name: str = "o.csv"
) -> bytes:
    stream = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=chunk))
    path = tmp_path / name
    rows = render_csv.write_csv(stream, path, options, context())
    assert rows == table.num_rows
    return path.read_bytes()


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("delimiter", DELIMITERS, ids=lambda d: f"U+{ord(d):04X}")
def test_bytes_match_the_reference(tmp_path, delimiter, guard):
    table = _delimiter_table(delimiter)
    options = RenderOptions(csv_delimiter=delimiter, formula_guard=guard, csv_bom=guard)
    expected = reference_csv(table, delimiter, guard, bom=guard)
    assert _render_bytes(tmp_path, table, options) == expected
    # one chunk of everything, and chunks of one row, write the same
    assert _render_bytes(tmp_path, table, options, chunk=1000, name="big.csv") == expected
    with mock.patch.object(render_csv, "CSV_CHUNK_ROWS", 1):
        assert _render_bytes(tmp_path, table, options, chunk=7, name="one.csv") == expected


# Characters that matter to CSV, the guard or UTF-8: every delimiter class, quotes, line
# breaks, formula starters, multi-byte text, NUL.
AWKWARD_CHARS = list("aZ1 ,;\t\"\r\n=+-@'|\\.:€é🎉\x00\x1f\u00a0e")
UTC_MOMENTS = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999)
).map(lambda moment: moment.replace(tzinfo=dt.timezone.utc))
COLUMNS = {
    "text": (pa.string(), st.text(st.sampled_from(AWKWARD_CHARS), max_size=6)),
    "large": (pa.large_string(), st.text(st.sampled_from(AWKWARD_CHARS), max_size=6)),
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "small": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "float": (
        pa.float64(),
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1e20, 1e-7, 0.1 + 0.2, 5e-324, 2.0, 1e16]),
        ),
    ),
    "bool": (pa.bool_(), st.booleans()),
    "stamp": (pa.timestamp("us", tz="UTC"), UTC_MOMENTS),
    "naive": (pa.timestamp("us"), UTC_MOMENTS.map(lambda m: m.replace(tzinfo=None))),
    "day": (pa.date32(), st.dates()),
}


@st.composite
def awkward_tables(draw) -> pa.Table:
    """Tables of 0-40 rows over a random choice and order of every contract type (and
    int32, naive timestamps, large strings), with nulls anywhere."""
    rows = draw(st.integers(0, 40))
    names = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=7))
    arrays, fields = [], []
    for i, name in enumerate(names):
        type_, values = COLUMNS[name]
        cells = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        arrays.append(pa.array(cells, type_))
        fields.append(pa.field(f"{name}{i}" if i % 3 else name, type_))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


@settings(max_examples=120, deadline=None, database=None)
@given(
    table=awkward_tables(),
    delimiter=st.sampled_from(DELIMITERS),
    guard=st.booleans(),
    batch_rows=st.integers(1, 12),
    chunk_rows=st.sampled_from([1, 2, 5, 16, 32_768]),
)
def test_random_tables_match_the_reference(
    tmp_path_factory, table, delimiter, guard, batch_rows, chunk_rows
):
    """Any batch sizes (slices with offsets, merges of small batches) and chunk sizes."""
    folder = tmp_path_factory.mktemp("csv")
    options = RenderOptions(csv_delimiter=delimiter, formula_guard=guard)
    with mock.patch.object(render_csv, "CSV_CHUNK_ROWS", chunk_rows):
        written = _render_bytes(folder, table, options, chunk=batch_rows)
    assert written == reference_csv(table, delimiter, guard)


def test_unusual_buffers_match_the_reference(tmp_path):
    """Nulls over non-empty data, sliced arrays, no data buffer at all, a huge cell."""
    # "=a" | null over "b,c" | '"q"' | null over "=x": null slots that hold bytes
    data = pa.py_buffer(b'=ab,c"q"=x')
    offsets = pa.py_buffer(np.array([0, 2, 5, 8, 10], np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0, 1, 0], bitorder="little").tobytes())
    holey = pa.StringArray.from_buffers(4, offsets, data, validity, 2)
    assert holey.to_pylist() == ["=a", None, '"q"', None]
    table = pa.table(
        {
            "holey": holey,
            "sliced": pa.array(["x", ",y", "-z", "", None, "w"]).slice(1, 4),
            "empty": pa.array(["", "", "", ""]),
            "nulls": pa.array([None] * 4, pa.string()),
            "big": pa.array(['"' * 100_000 + "=", "a" * 300_000, None, "-"]),
        }
    )
    for delimiter, guard in ((",", True), (";", False), ("'", True), ("a", True)):
        options = RenderOptions(csv_delimiter=delimiter, formula_guard=guard)
        expected = reference_csv(table, delimiter, guard)
        for chunk in (1, 4):
            assert _render_bytes(tmp_path, table, options, chunk=chunk) == expected


def test_no_columns(tmp_path):
    table = pa.table({"a": [1, 2, 3]}).drop_columns(["a"])
    stream = pa.RecordBatchReader.from_batches(
        table.schema, [pa.RecordBatch.from_pydict({}, schema=table.schema)]
    )
    rows = render_csv.write_csv(stream, tmp_path / "o.csv", RenderOptions(), context())
    assert rows == 0 and (tmp_path / "o.csv").read_bytes() == b"\r\n"


# --- chunking and bounded memory -------------------------------------------------------------


def _batch(start: int, rows: int, width: int = 1) -> pa.RecordBatch:
    return pa.record_batch(
        {"n": pa.array(range(start, start + rows), pa.int64()), "t": pa.array(["x" * width] * rows)}
    )


def test_chunks_merge_small_batches_and_slice_large_ones():
    batches = [_batch(0, 3), _batch(3, 0), _batch(3, 4), _batch(7, 25), _batch(32, 2)]
    got = list(render_csv.chunks(batches, rows=10, max_bytes=1 << 20))
    sizes = [c.num_rows for c in got]
    assert all(0 < size <= 10 for size in sizes)
    assert all(size >= 5 for size in sizes[:-1])  # merged to half a chunk at least
    merged = pa.Table.from_batches(got).column("n").to_pylist()
    assert merged == list(range(34))  # every row once, in order


def test_chunks_are_bounded_in_bytes():
    got = list(render_csv.chunks([_batch(0, 1000, width=1000)], rows=1000, max_bytes=100_000))
    assert sum(c.num_rows for c in got) == 1000
    assert max(c.nbytes for c in got) <= 100_000
    merged = list(render_csv.chunks([_batch(i, 1, 20_000) for i in range(50)], 1000, 100_000))
    assert [c.num_rows for c in merged][:-1] == [3] * (len(merged) - 1)  # ~half of 100 kB
    assert pa.Table.from_batches(merged).column("n").to_pylist() == list(range(50))


def test_the_stream_is_read_as_it_is_written():
    """Bounded memory: the renderer never runs ahead of the file by more than a few chunks."""
    pulled = []

    def batches():
        for i in range(40):
            pulled.append(i)
            yield _batch(i * 1000, 1000)

    stream = pa.RecordBatchReader.from_batches(_batch(0, 0).schema, batches())
    with mock.patch.object(render_csv, "CSV_CHUNK_ROWS", 1000):
        text = render_csv.csv_chunks(stream, ",", True)
        first, rows = next(text)
        assert rows == 1000 and bytes(first).startswith(b"0,x\r\n1,x\r\n")
        assert len(pulled) <= render_csv.worker_count() * render_csv.IN_FLIGHT_PER_WORKER + 2
        assert sum(rows for _, rows in text) == 39_000


# --- timestamps: the fixed-width fast path writes the general path's text ---------------------

_MICROS_PER_YEAR = 31_556_952 * 10**6  # a mean Gregorian year


@pytest.mark.parametrize(
    "micros",
    [
        [0, 1, -1, 1_700_000_000_123_456, None, 253_402_300_799_999_999],  # up to 9999-12-31
        [None, None],
        [-62_135_596_800_000_000, None, 5],  # 0001-01-01
        [253_402_300_800_000_000, 0],  # year 10000: 27 bytes, the general path
        [-62_135_596_800_000_001, 0],  # year 0 (Arrow prints it), then a negative year
        [-70 * _MICROS_PER_YEAR, 3],  # 1900
        [-2100 * _MICROS_PER_YEAR, None],  # a negative year
    ],
)
@pytest.mark.parametrize("tz", [None, "UTC", "America/St_Johns", "+05:45"])
def test_timestamp_text_matches_the_general_path(micros, tz):
    array = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz=tz))
    for part in (array, array.slice(1)):
        assert render_csv.iso_timestamps(part).to_pylist() == _ref_to_text(part).to_pylist()


def test_timestamp_fast_path_is_taken_for_ordinary_years():
    text = pa.array([0, None, 1_700_000_000_123_456], pa.timestamp("us")).cast(pa.string())
    fixed = render_csv._fixed_width_iso(text)
    assert fixed is not None
    assert fixed.to_pylist() == ["1970-01-01T00:00:00.000000Z", None, "2023-11-14T22:13:20.123456Z"]
    year_10000 = pa.array([253_402_300_800_000_000], pa.timestamp("us")).cast(pa.string())
    assert render_csv._fixed_width_iso(year_10000) is None


def _float_samples(seed: int) -> np.ndarray:
    """Doubles of every kind: random bit patterns, decimals of 0-11 places, normal values at
    every scale, integers, and the neighbours of the bounds where notations change."""
    rng = np.random.default_rng(seed)
    n = 300_000
    bounds = [1e-7, 1e-6, 1e-5, 1e-4, 1e9, 1e10, 1e15, 1e16]
    edges = [
        np.nextafter(np.full(200, sign * b), np.full(200, sign * t))
        for b in bounds
        for sign in (1, -1)
        for t in (0.0, np.inf)
    ]
    return np.concatenate(
        [
            rng.integers(0, 2**64, size=n, dtype=np.uint64).view(np.float64),
            np.round(rng.uniform(-1e6, 1e6, n), rng.integers(0, 12)),
            rng.normal(size=n) * 10.0 ** rng.integers(-9, 18, n),
            rng.integers(-(10**12), 10**12, n).astype(np.float64),
            *edges,
            [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, 1e10, 1e-5],
        ]
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_float_text_is_arrows_text(seed):
    """The fast float64 path (polars' digits where its notation is Arrow's) prints exactly
    what Arrow's cast prints, nulls and slices included."""
    values = _float_samples(seed)
    rng = np.random.default_rng(seed)
    array = pa.array(values, mask=rng.random(len(values)) < 0.03)
    for part in (array, array.slice(12_345, 100_000), pa.array([None, None], pa.float64())):
        fast, arrow = render_csv.float_text(part), part.cast(pa.string())
        differ = pc.invert(pc.equal(fast, arrow).fill_null(True))
        assert fast.type == pa.string() and fast.null_count == arrow.null_count
        assert not pc.any(differ).as_py(), pc.filter(arrow, differ)[:5]


def test_float_text_takes_the_fast_path_for_ordinary_values(monkeypatch):
    """Ordinary fractions come from polars; only integers and extremes get Arrow's text."""
    import polars as pl

    seen, replaced = [], []
    from_arrow, replace = pl.from_arrow, pc.replace_with_mask
    monkeypatch.setattr(pl, "from_arrow", lambda a, *x, **k: seen.append(len(a)) or from_arrow(a))
    monkeypatch.setattr(
        render_csv.pc,
        "replace_with_mask",
        lambda text, mask, new: replaced.append(new.to_pylist()) or replace(text, mask, new),
    )
    text = render_csv.float_text(pa.array([0.25, 12.5, -3.75, 42.0, 1e20, None]))
    assert text.to_pylist() == ["0.25", "12.5", "-3.75", "42", "1e+20", None]
    assert seen == [6] and replaced == [["42", "1e+20"]]


# --- read back: hostile tables parse to the Arrow input's values -------------------------------


def _expected_text(value, guard: bool) -> str:
    """A cell's text from the Arrow value alone (naive timestamps are UTC already)."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.isoformat(timespec="microseconds") + "Z"
    return _expected_cell(value, guard)


@settings(max_examples=60, deadline=None, database=None)
@given(table=awkward_tables(), delimiter=st.sampled_from(DELIMITERS), guard=st.booleans())
def test_random_tables_read_back_with_the_csv_module(tmp_path_factory, table, delimiter, guard):
    """Independent of the reference: every cell parses back to its value (quotes, line
    breaks, delimiters, formula starters, NUL, non-ASCII, NaN and infinities, nulls)."""
    options = RenderOptions(csv_delimiter=delimiter, formula_guard=guard)
    data = _render_bytes(tmp_path_factory.mktemp("csv"), table, options)
    parsed = _rows(data, delimiter)
    assert parsed[0] == table.column_names
    assert len(parsed) == table.num_rows + 1
    columns = [column.to_pylist() for column in table.columns]
    for line, values in zip(parsed[1:], zip(*columns)):
        if line == [] and table.num_columns == 1:  # the csv module's reading of a bare CRLF
            line = [""]
        assert len(line) == table.num_columns, (delimiter, line)
        for cell, value in zip(line, values):
            if isinstance(value, float) and math.isnan(value):
                assert cell == "nan"
            elif isinstance(value, float):
                assert float(cell) == value, (delimiter, cell, value)
            else:
                assert cell == _expected_text(value, guard), (delimiter, cell, value)
