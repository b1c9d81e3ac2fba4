"""The sentry from the attacker's side: a plain ipykernel (no in-kernel guard at all) behind the
sentry, driven by jupyter_client. Whatever the kernel sends, the client must receive no
identifier value on any channel, ordinary analysis must still come through, every message must
carry a receipt that verifies, and the hospital ledger must verify.

One sentry and kernel serve the whole module (started once); the kernel is unsandboxed here
(`--no-sandbox`) so that the sentry alone is under test. test_sentry_session.py covers the
sandboxed chain, intents, budgets and crashes.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    IDENTIFIERS,
    LeakOracle,
    Mirror,
    corpus,
    make_patients,
    notices,
    run_leak_cell,
)

from bedside.ledger import openings_path, verify_ledger  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def frame():
    return make_patients(5000, seed=11)


@pytest.fixture(scope="module")
def oracle(frame):
    return LeakOracle(frame, IDENTIFIERS)


def test_leak_corpus_leaks_nothing_on_any_channel(world, oracle):
    sentry, client = world
    blocked_rules = {}
    for case in corpus("leaks.yaml"):
        messages = run_leak_cell(client, case)
        leaked = oracle.leaks_shown(messages)
        assert not leaked, f"{case['id']}: leaked {leaked}"
        blocked_rules[case["id"]] = sorted({n["rule"] for n in notices(messages)})
    # The cells that print rows must have been stopped by the sentry, naming the rule.
    for case_id in ("L01", "L05", "L07", "L09", "L12", "L16", "L18", "L20", "L26", "L37"):
        assert "identifier" in blocked_rules[case_id], (case_id, blocked_rules[case_id])
    # Notices name the rule and say so, never the value.
    assert "sentry" in sentry.log()


def test_hostile_raw_zmq_on_the_kernel_sockets_leaks_nothing(world, oracle):
    """Code that bypasses every in-kernel path and writes signed frames on the kernel's own
    sockets (iopub and shell) with the kernel's key is still scanned by the sentry."""
    _, client = world
    before = len(client.received)
    reply, _ = client.execute(
        textwrap.dedent(
            """
            import json, hmac, hashlib, uuid
            k = get_ipython().kernel
            key = k.session.key
            def frames(msg_type, content, parent):
                h = json.dumps({"msg_id": uuid.uuid4().hex, "msg_type": msg_type,
                                "username": "x", "session": "x", "date": "", "version": "5.3"})
                parts = [h.encode(), json.dumps(parent, default=str).encode(), b"{}",
                         json.dumps(content).encode()]
                mac = hmac.new(key, digestmod=hashlib.sha256)
                for p in parts:
                    mac.update(p)
                return [b"<IDS|MSG>", mac.hexdigest().encode(), *parts]
            parent = k.get_parent("shell")["header"]
            rows = df.head(5).to_csv()
            sock = k.iopub_thread.socket
            k.iopub_thread.schedule(lambda: sock.send_multipart(
                [b"kernel.x.stream", *frames("stream", {"name": "stdout", "text": rows}, parent)]))
            k.iopub_thread.schedule(lambda: sock.send_multipart(
                [b"x", *frames("display_data", {"data": {"text/plain": rows}, "metadata": {}},
                               parent)]))
            # a forged reply routed to the requester's identity on the shell socket
            idents = k._parent_ident["shell"]
            stream = k.shell_stream
            stream.io_loop.add_callback(lambda: stream.socket.send_multipart([*idents, *frames(
                "complete_reply", {"status": "ok", "matches": list(df.name.head(5)),
                                   "cursor_start": 0, "cursor_end": 0, "metadata": {}}, parent)]))
            """
        )
    )
    time.sleep(1.0)
    client.drain()
    messages = [m for _, m in client.received[before:]]
    for msg in messages:
        assert not oracle.leaks(msg), msg["msg_type"]
    assert any(n["rule"] == "identifier" for n in notices(messages))


def test_wrongly_signed_and_malformed_kernel_messages_are_dropped_and_logged(world, oracle):
    sentry, client = world
    dropped_before = sentry.log().count("dropped a message from the kernel")
    before = len(client.received)
    client.execute(
        textwrap.dedent(
            """
            k = get_ipython().kernel
            rows = df.head(5).to_csv()
            sock = k.iopub_thread.socket
            bad = [b"t", b"<IDS|MSG>", b"0" * 64, b'{"msg_id": "1", "msg_type": "stream"}',
                   b"{}", b"{}", ('{"name": "stdout", "text": %s}' % repr(rows)).encode()]
            k.iopub_thread.schedule(lambda: sock.send_multipart(bad))
            k.iopub_thread.schedule(lambda: sock.send_multipart([b"no delimiter", b"junk"]))
            from jupyter_client.session import Session
            wrong = Session(key=b"not-the-kernel-key")
            wrong.send(k.iopub_socket, "stream", {"name": "stdout", "text": rows},
                       parent=k.get_parent("shell"))
            """
        )
    )
    time.sleep(1.0)
    client.drain()
    for _, msg in client.received[before:]:
        assert not oracle.leaks(msg)
    log = sentry.log()
    assert log.count("dropped a message from the kernel") >= dropped_before + 3
    assert "bad HMAC signature" in log
    assert "no <IDS|MSG> delimiter" in log


