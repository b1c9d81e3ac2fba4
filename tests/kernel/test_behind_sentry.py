"""Behind the sentry, the in-kernel guard leaves long texts' identifier scan to the sentry.

The sentry launches its kernel with `BEDSIDE_BEHIND_SENTRY=1` (`gateway/_early.kernel_env`) and
runs `bedside.policy.scan_text` on every byte it lets out, so the kernel does not run that scan a
second time on a text of `SENTRY_SCAN_MIN_CHARS` or more; it says so in its claim (rule
`identifier-scan-by-sentry`, recorded by the sentry in the ledger) and still runs what only it
can: rows and codes in record order, extractions, extremes, and the junction of two stream
chunks. Short texts are scanned in the kernel as before. That the sentry then blocks a long
output holding an identifier is tested through the real chain in
tests/integration/test_gateway.py::test_long_output_with_one_identifier_is_blocked_by_the_sentry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bedside.kernel import BEHIND_SENTRY_ENV
from bedside.kernel._provenance import ProvenanceTracker
from bedside.kernel._scan import TextScanner
from bedside.kernel.guard import SENTRY_SCAN_MIN_CHARS, SENTRY_SCAN_RULE, OutputGuard
from bedside.policy import load_policy
from tests.kernel._client import Reply, Session, running

FILL = "cohort analysis survival model baseline outcome ward median interval "
LONG = SENTRY_SCAN_MIN_CHARS // len(FILL) + 10  # repeats of FILL that make a long text
SETUP = "import pandas as pd\ndf = hospital.load('patients')\nFILL = " + repr(FILL)


@pytest.fixture(scope="module")
def behind(hospital: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A guarded kernel started as the sentry starts it (the sentry itself is not running)."""
    policy, _ = hospital
    root = tmp_path_factory.mktemp("behind")
    with running(root, "bedside-behind", policy, env={BEHIND_SENTRY_ENV: "1"}) as session:
        session.execute(SETUP)
        yield session


def _claims(reply: Reply, msg_type: str = "stream") -> list[dict[str, Any]]:
    return [m["metadata"].get("bedside") or {} for m in reply.of(msg_type)]


def _stream(reply: Reply) -> str:
    return "".join(m["content"].get("text", "") for m in reply.of("stream"))


def test_long_text_leaves_the_identifier_scan_to_the_sentry(behind: Session, hospital: Any) -> None:
    _, tables = hospital
    name = tables["patients"].name.iloc[2500]
    got = behind.execute(f"print(FILL * {LONG} + df.name.iloc[2500] + ' ' + FILL * 10)")
    # The kernel released it, saying whose scan it was; the sentry blocks it (integration test).
    assert name in _stream(got)
    claims = _claims(got)
    assert claims and all(c.get("decision") == "released" for c in claims)
    assert any(c.get("rule") == SENTRY_SCAN_RULE for c in claims)


def test_short_text_is_still_scanned_in_the_kernel(behind: Session, hospital: Any) -> None:
    _, tables = hospital
    mrn = tables["patients"].mrn.iloc[2500]
    got = behind.execute("print(FILL * 10 + df.mrn.iloc[2500])")
    assert mrn not in got.text()
    assert [c.get("rule") for c in _claims(got)] == ["identifier"]


def test_long_text_of_rows_in_record_order_is_blocked_in_the_kernel(behind: Session) -> None:
    # Costs in record order: the kernel's row structure, which the sentry does not have.
    got = behind.execute(f"print(FILL * {LONG} + ' '.join(map(str, df.cost.to_numpy()[:300])))")
    claims = _claims(got)
    assert claims and claims[0].get("decision") == "blocked"
    assert claims[0].get("rule") == "row-level"


def test_long_text_of_coded_values_in_record_order_is_blocked_in_the_kernel(
    behind: Session,
) -> None:
    got = behind.execute(f"print(FILL * {LONG} + ' '.join(df.sex.to_numpy()[:400]))")
    claims = _claims(got)
    assert claims and claims[0].get("decision") == "blocked"
    assert claims[0].get("rule") == "row-level"


