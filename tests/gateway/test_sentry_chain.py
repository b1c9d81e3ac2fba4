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
        for msg in run_leak_cell(client, case):
            leaked = oracle.leaks(msg)
            assert not leaked, f"{case['id']}: {msg['msg_type']} leaked {leaked}"
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
