"""Run the kernel guard's own judging of crosstab and pivot_table on JSON cases (stdin).

Executed in a separate interpreter by `test_acro_parity.py`: the provenance tracker patches
pandas process-wide, which the test process must not be. Input: the cases of `_acro_runner.py`.
Output: per case, for "crosstab" and "pivot", the rows, the columns and the suppressed cells.
"""

import json
import sys
import types

import pandas as pd

from bedside.kernel._provenance import ProvenanceTracker
from bedside.kernel._scan import TextScanner
from bedside.kernel.guard import OutputGuard
from bedside.policy import disclosure as dr


def main() -> None:
    cases = json.load(sys.stdin)
    rules = dr.Rules()
    tracker = ProvenanceTracker(rules)
    guard = OutputGuard(types.SimpleNamespace(disclosure=rules, errors="scrub"), tracker,
                        TextScanner())  # fmt: skip
    tracker.install()
    out = []
    for i, case in enumerate(cases):
        df = pd.DataFrame({"a": case["a"], "b": case["b"]})
        if case["v"] is not None:
            df["v"] = case["v"]
        tracker.protect(f"case{i}", df)
        agg = case["aggfunc"]
        results = {}
        if agg is None:
            tables = {"crosstab": pd.crosstab(df.a, df.b)}
        else:
            tables = {
                "crosstab": pd.crosstab(df.a, df.b, values=df.v, aggfunc=agg),
                "pivot": df.pivot_table(index="a", columns="b", values="v", aggfunc=agg),
            }
        for name, table in tables.items():
            decision, shown = guard.judge_object(table)
            if decision.blocked:
                flags = [[True] * table.shape[1] for _ in range(table.shape[0])]
            else:
                flags = (shown.astype(str) == "suppressed").to_numpy().tolist()
            results[name] = {
                "rows": [str(r) for r in table.index],
                "cols": [str(c) for c in table.columns],
                "suppressed": flags,
            }
        out.append(results)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
