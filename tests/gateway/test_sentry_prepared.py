"""Large outputs: the sentry encodes, commits and hashes their release in a worker thread while
its guard scans them. What leaves must be exactly what the plain path sends: the content the
guard released, its receipt over those bytes, and an opening in the hospital ledger that opens
the commitment; a blocked large output must leave as a notice, its prepared bytes unused.

Driven through `Sentry._from_client` / `_from_kernel` with sockets that keep what is sent (no
kernel process: the relay's own path is under test here; tests/gateway/test_sentry*.py run it
end to end)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import rfc8785
from _sentry_support import CaptureSocket
from jupyter_client.session import Session

from bedside.gateway import sentry as sentry_module
from bedside.gateway._receipts import canonical_content
from bedside.gateway._wire import Wire
from bedside.gateway.sentry import Sentry
from bedside.ledger import Verifier
from bedside.ledger.commitment import DOMAIN_OUTPUT, open_commitment
from bedside.ledger.log import openings_path
from bedside.ledger.openings import iter_openings

WORDS = "cohort analysis survival model baseline outcome ward median interval".split()


@pytest.fixture
def used(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each verdict used the release prepared beside the scan, in order."""
    seen: list[bool] = []
    original = Sentry._prepared

    def spy(ahead, msg, verdict):
        prepared = original(ahead, msg, verdict)
        seen.append(prepared is not None)
        return prepared

    monkeypatch.setattr(Sentry, "_prepared", staticmethod(spy))
    return seen


def _cell(sentry: Sentry, client: Session, kernel: Session, text: str) -> dict[str, Any]:
    """Run one cell that prints `text`; the stream message the client receives, parsed."""
    request = client.msg("execute_request", {"code": "print(TEXT)", "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    msg = kernel.msg("stream", {"name": "stdout", "text": text}, parent=request["header"])
    out: CaptureSocket = sentry._sockets["outer_iopub"]  # type: ignore[assignment]
    before = len(out.sent)
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(msg)])
    (frames,) = out.sent[before:]
    parsed = Wire(client.key, name="client").parse(frames)
    assert parsed.msg_type == "stream"
    return {"parsed": parsed, "raw_content": frames[-1]}


def _receipt_checks(sentry: Sentry, got: dict[str, Any]) -> dict[str, Any]:
    parsed = got["parsed"]
    receipt = parsed.metadata["bedside"]["receipt"]
    body = {k: v for k, v in receipt.items() if k != "sig"}
    Verifier(sentry.signer.verifier_key).verify(
        rfc8785.dumps(body), base64.b64decode(receipt["sig"])
    )
    committed = rfc8785.dumps(
        {"buffers": [], "channel": "iopub", "content": parsed.content, "msg_type": "stream"}
    )
    if receipt["v"] == 1:
        assert receipt["digest"] == "sha256:" + hashlib.sha256(committed).hexdigest()
    else:  # this message's own salted entry binds the bytes (opened by the caller)
        assert receipt["v"] == 2 and "digest" not in receipt
    return receipt


@pytest.mark.parametrize("receipts", [1, 2])
def test_a_large_output_released_through_the_prepared_path(relay, used, receipts):
    sentry, client, kernel, _ = relay
    sentry.ledger.receipts = receipts  # as the researcher's intent asked
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000)) + '\n\t"é" \x01 \U0001f600\n'
    assert len(text) > sentry_module.PREPARE_MIN_BYTES
    got = _cell(sentry, client, kernel, text)
    assert used == [True]
    assert got["parsed"].content == {"name": "stdout", "text": text}
    # The content frame is the canonical encoding of what was released.
    assert got["raw_content"] == canonical_content({"name": "stdout", "text": text})
    receipt = _receipt_checks(sentry, got)
    assert receipt["v"] == receipts
    # The hospital ledger's opening of that entry opens its commitment with the bytes sent.
    sentry.ledger.ledger.flush()
    (entry_item,) = [e for e in receipt["entries"] if e["entry"]["kind"] == "output"]
    index = entry_item["index"]
    opening = next(o for o in iter_openings(openings_path(sentry.ledger.path)) if o.index == index)
    committed = rfc8785.dumps(
        {"buffers": [], "channel": "iopub", "content": {"name": "stdout", "text": text},
         "msg_type": "stream"}
    )  # fmt: skip
    assert opening.content == committed
    open_commitment(DOMAIN_OUTPUT, committed, opening.salt, entry_item["entry"]["content"])
    # The released output's salt rides on the receipt (the researcher's openings stay whole).
    assert base64.b64decode(entry_item["salt"]) == opening.salt


