"""The production chain from the attacker's side: sentry → bubblewrap sandbox → guarded kernel,
driven by jupyter_client. The whole leak corpus, including L37 (raw session send) and L38 (code
that switches the in-kernel guard off), leaks no identifier value on any channel; the utility
corpus is not blocked by the sentry (the kernel's own rounding and suppression still apply)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    IDENTIFIERS,
    Client,
    LeakOracle,
    corpus,
    make_hospital,
    make_patients,
    notices,
    run_leak_cell,
    start_sentry,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(400),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: `make system`"),
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    frame = make_patients(5000, seed=13)
    root = tmp_path_factory.mktemp("chain")
    hospital = make_hospital(root / "hospital", frame=frame)
    sentry = start_sentry(hospital, root / "run", sandbox=True, kernel="guarded")
    client = None
    try:
        client = Client.connect(sentry)
        reply, _ = client.execute(
            'import pandas as pd, numpy as np\ndf = hospital.load("patients")'
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        yield sentry, client, LeakOracle(frame, IDENTIFIERS)
    finally:
        if client is not None:
            client.close()
        sentry.stop()


def test_leak_corpus_through_the_chain_leaks_nothing(chain):
    sentry, client, oracle = chain
    for case in corpus("leaks.yaml"):
        leaked = oracle.leaks_shown(run_leak_cell(client, case))
        assert not leaked, f"{case['id']}: leaked {leaked}"
    assert "sandbox on" in sentry.log()


def test_utility_corpus_is_not_blocked_by_the_sentry(chain):
    _, client, oracle = chain
    for case in corpus("utility.yaml"):
        _, outputs = client.execute(case["cell"], timeout=180)
        by_sentry = [
            n for n in notices(outputs) if n["layer"] == "sentry" and n["decision"] == "blocked"
        ]
        assert not by_sentry, f"{case['id']}: {by_sentry}"
        for msg in outputs:
            assert not oracle.leaks(msg)


def test_leak_long_output_with_one_identifier_is_blocked_by_the_sentry(chain):
    """Behind the sentry the guarded kernel leaves the identifier scan of a long text to the
    sentry (kernel/guard.py, SENTRY_SCAN_MIN_CHARS): a megabyte of words with one patient's name
    in its middle reaches the client as the sentry's notice, never the value, and the
    hospital ledger records the kernel's claim (whose scan it was) beside the sentry's block."""
    from bedside.kernel.guard import SENTRY_SCAN_RULE
    from bedside.ledger.verify import iter_entries

    sentry, client, oracle = chain
    fill = "cohort analysis survival model baseline outcome ward median interval "
    half = 480_000 // len(fill)  # under the policy's 1,000,000-byte output limit, so the scan
    code = f"F = {fill!r}\nprint(F * {half} + df.name.iloc[2500] + ' ' + F * {half})"
    _, outputs = client.execute(code, timeout=180)
    streams = [m for m in outputs if m["msg_type"] == "stream"]
    assert streams
    for msg in outputs:
        assert not oracle.leaks(msg), oracle.leaks(msg)
    said = [m["metadata"]["bedside"] for m in streams]
    assert [(s["decision"], s["layer"], s["rule"]) for s in said] == [
        ("blocked", "sentry", "identifier")
    ]
    ids = {m["header"]["msg_id"] for m in streams}
    (entry,) = [
        e for _, e in iter_entries(sentry.ledger_path())
        if e["kind"] == "output" and e["msg_id"] in ids
    ]  # fmt: skip
    assert entry["sentry_decision"] == "blocked" and entry["layer"] == "sentry"
    assert entry["kernel_decision"] == "released" and entry["kernel_rule"] == SENTRY_SCAN_RULE
