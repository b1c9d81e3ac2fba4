"""The researcher's ledger mirror against a hospital stand-in that speaks the receipt protocol."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bedside.extension import mirror as mirror_module
from bedside.extension import releases
from bedside.extension.mirror import (
    ACTIVE,
    REFUSED,
    UNMONITORED,
    SessionMirror,
    code_digest,
    new_message,
)
from bedside.ledger import Signer, canonical_json, open_checkpoint, verify_ledger

INTENT = {"purpose": "test", "cohort": "all", "model_job": "none", "policy_id": "demo"}


@pytest.fixture
def pair(tmp_path: Path, standin) -> tuple[SessionMirror, Any, list[dict[str, Any]]]:
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k1",
        directory=tmp_path / "researcher",
        signer=Signer.generate("researcher"),
        intent=dict(INTENT),
    )
    sent: list[dict[str, Any]] = []
    mirror.send = sent.append
    reply = hospital.intent(mirror.intent_request())
    verdict = mirror.observe_reply(reply)
    assert verdict.verified and verdict.consumed, verdict.reason
    return mirror, hospital, sent


def _execute(mirror: SessionMirror, code: str) -> dict[str, Any]:
    msg = new_message("execute_request", {"code": code}, session="browser")
    mirror.observe_request(msg)
    return msg


def _run_cell(mirror, hospital, sent, code="print(2)", text="2\n"):
    request = _execute(mirror, code)
    replies = hospital.execute(request, text)
    verdicts = [mirror.observe_reply(m) for m in replies]
    for cosign in sent:
        mirror.observe_reply(hospital.cosign(cosign))
    sent.clear()
    return request, replies, verdicts


def test_intent_pins_custodian_and_writes_header(pair) -> None:
    mirror, hospital, _ = pair
    assert mirror.state == ACTIVE
    assert mirror.custodian is not None and mirror.custodian.vkey == hospital.signer.verifier_key
    assert mirror.ledger is not None and mirror.ledger.size == 1
    assert mirror.ledger.entry(0)["identities"]["researcher"] == mirror.signer.verifier_key


def test_execute_request_carries_researcher_signature(pair) -> None:
    mirror, _, _ = pair
    msg = _execute(mirror, "1 + 1")
    meta = msg["metadata"]["bedside"]
    body = canonical_json({"msg_id": msg["header"]["msg_id"], "code_digest": code_digest("1 + 1")})
    mirror.signer.verifier.verify(body, base64.b64decode(meta["researcher_sig"]))


def test_cell_verified_mirrored_and_cosigned(pair, tmp_path: Path) -> None:
    mirror, hospital, sent = pair
    request, replies, verdicts = _run_cell(mirror, hospital, sent)
    assert all(v.verified for v in verdicts), [v.reason for v in verdicts]
    assert all(m["metadata"]["bedside"]["verified"] is True for m in replies)
    # one entry per request and per output message, plus the header and the checkpoint
    kinds = [mirror.ledger.entry(i)["kind"] for i in range(mirror.ledger.size)]
    assert kinds == ["header", "execute_request"] + ["output"] * 4 + ["checkpoint"]
    assert mirror.ledger.root() == hospital.ledger.root()
    assert mirror.ledger.size == hospital.ledger.size
    _, names = open_checkpoint(
        mirror.last_checkpoint, [hospital.signer.verifier, mirror.signer.verifier]
    )
    assert len(names) == 2
    mirror.close()
    hospital.ledger.flush()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    verify_ledger(hospital.ledger.path, keys)


def test_cells_back_to_back_share_one_cosign(pair, tmp_path: Path) -> None:
    """With a cosign delay (the server's), each cell's checkpoint is still checked on arrival,
    but only the newest is cosigned when the delay ends: one round trip for a burst of cells."""
    mirror, hospital, sent = pair
    timers: list[tuple[float, Any]] = []
    mirror.schedule = lambda delay, callback: timers.append((delay, callback))
    mirror.cosign_delay = 0.5
    for n in range(3):
        _, replies, verdicts = _run_cell(mirror, hospital, sent, f"print({n})", f"{n}\n")
        assert all(v.verified for v in verdicts), [v.reason for v in verdicts]
    # nothing cosigned yet, one timer for the burst, and the copy is not settled until then
    assert not sent and mirror.last_checkpoint is None and not mirror.settled
    ((delay, fire),) = timers
    assert delay == 0.5
    fire()
    (request,) = sent
    sent.clear()
    assert mirror.settled
    assert mirror.observe_reply(hospital.cosign(request)).verified
    checkpoint, names = open_checkpoint(
        mirror.last_checkpoint, [hospital.signer.verifier, mirror.signer.verifier]
    )
    assert len(names) == 2 and checkpoint.size == mirror.ledger.size - 1  # the newest cell's
    kinds = [mirror.ledger.entry(i)["kind"] for i in range(mirror.ledger.size)]
    assert kinds.count("checkpoint") == 1 and kinds[-1] == "checkpoint"
    assert mirror.ledger.root() == hospital.ledger.root()
    # a checkpoint that does not match our copy makes its message unverified on arrival
    # and is never cosigned
    request = _execute(mirror, "print(9)")
    *rest, idle = hospital.execute(request, "9\n")
    for msg in rest:
        assert mirror.observe_reply(msg).verified
    mirror.ledger.append({"kind": "interrupted", "reason": "a copy that drifted"})
    assert not mirror.observe_reply(idle).verified
    mirror.cosign_due()
    assert not sent
    # a note's own custodian signature is checked before it is cosigned
    note = idle["metadata"]["bedside"]["receipt"]["checkpoint"]
    forged = "AAAA" if note[-20:-16] != "AAAA" else "BBBB"
    mirror._due = note[:-20] + forged + note[-16:]  # the signature's base64, altered
    unverified = mirror.unverified
    mirror.cosign_due()
    assert not sent and mirror.unverified == unverified + 1
    mirror.close()
    hospital.ledger.flush()


def test_seal_takes_the_due_cosign_first(pair) -> None:
    """`cosign_due` (the seal handler calls it) sends a waiting cosign at once; after the seal
    a note still waiting is dropped (only the note over the seal is cosigned then)."""
    mirror, hospital, sent = pair
    timers: list[Any] = []
    mirror.schedule = lambda delay, callback: timers.append(callback)
    mirror.cosign_delay = 0.5
    _run_cell(mirror, hospital, sent)
    assert not sent and not mirror.settled
    mirror.cosign_due()
    (request,) = sent
    sent.clear()
    assert mirror.observe_reply(hospital.cosign(request)).verified
    timers.pop()()  # the timer finds nothing left to do
    assert not sent
    _run_cell(mirror, hospital, sent, "print(3)", "3\n")
    seal = mirror.control_request("bedside_seal_request", {"reason": "researcher"})
    assert mirror.observe_reply(hospital.seal(seal)).verified
    assert mirror.state == "sealed"
    mirror.cosign_due()
    # what was sent after the seal is at most the cosign of the note over the seal
    for msg in sent:
        assert msg["header"]["msg_type"] == "bedside_cosign_request"
        note = msg["content"]["checkpoint"]
        assert open_checkpoint(note, [hospital.signer.verifier])[0].size == mirror.ledger.size


@pytest.mark.parametrize("receipts", [1, 2])
def test_tampered_output_is_unverified_and_logged(pair, receipts: int) -> None:
    """Content changed after the custodian signed it: in version 1 the digest catches it, in
    version 2 (no digest) the output's own commitment does."""
    mirror, hospital, sent = pair
    hospital.receipts = receipts
    request = _execute(mirror, "print(2)")
    busy, stream, reply, idle = hospital.execute(request, "2\n")
    assert mirror.observe_reply(busy).verified
    stream["content"]["text"] = "something else\n"
    verdict = mirror.observe_reply(stream)
    assert not verdict.verified
    assert stream["metadata"]["bedside"]["verified"] is False
    assert ("digest" if receipts == 1 else "commitment") in verdict.reason
    lines = mirror.unverified_log.read_text().splitlines()
    assert json.loads(lines[-1])["msg_id"] == stream["header"]["msg_id"]
    assert mirror.status()["unverified_messages"] == 1


def test_message_without_receipt_is_unverified(pair) -> None:
    mirror, _, _ = pair
    msg = new_message("stream", {"name": "stdout", "text": "x"}, session="k")
    msg["channel"] = "iopub"
    verdict = mirror.observe_reply(msg)
    assert not verdict.verified and "no bedside receipt" in verdict.reason


def test_receipt_from_another_key_is_unverified(pair, tmp_path: Path, standin) -> None:
    mirror, hospital, _ = pair
    (tmp_path / "other").mkdir()
    impostor = standin(tmp_path / "other", signer=Signer.generate("hospital"))
    msg = impostor.message("iopub", "status", {"execution_state": "idle"}, {}, record=False)
    verdict = mirror.observe_reply(msg)
    assert not verdict.verified and "not the custodian" in verdict.reason


def test_refused_intent_is_reported(tmp_path: Path, standin) -> None:
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k2",
        directory=tmp_path / "r",
        signer=Signer.generate("researcher"),
        intent={"purpose": "x", "policy_id": "nope"},
    )
    reply = hospital.intent(mirror.intent_request(), refuse="unknown policy id 'nope'")
    mirror.observe_reply(reply)
    assert mirror.state == REFUSED
    assert "unknown policy id" in mirror.reason
    assert json.loads((mirror.directory / "status.json").read_text())["state"] == REFUSED


