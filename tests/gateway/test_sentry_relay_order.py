"""The sentry forwards an execute request before writing its ledger entry (so the kernel starts
the cell meanwhile): the entry must still precede every output of the cell, ride on the cell's
first receipt, and a failure to write it must stop the session rather than let cells run
unrecorded. Driven in-process with a real policy, guard, ledger and key, and no sockets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.session import Session

from bedside.errors import GatewayError, LedgerError
from bedside.gateway.sentry import Sentry

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import in_process_sentry, make_hospital, make_patients  # noqa: E402


@pytest.fixture
def relay(tmp_path):
    yield from _relay(tmp_path, guard=True)


@pytest.fixture
def starting(tmp_path):
    """The relay before its guard is built."""
    yield from _relay(tmp_path, guard=False)


def _relay(tmp_path: Path, *, guard: bool):
    hospital = make_hospital(tmp_path, frame=make_patients(50))
    sentry, client, kernel = in_process_sentry(hospital, tmp_path, guard=guard)
    yield sentry, client, kernel
    sentry.ledger.close()


def _execute(sentry: Sentry, client: Session, code: str) -> dict[str, Any]:
    request = client.msg("execute_request", {"code": code, "silent": False})
    sentry._from_client("shell", [b"client", *client.serialize(request)])
    return request


def _kernel_says(sentry, kernel, request, msg_type, content, channel="iopub") -> None:
    msg = kernel.msg(msg_type, content, parent=request["header"])
    prefix = [b"kernel.x." + msg_type.encode()] if channel == "iopub" else [b"client"]
    sentry._from_kernel(channel, [*prefix, *kernel.serialize(msg)])


def _sent(sentry: Sentry, name: str) -> list[dict[str, Any]]:
    out = []
    for frames in sentry._sockets[name].sent:  # type: ignore[attr-defined]
        cut = frames.index(b"<IDS|MSG>")
        header, parent, metadata, content = (json.loads(f) for f in frames[cut + 2 : cut + 6])
        out.append(
            {"header": header, "parent_header": parent, "metadata": metadata, "content": content}
        )
    return out


def test_the_request_entry_precedes_the_cell_and_rides_on_its_first_receipt(relay):
    sentry, client, kernel = relay
    request = _execute(sentry, client, "1 + 1")
    # forwarded to the kernel, byte for byte the researcher's code
    (forwarded,) = sentry._sockets["inner_shell"].sent  # type: ignore[attr-defined]
    assert json.loads(forwarded[-1])["code"] == "1 + 1"
    _kernel_says(sentry, kernel, request, "status", {"execution_state": "busy"})
    _kernel_says(sentry, kernel, request, "execute_result", {"data": {"text/plain": "2"},
                 "metadata": {}, "execution_count": 1})  # fmt: skip
    busy, result = _sent(sentry, "outer_iopub")
    kinds = [item["entry"]["kind"] for item in busy["metadata"]["bedside"]["receipt"]["entries"]]
    assert kinds == ["header", "execute_request", "output"]
    assert (
        busy["metadata"]["bedside"]["receipt"]["entries"][1]["entry"]["msg_id"]
        == (request["header"]["msg_id"])
    )
    assert result["content"] == {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 1}


def test_a_request_the_ledger_cannot_record_stops_the_session(relay, monkeypatch):
    sentry, client, kernel = relay
    _execute(sentry, client, "1 + 1")  # the header and a first cell

    def broken(*args: Any, **kwargs: Any) -> int:
        raise LedgerError("disk full")

    monkeypatch.setattr(sentry.ledger, "execute_request", broken)
    _execute(sentry, client, "x = 2")
    assert sentry.refused is not None and "cannot record" in sentry.refused
    # the running cell is interrupted
    control = sentry._sockets["inner_control"].sent  # type: ignore[attr-defined]
    assert any(b"interrupt_request" in frame for frames in control for frame in frames)
    # and no later cell reaches the kernel
    before = len(sentry._sockets["inner_shell"].sent)  # type: ignore[attr-defined]
    _execute(sentry, client, "x = 3")
    assert len(sentry._sockets["inner_shell"].sent) == before  # type: ignore[attr-defined]
    (reply,) = [
        m for m in _sent(sentry, "outer_shell") if m["header"]["msg_type"] == "execute_reply"
    ]
    assert reply["content"]["status"] == "error"


def _types(sentry: Sentry, name: str) -> list[str]:
    return [m["header"]["msg_type"] for m in _sent(sentry, name)]


def test_before_the_guard_only_kernel_info_and_status_pass_and_the_rest_waits(starting):
    sentry, client, kernel = starting
    info = client.msg("kernel_info_request", {})
    sentry._from_client("control", [b"client", *client.serialize(info)])
    cell = _execute(sentry, client, 'print("MRN0000001")')
    later = client.msg("kernel_info_request", {})
    sentry._from_client("shell", [b"client", *client.serialize(later)])
    # Only the first kernel_info reached the kernel: no code runs before the guard exists, and
    # what was asked after the cell waits behind it.
    assert _types_inner(sentry, "inner_control") == ["kernel_info_request"]
    assert _types_inner(sentry, "inner_shell") == []
    _kernel_says(sentry, kernel, info, "status", {"execution_state": "busy"})
    _kernel_says(sentry, kernel, info, "kernel_info_reply", {"status": "ok"}, channel="control")
    _kernel_says(sentry, kernel, info, "stream", {"name": "stdout", "text": "hi"})
    _kernel_says(sentry, kernel, info, "status", {"execution_state": "idle"})
    _kernel_says(sentry, kernel, info, "status", {"execution_state": "odd", "x": 1})
    assert _types(sentry, "outer_control") == ["kernel_info_reply"]
    # The stream needs the guard, and the statuses after it keep their place behind it.
    assert _types(sentry, "outer_iopub") == ["status"]
    receipt = _sent(sentry, "outer_control")[0]["metadata"]["bedside"]["receipt"]
    assert receipt["msg_id"] and not sentry.ledger.has_header  # a receipt, no entry yet
    sentry._build_guard()
    sentry._open_guard()
    # a malformed status waited for the guard too, which turns it into a notice
    assert _types(sentry, "outer_iopub") == ["status", "stream", "status", "display_data"]
    odd = _sent(sentry, "outer_iopub")[3]
    assert odd["metadata"]["bedside"]["decision"] == "blocked"  # judged by the guard now
    assert _types_inner(sentry, "inner_shell") == ["execute_request", "kernel_info_request"]
    assert json.loads(sentry._sockets["inner_shell"].sent[0][-1])["code"] == cell["content"]["code"]  # type: ignore[attr-defined]


def test_a_guard_that_cannot_be_built_stops_the_session_with_a_notice(starting, monkeypatch):
    sentry, client, kernel = starting

    def broken(policy: Any) -> Any:
        raise OSError("/data/patients.parquet: MRN0000001 unreadable")

    monkeypatch.setattr("bedside.gateway.sentry.policy_scanner", broken)
    cell = _execute(sentry, client, "1 + 1")
    sentry._build_guard()
    with pytest.raises(GatewayError, match="cannot build its guard"):
        sentry._open_guard()
    assert _types_inner(sentry, "inner_shell") == []  # the cell never ran
    (reply,) = _sent(sentry, "outer_shell")
    assert reply["header"]["msg_type"] == "execute_reply"
    assert reply["content"]["ename"] == "BedsideSessionStopped"
    assert "cannot build its output guard (OSError)" in reply["content"]["evalue"]
    assert "MRN0000001" not in json.dumps(_sent(sentry, "outer_iopub") + [reply])
    assert reply["metadata"]["bedside"]["rule"] == "guard_unavailable"
    assert reply["parent_header"]["msg_id"] == cell["header"]["msg_id"]


def _types_inner(sentry: Sentry, name: str) -> list[str]:
    out = []
    for frames in sentry._sockets[name].sent:  # type: ignore[attr-defined]
        cut = frames.index(b"<IDS|MSG>")
        out.append(json.loads(frames[cut + 2])["msg_type"])
    return out


def test_a_new_iopub_subscriber_is_welcomed_until_the_session_records(relay):
    sentry, client, kernel = relay
    sentry._iopub_subscribed([b"\x01"])
    sentry._iopub_subscribed([b"\x00"])  # an unsubscription is not greeted
    (welcome,) = _sent(sentry, "outer_iopub")
    assert welcome["header"]["msg_type"] == "iopub_welcome"
    assert welcome["content"] == {"subscription": ""}
    assert welcome["metadata"]["bedside"]["receipt"]["msg_id"] == welcome["header"]["msg_id"]
    assert not sentry.ledger.has_header  # a receipt, no ledger entry
    # signed with the client side's key, as everything the client side receives
    frames = sentry._sockets["outer_iopub"].sent[0]  # type: ignore[attr-defined]
    assert client.deserialize(frames[frames.index(b"<IDS|MSG>") + 1 :])["msg_type"] == (
        "iopub_welcome"
    )
    _execute(sentry, client, "1 + 1")  # the header: from now on entries are written
    sent = len(sentry._sockets["outer_iopub"].sent)  # type: ignore[attr-defined]
    sentry._iopub_subscribed([b"\x01"])
    assert len(sentry._sockets["outer_iopub"].sent) == sent  # type: ignore[attr-defined]
