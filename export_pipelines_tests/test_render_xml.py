"""XML renderer: parsed back with xml.etree.ElementTree."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pyarrow as pa

from export_pipelines.render import ExportFormat
from export_pipelines.render.xml import xml_name
from export_pipelines_tests.render_fixtures import (
    context,
    iso_utc,
    render_file,
    renders_identically,
    sample_table,
)

NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"


def _parse(path):
    return ET.parse(path).getroot()


def test_root_carries_the_export_identity(tmp_path):
    ctx = context(export_type="orders", organization_id='org "7" & <co>', period="2026-03")
    path, _ = render_file(ExportFormat.XML, sample_table(), tmp_path / "o.xml", ctx=ctx)
    root = _parse(path)
    assert root.tag == "export"
    assert root.attrib == {"type": "orders", "organization": 'org "7" & <co>', "period": "2026-03"}


def test_values_round_trip_with_nil_for_null(tmp_path):
    table = sample_table()
    path, rows = render_file(ExportFormat.XML, table, tmp_path / "o.xml")
    assert rows == table.num_rows
    root = _parse(path)
    assert len(root) == table.num_rows
    for element, record in zip(root, table.to_pylist()):
        assert element.tag == "row"
        assert [child.tag for child in element] == table.column_names
        for child in element:
            value = record[child.tag]
            if value is None:
                assert child.get(NIL) == "true" and child.text is None
                continue
            assert child.get(NIL) is None
            text = child.text or ""
            if isinstance(value, bool):
                assert text == ("true" if value else "false")
            elif isinstance(value, float):
                assert float(text) == value
            elif isinstance(value, dt.datetime):
                assert text == iso_utc(value)
            elif isinstance(value, dt.date):
                assert text == value.isoformat()
            else:
                # markup, quotes, CR LF, CJK, Greek and emoji all come back unchanged
                assert text == str(value), (child.tag, value, text)


def test_illegal_characters_are_replaced(tmp_path):
    table = pa.table({"t": ["bell\x07 nul\x00 esc\x1b ok\ttab", "\ufffe"]})
    path, _ = render_file(ExportFormat.XML, table, tmp_path / "o.xml")
    texts = [row.find("t").text for row in _parse(path)]
    assert texts == ["bell\ufffd nul\ufffd esc\ufffd ok\ttab", "\ufffd"]


def test_column_names_become_valid_unique_xml_names(tmp_path):
    names = ["order id", "1st", "xmlThing", "a:b", "Ωμέγα", "東京", "", "order_id", "order id"]
    table = pa.Table.from_arrays([pa.array([i]) for i in range(len(names))], names=names)
    path, _ = render_file(ExportFormat.XML, table, tmp_path / "o.xml")
    tags = [child.tag for child in _parse(path)[0]]
    assert len(set(tags)) == len(tags)
    assert tags[:7] == ["order_id", "_1st", "_xmlThing", "a_b", "Ωμέγα", "東京", "_"]
    assert [child.text for child in _parse(path)[0]] == [str(i) for i in range(len(names))]
    assert xml_name("ok.name-1") == "ok.name-1"


def test_empty_stream(tmp_path):
    path, rows = render_file(ExportFormat.XML, sample_table().slice(0, 0), tmp_path / "o.xml")
    assert rows == 0
    root = _parse(path)
    assert root.tag == "export" and len(root) == 0


def test_deterministic(tmp_path):
    assert renders_identically(ExportFormat.XML, sample_table(), tmp_path)
