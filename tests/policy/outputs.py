"""Realistic analysis outputs that must not trip the identifier index or the PHI patterns.

Some are fixed text (library banners, progress bars, version strings, ward statistics with
dates); the rest are produced by running ordinary analysis on the synthetic patients table.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd

FIXED = [
    "2.13.0+cpu False",
    "100%|██████████| 1000/1000 [00:00<00:00, 48213.77it/s]",
    "epoch 0: loss 0.6931\nepoch 1: loss 0.6812\nepoch 2: loss 0.6703",
    "Ttest_indResult(statistic=-1.2345678901234, pvalue=0.21734591823471)",
    "[[1712  188]\n [  64   36]]",
    "[0 1 0 0 1 1 0 1 0 0 0 1 1 1 0 0 1 0 1 0]",
    "array([0.12345678, 0.23456789, 0.98765432, 0.00012345])",
    "week_start  admissions  median_los\n2023-01-02         412         4.0\n"
    "2023-01-09         398         4.5\n2023-01-16         441         3.5",
    "Ward occupancy 01/02/2024 to 29/02/2024: 87.5% (95% CI 85.1-89.9)",
    "report generated 2024-03-01 12:00:00 UTC; run id 20240301-120000",
    "numpy 2.4.6, pandas 3.0.0, scikit-learn 1.7.2, statsmodels 0.14.5, torch 2.13.0",
    "p = 0.0031, OR = 1.84 (1.23-2.75), n = 2000",
    "Total cost: 14,235,671.25; mean 7,117.84; sd 6,014.55",
    "<matplotlib.figure.Figure at 0x7f3a2c1d4e50> <Figure size 640x480 with 1 Axes>",
    "HTTP 200 in 0.123 s; 1048576 bytes; sha256 "
    "3fa9c0e1d2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1a2f3e4d5c6b7a8f9",
    "ids 1000000 to 1999999 processed in 12.5 s (80000.0 rows/s)",
    "Coefficients: [[ 0.0412 -0.0031]] Intercept: [-3.4567]",
    "r = 0.86, slope 905.3 per day, 95% CI 880.1 to 930.5",
    "age_band  (0, 40]  (40, 65]  (65, 120]\ndied          0.005     0.045      0.153",
    "Counter({'General Medicine': 475, 'Elderly Care': 255, 'Cardiology': 240})",
    "ROC AUC 0.781 (bootstrap 1000 resamples, seed 20240312)",
    "Dates of first admission range over 2019-2024 (5 years); 12 wards; 10 ICD-10 chapters",
    "Processed 123456 records; 7 duplicates removed; 0.01% missing",
]


def generated(df: pd.DataFrame) -> list[str]:
    """Outputs of ordinary analysis cells (the utility corpus) on a patients table."""
    out: list[str] = []
    out.append(str((len(df), df.shape)))
    out.append(str(df.dtypes))
    out.append(str(list(df.columns)))
    out.append(str(df.isna().mean().round(3)))
    out.append(str(df.groupby("ward").size()))
    out.append(str(pd.crosstab(df.sex, df.died)))
    out.append(str(df.age.describe()))
    out.append(df.age.describe().to_frame()._repr_html_())
    out.append(str(df.groupby("ward").los_days.agg(["mean", "std", "count"])))
    out.append(df.groupby("ward").los_days.agg(["mean", "std", "count"]).to_html())
    out.append(str(df.los_days.quantile([0.25, 0.5, 0.75])))
    out.append(str(df[["age", "los_days", "cost"]].corr().round(2)))
    out.append(
        str(df.groupby(pd.cut(df.age, [0, 40, 65, 120]), observed=False).died.mean().round(3))
    )
    out.append(str(df.diagnosis.value_counts().head(5)))
    out.append(df.groupby("ward")[["cost", "los_days"]].sum().to_json())
    out.append(str(np.histogram(df.age, bins=range(0, 110, 10))))

    from scipy import stats

    out.append(str(stats.ttest_ind(df[df.sex == "F"].los_days, df[df.sex == "M"].los_days)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import statsmodels.formula.api as smf

        out.append(str(smf.logit("died ~ age + C(sex)", df).fit(disp=0).summary()))
        out.append(str(smf.ols("cost ~ los_days + age", df).fit().summary()))
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix, roc_auc_score

    lr = LogisticRegression(max_iter=500).fit(df[["age", "los_days"]], df.died)
    out.append(f"{lr.coef_} {lr.intercept_}")
    out.append(str(round(roc_auc_score(df.died, df.age), 3)))
    out.append(str(confusion_matrix(df.died, (df.age > 70).astype(int))))
    buf = io.StringIO()
    df[["age", "los_days", "cost", "hiv", "died"]].info(buf=buf)
    out.append(buf.getvalue())
    return out
