"""ACRO's verdicts on the model fits of `test_models.py` (run by the `.venv-acro` interpreter).

Reads the `patients` table as CSV (path in argv[1]; `.venv-acro` has no parquet engine) and
prints, as JSON, ACRO's status ("pass" / "fail") for each (fit, subset) of `ACRO_FAILS`:

    .venv/bin/python -c "from tests.kernel._data import patients; \\
        patients().to_csv('/tmp/patients.csv', index=False)"
    .venv-acro/bin/python tests/kernel/_acro_models.py /tmp/patients.csv
"""

import contextlib
import json
import logging
import sys

logging.disable(logging.CRITICAL)

import pandas as pd  # noqa: E402
from acro import ACRO, add_constant  # noqa: E402


def main() -> None:
    df = pd.read_csv(sys.argv[1])
    subsets = {
        "head8": df.head(8),
        "head12": df.head(12),
        "head13": df.head(13),
        "head14": df.head(14),
        "cardio12": df[df.ward == "Cardiology"].head(12),
        "all": df,
    }
    acro = ACRO(suppress=False)
    out = {}
    for name, d in subsets.items():
        fits = {
            "ols": lambda d=d: acro.ols(d.cost, add_constant(d[["age", "los_days"]])),
            "olsr": lambda d=d: acro.olsr("cost ~ age + los_days", data=d),
            "logit": lambda d=d: acro.logit(d.died, add_constant(d[["age"]])),
            "probitr": lambda d=d: acro.probitr("died ~ age", data=d),
            "surv_func": lambda d=d: acro.surv_func(d.los_days, d.died, output="table"),
        }
        for fit, run in fits.items():
            with contextlib.redirect_stdout(sys.stderr):  # statsmodels' optimiser messages
                run()
            record = list(acro.results.results.values())[-1]
            out[f"{fit} {name}"] = {"status": record.status, "summary": record.summary}
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
