"""Protected values in record order, whatever their cardinality: extractions and their text.

A list, array or string made value by value from protected rows (`df.sex.tolist()`,
`list(df.died)`, `''.join(df.sex)`, `df[['sex', 'died']].to_string()`, `df.sex.values[100:160]`)
holds one value per record in record order, so it links to the records by position even when the
column has two values. The numeric and coded-column scans of `_scan.py` recognise such runs only
for columns with many distinct values; this module covers the rest in two ways:

- **Provenance** (`SequenceLog`, fed by the pandas hooks of `_provenance.install_sequence_hooks`):
  every extraction of a protected Series or DataFrame in row order (`tolist`, iteration, `values`,
  `to_numpy`, `to_string`, `to_dict`, `to_json`, `to_csv`, ...) is remembered. Displaying the
  extracted list or array is refused, and any later text that reproduces `K_EXTRACT` consecutive
  values of an extraction (read with a stride, so several columns interleaved row by row or an
  index between values are recognised too) is refused; runs of one repeated value are not a
  signature and are ignored.
- **Table index** (`TableSequences`): phrasings the hooks cannot see (`np.asarray(df.sex)`, string
  sums) still print the column's values in order. For every low-cardinality column of a loaded
  table (its first `MAX_VALUES` rows) the run length is chosen so that its information (from the
  column's value frequencies) exceeds log2(rows) + `MARGIN_BITS`: a run that long matches the
  column by chance with probability about 2^-MARGIN_BITS, and only windows that carry that much
  information are indexed.

Values and text are compared as normalised tokens (case folded, `1.0`/`1.`/`True` read as `1`),
hashed with Python's per-process string hash; nothing here stores or reports a value.
"""

from __future__ import annotations

import math
import re
import string
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

K_EXTRACT = 10  # values of an extraction in a row that make text row-level
MAX_VALUES = 100_000  # values of one extraction remembered (from its start)
MAX_EXTRACTIONS = 16
MAX_STRIDE = 8  # columns interleaved in a row-major print (index included)
MARGIN_BITS = 16
MAX_K = 64
MAX_TABLE_DISTINCT = 64  # columns with more distinct values are the other scans' business
_P = np.uint64(1_000_003)
_TOKEN = re.compile(r"[\w.+-]+")


def ascii_table(token_chars: str) -> dict[int, str]:
    """A `str.translate` table that turns every ASCII character outside `token_chars` (and
    letters, digits, `_`: ASCII's \\w) into a space."""
    keep = set(string.ascii_letters + string.digits + "_" + token_chars)
    return {c: chr(c) if chr(c) in keep else " " for c in range(128)}


_ASCII_TABLE = ascii_table(".+-")


def find_tokens(text: str, pattern: re.Pattern[str] = _TOKEN,
                table: dict[int, str] = _ASCII_TABLE) -> list[str]:  # fmt: skip
    """`pattern.findall(text)` for a pattern `[\\w...]+` whose table is `table`. An ASCII text is
    split instead (translated, then split at spaces, about four times as fast as the regex):
    in ASCII, \\w is letters, digits and `_`, so the tokens are the same
    (tests/kernel/test_fast_paths.py)."""
    if text.isascii():
        return text.translate(table).split()
    return pattern.findall(text)


# The last text `shared_tokens` split, with its tokens and their set. The text is held, so `is`
# cannot match another text at the same address.
_last_split: tuple[str, int, list[str], set[str]] | None = None


def shared_tokens(text: str, limit: int = 200_000) -> tuple[list[str], set[str]] | None:
    """The tokens of `text[:limit].lower()` and their set, when the coded-column scan
    (`_scan.CategoryStructure`: `[\\w.-]+` of the lowered text) and this module's scan
    (`[\\w.+-]+`, literal `\\n`/`\\t` read as spaces, tokens compared lowered) read the same
    ones: an ASCII text without `+` or backslash. Else None. Both scans of one output split it
    once (the last text is remembered; the caller must not change the list or the set)."""
    global _last_split
    last = _last_split
    if last is not None and last[0] is text and last[1] == limit:
        return last[2], last[3]
    head = text[:limit]
    if not head.isascii() or "+" in head or "\\" in head:
        return None
    tokens = find_tokens(head.lower())  # (ASCII: translated and split)
    distinct = set(tokens)
    _last_split = (text, limit, tokens, distinct)
    return tokens, distinct


