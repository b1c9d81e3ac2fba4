"""Vectorised tokenising and hashing shared by the identifier index and the text it scans.

Both the index (built from identifier values) and the scanner (run on every output) turn text
into the same tokens and the same 64-bit hashes with these functions, so a value and its
occurrence in an output hash alike by construction.

A *token* is a maximal run of letters or a maximal run of digits (bytes >= 0x80 count as
letters, so UTF-8 names stay whole). Splitting letters from digits makes `MRN00012345`,
`mrn-12345` and `MRN 00012345` the same token sequence, and `1956-03-12T00:00` keep its date.
A digit token is normalised by dropping leading zeros (`03` == `3`), which makes dates and
phone groups match however they are padded. Text is lower-cased before hashing.

Hashes: a polynomial hash of each token's bytes modulo 2**64 (via prefix sums, so all tokens of
a text are hashed in a few numpy passes), folded left to right for a sequence of tokens and then
passed through the splitmix64 finaliser. Collisions only ever cause false positives (a harmless
extra block), never a missed identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

_MASK = (1 << 64) - 1
_P = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_C = 0xC2B2AE3D27D4EB4F  # folds token hashes of a sequence
_K = 0x165667B19E3779F9  # separates sequence lengths

SEP, DIGIT, LETTER = 0, 1, 2
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[ord("0") : ord("9") + 1] = DIGIT
_CLASS[ord("a") : ord("z") + 1] = LETTER
_CLASS[ord("A") : ord("Z") + 1] = LETTER
_CLASS[0x80:] = LETTER
_LOWER = bytes.maketrans(bytes(range(ord("A"), ord("Z") + 1)), bytes(range(ord("a"), ord("z") + 1)))
# Separators allowed between the digit groups of one number ("020 7946-0123", "(0161) 496").
_GROUP_SEP = np.zeros(256, dtype=np.bool_)
for _ch in " -.()/+":
    _GROUP_SEP[ord(_ch)] = True

_pow_cache: dict[str, U64] = {}


def _powers(n: int) -> tuple[U64, U64]:
    """P**j and P**-j modulo 2**64 for j < n (cached, grown by doubling)."""
    have = _pow_cache.get("p")
    if have is None or len(have) < n:
        size = max(1 << 16, 1 << max(n - 1, 1).bit_length())
        p = np.full(size, _P, dtype=np.uint64)
        p[0] = 1
        q = np.full(size, _P_INV, dtype=np.uint64)
        q[0] = 1
        _pow_cache["p"] = np.cumprod(p, dtype=np.uint64)
        _pow_cache["q"] = np.cumprod(q, dtype=np.uint64)
    return _pow_cache["p"], _pow_cache["q"]


def mix(h: U64) -> U64:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def length_salt(k: int) -> np.uint64:
    return np.uint64((k * _K) & _MASK)


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
    """The tokens of one buffer: byte spans, kinds and hashes (unmixed polynomials)."""

    start: I64  # byte offset of the first byte
    end: I64  # byte offset after the last byte
    norm_start: I64  # start after leading zeros of digit tokens
    is_digit: B
    h_raw: U64  # hash of bytes [start, end)
    h_norm: U64  # hash of bytes [norm_start, end)

    def __len__(self) -> int:
        return len(self.start)


def tokenize(buf: U8, *, want_raw: bool = True) -> Tokens:
    """Split a lower-cased UTF-8 byte buffer into tokens and hash each one."""
    n = len(buf)
    cls = _CLASS[buf]
    # A token starts wherever the class changes to a non-separator class.
    edge = np.empty(n + 1, dtype=np.uint8)
    edge[0] = SEP
    edge[1:] = cls
    change = edge[1:] != edge[:-1]
    start = np.flatnonzero(change & (cls != SEP))
    # A token ends where the next token or a separator begins.
    boundary = np.flatnonzero(change)
    nxt = np.searchsorted(boundary, start, side="right")
    end = np.append(boundary, n)[nxt]
    is_digit = cls[start] == DIGIT

    p, q = _powers(n + 1)
    prefix = np.empty(n + 1, dtype=np.uint64)
    prefix[0] = 0
    np.cumsum(buf.astype(np.uint64) * p[:n], out=prefix[1:])

    # Leading zeros of digit tokens: first non-'0' byte at or after the start, kept in-token.
    norm_start = start.copy()
    if is_digit.any():
        nonzero = np.flatnonzero(buf != ord("0"))
        nonzero = np.append(nonzero, n)
        ds = start[is_digit]
        first = nonzero[np.searchsorted(nonzero, ds)]
        norm_start[is_digit] = np.minimum(first, end[is_digit] - 1)

    h_norm = (prefix[end] - prefix[norm_start]) * q[norm_start]
    if want_raw:
        h_raw = (prefix[end] - prefix[start]) * q[start]
    else:
        h_raw = h_norm
    return Tokens(start, end, norm_start, is_digit, h_raw, h_norm)


def fold_windows(h_norm: U64, k: int) -> U64:
    """Mixed hash of every window of `k` consecutive tokens (length len(h) - k + 1)."""
    m = len(h_norm) - k + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = h_norm[:m].copy()
    c = np.uint64(_C)
    for j in range(1, k):
        acc *= c
        acc += h_norm[j : j + m]
    acc += length_salt(k)
    return mix(acc)


def single_hash(h_norm: U64) -> U64:
    """Mixed hash of single tokens (same space as `fold_windows(h, 1)` and joined digits)."""
    return mix(h_norm + length_salt(1))


def concat(h_left: U64, len_left: I64, h_right: U64) -> U64:
    """Polynomial hash of the concatenation of two byte strings from their hashes."""
    p, _ = _powers(int(len_left.max(initial=0)) + 1)
    return h_left + h_right * p[len_left]


def group_gaps_ok(buf: U8, tok: Tokens, max_gap: int = 2) -> B:
    """For each pair of neighbouring tokens: both digits, joined by at most `max_gap` separators
    of one number (space, '-', '.', '(', ')', '/', '+')."""
    if len(tok) < 2:
        return np.zeros(0, dtype=np.bool_)
    gap_start = tok.end[:-1]
    gap_end = tok.start[1:]
    width = gap_end - gap_start
    ok = tok.is_digit[:-1] & tok.is_digit[1:] & (width >= 1) & (width <= max_gap)
    idx = np.flatnonzero(ok)
    if len(idx):
        good = _GROUP_SEP[buf[gap_start[idx]]]
        two = width[idx] == 2
        good[two] &= _GROUP_SEP[buf[gap_start[idx][two] + 1]]
        ok[idx] = good
    return ok
