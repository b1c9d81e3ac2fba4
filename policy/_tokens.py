"""Vectorised tokenising and hashing shared by the identifier index and the text it scans.

The index (built from identifier values) and the scanner (run on every output) turn text into
the same tokens and the same 64-bit hashes with these functions, so a value and its occurrence
in an output hash alike by construction.

A *token* is a maximal run of letters or a maximal run of digits (bytes >= 0x80 count as
letters, so UTF-8 names stay whole). Splitting letters from digits makes `MRN00012345`,
`mrn-12345` and `MRN 00012345` the same token sequence, and keeps the date in
`1956-03-12T00:00`. A digit token stands for its integer value, so `03` == `3` and leading zeros
never matter; digit groups concatenate arithmetically (`020` `7946` `0123` -> 2079460123), which
is how a phone number written in any grouping is recognised.

Hashing works on whole tokens, not bytes: each token's first 8 bytes are read as one
little-endian 64-bit word through an overlapping (stride-1) view of the buffer, longer tokens
add a word per 8 bytes, digit tokens are parsed to integers eight digits at a time with SWAR
arithmetic. That keeps the per-byte work to a few comparisons, which is what lets a 1 MB output
be scanned in a few milliseconds. Collisions only ever cause a false positive (an extra block),
never a missed identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

MAX_LETTERS = 64  # longer letter runs (base64 blobs, ...) are never identifier tokens
MAX_DIGITS = 19  # longest digit run that fits an unsigned 64-bit integer

_LEN_SALT = np.uint64(0x9E3779B97F4A7C15)
_LETTER_SALT = np.uint64(0x632BE59BD9B4E019)
_DIGIT_SALT = np.uint64(0x85EBCA77C2B2AE63)
_LONG_SALT = np.uint64(0x27D4EB2F165667C5)
SEQ_MUL = np.uint64(0xC2B2AE3D27D4EB4F)  # folds the token hashes of a sequence
_SEQ_SALT = 0x165667B19E3779F9

_LOWER = bytes.maketrans(bytes(range(ord("A"), ord("Z") + 1)), bytes(range(ord("a"), ord("z") + 1)))

# LOW[l]: mask of the low l bytes of a word.
LOW = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_ZEROS = np.uint64(0x3030303030303030)
POW10 = np.array([10**i for i in range(20)], dtype=np.uint64)
_PAD = 8


def mix(h: U64) -> U64:
    """splitmix64 finaliser: spreads a word over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def seq_salt(k: int) -> np.uint64:
    return np.uint64((k * _SEQ_SALT) & ((1 << 64) - 1))


def digit_hash(value: U64) -> U64:
    """Hash of a digit token (or a run of digit groups) from its integer value."""
    return mix(value ^ _DIGIT_SALT)


def lower_bytes(text: str) -> bytes:
    """UTF-8 bytes of `text`, lower-cased, with the same length in characters as `text`."""
    if text.isascii():
        return text.encode("ascii").translate(_LOWER)
    lowered = text.lower()
    if len(lowered) != len(text):
        # A few characters lower-case to two (e.g. U+0130); keep offsets right instead.
        return text.encode("utf-8", "surrogatepass").translate(_LOWER)
    return lowered.encode("utf-8", "surrogatepass")


@dataclass
class Tokens:
    """The tokens of one buffer: byte spans, kinds, hashes and digit values."""

    start: I64  # byte offset of the first byte
    end: I64  # byte offset after the last byte
    is_digit: B
    hash: U64  # token hash (digits: of the integer value)
    value: U64  # integer value of digit tokens (0 for letters and over-long digit runs)
    ndigits: I64  # significant digits of digit tokens (0 for letters)

    def __len__(self) -> int:
        return len(self.start)