_MASK = (1 << 64) - 1
_TRUE = {"true": "1", "false": "0", "none": "nan", "<na>": "nan", "nat": "nan", "nan": "nan"}


def _norm(token: str) -> str:
    t = token.lower()
    mapped = _TRUE.get(t)
    if mapped is not None:
        return mapped
    if t[0].isdigit() or t[0] in "+-.":
        try:
            x = float(t)
        except ValueError:
            return t.strip(".")
        if math.isfinite(x):
            return str(int(x)) if x.is_integer() else f"{x:.6g}"
    return t


_CACHE: dict[str, int] = {}


def token_hash(token: str) -> int:
    h = _CACHE.get(token)
    if h is None:
        if len(_CACHE) > 200_000:
            _CACHE.clear()
        h = _CACHE[token] = hash(_norm(token)) & _MASK
    return h


def text_tokens(text: str, chars: frozenset[str], limit: int = 200_000) -> list[str]:
    """Tokens of `text`; a long token made only of single-character values is read per character
    (`''.join(df.sex)` prints one word)."""
    return _text_tokens(text, chars, limit)[0]


def _text_tokens(
    text: str,
    chars: frozenset[str],
    limit: int = 200_000,
    known: tuple[list[str], set[str]] | None = None,
) -> tuple[list[str], set[str]]:
    """`text_tokens` and the set of its distinct tokens; `known`: the text's own, if known."""
    if known is None:
        text = text[:limit]
        if "\\" in text:  # (one search; most outputs have no backslash)
            text = text.replace("\\n", " ").replace("\\t", " ")
        tokens = find_tokens(text)
        distinct = set(tokens)
    else:
        tokens, distinct = known
    if not chars:
        return tokens, distinct
    # which tokens to read per character, decided once per distinct token
    # (`strip` of the characters leaves nothing exactly when the token is made of them only, and
    # stops at once at the first other character: a long token of other letters costs nothing)
    fold = "".join(chars)
    split = {tok for tok in distinct if len(tok) >= K_EXTRACT and not tok.lower().strip(fold)}
    if not split:
        return tokens, distinct
    out: list[str] = []
    for tok in tokens:
        if tok in split:
            out.extend(tok)
        else:
            out.append(tok)
    return out, set(out)


def _any_known(vocab: np.ndarray, hashes: np.ndarray) -> bool:
    """Is any of `hashes` in the sorted `vocab` (what `strided_match` reads as known)?"""
    if vocab.size == 0 or hashes.size == 0:
        return False
    pos = np.searchsorted(vocab, hashes)
    pos[pos >= vocab.size] = 0
    return bool((vocab[pos] == hashes).any())


def value_tokens(values: Any) -> tuple[np.ndarray, np.ndarray, frozenset[str]]:
    """The token hashes of `values` in order, the information (bits) each token carries, and
    the values that are one character long (for joined strings)."""
    arr = np.asarray(values, dtype=object).ravel()[:MAX_VALUES]
    if arr.size == 0:
        return np.empty(0, np.uint64), np.empty(0), frozenset()
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    freq = np.bincount(codes, minlength=len(uniques)) / codes.size
    toks = [_TOKEN.findall(str(u)) for u in uniques]
    hashes = [[token_hash(t) for t in ts] for ts in toks]
    chars = frozenset(_norm(ts[0]) for ts in toks if len(ts) == 1 and len(_norm(ts[0])) == 1)
    bits = -np.log2(freq)
    if all(len(h) == 1 for h in hashes):
        flat = np.fromiter((h[0] for h in hashes), dtype=np.uint64, count=len(hashes))
        return flat[codes], bits[codes], chars
    if len(hashes) > _MULTI_LIMIT:
        codes = codes[:_MULTI_LIMIT]
    seq: list[int] = []
    info: list[float] = []
    for c in codes:
        h = hashes[c]
        seq.extend(h)
        info.extend([bits[c]] + [0.0] * (len(h) - 1))
    return np.array(seq, dtype=np.uint64), np.array(info), chars


