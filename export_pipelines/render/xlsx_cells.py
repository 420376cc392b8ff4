"""SpreadsheetML cells built column by column with Arrow kernels (no Python loop per row).

Text never becomes a formula or a hyperlink (cells are inline strings), text over Excel's
32,767-character limit is cut and ends with ``… [truncated]``, and with the formula guard
on, text starting with ``= + - @`` tab or CR gets a leading ``'`` as in CSV. Characters XML
forbids become U+FFFD, and literal ``_xHHHH_`` sequences are escaped so that Excel does not
decode them. Int64 values are Excel numbers (doubles: beyond 2^53 Excel shows them rounded);
NaN and infinities, which Excel cannot store, are empty cells; date-times are tz-naive UTC
serials (Excel has no time zones; the header and the number format say UTC), and those
before 1900-03-01 (Excel's calendar bug) are written as ISO text.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.render.csv import guard_formulas, is_text, iso_timestamps

MAX_CELL_CHARS = 32_767  # Excel's limit, counted in UTF-16 code units
TRUNCATION_MARKER = "… [truncated]"
EXCEL_EPOCH_DAYS = 25_569  # 1970-01-01 as an Excel serial day (1900 date system)
US_PER_DAY = 86_400_000_000
FIRST_RELIABLE_SERIAL = 61  # 1900-03-01: earlier serials are off by Excel's 1900 leap bug
ILLEGAL_XML_RE2 = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}]"


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _truncate(array: pa.Array) -> pa.Array:
    """Cut strings longer than Excel's cell limit and mark them; counts UTF-16 code units."""
    # Only strings of more than half the limit in code points can exceed it in UTF-16 units.
    long_mask = pc.fill_null(pc.greater(pc.utf8_length(array), MAX_CELL_CHARS // 2), False)
    if not pc.any(long_mask).as_py():
        return array
    values = pc.filter(array, long_mask).to_pylist()
    replaced = [_truncate_one(v) for v in values]
    return pc.replace_with_mask(array, long_mask, pa.array(replaced, pa.string()))


def _truncate_one(value: str) -> str:
    units = len(value.encode("utf-16-le")) // 2
    if units <= MAX_CELL_CHARS:
        return value
    budget = MAX_CELL_CHARS - len(TRUNCATION_MARKER.encode("utf-16-le")) // 2
    cut, used = 0, 0
    for char in value:  # rare path (only over-long cells): a Python loop is fine here
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > budget:
            break
        used += size
        cut += 1
    return value[:cut] + TRUNCATION_MARKER


def cell_text(array: pa.Array, guard: bool) -> pa.Array:
    """Text as it goes into an inline-string cell (escaped XML, Excel's rules applied)."""
    array = array.cast(pa.string())
    if guard:
        array = guard_formulas(array)
    array = _truncate(array)
    array = pc.replace_substring_regex(array, ILLEGAL_XML_RE2, "\ufffd")
    # Excel decodes _xHHHH_ in text as a character; escape the underscore to keep it literal.
    array = pc.replace_substring_regex(array, r"_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1")
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        array = pc.replace_substring(array, raw, entity)
    return array


def one_text(value: str, guard: bool = False) -> str:
    """A single string escaped like a cell's text (headers, the Summary sheet)."""
    return cell_text(pa.array([value], pa.string()), guard)[0].as_py()


def _style(style: int) -> str:
    return f' s="{style}"' if style else ""


def _string_cells(text: pa.Array, ref: tuple[str, pa.Array], style: int = 0) -> pa.Array:
    letter, rows = ref
    edge_space = pc.match_substring_regex(text, r"^[ \t\n]|[ \t\n]$|^&#13;|&#13;$")
    open_t = pc.if_else(edge_space, '<t xml:space="preserve">', "<t>")
    return pc.binary_join_element_wise(
        f'<c r="{letter}',
        rows,
        f'"{_style(style)} t="inlineStr"><is>',
        open_t,
        text,
        "</t></is></c>",
        "",
    )


def _number_cells(values: pa.Array, ref: tuple[str, pa.Array], style: int) -> pa.Array:
    letter, rows = ref
    return pc.binary_join_element_wise(
        f'<c r="{letter}', rows, f'"{_style(style)}><v>', values.cast(pa.string()), "</v></c>", ""
    )


def column_cells(
    array: pa.Array, letter: str, rows: pa.Array, guard: bool, style: int = 0
) -> pa.Array:
    """One XML ``<c>`` element per row for this column; empty string for a null.

    `style` is the cell format (an index into the stylesheet's cellXfs) of numbers and
    dates; text and booleans are written unstyled.
    """
    ref = (letter, rows)
    type_ = array.type
    if is_text(type_):
        cells = _string_cells(cell_text(array, guard), ref)
    elif pa.types.is_boolean(type_):
        cells = pc.binary_join_element_wise(
            f'<c r="{letter}', rows, '" t="b"><v>', pc.if_else(array, "1", "0"), "</v></c>", ""
        )
    elif pa.types.is_floating(type_):
        finite = pc.if_else(pc.is_finite(array), array, pa.scalar(None, type_))
        cells = _number_cells(finite, ref, style)
    elif pa.types.is_integer(type_):
        cells = _number_cells(array, ref, style)
    elif pa.types.is_timestamp(type_):
        micros = array.cast(pa.timestamp("us", tz=type_.tz)).cast(pa.int64())
        serial = pc.add(pc.divide(micros.cast(pa.float64()), float(US_PER_DAY)), EXCEL_EPOCH_DAYS)
        cells = _dated(serial, iso_timestamps(array), ref, style)
    elif pa.types.is_date(type_):
        serial = pc.add(array.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), EXCEL_EPOCH_DAYS)
        cells = _dated(serial, array.cast(pa.string()), ref, style)
    else:  # not in the contract; shown as text rather than refused
        cells = _string_cells(cell_text(array.cast(pa.string()), guard), ref)
    return pc.fill_null(cells, "")


def _dated(serial: pa.Array, iso: pa.Array, ref: tuple[str, pa.Array], style: int) -> pa.Array:
    numbers = _number_cells(serial, ref, style)
    early = pc.fill_null(pc.less(serial, FIRST_RELIABLE_SERIAL), False)
    if not pc.any(early).as_py():
        return numbers
    return pc.if_else(early, _string_cells(iso, ref), numbers)


def text_cell(ref: str, text: str, style: int = 0, guard: bool = False) -> str:
    """One inline-string cell written in Python (headers and the Summary sheet)."""
    return (
        f'<c r="{ref}"{_style(style)} t="inlineStr"><is><t xml:space="preserve">'
        f"{one_text(text, guard)}</t></is></c>"
    )


def number_cell(ref: str, value: int | float, style: int = 0) -> str:
    return f'<c r="{ref}"{_style(style)}><v>{value}</v></c>'