def test_late_intent_answer_still_activates_the_session(tmp_path: Path, standin) -> None:
    """A kernel slow to start on a loaded machine answers after Bedside.intent_timeout: the
    session ran unmonitored meanwhile, and the answer, when it comes, makes it active."""
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k3",
        directory=tmp_path / "r",
        signer=Signer.generate("researcher"),
        intent=dict(INTENT),
    )
    request = mirror.intent_request()
    mirror.mark_unmonitored("no answer within 30 s", waiting=True)
    assert mirror.state == UNMONITORED and mirror.awaiting_intent
    verdict = mirror.observe_reply(hospital.intent(request))
    assert verdict.verified, verdict.reason
    assert mirror.state == ACTIVE and mirror.reason == "" and not mirror.awaiting_intent
    assert mirror.ledger is not None and mirror.ledger.size == 1
    # given up on for another reason (nothing to wait for), a stray answer changes nothing
    other = SessionMirror(
        kernel_id="k4",
        directory=tmp_path / "o",
        signer=Signer.generate("researcher"),
        intent=dict(INTENT),
    )
    second = tmp_path / "second"
    second.mkdir()
    request = other.intent_request()
    other.mark_unmonitored("no intent")
    other.observe_reply(standin(second).intent(request))
    assert other.state == UNMONITORED


