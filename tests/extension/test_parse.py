"""The gateway message parser of the websocket path and the receipt check on what it read: the
same values as `json.loads` (orjson's only where they are exactly those), written out again
with the same values, committed bytes identical to the reference RFC 8785 encoder, and a text
that is not what the receipt signed is still caught (its commitment decides)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from bedside.extension import mirror as mirror_module
from bedside.extension.connection import Parsed
from bedside.extension.mirror import SessionMirror, new_message
from bedside.ledger import Signer, verify_ledger
from bedside.ledger.entries import output_committed_bytes
from bedside.ledger.log import openings_path
from bedside.ledger.openings import iter_openings

BIG = "x" * 300_000 + "\n"


def _texts() -> list[str]:
    rng = random.Random(7)
    alphabet = 'ab"\\\n\t\x00\x1f\x7fé€😀\u2028 '
    out = []
    for n in range(40):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) * 2000
        msg = {
            "header": {"msg_id": str(n), "msg_type": "stream"},
            "msg_id": str(n),
            "parent_header": {},
            "metadata": {"bedside": {"receipt": {"n": n, "size": 2**53 - n}}},
            "content": {"name": "stdout", "text": s, "n": -n, "list": [n, None, True, "é"]},
            "buffers": [],
            "channel": "iopub",
        }
        if n % 5 == 0:
            msg["content"]["f"] = n + 0.5  # a float: read by json
        out.append(json.dumps(msg, ensure_ascii=bool(n % 2), separators=(", ", ": ")))
        out.append(json.dumps(msg, ensure_ascii=False, separators=(",", ":"), indent=n % 3 or None))
    # duplicate keys (the last wins), odd spacing, no content, not an object
    out.append('{"content": {"text": "%s"}, "metadata": {}, "content": {"text": 1}}' % ("y" * 9))
    out.append('{"content": {"text": "%s", "text": "short"}, "metadata": {"a": 1}}' % ("y" * 9))
    out.append(' \n{ "metadata" :{ } , "content":{"text" : "%s"} } \t' % ("z" * 70_000))
    out.append('{"metadata": {}}')
    out.append("[1, 2]")
    # what orjson reads otherwise, or not at all: json's value is the one taken
    out.append('{"content": {"n": 18446744073709551616, "m": -9223372036854775809}}')
    out.append('{"content": {"n": 1e400, "m": NaN, "k": -Infinity}, "metadata": {}}')
    out.append('{"content": {"text": "\\ud800 lone", "t": "\\udc00\\ud83d"}}')
    out.append('{"content": {"x": 1.0, "y": 1e5, "z": -0.0, "w": 0.1}}')
    return out


def _typed(value: Any) -> str:
    """The value as json writes it: tells 1 from 1.0 and a float from an exact integer."""
    return json.dumps(value)


@pytest.mark.parametrize("text", _texts())
def test_parse_gives_json_loads_value(text: str) -> None:
    expected = json.loads(text)
    for given in (text, text.encode("utf-8", "surrogatepass")):
        try:
            parsed = Parsed(given)
        except (json.JSONDecodeError, UnicodeDecodeError):
            assert isinstance(given, bytes)  # lone surrogates are not UTF-8 bytes
            continue
        assert _typed(parsed.msg) == _typed(expected)
        if isinstance(parsed.msg, dict):
            parsed.msg["metadata"] = {"bedside": {"verified": True}}
            out = parsed.dumps()
            assert _typed(json.loads(out)) == _typed(
                {**expected, "metadata": {"bedside": {"verified": True}}}
            )


@pytest.mark.parametrize("bad", ['{"a": 1} x', '{"a": }', '{"a" 1}', "", '{"content": {"t": "'])
def test_bad_json_raises_as_json_loads_does(bad: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        Parsed(bad)


@pytest.mark.parametrize("text", _texts()[:40])
def test_committed_bytes_are_the_reference_encoders(text: str) -> None:
    """The committed bytes the mirror hashes (canonical_json, by orjson where it applies) are
    byte for byte those of the reference RFC 8785 implementation, whichever way the text was
    written."""
    msg = Parsed(text).msg
    args = {"channel": msg["channel"], "msg_type": "stream", "content": msg["content"]}
    reference = rfc8785.dumps({**args, "buffers": []})
    assert output_committed_bytes(**args) == reference


def test_receipts_checked_on_what_arrived(tmp_path: Path, standin, monkeypatch) -> None:
    """Large outputs, escaped or not, verify and are recorded with their openings (made in the
    worker thread for outputs above PREPARE_MIN_BYTES); a changed output with its receipt
    intact is flagged."""
    monkeypatch.setattr(mirror_module, "PREPARE_MIN_BYTES", 1024)
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k1",
        directory=tmp_path / "researcher",
        signer=Signer.generate("researcher"),
        intent={"purpose": "t", "cohort": "all", "model_job": "none", "policy_id": "demo"},
    )
    sent: list[dict[str, Any]] = []
    mirror.send = sent.append
    assert mirror.observe_reply(hospital.intent(mirror.intent_request())).verified

    def deliver(msg: dict[str, Any], *, ensure_ascii: bool = True, tamper: bool = False) -> Any:
        text = json.dumps(msg, ensure_ascii=ensure_ascii)
        if tamper:
            text = text.replace("x" * 10, "X" * 10, 1)
        parsed = Parsed(text)
        verdict = mirror.observe_reply(parsed.msg)
        return verdict, json.loads(parsed.dumps())

    texts = ((BIG, True), ("é€" * 800 + BIG, True), ("é€" * 800, False), ('"\\' * 900, False))
    for text, ensure_ascii in texts:
        request = new_message("execute_request", {"code": "print(2)"}, session="b")
        mirror.observe_request(request)
        for msg in hospital.execute(request, text):
            verdict, seen = deliver(msg, ensure_ascii=ensure_ascii)
            assert verdict.verified, verdict.reason
            assert seen["metadata"]["bedside"]["verified"] is True
            assert seen["content"] == msg["content"]
        for cosign in sent:
            assert mirror.observe_reply(hospital.cosign(cosign)).verified
        sent.clear()
    # a changed output, with its receipt intact, is flagged (and its prepared opening dropped)
    request = new_message("execute_request", {"code": "print(2)"}, session="b")
    mirror.observe_request(request)
    replies = hospital.execute(request, BIG)
    stream = next(m for m in replies if m["header"]["msg_type"] == "stream")
    verdict, seen = deliver(stream, tamper=True)
    assert not verdict.verified
    assert "commitment" in verdict.reason  # version 2: the output's own commitment decides
    assert seen["metadata"]["bedside"]["verified"] is False
    assert mirror._preparing is None
    # the verified cells are in our copy with openings the reference encoder's bytes open
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.kinds["output"] >= 4
    hospital.ledger.flush()
    theirs = {o.index: o for o in iter_openings(openings_path(hospital.ledger.path))}
    ours = list(iter_openings(mirror.openings_path))
    assert len(ours) >= 8
    for opening in ours:  # the hospital's very salt and bytes
        assert opening == theirs[opening.index]


def test_a_failed_preparation_falls_back_to_the_plain_opening(
    tmp_path: Path, standin, monkeypatch
) -> None:
    """If the worker could not prepare an opening (memory), the event loop's thread writes it
    itself: the message verifies and the opening is the hospital's, as without the worker."""

    def broken(*args: Any) -> Any:
        raise MemoryError("no room for the base64")

    monkeypatch.setattr(mirror_module, "PREPARE_MIN_BYTES", 1024)
    monkeypatch.setattr(mirror_module, "PreparedOpening", broken)
    hospital = standin(tmp_path)
    mirror = SessionMirror(
        kernel_id="k1",
        directory=tmp_path / "researcher",
        signer=Signer.generate("researcher"),
        intent={"purpose": "t", "cohort": "all", "model_job": "none", "policy_id": "demo"},
    )
    assert mirror.observe_reply(hospital.intent(mirror.intent_request())).verified
    request = new_message("execute_request", {"code": "print(2)"}, session="b")
    mirror.observe_request(request)
    for msg in hospital.execute(request, BIG):
        parsed = Parsed(json.dumps(msg))
        verdict = mirror.observe_reply(parsed.msg)
        assert verdict.verified, verdict.reason
    mirror.close()
    hospital.ledger.flush()
    theirs = {o.index: o for o in iter_openings(openings_path(hospital.ledger.path))}
    ours = list(iter_openings(mirror.openings_path))
    assert any(len(o.content) > len(BIG) for o in ours)
    for opening in ours:
        assert opening == theirs[opening.index]
