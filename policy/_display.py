"""The display view of a text: what a reader sees when JupyterLab or a terminal shows it.

An identifier can be written so that it *displays* unchanged while the characters sent differ:
an ANSI escape, a backspace or a carriage return that overwrites a decoy, a zero-width
character, full-width or mathematical letters, an HTML tag or character reference, Cyrillic and
Greek look-alike letters. `scan_text` scans the views made here as one more layer, so both
guards read what the reader reads. The views are built only when the text holds something that
would change it (`needs_view`): plain ASCII without control characters, `<` or `&` costs one
look for those characters.

Which rendering applies to which text follows what the front ends do (checked against
JupyterLab 4's output model and rendermime, and xterm for terminal clients):

- *Terminal view* (stream output and `text/plain`, rendered by JupyterLab's `renderText` or a
  terminal): ANSI/VT escape sequences (CSI, OSC, DCS/SOS/PM/APC strings, two-character escapes)
  are invisible; a backspace deletes the character before it (JupyterLab's `fixBackspace`; a
  terminal moves the cursor back and the next character overwrites, given as a second view when
  it differs); a carriage return returns to the line's start and what follows overwrites
  (`fixCarriageReturn`, a terminal alike); `CSI n D` moves a terminal's cursor back.
- *Markup view* (`text/html`, and the HTML inside `text/markdown`): comments, `script` and
  `style` elements are invisible; inline tags (`b`, `span`, `a`, `wbr`, ...) join the text
  around them; every other tag breaks the line, so the cells of a table are never read as one
  run; white space outside `pre` collapses to one space (a browser shows `Smith\\nJohn` on one
  line); character references are unescaped. Markdown's own emphasis (`Tia**rna**`) is not
  read.

A text gets the view its content calls for: control characters call for the terminal view,
`<` or `&` for the markup view (each alone: a browser shows a backspace as nothing and never
applies it; a terminal shows `&#84;` as it is). Each view then drops what displays as nothing
(remaining C0/C1 control characters, Unicode format characters (category Cf: zero-width
spaces and joiners, soft hyphen, word joiner, BOM, bidi controls), variation selectors, the
combining grapheme joiner, Hangul fillers); text under a right-to-left override (U+202E) is
reversed, as it is shown; NFKC folds full-width, mathematical and other compatibility forms;
and letters outside ASCII that look like an ASCII letter are read as it: Unicode's confusables
(UTS #39, `confusable_homoglyphs`) say what a character is taken for (Cyrillic `р` for `p`, `у`
for `y`), where a transliteration such as `anyascii` spells it by sound (`r`, `u`); `anyascii`
serves for the few with no listed look-alike (`Ι` → `I`), when it gives one letter. Combining
marks left over after NFKC (a strike-through overlay) are dropped. That view comes first; the
NFKC view without it is scanned too when it differs from the text, so values written in another
script are still found through inserted invisible characters. Accented Latin letters (`é`) are
kept, and so are letters with a stroke (`ł`, `ø`): the mark shows, and such names in the data
must still match. Symbols are not
mapped: `█` or `™` between two halves of a name displays as a mark, not a letter.

The MIME type of a text is not known here, so it is inferred: a text is read as HTML only when
it holds a known tag written in lower case or closed somewhere, a comment or a character
reference, and an unknown element counts as a tag only when it is closed somewhere: Python's
reprs (`<Figure size 640x480 with 1 Axes>`) look like start tags, and a plain-text log holding
one must keep its lines apart. `_scanner.markup_joins` makes the same decisions in one compiled
pass, so HTML that a browser shows as the markup keeps it (a table of block tags) gets no view.

Not seen through (honest limits): HTML with no tag that shows a line break inside a value on one
line (`Tiarna\nMontenegro` as `text/html` or Markdown), an unknown element never closed
(`Tia<x>rna`), CSS (`display:none`, `::before` content, `text-transform`),
scripts that write text at display time, the HTML parser's other error recovery (text in a
table outside its cells is moved before it), text in images, LaTeX, markdown emphasis, terminal
cursor movements other than `CSI n D`, right-to-left embedding other than the override, and
renderings split over several messages (each text is viewed by itself).
"""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol, TypeVar, cast

import numpy as np
from anyascii import anyascii

from bedside.policy._tokens import _scanner
from bedside.policy.identifiers import STRONG

DISPLAY = "encoded:display+"  # the kind prefix of a finding seen only in a display view

