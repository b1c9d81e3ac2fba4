"""The guard's known gaps, closed, judged from the client's side on a table no other test uses.

`cohort` (see `_cohort.py`) has low-cardinality columns (`arm` A/B, `gender`, a two-word `site`,
a 0/1 `readmitted` flag) whose values printed in record order link to the records by position;
skewed `charges` with two dominant records in one cell; and admission months. Each leak must reach
the client without the protected values (an independent judge reads every message on every
channel) and with a block or redaction notice; each utility cell must go through unblocked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.kernel._client import LeakJudge, Session, running
from tests.kernel._cohort import IDENTIFIERS, write_cohort

SETUP = 'import pandas as pd, numpy as np\nc = hospital.load("cohort")'
RUN = 12  # consecutive values in record order the judge calls row-level
LOW = ["arm", "gender", "site", "readmitted", "admit_month"]

# Values of low-cardinality columns in record order, in every phrasing.
ROW_ORDER = {
    "tolist": "c.arm.tolist()",
    "to_list-slice": "c.gender[100:160].to_list()",
    "list": "list(c.readmitted)",
    "list-printed": "print(list(c.gender[200:260]))",
    "join": "''.join(c.arm)",
    "join-slice-printed": "print(''.join(c.arm[100:160]))",
    "join-comma": "print(','.join(c.site[:80]))",
    "to_string": "c[['gender', 'readmitted']].to_string()",
    "to_string-printed": "print(c[['arm', 'readmitted']].head(40).to_string())",
    "values": "c.arm.values",
    "values-slice": "c.readmitted.values[100:160]",
    "values-printed": "print(c.gender.values[300:360])",
    "flag-tolist-printed": "print(c.readmitted.tolist()[:120])",
    "to_dict": "c.arm.iloc[:40].to_dict()",
    "to_json": "print(c.site[:40].to_json())",
    "string-sum": "c.arm.sum()",
    "numpy-asarray": "np.asarray(c.gender)[:300]",
    "loop-print": "for g in c.gender[:60]:\n    print(g, end=' ')",
    "comprehension": "[1 if s == 'male' else 0 for s in c.gender[:80]]",
    "months": "print(c.admit_month[:60].tolist())",
    "frame-values": "c[['arm', 'gender']].values[:50]",
    "zip-pairs": "print(list(zip(c.arm[:40], c.readmitted[:40])))",
}
EXTREMES = {
    "quantile-1": "c.charges.quantile(1.0)",
    "quantile-0": "c.charges.quantile(0.0)",
    "quantile-list": "c.charges.quantile([0.5, 1.0])",
    "nlargest": "c.charges.nlargest(1)",
    "nlargest-value": "c.charges.nlargest(1).iloc[0]",
    "nsmallest-value": "print(c.charges.nsmallest(1).values[0])",
    "sort-iloc": "c.charges.sort_values().iloc[-1]",
    "frame-sort": "c.sort_values('charges').charges.iloc[0]",
    "agg-max": "c.charges.agg('max')",
    "describe-999": "c.charges.describe(percentiles=[.999])",
    "builtin-max": "max(c.charges)",
    "sorted": "sorted(c.charges)[-1]",
    "group-quantile": "c.groupby('site').charges.quantile(1.0)",
}
DOMINANCE = {
    "crosstab-sum": "pd.crosstab(c.site, c.arm, values=c.charges, aggfunc='sum')",
    "crosstab-mean": "pd.crosstab(c.site, c.arm, values=c.charges, aggfunc='mean')",
    "pivot-sum": "c.pivot_table(index='site', columns='arm', values='charges', aggfunc='sum')",
    "pivot-mean": "c.pivot_table(index='site', columns='arm', values='charges', aggfunc='mean')",
    "pivot-np-sum": "c.pivot_table(index='site', columns='arm', values='charges', aggfunc=np.sum)",
}
UTILITY = {
    "value_counts": "c.arm.value_counts()",
    "value_counts-site": "c.site.value_counts()",
    "unique": "c.site.unique()",
    "nunique": "c.gender.nunique()",
    "rate": "round(c.readmitted.mean(), 3)",
    "crosstab": "pd.crosstab(c.site, c.arm)",
    "crosstab-flag": "pd.crosstab(c.gender, c.readmitted)",
    "group-mean": "c.groupby('site').charges.median().round(1)",
    "group-stay": "c.groupby('arm').stay.mean().round(2)",
    "group-rate": "c.groupby('site').readmitted.mean().round(3)",
    "describe": "c.stay.describe()",
    "quantiles": "c.stay.quantile([0.1, 0.5, 0.9])",
    "pivot-mean": "c.pivot_table(index='site', values='stay', aggfunc='mean')",
    "crosstab-mean-stay": "pd.crosstab(c.site, c.gender, values=c.stay, aggfunc='mean').round(2)",
    "months": "c.groupby('admit_month').size()",
    "values-for-a-model": "y = c.readmitted.values\nX = c[['stay']].to_numpy()\n"
    "print(round(float(y.mean()), 3), X.shape)",
    "loop-over-groups": "for s, g in c.groupby('site'):\n    print(s, round(g.stay.mean(), 1))",
    "model": "from sklearn.linear_model import LogisticRegression\n"
    "lr = LogisticRegression().fit(c[['stay']], c.readmitted)\nprint(lr.coef_.round(3))",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    return write_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def session(cohort: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with running(tmp_path_factory.mktemp("spec"), "bedside-gaps", cohort[0]) as s:
        assert s.execute(SETUP).reply["content"]["status"] == "ok"
        yield s


def _norm(tok: str) -> str:
    t = tok.lower()
    try:
        x = float(t)
        return str(int(x)) if x.is_integer() else t
    except ValueError:
        return t


class RunJudge:
    """Independent of the guard: `RUN` values of a column in record order, read with a stride."""

    def __init__(self, frame: pd.DataFrame, columns: list[str]) -> None:
        self.windows: set[tuple[str, ...]] = set()
        for col in columns:
            seq = [_norm(t) for v in frame[col].astype(str) for t in v.split()]
            for i in range(len(seq) - RUN + 1):
                w = tuple(seq[i : i + RUN])
                if len(set(w)) > 1:
                    self.windows.add(w)

    def leaks(self, text: str) -> bool:
        toks: list[str] = []
        for t in re.findall(r"[\w.-]+", text.replace("\\n", " ")):
            toks.extend(t if len(t) >= RUN and set(t) <= {"A", "B"} else [t])
        toks = [_norm(t) for t in toks]
        for stride in range(1, 9):
            for off in range(stride):
                seq = toks[off::stride]
                if any(tuple(seq[i : i + RUN]) in self.windows for i in range(len(seq) - RUN + 1)):
                    return True
        return False


@pytest.fixture(scope="module")
def judges(cohort: Any) -> tuple[LeakJudge, RunJudge]:
    frame = cohort[1]
    return LeakJudge(frame, IDENTIFIERS, ["charges"]), RunJudge(frame, LOW)


def _assert_stopped(got: Any, name: str) -> None:
    assert {"blocked", "redacted"} & set(got.decisions()), f"{name}: no notice\n{got.text()[:3000]}"


@pytest.mark.parametrize("name", list(ROW_ORDER), ids=str)
def test_low_cardinality_values_in_record_order_are_blocked(
    session: Session, judges: Any, name: str
) -> None:
    got = session.execute(ROW_ORDER[name])
    ids, runs = judges
    assert not ids.leaks(got.text()), f"{name} leaked:\n{got.text()[:3000]}"
    assert not runs.leaks(got.text()), f"{name} leaked a run:\n{got.text()[:3000]}"
    _assert_stopped(got, name)


def _numbers(text: str) -> np.ndarray:
    return np.array([float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)] or [np.nan])


@pytest.mark.parametrize("name", list(EXTREMES), ids=str)
def test_extremes_by_other_phrasings_are_suppressed(
    session: Session, cohort: Any, name: str
) -> None:
    got = session.execute(EXTREMES[name])
    charges = cohort[1].charges
    nums = _numbers(got.shown())
    for v in (charges.max(), charges.min(), charges.quantile(0.999)):
        assert not np.isclose(nums, v, rtol=1e-7, atol=0.006).any(), f"{name}:\n{got.shown()}"
    _assert_stopped(got, name)


def test_describe_keeps_the_middle_percentiles(session: Session) -> None:
    got = session.execute("c.charges.describe(percentiles=[.25, .5, .999])")
    text = got.of("execute_result")[0]["content"]["data"]["text/plain"]
    assert re.search(r"99\.9%\s+suppressed", text) and re.search(r"max\s+suppressed", text)
    assert re.search(r"50%\s+\d", text), text


@pytest.mark.parametrize("name", list(DOMINANCE), ids=str)
def test_dominated_cells_of_crosstab_and_pivot_are_suppressed(
    session: Session, cohort: Any, name: str
) -> None:
    got = session.execute(DOMINANCE[name])
    frame = cohort[1]
    cell = frame[(frame.site == "East Clinic") & (frame.arm == "B")].charges
    meta = got.of("execute_result")[0]["metadata"]["bedside"]
    assert meta["decision"] == "redacted", got.text()[:3000]
    assert {"dominance", "p-ratio"} & set(meta["details"]["rules"]), meta
    nums = _numbers(got.shown())
    for v in (cell.sum(), cell.mean()):
        assert not np.isclose(nums, v, rtol=1e-6).any(), got.shown()
    table = got.of("execute_result")[0]["content"]["data"]["text/plain"]
    east = next(line for line in table.splitlines() if line.startswith("East"))
    assert east.split()[-1] == "suppressed" and "suppressed" not in east.split()[-2], table


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("pd.crosstab(c.site, c.arm)", "pd.crosstab(d.site, d.arm)"),
        (
            "c.pivot_table(index='site', columns='gender', values='stay', aggfunc='sum')",
            "d.pivot_table(index='site', columns='gender', values='stay', aggfunc='sum')",
        ),
        (
            "pd.crosstab(c.site, c.gender, values=c.stay, aggfunc='mean')",
            "pd.crosstab(d.site, d.gender, values=d.stay, aggfunc='mean')",
        ),
    ],
    ids=["crosstab", "pivot-sum", "crosstab-mean"],
)
def test_differencing_on_crosstab_and_pivot_cells(
    session: Session, first: str, second: str
) -> None:
    one = session.execute(first)
    assert "blocked" not in one.decisions(), one.text()[:2000]
    cell = "d = c[c.subject_id != c.subject_id.iloc[11]]\n" + second
    two = session.execute(cell)
    meta = two.of("execute_result")[0]["metadata"]["bedside"]
    assert meta["decision"] in ("redacted", "blocked")
    assert "differencing" in meta["details"]["rules"], meta
    shown = two.of("execute_result")[0]["content"]["data"]["text/plain"]
    assert shown.count("suppressed") >= 1


@pytest.mark.parametrize("name", list(UTILITY), ids=str)
def test_utility_on_the_new_table_goes_through(session: Session, name: str) -> None:
    got = session.execute(UTILITY[name])
    assert "blocked" not in got.decisions(), f"{name}:\n{got.text()[:3000]}"
    assert got.reply["content"]["status"] == "ok", got.text()[:3000]
    assert got.of("execute_result") or got.of("stream"), got.text()[:3000]


def test_describe_suppresses_extremes_only(session: Session) -> None:
    got = session.execute("c.charges.describe()")
    text = got.of("execute_result")[0]["content"]["data"]["text/plain"]
    assert re.search(r"min\s+suppressed", text) and re.search(r"max\s+suppressed", text)
    assert re.search(r"mean\s+\d", text) and re.search(r"75%\s+\d", text), text


def test_a_few_birth_dates_alone_do_not_block_an_aggregate(session: Session, cohort: Any) -> None:
    """Weak identifier matches (dates standing alone) do not block; beside a name they do."""
    frame = cohort[1]
    firsts = sorted({d for d in frame.date_of_birth if d.endswith("-01")})[:3]
    assert len(firsts) == 3
    cell = f"pd.Series([120, 95, 130], index=pd.to_datetime({firsts!r}), name='admissions')"
    got = session.execute(cell)
    assert "blocked" not in got.decisions(), got.text()[:2000]
    assert firsts[0] in got.shown()
    i = int(frame.index[frame.date_of_birth == firsts[0]][0])
    strong = session.execute(f"print(c.given_name.iloc[{i}], '{firsts[0]}')")
    assert "blocked" in strong.decisions(), strong.text()[:2000]


@pytest.mark.parametrize("column", ["readmitted", "arm"])
def test_a_table_changed_in_place_is_judged_again(session: Session, column: str) -> None:
    """The guard remembers the records behind a crosstab's cells between cells: a frame changed
    in place (a numpy column written through, a pyarrow column replaced) so that one cell now
    counts three records must have that cell suppressed, not the earlier verdict reused."""
    table = f"pd.crosstab(e.site, e.{column})"
    first = session.execute(f"e = c.copy()\n{table}")
    text = first.of("execute_result")[0]["content"]["data"]["text/plain"]
    assert "suppressed" not in text and "blocked" not in first.decisions(), text
    again = session.execute(table)  # shown again: the remembered records, the same verdict
    assert again.of("execute_result")[0]["content"]["data"]["text/plain"] == text
    low, high = ("0", "1") if column == "readmitted" else ("'A'", "'B'")
    change = "\n".join([
        "rows = e.index[e.site == 'East Clinic']",
        f"e.loc[rows, {column!r}] = {low}",
        f"e.loc[rows[:3], {column!r}] = {high}",
        table,
    ])  # fmt: skip
    got = session.execute(change)
    shown = got.of("execute_result")[0]["content"]["data"]["text/plain"]
    east = next(line for line in shown.splitlines() if line.startswith("East"))
    assert east.split()[-1] == "suppressed", shown
    assert got.of("execute_result")[0]["metadata"]["bedside"]["decision"] == "redacted"
