"""Text scans every outgoing message passes: identifiers, PHI, encoded forms and row structure.

The identifier index, the PHI patterns and the decoding of encoded spans (base64, hex, a big
integer of a value's bytes, ...) are `bedside.policy.scan_text`, which the sentry runs too. This
module adds what the kernel can do cheaply because it holds the tables: a structural check that
an output does not reproduce protected rows. The numbers of the text, read with every stride up
to `MAX_STRIDE` (one column, or several columns interleaved row by row), are compared as k-grams
with the k-grams of each high-cardinality numeric column in row order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bedside.policy import IdentifierIndex, scan_text

K = 5  # consecutive values that make a row-order match
MAX_STRIDE = 8  # columns interleaved in a row-major print
MIN_DISTINCT = 20  # columns with fewer distinct values match any text by chance
_P = np.uint64(1_000_003)
_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Finding:
    """Why a text was refused: the rule and, never the value, the kind of what matched."""

    rule: str
    kind: str
    encoding: str = ""


def _kgram_hashes(q: np.ndarray) -> np.ndarray:
    """Polynomial hashes of every K consecutive quantised values (uint64, wrapping)."""
    m = q.size - K + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    u = q.astype(np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(K):
            h = h * _P + u[j : j + m]
    return h


def _quantise(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(float) * 100).astype(np.int64)


class RowStructure:
    """k-grams of protected numeric columns in row order, to recognise rows printed as numbers."""

    def __init__(self) -> None:
        self._hashes = np.empty(0, dtype=np.uint64)

    def add_frame(self, frame: pd.DataFrame, skip: Iterable[str]) -> None:
        skip = set(skip)
        parts = [self._hashes]
        for col in frame.columns:
            if col in skip:
                continue
            s = frame[col]
            if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                continue
            v = s.to_numpy(dtype=float, na_value=np.nan)
            v = v[~np.isnan(v)]
            if np.unique(v).size < MIN_DISTINCT:
                continue
            q = _quantise(v)
            h = _kgram_hashes(q)
            # a run of one repeated value is not a row signature
            windows = np.lib.stride_tricks.sliding_window_view(q, K) if q.size >= K else None
            if windows is not None:
                h = h[~(windows == windows[:, :1]).all(axis=1)]
            parts.append(h)
        self._hashes = np.unique(np.concatenate(parts))

    def matches(self, numbers: np.ndarray) -> bool:
        if self._hashes.size == 0 or numbers.size < K:
            return False
        q = _quantise(numbers)
        for stride in range(1, MAX_STRIDE + 1):
            for offset in range(stride):
                seq = q[offset::stride]
                if seq.size < K:
                    continue
                h = _kgram_hashes(seq)
                idx = np.searchsorted(self._hashes, h)
                idx[idx >= self._hashes.size] = 0
                if (self._hashes[idx] == h).any():
                    return True
        return False


def numbers_in(text: str, limit: int = 200_000) -> np.ndarray:
    found = _NUM.findall(text[:limit])
    if not found:
        return np.empty(0)
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
        self._frames: list[tuple[pd.DataFrame, list[str]]] = []

    def add_table(self, frame: pd.DataFrame, identifiers: list[str]) -> None:
        """Index a newly loaded table: its identifier values and its numeric rows."""
        self._frames.append((frame, identifiers))
        self.index = IdentifierIndex.from_frames(self._frames)
        self.rows.add_frame(frame, identifiers)

    def scan(self, text: str, *, structure: bool = True) -> Finding | None:
        if not text:
            return None
        found = scan_text(text, self.index, phi_kinds=self.phi_kinds)
        if found:
            f = found[0]
            kind, _, inner = f.kind.partition("+")
            encoding = kind.removeprefix("encoded:") if inner else ""
            base = inner or kind
            if base.startswith("phi:"):
                return Finding("phi", base.removeprefix("phi:"), encoding)
            return Finding("identifier", f.column or "identifier", encoding)
        if structure and self.rows.matches(numbers_in(text)):
            return Finding("row-level", "numeric columns in row order")
        return None
