"""Model fits and statistical tests of protected records, judged from the client's side through a
real guarded kernel, against ACRO's verdicts on the same fits.

ACRO (acro 1.0.2, `.venv-acro`, its default `safe_dof_threshold: 10`) refuses a regression whose
residual degrees of freedom are below 10 (`MinimumDoFCheck`). Its verdicts below are frozen; they
were obtained on this module's hospital (`tests/kernel/_data.py`, `write_hospital`, the
`patients` table written to CSV) by `tests/kernel/_acro_models.py` (its docstring says how to
run it), i.e.

    acro = ACRO(suppress=False)
    acro.ols(d.cost, add_constant(d[["age", "los_days"]]))   # and acro.olsr("cost ~ age +
    acro.logit(d.died, add_constant(d[["age"]]))             # los_days", data=d),
    acro.probitr("died ~ age", data=d)                       # acro.surv_func(...)
    list(acro.results.results.values())[-1].status           # "fail" / "pass"

for `d` in `df.head(8)`, `df.head(12)`, `df.head(13)`, `df.head(14)`,
`df[df.ward == "Cardiology"].head(12)` and `df`. (`acro.surv_func(..., output="table")` fails
every table, also the whole 5,000 patients, with `MinimumDoFCheck: fail dof=0`: ACRO 1.0.2 has no
per-step verdict to compare with; the guard suppresses each step with fewer than
`min_cell_count` at risk.) ACRO has no checks for scipy tests, numpy fits or scikit-learn; their
cases below follow the same rules (a group of fewer than 10 records, too few degrees of
freedom) and are pinned without an ACRO column.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.kernel._client import Reply, Session

SUBSETS = {
    "head8": "df.head(8)",
    "head12": "df.head(12)",
    "head13": "df.head(13)",
    "head14": "df.head(14)",
    "cardio12": 'df[df.ward == "Cardiology"].head(12)',
    "all": "df",
}
# ACRO's verdicts (module docstring): True = ACRO fails the fit (residual dof < 10).
ACRO_FAILS: dict[tuple[str, str], bool] = {
    ("ols", "head8"): True,
    ("ols", "head12"): True,
    ("ols", "head13"): False,
    ("ols", "head14"): False,
    ("ols", "cardio12"): True,
    ("ols", "all"): False,
    ("olsr", "head8"): True,
    ("olsr", "head12"): True,
    ("olsr", "head13"): False,
    ("olsr", "cardio12"): True,
    ("olsr", "all"): False,
    ("logit", "head8"): True,
    ("logit", "head12"): False,
    ("logit", "head13"): False,
    ("logit", "cardio12"): False,
    ("logit", "all"): False,
    ("probitr", "head8"): True,
    ("probitr", "head12"): False,
    ("probitr", "cardio12"): False,
    ("probitr", "all"): False,
}
# The same fits as the guarded kernel's researcher writes them.
FITS = {
    "ols": 'sm.OLS(d.cost, sm.add_constant(d[["age", "los_days"]])).fit()',
    "olsr": 'smf.ols("cost ~ age + los_days", data=d).fit()',
    "logit": 'sm.Logit(d.died, sm.add_constant(d[["age"]])).fit(disp=0)',
    "probitr": 'smf.probit("died ~ age", data=d).fit(disp=0)',
}

SETUP = """
import numpy as np, pandas as pd
import statsmodels.api as sm, statsmodels.formula.api as smf
import scipy.stats as st
from statsmodels.duration.survfunc import SurvfuncRight
from sklearn.linear_model import LinearRegression, LogisticRegression
df = hospital.load("patients")
small = df.head(8)
"""


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    return guarded.set_up(SETUP)


@pytest.mark.parametrize("key", sorted(ACRO_FAILS))
def test_fit_params_follow_acro(session: Session, key: tuple[str, str]) -> None:
    """A fit's coefficients leave exactly when ACRO passes the fit."""
    fit, subset = key
    code = f"d = {SUBSETS[subset]}\nres = {FITS[fit]}\nprint(res.params)"
    r = session.execute(code)
    assert r.reply["content"]["status"] == "ok", r.shown()
    if ACRO_FAILS[key]:
        assert r.blocked(), (key, r.shown())
        assert "degrees-of-freedom" in r.text()
        assert "instead:" in r.shown()
        # no coefficient in what the client received
        assert not re.search(r"Intercept|const\s+-?\d", r.shown()), r.shown()
    else:
        assert not r.blocked(), (key, r.shown())
        assert re.search(r"(Intercept|const)\s+-?\d", r.shown()), r.shown()


