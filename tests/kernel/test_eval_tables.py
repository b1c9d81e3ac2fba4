"""A model's evaluation tables and missing-value counts of protected records, judged from the
client's side through a real guarded kernel.

`confusion_matrix`, `classification_report` and `pd.crosstab(y_test, pred)` of labels taken from
protected rows (or predicted for them) are frequency tables of patients: a cell of 2 (two
patients of the rare class predicted as another) is as disclosive as any small count, and is
judged like a crosstab's (`min_cell_count`, zeros, rounding on display). Honest evaluation on a
held-out set whose cells all pass is released. A count of missing values is a count of records:
judged like any count (a non-zero count, or its complement, under `min_cell_count` fails), the
same whether written for one column or for the frame.
"""

from __future__ import annotations

import re

import pytest

from tests.kernel._client import Session

SETUP = """
import warnings
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.metrics import (classification_report, confusion_matrix, accuracy_score,
                             roc_auc_score, f1_score)
df = hospital.load("patients")
X, y = df[["age", "los_days"]], df.sex
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
clf = LogisticRegression().fit(Xtr, ytr)
pred = clf.predict(Xte)
small_y = df.head(12).sex
small_pred = clf.predict(df.head(12)[["age", "los_days"]])
# a rare class (2 patients) among the held-out patients' wards, and a guess for each
ward_true = df.loc[yte.index, "ward"].copy()
ward_true.iloc[:2] = "rare"
ward_guess = ward_true.sample(frac=1, random_state=1).to_numpy()
"""


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    return guarded.set_up(SETUP)


# Each must fail on main: the small cells reach the client there.
LEAKS = {
    "report_12_patients": "print(classification_report(small_y, small_pred))",
    "report_12_as_result": "classification_report(small_y, small_pred)",
    "report_dict_12": "print(classification_report(small_y, small_pred, output_dict=True))",
    "confusion_12_print": "print(confusion_matrix(small_y, small_pred))",
    "confusion_12_result": "confusion_matrix(small_y, small_pred)",
    "report_keywords_names_digits": (
        "print(classification_report(y_true=small_y.to_numpy(), y_pred=small_pred, "
        "target_names=['female', 'male'], digits=3))"
    ),
    "confusion_module_attribute": (
        "import sklearn.metrics as skm\n"
        "print(skm.confusion_matrix(y_pred=small_pred, y_true=small_y))"
    ),
    "confusion_kept_then_printed": "cm = confusion_matrix(small_y, small_pred)\nprint('x')",
    "confusion_frame_later": "pd.DataFrame(cm)",
    "confusion_rare_class_print": ("cmr = confusion_matrix(ward_true, ward_guess)\nprint(cmr)"),
}
EXPECT = {"confusion_kept_then_printed": False}  # nothing shown: nothing to block


@pytest.mark.parametrize("name", list(LEAKS))
def test_small_evaluation_table_is_withheld(session: Session, name: str) -> None:
    r = session.execute(LEAKS[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    if not EXPECT.get(name, True):
        return
    assert r.blocked(), (name, r.shown())
    assert "instead:" in r.shown()


def test_small_confusion_matrix_shows_no_counts(session: Session) -> None:
    r = session.execute("confusion_matrix(small_y, small_pred).tolist()")
    # `tolist()` of the matrix is a new list: its text is still recognised as the matrix
    assert r.blocked(), r.shown()


def test_report_with_a_rare_class_suppresses_its_cells(session: Session) -> None:
    """The rare class (2 patients) has its row suppressed; the other classes come through."""
    r = session.execute("print(classification_report(ward_true, ward_guess))")
    assert not r.blocked(), r.shown()
    assert "redacted" in r.decisions(), r.decisions()
    shown = r.shown()
    rare = next(line for line in shown.splitlines() if line.strip().startswith("rare"))
    assert "suppr." in rare and not re.search(r"\d", rare), rare
    onco = next(line for line in shown.splitlines() if line.strip().startswith("Oncology"))
    assert re.search(r"\d\.\d\d", onco) and "suppr." not in onco, onco


def test_confusion_matrix_displayed_with_small_cells_suppressed(session: Session) -> None:
    r = session.execute("display(cmr)")
    assert not r.blocked(), r.shown()
    assert "suppressed" in r.shown() and "redacted" in r.decisions()


HONEST = {
    "report_held_out": "print(classification_report(yte, pred))",
    "report_dict_held_out": "classification_report(yte, pred, output_dict=True)['F']",
    "confusion_held_out": "print(confusion_matrix(yte, pred))",
    "report_names_digits": "print(classification_report(yte, pred, digits=3, "
    "target_names=['female', 'male']))",
    "crosstab_held_out": "pd.crosstab(yte, pred)",
    "scores": "print(round(accuracy_score(yte, pred), 3), round(f1_score(yte, pred, "
    "pos_label='F'), 3), round(roc_auc_score(yte == 'F', clf.predict_proba(Xte)[:, 0]), 3))",
    "missing_counts_frame": "df.isna().sum()",
    "missing_count_warning": "warnings.warn(f'{int(df.cost.isna().sum())} missing costs')",
    "missing_count_scalar": "print(int(df.cost.isna().sum()), df.age.notna().sum())",
}


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_evaluation_is_released(session: Session, name: str) -> None:
    r = session.execute(HONEST[name])
    assert r.reply["content"]["status"] in ("ok",), r.shown()
    assert not r.blocked(), (name, r.shown())
    assert re.search(r"\d", r.shown()), r.shown()


def test_displayed_confusion_matrix_is_rounded(session: Session) -> None:
    r = session.execute("confusion_matrix(yte, pred)")
    assert not r.blocked(), r.shown()
    nums = [int(x) for x in re.findall(r"\d+", r.shown().split("array", 1)[-1])]
    assert nums and all(x % 5 == 0 for x in nums), r.shown()


MISSING = {
    # a few missing values in one column: a small count of records, however written
    "scalar": "print(int(d.cost.isna().sum()))",
    "frame": "print(d.isna().sum())",
    "complement": "print(d.cost.notna().sum())",
}


@pytest.mark.parametrize("name", list(MISSING))
def test_small_missing_count_is_judged_as_a_count(session: Session, name: str) -> None:
    setup = "d = df.copy()\nd.loc[d.index[:3], 'cost'] = np.nan\n"
    if name == "complement":
        setup = "d = df.copy()\nd.loc[d.index[3:], 'cost'] = np.nan\n"
    r = session.execute(setup + MISSING[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    shown = r.shown()
    if name == "frame":
        # the column with 3 missing is suppressed; the others (0 missing) come through
        assert not r.blocked(), shown
        assert re.search(r"cost\s+suppressed", shown) and re.search(r"age\s+0", shown), shown
    else:
        assert r.blocked(), shown
