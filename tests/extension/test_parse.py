"""The gateway message parser of the websocket path and the receipt check on the JSON text as it
arrived: same values as `json.loads`, same committed bytes as the encoder, and a text that is
not what the receipt signed is still caught (the digest decides, never the fast path)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from bedside.extension import connection
from bedside.extension import mirror as mirror_module
from bedside.extension.connection import Parsed, with_metadata
from bedside.extension.mirror import SessionMirror, committed_from_tokens, new_message
from bedside.ledger import Signer, verify_ledger
from bedside.ledger.entries import output_committed_bytes

BIG = "x" * 70_000 + "\n"


def _texts() -> list[str]:
    rng = random.Random(7)
    alphabet = 'ab"\\\n\t\x00\x1f\x7fé€😀 '
    out = []
    for n in range(40):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) * 2000
        msg = {
            "header": {"msg_id": str(n), "msg_type": "stream"},
            "msg_id": str(n),
            "parent_header": {},
            "metadata": {"bedside": {"receipt": {"n": n}}},
            "content": {"name": "stdout", "text": s, "n": n, "f": 1.5},
            "buffers": [],
            "channel": "iopub",
        }
        out.append(json.dumps(msg, ensure_ascii=bool(n % 2), separators=(", ", ": ")))
        out.append(json.dumps(msg, ensure_ascii=False, separators=(",", ":"), indent=n % 3 or None))
    # duplicate keys (the last wins, in json.loads and in the spans), odd spacing, no content
    out.append(
        '{"content": {"text": "%s"}, "metadata": {}, "content": {"text": 1}}' % ("y" * 70_000)
    )
    out.append(
        '{"content": {"text": "%s", "text": "short"}, "metadata": {"a": 1}}' % ("y" * 70_000)
    )
    out.append(' \n{ "metadata" :{ } , "content":{"text" : "%s"} } \t' % ("z" * 70_000))
    out.append('{"metadata": {}}')
    out.append("[1, 2]")
    return out


@pytest.mark.parametrize("text", _texts())
def test_parse_gives_json_loads_value(text: str) -> None:
    parsed = Parsed(text)
    assert parsed.msg == json.loads(text)
    for key, token in parsed.tokens.items():
        assert json.loads(bytes(token)) == parsed.msg["content"][key]
    if isinstance(parsed.msg, dict) and "metadata" in parsed.msg:
        parsed.msg["metadata"] = {"bedside": {"verified": True}}
        out = parsed.with_metadata()
        expected = {**json.loads(text), "metadata": {"bedside": {"verified": True}}}
        assert json.loads(out) == expected
        assert json.loads(with_metadata(text, parsed.msg)) == expected


@pytest.mark.parametrize("bad", ['{"a": 1} x', '{"a": }', '{"a" 1}', "", '{"content": {"t": "'])
def test_bad_json_raises_as_json_loads_does(bad: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        Parsed(bad)


@pytest.mark.parametrize("text", _texts()[:40])
def test_tokens_give_the_committed_bytes_when_canonical(text: str) -> None:
    parsed = Parsed(text)
    msg = parsed.msg
    args = {"channel": msg["channel"], "msg_type": "stream", "content": msg["content"]}
    fast = committed_from_tokens(tokens=parsed.tokens, **args)
    slow = output_committed_bytes(**args)
    # ensure_ascii text escapes what RFC 8785 writes as is: those bytes differ, and the digest
    # check sends the mirror to the encoder; otherwise they are the very committed bytes
    if fast != slow:
        assert any(b"\\u" in bytes(t) for t in parsed.tokens.values())


def test_receipts_checked_on_the_text_as_it_arrived(tmp_path: Path, standin, monkeypatch) -> None:
    monkeypatch.setattr(connection, "TOKEN_MIN_CHARS", 1024)
    encoded: list[str] = []  # outputs whose committed bytes the mirror encoded itself

    def counted(**kwargs: Any) -> bytes:
        encoded.append(kwargs["msg_type"])
        return output_committed_bytes(**kwargs)

    monkeypatch.setattr(mirror_module, "output_committed_bytes", counted)
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
        verdict = mirror.observe_reply(parsed.msg, parsed.tokens)
        return verdict, json.loads(parsed.with_metadata())

    streams = []
    for text, ensure_ascii in ((BIG, True), ("é€" * 800 + BIG, True), ("é€" * 800, False)):
        encoded.clear()
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
        streams.append("stream" in encoded)
    # ASCII text: checked on the text; escaped non-ASCII: encoded again; raw non-ASCII: text
    assert streams == [False, True, False]
    # a changed output, with its receipt intact, is flagged whichever path checked it
    request = new_message("execute_request", {"code": "print(2)"}, session="b")
    mirror.observe_request(request)
    replies = hospital.execute(request, BIG)
    stream = next(m for m in replies if m["header"]["msg_type"] == "stream")
    verdict, seen = deliver(stream, tamper=True)
    assert not verdict.verified
    assert "digest" in verdict.reason
    assert seen["metadata"]["bedside"]["verified"] is False
    # the three verified cells are in our copy with their openings, as the encoder would write
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.kinds["output"] >= 3
