"""One email body, written once as blocks, rendered as plain text and as HTML.

A `multipart/alternative` message must say the same thing in both parts: composing the
content once (`Paragraph`, `Facts`, `Link`, `Items`, `Note`) and rendering it twice keeps
them from drifting. The HTML is what every mail client shows safely: inline styles only
(clients drop `<style>` and `<link>`), no images or scripts, one narrow column, and every
value escaped — organization names, titles and addresses come from tenants' data.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Facts:
    """Label/value rows: a table in HTML, `Label: value` lines (never wrapped) in text."""

    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Link:
    """`text` then the URL. Only http(s) URLs become clickable in HTML; any other (a local
    store's path) is shown as text, for a person to copy."""

    text: str
    url: str


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Note:
    """Small print: who it was sent to, how to stop it."""

    text: str


Block = Paragraph | Heading | Facts | Link | Items | Note

_FONT = "font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.5;color:#1f2328"
_STYLES = {
    "body": f"margin:0;padding:24px;background:#ffffff;{_FONT}",
    "p": "margin:0 0 14px 0",
    "h2": "margin:22px 0 8px 0;font-size:16px;font-weight:bold",
    "table": "border-collapse:collapse;margin:0 0 14px 0",
    "th": "text-align:left;font-weight:normal;color:#57606a;padding:3px 18px 3px 0;"
    "vertical-align:top",
    "td": "text-align:left;font-weight:bold;padding:3px 0;vertical-align:top",
    "a": "color:#0969da",
    "ul": "margin:0 0 14px 0;padding-left:22px",
    "note": "margin:0 0 10px 0;font-size:13px;color:#57606a",
    "url": "word-break:break-all;font-family:monospace;font-size:13px",
}


def to_text(blocks: Sequence[Block]) -> str:
    """The plain-text part: one line per paragraph, URLs alone on their own line.

    Not hard-wrapped: mail clients wrap text to their window, and a wrap of our own would
    split file names and addresses a reader copies (the transfer encoding keeps the
    message's lines short, whatever a paragraph's length)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, (Paragraph, Note)):
            out.append(block.text)
        elif isinstance(block, Heading):
            out.append(f"{block.text}\n{'-' * len(block.text)}")
        elif isinstance(block, Facts):
            out.append("\n".join(f"{label}: {value}" for label, value in block.rows))
        elif isinstance(block, Link):
            out.append(f"{block.text}\n{block.url}")
        elif isinstance(block, Items):
            out.append("\n".join(f"- {item}" for item in block.items))
    return "\n\n".join(out) + "\n"


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """The HTML part: the same blocks, escaped, styled inline."""
    parts = [_html_block(block) for block in blocks]
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{_e(title)}</title></head>\n"
        f'<body style="{_STYLES["body"]}">'
        '<div style="max-width:600px">\n' + "\n".join(parts) + "\n</div></body></html>\n"
    )


def _html_block(block: Block) -> str:
    s = _STYLES
    if isinstance(block, Paragraph):
        return f'<p style="{s["p"]}">{_lines(block.text)}</p>'
    if isinstance(block, Note):
        return f'<p style="{s["note"]}">{_lines(block.text)}</p>'
    if isinstance(block, Heading):
        return f'<h2 style="{s["h2"]}">{_e(block.text)}</h2>'
    if isinstance(block, Facts):
        rows = "".join(
            f'<tr><th scope="row" style="{s["th"]}">{_e(label)}</th>'
            f'<td style="{s["td"]}">{_e(value)}</td></tr>'
            for label, value in block.rows
        )
        return f'<table role="presentation" style="{s["table"]}">{rows}</table>'
    if isinstance(block, Link):
        return f'<p style="{s["p"]}">{_e(block.text)}<br>{_url(block.url)}</p>'
    if isinstance(block, Items):
        items = "".join(f"<li>{_e(item)}</li>" for item in block.items)
        return f'<ul style="{s["ul"]}">{items}</ul>'
    raise TypeError(f"not an email block: {block!r}")


def _url(url: str) -> str:
    if url.startswith(("https://", "http://")):
        return f'<a href="{_e(url)}" style="{_STYLES["a"]};{_STYLES["url"]}">{_e(url)}</a>'
    return f'<span style="{_STYLES["url"]}">{_e(url)}</span>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _lines(text: str) -> str:
    return "<br>".join(_e(line) for line in text.split("\n"))
