"""The session around the sentry: the researcher's intent, budgets and metering, cosigned
checkpoints and the seal, kernel and sentry crashes, and the sandboxed chain (the kernel cannot
read the custodian key). Each test starts its own sentry, since each ends its session."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    Client,
    LeakOracle,
    Mirror,
    make_hospital,
    make_patients,
    notices,
    start_sentry,
)

from bedside.gateway._session import (  # noqa: E402
    Intent,
    IntentRefused,
    check_intent,
    environment_digest,
    parse_intent,
)
from bedside.ledger import Signer, cosign, openings_path, verify_ledger  # noqa: E402
from bedside.policy import load_policy  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IDENTIFIERS = ["mrn", "name", "dob", "postcode", "phone"]


@pytest.fixture(scope="module")
def frame():
    return make_patients(800, seed=5)


@pytest.fixture
def hospital(tmp_path, frame):
    return make_hospital(tmp_path / "hospital", frame=frame, max_cells=50)


@pytest.fixture
def running(hospital, tmp_path):
    started = []

    def start(**kw):
        sentry = start_sentry(hospital, tmp_path / f"run{len(started)}", **kw)
        started.append(sentry)
        client = Client.connect(sentry)
        started.append(client)
        return sentry, client

    yield start
    for thing in reversed(started):
        if isinstance(thing, Client):
            thing.close()
        else:
            thing.stop()


def intent(hospital, researcher: Signer, **budget) -> dict:
    return {
        "intent": {
            "purpose": "length of stay by ward",
            "cohort": "all admissions",
            "model_job": "logistic regression",
            "policy_id": "st-elsewhere",
            "budget": {"cells": 4, "cpu_seconds": 600, "egress_bytes": 4000, **budget},
            "environment_digest": environment_digest(),
            "researcher_key": researcher.verifier_key,
        }
    }


def test_intent_budget_cosign_and_seal(hospital, running, tmp_path, frame):
    sentry, client = running()
    researcher = Signer.generate("researcher")
    reply = client.request("bedside_intent_request", intent(hospital, researcher))
    content = reply["content"]
    assert content["status"] == "ok", content
    assert content["header"]["index"] == 0
    assert content["header"]["entry"]["identities"]["researcher"] == researcher.verifier_key
    assert content["budget"] == {"cells": 4, "cpu_seconds": 600.0, "egress_bytes": 4000}

    reply, outputs = client.execute("1 + 1")
    assert reply["content"]["status"] == "ok"
    note = outputs[-1]["metadata"]["bedside"]["receipt"]["checkpoint"]
    # The researcher cosigns the checkpoint the sentry signed at the end of the cell.
    cosigned = cosign(note, researcher)
    reply = client.request("bedside_cosign_request", {"checkpoint": cosigned})
    assert reply["content"]["status"] == "ok", reply["content"]
    # A forged cosignature is refused.
    forged = cosign(note, Signer.generate("researcher"))
    reply = client.request("bedside_cosign_request", {"checkpoint": forged})
    assert reply["content"]["status"] == "error"

    # Egress budget: 6000 bytes of harmless text exceed the 4000-byte budget and are stopped.
    reply, outputs = client.execute("print('x' * 6000)")
    stopped = notices(outputs)
    assert stopped and stopped[0]["rule"] == "session_egress_bytes"
    assert "x" * 100 not in json.dumps(outputs, default=str)

    client.execute("2 + 2")
    client.execute("3 + 3")  # the fourth cell: the cell budget is now used up
    reply, outputs = client.execute("4 + 4")
    assert reply["content"]["status"] == "error"
    assert "cell budget (4 cells) is used up" in reply["content"]["evalue"]
    errors = [m for m in outputs if m["msg_type"] == "error"]
    assert errors and "cell budget" in errors[0]["content"]["evalue"]
    assert not [m for m in outputs if m["msg_type"] == "execute_result"]

    status = client.request("bedside_status_request", {})["content"]
    assert status["used"]["cells"] == 4
    assert "cell budget" in status["exhausted"]
    assert status["used"]["cpu_seconds"] > 0

    # Entries by index, for a researcher whose copy has a gap.
    got = client.request("bedside_entries_request", {"from": 0, "to": 3})["content"]
    assert got["status"] == "ok", got
    assert [item["index"] for item in got["entries"]] == [0, 1, 2]
    assert got["entries"][0]["entry"]["kind"] == "header"
    assert got["size"] >= status["size"]
    bad = client.request("bedside_entries_request", {"from": 5, "to": 2})["content"]
    assert bad["status"] == "error" and bad["ename"] == "BadRequest"

    sealed = client.request("bedside_seal_request", {"reason": "analysis done"})
    assert sealed["content"]["status"] == "ok", sealed["content"]
    receipt = sealed["metadata"]["bedside"]["receipt"]
    kinds = [item["entry"]["kind"] for item in receipt["entries"]]
    assert kinds == ["metering", "checkpoint", "seal"]
    metering = receipt["entries"][0]["entry"]
    assert metering["counters"]["cells"] == 4
    assert metering["counters"]["egress_bytes"] > 0
    reply, _ = client.execute("5 + 5")
    assert "sealed" in reply["content"]["evalue"]

    # The checkpoint over the seal (its note rides on the seal reply's receipt) is cosigned
    # once, and the sealed ledger ends on it; nothing else is cosigned after the seal.
    final = cosign(receipt["checkpoint"], researcher)
    done = client.request("bedside_cosign_request", {"checkpoint": final})
    assert done["content"]["status"] == "ok", done["content"]
    logged = done["metadata"]["bedside"]["receipt"]["entries"]
    assert [item["entry"]["kind"] for item in logged] == ["checkpoint"]
    assert logged[0]["entry"]["size"] == receipt["entries"][-1]["index"] + 1  # covers the seal
    again = client.request("bedside_cosign_request", {"checkpoint": final})
    assert again["content"]["ename"] == "CosignRefused"

    client.drain()
    key = hospital.signer.verifier_key
    mirror = Mirror(tmp_path / "mirror.ledger", key)
    for channel, msg in client.received:
        mirror.feed(channel, msg)
    mine = mirror.finish()
    try:
        path = sentry.ledger_path()
        report = verify_ledger(
            path, keys=[key, researcher.verifier_key], openings=openings_path(path)
        )
        assert report.sealed
        assert report.size == mine.size and report.root == mine.root()
        assert report.kinds["metering"] == 1 and report.kinds["execute_request"] == 5
        signers = {s for c in report.checkpoints for s in c.signers}
        assert signers == {"st-elsewhere", "researcher"}
        assert report.decisions["blocked"] >= 1
        assert report.signed_size == report.size - 1  # the last entry is the final checkpoint
        assert not [w for w in report.warnings if "after the latest signed checkpoint" in w]
    finally:
        mine.close()


def test_intent_out_of_policy_is_refused_and_runs_nothing(hospital, running):
    sentry, client = running()
    researcher = Signer.generate("researcher")
    reply = client.request("bedside_intent_request", intent(hospital, researcher, cells=5000))
    content = reply["content"]
    assert content["status"] == "error"
    assert "budget.cells = 5000 is above the policy's maximum of 50" in content["evalue"]
    reply, outputs = client.execute("print('should not run')")
    assert reply["content"]["status"] == "error"
    assert "intent was refused" in reply["content"]["evalue"]
    assert "should not run\n" not in [m["content"].get("text") for m in outputs]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy_id": "elsewhere"}, "unknown policy id 'elsewhere'"),
        ({"environment_digest": "sha256:" + "0" * 64}, "wrong kernel environment digest"),
        ({"budget": {"cpu_seconds": 10**9}}, "budget.cpu_seconds"),
        ({"budget": {"cells": "many"}}, "budget.cells must be a number"),
        ({"purpose": ""}, "lacks 'purpose'"),
    ],
)
def test_intent_checks(hospital, change, message):
    policy = load_policy(hospital.policy)
    raw = intent(hospital, Signer.generate("r"))["intent"] | change
    with pytest.raises(IntentRefused, match=message.replace("(", r"\(")):
        check_intent(parse_intent({"intent": raw}), policy, environment_digest())


def test_intent_without_budget_gets_the_policy_ceiling(hospital):
    policy = load_policy(hospital.policy)
    parsed = parse_intent({"purpose": "x", "policy_id": "st-elsewhere"})
    assert isinstance(parsed, Intent)
    budget = check_intent(parsed, policy, environment_digest())
    assert budget.cells == 50 and budget.egress_bytes == 50_000_000


def test_kernel_crash_gives_a_notice_not_a_hang(hospital, running):
    sentry, client = running()
    client.execute("x = 1")
    reply, outputs = client.execute("import os; os._exit(3)", timeout=60)
    assert reply["content"]["status"] == "error"
    assert "kernel stopped unexpectedly" in reply["content"]["evalue"]
    assert any(
        m["msg_type"] == "error" and "exited with status 3" in m["content"]["evalue"]
        for m in outputs
    )
    assert sentry.proc.wait(30) == 1
    path = sentry.ledger_path()
    report = verify_ledger(path, keys=[hospital.signer.verifier_key], openings=openings_path(path))
    assert report.kinds["interrupted"] == 1
    assert report.checkpoints  # the custodian signed the ledger as it stopped


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(children)
            stack.extend(children)
    return out


def test_kernel_dies_with_the_sentry(hospital, running):
    sentry, client = running()
    kernels = _descendants(sentry.proc.pid)
    assert kernels
    # The private directory a killed sentry cannot remove (the test removes it).
    private = [
        Path(arg).parents[1]
        for pid in kernels
        for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        if arg.endswith("/ipc/kernel.json")
    ]
    os.kill(sentry.proc.pid, signal.SIGKILL)
    sentry.proc.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alive = [p for p in kernels if Path(f"/proc/{p}").exists()]
        # a zombie waiting for init to reap it is dead too
        alive = [p for p in alive if "State:\tZ" not in Path(f"/proc/{p}/status").read_text()]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive
    for path in private:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(
    __import__("shutil").which("bwrap") is None, reason="bubblewrap missing: run `make system`"
)
def test_sandboxed_kernel_cannot_read_the_custodian_key_and_leaks_nothing(hospital, running, frame):
    sentry, client = running(sandbox=True)
    secret = hospital.key.read_text().strip()
    reply, outputs = client.execute(
        f"try:\n    print(open({str(hospital.key)!r}).read())\n"
        f"except OSError as exc:\n    print(type(exc).__name__)"
    )
    texts = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert texts.strip() in ("FileNotFoundError", "PermissionError")
    assert secret not in json.dumps([m for _, m in client.received], default=str)
    # The data is readable inside (read-only), and rows still do not leave.
    oracle = LeakOracle(frame, IDENTIFIERS)
    reply, outputs = client.execute(
        f"import pandas as pd\ndf = pd.read_parquet({str(hospital.data)!r})\nprint(df.head())"
    )
    assert notices(outputs)[0]["rule"] == "identifier"
    assert "WITHOUT the hospital sandbox" not in json.dumps(outputs, default=str)
    for msg in outputs:
        assert not oracle.leaks(msg)
    # No network inside the sandbox.
    reply, outputs = client.execute(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
        "except OSError as exc:\n    print('no network:', type(exc).__name__)"
    )
    assert any("no network" in m["content"].get("text", "") for m in outputs)


def test_cpu_budget_interrupts_the_cell_and_stops_the_session(hospital, running):
    sentry, client = running()
    researcher = Signer.generate("researcher")
    reply = client.request(
        "bedside_intent_request", intent(hospital, researcher, cells=10, cpu_seconds=4)
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    reply, _ = client.execute("x = 0\nwhile True:\n    x += 1", timeout=90)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    reply, _ = client.execute("1 + 1")
    assert "CPU budget (4 s) is used up" in reply["content"]["evalue"]
