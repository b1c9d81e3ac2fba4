"""The guard's fast paths give the answers of the plain computations they replace.

The per-cell work of the guard was made cheaper (bench/bench_kernel_cell.py): record sets of
groups from one radix sort over cached label hashes, the row-structure scan in one pass per
stride, a memo of scanned texts, aggregate counts read from dicts. Each is checked here against
the straightforward computation, including the cases the fast path must hand back (missing
groups, duplicate labels, a table loaded after a text was scanned).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest

from bedside.kernel import _scan
from bedside.kernel import guard as guard_mod
from bedside.kernel._provenance import ProvenanceTracker, _group_records
from bedside.kernel.guard import (
    _cells_dict,
    _frame_of,
    _Grid,
    _lookup,
    _smallest,
    _top_dict,
    _xor_size,
)
from bedside.policy import disclosure as dr


def _records_reference(index: pd.Index, codes: np.ndarray, labels: pd.Index) -> dict:
    hashes = pd.util.hash_array(np.asarray(index.to_numpy(), dtype=object)
                                if index.dtype == object else index.to_numpy())  # fmt: skip
    return {label: np.sort(hashes[codes == i]) for i, label in enumerate(labels)}


@pytest.mark.parametrize(
    "index",
    [
        pd.RangeIndex(700),
        pd.Index([f"r{i}" for i in range(700)]),
        pd.Index(np.random.default_rng(1).permutation(700) * 7 + 3),
    ],  # fmt: skip
)
@pytest.mark.parametrize("ngroups", [1, 6, 40])
def test_group_records_match_a_sort_per_group(index: pd.Index, ngroups: int) -> None:
    rng = np.random.default_rng(ngroups)
    codes = rng.integers(-1, ngroups, len(index))  # -1: a row in no group (NaN key)
    labels = pd.Index([f"g{i}" for i in range(ngroups)])
    got = _group_records(index, codes, labels)
    want = _records_reference(index, codes, labels)
    assert got.keys() == want.keys()
    for label in want:
        np.testing.assert_array_equal(got[label], want[label])


def test_tracker_reuses_label_hashes_through_index_views() -> None:
    tracker = ProvenanceTracker(dr.Rules())
    frame = pd.DataFrame({"ward": list("abcab") * 10, "los": np.arange(50.0)})
    first = tracker._index_hashes(frame.index)
    view = frame.copy(deep=False).groupby("ward").los.obj.index
    assert view is not frame.index and tracker._index_hashes(view) is first
    other = frame.iloc[::-1].index  # other labels in another order: hashed again
    assert tracker._index_hashes(other) is not first


def _strided_reference(hashes: np.ndarray, q: np.ndarray, k: int) -> bool:
    for stride in range(1, _scan.MAX_STRIDE + 1):
        for offset in range(stride):
            seq = q[offset::stride]
            if seq.size < k:
                continue
            h = _scan._kgram_hashes(seq, k)
            if np.isin(h, hashes).any():
                return True
    return False


def test_strided_match_agrees_with_every_offset_of_every_stride() -> None:
    rng = np.random.default_rng(3)
    column = rng.integers(-50, 50, 300)
    hashes = np.unique(_scan._kgram_hashes(column, _scan.K))
    hits = 0
    for _ in range(600):
        q = rng.integers(-50, 50, int(rng.integers(0, 70)))
        if q.size > 10 and rng.random() < 0.5:  # hide a run of the column at some stride
            stride, start = int(rng.integers(1, 10)), int(rng.integers(0, 290))
            run = column[start : start + _scan.K]
            pos = int(rng.integers(0, 3)) + stride * np.arange(run.size)
            keep = pos < q.size
            q[pos[keep]] = run[keep]
        want = _strided_reference(hashes, q, _scan.K)
        assert _scan._strided_match(hashes, q, _scan.K) == want
        hits += want
    assert 50 < hits < 550  # both answers were exercised


def test_numbers_in_reads_what_float_reads() -> None:
    got = _scan.numbers_in("n=12, mean 3.5, -7 and 1e3 or 2. (1e999 is dropped) x9 v1.2.3")
    assert got.tolist() == [12.0, 3.5, -7.0, 1000.0, 2.0]


def test_scan_memo_is_forgotten_when_a_table_is_loaded() -> None:
    scanner = _scan.TextScanner()
    first = pd.DataFrame({"mrn": [f"MRN{i:07d}" for i in range(30)], "x": range(30)})
    scanner.add_table(first, ["mrn"])
    text = "see patient QZX-4471-KK today"
    assert scanner.scan(text) is None
    assert scanner.scan(text) is None  # remembered
    second = pd.DataFrame({"ref": ["QZX-4471-KK"] + [f"QZX-{i:04d}-AA" for i in range(29)]})
    scanner.add_table(second, ["ref"])
    found = scanner.scan(text)
    assert found is not None and found.rule == "identifier"
    assert scanner.scan("MRN0000003") is not None
    long = "MRN0000004 " + "." * (_scan.MEMO_MAX_CHARS + 1)  # past the memo: scanned each time
    assert scanner.scan(long) is not None and long not in {k[0] for k in scanner._memo}


def test_aggregate_lookups_agree_with_pandas() -> None:
    counts = pd.DataFrame([[12, 0], [7, 40]], index=["F", "M"], columns=[0, 1])
    cells = _cells_dict(counts)
    assert cells is not None
    for r in counts.index:
        for c in counts.columns:
            assert cells[(r, c)] == _lookup(counts, r, c, -1)
    dup = pd.DataFrame([[1, 2], [3, 4]], index=["F", "F"], columns=[0, 1])
    assert _cells_dict(dup) is None  # duplicate labels: `_lookup` per cell
    assert _smallest(counts) == 0 and _smallest(pd.Series([4.0, np.nan, 9.0])) == 4
    top = pd.DataFrame({"top1": [5.0, 2.0], "top2": [1.0, 1.5], "total": [9.0, 4.0]},
                       index=["a", "b"])  # fmt: skip
    assert _top_dict(top) == top.to_dict("index")
    s = pd.Series([1.5, 2.5], index=["a", "b"])
    for series in (s, s.rename("los")):
        grid, frame = _Grid.of(series), series.to_frame()
        assert list(grid.columns) == list(frame.columns)
        np.testing.assert_array_equal(grid.to_numpy(dtype=object), frame.to_numpy(dtype=object))


def test_grouped_memo_recomputes_when_the_data_changes_in_place() -> None:
    tracker = ProvenanceTracker(dr.Rules())
    index, labels = pd.RangeIndex(6), pd.Index(["a", "b"])
    codes = np.array([0, 1, 0, 1, 0, 1])
    values = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    calls: list[int] = []

    def compute() -> float:
        calls.append(1)
        return float(np.nansum(values))

    key = (index, codes, labels, values)
    assert tracker._grouped(key, compute) == 18.0
    assert tracker._grouped((pd.RangeIndex(6), codes.copy(), labels.copy(), values.copy()),
                            compute) == 18.0  # fmt: skip
    assert len(calls) == 1  # equal groups and values (NaN included): remembered
    values[0] = 100.0  # the frame's data changed in place: the memo holds a copy
    assert tracker._grouped(key, compute) == 117.0 and len(calls) == 2
    other_codes = np.array([1, 1, 0, 1, 0, 1])
    assert tracker._grouped((index, other_codes, labels, values), compute) == 117.0
    assert len(calls) == 3
    obj = np.array(["x"] * 6, dtype=object)  # values it cannot compare cheaply: never reused
    tracker._grouped((index, codes, labels, obj), compute)
    tracker._grouped((index, codes, labels, obj), compute)
    assert len(calls) == 5


@pytest.mark.parametrize(
    "cells",
    [
        [[2160, 295], [2315, 235]],
        [[np.int64(10), 5], [0, 2**40]],
        [[2160.0, 295], [2315, 235]],  # a float among counts: float64, as infer_objects says
        [[10, "suppressed"], [15, 20]],
        [[True, 5], [0, 1]],
        [[2**70, 5], [0, 1]],  # beyond int64
    ],
)
def test_redacted_frames_have_the_dtypes_infer_objects_gives(cells: list[list[object]]) -> None:
    out = np.empty((2, 2), dtype=object)
    for i, row in enumerate(cells):
        for j, v in enumerate(row):
            out[i, j] = v
    index, columns = pd.Index(["F", "M"], name="sex"), pd.Index([0, 1], name="died")
    want = pd.DataFrame(out, index=index, columns=columns).infer_objects()
    pd.testing.assert_frame_equal(_frame_of(out, index, columns), want)


def test_xor_size_is_the_size_of_setxor1d() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        pool = rng.choice(2**40, size=60, replace=False).astype(np.uint64)
        a = np.sort(rng.choice(pool, size=int(rng.integers(0, 40)), replace=False))
        b = np.sort(rng.choice(pool, size=int(rng.integers(0, 40)), replace=False))
        assert _xor_size(a, b) == np.setxor1d(a, b, assume_unique=True).size
    dup = np.array([1, 1, 2], dtype=np.uint64)  # not a set: the plain computation decides
    other = np.array([1, 3], dtype=np.uint64)
    assert _xor_size(dup, other) == np.setxor1d(dup, other, assume_unique=True).size


def _strings_reference(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [] if obj in guard_mod._PROTOCOL else [obj]
    if isinstance(obj, dict):
        out: list[str] = []
        for k, v in obj.items():
            if isinstance(k, str) and k not in guard_mod._PROTOCOL:
                out.append(k)
            out.extend(_strings_reference(v))
        return out
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings_reference(v)]
    if obj is None or isinstance(obj, (bool, int, float)):
        return []
    return [str(obj)]


def test_message_strings_are_every_string_of_the_content() -> None:
    class Text(str):
        pass

    content = {
        "data": {"text/plain": "ward  mean\nA  3.5", "text/html": "<b>x</b>"},
        "metadata": OrderedDict({"bedside": {"decision": "released", "rule": "disclosure"}}),
        "execution_count": 7, "status": "ok", "flag": True, "none": None, "ratio": 0.5,
        Text("sub-key"): Text("sub-value"), 3: "int-key value", "np": np.float64(2.5),
        "nested": [("a", 1, {"b": [None, "c"]}), b"bytes"], "obj": range(2),
    }  # fmt: skip
    assert list(guard_mod._strings(content)) == _strings_reference(content)


def test_ascii_tokens_are_the_regex_tokens() -> None:
    # ASCII texts are split (translate, split) instead of read by the regex: same tokens
    from bedside.kernel import _sequences

    rng = np.random.default_rng(5)
    alphabet = [chr(c) for c in range(128)]
    patterns = ((_sequences._TOKEN, _sequences._ASCII_TABLE), (_scan._TOKEN, _scan._TOKEN_TABLE))
    for _ in range(400):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 80))))
        for pattern, table in patterns:
            assert _sequences.find_tokens(text, pattern, table) == pattern.findall(text)
    for text in ("naïve café 12.5", "x" * 1000 + "\x1c\x85y", "ünïcode+tokens-1.0 \u2028 z"):
        for pattern, table in patterns:  # non-ASCII: the regex itself
            assert _sequences.find_tokens(text, pattern, table) == pattern.findall(text)


def test_text_tokens_splits_exactly_the_tokens_made_of_one_character_values() -> None:
    from bedside.kernel._sequences import K_EXTRACT, text_tokens

    chars = frozenset({"f", "m", "1", "0"})
    text = "FMFMFMFMFMFM mmmmmmmmmmx fm 1010101010 10101010 plain words"
    want: list[str] = []
    for tok in text.split():
        if len(tok) >= K_EXTRACT and set(tok.lower()) <= chars:
            want.extend(tok)
        else:
            want.append(tok)
    assert text_tokens(text, chars) == want
    assert text_tokens(text, frozenset()) == text.split()


def _category_reference(cat: _scan.CategoryStructure, text: str) -> bool:
    """The former CategoryStructure.matches: every unknown token its own code."""
    tokens = _scan._TOKEN.findall(text.lower())
    if len(tokens) < _scan.K_CATEGORY:
        return False
    q = np.array([cat._codes.get(t, -1 - i) for i, t in enumerate(tokens)], dtype=np.int64)
    return _scan._strided_match(cat._hashes, q, _scan.K_CATEGORY)


def test_category_scan_agrees_with_codes_for_unknown_tokens() -> None:
    rng = np.random.default_rng(9)
    codes = [f"c{i:02d}.{i % 7}" for i in range(40)]
    column = [codes[i] for i in rng.integers(0, 40, 400)]
    cat = _scan.CategoryStructure()
    cat.add_frame(pd.DataFrame({"dx": column}), skip=())
    words = ["ward", "cohort", "model", "x", "1"] + codes[:10]
    hits = 0
    for _ in range(300):
        toks = [str(w) for w in rng.choice(words, int(rng.integers(0, 60)))]
        if len(toks) > 20 and rng.random() < 0.5:  # hide a run of the column at some stride
            stride, start = int(rng.integers(1, 9)), int(rng.integers(0, 390))
            for j, value in enumerate(column[start : start + _scan.K_CATEGORY]):
                if 1 + j * stride < len(toks):
                    toks[1 + j * stride] = value
        text = " ".join(toks).upper()
        want = _category_reference(cat, text)
        assert cat.matches(text) == want
        hits += want
    assert 20 < hits < 280


def test_shared_tokens_are_what_both_token_scans_read() -> None:
    # one split of an output serves the coded-column scan and the sequence scan when they agree
    from bedside.kernel import _sequences

    rng = np.random.default_rng(6)
    alphabet = [chr(c) for c in range(128)]
    shared_seen = 0
    for _ in range(400):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 80))))
        got = _sequences.shared_tokens(text)
        if "+" in text or "\\" in text:
            assert got is None
            continue
        shared_seen += 1
        shared, distinct = got
        assert shared == _scan._TOKEN.findall(text.lower())
        assert distinct == set(shared)
        own = _sequences.text_tokens(text, frozenset())
        assert shared == [t.lower() for t in own]
        assert _sequences.shared_tokens(text)[0] is shared  # remembered for the same text
    assert shared_seen > 50
    assert _sequences.shared_tokens("naïve text") is None
    assert _sequences.shared_tokens("ab " * 10, limit=4) == (["ab", "a"], {"ab", "a"})
