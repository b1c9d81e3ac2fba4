"""Phrasings of evaluation tables, missing counts, frame totals and fits that the guard used to
leave unjudged ("Honest limits" of the ninth round), from the client's side of a real guarded
kernel.

Each cell of LEAKS reached the client on main: the per-class arrays of
`precision_recall_fscore_support` on 12 patients, a normalised or weighted confusion matrix of
12 patients, a confusion matrix's counts printed one by one, a small count of missing values
written with `pd.isna(df.col)` or picked from `df.isna()`, the total of a 3-patient frame
through numpy or the last row of its cumulative sum, and a least-squares fit by hand on 8 rows.
HONEST holds the same phrasings on the whole table or a large held-out set (and a count of 0
missing values, which was blocked as class disclosure), which must pass.
"""

from __future__ import annotations

import re

import pytest

from tests.kernel._client import Session

SETUP = """
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
df = hospital.load("patients")
X, y = df[["age", "los_days"]], df.sex
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
clf = LogisticRegression().fit(Xtr, ytr)
pred = clf.predict(Xte)
small = df.head(3)
small_y = df.head(12).sex
small_pred = clf.predict(df.head(12)[["age", "los_days"]])
d = df.copy()
d.loc[d.index[:3], "cost"] = np.nan
"""


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    return guarded.set_up(SETUP)


LEAKS = {
    "prfs-printed": "print(precision_recall_fscore_support(small_y, small_pred))",
    "prfs-result": "precision_recall_fscore_support(small_y, small_pred)",
    "prfs-macro": "print(precision_recall_fscore_support(small_y, small_pred, average='macro'))",
    "normalised-cm": "print(confusion_matrix(small_y, small_pred, normalize='true'))",
    "weighted-cm": "print(confusion_matrix(small_y, small_pred, sample_weight=np.ones(12)))",
    "ravel-reordered": "tn, fp, fn, tp = confusion_matrix(small_y, small_pred).ravel()\n"
    "print(f'sensitivity {tp}/{tp + fn}')",
    "pd-isna-sum": "print(pd.isna(d.cost).sum())",
    "isna-column-picked": "print(d.isna()['cost'].sum())",
    "isna-attribute-picked": "m = d.isna()\nprint(int(m.cost.sum()))",
    "np-sum-frame": 'print(np.sum(small[["cost", "age"]]))',
    "np-mean-frame": 'print(np.mean(small[["cost", "age"]]))',
    "cumsum-last-row": 'print(small[["cost", "age"]].cumsum().iloc[-1])',
    "cumsum-series-last": "print(small.cost.cumsum().iloc[-1])",
    "lstsq-8-rows": "A = np.c_[np.ones(8), df.head(8).age.to_numpy()]\n"
    "print(np.linalg.lstsq(A, df.head(8).cost.to_numpy(), rcond=None)[0])",
}


@pytest.mark.parametrize("name", list(LEAKS))
def test_leak_is_withheld(session: Session, name: str) -> None:
    r = session.execute(LEAKS[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert r.blocked(), (name, r.shown())
    assert "instead:" in r.shown()


# kept in a variable in one cell, shown in the next (each a cell of its own, in this order)
LATER = {
    "cm-kept": ("cm = confusion_matrix(small_y, small_pred)", "print(cm[1, 1])"),
    "cm-ravel-later": (
        "cm2 = confusion_matrix(small_y, small_pred)",
        "tn, fp, fn, tp = cm2.ravel()\nprint(tp, fn)",
    ),  # fmt: skip
    "normalised-kept": (
        "cmn = confusion_matrix(small_y, small_pred, normalize='true')",
        "print(cmn)",
    ),  # fmt: skip
    "prfs-supports-kept": (
        "p, r, f, s = precision_recall_fscore_support(small_y, small_pred)",
        "print(s)",
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(LATER))
def test_kept_then_shown_is_withheld(session: Session, name: str) -> None:
    keep, show = LATER[name]
    first = session.execute(keep)
    assert first.reply["content"]["status"] == "ok", first.shown()
    r = session.execute(show)
    assert r.blocked(), (name, r.shown())


HONEST = {
    "prfs-held-out": "print(precision_recall_fscore_support(yte, pred))",
    "prfs-macro-held-out": "print(precision_recall_fscore_support(yte, pred, average='macro'))",
    "normalised-held-out": "print(confusion_matrix(yte, pred, normalize='true').round(3))",
    "ravel-held-out": "tn, fp, fn, tp = confusion_matrix(yte, pred).ravel()\n"
    "print(f'sensitivity {tp / (tp + fn):.3f}')",
    "pd-isna-zero": "print(pd.isna(df.cost).sum())",
    "isna-column-zero": "print(df.isna()['cost'].sum())",
    "isna-columns-zero": "print(df.isna()[['cost', 'age']].sum())",
    "np-sum-table": 'print(np.sum(df[["cost", "age"]]))',
    "cumsum-table": 'print(df[["cost", "age"]].cumsum().iloc[-1])',
    "lstsq-table": "A = np.c_[np.ones(len(df)), df.age.to_numpy()]\n"
    "print(np.linalg.lstsq(A, df.cost.to_numpy(), rcond=None)[0])",
}


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_phrasing_is_released(session: Session, name: str) -> None:
    r = session.execute(HONEST[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert not r.blocked(), (name, r.shown())
    assert re.search(r"\d", r.shown()), r.shown()
