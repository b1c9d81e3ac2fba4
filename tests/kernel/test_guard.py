"""The guard's rules one by one, on a real kernel, judged by what the client receives."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.kernel._client import LeakJudge, Session, running

SETUP = 'import pandas as pd, numpy as np\ndf = hospital.load("patients")'


@pytest.fixture(scope="module")
def session(guarded: Session) -> Session:
    assert guarded.execute(SETUP).reply["content"]["status"] == "ok"
    return guarded


@pytest.fixture(scope="module")
def judge(hospital: Any) -> LeakJudge:
    return LeakJudge(hospital[1]["patients"], ["mrn", "name", "dob", "postcode", "phone"], [])


def _meta(got: Any, msg_type: str) -> dict[str, Any]:
    return got.of(msg_type)[0]["metadata"]["bedside"]


def test_catalog_shows_schema_not_values(session: Session, judge: LeakJudge) -> None:
    got = session.execute("hospital.tables()")
    text = got.text()
    assert "patients" in text and "los_days" in text and "members" in text
    assert not judge.leaks(text)
    assert "blocked" not in got.decisions()


def test_counts_are_rounded(session: Session) -> None:
    got = session.execute("df.groupby('ward').size()")
    assert _meta(got, "execute_result")["rule"] == "rounding"
    counts = [int(x) for x in re.findall(r"\s(\d+)\n", got.of("execute_result")[0]["content"]
                                          ["data"]["text/plain"] + "\n")]  # fmt: skip
    assert counts and all(c % 5 == 0 for c in counts)


def test_small_cells_are_suppressed_not_the_whole_table(session: Session) -> None:
    got = session.execute("df[df.age > 90].groupby('diagnosis').size()")
    meta = _meta(got, "execute_result")
    assert meta["decision"] == "redacted" and meta["rule"] == "threshold"
    assert "suppressed" in got.of("execute_result")[0]["content"]["data"]["text/plain"]


def test_extreme_alone_is_blocked(session: Session) -> None:
    got = session.execute("df.age.max()")
    assert _meta(got, "execute_result")["rule"] == "extremes"


def test_describe_hides_min_and_max(session: Session) -> None:
    got = session.execute("df.cost.describe()")
    meta = _meta(got, "execute_result")
    assert meta["decision"] == "redacted" and meta["rule"] == "extremes"
    text = got.of("execute_result")[0]["content"]["data"]["text/plain"]
    assert re.search(r"min\s+suppressed", text) and re.search(r"max\s+suppressed", text)
    assert re.search(r"mean\s+\d", text)


def test_differencing_across_cells(session: Session) -> None:
    first = session.execute("df.los_days.sum()")
    assert "blocked" not in first.decisions()
    second = session.execute("df[df.mrn != df.mrn.iloc[3]].los_days.sum()")
    assert _meta(second, "execute_result")["rule"] == "differencing"


def test_rare_attribute_rate_by_group_is_class_disclosure(session: Session) -> None:
    got = session.execute("df[df.age > 95].groupby('sex').hiv.mean()")
    meta = _meta(got, "execute_result")
    assert meta["decision"] == "blocked"
    assert set(meta["details"]["rules"]) & {"class-disclosure", "threshold"}


def test_error_keeps_type_code_and_column_names(session: Session, judge: LeakJudge) -> None:
    got = session.execute("df.loc[df.name == df.name.iloc[1], 'weight_kg']")
    err = got.of("error")[0]["content"]
    assert err["ename"] == "KeyError" and "weight_kg" in err["evalue"]
    assert not judge.leaks(got.text())
    got = session.execute("int(df.postcode.iloc[2])")
    err = got.of("error")[0]["content"]
    assert err["ename"] == "ValueError" and "<value>" in err["evalue"]
    assert any("int(df.postcode.iloc[2])" in line for line in err["traceback"])
    assert not judge.leaks(got.text())


def test_pager_and_load_payloads_are_scanned(session: Session, judge: LeakJudge, tmp_path: Any
                                             ) -> None:  # fmt: skip
    path = tmp_path / "rows.py"
    session.execute(f"df.head(3).to_csv({str(path)!r})")
    got = session.execute(f"%load {path}")
    assert not judge.leaks(got.text())
    got = session.execute("top = df.name.iloc[0]\n%page top")
    assert not judge.leaks(got.text())
    assert "blocked" in got.decisions()


def test_inspect_and_history_replies(session: Session, judge: LeakJudge) -> None:
    session.execute("secret = df.phone.iloc[5]")
    got = session.request(lambda: session.kc.inspect("secret", 6, detail_level=0))
    assert not judge.leaks(got.text()) and "blocked" in got.decisions()
    got = session.request(lambda: session.kc.history(hist_access_type="tail", n=50, output=True))
    assert not judge.leaks(got.text())


def test_history_is_the_sessions_own(
    session: Session, hospital: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A history_request answers with this session's cells only: IPython's default keeps every
    session's code in one sqlite file, which another researcher's kernel would read back."""
    marker = f"other_session_{uuid.uuid4().hex}"
    with running(tmp_path_factory.mktemp("other"), "bedside-other", hospital[0]) as other:
        assert other.execute(f"{marker} = 1").reply["content"]["status"] == "ok"
    mine = f"own_session_{uuid.uuid4().hex}"
    session.execute(f"{mine} = 1")
    got = session.request(lambda: session.kc.history(hist_access_type="tail", n=1000))
    text = got.text()
    assert mine in text, text[-2000:]
    assert marker not in text


