"""The sentry's side of what the extension relies on when websockets churn (real sentry, plain
kernel, no gateway): the same intent sent again gets the same answer and one header; an intent
whose researcher signature does not verify is refused; execute requests' salts reach the
researcher with their entries, so the researcher can open the code commitments."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from _sentry_support import Client, make_hospital, make_patients, start_sentry  # noqa: E402

from bedside.extension.mirror import SessionMirror  # noqa: E402
from bedside.ledger import DOMAIN_CODE, Signer, open_commitment  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def client(tmp_path):
    hospital = make_hospital(tmp_path / "hospital", frame=make_patients(50, seed=3))
    sentry = start_sentry(hospital, tmp_path / "run")
    client = Client.connect(sentry)
    yield client
    client.close()
    sentry.stop()


def signed_intent(tmp_path: Path, signer: Signer) -> dict:
    mirror = SessionMirror(
        kernel_id="k",
        directory=tmp_path / "r",
        signer=signer,
        intent={"purpose": "resend", "policy_id": "st-elsewhere", "budget": {"cells": 5}},
    )
    return mirror.intent_request()["content"]


def test_same_intent_same_answer_one_header_and_code_salts(client, tmp_path) -> None:
    content = signed_intent(tmp_path, Signer.generate("researcher"))
    first = client.request("bedside_intent_request", content)["content"]
    again = client.request("bedside_intent_request", content)["content"]
    assert first["status"] == "ok" and again == first
    assert first["header"]["entry"]["intent"] == content["intent"]  # exactly as signed
    assert first["header"]["entry"]["grant"]["declared"] is True
    other = {"intent": {**content["intent"], "purpose": "something else"}}
    refused = client.request("bedside_intent_request", other)["content"]
    assert refused["status"] == "error" and "already has a header" in refused["evalue"]
    # a cell: the execute request's entry rides with its salt, which opens the code
    client.execute("print(6 * 7)")
    items = [
        item
        for _, msg in client.received
        for item in msg["metadata"].get("bedside", {}).get("receipt", {}).get("entries", [])
        if item["entry"]["kind"] == "execute_request"
    ]
    assert len(items) == 1 and "salt" in items[0]
    open_commitment(
        DOMAIN_CODE, b"print(6 * 7)", base64.b64decode(items[0]["salt"]), items[0]["entry"]["code"]
    )


def test_intent_with_a_bad_researcher_signature_is_refused(tmp_path) -> None:
    from bedside.gateway._session import IntentRefused
    from bedside.gateway.sentry import _check_intent_signature

    signer = Signer.generate("researcher")
    content = signed_intent(tmp_path, signer)
    _check_intent_signature(content["intent"], signer.verifier)
    forged = {**content["intent"], "budget": {"cells": 4}}  # changed after signing
    with pytest.raises(IntentRefused, match="researcher_sig does not verify"):
        _check_intent_signature(forged, signer.verifier)


@pytest.mark.parametrize("asked", [2, None])
def test_the_receipt_version_follows_what_the_intent_asked(client, tmp_path, asked) -> None:
    """The real sentry: a researcher side that asks for version 2 gets receipts without a
    digest for the outputs whose own salted entry they carry (400 kB on the prepared path
    too, and the reply and status messages); one that does not ask keeps getting digests. Every
    receipt still binds the bytes received (`check_receipt` opens the commitment with them)."""
    from _sentry_support import check_receipt

    content = signed_intent(tmp_path, Signer.generate("researcher"))
    if asked is None:
        del content["receipts"]
    else:
        assert content["receipts"] == asked
    reply = client.request("bedside_intent_request", content)
    assert reply["content"]["status"] == "ok"
    key = reply["metadata"]["bedside"]["receipt"]["key"]
    # the intent reply is recorded after the header it carries: its own entry binds it too
    assert check_receipt("shell", reply, key)["v"] == (asked or 1)
    execute_reply, outputs = client.execute("print('x' * 400_000)")
    assert any(len(m["content"].get("text", "")) > 300_000 for m in outputs)
    for channel, msg in [*(("iopub", m) for m in outputs), ("shell", execute_reply)]:
        receipt = check_receipt(channel, msg, key)
        if asked == 2:
            assert receipt["v"] == 2 and "digest" not in receipt, msg["msg_type"]
        else:
            assert receipt["v"] == 1 and receipt["digest"].startswith("sha256:")