# Control characters that change what the terminal view shows, or display as nothing (tab and
# newline display as white space, which the identifier index reads as a separator anyway).
_CONTROLS = tuple(chr(c) for c in (*range(0, 9), *range(11, 32), 127))
_MARKUP = ("<", "&")

# ANSI/VT escape sequences (ECMA-48): CSI (ESC [ or the C1 byte 0x9B) with parameter and
# intermediate bytes; OSC, DCS, SOS, PM and APC strings ended by BEL or ST (ESC \ or 0x9C), or
# unterminated to the end of the line; nF escapes (ESC, intermediates, final); two-character
# escapes (ESC and one of 0x30-0x7E).
_ESCAPE = re.compile(
    r"\x1b(?:\[([0-?]*)[ -/]*([@-~])"
    r"|[\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|[ -/]+[0-~]"
    r"|[0-~])"
)
# The same with the 8-bit C1 introducers (CSI 0x9B, OSC 0x9D, DCS 0x90, SOS 0x98, PM 0x9E, APC
# 0x9F), for text that holds any: the pattern above starts with a literal ESC, which the regex
# engine looks for at memchr speed.
_ESCAPE_C1 = re.compile(
    r"(?:\x1b\[|\x9b)([0-?]*)[ -/]*([@-~])"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]+[0-~]"
    r"|\x1b[0-~]"
)
_CR_LF = re.compile(r"\r+\n")
_C1_INTRODUCERS = "\x9b\x9d\x90\x98\x9e\x9f"
_CURSOR_BACK = re.compile(r"\x1b\[[0-9]*D|\x9b[0-9]*D")

# HTML: what a browser shows nothing of, inline elements (their tags join the text around
# them), and every other tag (a line break, so table cells stay apart).
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_HIDDEN = re.compile(
    r"<(script|style|template|title)\b[^>]*>.*?(?:</\1\s*>|$)", re.IGNORECASE | re.DOTALL
)
# Elements a browser shows as blocks (or replaces: an image, a control): their tags break the
# line (the same list is in `_scanner.c`, markup_joins).
_BLOCK = frozenset(
    "td tr th tbody thead table div p br address article aside audio blockquote body button "
    "canvas caption center col colgroup dd details dialog dir dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 head header hr html iframe img input legend li link main menu "
    "meta nav noscript ol optgroup option pre section select summary svg textarea tfoot ul video "
    "style script template title".split()
)
# Inline elements (the same list is in `_scanner.c`): their tags join the text around them.
_INLINE = frozenset(
    "a abbr acronym b bdi bdo big cite code data del dfn em font i ins kbd mark nobr q rp rt "
    "ruby s samp small span strike strong sub sup time tt u var wbr".split()
)
_KNOWN = _BLOCK | _INLINE
_TAG_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)")
_END_TAG = re.compile(r"</([A-Za-z][A-Za-z0-9-]*)")
_REFERENCE = re.compile(r"&[#A-Za-z]")
# Parts of a table: a browser ignores their tags outside a table.
_TABLE_PARTS = frozenset("td tr th tbody thead tfoot caption col colgroup".split())
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(?:\s[^>]*)?/?>|<[!?/][^>]*>")
_PRE = re.compile(r"(<pre\b[^>]*>.*?(?:</pre\s*>|$))", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"[ \t\n\r\f]+")
# A tag that breaks the line: a tab after the newline keeps the base64 and hex readers (whose
# runs go on across a newline, for wrapped base64) from joining neighbouring table cells.
_BREAK = "\n\t"
_NEWLINES = re.compile(r"\s*\n\s*")


_RIGHT_TO_LEFT_OVERRIDE = re.compile("\u202e([^\u202c\n]*)\u202c?")
# Displayed as nothing besides category Cf (format characters): variation selectors, the
# combining grapheme joiner, Hangul fillers, Mongolian free variation selectors, Khmer inherent
# vowels. C1 controls are category Cc.
_INVISIBLE_EXTRA = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0]
    + list(range(0xFE00, 0xFE10))
    + list(range(0xE0100, 0xE01F0))
)


def needs_view(text: str) -> bool:
    """Whether `text` holds anything a display view would change.

    Plain ASCII without control characters (other than tab and newline), `<` or `&` displays as
    it is: one pass of the compiled core, eight bytes at a time (without it, a `memchr` per
    character looked for).
    """
    if _scanner is not None:
        return not _scanner.plain_display(text)
    if not text.isascii():
        return True
    return any(c in text for c in _MARKUP) or any(c in text for c in _CONTROLS)


