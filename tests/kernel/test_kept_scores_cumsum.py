"""Phrasings the guard left unjudged after the tenth round ("Honest limits" of guard.md), from
the client's side of a real guarded kernel.

Each cell of LEAKS and LATER reached the client on main: the per-class arrays of
`precision_score` / `recall_score` / `f1_score` with `average=None` and the per-class matrices of
`multilabel_confusion_matrix` on 12 patients (the counts behind each are those of
`precision_recall_fscore_support` and `confusion_matrix`, which were judged), a row part-way
down a cumulative sum (`df.cost.cumsum().iloc[4]`: the total of the first five patients), and a
count of a failing confusion matrix kept in a variable of its own (`tp` from `cm.ravel()`) and
printed in a later cell. HONEST holds the same phrasings on a large held-out set or the whole
table, which must pass.
"""

from __future__ import annotations

import re

import pytest

from tests.kernel._client import Session

SETUP = """
import numpy as np, pandas as pd
import matplotlib
matplotlib.use('module://matplotlib_inline.backend_inline')
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.metrics import (confusion_matrix, f1_score, multilabel_confusion_matrix,
                             precision_score, recall_score)
df = hospital.load("patients")
X, y = df[["age", "los_days"]], df.sex
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
clf = LogisticRegression().fit(Xtr, ytr)
pred = clf.predict(Xte)
small_y = df.head(12).sex
small_pred = clf.predict(df.head(12)[["age", "los_days"]])
"""


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    return guarded.set_up(SETUP)


LEAKS = {
    "precision-none-printed": "print(precision_score(small_y, small_pred, average=None))",
    "recall-none-result": "recall_score(small_y, small_pred, average=None)",
    "f1-none-list": "print(f1_score(small_y, small_pred, average=None).tolist())",
    "f1-none-keywords": "print(f1_score(y_true=small_y, y_pred=small_pred, average=None))",
    "multilabel-cm-printed": "print(multilabel_confusion_matrix(small_y, small_pred))",
    "multilabel-cm-result": "multilabel_confusion_matrix(small_y, small_pred)",
    "cumsum-part-way": "print(df.cost.cumsum().iloc[4])",
    "cumsum-part-way-result": "df.cost.cumsum().iloc[2]",
    "cumsum-frame-row": 'print(df[["cost", "age"]].cumsum().iloc[4])',
    "cumsum-iat": "print(df.cost.cumsum().iat[3])",
    "expanding-sum": "print(df.cost.expanding().sum().iloc[4])",
    "expanding-mean-last-but-one": "print(df.cost.expanding().mean().iloc[-2])",
}


@pytest.mark.parametrize("name", list(LEAKS))
def test_leak_is_withheld(session: Session, name: str) -> None:
    r = session.execute(LEAKS[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert r.blocked(), (name, r.shown())
    assert "instead:" in r.shown()


# kept in a variable in one cell, shown in the next (each a cell of its own, in this order)
LATER = {
    "tp-from-ravel": (
        "tn, fp, fn, tp = confusion_matrix(small_y, small_pred).ravel()",
        "print(tp)",
    ),  # fmt: skip
    "tp-in-fstring": (
        "cm = confusion_matrix(small_y, small_pred)\ntp1 = cm[1, 1]\nfn1 = cm[1, 0]",
        "print(f'sensitivity {tp1}/{tp1 + fn1}')",
    ),  # fmt: skip
    "precision-none-kept": (
        "pr = precision_score(small_y, small_pred, average=None)",
        "print(pr)",
    ),  # fmt: skip
    "multilabel-kept": (
        "mcm = multilabel_confusion_matrix(small_y, small_pred)",
        "print(mcm[0].tolist())",
    ),  # fmt: skip
    "cumsum-kept": ("cs = df.cost.cumsum()", "print(cs.iloc[4])"),
}


@pytest.mark.parametrize("name", list(LATER))
def test_kept_then_shown_is_withheld(session: Session, name: str) -> None:
    keep, show = LATER[name]
    first = session.execute(keep)
    assert first.reply["content"]["status"] == "ok", first.shown()
    r = session.execute(show)
    assert r.blocked(), (name, r.shown())


def test_part_passed_on_is_withheld(session: Session) -> None:
    """A kept count handed to another name in a second cell is still that count."""
    for code in ("tn5, fp5, fn5, tp5 = confusion_matrix(small_y, small_pred).ravel()",
                 "x5 = tp5"):  # fmt: skip
        assert session.execute(code).reply["content"]["status"] == "ok"
    r = session.execute("print(x5)")
    assert r.blocked(), r.shown()


HONEST = {
    "precision-none-held-out": "print(precision_score(yte, pred, average=None).round(3))",
    "recall-none-held-out": "print(recall_score(yte, pred, average=None).round(3))",
    "f1-none-held-out": "print(f1_score(yte, pred, average=None).round(3))",
    "f1-binary-small": "print(round(f1_score(small_y, small_pred, pos_label='F'), 3))",
    "multilabel-cm-held-out": "print(multilabel_confusion_matrix(yte, pred))",
    "cumsum-last": "print(round(df.cost.cumsum().iloc[-1]))",
    "cumsum-half-way": "print(round(df.cost.cumsum().iloc[len(df) // 2]))",
    "expanding-mean-last": "print(round(df.cost.expanding().mean().iloc[-1], 2))",
    "cumsum-plotted": "ax = df.cost.cumsum().plot()\nplt.show()\nprint(len(df))",
}


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_phrasing_is_released(session: Session, name: str) -> None:
    r = session.execute(HONEST[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert not r.blocked(), (name, r.shown())
    assert re.search(r"\d", r.shown()), r.shown()


HONEST_LATER = {
    "tp-held-out": (
        "tn2, fp2, fn2, tp2 = confusion_matrix(yte, pred).ravel()",
        "print(f'sensitivity {tp2 / (tp2 + fn2):.3f}', tp2)",
    ),  # fmt: skip
    "cumsum-kept-last": ("cs2 = df.cost.cumsum()", "print(round(cs2.iloc[-1]))"),
}


@pytest.mark.parametrize("name", list(HONEST_LATER))
def test_honest_kept_then_shown_is_released(session: Session, name: str) -> None:
    keep, show = HONEST_LATER[name]
    first = session.execute(keep)
    assert first.reply["content"]["status"] == "ok", first.shown()
    r = session.execute(show)
    assert not r.blocked(), (name, r.shown())
    assert re.search(r"\d", r.shown()), r.shown()
