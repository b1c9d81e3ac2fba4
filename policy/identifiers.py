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
  `mrn-12345`, `MRN 00012345`, and a code's digits alone (`51069856` of `MRN51069856`, what
  `value[3:]` prints), under the rule of purely numeric values (`min_digits`);
- the rot13 form of every value with a letter (`codecs.encode(v, "rot13")`), under a column
  `rot13:<column>` of its own (`ROT13_PREFIX`; `kinds` leaves these out, and `scan_text`
  reports their matches as `encoded:rot13+identifier` of the column): the one pass over an
  output finds both, where decoding rot13 would be another pass over every text. It costs the
  build about a fifth more time and the index about half more memory (100,000 patients:
  0.72 -> 0.86 s, 11.5 -> 17.2 MB).

Why not pyahocorasick: an Aho-Corasick automaton over the ~10 million value variants of a
million patients needs several GiB of trie nodes and matches substrings, so every hit would need
a token-boundary check and every reformatting a pattern of its own. Instead values and text are
cut into tokens (runs of letters or of digits, see `_tokens`) and hashed with numpy; the index
is a sorted array of 64-bit hashes of token *sequences*, each sequence's first two tokens in a
Bloom-style "pair" bitmap and every sequence in a second bitmap. Scanning a text hashes each
token, looks single tokens up, keeps only the positions whose next two tokens start some indexed
sequence (one gather in the pair bitmap), folds the few surviving windows for each sequence
length the index holds, and confirms bitmap hits by binary search. Everything is vectorised,
memory is ~8 bytes per variant (56-bit hash and the column code in one word) plus two bitmaps,
and token boundaries and case-insensitivity come for free. Runs of two to six digit groups
written as one number (one space, dash or parenthesis between groups, 9+ digits in all) are
also joined, so a phone number regrouped any way matches.

Scanning runs in a small C extension (`policy/_scanner.c`, built by `pip install -e .` hence
`make venv`, from `setup.py`): the numpy version of the scan (`_find_reference`, kept as the
reference) allocates a dozen temporaries per token and reached only 21-64 MB/s on 1 MB outputs
at a million patients, short of the 100 MB/s the guards need. The C loop tokenises, hashes and
probes both bitmaps in one pass, prefetching the bitmap words of tokens a few ahead so the cache
misses of a large index overlap, and confirms bitmap hits through a directory over the top bits
of the sorted entries (two cache lines instead of a binary search). Tokens are matched a block
at a time (each pass reads a block while it is in the cache), a bitmap word is fetched only for
the probes a token needs (one long enough to be indexed alone; one whose gap to the next token a
value can have), and each Matcher keeps two scratch buffers between calls, so a megabyte's scan
neither allocates nor faults in megabytes of fresh memory (~10 MB per buffer for a 1 MB output,
kept while the index lives). It reads the arrays numpy built, so the index, its build and its
memory are unchanged (plus a 4-byte directory slot per 8 entries). `scan_text` also looks for
values written backwards: `find_both` makes each window's tokens and, in the same pass, the
tokens the reversed text has (the same runs in reverse order, each hashed over its bytes read
backwards), and matches both, so the reversal costs a second match but no second tokenization
(on a megabyte of words, 3.6 -> 3.1 ms of CPU for both). Indexing every value reversed would
spare the second match too, but double the index (128 MB at a million patients) and its build,
and the rules of `_matching` would then read the output where they now read its reversal. Why
not numba: the kernel runs in a read-only sandbox under a fresh uid, so its JIT cache could not
be written there and every kernel and sentry start would compile again, while kernel start is
already the slowest path; gcc and the Python headers are on every machine that runs `make
venv`. The numpy path still serves when the extension is not built, and
tests/policy/test_native.py checks that both give identical matches (tests/policy/test_find_both.py
that `find_both` finds what `find` finds on the text and on its reversed bytes).

Tokens of one value must be separated by at most three characters on one line (`Smith, John`,
`12 / 03 / 1956`): numbers that merely follow each other across table rows are not a date.
Limits: values shorter than `min_length` characters and purely numeric values with fewer than
`min_digits` significant digits are not indexed; a value's first eight tokens are used. A value
that is one word of fewer than `MIN_WORD_LETTERS` letters (`Max`, `Eva`, `Lee`) or a month's or
weekday's name (`August`, `June`) is not indexed alone: `describe()` prints `max`, monthly series
print month names, and three letters of any base64 run spell some first name; such words still
count inside a value of several (`Max Weber`). Names are also indexed as ASCII writes them:
`ß` as `ss` (what `upper()` makes of it), umlauts as `ae`/`oe`/`ue`, other marks dropped.
Values whose tokens are themselves cut apart (`M R N 5 1 0 ...`, `MRN 5106 9856`) are found by
the separated layer of `scan.scan_text` (`_separated`), which reads digit groups after the
words in `code_words` only.

Dates of birth: at a million patients nearly every date of the last century is someone's
birthday, so a match of a date column (`date_kinds`) is `weak` when it stands alone and `strong`
beside another identifier, or in a listing of several dates (`strengthen`); guards block on
strong matches only (`bedside.policy.scan.findings_block`). What separates the tokens of a match
is checked afterwards (`_matching`): a date must be written like one (`9,1,1952`, three fields of
a CSV row, is not `9/1/1952`), a record number is not the fraction of a decimal (`0.123456`),
and dates on a calendar axis (a daily or weekly series) are not a listing. These rules run in
the compiled core too (`_scanner.keep_spans`, `_scanner.dates_in_text`), for every match at
once: checked in Python one match at a time, with a copy of the text before each date, they
cut `find` on log-like output with thousands of matches per MB to 3 MB/s at a million patients.
The pure-Python `_matching.keep_match` and `_DATE_IN_TEXT` stay the reference, and decide
whatever reads a character outside ASCII (tests/policy/test_matching_native.py).

