"""One scan of outgoing text for identifiers and PHI, also inside encoded forms.

Both guard layers — the in-kernel guard and the sentry at the boundary — call `scan_text` on
every message they let out, so the two layers judge text by the same rules. It runs the
identifier index and the PHI patterns on the text as it is, and on what the text decodes to when
part of it is base64, hex, percent-encoding, a long integer holding UTF-8 bytes
(`int.from_bytes(s.encode(), "big")`), a list of character codes, or the text reversed, and
in the encodings of `_encodings` (base32, base85, Ascii85, uuencode, escapes, quoted-printable,
bit strings; compressed, UTF-16/32 and binary data inside base64 and the like); rot13 forms are
in the identifier index itself. A `Finding` says what was found and where (character offsets
of the text as given, i.e. of the encoded span); it never carries the value.

Cost on long outputs: candidate spans of every encoding come from one pass of the compiled core
over the text (`_tokens.text_spans`, shared with the PHI patterns; the vectorised numpy runs of
`_spans_reference` serve when it is not built and are what it is tested against); each distinct
span is decoded once per call (long outputs repeat ids, hashes and rows), each distinct decoded
text is scanned once, and the output, its reversal and all decoded texts go through the
identifier index (an ASCII output is lower-cased once and searched forwards and reversed from
one tokenization, `IdentifierIndex._find_both`: the reversal's tokens are the output's read
backwards, so neither the reversed text nor its tokens are made again). The PHI patterns and
the character-code pattern run only on windows where they can match (see `phi` and `_spans`).
Identifier matches are taken without `find`'s strength and match objects: the strength of every
finding is weighed once, together, at the end. On an ASCII output of `PARALLEL_MIN_CHARS` or
more, the first `THREAD_SHARE` of the index pass runs in a thread of its own while this thread
runs the PHI patterns and decoders and then the rest of the pass (the compiled matcher releases
the GIL), so a megabyte's scan keeps two cores busy rather than one.
"""

from __future__ import annotations

import _thread
import base64
import binascii
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bedside.policy import _encodings as _enc
from bedside.policy._display import with_display_findings
from bedside.policy._separated import separated_findings
from bedside.policy._tokens import TextSpans, code_units, lower_bytes, text_spans
from bedside.policy.identifiers import ROT13_PREFIX, STRONG, WEAK, IdentifierIndex, strengthen
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
    strength: str = STRONG  # "weak": a date-of-birth value alone (see `findings_block`)


# Candidate spans of each encoding come from byte-class runs (`_spans`); minimum lengths keep
# ordinary words and numbers out.
# Lists of character codes ("[74, 111, 104, 110]"): printable ASCII codes, six or more.
_ORDS = re.compile(
    r"(?<![\d.])(?:(?:3[2-9]|[4-9]\d|1[01]\d|12[0-6])\s*,\s*){5,}"
    r"(?:3[2-9]|[4-9]\d|1[01]\d|12[0-6])(?![\d.])"
)

MAX_DEPTH = 2  # decode an encoded span at most twice (e.g. hex inside base64)
_ASCII_FAST = True  # see scan_text; the tests turn it off to compare with the general path
# An ASCII output at least this long has the first `THREAD_SHARE` of its index pass (forwards
# and reversed, `IdentifierIndex._find_both`) run in a thread of its own while this one runs the
# PHI patterns, decodes spans and then takes the rest of the pass: the compiled matcher releases
# the GIL, so on a 1 MB output the two overlap on two cores instead of following each other (a
# thread costs ~0.1 ms to start, nothing next to the ~3 ms the whole pass takes on a megabyte).
# The share balances the thread with the ~1 ms of other work this one does first. 0 turns it
# off (the tests compare both).
PARALLEL_MIN_CHARS = 256 * 1024
THREAD_SHARE = 0.6