def test_subprocess_writing_to_fd_1(session: Session, judge: LeakJudge, tmp_path: Any) -> None:
    path = tmp_path / "x.csv"
    got = session.execute(
        f"df.head(5).to_csv({str(path)!r})\n"
        f"import subprocess\nsubprocess.run(['cat', {str(path)!r}])"
    )
    assert not judge.leaks(got.text())
    assert "blocked" in got.decisions()


def test_raw_svg_is_refused(session: Session) -> None:
    got = session.execute(
        "from IPython.display import SVG, display\n"
        'display(SVG(\'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>\'))'
    )
    assert _meta(got, "display_data")["rule"] == "svg"


def test_small_histogram_bins_are_blocked(session: Session) -> None:
    got = session.execute(
        "import matplotlib.pyplot as plt\nplt.hist(df[df.age > 90].cost, bins=40); plt.show()"
    )
    assert _meta(got, "display_data")["rule"] == "threshold"


def test_denied_magics_and_shell(session: Session) -> None:
    for code in ("%debug", "%pdb on", "%xmode", "%%bash\necho hi", "x = !ls"):
        got = session.execute(code)
        assert "blocked" in got.decisions(), code


def test_unprotected_data_is_untouched(session: Session) -> None:
    got = session.execute("pd.DataFrame({'a': range(3)})")
    assert got.decisions() == []
    assert "0  0" in got.of("execute_result")[0]["content"]["data"]["text/plain"]


def test_differencing_of_group_aggregates(session: Session) -> None:
    first = session.execute("df.groupby('ward').cost.mean()")
    assert "blocked" not in first.decisions()
    second = session.execute("df[df.mrn != df.mrn.iloc[11]].groupby('ward').cost.mean()")
    meta = _meta(second, "execute_result")
    assert meta["decision"] == "redacted" and "differencing" in meta["details"]["rules"]
    text = second.of("execute_result")[0]["content"]["data"]["text/plain"]
    assert text.count("suppressed") == 1  # only the ward of the left-out patient
    third = session.execute("df[df.age > 50].groupby('ward').cost.mean()")
    assert "differencing" not in str(third.decisions()) and "blocked" not in third.decisions()


def test_comm_buffers_are_scanned(session: Session, judge: LeakJudge) -> None:
    got = session.execute(
        "from comm import create_comm\n"
        "c = create_comm(target_name='probe', data={'n': 1},"
        " buffers=[df.head(5).to_csv().encode()])"
    )
    opened = got.of("comm_open")
    assert opened and opened[0]["metadata"]["bedside"]["decision"] == "blocked"
    assert not opened[0].get("buffers")
    assert not judge.leaks(got.text())


def test_coded_column_in_row_order_is_row_level(session: Session) -> None:
    got = session.execute("df.diagnosis.iloc[100:140].tolist()")
    assert _meta(got, "execute_result")["rule"] == "row-level"
    got = session.execute("df.diagnosis.value_counts().sort_index()")
    assert "blocked" not in got.decisions()