Values never leave the index: it stores only hashes, and matches, errors and reprs carry offsets
and the column name (the *kind*), never the value.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bedside.policy import _matching
from bedside.policy import _tokens as T
from bedside.policy._tokens import code_units

if TYPE_CHECKING:
    import pandas as pd

MAX_SEQ = 8  # longest token sequence indexed (longer values are indexed by their first 8 tokens)
MAX_DIGIT_GROUPS = 6  # digit groups of a text joined when looking for a regrouped number
MIN_GROUPED_DIGITS = 9  # regrouping is how phone numbers vary; shorter runs are table columns
_CHUNK = 200_000

_TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "rev", "lord", "lady")
# A single word that is a month's or a weekday's name (`August`, `June`, `Friday`) is written by
# every monthly series and calendar, whoever is named so: such a value is not indexed on its own.
_CALENDAR_WORDS = tuple(w.lower() for w in (*calendar.month_name[1:], *calendar.day_name, "Sept"))
_OTHER_COUNTRY = r"^\s*(?:\+|00)\s*\d{1,3}(?:\s*\(0\)\s*|[\s./-]+)"
MIN_WORD_LETTERS = 4  # a value of one shorter word (`Max`, `Eva`, `Lee`) is not indexed alone
_SUFFIXES = ("jr", "sr", "md", "phd", "dds", "dvm", "ii", "iii", "iv", "obe", "mbe", "cbe", "esq")


STRONG = "strong"
WEAK = "weak"
NEAR = 80  # a weak match this close (characters) to a strong one is part of a record
SAME_LINE = 400  # ... or this close on the same line (a table row, a CSV line)
LISTING = 5  # this many distinct weak values in one text are a listing of records


@dataclass(frozen=True)
class IdentifierMatch:
    """Where an identifier value occurs in a text (character offsets) and from which column.

    `strength` is "weak" for a value of a date column (a date of birth) standing alone: at a
    million patients nearly every date of the last century is someone's birthday, so a date
    printed by itself says little. It is "strong" for every other value, and for a date within
    `NEAR` characters of a strong match (or `SAME_LINE` on its line), or when the text holds
    `LISTING` or more distinct weak values (a listing of rows); see `strengthen`.
    """

    start: int
    end: int
    value_kind: str
    strength: str = STRONG


def strengthen(
    text: str,
    spans: Sequence[tuple[int, int]] | T.I64,
    weak: Sequence[bool] | T.B,
) -> list[bool]:
    """Which of the weak `spans` of `text` stay weak (see `IdentifierMatch.strength`).

    `spans` are (start, end) character offsets in `text`, any order; `weak` says which start
    weak. Returns the final weak flag of each span.
    """
    w = np.asarray(weak, dtype=np.bool_)
    if not w.any():
        return [False] * len(w)
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    # Distinct weak values, counting overlapping matches once ("01-21 1934" inside
    # "1934-01-21 1934-09-14" is not another date).
    weak_spans = sp[w]
    weak_spans = weak_spans[np.argsort(weak_spans[:, 0], kind="stable")]
    starts, ends = weak_spans[:, 0], weak_spans[:, 1]
    if len(starts) < 2 or (starts[1:] >= np.maximum.accumulate(ends)[:-1]).all():
        # No span overlaps an earlier one (the usual case): every span counts.
        spelled = {text[a:b] for a, b in weak_spans.tolist()}
    else:
        spelled = set()
        last_end = -1
        for a, b in weak_spans.tolist():
            if a >= last_end:
                spelled.add(text[a:b])
                last_end = b
    distinct = {v.lower() for v in spelled}
    # Dates on a calendar axis (a daily series) are printed whoever was born on them.
    if len(distinct) >= LISTING and _matching.listed_values(distinct, text) >= LISTING:
        return [False] * len(w)
    if w.all():
        return [True] * len(w)
    strong = sp[~w]
    strong = strong[np.argsort(strong[:, 0], kind="stable")]
    s_start, s_end = strong[:, 0], strong[:, 1]
    run_end = np.maximum.accumulate(s_end)
    ws, we = sp[w, 0], sp[w, 1]
    # Nearest strong span starting at/after a weak span's start, and the furthest-reaching one
    # starting before it; a negative gap is an overlap.
    right = np.searchsorted(s_start, ws, side="left")
    gap_r = np.where(
        right < len(s_start), s_start[np.minimum(right, len(s_start) - 1)] - we, 1 << 40
    )
    left = right - 1
    gap_l = np.where(left >= 0, ws - run_end[np.maximum(left, 0)], 1 << 40)
    near = (gap_r <= NEAR) | (gap_l <= NEAR)
    maybe = ~near & ((gap_r <= SAME_LINE) | (gap_l <= SAME_LINE))
    if maybe.any():
        # Same line: no newline between the weak span and the strong neighbour.
        nl = np.concatenate(([0], np.cumsum(code_units(text) == 10)))
        r_at = s_start[np.minimum(right, len(s_start) - 1)]
        l_at = run_end[np.maximum(left, 0)]
        same_r = (gap_r <= SAME_LINE) & (nl[np.clip(r_at, 0, len(text))] == nl[we])
        same_l = (gap_l <= SAME_LINE) & (nl[np.clip(l_at, 0, len(text))] == nl[ws])
        near |= maybe & (same_r | same_l)
    out = w.copy()
    out[np.flatnonzero(w)[near]] = False
    final: list[bool] = out.tolist()
    return final


