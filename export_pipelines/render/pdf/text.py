"""Fonts, measured text, word wrap and one-line drawing for the PDF.

Text is set in the DejaVu fonts shipped in ``render/fonts/``; characters DejaVu lacks are
drawn from the fallback fonts shipped beside them (Droid Sans Fallback for CJK, Symbola
for emoji and symbols), or from Debian's copies of those fonts, so Greek, CJK and emoji
never show as boxes. Widths are cached per character: measuring is most of the table's
layout work at 100,000 rows.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from reportlab.lib import colors
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas

log = logging.getLogger(__name__)

FONT_DIR = Path(__file__).resolve().parent.parent / "fonts"
_FALLBACK_FONT_FILES = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf",
    "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
)
DEJAVU = {
    "body": "DejaVuSans",
    "body-bold": "DejaVuSans-Bold",
    "cell": "DejaVuSansCondensed",
    "cell-bold": "DejaVuSansCondensed-Bold",
}
# Where an over-long word (a URL, a dotted action name) may break: after these characters.
_SOFT_BREAKS = "/-._?&=@,;:"

TEXT_COLOR = colors.Color(0.1, 0.1, 0.12)
GREY_TEXT = colors.Color(0.35, 0.37, 0.4)


class FontSet:
    """The DejaVu fonts plus fallbacks for characters they lack, each loaded on first need."""

    def __init__(self, fallback_files: list[Path]):
        self._fallback_files = fallback_files
        self._loaded: list[str] | None = None

    def covers(self, name: str, code: int) -> bool:
        return code in pdfmetrics.getFont(name).face.charToGlyph

    def covering(self, text: str, preferred: str) -> str:
        """The first of `preferred` and the fallbacks with a glyph for every character."""
        codes = {ord(c) for c in text if ord(c) > 32}
        for name in [preferred, *(self.fallbacks() if codes else [])]:
            if all(self.covers(name, code) for code in codes):
                return name
        return preferred

    def fallbacks(self) -> list[str]:
        # Parsing a CJK font costs ~50 MB and 0.5 s: only done once a character needs it.
        if self._loaded is None:
            self._loaded = []
            for file in self._fallback_files:
                name = f"Fallback-{file.stem}"
                try:
                    pdfmetrics.registerFont(TTFont(name, str(file)))
                except (OSError, TTFError) as error:  # an unusable font is skipped, not fatal
                    log.warning("fallback font %s not usable: %s", file, error)
                    continue
                self._loaded.append(name)
        return self._loaded


@functools.lru_cache(maxsize=1)
def fonts() -> FontSet:
    """Register the DejaVu fonts and find the fallback font files (once per process)."""
    for name in DEJAVU.values():
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / f"{name}.ttf")))
    extra = sorted(p for p in FONT_DIR.glob("*.ttf") if p.stem not in DEJAVU.values())
    shipped = {p.name for p in extra}
    system = [
        Path(p) for p in _FALLBACK_FONT_FILES if Path(p).is_file() and Path(p).name not in shipped
    ]
    return FontSet([*extra, *system])


class Face:
    """One font at one size: glyph widths (cached per character) and fallback runs."""

    def __init__(self, name: str, size: float, font_set: FontSet | None = None):
        self.name, self.size = name, size
        self._fonts = font_set or fonts()
        self._widths: dict[str, float] = {}
        self._font_of: dict[str, str] = {}
        self.ascent = pdfmetrics.getAscent(name, size)

    def font_for(self, char: str) -> str:
        font = self._font_of.get(char)
        if font is None:
            font = self.name
            code = ord(char)
            if code > 32 and not self._fonts.covers(font, code):
                fallbacks = self._fonts.fallbacks()
                font = next((f for f in fallbacks if self._fonts.covers(f, code)), self.name)
            self._font_of[char] = font
        return font

    def char_width(self, char: str) -> float:
        width = self._widths.get(char)
        if width is None:
            width = pdfmetrics.stringWidth(char, self.font_for(char), self.size)
            self._widths[char] = width
        return width

    def width(self, text: str) -> float:
        widths = self._widths
        try:
            return sum(map(widths.__getitem__, text))
        except KeyError:
            return sum(map(self.char_width, text))

    def runs(self, text: str) -> list[tuple[str, str]]:
        """(font, text) runs: the face's own font wherever it has the glyph."""
        if text.isascii():
            return [(self.name, text)]
        fonts_used = list(map(self.font_for, text))
        if fonts_used.count(self.name) == len(fonts_used):
            return [(self.name, text)]
        runs: list[tuple[str, str]] = []
        for char, font in zip(text, fonts_used):
            if runs and runs[-1][0] == font:
                runs[-1] = (font, runs[-1][1] + char)
            else:
                runs.append((font, char))
        return runs


def wrap(text: str, face: Face, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap, cut to `max_lines` with ``…``.

    Lines break at spaces. Only a word wider than `width` on its own is broken, preferably
    after a URL or name separator (``/``, ``.``, ``-``, …), so "completed" never becomes
    "complet|ed" while a long URL still wraps at its slashes.
    """
    lines: list[str] = []
    space = face.char_width(" ")
    for paragraph in text.split("\n"):
        line, line_width = "", 0.0
        for word in paragraph.split(" "):
            word_width = face.width(word)
            if line and line_width + space + word_width <= width:
                line, line_width = f"{line} {word}", line_width + space + word_width
                continue
            if line:
                lines.append(line)
            while word_width > width and len(lines) <= max_lines:
                cut, used = _fit(word, face, width)
                lines.append(word[:cut])
                word, word_width = word[cut:], word_width - used
            line, line_width = word, word_width
            if len(lines) > max_lines:
                break
        lines.append(line)
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = ellipsize(lines[-1], face, width)
    return lines


def _fit(word: str, face: Face, width: float) -> tuple[int, float]:
    """How much of an over-long word goes on this line: (characters, their width)."""
    used, soft = 0.0, (0, 0.0)
    for i, char in enumerate(word):
        char_width = face.char_width(char)
        if used + char_width > width:
            if soft[0]:
                return soft
            return (i, used) if i else (1, char_width)
        used += char_width
        if char in _SOFT_BREAKS and i + 1 < len(word):
            soft = (i + 1, used)
    return len(word), used


def ellipsize(text: str, face: Face, width: float) -> str:
    """`text` cut so that it and a trailing ``…`` fit `width`."""
    text = text.rstrip("…")
    limit = width - face.char_width("…")
    while text and face.width(text) > limit:
        text = text[: max(len(text) - max(1, len(text) // 8), 0)]
    return text + "…"


def fit_or_ellipsize(text: str, face: Face, width: float) -> str:
    return text if face.width(text) <= width else ellipsize(text, face, width)


def draw_text(canvas: Canvas, face: Face, x: float, y: float, text: str, color=TEXT_COLOR) -> None:
    """One line of text at baseline (x, y), switching to fallback fonts where needed."""
    t = canvas.beginText(x, y)
    t.setFillColor(color)
    for font, run in face.runs(text):
        t.setFont(font, face.size)
        t.textOut(run)
    canvas.drawText(t)


def draw_right(canvas: Canvas, face: Face, right: float, y: float, text: str, color=TEXT_COLOR):
    draw_text(canvas, face, right - face.width(text), y, text, color)