def test_long_text_with_an_extreme_is_blocked_in_the_kernel(behind: Session) -> None:
    got = behind.execute(f"m = df.cost.max()\nprint(FILL * {LONG} + str(m))")
    claims = _claims(got)
    assert claims and claims[0].get("decision") == "blocked"
    assert claims[0].get("rule") == "extremes"


# -- the guard in this process (no pandas hooks needed for text) ----------------------------------


def _guard(hospital: Any, behind_sentry: bool) -> OutputGuard:
    policy_path, tables = hospital
    policy = load_policy(Path(policy_path))
    scanner = TextScanner(policy.enabled_phi_patterns)
    for name, dataset in policy.datasets.items():
        scanner.add_table(tables[name], list(dataset.identifiers))
    return OutputGuard(
        policy, ProvenanceTracker(policy.disclosure), scanner, behind_sentry=behind_sentry
    )


def _stream_msg(text: str) -> dict[str, Any]:
    return {
        "header": {"msg_type": "stream"},
        "content": {"name": "stdout", "text": text},
        "metadata": {},
    }


@pytest.mark.parametrize("behind_sentry", [False, True])
def test_the_delegation_is_only_behind_the_sentry(hospital: Any, behind_sentry: bool) -> None:
    _, tables = hospital
    guard = _guard(hospital, behind_sentry)
    guard.begin_cell("print(text)", "m1")
    text = FILL * LONG + tables["patients"].name.iloc[17] + "\n"
    out = guard.check(_stream_msg(text), "iopub")
    assert out is not None
    said = out["metadata"]["bedside"]
    if behind_sentry:
        assert said["decision"] == "released" and said["rule"] == SENTRY_SCAN_RULE
        assert len(text) >= SENTRY_SCAN_MIN_CHARS
        # No digit in the claim: the sentry scans it with the text, and one digit in a text of
        # words makes its PHI patterns read the whole megabyte (about 5 ms more per output).
        assert not any(ch.isdigit() for ch in json.dumps(said))
    else:
        assert said["decision"] == "blocked" and said["rule"] == "identifier"


def test_dates_of_birth_as_bare_digit_runs_are_still_scanned_in_the_kernel(hospital: Any) -> None:
    # The sentry reads a date-of-birth match made of a bare digit run as a number; the kernel
    # blocks a listing of them, so a long text holding eight digits in a row is scanned here.
    _, tables = hospital
    dobs = " ".join(d.replace("-", "") for d in tables["patients"].dob.iloc[:8])
    guard = _guard(hospital, behind_sentry=True)
    guard.begin_cell("print(text)", "m1")
    out = guard.check(_stream_msg(FILL * LONG + dobs + "\n"), "iopub")
    assert out is not None
    said = out["metadata"]["bedside"]
    assert said["decision"] == "blocked" and said["rule"] == "identifier"


def test_a_value_split_between_two_stream_chunks_is_still_found(hospital: Any) -> None:
    _, tables = hospital
    mrn = tables["patients"].mrn.iloc[42]
    guard = _guard(hospital, behind_sentry=True)
    guard.begin_cell("print(text)", "m1")
    first = guard.check(_stream_msg(FILL * 2 + mrn[:6]), "iopub")
    assert first is not None and "bedside" not in first["metadata"]  # no value in it alone
    second = guard.check(_stream_msg(mrn[6:] + " " + FILL * LONG), "iopub")
    assert second is not None
    assert second["metadata"]["bedside"]["rule"] == "identifier"
    assert mrn[6:] not in second["content"]["text"]


def test_the_sentry_launches_its_kernel_behind_itself(tmp_path: Path) -> None:
    from bedside.gateway import _early

    env = _early.kernel_env(tmp_path / "scratch", tmp_path / "outbox")
    assert env[BEHIND_SENTRY_ENV] == "1"


def test_the_threshold_is_above_an_ordinary_output() -> None:
    # a describe() of a wide table or a long traceback stays well under it
    wide = pd.DataFrame({f"c{i}": range(50) for i in range(40)}).describe().to_string()
    assert len(wide) < SENTRY_SCAN_MIN_CHARS // 4
