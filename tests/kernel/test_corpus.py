"""The shared disclosure corpus, judged from the client's side of a real guarded kernel.

Every leak cell (except L38 and L39, which need the sentry and the sandbox) must reach the client
without any identifier value of the table (raw or decoded) or rows printed in order, on any
channel, and must show a notice. Every utility cell must run without a block notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kernel._client import LeakJudge, Session

CORPUS = Path("/work/shared/corpus")
if not CORPUS.is_dir():  # the corpus may also be vendored beside the tests
    CORPUS = Path(__file__).parent / "corpus"
EXCLUDED = {
    "L38": "needs the sentry (guard switched off in-process)",
    "L39": "needs the sandbox (network egress)",
}
IDENTIFIERS = ["mrn", "name", "dob", "postcode", "phone"]
NUMERIC = ["age", "los_days", "cost"]
SETUP = 'import pandas as pd, numpy as np\ndf = hospital.load("patients")'


def _cells(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((CORPUS / name).read_text())


LEAKS = [c for c in _cells("leaks.yaml") if c["id"] not in EXCLUDED]
UTILITY = _cells("utility.yaml")


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    r = guarded.execute(SETUP)
    assert r.reply["content"]["status"] == "ok", r.text()
    return guarded


@pytest.fixture(scope="module")
def judge(hospital: Any) -> LeakJudge:
    return LeakJudge(hospital[1]["patients"], IDENTIFIERS, NUMERIC)


def _run_leak(session: Session, cell: dict[str, Any]) -> Any:
    if cell["id"] == "L24":
        return session.execute("pass", user_expressions={"x": "df.mrn.head(5).tolist()"})
    if cell["id"] == "L25":
        session.execute("d = dict(zip(df.mrn, df.age))")
        return session.request(lambda: session.kc.complete("d['", 3))
    if cell["id"] == "L22":
        session.execute(cell["cell"])
        return session.request(lambda: session.kc.inspect("df", 2, detail_level=1))
    return session.execute(cell["cell"])


@pytest.mark.parametrize("cell", LEAKS, ids=[c["id"] for c in LEAKS])
def test_leak_is_blocked(session: Session, judge: LeakJudge, cell: dict[str, Any]) -> None:
    got = _run_leak(session, cell)
    leaks = judge.leaks(got.text())
    assert not leaks, f"{cell['id']} leaked {leaks}:\n{got.text()[:3000]}"
    assert {"blocked", "redacted"} & set(got.decisions()), (
        f"{cell['id']}: no notice reached the researcher:\n{got.text()[:3000]}"
    )


@pytest.mark.parametrize("cell", UTILITY, ids=[c["id"] for c in UTILITY])
def test_utility_goes_through(session: Session, cell: dict[str, Any]) -> None:
    got = session.execute(cell["cell"])
    assert "blocked" not in got.decisions(), f"{cell['id']} was blocked:\n{got.text()[:3000]}"
    status = got.reply["content"]["status"]
    if cell["id"] in ("U21", "U22"):
        err = got.of("error")[0]["content"]
        assert err["ename"] in ("NameError", "KeyError")
        assert ("dff" if cell["id"] == "U21" else "bmi_baseline") in err["evalue"]
    else:
        assert status == "ok", got.text()[:3000]
        assert got.of("execute_result") or got.of("stream") or got.of("display_data")


def test_whole_session_leaks_nothing(session: Session, judge: LeakJudge) -> None:
    """Late output (fd pipe, threads) is judged too: every message of the module's session."""
    for channel, msg in session.log:
        text = str(msg.get("content")) + str(msg.get("metadata"))
        assert not judge.leaks(text), (channel, msg["header"]["msg_type"], text[:2000])
