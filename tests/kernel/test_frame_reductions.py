"""A reduction of a whole frame (`df[cols].sum()`) is judged like the same reduction of a column.

pandas 3 finalizes such a result from the frame after the guard's reduction hook has annotated
it (`DataFrame.sum` ends with `result.__finalize__(self, method="sum")`): the frame's tag used to
replace the aggregate's, and the sum of three patients' costs left the kernel unjudged. A table of
statistics by column (`df[cols].agg(["sum", "mean"])`) came back untagged and was not judged
either. Each of the sums, means, medians, deviations and `agg` lists in SMALL was released
before these fixes.
"""

from __future__ import annotations

import pytest

from tests.kernel._client import Session

SETUP = """
df = hospital.load("patients")
small = df.head(3)
one_ward = df[df.ward == df.ward.iloc[0]].head(4)
"""

SMALL = {
    "sum": 'small[["cost", "age"]].sum()',
    "one-column-frame": 'small[["cost"]].sum()',
    "printed": 'print(small[["cost", "age"]].sum())',
    "mean": 'small[["cost", "age"]].mean()',
    "median": 'small[["cost", "los_days"]].median()',
    "std": 'small[["cost", "age"]].std()',
    "filtered": 'one_ward[["cost"]].sum()',
    "max-whole-table": 'df[["cost", "age"]].max()',
    "agg-list": 'small[["cost", "age"]].agg(["sum", "mean"])',
    "agg-list-printed": 'print(small[["cost", "age"]].agg(["sum", "mean"]))',
    "agg-dict": 'small[["cost", "age"]].agg({"cost": "sum", "age": "mean"})',
    "agg-dict-of-lists": 'small.agg({"cost": ["sum"], "age": ["mean"]})',
}

WHOLE = {
    "sum": 'df[["cost", "age"]].sum()',
    "mean": 'df[["cost", "age"]].mean()',
    "median": 'df[["cost", "age"]].median()',
    "std": 'df[["cost", "age"]].std()',
    "missing": "df.isna().sum()",
    "missing-rate": "df.isna().mean()",
    "agg-list": 'df[["cost", "age"]].agg(["sum", "mean"])',
    "agg-dict": 'df[["cost", "age"]].agg({"cost": "sum", "age": "mean"})',
}


def test_extremes_row_of_a_statistics_table_is_suppressed(session: Session) -> None:
    r = session.execute('df[["cost", "age"]].agg(["mean", "max"])')
    assert "redacted" in r.decisions() and not r.blocked(), (r.decisions(), r.shown())
    row = next(line for line in r.shown().splitlines() if line.startswith("max"))
    assert row.split()[1:] == ["suppressed", "suppressed"], r.shown()


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    return guarded.set_up(SETUP)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_frame_reduction_is_withheld(session: Session, name: str) -> None:
    r = session.execute(SMALL[name])
    assert r.blocked(), (name, r.decisions(), r.shown())
    assert "instead:" in r.shown()


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_frame_reduction_over_the_table_is_released(session: Session, name: str) -> None:
    r = session.execute(WHOLE[name])
    assert r.decisions() and not r.blocked(), (name, r.decisions(), r.shown())
    assert "suppressed" not in r.shown(), r.shown()