def test_receipts_out_of_order_are_staged(pair) -> None:
    """Iopub and shell take different sockets through the gateway: a reply can overtake the
    outputs written before it. The mirror stages entries and checks heads when it reaches them."""
    mirror, hospital, sent = pair
    request = _execute(mirror, "print(2)")
    busy, stream, reply, idle = hospital.execute(request, "2\n")
    for msg in (reply, busy, idle, stream):
        verdict = mirror.observe_reply(msg)
        assert verdict.verified, verdict.reason
    assert mirror.status()["entries_in_flight"] == 0
    for cosign in sent:
        assert mirror.observe_reply(hospital.cosign(cosign)).verified
    assert mirror.ledger.root() == hospital.ledger.root()


def test_reply_that_overtakes_the_request_entry_keeps_its_code_opening(pair) -> None:
    """The cell's reply (shell) overtakes the output (iopub) whose receipt carries the cell's
    execute request entry: the code and signature the mirror keeps for that entry must outlive
    the reply, or the entry is written without its opening and its signature unchecked (what
    CI saw in test_dropped_websocket_then_seal_without_a_browser: "1 released entries have
    no opening", the entry being a cell's execute request)."""
    mirror, hospital, sent = pair
    request = _execute(mirror, "print(2)")
    busy, stream, reply, idle = hospital.execute(request, "2\n")
    for msg in (reply, busy, stream, idle):
        verdict = mirror.observe_reply(msg)
        assert verdict.verified, verdict.reason
    for cosign in sent:
        assert mirror.observe_reply(hospital.cosign(cosign)).verified
    assert mirror.ledger.root() == hospital.ledger.root()
    assert mirror.status()["cells_in_flight"] == []
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.openings_missing_count == 0, report.summary()
    assert report.researcher_sigs_checked == 1


