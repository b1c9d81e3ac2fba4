"""Statistics numpy (or plain Python) computes from an array taken out of a few protected rows,
from the client's side of a real guarded kernel.

`np.mean(df[df.code == x].cost.values)` left pandas, so the guard did not follow it: the mean of
three patients' costs reached the client (a documented limit until the eleventh round). The
guard now keeps, when an array of fewer than `min_cell_count` records is taken out
(`.values`, `.to_numpy()`, `np.asarray`, `tolist`, iteration), the sum, mean, median, variance
and standard deviation numpy would give, for the session, and withholds an output that shows
one to the precision it is written with (5 significant digits or more). Each LEAKS cell
reached the client before. HONEST holds the phrasings a researcher uses on large groups, and
short numbers that equal a kept statistic (a rate of 0/1 values over three patients is 0.333),
which must pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.kernel._client import Session

SETUP = """
import statistics
import numpy as np, pandas as pd
df = hospital.load("patients")
three = df.iloc[[3, 50, 700]]
"""


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    return guarded.set_up(SETUP)


@pytest.fixture(scope="module")
def secrets(hospital: Any) -> dict[str, float]:
    _, tables = hospital
    df = tables["patients"]
    three, four = df.iloc[[3, 50, 700]], df.head(4)
    return {
        "three-mean": float(np.mean(three.cost.to_numpy())),
        "three-median": float(np.median(three.cost.to_numpy())),
        "three-sum": float(three.cost.sum()),
        "three-std": float(np.std(three.cost.to_numpy())),
        "four-mean": float(np.mean(four.cost.to_numpy())),
        "four-std1": float(np.std(four.cost.to_numpy(), ddof=1)),
    }


# name -> (cell, the statistic it shows)
LEAKS = {
    "np-mean-values": ("print(np.mean(three.cost.values))", "three-mean"),
    "np-mean-result": ("np.mean(df.head(4).cost.values)", "four-mean"),
    "np-median-asarray": ("print(np.median(np.asarray(three.cost)))", "three-median"),
    "to-numpy-std": ("a = three[['cost', 'age']].to_numpy()\nprint(a[:, 0].std())", "three-std"),
    "std-ddof1": ("print(np.std(df.head(4).cost.to_numpy(), ddof=1))", "four-std1"),
    "statistics-fmean": ("print(statistics.fmean(three.cost.tolist()))", "three-mean"),
    "builtin-sum": ("print(sum(three.cost))", "three-sum"),
    "fstring-grouped": ("print(f'mean {np.mean(three.cost.values):,.2f}')", "three-mean"),
}


def _shows(text: str, value: float) -> bool:
    return f"{value:.2f}" in text or f"{value:,.2f}" in text or repr(value)[:8] in text


@pytest.mark.parametrize("name", list(LEAKS))
def test_statistic_of_few_extracted_records_is_withheld(
    session: Session, secrets: dict[str, float], name: str
) -> None:
    code, secret = LEAKS[name]
    r = session.execute(code)
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert r.blocked(), (name, r.shown())
    assert not _shows(r.shown(), secrets[secret]), name


def test_kept_in_one_cell_shown_in_a_later_one(session: Session, secrets: dict[str, float]) -> None:
    kept = session.execute("kept = df.iloc[[3, 50, 700]].cost.to_numpy()")
    assert not kept.blocked(), kept.shown()
    later = session.execute("print(round(kept.mean(), 2))")
    assert later.blocked(), later.shown()
    assert not _shows(later.shown(), secrets["three-mean"])


HONEST = {
    "group-means-by-numpy": "df.groupby('ward').cost.apply(lambda s: np.mean(s.values)).round(2)",
    "whole-column-numpy": "print(np.mean(df.cost.values), np.median(df.cost.to_numpy()))",
    "large-subset": "print(np.mean(df[df.age > 40].cost.values))",
    # a rate over the three patients is a short number: 0.333 or 0.667 is in every output
    "short-numbers": "r = three.died.to_numpy()\nprint('thirds:', 0.333, 0.667, 1.333)",
    "whole-table-rate": "print(round(df.died.mean(), 3))",
}


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_numpy_is_released(session: Session, name: str) -> None:
    r = session.execute(HONEST[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert not r.blocked(), (name, r.shown())
    assert r.shown().strip(), name
