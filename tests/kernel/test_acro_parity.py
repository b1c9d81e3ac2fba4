"""`bedside.policy.disclosure` against ACRO (the reference for the rules), cell by cell.

Random frequency and magnitude tables are checked by ACRO's crosstab in the `.venv-acro`
environment (`make acro-venv`; ACRO pins pandas<=2.3.3 so it has its own environment) and by
`check_cells` here, with ACRO's defaults (threshold 10, N-K 2/0.9, p-ratio 0.1, zeros
disclosive). Each cell's verdict per rule must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bedside.policy import disclosure as dr

ACRO_PY = Path(__file__).resolve().parents[2] / ".venv-acro" / "bin" / "python"
RUNNER = Path(__file__).with_name("_acro_runner.py")
GUARD_RUNNER = Path(__file__).with_name("_guard_runner.py")

pytestmark = pytest.mark.skipif(
    not ACRO_PY.exists(),
    reason=".venv-acro is absent: run `make acro-venv` to compare the rules with ACRO",
)


def _cases(seed: int = 20261129, n_cases: int = 24) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    cases: list[dict[str, object]] = []
    for i in range(n_cases):
        n = int(rng.integers(40, 400))
        la, lb = int(rng.integers(2, 6)), int(rng.integers(2, 5))
        pa = rng.dirichlet(np.ones(la) * 0.7)
        a = rng.choice([f"a{k}" for k in range(la)], n, p=pa)
        b = rng.choice([f"b{k}" for k in range(lb)], n)
        v = rng.lognormal(3, rng.uniform(0.3, 3.0), n).round(2)
        if i % 3 == 2:  # a few dominant contributors
            v[rng.integers(0, n, 3)] *= 1000
        kind = (None, "sum", "mean")[i % 3]
        cases.append({"a": a.tolist(), "b": b.tolist(),
                      "v": None if kind is None else v.tolist(), "aggfunc": kind})  # fmt: skip
    return cases


def _ours(case: dict[str, object]) -> dict[tuple[str, str], tuple[str, ...]]:
    df = pd.DataFrame({"a": case["a"], "b": case["b"]})
    if case["v"] is not None:
        df["v"] = case["v"]
    cells = sorted({(a, b) for a in df.a.unique() for b in df.b.unique()})
    groups = df.groupby(["a", "b"])
    counts = [len(groups.groups.get(c, [])) for c in cells]
    if case["v"] is None:
        verdict = dr.check_cells(counts, rules=dr.Rules(), statistic="count")
    else:
        values = [df.v.iloc[groups.indices[c]].tolist() if c in groups.indices else []
                  for c in cells]  # fmt: skip
        verdict = dr.check_cells(counts, values=values, rules=dr.Rules(),
                                 statistic=str(case["aggfunc"]))  # fmt: skip
    return dict(zip(cells, verdict.mask, strict=True))


ACRO_RULE = {"MinimumThresholdCheck": {dr.THRESHOLD}, "PresenceOfZeroCheck": {dr.ZEROS},
             "NKCheck": {dr.DOMINANCE}, "PPercentCheck": {dr.P_RATIO}}  # fmt: skip


@pytest.fixture(scope="module")
def acro_results() -> list[dict[str, Any]]:
    """ACRO's verdicts on `_cases()` (one ACRO run shared by the tests of this module)."""
    proc = subprocess.run([str(ACRO_PY), str(RUNNER)], input=json.dumps(_cases()),
                          capture_output=True, text=True, timeout=240, check=True)  # fmt: skip
    return json.loads(proc.stdout)


def test_cell_verdicts_match_acro(acro_results: list[dict[str, Any]]) -> None:
    cases = _cases()
    results = acro_results
    compared = 0
    exercised: set[str] = set()
    for case, acro in zip(cases, results, strict=True):
        ours = _ours(case)
        for check, positions in acro["cells"].items():
            if check not in ACRO_RULE:
                continue
            if positions:
                exercised.add(check)
            flagged = {(acro["rows"][r], acro["cols"][c]) for r, c in positions}
            for r in acro["rows"]:
                for c in acro["cols"]:
                    mine = bool(ACRO_RULE[check] & set(ours.get((r, c), ())))
                    if check == "MinimumThresholdCheck" and case["v"] is None:
                        # ACRO counts a zero cell below the threshold; we name it `zeros`.
                        mine = bool({dr.THRESHOLD, dr.ZEROS} & set(ours.get((r, c), ())))
                    assert mine == ((r, c) in flagged), (check, case["aggfunc"], r, c)
                    compared += 1
    assert compared > 200
    assert exercised == set(ACRO_RULE), f"the random tables never triggered {exercised}"


def test_guard_suppresses_the_cells_acro_flags_on_crosstab_and_pivot(
    acro_results: list[dict[str, Any]],
) -> None:
    """The kernel guard's own judging of `pd.crosstab(..., values=, aggfunc=)` and
    `pivot_table(values=, aggfunc=)` (sum and mean) suppresses exactly the cells ACRO flags for
    threshold, dominance (N-K) or p-ratio; frequency crosstabs add zeros."""
    cases = _cases()
    acro = acro_results
    ours = json.loads(subprocess.run([sys.executable, str(GUARD_RUNNER)], input=json.dumps(cases),
                                     capture_output=True, text=True, timeout=240, check=True,
                                     cwd=Path(__file__).resolve().parents[2]).stdout)  # fmt: skip
    compared = 0
    kinds: set[str] = set()
    for case, theirs, mine in zip(cases, acro, ours, strict=True):
        flagged = {(theirs["rows"][r], theirs["cols"][c])
                   for check, cells in theirs["cells"].items() if check in ACRO_RULE
                   for r, c in cells}  # fmt: skip
        for name, table in mine.items():
            for i, r in enumerate(table["rows"]):
                for j, c in enumerate(table["cols"]):
                    if r not in theirs["rows"] or c not in theirs["cols"]:
                        continue
                    suppressed = table["suppressed"][i][j]
                    assert suppressed == ((r, c) in flagged), (name, case["aggfunc"], r, c)
                    compared += 1
                    if suppressed:
                        kinds.add(f"{name}:{case['aggfunc']}")
    assert compared > 400
    assert {"crosstab:sum", "crosstab:mean", "pivot:sum", "pivot:mean"} <= kinds