def test_an_entry_staged_again_keeps_the_opening_made_first(pair) -> None:
    """A receipt seen twice while its entries wait behind a gap: the execute request's code,
    let go of once its opening is made, is not there the second time, and the entry staged
    first (with its opening) is kept, not replaced by one without."""
    mirror, hospital, sent = pair
    timers: list[Any] = []
    mirror.schedule = lambda delay, callback: timers.append(callback)
    hospital.message("control", "kernel_info_reply", {"status": "ok"}, {"msg_id": "nudge"})
    request = _execute(mirror, "print(2)")
    busy, stream, reply, idle = hospital.execute(request, "2\n")
    for msg in (busy, busy, stream, reply, idle):
        assert mirror.observe_reply(msg).verified
    assert mirror.gap() == (1, 2)
    timers.pop()()
    (ask,) = sent
    sent.clear()
    assert mirror.observe_reply(hospital.entries(ask)).verified
    for cosign in sent:
        assert mirror.observe_reply(hospital.cosign(cosign)).verified
    assert mirror.ledger.root() == hospital.ledger.root()
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.openings_missing_count == 0, report.summary()


def test_gap_left_by_a_message_we_never_see_is_fetched(pair) -> None:
    """Enterprise Gateway's own kernel_info "nudge" channels get replies whose receipts carry
    ledger entries: the mirror asks the hospital for them instead of stalling for good."""
    mirror, hospital, sent = pair
    timers: list[Any] = []
    mirror.schedule = lambda delay, callback: timers.append(callback)
    # a reply routed to a connection the researcher does not hold
    hospital.message("control", "kernel_info_reply", {"status": "ok"}, {"msg_id": "nudge"})
    request = _execute(mirror, "print(2)")
    for msg in hospital.execute(request, "2\n"):
        assert mirror.observe_reply(msg).verified
    assert mirror.gap() == (1, 2) and not sent and len(timers) == 1
    timers.pop()()  # the gap outlived the grace period
    (ask,) = sent
    assert ask["header"]["msg_type"] == "bedside_entries_request"
    assert ask["content"] == {"from": 1, "to": 2}
    sent.clear()
    verdict = mirror.observe_reply(hospital.entries(ask))
    assert verdict.verified and verdict.consumed, verdict.reason
    assert mirror.gap() is None and mirror.status()["entries_in_flight"] == 0
    # caught up, the mirror cosigned the cell's checkpoint
    (cosign,) = sent
    assert mirror.observe_reply(hospital.cosign(cosign)).verified
    assert mirror.ledger.root() == hospital.ledger.root()


def test_release_check_asks_for_entries_no_message_has_carried(pair, monkeypatch) -> None:
    """A release attestation names the hospital's ledger size, which counts entries the airlock
    wrote after the last message we hold: their receipt may be a while coming, or go to a
    connection we never see. The release check asks for them instead of waiting it out."""
    mirror, hospital, sent = pair
    hospital.message("control", "kernel_info_reply", {"status": "ok"}, {"msg_id": "nudge"})
    assert mirror.ledger.size == 1 and hospital.ledger.size == 2
    monkeypatch.setattr(mirror_module, "GAP_GRACE", 0.01)

    async def hospital_answers() -> None:
        while not sent:
            await asyncio.sleep(0.005)
        (ask,) = sent
        sent.clear()
        assert ask["header"]["msg_type"] == "bedside_entries_request"
        assert ask["content"] == {"from": 1, "to": 2}
        assert mirror.observe_reply(hospital.entries(ask)).verified

    async def check() -> None:
        await asyncio.wait_for(
            asyncio.gather(releases._caught_up(mirror, 2), hospital_answers()), timeout=10
        )

    asyncio.run(check())
    assert mirror.ledger.size == 2
    assert mirror.ledger.root() == hospital.ledger.root()


def test_seal_checkpoint_signed_by_the_custodian_alone(pair, tmp_path: Path) -> None:
    """The sentry logs a custodian-only checkpoint at the seal; the mirror takes it and the
    seal, and keeps the last cosigned checkpoint as its own."""
    mirror, hospital, sent = pair
    _run_cell(mirror, hospital, sent)
    cosigned = mirror.last_checkpoint
    request = mirror.control_request("bedside_seal_request", {"reason": "researcher"})
    verdict = mirror.observe_reply(hospital.seal(request))
    assert verdict.verified, verdict.reason
    assert mirror.state == "sealed" and mirror.last_checkpoint == cosigned
    assert mirror.ledger.entry(mirror.ledger.size - 1)["kind"] == "seal"
    assert mirror.ledger.root() == hospital.ledger.root()
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)


