"""The sentry's opt-in trace of large kernel outputs (`BEDSIDE_START_TRACE=1`, read by
bench/mb_timeline.py): off unless asked for, and when on it only notes the steps of a large
output in order; what the client receives and what the ledger records are the same either way.

Driven through `Sentry._from_client` / `_from_kernel` with sockets that keep what is sent."""

from __future__ import annotations

import json
import os

import pytest

from bedside import _starttrace
from bedside.gateway import sentry as sentry_module
from bedside.gateway._wire import Wire
from bedside.kernel import kernel as kernel_module

WORDS = "cohort analysis survival model baseline outcome ward median interval".split()
RELEASED_STEPS = [
    "mb.sentry.received",
    "mb.sentry.parsed",
    "mb.sentry.checked",
    "mb.sentry.prepared",
    "mb.sentry.receipt",
    "mb.sentry.appended",
    "mb.sentry.signed",
    "mb.sentry.sent",
    "mb.sentry.done",
]


@pytest.fixture
def marks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The trace turned on, its marks collected instead of written to stderr."""
    seen: list[str] = []
    monkeypatch.setattr(sentry_module, "_TRACE", True)
    monkeypatch.setattr(sentry_module, "_mark", seen.append)
    return seen


def _cell(sentry, client, kernel, text: str) -> dict:
    """One cell printing `text`; the stream message's content as the client receives it."""
    request = client.msg("execute_request", {"code": "print(TEXT)", "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    msg = kernel.msg("stream", {"name": "stdout", "text": text}, parent=request["header"])
    out = sentry._sockets["outer_iopub"]
    before = len(out.sent)
    sentry._from_kernel("iopub", [b"kernel.x.stream", *kernel.serialize(msg)])
    (frames,) = out.sent[before:]
    parsed = Wire(client.key, name="client").parse(frames)
    return {"content": parsed.content, "decision": parsed.metadata["bedside"].get("decision")}


def test_the_trace_is_off_unless_the_environment_asks_for_it():
    assert sentry_module._TRACE is (os.environ.get(_starttrace.ENV) == "1")
    assert kernel_module._TRACE is (os.environ.get(_starttrace.ENV) == "1")


def test_a_large_release_marks_each_step_in_order(relay, marks):
    sentry, client, kernel, _ = relay
    text = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    got = _cell(sentry, client, kernel, text)
    assert got["content"] == {"name": "stdout", "text": text}
    assert marks == RELEASED_STEPS
    assert sentry._tracing is False


def test_small_messages_are_not_traced(relay, marks):
    sentry, client, kernel, _ = relay
    got = _cell(sentry, client, kernel, "cohort analysis\n")
    assert got["content"]["text"] == "cohort analysis\n"
    assert marks == []


def test_a_traced_large_output_with_an_identifier_still_leaves_as_a_notice(relay, marks):
    sentry, client, kernel, frame = relay
    mrn = str(frame["mrn"].iloc[7])
    words = " ".join(WORDS[i % len(WORDS)] for i in range(40_000))
    got = _cell(sentry, client, kernel, words[:50_000] + f" {mrn} " + words[50_000:])
    assert got["decision"] == "blocked"
    assert mrn not in json.dumps(got["content"])
    # The notice takes the plain path: no receipt made ahead, but the message is sent.
    assert marks[0] == "mb.sentry.received" and marks[-2:] == ["mb.sentry.sent", "mb.sentry.done"]
    assert "mb.sentry.appended" not in marks
    assert sentry._tracing is False


def test_the_kernel_traces_only_large_stream_outputs():
    def msg(msg_type: str, content: dict) -> dict:
        return {"header": {"msg_type": msg_type}, "content": content}

    big = "x" * (64 * 1024)
    assert kernel_module._large_stream(msg("stream", {"name": "stdout", "text": big}))
    assert not kernel_module._large_stream(msg("stream", {"name": "stdout", "text": big[:-1]}))
    assert not kernel_module._large_stream(msg("execute_result", {"data": {"text/plain": big}}))
    assert not kernel_module._large_stream(msg("stream", {"name": "stdout", "text": None}))