def display_views(text: str) -> list[str]:
    """The texts a reader may see when `text` is displayed, each different from `text`.

    Empty when the text displays as it is. Several when the text could be shown in several
    ways (a terminal and a browser; JupyterLab's backspace and a terminal's; a non-Latin script
    kept and transliterated).
    """
    if not needs_view(text):
        return []
    rendered: list[str] = []
    controls = any(c in text for c in _CONTROLS)
    if controls or any(c in text for c in _C1_INTRODUCERS):
        rendered.extend(_terminal(text))
    if ("<" in text or "&" in text) and _markup_joins(text):
        rendered.append(_markup(text))
        controls = True  # a reference may stand for one (&#8;)
    if not rendered:
        rendered.append(text)
    out: list[str] = []
    for view in rendered:
        for shown in _folded(view, controls):
            if shown != text and shown not in out:
                out.append(shown)
    return out


def _terminal(text: str) -> list[str]:
    """The terminal view(s) of `text`: JupyterLab's, and a terminal's when it differs."""
    # A cursor-back sequence moves a terminal's cursor like that many backspaces; JupyterLab
    # drops it. Other escapes display as nothing in both.
    c1 = not text.isascii() and any(c in text for c in _C1_INTRODUCERS)
    escape = _ESCAPE_C1 if c1 else _ESCAPE
    plain = escape.sub("", text) if c1 or "\x1b" in text else text
    terminal_text = escape.sub(_cursor_back, text) if _CURSOR_BACK.search(text) else plain
    views = [_overwrite(plain, backspace_deletes=True)]
    if "\b" in terminal_text:
        other = _overwrite(terminal_text, backspace_deletes=False)
        if other != views[0]:
            views.append(other)
    return views


def _cursor_back(m: re.Match[str]) -> str:
    if m.group(2) == "D" and m.group(1) is not None and m.group(1).isdigit():
        return "\b" * min(int(m.group(1)), 1000)
    if m.group(2) == "D" and m.group(1) == "":
        return "\b"
    return ""


def _overwrite(text: str, *, backspace_deletes: bool) -> str:
    """Lines as shown once carriage returns and backspaces have acted.

    A carriage return goes back to the line's start and what follows overwrites (the rest of
    the longer line stays, as in JupyterLab's `fixCarriageReturn` and a terminal). A backspace
    deletes the character before it (`backspace_deletes`, JupyterLab) or moves the cursor back
    so the next character overwrites (a terminal).
    """
    if "\r\n" in text:
        text = _CR_LF.sub("\n", text)
    if "\r" not in text and "\b" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        if "\r" not in line and "\b" not in line:
            lines.append(line)
            continue
        if "\b" not in line:
            lines.append(_carriage_returns(line))
            continue
        cells: list[str] = []
        if backspace_deletes:
            for ch in line:
                if ch == "\b":
                    if cells:
                        cells.pop()
                else:
                    cells.append(ch)
            line = "".join(cells)
            cells = []
        cursor = 0
        for ch in line:
            if ch == "\r":
                cursor = 0
            elif ch == "\b":
                cursor = max(0, cursor - 1)
            elif cursor < len(cells):
                cells[cursor] = ch
                cursor += 1
            else:
                cells.append(ch)
                cursor += 1
        lines.append("".join(cells))
    return "\n".join(lines)


def _carriage_returns(line: str) -> str:
    """A line with carriage returns as shown: each position shows the last part written that
    reaches it. Read from the last part back, stopping once no earlier part is longer (a
    progress bar redrawn a thousand times costs a `split` and a length test per part)."""
    parts = line.split("\r")
    shown = parts[-1]
    longest = max(map(len, parts))
    for part in reversed(parts):
        if len(shown) >= longest:
            break
        if len(part) > len(shown):
            shown += part[len(shown) :]
    return shown


def _markup_joins(text: str) -> bool:
    """Whether showing `text` as HTML could join what it keeps apart (`_scanner.markup_joins`:
    one compiled pass). Without the compiled core every text with markup is viewed."""
    if _scanner is None:
        return True
    return bool(_scanner.markup_joins(text.encode("utf-8", "surrogatepass")))