def test_researcher_openings_open_the_code(pair) -> None:
    """The salt of an execute request's code reaches the researcher with its entry, so the
    researcher's openings check every code commitment and its signature, and replay the code."""
    from bedside.ledger.replay import replay

    mirror, hospital, sent = pair
    _run_cell(mirror, hospital, sent, code="total = 40 + 2\nprint(total)", text="42\n")
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.researcher_sigs_checked == 1 and report.openings_missing_count == 0
    assert report.intent_signed
    result = replay(mirror.ledger_path, mirror.openings_path, mirror.directory / "r.ipynb")
    nb = json.loads(result.notebook.read_text())
    assert "".join(nb["cells"][0]["source"]) == "total = 40 + 2\nprint(total)"


def test_header_intent_changed_after_signing_fails_verify(tmp_path: Path, standin) -> None:
    """A hospital that adds to (or changes) the signed intent in the header is caught: by the
    researcher's server at once, and by `ledger verify` from the ledger alone."""
    from bedside.errors import SignatureError
    from bedside.ledger import Ledger, entries

    signer = Signer.generate("researcher")
    mirror = SessionMirror(
        kernel_id="k1", directory=tmp_path / "r", signer=signer, intent=dict(INTENT)
    )
    request = mirror.intent_request()
    signed = request["content"]["intent"]
    # the hospital records an annotation inside the intent instead of in `grant`
    hospital = standin(tmp_path)
    forged = {**signed, "granted_budget": {"cells": 10}}
    header = entries.header(
        session=hospital.session,
        origin=hospital.origin,
        intent=forged,
        policy_id="demo",
        policy_digest="sha256:" + "0" * 64,
        kernel_env="sha256:" + "1" * 64,
        identities={"custodian": hospital.signer.verifier_key, "researcher": signer.verifier_key},
    )
    hospital._append(header, None, None)
    reply = hospital.message(
        "shell", "bedside_intent_reply", {"status": "ok"}, request["header"], record=False
    )
    verdict = mirror.observe_reply(reply)
    assert not verdict.verified and "granted_budget" in verdict.reason
    # and a reviewer holding only the ledger
    hospital.ledger.append_checkpoint(hospital.ledger.sign_checkpoint(hospital.signer))
    hospital.ledger.flush()
    keys = [hospital.signer.verifier_key, signer.verifier_key]
    with pytest.raises(SignatureError, match="not what the researcher signed") as err:
        verify_ledger(hospital.ledger.path, keys)
    assert err.value.index == 0
    # the intent as signed, with the hospital's additions in `grant`, verifies
    path = tmp_path / "good.ledger"
    good = Ledger.create(path, session_id=hospital.session, origin=hospital.origin)
    good.append({**header, "intent": signed, "grant": {"budget": {"cells": 10}}})
    good.append_checkpoint(good.sign_checkpoint(hospital.signer))
    good.close()
    assert verify_ledger(path, keys).intent_signed


def test_the_browser_gets_the_message_with_the_mirrors_metadata() -> None:
    """The connection writes the parsed message out again (orjson) with the metadata the mirror
    set: the same JSON values whatever the text's shape, strings that look like JSON included."""
    from bedside.extension.connection import Parsed

    tricky = {
        "header": {"msg_id": "a", "msg_type": "stream"},
        "parent_header": {"note": 'a "metadata": {} inside a string }'},
        "metadata": {"a": [1, {"b": "}"}]},
        "content": {"name": "stdout", "text": "x" * 1000, "metadata": {"c": 1}},
        "buffers": [],
        "channel": "iopub",
    }
    for text in (
        json.dumps(tricky),
        json.dumps(tricky, indent=1),
        json.dumps({"content": {"t": 1}, "metadata": {}}),
        json.dumps({"header": {}}),  # no metadata at all
        json.dumps({"content": {"t": float("nan")}}),  # read and written by json
    ):
        parsed = Parsed(text)
        parsed.msg.setdefault("metadata", {})["bedside"] = {"verified": True}
        out = parsed.dumps()
        assert json.dumps(json.loads(out)) == json.dumps(parsed.msg)


