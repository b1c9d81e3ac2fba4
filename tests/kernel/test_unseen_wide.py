"""The guard against ACRO on tables, names and aggregate phrasings it was not tuned on
(`bench/unseen_wide.py`), judged from the client's side through a real guarded kernel.

Seed 1 writes a skewed table (small cells, empty combinations, a lone unit, a dominant
contributor, a 0/1 column that is 100% in one group); seed 2 a larger, evenly spread one. ACRO
is not needed here: its verdicts are frozen below. They were obtained with
`bench/unseen_wide.py`'s `acro_verdicts` (acro 1.0.2 in `.venv-acro`, `make acro-venv`, its
default rules: threshold 10, N-K 2/0.9, p-ratio 0.1, zeros disclosive; a normalised table judged
on the counts behind it; a standard deviation's degrees of freedom by ACRO's status), e.g.

    .venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import unseen_wide as uw, \
        bench_guard_utility as b; ..."  # see acro_verdicts / acro_flags

True: ACRO flags at least one cell, so the guard must withhold something (suppress cells or
block) in every phrasing; False: ACRO passes, so the guard must release it (counts rounded at
most). The cases are the shapes the wider check found the guard getting wrong: tables written as
text (`print(t)`, `t.to_csv()`), `size().unstack()`, a standard deviation over 10 records,
`groupby().describe()`'s per-group extremes, and a two-key grouping displayed twice.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.kernel._client import Session, running

ROOT = Path(__file__).resolve().parents[2]

# ACRO's verdicts (see the module docstring): does ACRO flag any cell of the operation's table?
ACRO_FROZEN: dict[int, dict[str, bool]] = {
    1: {
        "crosstab": True,
        "crosstab_margins": True,
        "crosstab_norm_index": True,
        "crosstab_std": True,
        "crosstab_sum": True,
        "pivot_two_rows": True,
        "pivot_aggfuncs": False,
        "groupby_sum_dominant": True,
        "groupby_flag_rate": True,
        "size_unstack": True,
        "size_unstack_fill": True,
        "percent_by_hand": True,
        "value_counts": False,
        "crosstab_T": True,
        "size_reset_index": True,
    },
    2: {
        "crosstab": False,
        "crosstab_margins": False,
        "crosstab_norm_index": False,
        "crosstab_std": False,
        "crosstab_mean": False,
        "pivot_aggfuncs": False,
        "groupby_named_agg": False,
        "value_counts_norm": False,
        "size_unstack": False,
        "size_unstack_fill": False,
        "percent_by_hand": False,
        "crosstab_T": False,
        "size_reset_index": False,
        "agg_list_T": False,
    },
}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


uw = _load("unseen_wide")
gu = _load("bench_guard_utility")


def _decision(reply: Any) -> tuple[str, str]:
    """The bench's reading of what the client received (its strictest decision), no error."""
    assert not any(m["header"]["msg_type"] == "error" for _, m in reply.messages), reply.shown()
    decision: tuple[str, str] = gu.decision_of(reply)
    return decision


def _withholds(decision: tuple[str, str]) -> bool:
    return decision[0] in ("redacted", "blocked") and decision[1] != "rounding"


@pytest.fixture(scope="module")
def hospitals(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[int, tuple[dict[str, Any], Session]]]:
    """One guarded kernel per seed, each with its generated table loaded as `df`."""
    with ExitStack() as stack:
        out = {}
        for seed in ACRO_FROZEN:
            gen = uw.generate(seed)
            work = tmp_path_factory.mktemp(f"wide{seed}")
            policy = uw.write(work, gen)
            session = stack.enter_context(running(work / "spec", f"bedside-wide-{seed}", policy))
            table = gen["schema"].table
            setup = session.execute(f"import pandas as pd\ndf = hospital.load({table!r})")
            assert _decision(setup)[0] != "blocked"
            out[seed] = (gen, session)
        yield out


CASES = [(seed, name) for seed, ops in ACRO_FROZEN.items() for name in ops]


