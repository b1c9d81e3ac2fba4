"""A large output goes on to the browser once its receipt is checked; its ledger entry and
opening are written just after (`SessionMirror._defer`, `settle`). What that must not change:
a message whose receipt fails anywhere is still shown unverified, the copy written is byte for
byte the one the direct path writes, every use of the copy sees the entry, and a server killed
between the two leaves a valid ledger."""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bedside.extension import mirror as mirror_module
from bedside.extension.connection import Parsed
from bedside.extension.mirror import SessionMirror, new_message
from bedside.ledger import Ledger, Signer, canonical_json, verify_ledger
from bedside.ledger.log import openings_path
from bedside.ledger.openings import iter_openings

BIG = "x" * 300_000 + "\n"  # above PREPARE_MIN_BYTES (256 KiB): the deferred path
INTENT = {"purpose": "t", "cohort": "all", "model_job": "none", "policy_id": "demo"}
HERE = Path(__file__).resolve().parent


def _mirror(path: Path, signer: Signer | None = None) -> SessionMirror:
    return SessionMirror(
        kernel_id="k1", directory=path, signer=signer or Signer.generate("r"), intent=INTENT
    )


def _deliver(mirror: SessionMirror, msg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """As the connection does: parse, check, write out for the browser, then settle."""
    parsed = Parsed(json.dumps(msg))
    verdict = mirror.observe_reply(parsed.msg)
    seen = json.loads(parsed.dumps())
    return verdict, seen


def _resign(hospital: Any, msg: dict[str, Any]) -> None:
    receipt = msg["metadata"]["bedside"]["receipt"]
    body = {k: v for k, v in receipt.items() if k != "sig"}
    receipt["sig"] = base64.b64encode(hospital.signer.sign(canonical_json(body))).decode()


def _session(tmp_path: Path, standin: Any) -> tuple[Any, SessionMirror, list[dict[str, Any]]]:
    hospital = standin(tmp_path)
    mirror = _mirror(tmp_path / "researcher")
    sent: list[dict[str, Any]] = []
    mirror.send = sent.append
    assert mirror.observe_reply(hospital.intent(mirror.intent_request())).verified
    return hospital, mirror, sent


def _cell(mirror: SessionMirror, hospital: Any, text: str) -> list[dict[str, Any]]:
    request = new_message("execute_request", {"code": "print(2)"}, session="b")
    mirror.observe_request(request)
    return hospital.execute(request, text)


def test_the_entry_is_written_after_the_message_and_before_any_use(
    tmp_path: Path, standin: Any
) -> None:
    hospital, mirror, sent = _session(tmp_path, standin)
    busy, stream, reply, idle = _cell(mirror, hospital, BIG)
    assert _deliver(mirror, busy)[0].verified
    before = mirror._ledger.size if mirror._ledger else 0
    verdict, seen = _deliver(mirror, stream)
    assert verdict.verified, verdict.reason
    assert seen["metadata"]["bedside"]["verified"] is True
    # checked (root included) and shown, not yet written: the connection settles after sending
    assert mirror._deferred is not None
    assert mirror._ledger is not None and mirror._ledger.size == before
    # any use of the copy writes it first: here the status the REST API reports
    assert mirror.status()["entries"] == before + 1
    assert mirror._deferred is None
    assert mirror.ledger is not None and mirror.ledger.root() == hospital.ledger.root_at(before + 1)
    for msg in (reply, idle):
        assert _deliver(mirror, msg)[0].verified
        mirror.settle()
    for cosign in sent:
        assert mirror.observe_reply(hospital.cosign(cosign)).verified
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    report = verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    assert report.kinds["output"] >= 4


def test_deferred_and_direct_copies_are_the_same_bytes(tmp_path: Path, standin: Any) -> None:
    """Two servers with one researcher key see the same messages; one writes every entry before
    the message goes on. Their ledger and openings files are identical."""
    hospital = standin(tmp_path)
    signer = Signer.generate("r")
    deferred, direct = _mirror(tmp_path / "a", signer), _mirror(tmp_path / "b", signer)
    direct._defer = lambda head, msg: False  # type: ignore[method-assign]
    sent: list[dict[str, Any]] = []
    deferred.send = sent.append
    direct.send = lambda msg: None
    answer = hospital.intent(deferred.intent_request())
    assert deferred.observe_reply(copy.deepcopy(answer)).verified
    # the same intent (same key, same signature) asked again: the sentry's first answer again
    assert direct.observe_reply(hospital.intent(direct.intent_request())).verified
    taken = 0
    for text in (BIG, "2\n", "é€" + BIG, BIG + "é€", BIG):
        request = new_message("execute_request", {"code": "print(2)"}, session="b")
        deferred.observe_request(request)
        direct.observe_request(copy.deepcopy(request))
        messages = hospital.execute(request, text)
        if text == BIG + "é€":  # the shell reply overtakes the stream on its own socket
            messages[1], messages[2] = messages[2], messages[1]
        for msg in messages:
            for mirror in (deferred, direct):
                verdict, _ = _deliver(mirror, copy.deepcopy(msg))
                assert verdict.verified, verdict.reason
                taken += mirror is deferred and mirror._deferred is not None
                mirror.settle()
        for cosign in sent:
            answer = hospital.cosign(cosign)
            for mirror in (deferred, direct):
                assert mirror.observe_reply(copy.deepcopy(answer)).verified
        sent.clear()
    assert taken == 3  # the deferred path was taken, but not for the overtaken stream
    assert direct._deferred is None
    deferred.close()
    direct.close()
    for name in ("session.ledger", "session.openings"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("tamper", ["root", "commitment", "digest", "signature", "entry"])
def test_a_large_output_whose_receipt_fails_is_shown_unverified(
    tmp_path: Path, standin: Any, tamper: str
) -> None:
    """Every check the direct path makes still decides the verdict before the message goes
    on: a wrong root, a commitment that does not open, content that is not what was signed,
    a bad signature, an entry that breaks the schema; nothing is left to write afterwards."""
    hospital, mirror, _ = _session(tmp_path, standin)
    busy, stream, _, _ = _cell(mirror, hospital, BIG)
    assert _deliver(mirror, busy)[0].verified
    receipt = stream["metadata"]["bedside"]["receipt"]
    item = receipt["entries"][0]
    if tamper == "root":
        receipt["root"] = "00" * 32
    elif tamper == "commitment":
        item["entry"] = {**item["entry"], "content": "ab" * 32}
    elif tamper == "digest":
        stream["content"] = {**stream["content"], "text": BIG.replace("x", "y", 1)}
    elif tamper == "entry":
        item["entry"] = {**item["entry"], "decision": "maybe"}
    if tamper != "digest":
        _resign(hospital, stream)
    if tamper == "signature":
        receipt["sig"] = base64.b64encode(b"\0" * 64).decode()
    verdict, seen = _deliver(mirror, stream)
    assert not verdict.verified
    assert seen["metadata"]["bedside"]["verified"] is False
    assert seen["metadata"]["bedside"]["unverified_reason"]
    assert mirror._deferred is None
    assert mirror.unverified == 1
    logged = [json.loads(line) for line in mirror.unverified_log.read_text().splitlines()]
    assert logged[-1]["msg_id"] == stream["header"]["msg_id"]


_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from conftest import StandInHospital
    from bedside.extension.connection import Parsed
    from bedside.extension.mirror import SessionMirror, new_message
    from bedside.ledger import Signer

    root, when = Path(sys.argv[1]), sys.argv[3]
    hospital = StandInHospital(root)
    mirror = SessionMirror(kernel_id="k", directory=root / "researcher",
                           signer=Signer.generate("r"), intent={"purpose": "t"})
    sent = []
    mirror.send = sent.append
    assert mirror.observe_reply(hospital.intent(mirror.intent_request())).verified
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    (root / "keys.json").write_text(json.dumps(keys))
    for cell in range(2):
        request = new_message("execute_request", {"code": "print(2)"}, session="b")
        mirror.observe_request(request)
        for msg in hospital.execute(request, "x" * 300_000 + "\\n"):
            parsed = Parsed(json.dumps(msg))
            assert mirror.observe_reply(parsed.msg).verified
            parsed.dumps()
            if cell == 1 and msg["header"]["msg_type"] == "stream":
                if when != "before-write":
                    mirror.settle()
                if when == "after-flush":
                    mirror.ledger.flush()
                (root / "expected").write_text(str(mirror._ledger.size))
                os.kill(os.getpid(), signal.SIGKILL)
            mirror.settle()
        for cosign in sent:
            assert mirror.observe_reply(hospital.cosign(cosign)).verified
        sent.clear()
        mirror.ledger.flush()
    """
)


@pytest.mark.parametrize("when", ["before-write", "after-write", "after-flush"])
def test_a_server_killed_around_a_deferred_entry_leaves_a_valid_ledger(
    tmp_path: Path, when: str
) -> None:
    """SIGKILL just after a large output was shown verified (its entry not yet written), just
    after it was written, or after the copy was flushed: the copy on disk opens and verifies,
    with its openings, up to what reached the disk, and holds no entry without its opening."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(HERE), when],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    keys = json.loads((tmp_path / "keys.json").read_text())
    ledger_path = tmp_path / "researcher" / "session.ledger"
    with Ledger.open(ledger_path) as ledger:  # (cuts a record a full buffer wrote in part)
        size = ledger.size
    expected = int((tmp_path / "expected").read_text())
    assert size <= expected and size >= expected - 8  # the first cell at least, flushed
    if when == "after-flush":
        assert size == expected
    report = verify_ledger(
        ledger_path,
        keys,
        openings=ledger_path.with_suffix(".openings"),
        require_checkpoint=False,
    )
    assert report.openings_missing_count == 0
    assert os.path.getsize(ledger_path.with_suffix(".openings")) > 300_000


MB = "x" * 1_000_000 + "\n"


@contextmanager
def _worker_busy() -> Iterator[None]:
    """The openings worker held by another job, as on a loaded machine where it waits for a
    core: a megabyte's opening is then still queued when its entry is written."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    held = mirror_module._OPENINGS.submit(hold)
    started.wait(30)
    try:
        yield
    finally:
        release.set()
        held.result(30)


def test_a_queued_opening_is_written_by_the_event_loop_thread(tmp_path: Path, standin: Any) -> None:
    """The worker has not started on a megabyte's opening when its entry is written: the job is
    cancelled and the ledger writes the record from the raw bytes, the same as the hospital's;
    the copy verifies and nothing is left for the worker."""
    hospital, mirror, sent = _session(tmp_path, standin)
    with _worker_busy():
        busy, stream, reply, idle = _cell(mirror, hospital, MB)
        assert _deliver(mirror, busy)[0].verified
        verdict, seen = _deliver(mirror, stream)
        assert verdict.verified, verdict.reason
        assert seen["metadata"]["bedside"]["verified"] is True
        assert seen["content"] == stream["content"]
        deferred = mirror._deferred
        assert deferred is not None
        mirror.settle()  # as the connection does once the message has gone on
        assert deferred.opening.future.cancelled()
        for msg in (reply, idle):
            assert _deliver(mirror, msg)[0].verified
            mirror.settle()
    for cosign in sent:
        assert mirror.observe_reply(hospital.cosign(cosign)).verified
    mirror.close()
    keys = [hospital.signer.verifier_key, mirror.signer.verifier_key]
    verify_ledger(mirror.ledger_path, keys, openings=mirror.openings_path)
    hospital.ledger.flush()
    theirs = {o.index: o for o in iter_openings(openings_path(hospital.ledger.path))}
    ours = list(iter_openings(mirror.openings_path))
    assert any(len(o.content) > len(MB) for o in ours)
    for opening in ours:
        assert opening == theirs[opening.index]


@pytest.mark.parametrize("tamper", ["digest", "commitment", "no-receipt"])
def test_a_tampered_megabyte_is_unverified_with_the_worker_busy(
    tmp_path: Path, standin: Any, tamper: str
) -> None:
    """From the browser's side, with the openings worker busy: a megabyte changed after it was
    signed, one whose commitment does not open, and one without a receipt are each shown
    unverified and logged, never forwarded as verified, and leave nothing to write."""
    hospital, mirror, _ = _session(tmp_path, standin)
    with _worker_busy():
        busy, stream, _, _ = _cell(mirror, hospital, MB)
        assert _deliver(mirror, busy)[0].verified
        size = mirror.ledger.size if mirror.ledger else 0
        if tamper == "digest":
            stream["content"] = {**stream["content"], "text": MB.replace("x", "y", 1)}
        elif tamper == "commitment":
            item = stream["metadata"]["bedside"]["receipt"]["entries"][0]
            item["entry"] = {**item["entry"], "content": "ab" * 32}
            _resign(hospital, stream)
        else:
            del stream["metadata"]["bedside"]["receipt"]
        verdict, seen = _deliver(mirror, stream)
        mirror.settle()
    assert not verdict.verified
    assert seen["metadata"]["bedside"]["verified"] is False
    assert seen["metadata"]["bedside"]["unverified_reason"]
    assert mirror._deferred is None
    assert mirror.ledger is not None and mirror.ledger.size == size
    logged = [json.loads(line) for line in mirror.unverified_log.read_text().splitlines()]
    assert logged[-1]["msg_id"] == stream["header"]["msg_id"]