def test_a_large_output_with_an_identifier_leaves_as_a_notice(relay, used):
    sentry, client, kernel, frame = relay
    mrn = str(frame["mrn"].iloc[7])
    words = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    text = words[: len(words) // 2] + f" {mrn} " + words[len(words) // 2 :]
    got = _cell(sentry, client, kernel, text)
    assert used == [False]
    content = got["parsed"].content
    assert mrn not in json.dumps(content) and "blocked" in content["text"]
    assert got["parsed"].metadata["bedside"]["decision"] == "blocked"
    _receipt_checks(sentry, got)
    # The block is recorded; its opening (the kernel's bytes) stays in the hospital only.
    entries = [sentry.ledger.ledger.entry(i) for i in range(sentry.ledger.size)]
    assert [e["decision"] for e in entries if e["kind"] == "output"] == ["blocked"]


def test_a_large_message_with_a_bad_signature_is_dropped(relay, used, caplog):
    """Its signature is checked beside the parse: nothing of it leaves or is recorded, it is
    counted and logged as dropped, and the relay goes on (the next large output is released)."""
    sentry, client, kernel, _ = relay
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    request = client.msg("execute_request", {"code": "print(TEXT)", "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    forger = Session(key=b"not-the-kernel-key", username="kernel")
    forged = forger.msg("stream", {"name": "stdout", "text": text}, parent=request["header"])
    out: CaptureSocket = sentry._sockets["outer_iopub"]  # type: ignore[assignment]
    sent, size, dropped = len(out.sent), sentry.ledger.size, sentry.dropped
    with caplog.at_level("WARNING", logger="bedside.sentry"):
        sentry._from_kernel("iopub", [b"kernel.x.stream", *forger.serialize(forged)])
    assert len(out.sent) == sent and sentry.ledger.size == size and used == []
    assert sentry.dropped == dropped + 1
    assert "dropped a message from the kernel on iopub: bad HMAC signature" in caplog.text
    # A correctly signed large message with the same content is released as before.
    msg = kernel.msg("stream", {"name": "stdout", "text": text}, parent=request["header"])
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(msg)])
    assert len(out.sent) == sent + 1 and used == [True]
    assert Wire(client.key, name="client").parse(out.sent[-1]).content["text"] == text


def _receipt_names_the_ledger(sentry: Sentry, receipt: dict[str, Any]) -> None:
    """The receipt's size, root and entries are those of the hospital ledger."""
    ledger = sentry.ledger.ledger
    assert receipt["size"] == ledger.size
    assert receipt["root"] == ledger.root_at(receipt["size"]).hex()
    for item in receipt["entries"]:
        assert item["entry"] == ledger.entry(item["index"])


def test_a_large_release_is_signed_beside_its_append(relay, used, monkeypatch):
    """The receipt of a large release is made before its entry is appended (so the message is
    signed while the opening is written): it names exactly what the ledger then holds, the
    output's entry and salt among the entries, and every receipt after it goes on from there."""
    sentry, client, kernel, _ = relay
    ahead: list[bool] = []
    original = type(sentry.ledger).append_ahead

    def spy(self, made):
        held = original(self, made)
        ahead.append(held)
        return held

    monkeypatch.setattr(type(sentry.ledger), "append_ahead", spy)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    for n in range(3):
        got = _cell(sentry, client, kernel, f"{n} {text}")
        receipt = _receipt_checks(sentry, got)
        _receipt_names_the_ledger(sentry, receipt)
        kinds = [item["entry"]["kind"] for item in receipt["entries"]]
        assert kinds[-2:] == ["execute_request", "output"] and "salt" in receipt["entries"][-1]
    assert used == [True] * 3 and ahead == [True] * 3
    # The small messages after it carry receipts of their own entries (nothing twice).
    small = kernel.msg("stream", {"name": "stdout", "text": "done"})
    out: CaptureSocket = sentry._sockets["outer_iopub"]  # type: ignore[assignment]
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(small)])
    receipt = Wire(client.key, name="client").parse(out.sent[-1]).metadata["bedside"]["receipt"]
    _receipt_names_the_ledger(sentry, receipt)
    assert [item["index"] for item in receipt["entries"]] == [sentry.ledger.size - 1]


def test_a_receipt_made_ahead_that_misses_the_ledger_is_made_again(relay, used, monkeypatch):
    """Should the ledger not hold what a receipt made ahead names, that receipt never leaves:
    the message carries the receipt of what was written."""
    import dataclasses

    sentry, client, kernel, _ = relay
    original = type(sentry.ledger).released_ahead

    def wrong_root(self, **kwargs):
        return dataclasses.replace(original(self, **kwargs), root=b"\x00" * 32)

    monkeypatch.setattr(type(sentry.ledger), "released_ahead", wrong_root)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    got = _cell(sentry, client, kernel, text)
    receipt = _receipt_checks(sentry, got)
    assert receipt["root"] != "00" * 32
    _receipt_names_the_ledger(sentry, receipt)
    assert [item["entry"]["kind"] for item in receipt["entries"]][-1] == "output"
    assert used == [True]