def _markup(text: str) -> str:
    """The markup view of `text`: what a browser shows of it as HTML."""
    if "<" in text and _TAG.search(text):
        ends = {name.lower() for name in _END_TAG.findall(text)}
        # White space collapses only in text read as HTML: a known tag written in lower case
        # or closed somewhere, a comment or a character reference. A plain-text log holding a
        # repr (`<Figure size 640x480 with 1 Axes>`) keeps its lines apart.
        page = (
            "<!--" in text
            or _REFERENCE.search(text) is not None
            or any(
                name.lower() in _KNOWN and (name.islower() or name.lower() in ends)
                for name in set(_TAG_NAME.findall(text))
            )
        )
        if "<!--" in text:
            text = _COMMENT.sub("", text)
        text = _HIDDEN.sub(_BREAK, text)
        parts = _PRE.split(text) if page else [text]
        tag = _TagReader(ends)
        for i, part in enumerate(parts):
            if i % 2 == 0 and page:
                part = _SPACES.sub(" ", part)
            parts[i] = _TAG.sub(tag, part)
        text = "".join(parts)
        if page:
            text = _NEWLINES.sub(_BREAK, text)
    return html.unescape(text) if "&" in text else text


class _TagReader:
    """What a browser shows for each tag of one page, in order: a line break for a block
    element's tag; nothing for an inline element's, a comment-like `<!...>` or `<?...>`, an
    unknown element's when it is closed somewhere in the text (`ends`; else the "tag" is read
    as text: a repr), and for a tag a browser ignores (an end tag of an element never opened,
    but `p` and `br` which make one; a part of a table before any table)."""

    def __init__(self, ends: set[str]) -> None:
        self.ends = ends
        self.opened: set[str] = set()

    def __call__(self, m: re.Match[str]) -> str:
        name = m.group(2)
        if name is None:
            return ""
        name = name.lower()
        closing = bool(m.group(1))
        if name not in _BLOCK:
            if closing or name in _INLINE or name in self.ends:
                return ""
            return m.group(0)
        if closing and name not in self.opened and name not in ("p", "br"):
            return ""
        if name in _TABLE_PARTS and "table" not in self.opened:
            return ""
        if not closing:
            self.opened.add(name)
        return _BREAK


def _folded(text: str, controls: bool = True) -> list[str]:
    """`text` without what displays as nothing, NFKC-folded; and with look-alike letters read
    as ASCII (first), when that differs."""
    if controls:  # (a text without control characters has no view with any)
        text = _drop_controls(text)
    if text.isascii():
        return [text]
    if "\u202e" in text:
        text = _RIGHT_TO_LEFT_OVERRIDE.sub(lambda m: m.group(1)[::-1], text)
    distinct = _distinct(text)
    if all(_unchanged(code) for code in distinct):
        return [text]  # tqdm bars, box drawing, CJK, accented text: nothing to fold
    text = _replace(text, distinct, transliterate=False)
    folded = unicodedata.normalize("NFKC", text)
    if folded.isascii():
        return [folded]
    if folded is not text and folded != text:
        distinct = _distinct(folded)
    return [_replace(folded, distinct, transliterate=True), folded]


_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")


def _drop_controls(text: str) -> str:
    if any(c in text for c in _CONTROLS):
        return _ASCII_CONTROLS.sub("", text)
    return text


def _replace(text: str, distinct: list[int], *, transliterate: bool) -> str:
    """`text`, whose distinct characters outside ASCII are `distinct`, with each mapped by
    `_mapped`: with `str.replace` while few change (a `memchr`-speed pass each), else with
    `str.translate` (a lookup per character)."""
    table = {}
    for code in distinct:
        mapped = _mapped(code, transliterate)
        if mapped != chr(code):
            table[code] = mapped
    if len(table) > 16:
        return text.translate(table)
    for code, mapped in table.items():
        text = text.replace(chr(code), mapped or "")
    return text


