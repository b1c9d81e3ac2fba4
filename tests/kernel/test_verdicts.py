"""The guard's remembered verdicts on aggregates never outlive what they were reached on.

`OutputGuard._judge_aggregate` remembers its last verdicts (bench/bench_kernel_cell.py: a table
shown again is not judged cell by cell again), keyed by the tracker's memo values behind the
cells, the result's labels and values, the rules and the differencing log. Each test here shows
an aggregate often enough for its verdict to be remembered, then changes one of those inputs
the way a researcher (or an attacker) could, and checks from the client's side that the new
verdict is the one a fresh judgement gives. Also here: the kernel's pandas behaves as in a plain
kernel (display options, `attrs` copies), and an aggregate the guard no longer has the records
of is not released.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel._client import Session, running
from tests.kernel._cohort import write_cohort

SETUP = 'import pandas as pd, numpy as np\nc = hospital.load("cohort")'
SHOWN = 3  # a verdict is remembered from the second showing on: the third is answered by it


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    policy, _ = write_cohort(tmp_path_factory.mktemp("cohort"))
    with running(tmp_path_factory.mktemp("spec"), "bedside-verdicts", policy) as s:
        assert s.execute(SETUP).reply["content"]["status"] == "ok"
        yield s


def _result(got: Any) -> tuple[str, dict[str, Any]]:
    msg = got.of("execute_result")[0]
    return msg["content"]["data"]["text/plain"], msg["metadata"].get("bedside", {})


def _shown_repeatedly(session: Session, code: str) -> str:
    texts = [_result(session.execute(code))[0] for _ in range(SHOWN)]
    assert len(set(texts)) == 1, texts
    return texts[0]


def _row(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(label)).split()


def test_groups_changed_in_place_are_judged_again(session: Session) -> None:
    code = "e.groupby('site').stay.mean()"
    session.execute("e = c.copy()")
    first = _shown_repeatedly(session, code)
    assert "suppressed" not in first
    got = session.execute("\n".join([
        "rows = e.index[e.site == 'East Clinic']",
        "e.loc[rows, 'site'] = 'North Clinic'",
        "e.loc[rows[:3], 'site'] = 'East Clinic'",
        code,
    ]))  # fmt: skip
    text, meta = _result(got)
    assert _row(text, "East")[-1] == "suppressed", text
    assert meta["decision"] == "redacted" and "threshold" in meta["details"]["rules"], meta


def test_values_changed_in_place_are_judged_again(session: Session) -> None:
    code = "f.groupby('arm').stay.sum()"
    session.execute("f = c.copy()")
    assert "suppressed" not in _shown_repeatedly(session, code)
    # one record now carries nearly all of arm A's total: dominance
    got = session.execute(f"f.loc[f.index[f.arm == 'A'][:1], 'stay'] = 10**9\n{code}")
    text, meta = _result(got)
    assert _row(text, "A")[-1] == "suppressed", text
    assert "dominance" in meta["details"]["rules"], meta


def test_records_swapped_between_groups_are_judged_again(session: Session) -> None:
    """Two records trade groups: the counts, labels and values shown are as before, only the
    records behind the cells changed, and each cell now differs from the one released by two
    records (differencing). The verdict must come from the new records."""
    code = "g.groupby('readmitted').size()"
    session.execute("g = c.copy()")
    assert "suppressed" not in _shown_repeatedly(session, code)
    got = session.execute("\n".join([
        "i0, i1 = g.index[g.readmitted == 0][0], g.index[g.readmitted == 1][0]",
        "g.loc[[i0, i1], 'readmitted'] = [1, 0]",
        code,
    ]))  # fmt: skip
    meta = _result(got)[1]
    assert meta["decision"] == "blocked" and meta["details"]["rules"] == ["differencing"], meta


def test_a_result_changed_in_place_is_shown_as_it_now_is(session: Session) -> None:
    session.execute("t = c.groupby('site').size()")
    before = _shown_repeatedly(session, "t")
    got = session.execute("t.iloc[0] = 1003\nt")
    text, _ = _result(got)
    assert text != before
    assert text.splitlines()[1].split()[-1] == "1005", text  # rounded to 5, as policy says


def test_differencing_is_not_bypassed_by_a_remembered_verdict(session: Session) -> None:
    full = "c.groupby('site').stay.mean()"
    less = "d.groupby('site').stay.mean()"
    assert "suppressed" not in _shown_repeatedly(session, full)
    session.execute("d = c[c.subject_id != c.subject_id.iloc[5]]")
    for _ in range(SHOWN):  # the near-duplicate, shown again and again: suppressed every time
        text, meta = _result(session.execute(less))
        assert text.count("suppressed") == 1, text
        assert "differencing" in meta["details"]["rules"], meta
    assert "suppressed" not in _result(session.execute(full))[0]


def test_a_remembered_verdict_is_judged_again_when_the_log_changes(session: Session) -> None:
    """The differencing log keeps the last four record sets of a group: once four other
    selections have pushed X's records out, a near-duplicate Y (one record fewer) is released,
    and X shown again must now be suppressed against Y, not answered by its old verdict. (Counts:
    one grouping-memo entry per table, so X's memo values are still held and only the log's
    version tells that its verdict is out of date.)"""
    x = "c.groupby('readmitted').size()"
    assert "suppressed" not in _shown_repeatedly(session, x)
    for skip in (150, 300, 450, 600, 1):  # four other selections, then Y
        text, _ = _result(session.execute(x.replace("c.", f"c.iloc[{skip}:].", 1)))
        assert "suppressed" not in text, text
    text, meta = _result(session.execute(x))
    assert text.count("suppressed") == 1, text
    assert "differencing" in meta["details"]["rules"], meta


def test_changed_rules_are_applied_to_a_table_shown_before(session: Session) -> None:
    code = "c.groupby('gender').stay.mean()"
    assert "suppressed" not in _shown_repeatedly(session, code)
    # the in-kernel guard is not the enforcement boundary (the sentry is): a test may reach it
    session.execute("import dataclasses\nguard = get_ipython().kernel.guard\n"
                    "saved = guard.rules\n"
                    "guard.rules = dataclasses.replace(saved, min_cell_count=10**6)")  # fmt: skip
    try:
        got = session.execute(code)
        assert _result(got)[1]["decision"] == "blocked", got.text()[:2000]
    finally:
        session.execute("guard.rules = saved")
    assert "suppressed" not in _result(session.execute(code))[0]


def test_an_aggregate_the_guard_no_longer_knows_is_not_released(session: Session) -> None:
    got = session.execute(
        "small = c[c.stay > c.stay.quantile(0.99)].groupby('site').size()\n"
        "for _ in range(140):\n    c.groupby('arm').size()\n"
        "small"
    )
    text, meta = _result(got)
    assert meta["decision"] == "blocked" and meta["rule"] == "unknown-records", meta
    assert not re.search(r"Clinic\s+\d", text), text


def test_pandas_displays_as_in_a_plain_kernel(session: Session) -> None:
    # imported by the guard outside a cell, pandas took the kernel for a terminal
    got = session.execute("print(pd.get_option('display.max_columns'))")
    assert got.of("stream")[0]["content"]["text"].strip() == "20", got.text()[:2000]


def test_attrs_are_still_copied_deeply(session: Session) -> None:
    got = session.execute(
        "x = c.head(30).copy()\nx.attrs['note'] = ['a']\ny = x.head(5)\n"
        "y.attrs['note'].append('b')\n"
        "print(x.attrs['note'], y.attrs['note'], type(y.attrs.get('bedside')).__name__)"
    )
    assert got.of("stream")[0]["content"]["text"].strip() == "['a'] ['a', 'b'] tuple"