def test_the_release_is_prepared_as_soon_as_the_json_is_read(relay, used, monkeypatch):
    """The worker thread prepares a large output's release right after reading its JSON (the
    relay's thread still hashing its signature), once, and the verdict uses it; what it made
    for a message then refused is never used; a large message of a type whose release is not
    prepared (a comm message) is not prepared."""
    import threading

    sentry, client, kernel, _ = relay
    calls: list[tuple[str, str]] = []
    original = sentry_module.prepare_release

    def spy(channel, msg_type, content, buffers, **kwargs):
        calls.append((msg_type, threading.current_thread().name))
        return original(channel, msg_type, content, buffers, **kwargs)

    monkeypatch.setattr(sentry_module, "prepare_release", spy)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    got = _cell(sentry, client, kernel, text)
    assert used == [True] and got["parsed"].content["text"] == text
    assert [c[0] for c in calls] == ["stream"]
    assert calls[0][1].startswith("bedside-prepare")
    _receipt_checks(sentry, got)
    # What the worker made ahead for a message that is then refused is never used: a forged
    # large message is dropped, and the next genuine one is prepared afresh.
    forger = Session(key=b"not-the-kernel-key", username="kernel")
    request = client.msg("execute_request", {"code": "print(TEXT)", "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    forged = forger.msg("stream", {"name": "stdout", "text": text}, parent=request["header"])
    sentry._from_kernel("iopub", [b"kernel.x.stream", *forger.serialize(forged)])
    assert used == [True]
    got = _cell(sentry, client, kernel, text + " again")
    assert used == [True, True] and got["parsed"].content["text"] == text + " again"
    _receipt_checks(sentry, got)
    calls.clear()
    comm = kernel.msg("comm_msg", {"comm_id": "c", "data": {"text": text}})
    sentry._from_kernel("iopub", [b"kernel.x.comm_msg", *kernel.serialize(comm)])
    assert calls == []


def test_a_release_prepared_ahead_is_not_used_when_the_joined_verdict_blocks(relay, used):
    """A large output the guard releases alone but blocks joined to the text before it on its
    stream (a value split across two messages) leaves as a notice: the release prepared for it
    is dropped, the ledger records the block, and the receipts name what the ledger holds."""
    sentry, client, kernel, frame = relay
    mrn = str(frame["mrn"].iloc[11])
    words = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    request = client.msg("execute_request", {"code": "print(TEXT)", "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    out: CaptureSocket = sentry._sockets["outer_iopub"]  # type: ignore[assignment]
    wire = Wire(client.key, name="client")
    first = kernel.msg("stream", {"name": "stdout", "text": f"ward {mrn[:4]}"},
                       parent=request["header"])  # fmt: skip
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(first)])
    assert wire.parse(out.sent[-1]).content["text"] == f"ward {mrn[:4]}"
    second = kernel.msg("stream", {"name": "stdout", "text": f"{mrn[4:]} {words}"},
                        parent=request["header"])  # fmt: skip
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(second)])
    got = wire.parse(out.sent[-1])
    assert mrn[4:] not in got.content["text"] and "blocked" in got.content["text"]
    assert got.metadata["bedside"]["decision"] == "blocked"
    assert used == [False]
    receipt = got.metadata["bedside"]["receipt"]
    _receipt_names_the_ledger(sentry, receipt)
    outputs = [sentry.ledger.ledger.entry(i) for i in range(sentry.ledger.size)]
    assert [e["decision"] for e in outputs if e["kind"] == "output"] == ["released", "blocked"]
    # The next large output is prepared and released as usual, its receipt going on from the
    # block's.
    got = _cell(sentry, client, kernel, words)
    assert used == [False, True] and got["parsed"].content["text"] == words
    _receipt_names_the_ledger(sentry, _receipt_checks(sentry, got))


def test_a_prepared_release_carries_the_metadata_the_guard_let_out(relay, used, monkeypatch):
    """A large release prepared ahead still carries the metadata of the verdict: when the guard
    lets out other metadata than the kernel sent (here it is made to drop a key), the kernel's
    key does not leave, and the receipt names what the ledger holds."""
    import dataclasses

    sentry, client, kernel, _ = relay
    original = type(sentry.guard).check

    def check(self, channel, msg_type, content, metadata, *args, **kwargs):
        verdict = original(self, channel, msg_type, content, metadata, *args, **kwargs)
        kept = {k: v for k, v in verdict.metadata.items() if k != "trace"}
        return dataclasses.replace(verdict, metadata=kept)

    monkeypatch.setattr(type(sentry.guard), "check", check)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    request = client.msg("execute_request", {"code": "print(TEXT)", "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    msg = kernel.msg("stream", {"name": "stdout", "text": text}, parent=request["header"])
    msg["metadata"] = {"trace": "the kernel's own", "kept": 1}
    out: CaptureSocket = sentry._sockets["outer_iopub"]  # type: ignore[assignment]
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(msg)])
    got = Wire(client.key, name="client").parse(out.sent[-1])
    assert used == [True] and got.content["text"] == text
    assert "trace" not in got.metadata and got.metadata["kept"] == 1
    _receipt_names_the_ledger(sentry, _receipt_checks(sentry, {"parsed": got}))