# Small fits and tests, shown in the phrasings a researcher uses. Each leaks on main (released).
LEAKS = {
    "summary": ('m = smf.ols("cost ~ age + los_days", data=small).fit()\nm.summary()',
                "degrees-of-freedom"),
    "result_repr_f_string": (
        'm = smf.ols("cost ~ age + los_days", data=small).fit()\n'
        "print(f\"age: {m.params['age']:.3f}\")",
        "degrees-of-freedom",
    ),
    "conf_int": ('smf.ols("cost ~ age + los_days", data=small).fit().conf_int()',
                 "degrees-of-freedom"),
    "fittedvalues": ('smf.ols("cost ~ age", data=small).fit().fittedvalues', None),
    "resid": ('smf.ols("cost ~ age", data=small).fit().resid', None),
    "predict_training_rows": ('smf.ols("cost ~ age", data=small).fit().predict(small)', None),
    "glm_poisson": (
        'smf.glm("los_days ~ age", data=small, family=sm.families.Poisson()).fit().params',
        "degrees-of-freedom",
    ),
    "poisson": ('smf.poisson("los_days ~ age", data=small).fit(disp=0).params',
                "degrees-of-freedom"),
    "ols_on_values": (
        "o = sm.OLS(small.cost.values, sm.add_constant(small[['age', 'los_days']].values))"
        ".fit()\nprint(o.params)",
        "degrees-of-freedom",
    ),
    "sklearn_coef": (
        "lr = LinearRegression().fit(small[['age', 'los_days']], small.cost)\n"
        "print(lr.coef_, lr.intercept_)",
        "degrees-of-freedom",
    ),
    "sklearn_predict_training": (
        "lr = LinearRegression().fit(small[['age', 'los_days']], small.cost)\n"
        "lr.predict(small[['age', 'los_days']])",
        None,
    ),
    "ttest_small_groups": ("st.ttest_ind(small.cost[:4], small.cost[4:])", "threshold"),
    "mannwhitney_small": ("print(st.mannwhitneyu(small.cost[:3], small.cost[3:]))", "threshold"),
    "pearsonr_8_rows": ("st.pearsonr(small.age, small.cost)", "threshold"),
    "chi2_small_cells": ("st.chi2_contingency(pd.crosstab(small.sex, small.died))", "threshold"),
    "fisher_small_cells": ("st.fisher_exact(pd.crosstab(small.sex, small.died))", "threshold"),
    "polyfit_3_rows": ("np.polyfit(small.age.head(3), small.cost.head(3), 2)",
                       "degrees-of-freedom"),
    "corrcoef_3_rows": ("np.corrcoef(small.age.head(3), small.cost.head(3))",
                        "degrees-of-freedom"),
    "survival_8_rows": ("SurvfuncRight(small.los_days, small.died).summary()", "threshold"),
    "bse_to_dict": (
        'smf.ols("cost ~ age + los_days", data=small).fit().bse.to_dict()',
        "degrees-of-freedom",
    ),
    "summary2": ('smf.ols("cost ~ age + los_days", data=small).fit().summary2()',
                 "degrees-of-freedom"),
    "mixedlm_12_rows": (
        'print(smf.mixedlm("cost ~ age", data=df.head(12), groups=df.head(12).sex).fit().params)',
        "degrees-of-freedom",
    ),
    "influence_frame": ('smf.ols("cost ~ age", data=df).fit().get_influence().summary_frame()',
                        "row-level"),
    "leverage_array": ('smf.ols("cost ~ age", data=df).fit().get_influence().hat_matrix_diag',
                       "row-level"),
    "prediction_frame": (
        'smf.ols("cost ~ age", data=df).fit().get_prediction().summary_frame().head()',
        "row-level",
    ),
    "corr_8_rows": ('small[["age", "cost"]].corr()', "degrees-of-freedom"),
    "series_corr_8_rows": ("print(small.age.corr(small.cost))", "degrees-of-freedom"),
    "zscore_per_row": ("st.zscore(df.age)", "row-level"),
    "zscore_printed": ("print(st.zscore(df.cost.to_numpy())[:30])", "row-level"),
    "scipy_describe_extremes": ("st.describe(df.age)", "extremes"),
    "big_fit_predict_rows": ('smf.ols("cost ~ age", data=df).fit().predict(df.head(20))',
                             "row-level"),
    "big_fit_fittedvalues": ('smf.ols("cost ~ age", data=df).fit().fittedvalues', "row-level"),
    "big_fit_resid_list": (
        'print(smf.ols("cost ~ age", data=df).fit().resid.tolist()[:20])', "row-level"),
    "big_sklearn_predict_printed": (
        "lr = LinearRegression().fit(df[['age', 'los_days']], df.cost)\n"
        "print(lr.predict(df[['age', 'los_days']])[:30])",
        "row-level",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_small_fit_or_test_is_withheld(session: Session, name: str) -> None:
    code, rule = LEAKS[name]
    r = session.execute(code)
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert r.blocked(), (name, r.shown())
    rules = _rules(r)
    assert rules, r.text()
    if rule is not None:
        assert rule in rules, (name, rules)
    assert "instead:" in r.shown()


def _rules(r: Reply) -> set[str]:
    out = set()
    for _, m in r.messages:
        for meta in (m.get("metadata") or {}, (m.get("content") or {}).get("metadata") or {}):
            b = meta.get("bedside") if isinstance(meta, dict) else None
            if isinstance(b, dict) and b.get("decision") == "blocked":
                out.add(str(b.get("rule")))
    return out


# Honest use on many patients: all released (the guard adds nothing but its metadata).
HONEST = {
    "ols_summary": 'm = smf.ols("cost ~ age + los_days", data=df).fit()\nm.summary()',
    "ols_params_ci": 'm = smf.ols("cost ~ age + los_days", data=df).fit()\n'
    "print(m.params)\nprint(m.conf_int())",
    "logit_summary": 'smf.logit("died ~ age + C(sex)", data=df).fit(disp=0).summary()',
    "arrays_ols": "sm.OLS(df.cost, sm.add_constant(df[['age', 'los_days']])).fit().params",
    "predict_on_a_grid": (
        'm = smf.ols("cost ~ age + los_days", data=df).fit()\n'
        'm.predict(pd.DataFrame({"age": [30, 40, 50], "los_days": [2, 3, 4]}))'
    ),
    "sklearn_predict_on_a_grid": (
        "lr = LinearRegression().fit(df[['age', 'los_days']], df.cost)\n"
        "lr.predict(pd.DataFrame({'age': [30, 40, 50], 'los_days': [2, 3, 4]}))"
    ),
    "ttest_1samp": "st.ttest_1samp(df.cost, 4000)",
    "ttest_large_groups": 'st.ttest_ind(df[df.sex == "F"].cost, df[df.sex == "M"].cost)',
    "chi2_passing_table": "st.chi2_contingency(pd.crosstab(df.sex, df.died))",
    "polyfit_all": "np.polyfit(df.age, df.cost, 1)",
    "corrcoef_all": "np.corrcoef(df.age, df.cost)",
    "corr_all": 'df[["age", "los_days", "cost"]].corr()',
    "cov_30_rows": 'df.head(30)[["age", "cost"]].cov()',
    "sklearn_coef": "lr = LinearRegression().fit(df[['age', 'los_days']], df.cost)\n"
    "print(lr.coef_, lr.intercept_)",
    "classification_report": (
        "from sklearn.model_selection import train_test_split\n"
        "from sklearn.metrics import classification_report, confusion_matrix\n"
        "Xtr, Xte, ytr, yte = train_test_split(df[['age', 'los_days']], df.sex == 'F', "
        "random_state=0)\nclf = LogisticRegression().fit(Xtr, ytr)\n"
        "print(classification_report(yte, clf.predict(Xte)))\n"
        "print(confusion_matrix(yte, clf.predict(Xte)))"
    ),
    "loss_curve": (
        "losses = [float(((df.cost - df.cost.mean() * (1 - 0.5 ** i)) ** 2).mean()) "
        "for i in range(6)]\nprint([round(x, 1) for x in losses])"
    ),
    "logit_12_rows_passes_as_acro": 'smf.logit("died ~ age", data=df.head(12)).fit(disp=0).params',
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_fits_and_tests_are_released(session: Session, name: str) -> None:
    r = session.execute(HONEST[name])
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert not r.blocked(), (name, r.shown())
    assert re.search(r"\d\.\d", r.shown()), r.shown()


def test_survival_table_suppresses_steps_with_few_at_risk(session: Session) -> None:
    """Kaplan-Meier on 400 patients: the early steps rest on hundreds and are released; the
    last steps, with fewer than 10 patients still at risk, are suppressed."""
    r = session.execute("SurvfuncRight(df.head(400).los_days, df.head(400).died).summary()")
    assert r.reply["content"]["status"] == "ok", r.shown()
    assert not r.blocked(), r.shown()
    assert "redacted" in r.decisions(), r.decisions()
    shown = r.shown()
    assert re.search(r"\b390\b", shown) and "suppressed" in shown, shown


def test_policy_threshold_is_the_dof_setting(session: Any) -> None:
    """The default is ACRO's safe_dof_threshold: 12 rows, one regressor = 10 dof, released."""
    r = session.execute('smf.ols("cost ~ age", data=df.head(12)).fit().params')
    assert not r.blocked(), r.shown()
    r = session.execute('smf.ols("cost ~ age", data=df.head(11)).fit().params')
    assert r.blocked(), r.shown()
