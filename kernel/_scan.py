"""Text scans every outgoing message passes: identifiers, PHI, encoded forms and row structure.

The identifier index and the PHI patterns come from `bedside.policy` (the sentry runs the same
ones). This module adds what only the kernel can do cheaply: decoding the encodings a value is
commonly smuggled in (base64, hex, a big integer of its bytes) before scanning, and a structural
check that an output does not reproduce protected rows: the numbers of the text, read with every
stride up to `MAX_STRIDE` (one column, or several columns interleaved row by row), are compared as
k-grams with the k-grams of each high-cardinality numeric column in row order.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

K = 5  # consecutive values that make a row-order match
MAX_STRIDE = 8  # columns interleaved in a row-major print
MIN_DISTINCT = 20  # columns with fewer distinct values match any text by chance
_P = np.uint64(1_000_003)
_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]{12,}\b")
_BIGINT = re.compile(r"\b\d{12,}\b")


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


def decoded_views(text: str) -> Iterable[tuple[str, str]]:
    """The texts hidden in base64, hex and big-integer encodings inside `text`."""
    for m in _B64.finditer(text):
        tok = m.group(0)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(tok + "=" * (-len(tok) % 4))
            except (binascii.Error, ValueError):
                continue
            s = raw.decode("utf-8", "ignore")
            if s and sum(ch.isprintable() or ch.isspace() for ch in s) > 0.8 * len(s):
                yield "base64", s
                break
    for m in _HEX.finditer(text):
        tok = m.group(0).removeprefix("0x")
        try:
            yield "hex", bytes.fromhex(tok[: len(tok) // 2 * 2]).decode("utf-8", "ignore")
        except ValueError:
            pass
    for m in _BIGINT.finditer(text):
        n = int(m.group(0))
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        yield "integer", raw.decode("utf-8", "ignore")
        yield "integer", raw[::-1].decode("utf-8", "ignore")


class TextScanner:
    """Identifier index + PHI + encodings + row structure over the loaded datasets."""

    def __init__(self) -> None:
        self.index: object | None = None
        self.rows = RowStructure()
        self._frames: list[tuple[pd.DataFrame, list[str]]] = []

    def add_table(self, frame: pd.DataFrame, identifiers: list[str]) -> None:
        from bedside.kernel._compat import IdentifierIndex

        self._frames.append((frame, identifiers))
        self.index = IdentifierIndex.from_frames(self._frames)
        self.rows.add_frame(frame, identifiers)

    def _identifier(self, text: str) -> str | None:
        if self.index is None:
            return None
        m = self.index.first(text)  # type: ignore[attr-defined]
        return None if m is None else str(m.value_kind)

    def scan(self, text: str, *, structure: bool = True) -> Finding | None:
        if not text:
            return None
        kind = self._identifier(text)
        if kind:
            return Finding("identifier", kind)
        from bedside.kernel._compat import scan_phi

        phi = scan_phi(text)
        if phi:
            return Finding("phi", str(phi[0].kind))
        for encoding, decoded in decoded_views(text):
            kind = self._identifier(decoded)
            if kind:
                return Finding("identifier", kind, encoding)
        if structure and self.rows.matches(numbers_in(text)):
            return Finding("row-level", "numeric columns in row order")
        return None
