"""XML renderer: ``<export type=… organization=… period=…><row><col>value</col>…</row>…</export>``.

- Values use the shared text style of `export_pipelines.render.csv` (ISO-8601 ``Z``
  timestamps, ``true``/``false``, shortest round-trip floats).
- Null is an empty element marked ``xsi:nil="true"`` (kept rather than omitted so that
  every row has every column and an empty string stays distinct from null).
- Characters XML 1.0 forbids (C0 controls other than tab/LF/CR, U+FFFE, U+FFFF) are
  replaced by U+FFFD; CR is written ``&#13;`` so that parsers give it back unchanged.
- Column names become XML names: a character that may not stand in a name turns into
  ``_``, a name that cannot start an element (digit, ``-``, ``.``, ``xml…``) gets a ``_``
  prefix, and repeats get ``_2``, ``_3`` …. "May stand" is decided by asking expat,
  whose XML 1.0 4th-edition name rules are the strictest a consumer is likely to use.

Speed: the elements of each batch are built with pyarrow.compute and joined into row
lines by Arrow (one ``<row>`` per line); no Python code runs per row.
"""

from __future__ import annotations

import functools
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.compute as pc

from export_pipelines.render import RenderOptions, ReportContext
from export_pipelines.render.csv import (
    is_text,
    joined_bytes,
    small_batches,
    to_text,
    worker_count,
)
from export_pipelines.render.json import unique_names

XSI = "http://www.w3.org/2001/XMLSchema-instance"
# RE2 syntax: the code points XML 1.0 does not allow in a document.
_ILLEGAL_RE2 = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}]"
_ILLEGAL_PY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@functools.lru_cache(maxsize=4096)
def _name_char(char: str, first: bool) -> bool:
    if char.isascii():
        return char.isalpha() or char == "_" or (not first and (char.isdigit() or char in ".-"))
    element = f"<{char}/>" if first else f"<a{char}/>"
    try:
        ElementTree.fromstring(element)
    except ElementTree.ParseError:
        return False
    return True


def xml_name(name: str) -> str:
    """A valid XML element name derived from a column name."""
    cleaned = "".join(c if _name_char(c, False) else "_" for c in name)
    if not cleaned or not _name_char(cleaned[0], True) or cleaned.lower().startswith("xml"):
        cleaned = "_" + cleaned
    return cleaned


def clean_text(value: str) -> str:
    """Text with XML-forbidden characters replaced by U+FFFD."""
    return _ILLEGAL_PY.sub("\ufffd", value)


def escape_text(array: pa.Array) -> pa.Array:
    """Element content: forbidden characters replaced, markup characters escaped, CR kept."""
    array = pc.replace_substring_regex(array, _ILLEGAL_RE2, "\ufffd")
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        array = pc.replace_substring(array, raw, entity)
    return array


def _element(array: pa.Array, name: str) -> pa.Array:
    text = to_text(array)
    if is_text(array.type):
        text = escape_text(text)
    element = pc.binary_join_element_wise(f"<{name}>", text, f"</{name}>", "")
    return pc.fill_null(element, f'<{name} xsi:nil="true"/>')


def _root_open(context: ReportContext) -> str:
    attributes = " ".join(
        f"{key}={quoteattr(clean_text(value))}"
        for key, value in (
            ("type", context.export_type),
            ("organization", context.organization_id),
            ("period", context.period),
        )
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<export xmlns:xsi="{XSI}" {attributes}>\n'


def write_xml(
    reader: pa.RecordBatchReader, path: Path, options: RenderOptions, context: ReportContext
) -> int:
    """Write `reader` to `path` as XML; return the number of rows."""
    names = unique_names([xml_name(n) for n in reader.schema.names])
    rows = 0
    with open(path, "wb") as out, ThreadPoolExecutor(worker_count()) as pool:
        out.write(_root_open(context).encode("utf-8"))
        for batch in small_batches(reader):
            elements = list(pool.map(_element, batch.columns, names))
            lines = pc.binary_join_element_wise("<row>", *elements, "</row>\n", "")
            out.write(joined_bytes(lines))
            rows += batch.num_rows
        out.write(b"</export>\n")
    return rows
