"""Run ACRO's crosstab checks on JSON cases (stdin) and print the flagged cells (stdout).

Executed by the `.venv-acro` interpreter (ACRO pins pandas<=2.3.3, so it cannot share .venv).
Input: [{"a": [...], "b": [...], "v": [...] | null, "aggfunc": "sum" | "mean" | null}, ...].
Output: one {"rows": [...], "cols": [...], "cells": {check: [[r, c], ...]}} per case.
"""

import json
import logging
import sys

logging.disable(logging.CRITICAL)

import pandas as pd  # noqa: E402
from acro import ACRO  # noqa: E402


def main() -> None:
    cases = json.load(sys.stdin)
    acro = ACRO(suppress=False)
    out = []
    for case in cases:
        a, b = pd.Series(case["a"], name="a"), pd.Series(case["b"], name="b")
        if case["v"] is None:
            table = acro.crosstab(a, b)
        else:
            table = acro.crosstab(a, b, values=pd.Series(case["v"]), aggfunc=case["aggfunc"])
        record = list(acro.results.results.values())[-1]
        out.append(
            {
                "rows": [str(r) for r in table.index],
                "cols": [str(c) for c in table.columns],
                "cells": {
                    k: [[int(r), int(c)] for r, c in v] for k, v in record.sdc["cells"].items()
                },
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
