"""Vectorised tokenising and hashing shared by the identifier index and the text it scans.

The index (built from identifier values) and the scanner (run on every output) turn text into
the same tokens and the same 64-bit hashes with these functions, so a value and its occurrence
in an output hash alike by construction.

A *token* is a maximal run of letters or a maximal run of digits (non-ASCII letters count as
letters, so UTF-8 names stay whole; non-ASCII punctuation is a separator). Splitting letters
from digits makes `MRN00012345`, `mrn-12345` and `MRN 00012345` the same token sequence, and
keeps the date in `1956-03-12T00:00`. Leading zeros of a digit token are dropped before
hashing, so `03` == `3`.

Hashing works on whole tokens, not bytes: each token's first 8 bytes are read as one
little-endian 64-bit word (built from the two aligned words around it), longer tokens add a word
per 8 bytes, and a multiply/xor-shift finaliser spreads the bits. The per-byte work is a few
comparisons to find token boundaries, which is what lets a 1 MB output be scanned in
milliseconds. Collisions only ever cause a false positive (an extra block), never a miss.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

try:
    from bedside.policy import _scanner
except ImportError:  # not built (a source checkout without `pip install -e .`): numpy serves
    _scanner = None

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

MAX_TOKEN = 64  # longer runs (base64 blobs, hex dumps) are never identifier tokens

_LEN_SALT = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_LONG = np.uint64(0x27D4EB2F165667C5)
SEQ_MUL = np.uint64(0xC2B2AE3D27D4EB4F)  # folds the token hashes of a sequence
_SEQ_SALT = 0x165667B19E3779F9
_PAD = 8

_LOWER = bytes.maketrans(bytes(range(ord("A"), ord("Z") + 1)), bytes(range(ord("a"), ord("z") + 1)))
# Non-ASCII characters that are neither letters nor digits («, —, █, emoji) are separators:
# `tokenize` decodes the code point of each multi-byte character and looks it up here.
_alnum_bmp: list[B] = []


def _alnum_table() -> B:
    if not _alnum_bmp:
        _alnum_bmp.append(np.array([chr(i).isalnum() for i in range(0x10000)], dtype=np.bool_))
    return _alnum_bmp[0]


# The same set for Arrow's RE2, used when indexing values.
NON_ASCII_SEPARATOR_RE2 = r"[^\p{L}\p{N}\x00-\x7f]"

# LOW[l]: mask of the low l bytes of a word.
LOW = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def mix(h: U64) -> U64:
    """splitmix64 finaliser: spreads a word over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MUL1
    h = h ^ (h >> np.uint64(27))
    h = h * _MUL2
    return h ^ (h >> np.uint64(31))


def seq_salt(k: int) -> np.uint64:
    return np.uint64((k * _SEQ_SALT) & ((1 << 64) - 1))


def lower_bytes(text: str) -> bytes:
    """UTF-8 bytes of `text`, lower-cased, with the same length in characters as `text`.

    (Lower-casing that changes the length of the text, e.g. U+0130, is skipped so that
    character offsets of the result are those of `text`.)
    """
    if text.isascii():
        if _scanner is not None:
            # Sixteen bytes a step (SSE2; eight without): a fifth of the time of encode + translate.
            ascii_lowered: bytes = _scanner.lower_ascii(text)
            return ascii_lowered
        return text.encode("ascii").translate(_LOWER)
    if _scanner is not None:
        # One pass when only ASCII letters have a lower case (the usual non-ASCII output:
        # progress bars, box drawing, accented lower-case names).
        fast: bytes | None = _scanner.lower_utf8(text)
        if fast is not None:
            return fast
    lowered = text.lower()
    if len(lowered) != len(text):
        # A few characters lower-case to two (e.g. U+0130); keep offsets right instead.
        lowered = text
    return lowered.encode("utf-8", "surrogatepass").translate(_LOWER)


def has_ascii_digit(text: str) -> bool:
    """Whether `text` holds a digit 0-9: ten substring searches at memchr speed, far quicker on
    a long text than any regex or per-character loop."""
    return any(d in text for d in "0123456789")