def test_entries_fetched_for_a_lost_cell_come_with_their_openings(pair) -> None:
    """A whole cell's messages went to a websocket that dropped: the entries the mirror fetches
    carry their openings, checked against the commitments, so the researcher's openings open
    that cell's code and output and the replay shows both."""
    from bedside.ledger.replay import replay

    mirror, hospital, sent = pair
    timers: list[Any] = []
    mirror.schedule = lambda delay, callback: timers.append(callback)
    lost = _execute(mirror, "print('while away')")
    hospital.execute(lost, "while away\n")  # never reaches the mirror
    request = _execute(mirror, "print('back')")
    for msg in hospital.execute(request, "back\n"):
        assert mirror.observe_reply(msg).verified
    assert mirror.gap() is not None
    timers.pop()()
    (ask,) = sent
    sent.clear()
    assert mirror.observe_reply(hospital.entries(ask)).verified
    assert mirror.gap() is None
    for cosign in sent:
        mirror.observe_reply(hospital.cosign(cosign))
    assert mirror.ledger.root() == hospital.ledger.root()
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.openings_missing_count == 0 and report.researcher_sigs_checked == 2
    result = replay(mirror.ledger_path, mirror.openings_path, mirror.directory / "r.ipynb")
    nb = json.loads(result.notebook.read_text())
    texts = ["".join(o.get("text", "")) for c in nb["cells"] for o in c["outputs"]]
    assert texts == ["while away\n", "back\n"]


def test_fetched_opening_that_does_not_open_its_commitment_is_refused(pair) -> None:
    mirror, hospital, sent = pair
    timers: list[Any] = []
    mirror.schedule = lambda delay, callback: timers.append(callback)
    lost = _execute(mirror, "print(1)")
    hospital.execute(lost, "1\n")
    # the hospital answers the gap with another output than the one it committed to
    index = next(i for i, (_, c) in hospital.public.items() if b'"stream"' in base64.b64decode(c))
    salt, content = hospital.public[index]
    raw = base64.b64decode(content).replace(b"1\\n", b"2\\n")
    assert raw != base64.b64decode(content)
    hospital.public[index] = (salt, base64.b64encode(raw).decode())
    request = _execute(mirror, "print(3)")
    for msg in hospital.execute(request, "3\n"):
        mirror.observe_reply(msg)
    timers.pop()()
    (ask,) = sent
    mirror.observe_reply(hospital.entries(ask))
    assert mirror.unverified == 1
    logged = json.loads(mirror.unverified_log.read_text().splitlines()[-1])
    assert logged["msg_type"] == "bedside_entries_reply"
    assert "commitment" in logged["reason"].lower(), logged
    assert mirror.ledger.size <= index  # nothing from the forged opening was appended


def test_release_fetch_reply_commits_to_the_artifact_digest() -> None:
    """The `output` entry of a release fetch reply commits to the piece's SHA-256, not its
    bytes: the artifact is stored once, in releases/, never in the openings files."""
    import hashlib

    from bedside.ledger import entries

    piece = bytes(range(256)) * 4096
    content = {"status": "ok", "id": "r-1", "offset": 0, "data": base64.b64encode(piece).decode()}
    committed = entries.output_committed_bytes(
        channel="shell", msg_type="bedside_release_fetch_reply", content=content
    )
    assert len(committed) < 1000
    data = json.loads(committed)["content"]["data"]
    assert data == {"sha256": hashlib.sha256(piece).hexdigest(), "bytes": len(piece)}
    # another piece, another commitment: the digest binds the bytes
    other = {**content, "data": base64.b64encode(piece[:-1] + b"x").decode()}
    assert committed != entries.output_committed_bytes(
        channel="shell", msg_type="bedside_release_fetch_reply", content=other
    )
    # every other message is committed byte for byte, as before
    plain = entries.output_committed_bytes(
        channel="shell", msg_type="execute_reply", content=content
    )
    assert json.loads(plain)["content"] == content


def test_receipt_key_agrees_with_the_ledger_verifier() -> None:
    """Receipts are checked with libsodium: what it accepts the ledger's verifier accepts, and
    a forged, truncated or foreign signature is a SignatureError as there."""
    from bedside.errors import SignatureError
    from bedside.extension.mirror import _ReceiptKey

    custodian, other = Signer.generate("custodian"), Signer.generate("other")
    key = _ReceiptKey(custodian.verifier)
    assert key.vkey == custodian.verifier_key
    body = canonical_json({"msg_id": "m", "digest": "sha256:00"})
    sig = custodian.sign(body)
    key.verify(body, sig)
    custodian.verifier.verify(body, sig)
    forged = bytes([sig[0] ^ 1]) + sig[1:]
    for bad_body, bad_sig in ((body, forged), (body, sig[:40]), (body, other.sign(body)),
                              (body + b" ", sig)):  # fmt: skip
        with pytest.raises(SignatureError):
            key.verify(bad_body, bad_sig)
        with pytest.raises(SignatureError):
            custodian.verifier.verify(bad_body, bad_sig)
