"""The guard's memos never hand back a verdict for data that has changed, nor to another session.

Two memos spare the guard work on outputs it has just judged (bench/bench_kernel_cell.py): the
per-cell records and contributions of a crosstab / pivot_table (`ProvenanceTracker._cells`,
keyed by the result's labels and every input column through `series_key`) and the verdicts of
the row-order sequence scan (`SequenceGuard.scan`, keyed by the text and the versions of the
extraction log and the table index). Each is checked here against a change of the data in place
(numpy buffers, pyarrow columns, object arrays), a change of the index, and a new session.
The same property from the client's side is in `test_gaps.py`
(`test_a_table_changed_in_place_is_judged_again`); the remembered verdicts on aggregates, which
count the tracker's memo values by identity (`ProvenanceTracker.remembers`), are checked from the
client's side in `test_verdicts.py`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bedside.kernel._provenance import ProvenanceTracker, _same, cells_of, series_key
from bedside.kernel._sequences import SequenceGuard, SequenceLog
from bedside.policy import disclosure as dr


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 400
    return pd.DataFrame({
        "sex": pd.array(rng.choice(["F", "M"], n), dtype="str"),
        "ward": np.array(rng.choice(["a", "b", "c"], n), dtype=object),
        "died": rng.integers(0, 2, n),
        "cost": rng.gamma(2.0, 100.0, n),
    })  # fmt: skip


class _Counter:
    def __init__(self, frame: pd.DataFrame, row: str, col: str) -> None:
        self.frame, self.row, self.col, self.calls = frame, row, col, 0

    def key(self) -> tuple[Any, ...]:
        f = self.frame
        result = pd.crosstab(f[self.row], f[self.col])
        return ("crosstab", 1, 1, None, result.index, result.columns,
                (series_key(f[self.row]), series_key(f[self.col])), None)  # fmt: skip

    def cells(self, tracker: ProvenanceTracker) -> Any:
        f = self.frame
        result = pd.crosstab(f[self.row], f[self.col])

        def compute() -> Any:
            self.calls += 1
            keys = pd.concat([f[self.row].rename(0), f[self.col].rename(1)], axis=1)
            return cells_of(result, keys, 1, 1, {})

        return tracker._cells(self.key(), compute)


@pytest.mark.parametrize("row", ["sex", "ward"])
def test_cells_memo_reuses_only_equal_inputs(row: str) -> None:
    frame = _frame()
    tracker = ProvenanceTracker(dr.Rules())
    c = _Counter(frame, row, "died")
    first = c.cells(tracker)
    assert c.cells(tracker) is first and c.calls == 1  # new Series objects, same data
    # a shallow copy shares the columns: the same data, remembered
    c.frame = frame.copy(deep=False)
    assert c.cells(tracker) is first and c.calls == 1


@pytest.mark.parametrize("column", ["sex", "ward", "died"])
def test_cells_memo_forgets_a_column_changed_in_place(column: str) -> None:
    frame = _frame()
    tracker = ProvenanceTracker(dr.Rules())
    c = _Counter(frame, "sex", "died") if column == "died" else _Counter(frame, column, "died")
    before = c.cells(tracker)
    held = frame[column].to_numpy()  # for numpy columns: the buffer written below
    rows = frame.index[:150]
    new = {"sex": "F", "ward": "a", "died": 1}[column]
    frame.loc[rows, column] = new
    if column == "died":
        assert np.shares_memory(held, frame[column].to_numpy())  # really in place
    after = c.cells(tracker)
    assert c.calls == 2
    assert not after.counts.equals(before.counts)
    want = cells_of(pd.crosstab(frame[c.row], frame[c.col]),
                    pd.concat([frame[c.row].rename(0), frame[c.col].rename(1)], axis=1),
                    1, 1, {})  # fmt: skip
    pd.testing.assert_frame_equal(after.counts, want.counts)


def test_cells_memo_forgets_other_labels_and_is_per_session() -> None:
    frame = _frame()
    tracker = ProvenanceTracker(dr.Rules())
    c = _Counter(frame, "sex", "died")
    c.cells(tracker)
    # the same values under other record labels: other records behind each cell
    c.frame = frame.set_axis(frame.index + 1000)
    c.cells(tracker)
    assert c.calls == 2
    other = ProvenanceTracker(dr.Rules())  # a new kernel session remembers nothing
    c.cells(other)
    assert c.calls == 3


def test_series_key_never_equates_objects_it_cannot_compare() -> None:
    tracker = ProvenanceTracker(dr.Rules())

    class Anything:
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 1

    calls: list[int] = []
    s = pd.Series([Anything() for _ in range(6)], dtype=object)
    for _ in range(2):
        tracker._cells(("x", series_key(s)), lambda: calls.append(1))
    assert len(calls) == 2  # objects of other types than str: never reused
    strs = pd.Series(["a", "b"] * 3, dtype=object)
    for _ in range(2):
        tracker._cells(("x", series_key(strs)), lambda: calls.append(1))
    assert len(calls) == 3
    tracker._cells(("x", series_key(pd.Series(["a", "b", "a", "b", "a", "c"], dtype=object))),
                   lambda: calls.append(1))  # fmt: skip
    assert len(calls) == 4


def _log_with(values: list[str]) -> SequenceLog:
    log = SequenceLog()
    log.add_values(("k", "col"), np.array(values, dtype=object))
    return log


def test_sequence_memo_forgets_verdicts_when_an_extraction_is_noted() -> None:
    rng = np.random.default_rng(3)
    values = list(rng.choice(["yes", "no"], 200))
    text = " ".join(values[50:90])
    guard = SequenceGuard(_log_with(["x", "y"] * 20))
    assert guard.scan(text) is None
    assert guard.scan(text) is None  # remembered
    guard.log.add_values(("k2", "col"), np.array(values, dtype=object))
    assert guard.scan(text) is not None  # the same text, judged again against the new log
    fresh = SequenceGuard(_log_with(["x", "y"] * 20))  # another session: its own log and memo
    assert fresh.scan(text) is None


def test_sequence_memo_forgets_verdicts_when_a_table_is_loaded() -> None:
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"flag": rng.choice(["p", "q", "r"], 3000)})
    text = " ".join(table.flag.iloc[1000:1100])
    guard = SequenceGuard(_log_with(["x", "y"] * 20))
    assert guard.scan(text) is None
    guard.sync_tables([(table, [])])
    assert guard.scan(text) == "a column's values in record order"


def test_memo_keys_compare_floats_bit_for_bit_and_arrow_labels_in_arrow() -> None:
    x = np.array([1.5, np.nan, 0.0, 2.0])
    assert _same(x, x.copy())  # NaN where NaN was: the same data
    assert not _same(x, np.array([1.5, np.nan, -0.0, 2.0]))  # -0.0: not bit-equal, recomputed
    assert not _same(x, np.array([1.5, np.nan, 0.0, 2.0000001]))
    assert not _same(x, x.astype(np.float32))
    a = pd.Index(["F", "M", None], dtype="str")
    assert _same(a, pd.Index(["F", "M", None], dtype="str"))
    assert not _same(a, pd.Index(["F", "X", None], dtype="str"))
    assert not _same(a, pd.Index(["F", "M"], dtype="str"))
    assert _same(pd.Index([0, 1]), pd.Index([0, 1]))
    assert not _same(pd.Index([0, 1]), pd.Index([1, 0]))


def test_tracker_vouches_only_for_its_own_memo_values() -> None:
    tracker = ProvenanceTracker(dr.Rules())
    mine = tracker._grouped(("k", np.arange(3)), lambda: (pd.Series([1, 2]), {"a": np.arange(2)}))
    assert tracker.remembers(mine) and tracker.remembers(mine[0]) and tracker.remembers(mine[1])
    assert not tracker.remembers(pd.Series([1, 2]))  # equal, but not the memo's own object
    for i in range(10):  # pushed out of the memo: no longer vouched for
        tracker._grouped(("k", np.arange(i + 4)), lambda: (pd.Series([0]), {}))
    assert not tracker.remembers(mine[0])


def test_quiet_nests_and_is_per_thread() -> None:
    tracker = ProvenanceTracker(dr.Rules())
    seen: list[bool] = []
    with tracker.quiet():
        with tracker.quiet():
            assert tracker.busy
        assert tracker.busy
        t = threading.Thread(target=lambda: seen.append(tracker.busy))
        t.start()
        t.join()
    assert not tracker.busy and seen == [False]
    with pytest.raises(ValueError), tracker.quiet():
        raise ValueError
    assert not tracker.busy


def test_tracker_vouches_for_nothing_a_memo_let_go_of() -> None:
    tracker = ProvenanceTracker(dr.Rules())
    first = tracker._cells(("x", 0), lambda: (pd.Series([1]), None))
    assert tracker.remembers(first[0])
    for i in range(1, 5):  # values of None (a table too large to track) push it out
        tracker._cells(("x", i), lambda: None)
    assert not tracker.remembers(first[0])
