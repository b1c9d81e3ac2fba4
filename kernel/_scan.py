"""Text scans every outgoing message passes: identifiers, PHI, encoded forms and row structure.

The identifier index, the PHI patterns and the decoding of encoded spans (base64, hex, a big
integer of a value's bytes, ...) are `bedside.policy.scan_text`, which the sentry runs too. This
module adds what the kernel can do cheaply because it holds the tables: a structural check that
an output does not reproduce protected rows. The numbers of the text, read with every stride up
to `MAX_STRIDE` (one column, or several columns interleaved row by row), are compared as k-grams
with the k-grams of each high-cardinality numeric column in row order; the words of the text
likewise with single-token coded columns (diagnosis codes and the like).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd

from bedside.kernel._sequences import (
    MARGIN_BITS,
    ascii_table,
    find_tokens,
    shared_tokens,
    strided_match,
)
from bedside.policy import IdentifierIndex, scan_text
from bedside.policy._tokens import has_ascii_digit
from bedside.policy.identifiers import WEAK

K = 5  # consecutive numeric values that make a row-order match
K_LONG = 12  # consecutive numeric values of a column of common values (small counts)
K_CATEGORY = 8  # consecutive codes (e.g. diagnoses): categories repeat, so a longer run
MAX_CATEGORIES = 10_000
MAX_STRIDE = 8  # columns interleaved in a row-major print
MIN_DISTINCT = 20  # columns with fewer distinct values match any text by chance
MEMO_ENTRIES = 256  # scanned texts whose findings `TextScanner.scan` remembers
MEMO_MAX_CHARS = 16_384  # longer texts are scanned every time (bounds the memo's memory)
_P = np.uint64(1_000_003)
# A number not glued to a word or a decimal point before it: `(?<![\w.])-?\d+...` written to
# start with the character class [\d-], which lets the regex engine skip ahead to candidate
# characters instead of trying the look-behind at every position of a long text (about twice
# as fast on ordinary prose). The look-behind reads the character before the one consumed.
_NUM = re.compile(r"[\d-](?<![\w.][\d-])(?:(?<=-)\d+|(?<!-)\d*)(?:\.\d*)?(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Finding:
    """Why a text was refused: the rule and, never the value, the kind of what matched."""

    rule: str
    kind: str
    encoding: str = ""


def _kgram_hashes(q: np.ndarray, k: int = K) -> np.ndarray:
    """Polynomial hashes of every k consecutive quantised values (uint64, wrapping)."""
    m = q.size - k + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    u = q.astype(np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * _P + u[j : j + m]
    return h


def _strided_match(hashes: np.ndarray, q: np.ndarray, k: int) -> bool:
    """Does any k-gram of q, read with stride 1..MAX_STRIDE, occur in the sorted hashes?

    The k-grams of stride s over all offsets are those starting at every position i with
    i + (k-1)s inside q, so each stride is one vectorised pass (the same hash as
    `_kgram_hashes` of q[offset::s]), and all strides share one search of the sorted hashes.
    """
    if hashes.size == 0 or q.size < k:
        return False
    u = q.astype(np.uint64)
    parts = []
    with np.errstate(over="ignore"):
        for stride in range(1, MAX_STRIDE + 1):
            m = u.size - (k - 1) * stride
            if m <= 0:
                break
            h = u[:m].copy()
            for j in range(1, k):
                h *= _P
                h += u[j * stride : j * stride + m]
            parts.append(h)
    h = np.concatenate(parts) if len(parts) > 1 else parts[0]
    idx = np.searchsorted(hashes, h)
    idx[idx >= hashes.size] = 0
    return bool((hashes[idx] == h).any())


_TOKEN = re.compile(r"[\w.-]+")
_TOKEN_TABLE = ascii_table(".-")


class CategoryStructure:
    """k-grams of single-token categorical columns (codes such as ICD-10) in row order."""

    def __init__(self) -> None:
        self._hashes = np.empty(0, dtype=np.uint64)
        self._codes: dict[str, int] = {}
        self._vocab = np.empty(0, dtype=np.uint64)

    def add_frame(self, frame: pd.DataFrame, skip: Iterable[str]) -> None:
        skip = set(skip)
        parts = [self._hashes]
        for col in frame.columns:
            s = frame[col]
            if col in skip or pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                continue
            values = s.dropna().astype(str).str.lower()
            uniques = values.unique()
            if not MIN_DISTINCT <= len(uniques) <= MAX_CATEGORIES:
                continue
            if not all(_TOKEN.fullmatch(u) for u in uniques):
                continue
            for u in uniques:
                self._codes.setdefault(u, len(self._codes) + 1)
            q = np.fromiter((self._codes[v] for v in values), dtype=np.int64, count=len(values))
            parts.append(_kgram_hashes(q, K_CATEGORY))
        self._hashes = np.unique(np.concatenate(parts))
        self._vocab = np.arange(1, len(self._codes) + 1, dtype=np.uint64)  # sorted known codes

    def matches(self, text: str, limit: int = 200_000) -> bool:
        if self._hashes.size == 0:
            return False
        shared = shared_tokens(text, limit)  # split once for this scan and the sequence scan
        if shared is None:
            tokens = find_tokens(text[:limit].lower(), _TOKEN, _TOKEN_TABLE)
            distinct = set(tokens)
        else:
            tokens, distinct = shared
        if len(tokens) < K_CATEGORY or distinct.isdisjoint(self._codes):
            return False  # (no code in the text: no run of codes)
        # Unknown tokens get code 0, which no column uses (codes start at 1), and
        # `strided_match` hashes only runs of known codes: an unknown token breaks every run,
        # and a text of ordinary words (no code in it) costs one lookup per token.
        q = np.fromiter(map(self._codes.get, tokens, repeat(0)), dtype=np.uint64,
                        count=len(tokens))  # fmt: skip
        return strided_match(self._hashes, self._vocab, q, K_CATEGORY)


def _quantise(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(float) * 100).astype(np.int64)


class RowStructure:
    """k-grams of protected numeric columns in row order, to recognise rows printed as numbers.

    A run is a signature only when its information (from the column's value frequencies)
    exceeds log2(rows) + MARGIN_BITS, as in `_sequences.TableSequences`: in a million rows of a
    column of small counts (`los_days`) every run of five small numbers occurs, so the index
    1 2 3 4 5 of any grouped table would match. Runs of `K` values that carry too little are
    indexed as runs of `K_LONG` values instead, when those carry enough.
    """

    def __init__(self) -> None:
        self._hashes = np.empty(0, dtype=np.uint64)
        self._long = np.empty(0, dtype=np.uint64)

    def add_frame(self, frame: pd.DataFrame, skip: Iterable[str]) -> None:
        skip = set(skip)
        parts = [self._hashes]
        longs = [self._long]
        for col in frame.columns:
            if col in skip:
                continue
            s = frame[col]
            if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                continue
            v = s.to_numpy(dtype=float, na_value=np.nan)
            v = v[~np.isnan(v)]
            if np.unique(v).size < MIN_DISTINCT or v.size < K:
                continue
            q = _quantise(v)
            need = math.log2(q.size) + MARGIN_BITS
            _, inverse, counts = np.unique(q, return_inverse=True, return_counts=True)
            info = np.concatenate(([0.0], np.cumsum(-np.log2(counts / q.size)[inverse])))
            windows = np.lib.stride_tricks.sliding_window_view(q, K)
            # a run of one repeated value is not a row signature
            varied = ~(windows == windows[:, :1]).all(axis=1)
            rich = (info[K:] - info[:-K]) >= need
            parts.append(_kgram_hashes(q)[varied & rich])
            if q.size >= K_LONG and not rich.all():
                poor = np.flatnonzero(~rich[: q.size - K_LONG + 1])
                long_rich = (info[poor + K_LONG] - info[poor]) >= need
                longs.append(_kgram_hashes(q, K_LONG)[poor[long_rich]])
        self._hashes = np.unique(np.concatenate(parts))
        self._long = np.unique(np.concatenate(longs))

    @property
    def empty(self) -> bool:
        """No protected numeric column indexed: no text can match (its numbers need no reading)."""
        return self._hashes.size == 0 and self._long.size == 0

    def matches(self, numbers: np.ndarray) -> bool:
        if numbers.size < K or self.empty:
            return False
        q = _quantise(numbers)
        return _strided_match(self._hashes, q, K) or _strided_match(self._long, q, K_LONG)


def numbers_in(text: str, limit: int = 200_000) -> np.ndarray:
    text = text[:limit]
    if text.isascii() and not has_ascii_digit(text):
        return np.empty(0)  # no digit at all: no number
    found = _NUM.findall(text)
    if not found:
        return np.empty(0)
    try:
        out = np.array(found, dtype=float)  # one conversion for the whole list
    except ValueError:
        out = np.empty(len(found))
        for i, tok in enumerate(found):
            try:
                out[i] = float(tok)
            except ValueError:
                out[i] = np.nan
    return out[np.isfinite(out)]


class TextScanner:
    """`bedside.policy.scan_text` (identifiers, PHI, encoded forms) plus row structure."""

    def __init__(self, phi_kinds: Iterable[str] | None = None) -> None:
        self.index: IdentifierIndex | None = None
        self.phi_kinds = None if phi_kinds is None else list(phi_kinds)
        self.rows = RowStructure()
        self.categories = CategoryStructure()
        self._frames: list[tuple[pd.DataFrame, list[str]]] = []
        # Findings of recently scanned texts: a cell run again shows the same outputs, and a
        # text's finding depends only on the tables indexed so far (cleared by `add_table`).
        self._memo: dict[tuple[str, bool, bool], Finding | None] = {}
        self._memo_lock = threading.Lock()

    def add_table(self, frame: pd.DataFrame, identifiers: list[str]) -> None:
        """Index a newly loaded table: its identifier values and its numeric rows."""
        self._frames.append((frame, identifiers))
        self.index = IdentifierIndex.from_frames(self._frames)
        self.rows.add_frame(frame, identifiers)
        self.categories.add_frame(frame, identifiers)
        with self._memo_lock:
            self._memo.clear()

    def scan(
        self, text: str, *, structure: bool = True, identifiers: bool = True
    ) -> Finding | None:
        """Why `text` may not leave (identifiers, PHI, encoded forms, rows), or None.

        `identifiers=False` leaves out `scan_text` (identifier values, PHI, encoded forms) and
        checks the row structure only: for a long text of a kernel behind the sentry, which runs
        that same scan on every byte it lets out (`guard.SENTRY_SCAN_MIN_CHARS`).

        Remembered for the last `MEMO_ENTRIES` texts of at most `MEMO_MAX_CHARS` characters,
        until the next `add_table`."""
        if len(text) > MEMO_MAX_CHARS:
            return self._scan_uncached(text, structure=structure, identifiers=identifiers)
        key = (text, structure, identifiers)
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]
        finding = self._scan_uncached(text, structure=structure, identifiers=identifiers)
        with self._memo_lock:
            if len(self._memo) >= MEMO_ENTRIES:
                del self._memo[next(iter(self._memo))]
            self._memo[key] = finding
        return finding

    def _scan_uncached(
        self, text: str, *, structure: bool = True, identifiers: bool = True
    ) -> Finding | None:
        if not text:
            return None
        # A weak finding (a date of birth standing alone: at a million patients nearly every
        # date is somebody's) does not stop a text; a strong one does (`findings_block`).
        found = [f for f in scan_text(text, self.index, phi_kinds=self.phi_kinds)
                 if f.strength != WEAK] if identifiers else []  # fmt: skip
        if found:
            f = found[0]
            kind, _, inner = f.kind.partition("+")
            encoding = kind.removeprefix("encoded:") if inner else ""
            base = inner or kind
            if base.startswith("phi:"):
                return Finding("phi", base.removeprefix("phi:"), encoding)
            return Finding("identifier", f.column or "identifier", encoding)
        if structure and not self.rows.empty and self.rows.matches(numbers_in(text)):
            return Finding("row-level", "numeric columns in row order")
        if structure and self.categories.matches(text):
            return Finding("row-level", "coded columns in row order")
        return None