class _Pass:
    """The core's forward and reversed matches of one part of an ASCII output's lower-cased bytes
    (`IdentifierIndex._both_part`), found in a thread of its own (fork-safe: nothing kept
    between calls).

    The thread is started without waiting for it to run (`threading.Thread.start` waits until
    the new thread has taken the GIL once, which on a busy machine costs the caller a
    millisecond or more before it can scan anything itself); its end is a lock it releases.
    If the thread cannot start (a sandbox's process limit counts threads), the pass runs in
    the caller's thread when its result is asked for; an error in the thread is raised there.
    """

    def __init__(self, index: IdentifierIndex, raw: bytes, start: int, stop: int) -> None:
        self._work: tuple[IdentifierIndex, bytes, int, int] = (index, raw, start, stop)
        self._result: tuple[bytes, bytes] | None = None
        self._error: BaseException | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()
        try:
            self.start()
            self._running = True
        except RuntimeError:
            self._running = False

    def start(self) -> None:
        _thread.start_new_thread(self._thread, ())

    def _thread(self) -> None:
        try:
            self.run()
        finally:
            self._done.release()

    def run(self) -> None:
        try:
            index, raw, start, stop = self._work
            self._result = index._both_part(raw, start, stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc

    def result(self) -> tuple[bytes, bytes]:
        if not self._running:
            self.run()
        else:
            self._done.acquire()
            self._done.release()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _decode_base64(span: str) -> list[_enc.Reading] | None:
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
        readings: list[_enc.Reading] = _enc.bytes_readings(data, len(span))
        if readings:
            return readings
    return None


def _decode_hex(span: str) -> list[_enc.Reading] | None:
    compact = re.sub(r"[\s:]", "", span)
    if compact.lower().startswith(("0x", "\\x")):
        compact = compact[2:]
    if len(compact) % 2 or compact.isdigit():
        return None
    try:
        data = bytes.fromhex(compact)
    except ValueError:
        return None
    if len(compact) in _DIGEST_HEX:
        # A digest (MD5, SHA-1, SHA-2): read only as text, not for the runs of its bytes.
        text = _enc.printable(data)
        return [("", text)] if text is not None else None
    readings: list[_enc.Reading] = _enc.bytes_readings(data, len(span))
    return readings


# Lengths of hex digests: outputs list thousands of them, and their random bytes hold printable
# runs (one in eight SHA-256s) that would only cost time and risk chance matches.
_DIGEST_HEX = frozenset({32, 40, 56, 64, 96, 128})


def _decode_percent(span: str) -> str | None:
    decoded = urllib.parse.unquote_plus(span)
    return decoded if decoded != span else None


def _decode_int(span: str) -> str | None:
    value = int(span)
    size = (value.bit_length() + 7) // 8
    text: str | None = _enc.printable(value.to_bytes(size, "big"))
    if text is None:
        text = _enc.printable(value.to_bytes(size, "little"))
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
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Maximal runs of code units in `table`, at least `min_len` long (character offsets)."""
    inside = np.zeros(len(data) + 2, dtype=np.int8)
    inside[1:-1] = table[data]
    edges = np.flatnonzero(np.diff(inside))
    starts, ends = edges[0::2], edges[1::2]
    keep = ends - starts >= min_len
    return starts[keep], ends[keep]


def _pairs(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> Iterator[tuple[int, int]]:
    return zip(starts.tolist(), ends.tolist(), strict=True)


def _spans(text: str, name: str, spans: TextSpans | None) -> Iterator[tuple[int, int]]:
    """Candidate spans of one encoding in `text` (character offsets).

    `spans` are the text's candidate runs from the compiled core (`_tokens.text_spans`); without
    them (not built) the numpy reference path finds the same.
    """
    if name in _ENC_SPANS:
        yield from _ENC_SPANS[name](text, spans)
    elif spans is None:
        yield from _spans_reference(text, name, code_units(text))
    elif name == "base64":
        yield from spans.base64
    elif name == "hex":
        yield from spans.hex
        yield from _spaced_hex(text, spans.spaced_hex)
    elif name == "int":
        yield from spans.int
    elif name == "ords":
        # Every match lies in one run of digits, white space and commas with 5 commas or more,
        # and the pattern looks behind its start (which `pos` allows) and one character past
        # its end (included in the run's span): window by window finds what the whole text does.
        for lo, hi in spans.ords:
            for m in _ORDS.finditer(text, lo, hi):
                yield m.start(), m.end()
    else:  # percent: the text's "%" escapes, found by a regex with a literal prefix
        yield from _spans_reference(text, name, _NO_UNITS)


_NO_UNITS = np.empty(0, dtype=np.uint8)


def _spaced_hex(text: str, runs: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    for start, end in runs:
        spaced = _SPACED_HEX.search(text, start, end)
        if spaced is not None and spaced.end() - spaced.start() >= 14:
            yield spaced.start(), spaced.end()


def _spans_reference(
    text: str, name: str, data: npt.NDArray[np.uint8]
) -> Iterator[tuple[int, int]]:
    """Candidate spans of one encoding in `text` (character offsets); `data` its code units.

    Every filter is vectorised over all runs at once, so ordinary text costs a few passes over
    its code units and no Python per run.
    """
    if name in _ENC_SPANS:
        yield from _ENC_SPANS[name](text, None)
        return
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
    if name == "base64":
        # Base64 of text mixes upper- and lower-case letters (a 12-character run lacks one
        # case with probability under 1 %); words, numbers and snake_case names do not.
        st, en = _runs(data, _BASE64_BYTES, 12)
        if len(st):
            upper = np.concatenate(([0], np.cumsum(_UPPER_BYTES[data], dtype=np.int32)))
            lower = np.concatenate(([0], np.cumsum(_LOWER_BYTES[data], dtype=np.int32)))
            mixed = (upper[en] > upper[st]) & (lower[en] > lower[st])
            yield from _pairs(st[mixed], en[mixed])
    elif name == "hex":
        yield from _pairs(*_runs(data, _HEX_BYTES, 10))
        st, en = _runs(data, _SPACED_HEX_BYTES, 14)
        if len(st):
            # Hex dumps of text have letters a-f; space-separated decimals are table rows. Five
            # pairs (ten hex digits) at least, or the pattern below cannot match.
            letters = np.concatenate(([0], np.cumsum(_HEX_LETTER_BYTES[data], dtype=np.int32)))
            digits = np.concatenate(([0], np.cumsum(_HEX_BYTES[data], dtype=np.int32)))
            has = (letters[en] > letters[st]) & (digits[en] - digits[st] >= 10)
            yield from _spaced_hex(text, _pairs(st[has], en[has]))
    elif name == "int":
        st, en = _runs(data, _DIGIT_BYTES, 7)
        if len(st):
            n = len(data)
            before = data[np.maximum(st - 1, 0)]
            after = data[np.minimum(en, n - 1)]
            ok = ((st == 0) | (before != 46)) & ((en == n) | (after != 46))  # 46: "."
            yield from _pairs(st[ok], en[ok])


def _int_runs(text: str, spans: TextSpans | None) -> list[tuple[int, int]]:
    if spans is not None:
        runs: list[tuple[int, int]] = spans.int
        return runs
    return list(_spans_reference(text, "int", code_units(text)))


def _dense_windows(text: str, spans: TextSpans | None) -> Iterator[tuple[int, int]]:
    """Dense runs (base32, base85, Ascii85), and the uuencode windows around them when wider
    (uuencoded lines can hold spaces: `_enc.decode_dense` tells them by their spaces)."""
    last = -1
    for start, end in _enc.dense_spans(text, native=spans is not None):
        yield start, end
        if start >= last and not _enc.has_lower(text, start, end):
            a, last = _enc.uu_window(text, start, end)
            if (a, last) != (start, end):
                yield a, last
    yield from _enc.uu_short_spans(text)


# The encodings of `_encodings`: where their spans are (name -> spans of a text).
_ENC_SPANS: dict[str, Callable[[str, TextSpans | None], Iterable[tuple[int, int]]]] = {
    "dense": _dense_windows,
    "escapes": lambda text, spans: _enc.escape_spans(text),
    "quoted-printable": lambda text, spans: _enc.qp_spans(text),
    "bits": lambda text, spans: _enc.bit_spans(text, _int_runs(text, spans)),
}

_Decoded = str | list[_enc.Reading] | None
_DECODERS: tuple[tuple[str, Callable[[str], _Decoded]], ...] = (
    ("base64", _decode_base64),
    ("hex", _decode_hex),
    ("percent", _decode_percent),
    ("int", _decode_int),
    ("ords", _decode_ords),
    ("dense", _enc.decode_dense),  # base32, base85, Ascii85, uu: they name themselves
    ("escapes", _enc.decode_escapes),
    ("quoted-printable", _enc.decode_qp),
    ("bits", _enc.decode_bits),
)
_DECODER = dict(_DECODERS)
_SELF_NAMED = frozenset({"dense"})


# A decoded layer: (prefix such as "encoded:base64+", its text, whether it is a reversal or the
# printable runs of binary data: such layers only go through the identifier index).
_Layer = tuple[str, str, bool]
_Cache = dict[tuple[str, str, int], list[_Layer]]


def _inner_layers(text: str, depth: int, want_reversed: bool, cache: _Cache) -> list[_Layer]:
    """Every layer decoded from spans of `text` (itself decoded `depth - 1` times)."""
    out: list[_Layer] = []
    spans = text_spans(text)
    for name, _ in _DECODERS:
        for start, end in _spans(text, name, spans):
            out.extend(_span_layers(name, text[start:end], depth, want_reversed, cache))
    if want_reversed:
        # Identifiers written backwards. PHI patterns are not run on reversed text: reversed
        # tables of numbers take phone-like shapes.
        out.append(("encoded:reversed+", text[::-1], True))
    return out


def _span_layers(
    name: str, chunk: str, depth: int, want_reversed: bool, cache: _Cache
) -> list[_Layer]:
    """The layers one encoded span decodes to. Memoised per call of `scan_text`: long outputs
    repeat the same spans (ids, hashes, table rows), and each distinct one is decoded once."""
    key = (name, chunk, depth)
    hit = cache.get(key)
    if hit is not None:
        return hit
    decoder = _DECODER[name]
    decoded = decoder(chunk)
    layers: list[_Layer] = []
    readings = [("", decoded)] if isinstance(decoded, str) else decoded or []
    for sub, text in readings:
        # ("zlib+", ...): what the decoded bytes were; a name without "+" is a finding itself
        prefix = "encoded:" + ("" if name in _SELF_NAMED else name + "+") + sub
        if not text and prefix.endswith("+"):
            continue
        runs = prefix.endswith(_enc.STRINGS)
        layers.append((prefix, text, runs))
        if text and depth < MAX_DEPTH and not runs:
            for p, t, r in _inner_layers(text, depth + 1, want_reversed, cache):
                layers.append((prefix + p, t, r))
    cache[key] = layers
    return layers


def _decoded_segments(
    text: str, want_reversed: bool, spans: TextSpans | None
) -> list[tuple[int, int, _Layer]]:
    """(start, end, layer) for every decoded layer of every encoded span of `text`."""
    cache: _Cache = {}
    out: list[tuple[int, int, _Layer]] = []
    for name, _ in _DECODERS:
        for start, end in _spans(text, name, spans):
            for layer in _span_layers(name, text[start:end], 1, want_reversed, cache):
                out.append((start, end, layer))
    return out


def scan_text(
    text: str,
    index: IdentifierIndex | None,
    *,
    phi: bool = True,
    decode: bool = True,
    phi_kinds: Iterable[str] | None = None,
    display: bool = True,
) -> list[Finding]:
    """Identifier values and PHI in `text`, also inside encoded spans, ordered by position.

    With `display`, also in what a reader sees when the text is displayed (escape sequences,
    overwrites, markup and invisible characters acted on, look-alike letters read as ASCII;
    see `_display`): such findings are "encoded:display+<kind>" over the whole text.

    `index` may be None when no dataset is loaded (PHI patterns still run). `phi_kinds`
    restricts the PHI patterns (a policy's `enabled_phi_patterns`). A finding of a date column
    is "weak" unless it sits beside another finding or in a listing (see `strengthen`);
    `findings_block` says whether the findings should stop the text.
    """
    kinds = None if phi_kinds is None else list(phi_kinds)
    # (kind, start, end, column) of every finding; `Finding`s are made once, at the end.
    found: list[tuple[str, int, int, str]] = []
    n = len(text)
    want_reversed = index is not None
    ascii_fast = _ASCII_FAST and index is not None and text.isascii()
    thread: _Pass | None = None
    raw = b""
    cut = int(n * THREAD_SHARE)
    if ascii_fast and PARALLEL_MIN_CHARS and n >= PARALLEL_MIN_CHARS:
        assert index is not None
        if index._matcher is not None:
            raw = lower_bytes(text)
            thread = _Pass(index, raw, 0, cut)
    spans = text_spans(text) if phi or decode else None
    if phi:
        for p in scan_phi(text, kinds, spans=spans):
            found.append(("phi:" + p.kind, p.start, p.end, ""))
    layers: list[tuple[int | None, int, _Layer]] = []
    if decode:
        layers.extend(_decoded_segments(text, want_reversed, spans))
    # An ASCII output is lower-cased once, and searched forwards and backwards (its reversed
    # bytes are its reversal's) apart from the decoded texts; any other goes with the decoded
    # texts, its reversal among them, so that all are lower-cased alike (see `lower_bytes`).
    reversed_hits: list[tuple[str, str, int, int]] = []
    if want_reversed and not ascii_fast:
        layers.append((None, 0, ("encoded:reversed+", text[::-1], True)))
    # Each distinct decoded text is scanned once; its findings are reported at every span it
    # was decoded from.
    distinct: dict[_Layer, int] = {}
    for _, _, layer in layers:
        distinct.setdefault(layer, len(distinct))
    inner: list[list[tuple[str, str, int, int]]] = [[] for _ in distinct]
    if index is not None and ascii_fast:
        if thread is not None:
            rest = index._both_part(raw, cut, n)
            forwards, backwards = index._find_both(text, raw, [thread.result(), rest])
        else:
            forwards, backwards = index._find_both(text, lower_bytes(text))
        for a, b, column in forwards:
            found.append(("identifier", a, b, column))
        for a, b, column in backwards:
            reversed_hits.append(("identifier", column, a, b))
        # One index pass over every decoded text (`_find_each`).
        for i, a, b, column in index._find_each([layer[1] for layer in distinct]):
            inner[i].append(("identifier", column, a, b))
    elif index is not None:
        # One index pass over the output and every decoded text (`_find_each`). The matches'
        # strength is weighed below, over all findings together.
        texts = [text, *(layer[1] for layer in distinct)]
        for i, a, b, column in index._find_each(texts):
            if i == 0:
                found.append(("identifier", a, b, column))
            else:
                inner[i - 1].append(("identifier", column, a, b))
    if phi:
        for layer, i in distinct.items():
            if not layer[2]:
                inner[i].extend(
                    ("phi:" + p.kind, "", p.start, p.end) for p in scan_phi(layer[1], kinds)
                )
    for start, end, layer in layers:
        prefix = layer[0]
        if not prefix.endswith("+"):
            # Decoded data that says something by itself (`_encodings.OVER_LIMIT`): the
            # "column" is what the guards' notices name.
            found.append((prefix, start or 0, end, _enc.OVER_LIMIT_WHAT))
            continue
        for kind, column, a, b in inner[distinct[layer]]:
            if start is None:
                # The whole output reversed: offsets map back onto the output.
                found.append((prefix + kind, n - b, n - a, column))
            else:
                found.append((prefix + kind, start, end, column))
    for kind, column, a, b in reversed_hits:
        # The whole output reversed: offsets map back onto the output.
        found.append(("encoded:reversed+" + kind, n - b, n - a, column))
    if decode and index is not None:
        # Values whose characters are spaced out or regrouped (`_separated`).
        found.extend(separated_findings(text, index))
    weak_at: list[bool] | None = None
    if index is not None and index.date_kinds:
        dates = index.date_kinds
        weak = [k.endswith("identifier") and c in dates for k, _, _, c in found]
        if any(weak):
            weak_at = strengthen(text, [(a, b) for _, a, b, _ in found], weak)
    # By position (longest first), then kind; a finding repeated (same kind and span) counts
    # once, the first of it (the index makes the order stable).
    order = sorted((a, -b, k, i) for i, (k, a, b, _) in enumerate(found))
    out: list[Finding] = []
    last: tuple[int, int, str] | None = None
    for a, minus_b, k, i in order:
        if (a, minus_b, k) == last:
            continue
        last = (a, minus_b, k)
        strength = WEAK if weak_at is not None and weak_at[i] else STRONG
        column = found[i][3]
        if column.startswith(ROT13_PREFIX):
            # The index holds the rot13 forms of values under columns of their own.
            column = column[len(ROT13_PREFIX) :]
            # (inside another layer the kind reads "encoded:<enc>+rot13+identifier")
            rot13 = "rot13+identifier" if k.startswith("encoded:") else "encoded:rot13+identifier"
            k = k[: -len("identifier")] + rot13
        out.append(Finding(k, a, -minus_b, column, strength))
    if display:

        def scan_view(view: str) -> list[Finding]:
            return scan_text(view, index, phi=phi, decode=decode, phi_kinds=kinds, display=False)

        shown: list[Finding] = with_display_findings(text, out, scan_view)
        return shown
    return out


def findings_block(findings: Iterable[Finding]) -> bool:
    """Whether `findings` should stop the text they came from: any strong finding does.

    Weak findings (a date of birth alone) are for the guards to log or count, not to block on.
    """
    return any(f.strength == STRONG for f in findings)
