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

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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
# Non-ASCII characters that are neither letters nor digits («, —, █, emoji) are separators.
_NON_ASCII_SEPARATOR = re.compile(r"[^\w\x00-\x7f]")
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

    Non-ASCII punctuation becomes a space (one character for one, so character offsets of
    the result are those of `text`).
    """
    if text.isascii():
        return text.encode("ascii").translate(_LOWER)
    lowered = text.lower()
    if len(lowered) != len(text):
        # A few characters lower-case to two (e.g. U+0130); keep offsets right instead.
        lowered = text
    lowered = _NON_ASCII_SEPARATOR.sub(" ", lowered)
    return lowered.encode("utf-8", "surrogatepass").translate(_LOWER)


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
    """The 8 bytes at byte offsets `pos` of the padded buffer, as little-endian words.

    Built from the two aligned words around each offset, which is much cheaper than copying
    an overlapping (stride-1) view of the whole buffer.
    """
    q = pos >> 3
    r = (pos & 7).astype(np.uint64) << np.uint64(3)
    lo = aligned[q]
    hi = aligned[q + 1]
    # hi << (64 - r) without a 64-bit shift (undefined in C) when r == 0.
    word: U64 = (lo >> r) | ((hi << np.uint64(8)) << (np.uint64(56) - r))
    return word


def tokenize(buf: U8) -> Tokens:
    """Split a lower-cased UTF-8 byte buffer into tokens and hash each one."""
    n = len(buf)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return Tokens(empty, empty, np.empty(0, np.bool_), np.empty(0, np.uint64), empty)
    digit = (buf - np.uint8(48)) < 10
    letter = ((buf - np.uint8(97)) < 26) | (buf >= 128)
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

    padded = np.zeros(((n + 3 * _PAD) // 8) * 8, dtype=np.uint8)
    padded[_PAD : _PAD + n] = buf
    words = padded.view("<u8")

    h = _word_at(words, hstart + _PAD) & LOW[np.minimum(length, 8)]
    h ^= length.astype(np.uint64) * _LEN_SALT
    more = np.flatnonzero((length > 8) & (length <= MAX_TOKEN))
    j = 1
    while len(more):
        rest = length[more] - 8 * j
        word = _word_at(words, hstart[more] + (_PAD + 8 * j)) & LOW[np.minimum(rest, 8)]
        h[more] = (h[more] * _MUL1) ^ word
        more = more[rest > 8]
        j += 1
    h = mix(h)
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


def group_gaps_ok(buf: U8, tok: Tokens) -> B:
    """For each pair of neighbouring tokens: both digits, in one written number.

    Groups of one number are joined by one space or '-' ("020 7946-0123"), or by a parenthesis
    with an optional space ("(020) 7946", "+44 (0)20"). Dots and wider gaps are left out: they
    join the decimals and columns of ordinary tables, not phone numbers.
    """
    if len(tok) < 2:
        return np.zeros(0, dtype=np.bool_)
    gap_start = tok.end[:-1]
    width = tok.start[1:] - gap_start
    ok = tok.is_digit[:-1] & tok.is_digit[1:] & (width <= 2)
    idx = np.flatnonzero(ok)
    if len(idx):
        c1 = buf[gap_start[idx]]
        c2 = buf[np.minimum(gap_start[idx] + 1, len(buf) - 1)]
        one = width[idx] == 1
        paren = (c1 == ord(")")) | (c2 == ord("("))
        spaced = ((c1 == ord(" ")) | (c1 == ord(")"))) & ((c2 == ord(" ")) | (c2 == ord("(")))
        good = np.where(one, (c1 == ord(" ")) | (c1 == ord("-")), paren & spaced)
        ok[idx] = good
    return ok
