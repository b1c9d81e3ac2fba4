"""Sealing and catching up without the browser, on the real chain: jupyter_server + bedside
extension → Enterprise Gateway → sentry → sandboxed kernel, all on loopback.

- A researcher's websocket drops mid-cell; the cells that follow run over a new one; the
  session is sealed with no websocket open at all (the server opens its own connection). The
  researcher's ledger and openings then verify and replay with every output opened, the output
  that went to the dropped websocket included.
- Sealing when the kernel is gone from the gateway, or the gateway itself is gone, answers at
  once with the reason and leaves the session interrupted, its ledger copy valid and replayable.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from bedside.errors import LedgerError
from bedside.extension._headless import KernelSession
from bedside.ledger import verify_ledger
from bedside.ledger.verify import iter_entries
from tests._release_support import bedside_cli

from ._researcher import (
    both_ledgers,
    entries,
    hospital_ledger,
    intent,
    study_session,
    write_notebook,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def replayed_outputs(ledger: Path, openings: Path, out: Path) -> list[str]:
    """`bedside ledger replay` of the researcher's files: the text of every rebuilt output."""
    done = bedside_cli(
        "ledger", "replay", str(ledger), "--openings", str(openings), "-o", str(out), timeout=120
    )
    assert done.returncode == 0, done.stderr + done.stdout
    nb = json.loads(out.read_text())
    return [json.dumps(o) for c in nb["cells"] for o in c["outputs"]]


def check_interrupted_copy(tmp_path: Path, hospital: Any, status: dict, shown: str) -> list[dict]:
    """The researcher's copy of a session interrupted before its seal: it verifies with every
    output opened, is a prefix of the hospital's ledger, and replays showing `shown`. Returns
    the hospital's entries."""
    keys, mine, theirs = both_ledgers(tmp_path, hospital, status)
    openings = mine.with_suffix(".openings")
    report = verify_ledger(mine, keys, openings=openings, require_checkpoint=False)
    assert report.openings_missing_count == 0 and not report.sealed
    hospitals = entries(theirs)
    assert entries(mine) == hospitals[: len(entries(mine))]
    text = "\n".join(replayed_outputs(mine, openings, tmp_path / "replayed.ipynb"))
    assert shown in text, text
    return hospitals


async def seal_error(client: KernelSession) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as err:
        await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal", timeout=90)
    assert err.value.response is not None
    body = json.loads(err.value.response.body or b"{}")
    return err.value.code, str(body.get("message", body))


async def refused_seal(client: KernelSession) -> tuple[int, str, dict]:
    """A seal that fails: its HTTP status and message, and the session's status after it."""
    code, why = await seal_error(client)
    return code, why, await client.api("GET", f"/bedside/sessions/{client.kernel_id}")


async def until_recorded(ledger: Path, msg_id: str) -> None:
    """Until the hospital's ledger holds the execute_reply to `msg_id` (read-only; the sentry
    flushes within half a second)."""
    for _ in range(1200):
        try:
            for _, entry in iter_entries(ledger):
                if entry.get("msg_type") == "execute_reply" and entry.get("parent") == msg_id:
                    return
        except (LedgerError, ValueError):
            pass  # a record being written
        await asyncio.sleep(0.1)
    raise AssertionError(f"the hospital never recorded the reply to {msg_id}")