def code_units(text: str) -> U8:
    """One byte per character of `text` (characters above U+00FF become 0xFF), so byte-class
    tables can find runs at character offsets whatever the text's script."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    units: U8 = np.minimum(points, 255).astype(np.uint8)
    return units


@dataclass
class Tokens:
    """The tokens of one buffer: byte spans, kinds and hashes."""

    start: I64  # byte offset of the first byte
    end: I64  # byte offset after the last byte
    is_digit: B
    hash: U64
    significant: I64  # length without the leading zeros of digit tokens

    def __len__(self) -> int:
        return len(self.start)


def _word_at(aligned: U64, pos: I64) -> U64:
    """The 8 bytes at byte offsets `pos` of a buffer, as little-endian words.

    `aligned` is the buffer viewed as 64-bit words, with at least one spare word at the end.
    Each word is built from the two aligned words around its offset, which is much cheaper than
    copying an overlapping (stride-1) view of the whole buffer.
    """
    q = pos >> 3
    r = ((pos & 7) << 3).view(np.uint64)
    lo = aligned[q]
    hi = aligned[q + 1]
    # hi << (64 - r) without a 64-bit shift (undefined in C) when r == 0.
    word: U64 = (lo >> r) | ((hi << np.uint64(8)) << (np.uint64(56) - r))
    return word


def _non_ascii_separators(buf: U8, letter: B) -> None:
    """Clear `letter` on the bytes of multi-byte characters that are not letters or digits."""
    lead = np.flatnonzero(buf >= 0xC0)
    if not len(lead):
        return
    n = len(buf)
    b0 = buf[lead].astype(np.int64)
    b1 = buf[np.minimum(lead + 1, n - 1)].astype(np.int64) & 0x3F
    b2 = buf[np.minimum(lead + 2, n - 1)].astype(np.int64) & 0x3F
    two = b0 < 0xE0
    three = (b0 >= 0xE0) & (b0 < 0xF0)
    cp = np.where(two, ((b0 & 0x1F) << 6) | b1, ((b0 & 0x0F) << 12) | (b1 << 6) | b2)
    alnum = np.where(two | three, _alnum_table()[np.minimum(cp, 0xFFFF)], False)
    bad = lead[~alnum]
    width = np.where(two, 2, np.where(three, 3, 4))[~alnum]
    for j in range(4):
        at = bad[j < width] + j
        letter[at[at < n]] = False


def tokenize(buf: U8) -> Tokens:
    """Split a lower-cased UTF-8 byte buffer into tokens and hash each one."""
    n = len(buf)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return Tokens(empty, empty, np.empty(0, np.bool_), np.empty(0, np.uint64), empty)
    digit = (buf - np.uint8(48)) < 10
    high = buf >= 128
    letter = ((buf - np.uint8(97)) < 26) | high
    if high.any():
        _non_ascii_separators(buf, letter)
    cls = digit.view(np.uint8) | (letter.view(np.uint8) << np.uint8(1))
    change = np.empty(n + 1, dtype=np.bool_)
    change[0] = True
    np.not_equal(cls[1:], cls[:-1], out=change[1:n])
    change[n] = True
    bounds = np.flatnonzero(change)
    kind = cls[bounds[:-1]]
    is_tok = np.flatnonzero(kind)
    start = bounds[is_tok]
    end = bounds[is_tok + 1]
    is_digit = kind[is_tok] == 1
    length = end - start

    # Drop leading zeros of digit tokens (keeping one digit): "0123" hashes as "123".
    hstart = start
    zero = np.flatnonzero((buf[start] == 48) & is_digit & (length > 1))
    if len(zero):
        hstart = start.copy()
        length = length.copy()
        while len(zero):
            hstart[zero] += 1
            length[zero] -= 1
            zero = zero[(buf[hstart[zero]] == 48) & (length[zero] > 1)]

    padded = np.zeros(((n + 2 * _PAD) // 8 + 1) * 8, dtype=np.uint8)
    padded[:n] = buf
    words = padded.view("<u8")

    h = _word_at(words, hstart) & LOW[np.minimum(length, 8)]
    h ^= length.astype(np.uint64) * _LEN_SALT
    more = np.flatnonzero((length > 8) & (length <= MAX_TOKEN))
    j = 1
    while len(more):
        rest = length[more] - 8 * j
        word = _word_at(words, hstart[more] + 8 * j) & LOW[np.minimum(rest, 8)]
        h[more] = (h[more] * _MUL1) ^ word
        more = more[rest > 8]
        j += 1
    # A bijective finaliser (odd multiply, xor-shift): distinct short tokens never collide.
    h *= _MUL2
    h ^= h >> np.uint64(29)
    too_long = np.flatnonzero(length > MAX_TOKEN)
    if len(too_long):
        # Over-long runs all hash to one value per length, which no index ever holds.
        h[too_long] = mix(length[too_long].astype(np.uint64) ^ _LONG)
    return Tokens(start, end, is_digit, h, length)


def fold(hashes: list[U64] | U64) -> U64:
    """Hash of token sequences given as k arrays (or a k x n array) of token hashes."""
    k = len(hashes)
    acc = np.array(hashes[0], dtype=np.uint64, copy=True)
    for j in range(1, k):
        acc *= SEQ_MUL
        acc += hashes[j]
    acc += seq_salt(k)
    return mix(acc)


def pair_key(first: U64, second: U64) -> U64:
    """Key of the first two tokens of a sequence (the index's prefilter)."""
    return first * SEQ_MUL + second


def group_gaps_ok(buf: U8, tok: Tokens) -> I64:
    """Tokens `i` such that tokens `i` and `i + 1` are digit groups of one written number.

    Groups of one number are joined by one space or '-' ("020 7946-0123"), or by a parenthesis
    with an optional space ("(020) 7946", "+44 (0)20"). Dots and wider gaps are left out: they
    join the decimals and columns of ordinary tables, not phone numbers. Groups of one digit are
    list items ("[0 1 0 1]"), not parts of a phone number.
    """
    wide = np.flatnonzero(tok.is_digit & (tok.end - tok.start >= 2))
    if len(wide) < 2:
        return np.empty(0, dtype=np.int64)
    idx = wide[:-1][wide[1:] == wide[:-1] + 1]
    gap_start = tok.end[idx]
    width = tok.start[idx + 1] - gap_start
    near = width <= 2
    idx, gap_start, width = idx[near], gap_start[near], width[near]
    c1 = buf[gap_start]
    c2 = buf[np.minimum(gap_start + 1, len(buf) - 1)]
    one = width == 1
    paren = (c1 == ord(")")) | (c2 == ord("("))
    spaced = ((c1 == ord(" ")) | (c1 == ord(")"))) & ((c2 == ord(" ")) | (c2 == ord("(")))
    good = np.where(one, (c1 == ord(" ")) | (c1 == ord("-")), paren & spaced)
    result: I64 = idx[good]
    return result


Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class TextSpans:
    """Where the decoders of `scan` and the patterns of `phi` can find something in a text.

    Found by the compiled core in one pass over the text (`_scanner.text_spans`); each is a list
    of (start, end) character offsets. `numbers` is None for texts shorter than 2048 characters
    (they are scanned whole).
    """

    base64: Spans  # runs of base64 characters, >= 12 long, mixing upper and lower case
    hex: Spans  # runs of hex digits, >= 10 long
    spaced_hex: Spans  # runs of hex digits, ' ' and ':', >= 14 long, with a-f and 10 hex digits
    int: Spans  # runs of ASCII digits, >= 7 long, with no '.' beside them
    numbers: Spans | None  # `phi._number_windows`
    # ords, ip: with the character after the run (what the patterns' look-ahead reads)
    ords: Spans  # runs of decimal digits, white space and commas with >= 5 commas
    ip: Spans  # runs of decimal digits and dots with >= 3 dots
    postcode: Spans  # around each letter (or non-ASCII) then digit where an inward code can follow
    has_digit: bool  # a decimal digit (`\d`) anywhere


def _pairs_of(raw: bytes) -> Spans:
    flat = array.array("q", raw)
    return list(zip(flat[0::2], flat[1::2], strict=True))


def text_spans(text: str) -> TextSpans | None:
    """The candidate spans of `text`, or None when the compiled core is not built."""
    if _scanner is None:
        return None
    b64, hx, shx, it, num, ords, ip, post, has_digit = _scanner.text_spans(text)
    return TextSpans(
        _pairs_of(b64),
        _pairs_of(hx),
        _pairs_of(shx),
        _pairs_of(it),
        _pairs_of(num) if len(text) >= 2048 else None,
        _pairs_of(ords),
        _pairs_of(ip),
        _pairs_of(post),
        bool(has_digit),
    )
