"""The identifier index: every identifier value of the loaded datasets, found fast in any text.

Both guard layers (the in-kernel guard and the sentry) build one `IdentifierIndex` per dataset
load and run `find`/`first` on every outgoing message. Matching is case-insensitive, on token
boundaries, and robust to the reformattings a value commonly takes:

- separators and spacing: `020 7946 0123`, `020-7946-0123`, `(020) 7946 0123`, `02079460123`,
  and digit groups split differently (`0207 946 0123`); `+44 20 7946 0123` and `+442079460123`
  for a UK national number (and `+1` for North American ones);
- dates written as `1956-03-12`, `12/03/1956`, `3/12/1956`, `12.3.1956`, `12 Mar 1956`,
  `12 March 1956`, `March 12, 1956`, `19560312`, `12031956`, `1956-03-12T00:00:00`;
- names in any case and spacing, `Smith, John`, without a title or suffix (`Dr`, `Jr`), and
  without a middle name;
- codes with or without leading zeros, prefix case or a separator: `MRN00012345`,
  `mrn-12345`, `MRN 00012345`.

Why not pyahocorasick: an Aho-Corasick automaton over the ~10 million value variants of a
million patients needs several GiB of trie nodes and matches substrings, so every hit would need
a token-boundary check and every reformatting a pattern of its own. Instead values and text are
cut into tokens (runs of letters or of digits, see `_tokens`) and hashed with numpy; the index
is a sorted array of 64-bit hashes of token *sequences* behind a one-hash Bloom-style bitmap.
Scanning a text hashes each window of k consecutive tokens for the few sequence lengths the
index holds, tests them against the bitmap (one gather) and confirms the survivors by binary
search. Everything is vectorised, memory is ~9 bytes per variant plus the bitmap, and token
boundaries and case-insensitivity come for free. Digit groups of a text are also concatenated
(up to six groups joined by one or two separators) so a phone number regrouped any way matches.

Values never leave the index: it stores only hashes, and matches, errors and reprs carry offsets
and the column name (the *kind*), never the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bedside.policy import _tokens as T

if TYPE_CHECKING:
    import pandas as pd

MAX_SEQ = 8  # longest token sequence indexed (longer values are indexed by their first 8 tokens)
MAX_DIGIT_GROUPS = 6  # digit groups of a text joined when looking for a regrouped number
_CHUNK = 200_000

_TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "rev", "lord", "lady")
_SUFFIXES = ("jr", "sr", "md", "phd", "dds", "dvm", "ii", "iii", "iv", "obe", "mbe", "cbe", "esq")


@dataclass(frozen=True)
class IdentifierMatch:
    """Where an identifier value occurs in a text (character offsets) and from which column."""

    start: int
    end: int
    value_kind: str


def _word_hashes(words: Sequence[str]) -> T.U64:
    buf = np.frombuffer(" ".join(words).encode(), dtype=np.uint8)
    return T.tokenize(buf).h_norm


class IdentifierIndex:
    """A set of identifier values, searchable in text. Build with `build` or `from_frames`."""

    def __init__(
        self,
        hashes: T.U64,
        kinds: T.U8,
        kind_names: Sequence[str],
        lengths: Sequence[int],
        n_values: int,
        *,
        min_digits: int,
    ) -> None:
        self._hashes = hashes
        self._kinds = kinds
        self._kind_names = list(kind_names)
        self._lengths = tuple(sorted(set(lengths)))
        self._n_values = n_values
        self._min_digits = min_digits
        bits = 1 << 12
        while bits < 16 * max(len(hashes), 1) and bits < (1 << 31):
            bits <<= 1
        self._shift = np.uint64(64 - (bits.bit_length() - 1))
        words = np.zeros(bits // 64, dtype=np.uint64)
        slot = hashes >> self._shift
        np.bitwise_or.at(words, slot >> np.uint64(6), np.uint64(1) << (slot & np.uint64(63)))
        self._bitmap = words

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        values: Iterable[str],
        *,
        min_length: int = 3,
        min_digits: int = 6,
        kind: str = "identifier",
    ) -> IdentifierIndex:
        """Index `values` (strings; None and empty values are skipped).

        Values shorter than `min_length` characters, and purely numeric values with fewer than
        `min_digits` significant digits, are not indexed: they would match ordinary numbers and
        words in every output.
        """
        builder = _Builder(min_length=min_length, min_digits=min_digits)
        builder.add(pa.array([v for v in values if v is not None], type=pa.large_string()), kind)
        return builder.finish()

    @classmethod
    def from_frames(
        cls,
        frames: Iterable[tuple[pd.DataFrame, Sequence[str]]],
        *,
        min_length: int = 3,
        min_digits: int = 6,
    ) -> IdentifierIndex:
        """Index every value of the given columns of each DataFrame; the kind is the column."""
        builder = _Builder(min_length=min_length, min_digits=min_digits)
        for frame, columns in frames:
            for column in columns:
                builder.add(_column_strings(frame[column]), str(column))
        return builder.finish()

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return self._n_values

    def __repr__(self) -> str:
        return (
            f"<IdentifierIndex values={self._n_values} variants={len(self._hashes)} "
            f"kinds={self._kind_names}>"
        )

    @property
    def kinds(self) -> list[str]:
        return list(self._kind_names)

    @property
    def nbytes(self) -> int:
        return int(self._hashes.nbytes + self._kinds.nbytes + self._bitmap.nbytes)

    def first(self, text: str) -> IdentifierMatch | None:
        """The earliest match in `text`, or None when the text holds no identifier value."""
        found = self.find(text, limit=1)
        return found[0] if found else None

    def find(self, text: str, limit: int | None = None) -> list[IdentifierMatch]:
        """Every identifier value in `text`, ordered by position (the first `limit` of them)."""
        if not text or not len(self._hashes):
            return []
        raw = T.lower_bytes(text)
        buf = np.frombuffer(raw, dtype=np.uint8)
        tok = T.tokenize(buf)
        if not len(tok):
            return []
        starts: list[T.I64] = []
        ends: list[T.I64] = []
        kinds: list[T.U8] = []
        for k in self._lengths:
            if k > len(tok):
                break
            h = T.single_hash(tok.h_norm) if k == 1 else T.fold_windows(tok.h_norm, k)
            hit, kind = self._lookup(h)
            if len(hit):
                starts.append(tok.start[hit])
                ends.append(tok.end[hit + k - 1])
                kinds.append(kind)
        self._digit_groups(buf, tok, starts, ends, kinds)
        if not starts:
            return []
        s = np.concatenate(starts)
        e = np.concatenate(ends)
        kk = np.concatenate(kinds)
        order = np.lexsort((-e, s))
        s, e, kk = s[order], e[order], kk[order]
        keep = np.ones(len(s), dtype=np.bool_)
        keep[1:] = (s[1:] != s[:-1]) | (e[1:] != e[:-1])
        s, e, kk = s[keep], e[keep], kk[keep]
        if limit is not None:
            s, e, kk = s[:limit], e[:limit], kk[:limit]
        if len(raw) != len(text):
            # Byte offsets -> character offsets: count UTF-8 lead bytes before each offset.
            lead = np.empty(len(buf) + 1, dtype=np.int64)
            lead[0] = 0
            np.cumsum((buf & 0xC0) != 0x80, out=lead[1:])
            s, e = lead[s], lead[e]
        names = self._kind_names
        return [
            IdentifierMatch(int(a), int(b), names[int(c)])
            for a, b, c in zip(s.tolist(), e.tolist(), kk.tolist(), strict=True)
        ]

    def _lookup(self, h: T.U64) -> tuple[T.I64, T.U8]:
        """Positions in `h` present in the index, and their kinds."""
        slot = h >> self._shift
        bit = (self._bitmap[slot >> np.uint64(6)] >> (slot & np.uint64(63))) & np.uint64(1)
        cand = np.flatnonzero(bit)
        if not len(cand):
            return cand, np.empty(0, dtype=np.uint8)
        hc = h[cand]
        pos = np.searchsorted(self._hashes, hc)
        pos[pos == len(self._hashes)] = 0
        eq = self._hashes[pos] == hc
        return cand[eq], self._kinds[pos[eq]]

    def _digit_groups(
        self,
        buf: T.U8,
        tok: T.Tokens,
        starts: list[T.I64],
        ends: list[T.I64],
        kinds: list[T.U8],
    ) -> None:
        """Match numbers whose digit groups are split differently from the indexed value."""
        ok = T.group_gaps_ok(buf, tok)
        if not ok.any():
            return
        first = np.flatnonzero(ok)  # windows start at a token followed by a joinable group
        h = tok.h_norm[first]
        length = tok.end[first] - tok.norm_start[first]
        chain = np.ones(len(first), dtype=np.bool_)
        p, _ = T._powers(int(length.max(initial=0)) + 64)
        for k in range(2, MAX_DIGIT_GROUPS + 1):
            last = first + k - 1
            if k > 2:
                inside = last - 1 < len(ok)
                chain &= inside
                chain[inside] &= ok[(last - 1)[inside]]
            alive = np.flatnonzero(chain & (last < len(tok)))
            if not len(alive):
                break
            first, h, length, chain = first[alive], h[alive], length[alive], chain[alive]
            last = first + k - 1
            part = tok.end[last] - tok.start[last]
            if int((length + part).max()) >= len(p):
                p, _ = T._powers(int((length + part).max()) + 64)
            h = h + tok.h_raw[last] * p[length]
            length = length + part
            enough = np.flatnonzero(length >= self._min_digits)
            if len(enough):
                hit, kind = self._lookup(T.single_hash(h[enough]))
                if len(hit):
                    idx = enough[hit]
                    starts.append(tok.start[first[idx]])
                    ends.append(tok.end[first[idx] + k - 1])
                    kinds.append(kind)


def _column_strings(series: pd.Series[Any]) -> pa.Array:
    """A column's non-missing values as an Arrow string array (dates as ISO text)."""
    import pandas as pd

    s = series.dropna()
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = s.dt.strftime("%Y-%m-%d")
    elif not (pd.api.types.is_string_dtype(s.dtype) and s.map(type).eq(str).all()):
        s = s.astype(str)
    return pa.array(s.to_numpy(dtype=object), type=pa.large_string())