def _word_hashes(words: Sequence[str]) -> T.U64:
    buf = np.frombuffer(" ".join(words).encode(), dtype=np.uint8)
    return T.tokenize(buf).hash


_HIGH = np.uint64(0xFFFFFFFFFFFFFF00)


def _sorted_unique(a: T.U64) -> T.U64:
    """Sorted distinct values (np.unique's hash path is far slower on large uint64 arrays)."""
    a = np.sort(a)
    if len(a) > 1:
        a = a[np.concatenate(([True], a[1:] != a[:-1]))]
    return a


def _bitmap(keys: T.U64) -> tuple[T.U64, np.uint64]:
    """A one-hash Bloom filter of `keys` (about 16 bits per key) and its slot shift."""
    bits = 1 << 12
    while bits < 16 * max(len(keys), 1) and bits < (1 << 32):
        bits <<= 1
    shift = np.uint64(64 - (bits.bit_length() - 1))
    words = np.zeros(bits // 64, dtype=np.uint64)
    slot = _sorted_unique(keys >> shift)
    if len(slot):
        # Distinct bits of one word: their sum is their OR.
        word = slot >> np.uint64(6)
        bit = np.uint64(1) << (slot & np.uint64(63))
        first = np.flatnonzero(np.concatenate(([True], word[1:] != word[:-1])))
        words[word[first]] = np.add.reduceat(bit, first)
    return words, shift


def _in_bitmap(words: T.U64, shift: np.uint64, keys: T.U64) -> T.I64:
    slot = keys >> shift
    bit = (words[slot >> np.uint64(6)] >> (slot & np.uint64(63))) & np.uint64(1)
    return np.flatnonzero(bit)


class IdentifierIndex:
    """A set of identifier values, searchable in text. Build with `build` or `from_frames`."""

    def __init__(
        self,
        entries: T.U64,
        kind_names: Sequence[str],
        pairs: T.U64,
        lengths: Sequence[int],
        n_values: int,
        *,
        min_length: int,
        min_digits: int,
        date_kinds: Sequence[str] = (),
        code_words: Iterable[str] = (),
    ) -> None:
        # Sorted: the top 56 bits of each variant's hash, the column (kind) in the low byte.
        self._entries = entries
        self._kind_names = list(kind_names)
        self._lengths = tuple(sorted({k for k in lengths if k >= 2}))
        self._n_values = n_values
        self._date_kinds = frozenset(date_kinds)
        self._code_words = frozenset(code_words)
        self._weak_code = np.array(
            [k in self._date_kinds for k in self._kind_names] + [False], dtype=np.bool_
        )
        self._min_length = min_length
        self._min_digits = min_digits
        self._bits, self._shift = _bitmap(entries)
        self._pair_bits, self._pair_shift = _bitmap(pairs)
        self._matcher = None
        if T._scanner is not None:
            self._matcher = T._scanner.Matcher(
                entries,
                self._bits,
                int(self._shift),
                self._pair_bits,
                int(self._pair_shift),
                self._lengths,
                min_digits,
                max(min_digits, MIN_GROUPED_DIGITS),
            )

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
            f"<IdentifierIndex values={self._n_values} variants={len(self._entries)} "
            f"kinds={self._kind_names}>"
        )

    @property
    def kinds(self) -> list[str]:
        return [k for k in self._kind_names if not k.startswith(ROT13_PREFIX)]

    @property
    def date_kinds(self) -> frozenset[str]:
        """Columns whose values are dates: their matches are weak alone (see `strengthen`)."""
        return self._date_kinds

    @property
    def code_words(self) -> frozenset[str]:
        """The letters (lower case) that begin values holding digits (`mrn` of `MRN00012345`):
        `_separated` joins digit groups written after one of these words only."""
        return self._code_words

    @property
    def nbytes(self) -> int:
        return int(self._entries.nbytes + self._bits.nbytes + self._pair_bits.nbytes)

    def first(self, text: str) -> IdentifierMatch | None:
        """The earliest match in `text`, or None when the text holds no identifier value."""
        found = self.find(text, limit=1)
        return found[0] if found else None

    def find(self, text: str, limit: int | None = None) -> list[IdentifierMatch]:
        """Every identifier value in `text`, ordered by position (the first `limit` of them)."""
        if not text or not len(self._entries):
            return []
        raw = T.lower_bytes(text)
        if self._matcher is not None:
            s, e, kk = self._spans_native(raw)
        else:
            s, e, kk = self._spans_reference(raw)
        return self._matches(text, raw, s, e, kk, limit)

    def _find_each(self, texts: Sequence[str]) -> list[tuple[int, int, int, str]]:
        """(which of `texts`, start, end, value_kind) of every value in each of `texts`, found
        in one `_find_lowered` over them joined by newlines (no value spans a newline): a call
        costs the same few dozen array operations whatever its size, so `scan_text` looks
        through all its decoded texts, and the separated layer all its forms, in one."""
        if not texts:
            return []
        offsets = list(itertools.accumulate((len(t) + 1 for t in texts), initial=0))
        joined = "\n".join(texts) if len(texts) > 1 else texts[0]
        out = []
        for start, end, kind in self._find_lowered(joined, T.lower_bytes(joined)):
            i = bisect.bisect_right(offsets, start) - 1
            out.append((i, start - offsets[i], end - offsets[i], kind))
        return out

    def _find_lowered(
        self, text: str | Callable[[], str], raw: bytes, backwards: bool = False
    ) -> list[tuple[int, int, str]]:
        """(start, end, value_kind) of every value in `text`, given `raw`, its lower-cased
        bytes (`_tokens.lower_bytes`), ordered by position: `find` without its strength, its
        match objects and lower-casing again (`scan_text` weighs all its findings together,
        lowers an ASCII output once and also searches the reversed bytes, which of an ASCII
        text are the reversed text's). The same matches as `find`: those that cannot be the
        value they hash like are dropped (`_matching.keep_match`). `text` may be a function
        that makes it, called only when `raw` holds a match (the reversal of a megabyte costs
        a quarter of a millisecond, and almost every output holds no reversed value).

        With `backwards`, `text` is the reversal of an ASCII text whose lower-cased bytes are
        `raw`: the core searches `raw` reversed without the caller making a copy of it."""
        if not raw or not len(self._entries):
            return []
        if self._matcher is not None:
            s, e, kk = self._spans_native(raw, backwards)
        else:
            s, e, kk = self._spans_reference(raw[::-1] if backwards else raw)
        if not len(s):
            return []
        if not isinstance(text, str):
            text = text()
        if backwards:
            if len(text) != len(raw):
                raise ValueError("a backwards search needs an ASCII text")
        else:
            s, e = _char_offsets(text, raw, s, e)
        return self._kept(text, s, e, kk)

    def _find_both(
        self, text: str, raw: bytes, parts: Sequence[tuple[bytes, bytes]] | None = None
    ) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
        """`_find_lowered(text, raw)` and `_find_lowered(lambda: text[::-1], raw, backwards=True)`
        of an ASCII `text`, from one tokenization of `raw` (`_scanner.Matcher.find_both`: the
        reversed text's tokens are the text's, read backwards, so they need not be found again).

        `parts` are the records of `_both_part` calls that together cover `raw` (made in threads
        by `scan_text`); without them, one call over the whole of it."""
        if self._matcher is None or not raw or not len(self._entries):
            return (
                self._find_lowered(text, raw),
                self._find_lowered(lambda: text[::-1], raw, backwards=True),
            )
        if parts is None:
            parts = [self._both_part(raw)]
        forwards = self._found(text, raw, b"".join(p[0] for p in parts), False)
        backwards = self._found(text, raw, b"".join(p[1] for p in parts), True)
        return forwards, backwards

    def _both_part(self, raw: bytes, start: int = 0, stop: int = -1) -> tuple[bytes, bytes]:
        """The core's forward and backward match records of the part [start, stop) of `raw` (an
        ASCII text's lower-cased bytes; see `_find_both`). Releases the GIL."""
        assert self._matcher is not None
        both: tuple[bytes, bytes] = self._matcher.find_both(raw, start, stop)
        return both

    def _found(
        self, text: str, raw: bytes, records: bytes, backwards: bool
    ) -> list[tuple[int, int, str]]:
        """`_find_lowered`'s result from the core's records of an ASCII `text` (backwards: of
        its reversal, made only when a record is there)."""
        s, e, kk = self._records_spans(records)
        if not len(s):
            return []
        if backwards:
            text = text[::-1]
        return self._kept(text, s, e, kk)

    def _kept(
        self, text: str, s: np.ndarray, e: np.ndarray, kk: np.ndarray
    ) -> list[tuple[int, int, str]]:
        """The spans of `text` that `_keep` keeps, with their kinds' names."""
        keep = self._keep(text, s, e, self._weak_code[kk])
        if not keep.all():
            s, e, kk = s[keep], e[keep], kk[keep]
        names = self._kind_names
        return [
            (a, b, names[c]) for a, b, c in zip(s.tolist(), e.tolist(), kk.tolist(), strict=True)
        ]

    def _find_reference(self, text: str, limit: int | None = None) -> list[IdentifierMatch]:
        """`find` by the numpy reference path (what the compiled core must agree with)."""
        if not text or not len(self._entries):
            return []
        raw = T.lower_bytes(text)
        s, e, kk = self._spans_reference(raw)
        return self._matches(text, raw, s, e, kk, limit)

    def _spans_native(self, raw: bytes, backwards: bool = False) -> tuple[T.I64, T.I64, T.U8]:
        """Byte spans and kind codes of every match, by the compiled core; sorted, distinct
        (with `backwards`, in `raw` reversed)."""
        assert self._matcher is not None
        return self._records_spans(self._matcher.find(raw, backwards))

    @staticmethod
    def _records_spans(records: bytes) -> tuple[T.I64, T.I64, T.U8]:
        """Sorted, distinct byte spans and kind codes from the core's (start, end, kind * 2 +
        rank) records, in any order and with repeats (windows overlap, parts are joined)."""
        rec = np.frombuffer(records, dtype=np.int64).reshape(-1, 3)
        if not len(rec):
            return rec[:, 0], rec[:, 1], np.empty(0, dtype=np.uint8)
        s, e, code = rec[:, 0], rec[:, 1], rec[:, 2]
        # Among matches of one span, the reference path keeps the first it found; a token
        # sequence is found before the same digits regrouped (rank 1).
        order = np.lexsort((code & 1, -e, s))
        s, e, code = s[order], e[order], code[order]
        keep = np.ones(len(s), dtype=np.bool_)
        keep[1:] = (s[1:] != s[:-1]) | (e[1:] != e[:-1])
        return s[keep], e[keep], (code[keep] >> 1).astype(np.uint8)

    def _spans_reference(self, raw: bytes) -> tuple[T.I64, T.I64, T.U8]:
        """Byte spans and kind codes of every match, with numpy; sorted, distinct."""
        empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))
        buf = np.frombuffer(raw, dtype=np.uint8)
        tok = T.tokenize(buf)
        ntok = len(tok)
        if not ntok:
            return empty
        starts: list[T.I64] = []
        ends: list[T.I64] = []
        kinds: list[T.U8] = []

        # Single tokens long enough to be indexed on their own.
        single = np.flatnonzero(
            np.where(tok.is_digit, tok.significant >= self._min_digits, tok.significant >= 2)
        )
        if len(single):
            hit, kind = self._lookup(tok.hash[single])
            if len(hit):
                at = single[hit]
                starts.append(tok.start[at])
                ends.append(tok.end[at])
                kinds.append(kind)

        # Sequences: only where the next two tokens start an indexed sequence.
        if self._lengths and ntok >= 2:
            keys = T.pair_key(tok.hash[:-1], tok.hash[1:])
            cand = _in_bitmap(self._pair_bits, self._pair_shift, keys)
            gap_ok = self._gaps_ok(buf, tok, cand)
            for k in self._lengths:
                c = cand[cand + k <= ntok]
                # Every gap inside the window must be short and on one line.
                for j in range(k - 1):
                    c = c[gap_ok[c + j]]
                if not len(c):
                    continue
                hit, kind = self._lookup(T.fold([tok.hash[c + j] for j in range(k)]))
                if len(hit):
                    at = c[hit]
                    starts.append(tok.start[at])
                    ends.append(tok.end[at + k - 1])
                    kinds.append(kind)

        self._digit_groups(raw, buf, tok, starts, ends, kinds)
        if not starts:
            return empty
        s = np.concatenate(starts)
        e = np.concatenate(ends)
        kk = np.concatenate(kinds)
        order = np.lexsort((-e, s))
        s, e, kk = s[order], e[order], kk[order]
        keep = np.ones(len(s), dtype=np.bool_)
        keep[1:] = (s[1:] != s[:-1]) | (e[1:] != e[:-1])
        s, e, kk = s[keep], e[keep], kk[keep]
        return s, e, kk

    def _matches(
        self, text: str, raw: bytes, s: T.I64, e: T.I64, kk: T.U8, limit: int | None
    ) -> list[IdentifierMatch]:
        """Matches from sorted byte spans: offsets in characters, weak or strong, `limit`."""
        if not len(s):
            return []
        s, e = _char_offsets(text, raw, s, e)
        weak = self._weak_code[kk]
        keep = self._keep(text, s, e, weak)
        if not keep.all():
            s, e, kk, weak = s[keep], e[keep], kk[keep], weak[keep]
        if weak.any():
            weak = np.asarray(strengthen(text, np.stack([s, e], axis=1), weak), dtype=np.bool_)
        if limit is not None:
            s, e, kk, weak = s[:limit], e[:limit], kk[:limit], weak[:limit]
        names = self._kind_names
        # A megabyte of output can hold thousands of matches: they are made without the frozen
        # dataclass's `__init__` (an `object.__setattr__` per field), filling the instance dict
        # with exactly the fields it would set (`tests/policy/test_identifiers_match.py`).
        new = object.__new__
        out: list[IdentifierMatch] = []
        append = out.append
        for a, b, c, w in zip(s.tolist(), e.tolist(), kk.tolist(), weak.tolist(), strict=True):
            m = new(IdentifierMatch)
            d = m.__dict__
            d["start"] = a
            d["end"] = b
            d["value_kind"] = names[c]
            d["strength"] = WEAK if w else STRONG
            append(m)
        return out

    @staticmethod
    def _keep(text: str, s: T.I64, e: T.I64, date: T.B) -> T.B:
        """Which matches can be the value they hash like (`_matching.keep_match`)."""
        return _matching.keep_matches(text, s, e, date)

    @staticmethod
    def _gaps_ok(buf: T.U8, tok: T.Tokens, cand: T.I64) -> T.B:
        """Per token: is the gap to the next token at most 3 characters, without a newline?

        Values are written on one line with short separators (`Smith, John`, `12 / 03 / 1956`);
        numbers that merely follow each other across lines or table columns are not one value.
        """
        ok = np.zeros(len(tok), dtype=np.bool_)
        if not len(cand):
            return ok
        if len(cand) * 8 > len(tok):
            span = np.arange(len(tok) - 1)
        else:
            mark = np.zeros(len(tok) + MAX_SEQ, dtype=np.bool_)
            for j in range(MAX_SEQ - 1):
                mark[cand + j] = True
            span = np.flatnonzero(mark[: len(tok) - 1])
        gap_start = tok.end[span]
        width = tok.start[span + 1] - gap_start
        good = width <= 3
        last = len(buf) - 1
        for j in range(3):
            at = buf[np.minimum(gap_start + j, last)]
            good &= (j >= width) | ((at != 10) & (at != 13))
        ok[span] = good
        return ok

    def _lookup(self, h: T.U64) -> tuple[T.I64, T.U8]:
        """Positions in `h` present in the index, and their kinds."""
        cand = _in_bitmap(self._bits, self._shift, h)
        if not len(cand):
            return cand, np.empty(0, dtype=np.uint8)
        hc = h[cand]
        hc = hc & _HIGH
        pos = np.searchsorted(self._entries, hc)
        pos[pos == len(self._entries)] = 0
        found = self._entries[pos]
        eq = (found & _HIGH) == hc
        return cand[eq], (found[eq] & np.uint64(0xFF)).astype(np.uint8)

    def _digit_groups(
        self,
        raw: bytes,
        buf: T.U8,
        tok: T.Tokens,
        starts: list[T.I64],
        ends: list[T.I64],
        kinds: list[T.U8],
    ) -> None:
        """Match numbers whose digit groups are split differently from the indexed value.

        Runs of digit groups written as one number (see `group_gaps_ok`) with enough digits
        for a phone number are rare in ordinary output, so their concatenations are built as
        strings and hashed like any single token.
        """
        joinable = T.group_gaps_ok(buf, tok)
        if not len(joinable):
            return
        need = max(self._min_digits, MIN_GROUPED_DIGITS)
        raw_len = tok.end - tok.start
        cum = np.concatenate(([0], np.cumsum(raw_len)))
        # Chains: runs of consecutive joinable pairs j..j+r-1, covering tokens j..j+r.
        brk = np.concatenate(([True], joinable[1:] != joinable[:-1] + 1))
        chain = np.cumsum(brk) - 1
        chain_first = joinable[brk]
        chain_last = np.append(joinable[:-1][brk[1:]], joinable[-1]) + 1
        total = cum[chain_last + 1] - cum[chain_first]
        first = joinable[total[chain] >= need]
        if not len(first):
            return
        ok = np.zeros(len(tok), dtype=np.bool_)
        ok[joinable] = True
        # Windows of 2..MAX_DIGIT_GROUPS joinable groups starting at each candidate.
        starts_w: list[T.I64] = []
        lasts_w: list[T.I64] = []
        alive = first
        for k in range(2, MAX_DIGIT_GROUPS + 1):
            if k > 2:
                nxt = alive + k - 2
                alive = alive[nxt < len(ok)]
                alive = alive[ok[alive + k - 2]]
            if not len(alive):
                break
            starts_w.append(alive)
            lasts_w.append(alive + k - 1)
        f_all = np.concatenate(starts_w)
        l_all = np.concatenate(lasts_w)
        enough = (cum[l_all + 1] - cum[f_all]) >= need
        f_all, l_all = f_all[enough], l_all[enough]
        if not len(f_all):
            return
        cols = np.minimum(f_all[:, None] + np.arange(MAX_DIGIT_GROUPS), len(tok) - 1)
        s_rows = tok.start[cols].tolist()
        e_rows = tok.end[cols].tolist()
        widths = (l_all - f_all + 1).tolist()
        joined = "\n".join(
            "".join(raw[a:b].decode() for a, b in zip(sr[:w], er[:w], strict=True))
            for sr, er, w in zip(s_rows, e_rows, widths, strict=True)
        )
        jt = T.tokenize(np.frombuffer(joined.encode(), dtype=np.uint8))
        # One token per window, in order (the joined digits contain no separator).
        cand = np.flatnonzero(jt.significant >= need)
        if not len(cand):
            return
        hit, kind = self._lookup(jt.hash[cand])
        if len(hit):
            starts.append(tok.start[f_all[cand[hit]]])
            ends.append(tok.end[l_all[cand[hit]]])
            kinds.append(kind)