async def settled(client: KernelSession) -> None:
    """Until our copy holds every entry it has seen (a gap left by Enterprise Gateway's nudge
    channels is fetched after 0.5 s): what the hospital then loses is only what comes after."""
    for _ in range(600):
        status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
        if not status["entries_in_flight"] and status["last_checkpoint"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the session never settled: {status}")


async def one_cell_then_away(client: KernelSession, cell: str) -> None:
    """Run `cell`, wait until our copy holds every entry, and close the websocket: the browser
    is gone when what follows happens."""
    reply, _ = await client.execute(cell, timeout=150)
    assert reply["content"]["status"] == "ok"
    await settled(client)
    await client.close(shutdown=False)


def test_dropped_websocket_then_seal_without_a_browser(tmp_path, hospital, eg_gateway) -> None:
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())

    async def scenario() -> tuple[dict, dict]:
        async with study_session(tmp_path, eg_gateway, notebooks) as (_, client):
            reply, _ = await client.execute("print('before the drop')", timeout=150)
            assert reply["content"]["status"] == "ok"
            status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            # the websocket drops mid-cell, and the cell ends while no websocket is open:
            # its output and reply (and their receipts) go to nobody
            away = client.send(
                "execute_request",
                {"code": "import time; time.sleep(0.3); print('while away')"},
            )
            await asyncio.sleep(0.05)
            await client.close(shutdown=False)
            await until_recorded(hospital_ledger(hospital, status["session"]), away)
            client.client_session = uuid.uuid4().hex  # a new page, a new client id
            await client.connect()
            for code in ("print('back again')", "21 * 2"):
                reply, _ = await client.execute(code, timeout=120)
                assert reply["content"]["status"] == "ok"
            # no websocket is open when the researcher seals
            await client.close(shutdown=False)
            listed = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            sealed = await client.api(
                "POST", f"/bedside/sessions/{client.kernel_id}/seal", timeout=120
            )
            return listed, sealed

    before, sealed = asyncio.run(scenario())
    assert before["state"] == "active"
    assert sealed["state"] == "sealed" and sealed["entries_in_flight"] == 0, sealed
    assert sealed["cells_run"] == 4
    keys, mine, theirs = both_ledgers(tmp_path, hospital, sealed)
    openings = mine.with_suffix(".openings")
    assert entries(mine) == entries(theirs)
    report = verify_ledger(mine, keys, openings=openings)
    assert report.sealed and report.openings_missing_count == 0, report.summary()
    assert report.researcher_sigs_checked == 4
    # the reviewer's commands on the researcher's files
    done = bedside_cli(
        "ledger", "verify", str(mine), "--openings", str(openings),
        "--key", keys[0], "--key", keys[1], timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "0 missing" in done.stdout, done.stdout
    outputs = replayed_outputs(mine, openings, tmp_path / "replayed.ipynb")
    text = "\n".join(outputs)
    for shown in ("before the drop", "while away", "back again", "42"):
        assert shown in text, text
    assert "not opened in this openings file" not in text, text
    # the sealed ledger ends on the checkpoint over the seal, cosigned through our own link
    assert [e["kind"] for e in entries(mine)[-2:]] == ["seal", "checkpoint"]


def test_seal_when_the_kernel_is_gone(tmp_path, hospital, eg_gateway) -> None:
    """The kernel was shut down at the hospital while no browser was connected: the seal
    answers 410 with the reason, and the session is interrupted with its ledger intact."""
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())

    async def scenario() -> tuple[int, str, dict]:
        async with study_session(tmp_path, eg_gateway, notebooks) as (_, client):
            await one_cell_then_away(client, "print('the only cell')")
            await asyncio.to_thread(eg_gateway.api, "DELETE", f"/api/kernels/{client.kernel_id}")
            code, why, status = await refused_seal(client)
            again, why_again = await seal_error(client)
        assert again == 409 and "interrupted" in why_again, why_again
        return code, why, status

    code, why, status = asyncio.run(scenario())
    assert code == 410 and "no longer has kernel" in why and "ledger copy holds" in why, why
    assert status["state"] == "interrupted"
    check_interrupted_copy(tmp_path, hospital, status, "the only cell")


def test_seal_when_the_gateway_is_gone(tmp_path, hospital, start_gateway) -> None:
    """The hospital's gateway died while no browser was connected: the seal answers 502 with
    the reason at once, and the session is interrupted with its ledger valid."""
    from .conftest import chain_kernelspec

    notebooks = tmp_path / "nb"

    async def scenario(gateway: Any) -> tuple[int, str, dict]:
        write_notebook(notebooks, [], gateway.kernel_name, intent())
        async with study_session(tmp_path, gateway, notebooks, shutdown=False) as (_, client):
            await one_cell_then_away(client, "print('before the gateway died')")
            gateway.eg.process.send_signal(signal.SIGKILL)
            gateway.eg.process.wait()
            return await refused_seal(client)

    with start_gateway({"bedside": chain_kernelspec(hospital)}, default="bedside") as gateway:
        code, why, status = asyncio.run(scenario(gateway))
    assert code == 502 and "cannot reach the hospital's gateway" in why, why
    assert status["state"] == "interrupted" and "gateway" in status["reason"]
    check_interrupted_copy(tmp_path, hospital, status, "before the gateway died")


def kill_sentry(kernel_id: str) -> int:
    """SIGKILL the sentry process of a kernel (what Enterprise Gateway sees as the kernel)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "bedside.gateway.sentry" in cmdline and kernel_id in cmdline:
            os.kill(int(proc.name), signal.SIGKILL)
            return int(proc.name)
    raise AssertionError(f"no sentry process for kernel {kernel_id}")


def test_seal_after_the_kernel_died(tmp_path, hospital, eg_gateway) -> None:
    """The kernel (its sentry) died while no browser was connected; Enterprise Gateway restarts
    it into a new hospital session. The seal is not applied to that new session: it answers
    with the reason (410 when the new sentry refuses it, 502 when the gateway reports the
    restart first), and the researcher's session is interrupted with its ledger valid."""
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())

    async def scenario() -> tuple[int, str, dict]:
        async with study_session(tmp_path, eg_gateway, notebooks) as (_, client):
            await one_cell_then_away(client, "print('before it died')")
            kill_sentry(client.kernel_id)
            return await refused_seal(client)

    code, why, status = asyncio.run(scenario())
    assert code in (410, 502) and "interrupted" in why, (code, why)
    assert status["state"] == "interrupted"
    theirs = check_interrupted_copy(tmp_path, hospital, status, "before it died")
    assert not [e for e in theirs if e["kind"] == "seal"]  # nothing sealed at the hospital
