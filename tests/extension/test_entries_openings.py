"""What the sentry's ledger sends again when the researcher asks for entries it missed: the
openings its receipts gave out (code, outputs let out), never a blocked output's."""

from __future__ import annotations

import base64
from pathlib import Path

from bedside.gateway._receipts import HospitalLedger, committed_bytes
from bedside.ledger import Signer
from bedside.policy.decision import Decision, Layer


def _ledger(tmp_path: Path) -> HospitalLedger:
    ledger = HospitalLedger(
        tmp_path / "session.ledger", session_id="s1", origin="test/s1", signer=Signer.generate("h")
    )
    ledger.header(
        intent={},
        policy_id="p",
        policy_digest="sha256:" + "0" * 64,
        environment_digest="sha256:" + "1" * 64,
        researcher_key=None,
    )
    return ledger


def _output(ledger: HospitalLedger, text: str, decision: Decision) -> int:
    content = {"name": "stdout", "text": text}
    return ledger.output(
        msg_id=f"m{ledger.size}",
        parent="c1",
        channel="iopub",
        msg_type="stream",
        committed=committed_bytes("iopub", "stream", content, []),
        decision=decision,
    )


def test_blocked_openings_never_go_out_again(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    code = ledger.execute_request("c1", "print(secret)", None, None)
    shown = _output(ledger, "an aggregate\n", Decision.release(layer=Layer.SENTRY))
    blocked = _output(
        ledger, "MRN00001234 Jane Doe\n", Decision.block("row-level", "rows", layer=Layer.SENTRY)
    )
    opened, end = ledger.public_openings(0, ledger.size, 4 * 2**20)
    assert end == ledger.size and set(opened) == {code, shown}
    assert base64.b64decode(opened[code][1]) == b"print(secret)"
    assert b"an aggregate" in base64.b64decode(opened[shown][1])
    sent = b"".join(base64.b64decode(c) for _, c in opened.values())
    assert b"MRN00001234" not in sent and blocked not in opened
    ledger.close()


def test_a_reply_stops_at_the_content_budget(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    first = _output(ledger, "a" * 3_000_000, Decision.release(layer=Layer.SENTRY))
    second = _output(ledger, "b" * 3_000_000, Decision.release(layer=Layer.SENTRY))
    opened, end = ledger.public_openings(0, ledger.size, 4 * 2**20)
    assert set(opened) == {first} and end == second  # the rest in the next reply
    opened, end = ledger.public_openings(end, ledger.size, 4 * 2**20)
    assert set(opened) == {second} and end == ledger.size
    ledger.close()
