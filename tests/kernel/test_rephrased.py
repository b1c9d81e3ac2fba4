"""The corpus's leaks rephrased on another table with other column names.

Nothing in the guard may depend on the corpus's table or column names: the `members` table has
`member_no`, `full_name`, `birth_date`, `zip`, `mobile` as identifiers and other value columns.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel._client import LeakJudge, Session

SETUP = 'import pandas as pd, numpy as np\nm = hospital.load("members")'

LEAKS = {
    "frame": "m",
    "tail": "m.tail(3)",
    "records": "m.to_dict('records')[:5]",
    "itertuples": "repr(list(m.head(3).itertuples()))",
    "fstring": "for r in m.head(3).itertuples():\n    print(f'{r.full_name} / {r.birth_date}')",
    "values-row": "m.values[3]",
    "html": "m.head(10).to_html()",
    "filtered-display": "display(m.loc[m.years > 38])",
    "dict-comp": "{k: list(v) for k, v in m.head(3).items()}",
    "series-in-tuple": "('look', m.full_name.head(3))",
    "hex": "print(m.full_name.iloc[0].encode().hex())",
    "base64-urlsafe": "import base64\nprint(base64.urlsafe_b64encode(m.head(5).to_csv().encode()))",
    "numbers-row-major": "print(m[['years', 'paid']].head(20).to_numpy())",
    "numbers-list": "m.paid.head(30).tolist()",
    "stderr": "import sys\nprint(m.member_no.iloc[4], file=sys.stderr)",
    "fd-2": "import os\nos.write(2, m.head(5).to_json().encode())",
    "input-prompt": None,  # stdin: handled below
    "small-groups": "m.groupby('zip').size()",
    "small-groups-mean": "m[m.years > 37].groupby('plan').smoker.mean()",
    "one-record-sum": "m.loc[m.member_no == m.member_no.iloc[2], 'paid'].sum()",
    "differencing": "m.paid.sum() - m[m.member_no != m.member_no.iloc[5]].paid.sum()",
    "extreme": "m.paid.max()",
    "crosstab-ids": "pd.crosstab(m.zip, m.plan)",
    "pivot-ids": "m.pivot_table(index='zip', values='paid', aggfunc='mean')",
    "error": "float(m.full_name.iloc[3])",
    "raw-send": "k = get_ipython().kernel\n"
    "k.session.send(k.iopub_socket, 'display_data', {'data': {'text/plain': m.head().to_string()},"
    " 'metadata': {}, 'transient': {}}, parent=k.get_parent('shell'))",
}
UTILITY = {
    "group-mean": "m.groupby('plan').paid.mean().round(1)",
    "crosstab": "pd.crosstab(m.plan, m.smoker)",
    "describe": "m.paid.describe()",
    "named-agg": "m.groupby('plan').agg(n=('paid', 'size'), avg=('paid', 'mean'))",
    "pivot": "m.pivot_table(index='plan', columns='smoker', values='paid', aggfunc='mean')",
    "rate": "round(m.smoker.mean(), 3)",
    "shape": "m.shape, m.dtypes.to_dict()",
    "catalog": "hospital.tables()",
}


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    assert guarded.execute(SETUP).reply["content"]["status"] == "ok"
    return guarded


@pytest.fixture(scope="module")
def judge(hospital: Any) -> LeakJudge:
    ids = ["member_no", "full_name", "birth_date", "zip", "mobile"]
    return LeakJudge(hospital[1]["members"], ids, ["paid"])


@pytest.mark.parametrize("name", [k for k, v in LEAKS.items() if v], ids=str)
def test_rephrased_leak_is_blocked(session: Session, judge: LeakJudge, name: str) -> None:
    got = session.execute(LEAKS[name])
    assert not judge.leaks(got.text()), f"{name} leaked:\n{got.text()[:3000]}"
    assert {"blocked", "redacted"} & set(got.decisions()), got.text()[:3000]


def test_stdin_prompt_is_guarded(session: Session, judge: LeakJudge) -> None:
    msg_id = session.kc.execute("x = input(m.full_name.iloc[7])", allow_stdin=True)
    req = session.kc.get_stdin_msg(timeout=30)
    assert not judge.leaks(str(req["content"])), req["content"]
    assert req["metadata"]["bedside"]["decision"] == "blocked"
    session.kc.input("ok")
    got = session.request(lambda: msg_id)
    assert got.reply["content"]["status"] == "ok"


@pytest.mark.parametrize("name", list(UTILITY), ids=str)
def test_rephrased_utility_goes_through(session: Session, name: str) -> None:
    got = session.execute(UTILITY[name])
    assert "blocked" not in got.decisions(), f"{name}:\n{got.text()[:3000]}"
    assert got.reply["content"]["status"] == "ok", got.text()[:3000]
    assert got.of("execute_result")
