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
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

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


# Candidate spans for each encoding. Minimum lengths keep ordinary words and numbers out.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}(?:\r?\n[A-Za-z0-9+/_-]{4,}={0,2})*")
_HEX = re.compile(
    r"(?<![0-9A-Za-z])(?:0x|\\x)?((?:[0-9a-fA-F]{2}){5,})(?![0-9A-Za-z])"
    r"|(?<![0-9A-Za-z])((?:[0-9a-fA-F]{2}[ :]){4,}[0-9a-fA-F]{2})(?![0-9A-Za-z])"
)
_PERCENT = re.compile(r"[^\s%]*(?:%[0-9A-Fa-f]{2}[^\s%]*)+")
_BIGINT = re.compile(r"(?<![\d.])\d{7,}(?![\d.])")
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
    compact = re.sub(r"\s+", "", span)
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


_Decoder = tuple[str, re.Pattern[str], Callable[[str], str | None], Callable[[str], bool]]
_DECODERS: tuple[_Decoder, ...] = (
    ("base64", _BASE64, _decode_base64, lambda t: True),
    ("hex", _HEX, _decode_hex, lambda t: True),
    ("percent", _PERCENT, _decode_percent, lambda t: "%" in t),
    ("int", _BIGINT, _decode_int, lambda t: True),
    ("ords", _ORDS, _decode_ords, lambda t: "," in t),
)


def _plain(
    text: str, index: IdentifierIndex | None, phi: bool, phi_kinds: Iterable[str] | None
) -> Iterator[Finding]:
    if index is not None:
        for m in index.find(text):
            yield Finding("identifier", m.start, m.end, m.value_kind)
    if phi:
        for p in scan_phi(text, phi_kinds):
            yield Finding("phi:" + p.kind, p.start, p.end)


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
    found = list(_plain(text, index, phi, kinds))
    if decode:
        found.extend(_encoded(text, index, phi, kinds, depth=1))
    found.sort(key=lambda f: (f.start, -f.end, f.kind))
    out: list[Finding] = []
    seen: set[tuple[str, int, int]] = set()
    for f in found:
        key = (f.kind, f.start, f.end)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _encoded(
    text: str,
    index: IdentifierIndex | None,
    phi: bool,
    kinds: list[str] | None,
    depth: int,
) -> Iterator[Finding]:
    for name, pattern, decoder, worth in _DECODERS:
        if not worth(text):
            continue
        for m in pattern.finditer(text):
            span = m.group(0)
            decoded = decoder(span)
            if not decoded:
                continue
            inner = list(_plain(decoded, index, phi, kinds))
            if depth < MAX_DEPTH:
                inner.extend(_encoded(decoded, index, phi, kinds, depth + 1))
            for f in inner:
                yield Finding(f"encoded:{name}+{f.kind}", m.start(), m.end(), f.column)
    # Reversed text: identifiers written backwards. (PHI patterns are not run on it: reversed
    # tables of numbers take phone-like shapes.)
    if index is not None:
        n = len(text)
        for f in _plain(text[::-1], index, False, kinds):
            yield Finding(f"encoded:reversed+{f.kind}", n - f.end, n - f.start, f.column)
