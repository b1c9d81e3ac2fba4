"""One scan of outgoing text for identifiers and PHI, also inside encoded forms.

Both guard layers — the in-kernel guard and the sentry at the boundary — call `scan_text` on
every message they let out, so the two layers judge text by the same rules. It runs the
identifier index and the PHI patterns on the text as it is, and on what the text decodes to when
part of it is base64, hex, percent-encoding, a long integer holding UTF-8 bytes
(`int.from_bytes(s.encode(), "big")`), a list of character codes, or the text reversed. A
`Finding` says what was found and where (character offsets of the text as given, i.e. of the
encoded span); it never carries the value.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bedside.policy._tokens import code_units
from bedside.policy.identifiers import IdentifierIndex
from bedside.policy.phi import scan_phi


@dataclass(frozen=True)
class Finding:
    """Something disclosive in a text.

    `kind` is "identifier", "phi:<kind>" (e.g. "phi:email"), or "encoded:<encoding>+<inner>"
    (e.g. "encoded:base64+identifier"); `column` names the identifier column when known.
    """

    kind: str
    start: int
    end: int
    column: str = ""


# Candidate spans of each encoding come from byte-class runs (`_spans`); minimum lengths keep
# ordinary words and numbers out.
# Lists of character codes ("[74, 111, 104, 110]"): printable ASCII codes, six or more.
_ORDS = re.compile(
    r"(?<![\d.])(?:(?:3[2-9]|[4-9]\d|1[01]\d|12[0-6])\s*,\s*){5,}"
    r"(?:3[2-9]|[4-9]\d|1[01]\d|12[0-6])(?![\d.])"
)

MAX_DEPTH = 2  # decode an encoded span at most twice (e.g. hex inside base64)


def _printable(data: bytes) -> str | None:
    """The UTF-8 text of `data` if it reads as text, else None."""
    if len(data) < 3:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\r\t")
    return text if good >= 0.9 * len(text) else None


def _decode_base64(span: str) -> str | None:
    compact = span.replace("\n", "").replace("\r", "") if "\n" in span else span
    if len(compact) < 12:
        return None
    # Skip spans that are plain words or plain numbers: base64 of text mixes cases and digits.
    if compact.isdigit() or compact.isalpha() and (compact.islower() or compact.isupper()):
        return None
    compact = compact.rstrip("=")
    padded = compact + "=" * (-len(compact) % 4)
    for altchars in (b"+/", b"-_"):
        try:
            data = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        text = _printable(data)
        if text is not None:
            return text
    return None


def _decode_hex(span: str) -> str | None:
    compact = re.sub(r"[\s:]", "", span)
    if compact.lower().startswith(("0x", "\\x")):
        compact = compact[2:]
    if len(compact) % 2 or compact.isdigit():
        return None
    try:
        return _printable(bytes.fromhex(compact))
    except ValueError:
        return None


def _decode_percent(span: str) -> str | None:
    decoded = urllib.parse.unquote_plus(span)
    return decoded if decoded != span else None


def _decode_int(span: str) -> str | None:
    value = int(span)
    size = (value.bit_length() + 7) // 8
    text = _printable(value.to_bytes(size, "big"))
    if text is None:
        text = _printable(value.to_bytes(size, "little"))
    return text


def _decode_ords(span: str) -> str | None:
    return "".join(chr(int(x)) for x in re.findall(r"\d+", span))


def _class(chars: str) -> npt.NDArray[np.bool_]:
    table = np.zeros(256, dtype=np.bool_)
    table[np.frombuffer(chars.encode(), dtype=np.uint8)] = True
    return table


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_BASE64_BYTES = _class(_ALNUM + "+/_-=\r\n")
_HEX_BYTES = _class("0123456789abcdefABCDEF")
_SPACED_HEX_BYTES = _class("0123456789abcdefABCDEF :")
_DIGIT_BYTES = _class("0123456789")
_HEX_LETTER_BYTES = _class("abcdefABCDEF")
_UPPER_BYTES = _class("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER_BYTES = _class("abcdefghijklmnopqrstuvwxyz")
_SPACED_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :])+[0-9a-fA-F]{2}")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_WHITESPACE = re.compile(r"\s")


def _runs(
    data: npt.NDArray[np.uint8], table: npt.NDArray[np.bool_], min_len: int
) -> Iterator[tuple[int, int]]:
    """Maximal runs of bytes in `table`, at least `min_len` long (ASCII text: byte = char)."""
    inside = np.zeros(len(data) + 2, dtype=np.int8)
    inside[1:-1] = table[data]
    edges = np.flatnonzero(np.diff(inside))
    starts, ends = edges[0::2], edges[1::2]
    keep = ends - starts >= min_len
    return zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)


def _spans(text: str, name: str) -> Iterator[tuple[int, int]]:
    """Candidate spans of one encoding in `text` (character offsets)."""
    if name == "percent":
        if "%" not in text:
            return
        last_end = -1
        for m in _PERCENT_ESCAPE.finditer(text):
            if m.start() < last_end:
                continue
            start = m.start()
            while start > 0 and not text[start - 1].isspace():
                start -= 1
            ws = _WHITESPACE.search(text, m.end())
            end = ws.start() if ws else len(text)
            last_end = end
            yield start, end
        return
    if name == "ords":
        if "," in text:
            for m in _ORDS.finditer(text):
                yield m.start(), m.end()
        return
    data = code_units(text)
    if name == "base64":
        # Base64 of text mixes upper- and lower-case letters (a 12-character run lacks one
        # case with probability under 1 %); words, numbers and snake_case names do not.
        upper = np.concatenate(([0], np.cumsum(_UPPER_BYTES[data])))
        lower = np.concatenate(([0], np.cumsum(_LOWER_BYTES[data])))
        for start, end in _runs(data, _BASE64_BYTES, 12):
            if upper[end] > upper[start] and lower[end] > lower[start]:
                yield start, end
    elif name == "hex":
        yield from _runs(data, _HEX_BYTES, 10)
        letters = np.concatenate(([0], np.cumsum(_HEX_LETTER_BYTES[data])))
        for start, end in _runs(data, _SPACED_HEX_BYTES, 14):
            # Hex dumps of text have letters a-f; space-separated decimals are table rows.
            if letters[end] == letters[start]:
                continue
            spaced = _SPACED_HEX.search(text, start, end)
            if spaced is not None and spaced.end() - spaced.start() >= 14:
                yield spaced.start(), spaced.end()
    elif name == "int":
        for start, end in _runs(data, _DIGIT_BYTES, 7):
            if (start == 0 or text[start - 1] != ".") and (end == len(text) or text[end] != "."):
                yield start, end


_DECODERS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("base64", _decode_base64),
    ("hex", _decode_hex),
    ("percent", _decode_percent),
    ("int", _decode_int),
    ("ords", _decode_ords),
)


@dataclass(frozen=True)
class _Segment:
    """A text to scan: the output itself, its reversal, or something decoded from it."""

    text: str
    prefix: str  # "" for the output itself, else "encoded:<enc>+" (nested: several)
    span: tuple[int, int] | None  # where in the output it came from (None: the output itself)
    reversed: bool = False
    phi: bool = True


def _segments(text: str, decode: bool, want_reversed: bool) -> list[_Segment]:
    out = [_Segment(text, "", None)]
    if decode:
        _collect(text, "", None, 1, out, want_reversed)
    return out


def _collect(
    text: str,
    prefix: str,
    span: tuple[int, int] | None,
    depth: int,
    out: list[_Segment],
    want_reversed: bool,
) -> None:
    for name, decoder in _DECODERS:
        for start, end in _spans(text, name):
            decoded = decoder(text[start:end])
            if not decoded:
                continue
            where = span if span is not None else (start, end)
            inner = f"{prefix}encoded:{name}+"
            out.append(_Segment(decoded, inner, where))
            if depth < MAX_DEPTH:
                _collect(decoded, inner, where, depth + 1, out, want_reversed)
    if want_reversed:
        # Identifiers written backwards. PHI patterns are not run on reversed text: reversed
        # tables of numbers take phone-like shapes.
        out.append(_Segment(text[::-1], f"{prefix}encoded:reversed+", span, True, False))


def scan_text(
    text: str,
    index: IdentifierIndex | None,
    *,
    phi: bool = True,
    decode: bool = True,
    phi_kinds: Iterable[str] | None = None,
) -> list[Finding]:
    """Identifier values and PHI in `text`, also inside encoded spans, ordered by position.

    `index` may be None when no dataset is loaded (PHI patterns still run). `phi_kinds`
    restricts the PHI patterns (a policy's `enabled_phi_patterns`).
    """
    kinds = None if phi_kinds is None else list(phi_kinds)
    segments = _segments(text, decode, want_reversed=index is not None)
    found: list[Finding] = []
    n = len(text)
    if index is not None:
        # One index pass over all segments joined by newlines (no value spans a newline).
        offsets: list[int] = []
        pos = 0
        for seg in segments:
            offsets.append(pos)
            pos += len(seg.text) + 1
        joined = "\n".join(seg.text for seg in segments) if len(segments) > 1 else text
        for m in index.find(joined):
            i = bisect.bisect_right(offsets, m.start) - 1
            seg = segments[i]
            start, end = m.start - offsets[i], m.end - offsets[i]
            if seg.span is not None:
                start, end = seg.span
            elif seg.reversed:
                start, end = n - end, n - start
            found.append(Finding(seg.prefix + "identifier", start, end, m.value_kind))
    if phi:
        for seg in segments:
            if not seg.phi:
                continue
            for p in scan_phi(seg.text, kinds):
                where = seg.span if seg.span is not None else (p.start, p.end)
                found.append(Finding(seg.prefix + "phi:" + p.kind, where[0], where[1]))
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    out: list[Finding] = []
    seen: set[tuple[str, int, int]] = set()
    for f in found:
        key = (f.kind, f.start, f.end)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