def _char_offsets(text: str, raw: bytes, s: T.I64, e: T.I64) -> tuple[T.I64, T.I64]:
    """Byte offsets of `raw` (the UTF-8 of `text`, lower-cased) as character offsets."""
    if len(raw) == len(text):
        return s, e
    if T._scanner is not None:
        # In one pass of the core over the bytes, for the offsets in ascending order.
        both = np.concatenate([s, e])
        order = np.argsort(both, kind="stable")
        at = np.empty_like(both)
        at[order] = np.frombuffer(T._scanner.char_offsets(raw, both[order]), dtype=np.int64)
        return at[: len(s)], at[len(s) :]
    # A character per UTF-8 byte that is not a continuation byte (0b10xxxxxx) before the offset.
    buf = np.frombuffer(raw, dtype=np.uint8)
    cont = np.flatnonzero((buf & 0xC0) == 0x80)
    return s - np.searchsorted(cont, s), e - np.searchsorted(cont, e)


def _column_strings(series: pd.Series[Any]) -> pa.Array:
    """A column's non-missing values as an Arrow string array (dates as ISO text)."""
    import pandas as pd

    s = series.dropna()
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = s.dt.strftime("%Y-%m-%d")
    try:
        return pa.array(s.to_numpy(dtype=object), type=pa.large_string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        # Not all text (numbers, dates as objects): index their text form.
        return pa.array(s.astype(str).to_numpy(dtype=object), type=pa.large_string())


class _Builder:
    """Collects variant hashes of values, column by column, and freezes them into an index."""

    def __init__(self, *, min_length: int, min_digits: int) -> None:
        self.min_length = min_length
        self.min_digits = min_digits
        self.hashes: list[T.U64] = []
        self.kinds: list[T.U8] = []
        self.pairs: list[T.U64] = []
        self.kind_names: list[str] = []
        self.lengths: set[int] = set()
        self.n_values = 0
        self.iso_count: dict[str, int] = {}
        self.value_count: dict[str, int] = {}
        self.code_words: set[str] = set()
        self._titles = _word_hashes(_TITLES)
        self._calendar = _word_hashes(_CALENDAR_WORDS)
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
        iso = pc.sum(pc.match_substring_regex(arr, _ISO_DATE)).as_py() or 0
        self.iso_count[kind] = self.iso_count.get(kind, 0) + iso
        # Letters that begin a code (`MRN00012345` -> `mrn`); few distinct per column.
        words = pc.unique(pc.extract_regex(arr, r"^(?P<w>[^\W\d_]+)[\W_]?\d").field("w"))
        self.code_words.update(w for w in words.to_pylist() if w)
        self.value_count[kind] = self.value_count.get(kind, 0) + len(arr)
        for offset in range(0, len(arr), _CHUNK):
            chunk = arr.slice(offset, _CHUNK)
            self.n_values += self._lines(chunk, variants=True, codes=True)
            for extra in self._string_variants(chunk):
                self._lines(extra, variants=False)
            self._take_pending(code)
        self._add_rot13(arr, kind)

    def _add_rot13(self, arr: pa.Array, kind: str) -> None:
        """The rot13 forms of the values with letters (`codecs.encode(v, "rot13")`), under a
        column of their own (`ROT13_PREFIX` + kind): one index pass finds a value and its rot13
        form, where decoding rot13 would be a second pass over every output. Skipped when the
        index has no column code left for it."""
        rot = _rot13(arr)
        if not len(rot):
            return
        name = ROT13_PREFIX + kind
        if name not in self.kind_names:
            if len(self.kind_names) >= 255:
                return
            self.kind_names.append(name)
        code = self.kind_names.index(name)
        for offset in range(0, len(rot), _CHUNK):
            self._lines(rot.slice(offset, _CHUNK), variants=True)
            self._take_pending(code)

    def _take_pending(self, code: int) -> None:
        """File the hashes `_lines` left in `_pending` under column `code`."""
        if self._pending:
            h = np.concatenate(self._pending)
            self.hashes.append(h)
            self.kinds.append(np.full(len(h), code, dtype=np.uint8))
        self._pending = []

    def _lines(self, arr: pa.Array, *, variants: bool, codes: bool = False) -> int:
        """Hash every value (one per line) of `arr` and its token-level variants (and with
        `codes`, the digits of the values that are codes: `_emit_code_digits`).

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
        nlines = len(line_start)
        line = np.searchsorted(line_start, tok.start, side="right") - 1
        count = np.bincount(line, minlength=nlines)
        first_tok = np.zeros(nlines, dtype=np.int64)
        np.cumsum(count[:-1], out=first_tok[1:])
        too_long = tok.significant > T.MAX_TOKEN
        bad = np.bincount(line, weights=too_long, minlength=nlines) > 0
        sig = np.bincount(line, weights=tok.significant, minlength=nlines)
        digits = np.bincount(line, weights=tok.is_digit, minlength=nlines)
        all_digit = (digits == count) & (count > 0)
        letters = (digits == 0) & (count > 0)
        keep = ~bad & np.where(all_digit, sig >= self.min_digits, sig >= self.min_length)
        # One word alone: a short one (`Max`, the label of every `describe()`, or three letters
        # of a base64 run) or a month's or weekday's name names nobody; such words still count
        # inside a value of several (`Max Weber`).
        word = np.flatnonzero(letters & (count == 1) & keep)
        if len(word):
            h = tok.hash[first_tok[word]]
            short = sig[word] < max(self.min_length, MIN_WORD_LETTERS)
            keep[word[short | np.isin(h, self._calendar)]] = False
        if codes:
            self._emit_code_digits(tok, first_tok[np.flatnonzero((count == 2) & ~bad)])
        indexed = 0
        for k in range(1, MAX_SEQ + 1):
            exact = count == k if k < MAX_SEQ else count >= k
            rows = np.flatnonzero(exact & keep)
            if not len(rows):
                continue
            indexed += len(rows)
            f = first_tok[rows]
            seqs = np.stack([tok.hash[f + j] for j in range(k)])
            self._emit_seq(seqs)
            if k >= 2:
                if variants and 2 <= k <= 5:
                    n = np.flatnonzero(letters[rows])
                    if len(n):
                        self._emit_names(seqs[:, n])
        return indexed

    def _emit_code_digits(self, tok: T.Tokens, first: T.I64) -> None:
        """A code's digits without its letters (`51069856` of `MRN51069856` or `XJ-51069856`,
        what `value[3:]` prints), for the two-token values at `first` that are letters then
        digits: indexed as a number of its own, so the rule of purely numeric values holds (fewer
        than `min_digits` significant digits are not indexed: they would match ordinary counts).
        The token is hashed already; tokenising the digits again cost the build of a million
        record numbers a second."""
        digits = first + 1
        code = ~tok.is_digit[first] & tok.is_digit[digits]
        code &= tok.significant[digits] >= self.min_digits
        if code.any():
            self._pending.append(tok.hash[digits[code]])

    def _emit_seq(self, seqs: T.U64) -> None:
        """Hash token sequences (k x n array of token hashes)."""
        k = seqs.shape[0]
        if k == 1:
            self._pending.append(seqs[0].copy())
            return
        self.lengths.add(k)
        self._pending.append(T.fold(seqs))
        self.pairs.append(T.pair_key(seqs[0], seqs[1]))

    def _emit_names(self, seqs: T.U64) -> None:
        """Names: without title/suffix, surname first, without middle names."""
        k = seqs.shape[0]
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
            # Other countries (`+49 (0) 7346 468695`, `0033 1 ...`): the national form with its
            # trunk `0`, when the country code is set apart (a separator or `(0)` after it).
            other = pc.and_(
                pc.invert(intl),
                pc.match_substring_regex(ph, _OTHER_COUNTRY),
            )
            if pc.any(other).as_py():
                out.append(pc.replace_substring_regex(ph.filter(other), _OTHER_COUNTRY, "0"))
            national = pc.match_substring_regex(ph, r"^\s*\(?0[1-9]")
            if pc.any(national).as_py():
                x = ph.filter(national)
                out.append(pc.replace_substring_regex(x, r"^\s*\(?0", "+44 "))
        # UK postcodes with and without their space (`SW1A 1AA`, `sw1a1aa`): the space moves a
        # digit from one token to another, so each spelling is a variant of its own.
        postcode = pc.match_substring_regex(chunk, _POSTCODE)
        if pc.any(postcode).as_py():
            pcs = chunk.filter(postcode)
            out.append(pc.replace_substring_regex(pcs, r"\s+", ""))
            out.append(pc.replace_substring_regex(pcs, r"^(\S+?)\s*(\d[a-z]{2})$", r"\1 \2"))
        # Names written in ASCII: ß as `ss` (what `upper()` and `casefold()` make of it),
        # umlauts as `ae`/`oe`/`ue` (the German ASCII spelling), other marks dropped
        # (`José` -> `jose`, what an ASCII export or `unidecode` writes).
        foreign = pc.invert(pc.string_is_ascii(chunk))
        if pc.any(foreign).as_py():
            x = chunk.filter(foreign)
            ss = pc.replace_substring(x, "ß", "ss")
            digraphs = ss
            for mark, ascii_form in (("ä", "ae"), ("ö", "oe"), ("ü", "ue")):
                digraphs = pc.replace_substring(digraphs, mark, ascii_form)
            bare = pc.replace_substring_regex(pc.utf8_normalize(ss, "NFKD"), r"\p{M}+", "")
            for form in (ss, digraphs, bare):
                changed = pc.not_equal(form, x)
                if pc.any(changed).as_py():
                    out.append(form.filter(changed))
        # Values written in digit groups (phones, ISO dates) also match as one run of digits:
        # `02079460123`, `19560312`.
        joined: list[pa.Array] = []
        for arr in [chunk, *out]:
            grouped = pc.match_substring_regex(arr, r"^[^\p{L}]*\d[^\p{L}\d]+\d[^\p{L}]*$")
            if pc.any(grouped).as_py():
                joined.append(pc.replace_substring_regex(arr.filter(grouped), r"\D+", ""))
        # Other date formats; their compact forms are listed explicitly (zero-padded), since
        # joining `3/9/1973` into `391973` would match ordinary six-digit numbers.
        iso = pc.match_substring_regex(chunk, _ISO_DATE)
        if pc.any(iso).as_py():
            dates = pc.unique(pc.utf8_slice_codeunits(chunk.filter(iso), 0, 10))
            out.append(pa.array(_date_variants(dates.to_pylist()), type=pa.large_string()))
        return out + joined

    def finish(self) -> IdentifierIndex:
        if self.hashes:
            h = np.concatenate(self.hashes)
            kinds = np.concatenate(self.kinds)
        else:
            h = np.empty(0, dtype=np.uint64)
            kinds = np.empty(0, dtype=np.uint8)
        pairs = np.concatenate(self.pairs) if self.pairs else np.empty(0, dtype=np.uint64)
        self.hashes, self.kinds, self.pairs = [], [], []
        # One sorted array: hash (top 56 bits) | column code; where two columns share a variant,
        # the first column added wins (smallest code sorts first).
        entries = np.sort((h & _HIGH) | kinds.astype(np.uint64))
        if len(entries):
            keep = np.concatenate(([True], (entries[1:] & _HIGH) != (entries[:-1] & _HIGH)))
            entries = entries[keep]
        return IdentifierIndex(
            entries,
            self.kind_names,
            _sorted_unique(pairs),
            sorted(self.lengths),
            self.n_values,
            min_length=self.min_length,
            min_digits=self.min_digits,
            code_words=self.code_words,
            # A column is a date column when nearly all its values are dates.
            date_kinds=[
                k for k, n in self.value_count.items() if n and self.iso_count.get(k, 0) >= 0.9 * n
            ],
        )


# The column of the rot13 forms of a column's values; `scan_text` reports a match of it as
# "encoded:rot13+identifier" of the column itself.
ROT13_PREFIX = "rot13:"
_ROT13 = np.arange(256, dtype=np.uint8)
_ROT13[97:123] = (np.arange(26) + 13) % 26 + 97  # values are lower-cased when indexed


def _rot13(arr: pa.Array) -> pa.Array:
    """rot13 of the (lower-case, non-null) values of `arr` that hold an ASCII letter."""
    arr = arr.filter(pc.match_substring_regex(arr, "[a-z]")).cast(pa.large_string())
    if not len(arr):
        return arr
    arr = pa.concat_arrays([arr])  # its own buffers, from offset 0
    offsets, data = arr.buffers()[1], arr.buffers()[2]
    assert data is not None
    rotated = _ROT13[np.frombuffer(data, dtype=np.uint8)]
    return pa.Array.from_buffers(
        pa.large_string(), len(arr), [None, offsets, pa.py_buffer(rotated.tobytes())], 0, arr.offset
    )


_POSTCODE = r"^[a-z]{1,2}\d[a-z\d]?\s*\d[a-z]{2}$"  # values are lower-cased when indexed
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}(?:[ t]00:00(?::00(?:\.0+)?)?)?$"

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
                f"{day:02d}{month:02d}{year}",
                f"{month:02d}{day:02d}{year}",
                f"{day} {mon} {year}",
                f"{day} {full} {year}",
                f"{mon} {day} {year}",
                f"{full} {day} {year}",
                f"{year} {mon} {day}",
            )
        )
    return out