def _distinct(text: str) -> list[int]:
    """The distinct code points outside ASCII of `text`, found at C speed over its UTF-32 (a
    text holds few): peeled one at a time while they are few (a pass each, cheaper than sorting
    a megabyte's worth), sorted out by `np.unique` past 16."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    codes = codes[codes > 127]
    out: list[int] = []
    while len(codes) and len(out) < 16:
        first = int(codes[0])
        out.append(first)
        codes = codes[codes != first]
    if len(codes):
        out.extend(np.unique(codes).tolist())
    return out


@lru_cache(maxsize=1 << 16)
def _unchanged(code: int) -> bool:
    """Whether the character displays as itself in every view, whatever its neighbours: NFKC
    keeps it, it is not invisible or a look-alike, and it composes with nothing (not a
    combining mark, not a Hangul jamo)."""
    ch = chr(code)
    return (
        unicodedata.normalize("NFKC", ch) == ch
        and _mapped(code, False) == ch
        and _mapped(code, True) == ch
        and not unicodedata.combining(ch)
        and not (0x1100 <= code <= 0x11FF or 0xA960 <= code <= 0xA97F or 0xD7B0 <= code <= 0xD7FF)
    )


@lru_cache(maxsize=1 << 16)  # bounded: hostile output may hold every code point
def _mapped(code: int, transliterate: bool) -> str | None:
    """What a character outside ASCII displays as: None for nothing; with `transliterate`, the
    ASCII letter or digit it looks like (a letter or digit `anyascii` writes as one character:
    Cyrillic `а`, Greek `ο`, Latin `ɑ`, `ı`), or nothing for a combining mark."""
    ch = chr(code)
    category = unicodedata.category(ch)
    if category in ("Cf", "Cc") or code in _INVISIBLE_EXTRA:
        return None
    if transliterate:
        if category[0] == "M":
            return ""
        if category[0] in "LN":
            if unicodedata.normalize("NFD", ch)[0].isascii() or " WITH " in unicodedata.name(
                ch, ""
            ):
                # A letter with a mark (é, e and an accent; ł, l with a stroke) displays its
                # mark: not a look-alike, and kept so that such names in the data still match.
                return ch
            return _look_alike(ch) or ch
    return ch


def _look_alike(ch: str) -> str | None:
    """The ASCII letter or digit `ch` looks like, if any.

    Unicode's confusables (UTS #39, through `confusable_homoglyphs`) say what a character is
    mistaken for: Cyrillic `р` for `p`, `у` for `y`, `Н` for `H`, which a transliteration reads
    by sound instead (`r`, `u`, `N`). Its prototype may differ in case (Greek `Ι` is listed
    with `l`, not `I`): a candidate of the character's own case is taken first, then the
    one-letter transliteration of `anyascii` (`Ι` → `I`, `ɑ` → `a`), then any candidate.
    """
    from confusable_homoglyphs import confusables  # loads its table: only when first needed

    found = confusables.is_confusable(ch, greedy=True)
    candidates = [
        h["c"]
        for h in (found[0]["homoglyphs"] if found else [])
        if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalnum()
    ]
    for c in candidates:
        if (
            (c.isupper(), c.islower()) == (ch.isupper(), ch.islower())
            or not ch.isupper()
            and (not ch.islower())
        ):
            return str(c)
    spelled = anyascii(ch)
    if len(spelled) == 1 and spelled.isalnum():
        return spelled
    return str(candidates[0]) if candidates else None


class _Found(Protocol):
    """What is read of a finding here (`scan.Finding`, a frozen dataclass)."""

    @property
    def kind(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def column(self) -> str: ...
    @property
    def strength(self) -> str: ...


F = TypeVar("F", bound=_Found)


def with_display_findings(text: str, found: list[F], scan: Callable[[str], list[F]]) -> list[F]:
    """`found` (the findings of `text` as given) with those of its display views added.

    `scan` scans one view (all layers but this one). A view's finding is reported as
    "encoded:display+<kind>" over the whole text (a view's offsets are not the text's), and
    only when it adds something: a kind and column the text itself showed at least as strongly
    is not repeated, so notices keep naming what the text shows plainly. The result is ordered
    like `scan_text`'s (by position, longest first, then kind).
    """
    views = display_views(text)
    if not views:
        return found
    seen: dict[tuple[str, str], bool] = {}  # (kind, column) -> shown strongly somewhere
    for f in found:
        seen[(f.kind, f.column)] = seen.get((f.kind, f.column), False) or f.strength == STRONG
    added: list[F] = []
    for view in views:
        for f in scan(view):
            strong = f.strength == STRONG
            if seen.get((f.kind, f.column)) in (True, strong):
                continue
            seen[(f.kind, f.column)] = strong
            shown = dataclasses.replace(cast(Any, f), kind=DISPLAY + f.kind, start=0, end=len(text))
            added.append(cast(F, shown))
    if not added:
        return found
    return sorted([*found, *added], key=lambda f: (f.start, -f.end, f.kind))
