"""Receipt version 2 from the browser's side: a receipt without `digest` is accepted only when
its own salted output entry binds the message's bytes (docs/dev/contracts.md, "the receipt").

Every receipt below is signed by the custodian, so the signature never decides: what decides is
whether something in the receipt binds the content that reached us. Where a receipt is refused
for binding nothing, the same receipt with its digest put back is shown verified, so a check
loosened to accept it would fail the test.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bedside.extension.connection import Parsed
from bedside.extension.mirror import RECEIPTS, SessionMirror, new_message
from bedside.ledger import DOMAIN_OUTPUT, Signer, canonical_json, commit, entries, verify_ledger

INTENT = {"purpose": "t", "cohort": "all", "model_job": "none", "policy_id": "demo"}
BIG = "x" * 300_000 + "\n"  # the deferred path (PREPARE_MIN_BYTES)


def _session(tmp_path: Path, standin: Any) -> tuple[Any, SessionMirror, list[dict[str, Any]]]:
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k1", directory=tmp_path / "r", signer=Signer.generate("r"), intent=INTENT
    )
    sent: list[dict[str, Any]] = []
    mirror.send = sent.append
    assert mirror.observe_reply(hospital.intent(mirror.intent_request())).verified
    assert hospital.receipts == 2  # the extension asked for version 2 with its intent
    return hospital, mirror, sent


def _cell(mirror: SessionMirror, hospital: Any, text: str = "2\n") -> list[dict[str, Any]]:
    request = new_message("execute_request", {"code": "print(2)"}, session="b")
    mirror.observe_request(request)
    return hospital.execute(request, text)


def _receipt(msg: dict[str, Any]) -> dict[str, Any]:
    receipt: dict[str, Any] = msg["metadata"]["bedside"]["receipt"]
    return receipt


def _resign(hospital: Any, msg: dict[str, Any]) -> None:
    receipt = _receipt(msg)
    body = {k: v for k, v in receipt.items() if k != "sig"}
    receipt["sig"] = base64.b64encode(hospital.signer.sign(canonical_json(body))).decode()


def _with_digest(hospital: Any, msg: dict[str, Any]) -> dict[str, Any]:
    """`msg` with the version 1 digest of its bytes put back in its receipt, signed."""
    msg = copy.deepcopy(msg)
    committed = entries.output_committed_bytes(
        channel=msg["channel"], msg_type=msg["header"]["msg_type"], content=msg["content"]
    )
    _receipt(msg)["digest"] = "sha256:" + hashlib.sha256(committed).hexdigest()
    _resign(hospital, msg)
    return msg


def _deliver(mirror: SessionMirror, msg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """As the connection does: parse, check, write out for the browser, then settle."""
    parsed = Parsed(json.dumps(msg))
    verdict = mirror.observe_reply(parsed.msg)
    seen = json.loads(parsed.dumps())
    mirror.settle()
    return verdict, seen


def _refused(mirror: SessionMirror, msg: dict[str, Any], reason: str) -> None:
    size = mirror.ledger.size if mirror.ledger else 0
    unverified = mirror.unverified
    verdict, seen = _deliver(mirror, msg)
    assert not verdict.verified
    assert seen["metadata"]["bedside"]["verified"] is False
    assert reason in seen["metadata"]["bedside"]["unverified_reason"]
    assert mirror.unverified == unverified + 1
    logged = [json.loads(line) for line in mirror.unverified_log.read_text().splitlines()]
    assert logged[-1]["msg_id"] == msg["header"]["msg_id"]
    assert mirror.ledger is not None and mirror.ledger.size == size  # nothing of it written


def test_the_intent_asks_for_version_2_outside_what_is_signed(tmp_path: Path, standin) -> None:
    hospital, mirror, _ = _session(tmp_path, standin)
    request = mirror.intent_request()
    assert request["content"]["receipts"] == RECEIPTS == 2
    assert "receipts" not in request["content"]["intent"]
    assert mirror.ledger is not None
    assert mirror.ledger.entry(0)["intent"] == request["content"]["intent"]


@pytest.mark.parametrize("text", ["2\n", BIG])
def test_a_cell_of_version_2_receipts_verifies_and_mirrors(
    tmp_path: Path, standin, text: str
) -> None:
    """Fails on main: its extension refuses every receipt without a digest."""
    hospital, mirror, sent = _session(tmp_path, standin)
    for msg in _cell(mirror, hospital, text):
        receipt = _receipt(msg)
        assert receipt["v"] == 2 and "digest" not in receipt
        verdict, seen = _deliver(mirror, msg)
        assert verdict.verified, verdict.reason
        assert seen["metadata"]["bedside"]["verified"] is True
    for cosign in sent:
        assert mirror.observe_reply(hospital.cosign(cosign)).verified
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.kinds["output"] == 4
    assert mirror.ledger_path.read_bytes() == hospital.ledger.path.read_bytes()


@pytest.mark.parametrize("text", ["2\n", BIG])
def test_content_changed_after_signing_is_refused(tmp_path: Path, standin, text: str) -> None:
    hospital, mirror, _ = _session(tmp_path, standin)
    busy, stream, _, _ = _cell(mirror, hospital, text)
    assert _deliver(mirror, busy)[0].verified
    stream["content"]["text"] = text.replace("2" if text == "2\n" else "x", "3", 1)
    _refused(mirror, stream, "does not match the bedside/output/v1 commitment")


def test_an_own_entry_committing_to_other_bytes_is_refused(tmp_path: Path, standin) -> None:
    """The hospital signs a receipt whose entry for this message commits to other bytes than
    the message carries: no digest to fall back on, the commitment does not open."""
    hospital, mirror, _ = _session(tmp_path, standin)
    busy, stream, _, _ = _cell(mirror, hospital)
    assert _deliver(mirror, busy)[0].verified
    (item,) = _receipt(stream)["entries"]
    other = entries.output_committed_bytes(
        channel="iopub", msg_type="stream", content={"name": "stdout", "text": "3\n"}
    )
    digest, salt = commit(DOMAIN_OUTPUT, other)
    item["entry"] = {**item["entry"], "content": digest}
    item["salt"] = base64.b64encode(salt).decode()
    _resign(hospital, stream)
    _refused(mirror, stream, "does not match the bedside/output/v1 commitment")


def test_another_messages_salted_entry_does_not_bind(tmp_path: Path, standin) -> None:
    """A receipt for the stream that carries the busy status's salted entry instead of its own
    (both released in one cell): that salt opens another message's commitment, not this one.
    (Were the msg_id not compared here, `_opening` would still refuse the other's salt.)"""
    hospital, mirror, _ = _session(tmp_path, standin)
    busy, stream, _, _ = _cell(mirror, hospital)
    theirs = [i for i in _receipt(busy)["entries"] if i["entry"]["kind"] == "output"]
    _receipt(stream)["entries"] = theirs
    _resign(hospital, stream)
    _refused(mirror, stream, "binds no content")


@pytest.mark.parametrize("shape", ["no-entries", "unsalted-own", "salted-request-only"])
def test_a_version_2_receipt_without_its_salted_output_entry_is_refused(
    tmp_path: Path, standin, shape: str
) -> None:
    """Without a digest and without this message's salted output entry nothing binds the
    content: refused, whatever the content is. The same receipt with its digest verifies."""
    hospital, mirror, _ = _session(tmp_path, standin)
    busy, stream, _, _ = _cell(mirror, hospital)
    receipt = _receipt(busy)
    request_item, own = receipt["entries"]
    assert request_item["entry"]["kind"] == "execute_request" and "salt" in request_item
    if shape == "no-entries":
        # the entries were sent on another message, as for a reply routed elsewhere
        receipt["entries"] = []
        receipt["size"] -= 2
        receipt["root"] = hospital.ledger.root_at(receipt["size"]).hex()
    elif shape == "unsalted-own":
        del own["salt"]  # as a blocked output's entry: the opening stays at the hospital
    else:
        receipt["entries"] = [request_item]
        receipt["size"] -= 1
        receipt["root"] = hospital.ledger.root_at(receipt["size"]).hex()
    _resign(hospital, busy)
    _refused(mirror, busy, "binds no content")
    # the control: with its digest back, the very same receipt is shown verified (the refusal
    # above wrote and staged nothing of it)
    verdict, seen = _deliver(mirror, _with_digest(hospital, busy))
    assert verdict.verified, verdict.reason
    assert seen["metadata"]["bedside"]["verified"] is True


@pytest.mark.parametrize("version", [1, 3, "2", None])
def test_no_digest_outside_version_2_and_unknown_versions_are_refused(
    tmp_path: Path, standin, version: Any
) -> None:
    hospital, mirror, _ = _session(tmp_path, standin)
    busy, _, _, _ = _cell(mirror, hospital)
    receipt = _receipt(busy)
    if version is None:
        del receipt["v"]
    else:
        receipt["v"] = version
    _resign(hospital, busy)
    reason = "binds no content" if version == 1 else "receipt version"
    _refused(mirror, busy, reason)


def test_an_extension_that_does_not_ask_gets_version_1(tmp_path: Path, standin) -> None:
    """A researcher side of before version 2 sends no `receipts`: it keeps getting digests."""
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k1", directory=tmp_path / "r", signer=Signer.generate("r"), intent=INTENT
    )
    request = mirror.intent_request()
    del request["content"]["receipts"]
    assert mirror.observe_reply(hospital.intent(request)).verified
    for msg in _cell(mirror, hospital):
        assert _receipt(msg)["v"] == 1 and _receipt(msg)["digest"].startswith("sha256:")
        assert _deliver(mirror, msg)[0].verified
    mirror.close()