@pytest.mark.parametrize(("seed", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_agrees_with_acro_in_every_phrasing(hospitals: dict[int, Any], seed: int,
                                            name: str) -> None:  # fmt: skip
    gen, session = hospitals[seed]
    op = next(o for o in uw.operations(gen["schema"]) if o.name == name)
    flagged = ACRO_FROZEN[seed][name]
    for phrase, template in uw.PHRASINGS.items():
        reply = session.execute(f"X = {op.code}\n{template}")
        decision = _decision(reply)
        assert _withholds(decision) == flagged, (phrase, decision, reply.shown()[-1500:])
        if flagged and decision[0] == "redacted":
            assert "suppressed" in reply.shown(), (phrase, reply.shown()[-1500:])


def _mask(session: Session) -> dict[str, Any]:
    reply = session.execute(uw.MASK_CODE)
    line = next(x for x in reversed(reply.shown().splitlines()) if x.startswith('{"blocked"'))
    return json.loads(line)  # type: ignore[no-any-return]


def test_unstacked_counts_suppress_every_small_or_empty_cell(hospitals: dict[int, Any]) -> None:
    gen, session = hospitals[1]
    s, frame = gen["schema"], gen["frame"]
    a, c = s.cats[0], s.cats[2]
    session.execute(f"X = df.groupby([{a!r}, {c!r}]).size().unstack()\ndisplay(X)")
    hidden = {tuple(x) for x in _mask(session)["cells"]}
    counts = frame.groupby([a, c]).size().unstack(fill_value=0)
    small = {(str(r), str(col)) for r in counts.index for col in counts.columns
             if counts.at[r, col] < 10}  # fmt: skip
    assert small and small <= hidden


def test_group_describe_hides_each_groups_extremes(hospitals: dict[int, Any]) -> None:
    gen, session = hospitals[1]
    s, frame = gen["schema"], gen["frame"]
    b, v = s.cats[1], s.normal
    for template in ("display(X)", "print(X)", "print(X.to_csv())"):
        reply = session.execute(f"X = df.groupby({b!r})[{v!r}].describe()\n{template}")
        decision = _decision(reply)
        assert decision == ("redacted", "extremes"), (template, decision)
        shown = reply.shown()
        extremes = frame.groupby(b)[v].agg(["min", "max"]).to_numpy().ravel()
        others = frame.groupby(b)[v].describe()[["mean", "std", "25%", "50%", "75%"]]
        # (a value that is also another statistic of some group is not a test of hiding)
        leaked = [
            x
            for x in extremes
            if x not in others.to_numpy()
            and re.search(rf"(?<![\d.]){re.escape(f'{x:g}')}(?![\d])", shown)
        ]
        assert not leaked, (template, leaked)


def test_two_key_grouping_shown_twice_keeps_its_verdict(hospitals: dict[int, Any]) -> None:
    gen, session = hospitals[1]
    s = gen["schema"]
    code = f"df.groupby([{s.cats[1]!r}, {s.cats[2]!r}])[{s.normal!r}].mean()"
    first = _decision(session.execute(code))
    again = _decision(session.execute(code))
    assert first == again == ("redacted", "threshold")


def test_std_needs_one_record_more_than_a_mean(hospitals: dict[int, Any]) -> None:
    """ACRO's degrees of freedom: a standard deviation over 10 records is withheld, their mean
    is not."""
    _, session = hospitals[1]
    code = ("g = df.iloc[:10].assign(k='one')\n"
            "X = g.groupby('k')[{v!r}].{stat}()\ndisplay(X)")  # fmt: skip
    v = hospitals[1][0]["schema"].normal
    assert _decision(session.execute(code.format(v=v, stat="mean")))[0] == "released"
    assert _decision(session.execute(code.format(v=v, stat="std")))[0] == "blocked"


def test_failing_table_written_to_a_file_is_suppressed_not_the_cell(
    hospitals: dict[int, Any], tmp_path: Path
) -> None:
    """Printed, a table whose every cell fails withholds the cell's outputs; written to a file
    inside the hospital, the file holds the suppressed copy and the cell's other outputs pass."""
    gen, session = hospitals[1]
    a = gen["schema"].cats[0]
    table = f"X = df[df[{a!r}] == 'Solo'].groupby({a!r}).size()\n"
    printed = session.execute(table + "print(X.to_csv())")
    assert _decision(printed)[0] == "blocked"
    path = tmp_path / "solo.csv"
    written = session.execute(table + f"X.to_csv({str(path)!r})\nprint('written')")
    assert _decision(written)[0] == "released"
    assert "written" in written.shown()
    assert "suppressed" in path.read_text()


@pytest.mark.parametrize(
    "shape", ["describe().T", "agg(['mean', 'max']).T", "agg(['mean', 'max']).reset_index()"]
)
def test_extremes_stay_hidden_when_the_table_is_turned(
    hospitals: dict[int, Any], shape: str
) -> None:
    """A group's maximum is hidden whether the table is transposed or its index reset."""
    gen, session = hospitals[2]
    s, frame = gen["schema"], gen["frame"]
    reply = session.execute(f"df.groupby({s.cats[1]!r})[{s.normal!r}].{shape}")
    assert _decision(reply)[0] in ("redacted", "blocked")
    shown = reply.shown()
    for x in frame.groupby(s.cats[1])[s.normal].max():
        assert not re.search(rf"(?<![\d.]){re.escape(f'{x:g}')}(?![\d])", shown), (shape, x)


def test_turned_tables_suppress_cells_not_the_table(hospitals: dict[int, Any]) -> None:
    """`crosstab(...).T` and `size().reset_index()` of a table with some small cells keep the
    others (they were blocked whole)."""
    gen, session = hospitals[1]
    s = gen["schema"]
    b, c = s.cats[1], s.cats[2]
    turned = (
        f"pd.crosstab(df[{b!r}], df[{c!r}]).T",
        f"df.groupby([{b!r}, {c!r}]).size().reset_index(name='n')",
    )
    for code in turned:
        assert _decision(session.execute(code)) == ("redacted", "threshold"), code