_MULTI_LIMIT = 20_000  # values of a multi-word column expanded token by token


def head_tail(values: Any) -> list[np.ndarray]:
    """For values of several words: the sequences of their first and of their last words (an
    index or a key printed between values breaks the word-by-word run, not these)."""
    arr = np.asarray(values, dtype=object).ravel()[:MAX_VALUES]
    if arr.size == 0:
        return []
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    toks = [_TOKEN.findall(str(u)) or [""] for u in uniques]
    if all(len(t) == 1 for t in toks):
        return []
    heads = np.array([token_hash(t[0]) for t in toks], dtype=np.uint64)
    tails = np.array([token_hash(t[-1]) for t in toks], dtype=np.uint64)
    return [heads[codes], tails[codes]]


def kgrams(q: np.ndarray, k: int) -> np.ndarray:
    m = q.size - k + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * _P + q[j : j + m]
    return h


def _has_run(flags: np.ndarray, k: int) -> bool:
    stops = np.flatnonzero(~flags)
    gaps = np.diff(np.concatenate(([-1], stops, [flags.size]))) - 1
    return bool(gaps.size and gaps.max() >= k)


def strided_match(hashes: np.ndarray, vocab: np.ndarray, q: np.ndarray, k: int) -> bool:
    """Does a k-gram of q, read with stride 1..MAX_STRIDE, occur in the sorted `hashes`?"""
    if hashes.size == 0 or q.size < k:
        return False
    pos = np.searchsorted(vocab, q)
    pos[pos >= vocab.size] = 0
    known = vocab[pos] == q
    if known.sum() < k:
        return False
    for stride in range(1, MAX_STRIDE + 1):
        for offset in range(stride):
            flags = known[offset::stride]
            if flags.size < k or not _has_run(flags, k):
                continue
            h = kgrams(q[offset::stride], k)
            idx = np.searchsorted(hashes, h)
            idx[idx >= hashes.size] = 0
            if (hashes[idx] == h).any():
                return True
    return False


def _nonconstant(seq: np.ndarray, k: int) -> np.ndarray:
    w = np.lib.stride_tricks.sliding_window_view(seq, k)
    flags: np.ndarray = ~(w == w[:, :1]).all(axis=1)
    return flags