class _Builder:
    """Collects variant hashes of values, column by column, and freezes them into an index."""

    def __init__(self, *, min_length: int, min_digits: int) -> None:
        self.min_length = min_length
        self.min_digits = min_digits
        self.hashes: list[T.U64] = []
        self.kinds: list[T.U8] = []
        self.kind_names: list[str] = []
        self.lengths: set[int] = set()
        self.n_values = 0
        self._titles = _word_hashes(_TITLES)
        self._suffixes = _word_hashes(_SUFFIXES)
        self._pending: list[T.U64] = []  # hashes of the column being added

    def add(self, values: pa.Array, kind: str) -> None:
        if kind not in self.kind_names:
            if len(self.kind_names) >= 255:
                raise ValueError("an identifier index holds at most 255 columns")
            self.kind_names.append(kind)
        code = self.kind_names.index(kind)
        arr = pc.utf8_lower(pc.utf8_trim_whitespace(values.drop_null()))
        arr = pc.unique(arr)
        arr = arr.filter(pc.greater(pc.utf8_length(arr), 0))
        for offset in range(0, len(arr), _CHUNK):
            chunk = arr.slice(offset, _CHUNK)
            base = self._lines(chunk, variants=True)
            self.n_values += base
            for extra in self._string_variants(chunk):
                self._lines(extra, variants=False)
            self._flush(code)

    def _flush(self, code: int) -> None:
        if self._pending:
            h = np.concatenate(self._pending)
            self.hashes.append(h)
            self.kinds.append(np.full(len(h), code, dtype=np.uint8))
        self._pending = []

    def _emit(self, h: T.U64) -> None:
        self._pending.append(h)

    def _lines(self, arr: pa.Array, *, variants: bool) -> int:
        """Hash every value (one per line) of `arr` and its token-level variants.

        Returns how many values were indexed.
        """
        if not len(arr):
            return 0
        ls = pa.large_string()
        joined = pc.binary_join_element_wise(arr.cast(ls), pa.scalar("", ls), pa.scalar("\n", ls))
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)[
            joined.offset : joined.offset + len(joined) + 1
        ]
        data = joined.buffers()[2]
        assert data is not None
        buf = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
        line_start = offsets[:-1] - offsets[0]
        tok = T.tokenize(buf)
        if not len(tok):
            return 0
        line = np.searchsorted(line_start, tok.start, side="right") - 1
        count = np.bincount(line, minlength=len(line_start))
        first_tok = np.zeros(len(line_start), dtype=np.int64)
        np.cumsum(count[:-1], out=first_tok[1:])
        norm_len = tok.end - tok.norm_start
        # Per line: significant length and whether every token is digits.
        sig = np.bincount(line, weights=norm_len, minlength=len(line_start)).astype(np.int64)
        digits = np.bincount(line, weights=tok.is_digit, minlength=len(line_start))
        all_digit = (digits == count) & (count > 0)
        letters = (digits == 0) & (count > 0)
        keep = np.where(all_digit, sig >= self.min_digits, sig >= self.min_length)
        indexed = 0
        for k in range(1, MAX_SEQ + 1):
            exact = count == k if k < MAX_SEQ else count >= k
            rows = np.flatnonzero(exact & keep)
            if not len(rows):
                continue
            indexed += len(rows)
            f = first_tok[rows]
            seqs = np.stack([tok.h_norm[f + j] for j in range(k)])
            self._emit_seq(seqs)
            if k >= 2:
                d = np.flatnonzero(all_digit[rows])
                if len(d):
                    self._emit_joined(tok, f[d], k)
                if variants and 2 <= k <= 5:
                    n = np.flatnonzero(letters[rows])
                    if len(n):
                        self._emit_names(seqs[:, n])
        return indexed

    def _emit_seq(self, seqs: T.U64) -> None:
        """Hash token sequences (k x n array of token hashes) into the sequence space."""
        k = seqs.shape[0]
        self.lengths.add(k)
        if k == 1:
            self._emit(T.single_hash(seqs[0]))
            return
        acc = seqs[0].copy()
        c = np.uint64(T._C)
        for j in range(1, k):
            acc *= c
            acc += seqs[j]
        acc += T.length_salt(k)
        self._emit(T.mix(acc))

    def _emit_joined(self, tok: T.Tokens, f: T.I64, k: int) -> None:
        """All-digit values also match as one run of digits (`02079460123`, `19560312`)."""
        h = tok.h_norm[f].copy()
        length = tok.end[f] - tok.norm_start[f]
        for j in range(1, k):
            h = T.concat(h, length, tok.h_raw[f + j])
            length = length + (tok.end[f + j] - tok.start[f + j])
        ok = length >= self.min_digits
        self.lengths.add(1)
        self._emit(T.single_hash(h[ok]))

    def _emit_names(self, seqs: T.U64) -> None:
        """Names: without title/suffix, surname first, without middle names."""
        k, n = seqs.shape
        title = np.isin(seqs[0], self._titles)
        suffix = np.isin(seqs[k - 1], self._suffixes)
        for has_title in (False, True):
            for has_suffix in (False, True):
                cols = np.flatnonzero((title == has_title) & (suffix == has_suffix))
                lo = 1 if has_title else 0
                hi = k - 1 if has_suffix else k
                core = seqs[lo:hi, cols]
                m = core.shape[0]
                if m < 1 or not len(cols):
                    continue
                if m != k and m >= 2:
                    self._emit_seq(core)
                if m >= 2:
                    # "Smith, John" / "Smith John Paul"
                    self._emit_seq(np.concatenate([core[m - 1 :], core[: m - 1]]))
                if m >= 3:
                    self._emit_seq(core[[0, m - 1]])  # first + last
                    self._emit_seq(core[[m - 1, 0]])  # last, first

    def _string_variants(self, chunk: pa.Array) -> list[pa.Array]:
        """Variants that need the text: country codes of phone numbers, date formats."""
        out: list[pa.Array] = []
        phone = pc.match_substring_regex(chunk, r"^[\s()+0-9./-]{9,}$")
        if pc.any(phone).as_py():
            ph = chunk.filter(phone)
            intl = pc.match_substring_regex(ph, r"^\s*(\+|00)\s*(44|1)\b")
            if pc.any(intl).as_py():
                x = ph.filter(intl)
                x = pc.replace_substring_regex(x, r"^\s*(?:\+|00)\s*44\s*(?:\(0\))?", "0")
                x = pc.replace_substring_regex(x, r"^\s*(?:\+|00)\s*1\b", "")
                out.append(x)
            national = pc.match_substring_regex(ph, r"^\s*\(?0[1-9]")
            if pc.any(national).as_py():
                x = ph.filter(national)
                out.append(pc.replace_substring_regex(x, r"^\s*\(?0", "+44 "))
        iso = pc.match_substring_regex(chunk, r"^\d{4}-\d{2}-\d{2}(?:[ t]00:00(?::00(?:\.0+)?)?)?$")
        if pc.any(iso).as_py():
            dates = pc.unique(pc.utf8_slice_codeunits(chunk.filter(iso), 0, 10))
            out.append(pa.array(_date_variants(dates.to_pylist()), type=pa.large_string()))
        return out

    def finish(self) -> IdentifierIndex:
        if self.hashes:
            h = np.concatenate(self.hashes)
            kinds = np.concatenate(self.kinds)
        else:
            h = np.empty(0, dtype=np.uint64)
            kinds = np.empty(0, dtype=np.uint8)
        self.hashes, self.kinds = [], []
        # Sorted unique hashes; a hash shared by two columns keeps the first column's kind.
        h, first = np.unique(h, return_index=True)
        return IdentifierIndex(
            h,
            kinds[first],
            self.kind_names,
            sorted(self.lengths),
            self.n_values,
            min_digits=self.min_digits,
        )


_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def _date_variants(isodates: list[str]) -> list[str]:
    """Common ways of writing each date (ISO itself is indexed as the value)."""
    out: list[str] = []
    for text in isodates:
        try:
            d = dt.date.fromisoformat(text)
        except ValueError:
            continue
        day, month, year = d.day, d.month, d.year
        full = _MONTHS[month - 1]
        mon = full[:3]
        out.extend(
            (
                f"{day}/{month}/{year}",
                f"{month}/{day}/{year}",
                f"{day} {mon} {year}",
                f"{day} {full} {year}",
                f"{mon} {day} {year}",
                f"{full} {day} {year}",
                f"{year} {mon} {day}",
            )
        )
    return out