def test_wrongly_signed_client_message_is_dropped(world):
    sentry, client = world
    from jupyter_client.session import Session

    forged = Session(key=b"guessed")
    msg = forged.msg("execute_request", {"code": "print('ran')", "silent": False})
    forged.send(client.kc.shell_channel.socket, msg)
    time.sleep(0.5)
    assert "dropped a message from the client side on shell: bad HMAC signature" in sentry.log()


def test_utility_corpus_comes_through(world, oracle):
    _, client = world
    for case in corpus("utility.yaml"):
        reply, outputs = client.execute(case["cell"], timeout=180)
        blocked = [n for n in notices(outputs) if n["decision"] == "blocked"]
        assert not blocked, f"{case['id']}: blocked {blocked}"
        if case["id"] in ("U21", "U22"):
            assert reply["content"]["status"] == "error"
            errors = [m for m in outputs if m["msg_type"] == "error"]
            assert errors and errors[0]["content"]["ename"] in ("NameError", "KeyError")
        else:
            assert reply["content"]["status"] == "ok", (case["id"], reply["content"])
            shown = [
                m for m in outputs if m["msg_type"] in ("stream", "execute_result", "display_data")
            ]
            assert shown, case["id"]
        for msg in outputs:
            assert not oracle.leaks(msg)


def test_stdin_prompt_is_guarded_and_input_reaches_the_kernel(world, oracle):
    _, client = world
    before = len(client.received)
    reply, outputs = client.execute(
        "answer = input(df.name.iloc[0] + '? ')\nprint(len(answer))", stdin_reply="hello"
    )
    assert reply["content"]["status"] == "ok"
    prompts = [m for ch, m in client.received[before:] if ch == "stdin"]
    assert prompts and "blocked" in prompts[0]["content"]["prompt"]
    assert any(m["msg_type"] == "stream" and "5" in m["content"]["text"] for m in outputs)
    for _, msg in client.received[before:]:
        assert not oracle.leaks(msg)


def test_mime_types_outside_the_allowlist_are_dropped(world):
    _, client = world
    _, outputs = client.execute(
        "from IPython.display import display\n"
        "display({'text/plain': 'summary', 'application/javascript': 'alert(1)'}, raw=True)\n"
        "display({'application/javascript': 'alert(2)'}, raw=True)"
    )
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    assert len(shown) == 2
    assert set(shown[0]["content"]["data"]) == {"text/plain"}
    assert shown[0]["metadata"]["bedside"]["decision"] == "redacted"
    assert shown[1]["metadata"]["bedside"]["rule"] == "mime_allow"
    assert shown[1]["metadata"]["bedside"]["decision"] == "blocked"
    assert "alert" not in json.dumps(shown[1]["content"])


def test_receipts_verify_and_both_ledgers_agree(world, tmp_path):
    """Run last in the module: every message received so far carries a valid receipt; the
    researcher-side mirror rebuilt from receipts alone has the hospital ledger's root; the
    hospital ledger verifies with the custodian key, its openings and the latest checkpoint."""
    sentry, client = world
    client.execute("1 + 1")
    client.drain()
    key = sentry.hospital.signer.verifier_key
    mirror = Mirror(tmp_path / "mirror.ledger", key)
    notes = []
    for channel, msg in client.received:
        mirror.feed(channel, msg)
        receipt = msg["metadata"]["bedside"]["receipt"]
        if "checkpoint" in receipt:
            notes.append(receipt["checkpoint"])
    assert len(notes) > 10
    mirror_ledger = mirror.finish()
    try:
        path = sentry.ledger_path()
        report = verify_ledger(
            path,
            keys=[key],
            openings=openings_path(path),
            checkpoints=[notes[-1]],
            require_checkpoint=False,
        )
        assert report.size >= mirror_ledger.size
        assert report.header["kind"] == "header"
        assert report.decisions["blocked"] > 0 and report.decisions["released"] > 0
        # One execute_request entry per cell the client sent.
        sent = sum(
            1 for ch, m in client.received if ch == "shell" and m["msg_type"] == "execute_reply"
        )
        assert report.kinds["execute_request"] == sent
        # The mirror (entries from receipts) is a prefix of the hospital copy.
        hospital = verify_ledger(
            path, keys=[key], require_checkpoint=False, checkpoints=[notes[-1]]
        )
        assert hospital.size >= mirror_ledger.size
    finally:
        mirror_ledger.close()