class SequenceLog:
    """What this session extracted from protected rows in row order (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[Any, tuple[np.ndarray, np.ndarray, frozenset[str]]] = OrderedDict()
        self._frames: OrderedDict[Any, None] = OrderedDict()
        self.hashes = np.empty(0, np.uint64)
        self.vocab = np.empty(0, np.uint64)
        self.chars: frozenset[str] = frozenset()
        self.version = 0  # changes whenever hashes, vocab or chars do (`SequenceGuard.scan`)
        # Arrays from `.values` / `to_numpy`: checked lazily, most are temporaries of a model fit.
        self._pending: list[tuple[weakref.ref[np.ndarray], Any]] = []
        self._owners: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
        self._sources: OrderedDict[int, tuple[str, pd.Index]] = OrderedDict()
        self._lists: OrderedDict[int, tuple[Any, str, pd.Index]] = OrderedDict()
        # (table, labels) -> are these record labels of the table? (set by the pandas hooks)
        self.is_rows: Callable[[str, pd.Index], bool] = lambda table, index: True

    # -- what the pandas hooks report ---------------------------------------------------------
    def add_values(self, key: Any, values: Any) -> None:
        """Remember one column's values in record order."""
        if key in self._runs:
            self._runs.move_to_end(key)
            return
        seq, _, chars = value_tokens(values)
        grams = [np.empty(0, np.uint64)]
        seqs = [seq, *head_tail(values)]
        for q in seqs:
            if q.size >= K_EXTRACT:
                grams.append(kgrams(q, K_EXTRACT)[_nonconstant(q, K_EXTRACT)])
        vocab = np.unique(np.concatenate(seqs))
        self._runs[key] = (np.unique(np.concatenate(grams)), vocab, chars)
        while len(self._runs) > MAX_EXTRACTIONS:
            self._runs.popitem(last=False)
        self._rebuild()

    def seen(self, key: Any) -> bool:
        return key in self._frames

    def add_frame(self, key: Any, frame: pd.DataFrame | pd.Series) -> None:
        self._frames[key] = None
        while len(self._frames) > 4 * MAX_EXTRACTIONS:
            self._frames.popitem(last=False)
        if isinstance(frame, pd.Series):
            self.add_values((key, frame.name), frame.to_numpy())
            return
        for col in frame.columns:
            self.add_values((key, col), frame[col].to_numpy())

    def add_array(self, arr: Any, table: str, index: pd.Index, key: Any) -> None:
        """An array sharing memory with (or copied from) protected rows."""
        if not isinstance(arr, np.ndarray):
            return
        owner = _owner(arr)
        self._owners[id(owner)] = owner
        self._sources[id(owner)] = (table, index)
        self._sources.move_to_end(id(owner))
        while len(self._sources) > 256:
            self._sources.popitem(last=False)
        self._pending.append((weakref.ref(arr), key))
        del self._pending[:-64]

    def add_list(self, obj: list[Any], table: str, index: pd.Index) -> None:
        self._lists[id(obj)] = (obj, table, index)
        while len(self._lists) > 32:
            self._lists.popitem(last=False)

    def _rebuild(self) -> None:
        self.version += 1  # first, so even a rebuild that fails halfway forgets the verdicts
        runs = list(self._runs.values())
        self.hashes = np.unique(np.concatenate([r[0] for r in runs])) if runs else self.hashes
        self.vocab = np.unique(np.concatenate([r[1] for r in runs])) if runs else self.vocab
        self.chars = frozenset().union(*(r[2] for r in runs))

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        for ref, key in pending:
            arr = ref()
            if arr is None:
                continue
            src = self._sources.get(id(_owner(arr)))
            if src is None or not self.is_rows(*src):
                continue
            if arr.ndim == 2:
                for j in range(arr.shape[1]):
                    self.add_values((key, j), arr[:, j])
            else:
                self.add_values(key, arr)

    # -- what the guard asks ------------------------------------------------------------------
    def source_of(self, obj: Any) -> tuple[str, pd.Index] | None:
        """(table, record labels) of a list or array extracted from protected rows, else None."""
        if isinstance(obj, list):
            hit = self._lists.get(id(obj))
            return (hit[1], hit[2]) if hit is not None and hit[0] is obj else None
        if isinstance(obj, np.ndarray):
            owner = _owner(obj)
            if self._owners.get(id(owner)) is owner:
                return self._sources.get(id(owner))
        return None

    def settle(self) -> None:
        if self._pending:
            self._settle()

    def matches(self, q: np.ndarray) -> bool:
        """Does the text of token hashes `q` reproduce a run of an extraction?"""
        if self.hashes.size == 0 or q.size < K_EXTRACT:
            return False
        return strided_match(self.hashes, self.vocab, q, K_EXTRACT)


def _owner(arr: np.ndarray) -> np.ndarray:
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