def _parse8(x: U64) -> U64:
    """Eight ASCII digits packed little-endian (first digit lowest) -> their integer value."""
    x = x - _ZEROS
    x = (x * np.uint64(10) + (x >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x * np.uint64(100) + (x >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (x * np.uint64(10000) + (x >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


def _word_at(aligned: U64, pos: I64) -> U64:
    """The 8 bytes at byte offsets `pos` of the padded buffer, as little-endian words.

    Built from the two aligned words around each offset, which is much cheaper than copying
    an overlapping (stride-1) view of the whole buffer.
    """
    q = pos >> 3
    r = (pos & 7).astype(np.uint64) * np.uint64(8)
    lo = aligned[q]
    hi = aligned[q + 1]
    # hi << (64 - r) without a 64-bit shift (undefined in C) when r == 0.
    word: U64 = (lo >> r) | ((hi << np.uint64(8)) << (np.uint64(56) - r))
    return word


def _parse_head(word: U64, count: I64) -> U64:
    """Value of the first `count` (1..8) digits of `word` (bytes in text order)."""
    pad = (8 - count).astype(np.uint64)
    # Move the digits to the high bytes and fill the low bytes with ASCII '0'.
    return _parse8((word << (pad * np.uint64(8))) | (_ZEROS & LOW[pad]))


def tokenize(buf: U8) -> Tokens:
    """Split a lower-cased UTF-8 byte buffer into tokens and hash each one."""
    n = len(buf)
    digit = (buf - np.uint8(48)) < 10
    letter = ((buf - np.uint8(97)) < 26) | (buf >= 128)
    cls = digit.view(np.uint8) + (letter.view(np.uint8) << np.uint8(1))
    change = np.empty(n + 1, dtype=np.bool_)
    change[0] = cls[0] != 0 if n else False
    np.not_equal(cls[1:], cls[:-1], out=change[1:n])
    change[n] = True
    bounds = np.flatnonzero(change)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return Tokens(
            empty,
            empty,
            np.empty(0, np.bool_),
            empty.astype(np.uint64),
            empty.astype(np.uint64),
            empty,
        )
    kind = np.empty(len(bounds), dtype=np.uint8)
    kind[:-1] = cls[bounds[:-1]]
    kind[-1] = 0
    is_tok = np.flatnonzero(kind != 0)
    start = bounds[is_tok]
    end = bounds[is_tok + 1]
    is_digit = kind[is_tok] == 1
    length = end - start

    padded = np.zeros(((n + 3 * _PAD) // 8) * 8, dtype=np.uint8)
    padded[_PAD : _PAD + n] = buf
    words = padded.view("<u8")

    # One gather serves every token: its first eight bytes, read at its start.
    first = _word_at(words, start + _PAD)
    short = np.minimum(length, 8)

    # Letter tokens: word-wise hash of their bytes and length.
    h = (first & LOW[short]) ^ (length.astype(np.uint64) * _LEN_SALT)
    more = np.flatnonzero((length > 8) & ~is_digit)
    j = 1
    while len(more) and j * 8 < MAX_LETTERS:
        rest = length[more] - 8 * j
        word = _word_at(words, start[more] + _PAD + 8 * j) & LOW[np.minimum(rest, 8)]
        h[more] = mix(h[more]) ^ word
        more = more[rest > 8]
        j += 1
    h ^= _LETTER_SALT

    # Digit tokens: their integer value, parsed eight digits at a time.
    value = np.zeros(len(start), dtype=np.uint64)
    ndigits = np.zeros(len(start), dtype=np.int64)
    di = np.flatnonzero(is_digit)
    if len(di):
        dl = length[di]
        head = np.maximum(dl - 16, 0)  # digits before the last sixteen
        head = np.where(dl > 8, np.where(dl > 16, head, dl - 8), dl)
        v = _parse_head(first[di], head)
        mid = np.flatnonzero(dl > 8)
        if len(mid):
            # Eight more digits after the head, and eight more after those for 17-19 digits.
            pos = start[di[mid]] + _PAD + head[mid]
            v[mid] = v[mid] * POW10[8] + _parse8(_word_at(words, pos))
            top = mid[dl[mid] > 16]
            if len(top):
                pos = start[di[top]] + _PAD + head[top] + 8
                v[top] = v[top] * POW10[8] + _parse8(_word_at(words, pos))
        nd = np.searchsorted(POW10, v, side="right").astype(np.int64)
        nd[nd == 0] = 1
        too_long = dl > MAX_DIGITS
        if too_long.any():
            v[too_long] = 0
            nd[too_long] = MAX_DIGITS + 1
        value[di] = v
        ndigits[di] = nd
        h[di] = v ^ _DIGIT_SALT
    h = mix(h)
    long_letters = (length > MAX_LETTERS) & ~is_digit
    long_digits = (length > MAX_DIGITS) & is_digit
    too_long = long_letters | long_digits
    if too_long.any():
        h[too_long] = mix(length[too_long].astype(np.uint64) ^ _LONG_SALT)
    return Tokens(start, end, is_digit, h, value, ndigits)


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