class TableSequences:
    """Each low-cardinality column of the loaded tables in row order, in runs long enough to be
    a signature (see the module docstring)."""

    def __init__(self) -> None:
        self.by_k: dict[int, np.ndarray] = {}
        self.vocab = np.empty(0, np.uint64)
        self.chars: frozenset[str] = frozenset()
        self.frames = 0
        self.version = 0  # changes whenever by_k, vocab or chars may have (`SequenceGuard.scan`)

    def add_frame(self, frame: pd.DataFrame, skip: Iterable[str]) -> None:
        self.version += 1  # first, so even an indexing that fails halfway forgets the verdicts
        skip = set(skip)
        n = len(frame)
        if n < 2:
            return
        need = math.log2(n) + MARGIN_BITS
        vocab = [self.vocab]
        for col in frame.columns:
            if col in skip:
                continue
            s = frame[col]
            if s.nunique(dropna=False) > MAX_TABLE_DISTINCT:
                continue
            seq, info, chars = value_tokens(s.to_numpy())
            per = float(info.sum()) / max(seq.size, 1)
            if per <= 0:
                continue
            k = max(K_EXTRACT, math.ceil(need / per))
            if k > MAX_K or seq.size < k:
                continue
            csum = np.concatenate(([0.0], np.cumsum(info)))
            rich = (csum[k:] - csum[:-k]) >= need
            h = kgrams(seq, k)[rich]
            if h.size:
                self.by_k[k] = np.unique(np.concatenate([self.by_k.get(k, h[:0]), h]))
                vocab.append(np.unique(seq))
                self.chars |= chars
            for alt in head_tail(s.to_numpy()):
                self._add_run(alt, need, vocab)
        self.vocab = np.unique(np.concatenate(vocab))
        self.frames += 1

    def _add_run(self, seq: np.ndarray, need: float, vocab: list[np.ndarray]) -> None:
        """Index a sequence of single tokens (first or last words of the values)."""
        _, inverse, counts = np.unique(seq, return_inverse=True, return_counts=True)
        info = -np.log2(counts / seq.size)[inverse]
        per = float(info.mean()) if seq.size else 0.0
        if per <= 0:
            return
        k = max(K_EXTRACT, math.ceil(need / per))
        if k > MAX_K or seq.size < k:
            return
        csum = np.concatenate(([0.0], np.cumsum(info)))
        h = kgrams(seq, k)[(csum[k:] - csum[:-k]) >= need]
        if h.size:
            self.by_k[k] = np.unique(np.concatenate([self.by_k.get(k, h[:0]), h]))
            vocab.append(np.unique(seq))

    def matches(self, q: np.ndarray) -> bool:
        """Does the text of token hashes `q` reproduce a run of a column?"""
        if not self.by_k or q.size < K_EXTRACT:
            return False
        return any(strided_match(h, self.vocab, q, k) for k, h in self.by_k.items())


MEMO_ENTRIES = 256  # texts whose verdicts `SequenceGuard.scan` remembers
MEMO_MAX_CHARS = 16_384  # longer texts are scanned every time (bounds the memo's memory)


class SequenceGuard:
    """The guard's view: is this object or text a protected sequence in record order?"""

    def __init__(self, log: SequenceLog) -> None:
        self.log = log
        self.tables = TableSequences()
        # Verdicts of recently scanned texts. A verdict depends only on the text and on what the
        # log and the table index hold, so the memo is keyed by their versions: an extraction
        # noted or a table loaded since forgets every verdict.
        self._memo: dict[str, str | None] = {}
        self._memo_state: tuple[int, int] = (-1, -1)

    def sync_tables(self, frames: list[tuple[pd.DataFrame, list[str]]]) -> None:
        while self.tables.frames < len(frames):
            frame, identifiers = frames[self.tables.frames]
            self.tables.add_frame(frame, identifiers)

    def scan(self, text: str) -> str | None:
        """A description of the row-order run in `text`, or None."""
        if len(text) < 2 * K_EXTRACT - 1:
            return None
        self.log.settle()
        if self.log.hashes.size == 0 and not self.tables.by_k:
            return None
        if len(text) > MEMO_MAX_CHARS:
            return self._scan(text)
        state = (self.log.version, self.tables.version)
        if state != self._memo_state:
            self._memo.clear()
            self._memo_state = state
        elif text in self._memo:
            return self._memo[text]
        what = self._memo[text] = self._scan(text)
        if len(self._memo) > MEMO_ENTRIES:
            del self._memo[next(iter(self._memo))]
        return what

    def _scan(self, text: str) -> str | None:
        chars = self.log.chars | self.tables.chars
        # the tokens the coded-column scan split, if the same (lowered: compared lowered here)
        tokens, distinct_tokens = _text_tokens(text, chars, known=shared_tokens(text))
        if len(tokens) < K_EXTRACT:
            return None
        # Each distinct token is normalised and hashed once (a long output repeats its words). A
        # run is made of known tokens only (values of an extraction or of a column: `vocab`,
        # what `strided_match` reads as known); a text without any needs no further look.
        distinct = {t: token_hash(t) for t in distinct_tokens}
        hashes = np.fromiter(distinct.values(), dtype=np.uint64, count=len(distinct))
        if not (_any_known(self.log.vocab, hashes) or _any_known(self.tables.vocab, hashes)):
            return None
        q = np.fromiter(map(distinct.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
        if self.log.matches(q):
            return "values extracted from protected rows, in record order"
        if self.tables.matches(q):
            return "a column's values in record order"
        return None
