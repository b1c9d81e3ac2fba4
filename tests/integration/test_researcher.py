"""The researcher side on the real chain: jupyter_server + bedside extension → Enterprise Gateway →
sentry → sandboxed kernel, all on loopback.

Driven two ways: over `/api/kernels/{id}/channels` with the server token, as JupyterLab does
(`KernelSession`), and headless through `bedside run`. Fixtures `hospital`, `eg_gateway` and
`start_gateway` come from tests/integration/conftest.py (Enterprise Gateway helpers).
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from bedside.extension._headless import KernelSession, run_notebook
from bedside.ledger import Verifier, open_checkpoint, verify_ledger

from ._researcher import (
    both_ledgers,
    entries,
    hospital_ledger,
    intent,
    study_session,
    write_notebook,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def check_one_entry_per_message(
    ledger: list[dict[str, Any]], sent: list[str], received: list[dict[str, Any]]
) -> None:
    requests = [e["msg_id"] for e in ledger if e["kind"] == "execute_request"]
    assert sorted(requests) == sorted(sent)
    outputs = [e["msg_id"] for e in ledger if e["kind"] == "output"]
    assert len(outputs) == len(set(outputs))
    for msg in received:
        receipt = msg["metadata"]["bedside"]["receipt"]
        assert outputs.count(receipt["msg_id"]) == 1, msg["header"]["msg_type"]


def test_lab_protocol_real_chain(tmp_path, hospital, eg_gateway) -> None:
    """Cells through the websocket as JupyterLab sends them: every message verified, both
    ledgers verify, hold one entry per request and per output, and agree after the seal."""
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())
    sent: list[str] = []
    received: list[dict[str, Any]] = []

    async def scenario() -> tuple[dict, dict]:
        async with study_session(tmp_path, eg_gateway, notebooks) as (server, client):
            await client.request("kernel_info_request", {}, timeout=120)
            for code in (
                "1 + 1",
                "print('hello from the hospital')",
                "import json; print(json.dumps({'n': 3}))",
            ):
                reply, iopub = await client.execute(code, timeout=120)
                assert reply["content"]["status"] == "ok", reply["content"]
                sent.append(reply["parent_header"]["msg_id"])
                received.extend([*iopub, reply])
            for msg in received:
                assert msg["metadata"]["bedside"]["verified"] is True, msg["metadata"]
            # Enterprise Gateway's kernel_info "nudge" channel may take a receipt with an
            # entry (a gap our copy fills after GAP_GRACE): wait until nothing waits
            for _ in range(200):
                before = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
                if not before["entries_in_flight"] and before["last_checkpoint"]:
                    break
                await asyncio.sleep(0.05)
            sealed = await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
            listing = await client.api("GET", "/bedside/sessions")
            return before, sealed | {"listing": listing}

    before, sealed = asyncio.run(scenario())
    assert before["state"] == "active" and before["unverified_messages"] == 0
    assert before["custodian_key"] == hospital.verifier_key
    assert sealed["state"] == "sealed"
    assert any(s["kernel_id"] == sealed["kernel_id"] for s in sealed["listing"]["sessions"])
    keys, mine, theirs = both_ledgers(tmp_path, hospital, sealed)
    verify_ledger(mine, keys, openings=mine.with_suffix(".openings"))
    verify_ledger(theirs, keys)
    assert entries(mine) == entries(theirs)
    check_one_entry_per_message(entries(mine), sent, received)
    # the last checkpoint we hold carries both signatures
    _, names = open_checkpoint(
        before["last_checkpoint"], [Verifier(hospital.verifier_key), Verifier(keys[1])]
    )
    assert len(names) == 2
    assert any(e["kind"] == "checkpoint" for e in entries(theirs))


def test_entries_sent_to_another_connection_are_fetched(tmp_path, hospital, eg_gateway) -> None:
    """A second client at the hospital's gateway (and Enterprise Gateway's own kernel_info
    "nudge" channels, opened for each websocket) gets replies whose receipts carry ledger
    entries the researcher never sees: the extension fetches them, and both ledgers still
    verify and agree after the seal."""
    from .conftest import GatewayKernel, connect_ws

    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())

    def elsewhere(kernel_id: str) -> None:
        other = GatewayKernel(eg_gateway, kernel_id, connect_ws(eg_gateway, kernel_id))
        try:
            other.request("kernel_info_request", {}, timeout=60)
        finally:
            other.ws.close()

    async def scenario() -> dict:
        async with study_session(tmp_path, eg_gateway, notebooks) as (server, client):
            reply, _ = await client.execute("x = 1", timeout=120)
            assert reply["content"]["status"] == "ok"
            await asyncio.to_thread(elsewhere, client.kernel_id)
            reply, _ = await client.execute("print(x + 1)", timeout=120)
            assert reply["content"]["status"] == "ok"
            return await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")

    sealed = asyncio.run(scenario())
    assert sealed["state"] == "sealed" and sealed["entries_in_flight"] == 0
    keys, mine, theirs = both_ledgers(tmp_path, hospital, sealed)
    verify_ledger(mine, keys, openings=mine.with_suffix(".openings"))
    assert entries(mine) == entries(theirs)
    # the sealed ledger ends on the checkpoint over the seal, with both signatures
    assert [e["kind"] for e in entries(mine)[-2:]] == ["seal", "checkpoint"]
    _, names = open_checkpoint(entries(mine)[-1]["note"], [Verifier(k) for k in keys])
    assert len(names) == 2


def test_websockets_dropped_and_reopened_as_jupyterlab_does(tmp_path, hospital, eg_gateway) -> None:
    """JupyterLab drops its first kernel websocket within milliseconds of opening a notebook
    cold, and any websocket when the page reloads, even mid-cell. The session belongs to the
    kernel: its intent is answered whatever the churn, entries whose receipts went to a dropped
    websocket are fetched, and both ledgers verify and agree after the seal; the researcher's
    openings open every code commitment they hold."""
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())

    async def scenario() -> dict:
        async with study_session(tmp_path, eg_gateway, notebooks) as (server, client):
            await asyncio.sleep(0.005)  # cold start: the first websocket goes at once
            await client.close(shutdown=False)
            await client.connect()
            info, _ = await client.request("kernel_info_request", {}, timeout=150)
            assert info["metadata"]["bedside"]["verified"] is True
            status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            assert status["state"] == "active", status
            # a reload mid-cell: its outputs go to a websocket nobody holds any more
            client.send("execute_request", {"code": "import time; time.sleep(0.3); x = 41"})
            await asyncio.sleep(0.05)
            await client.close(shutdown=False)
            client.client_session = uuid.uuid4().hex  # a new page, a new client id
            await client.connect()
            reply, _ = await client.execute("print(x + 1)", timeout=120)
            assert reply["content"]["status"] == "ok"
            return await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")

    sealed = asyncio.run(scenario())
    assert sealed["state"] == "sealed" and sealed["entries_in_flight"] == 0, sealed
    assert sealed["cells_run"] == 2
    keys, mine, theirs = both_ledgers(tmp_path, hospital, sealed)
    report = verify_ledger(mine, keys, openings=mine.with_suffix(".openings"))
    assert entries(mine) == entries(theirs)
    assert [e["kind"] for e in entries(mine)].count("header") == 1
    assert report.intent_signed
    # the code of the cell after the reload is opened and its researcher signature checked
    assert report.researcher_sigs_checked >= 1


def test_bedside_run_headless(tmp_path, hospital, eg_gateway, monkeypatch) -> None:
    """`bedside run` executes a notebook at the hospital and leaves a verifying ledger."""
    monkeypatch.setenv("KERNEL_USERNAME", eg_gateway.username)
    nb = write_notebook(
        tmp_path / "nb",
        ["x = 21", "print(x * 2)", "x"],
        eg_gateway.kernel_name,
        None,
    )
    intent_file = tmp_path / "intent.json"
    intent_file.write_text(json.dumps(intent()))
    result = asyncio.run(
        run_notebook(
            nb,
            gateway_url=eg_gateway.url,
            gateway_token=eg_gateway.token,
            intent_file=str(intent_file),
            out_dir=tmp_path / "out",
        )
    )
    assert not result.errors and result.unverified == 0
    assert result.status["state"] == "sealed"
    executed = nbformat.read(result.notebook, as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "42\n"
    assert executed.cells[2].outputs[0]["data"]["text/plain"] == "21"
    keys = [hospital.verifier_key, result.status["researcher_key"]]
    verify_ledger(result.ledger, keys, openings=result.openings)
    theirs = hospital_ledger(hospital, result.status["session"])
    assert entries(result.ledger) == entries(theirs)


def test_out_of_policy_intent_is_refused(tmp_path, hospital, eg_gateway) -> None:
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent(policy_id="no-such-policy"))

    async def scenario() -> tuple[dict, list, dict]:
        async with study_session(tmp_path, eg_gateway, notebooks) as (server, client):
            reply, iopub = await client.execute("print('should not run')", timeout=120)
            status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            return reply, iopub, status

    reply, iopub, status = asyncio.run(scenario())
    assert status["state"] == "refused"
    assert "no-such-policy" in status["reason"] or "policy" in status["reason"]
    assert reply["content"]["status"] == "error"
    assert "refused" in reply["content"]["evalue"]
    assert not [m for m in iopub if m["header"]["msg_type"] == "stream"]


def test_exhausted_budget_stops_the_session(tmp_path, hospital, eg_gateway) -> None:
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent(budget={"cells": 2}))

    async def scenario() -> tuple[list, dict]:
        async with study_session(tmp_path, eg_gateway, notebooks) as (server, client):
            replies = []
            for code in ("1", "2", "print('third')"):
                reply, iopub = await client.execute(code, timeout=120)
                replies.append((reply, iopub))
            status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            return replies, status

    replies, status = asyncio.run(scenario())
    assert [r["content"]["status"] for r, _ in replies] == ["ok", "ok", "error"]
    third, iopub = replies[2]
    assert "budget" in third["content"]["evalue"] or "cells" in third["content"]["evalue"]
    assert not [m for m in iopub if m["header"]["msg_type"] == "stream"]
    assert status["state"] == "budget-exhausted"
    assert status["unverified_messages"] == 0


def test_gateway_killed_mid_cell(tmp_path, hospital, start_gateway) -> None:
    """The hospital's gateway dies while a cell runs: both ledgers stay valid, the researcher's
    session is marked interrupted."""
    notebooks = tmp_path / "nb"

    async def scenario(gateway: Any) -> dict:
        write_notebook(notebooks, [], gateway.kernel_name, intent())
        async with study_session(tmp_path, gateway, notebooks, shutdown=False) as (_, client):
            reply, _ = await client.execute("print('before')", timeout=120)
            assert reply["content"]["status"] == "ok"
            client.send(
                "execute_request",
                {
                    "code": "import time\nprint('running', flush=True)\ntime.sleep(60)",
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            )
            # wait until the cell is running at the hospital
            while True:
                msg = await asyncio.wait_for(client._inbox.get(), 60)
                if msg and msg["header"]["msg_type"] == "stream":
                    break
            gateway.eg.process.send_signal(signal.SIGKILL)
            gateway.eg.process.wait()
            status: dict = {}
            for _ in range(100):
                status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
                if status["state"] == "interrupted":
                    break
                await asyncio.sleep(0.1)
            return status

    from .conftest import PLAIN, chain_kernelspec  # the eg helpers' kernelspecs

    specs = {"bedside": chain_kernelspec(hospital), "python3-plain": PLAIN}
    with start_gateway(specs, default="bedside") as gateway:
        status = asyncio.run(scenario(gateway))
    assert status["state"] == "interrupted"
    keys, mine, theirs = both_ledgers(tmp_path, hospital, status)
    verify_ledger(mine, keys, openings=mine.with_suffix(".openings"), require_checkpoint=False)
    verify_ledger(theirs, keys, require_checkpoint=False)
    # ours is a prefix of theirs: every entry we hold is the hospital's
    ours = entries(mine)
    assert ours == entries(theirs)[: len(ours)]


def test_client_without_server_token_gets_nothing(tmp_path, hospital, eg_gateway) -> None:
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())

    async def scenario() -> None:
        async with study_session(tmp_path, eg_gateway, notebooks) as (server, owner):
            await owner.execute("secret = 'x' * 3", timeout=120)
            http = AsyncHTTPClient()
            for path in (
                "/api/kernels",
                "/api/sessions",
                "/bedside/sessions",
                f"/bedside/sessions/{owner.kernel_id}",
                f"/bedside/sessions/{owner.kernel_id}/ledger",
                f"/bedside/sessions/{owner.kernel_id}/openings",
            ):
                with pytest.raises(HTTPClientError) as err:
                    await http.fetch(server.url + path, follow_redirects=False)
                assert err.value.code in (401, 403), path
            with pytest.raises(HTTPClientError) as err:
                await http.fetch(
                    HTTPRequest(
                        server.url + f"/bedside/sessions/{owner.kernel_id}/seal",
                        method="POST",
                        body=b"",
                    )
                )
            assert err.value.code in (401, 403)
            intruder = KernelSession(server.url, "not-the-token")
            intruder.kernel_id = owner.kernel_id
            with pytest.raises(HTTPClientError) as err:
                await intruder.connect()
            assert err.value.code in (401, 403)

    asyncio.run(scenario())


WALKTHROUGH = Path(__file__).resolve().parents[2] / "notebooks" / "01-walkthrough.ipynb"


def test_walkthrough_runs(tmp_path, hospital, eg_gateway, monkeypatch) -> None:
    """notebooks/01-walkthrough.ipynb through `bedside run`: the aggregate passes, the leak is
    blocked with its notice, the torch model trains at the hospital, and the ledger verifies."""
    monkeypatch.setenv("KERNEL_USERNAME", eg_gateway.username)
    nb = nbformat.read(WALKTHROUGH, as_version=4)
    nb.metadata["bedside"]["intent"]["policy_id"] = "st-elsewhere"  # the fixture hospital
    copy = tmp_path / "nb" / "01-walkthrough.ipynb"
    copy.parent.mkdir()
    nbformat.write(nb, copy)
    result = asyncio.run(
        run_notebook(
            copy,
            gateway_url=eg_gateway.url,
            gateway_token=eg_gateway.token,
            out_dir=tmp_path / "out",
            kernel_name=eg_gateway.kernel_name,
        )
    )
    log = (tmp_path / "out" / "jupyter_server.log").read_text()
    assert not result.errors, result.errors
    assert result.unverified == 0, log[-3000:]
    assert result.status["state"] == "sealed", log[-3000:]
    assert result.status["last_checkpoint"], log[-3000:]
    executed = nbformat.read(result.notebook, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "training loss" in text
    leak = next(c for c in executed.cells if "patients.head()" in c.get("source", ""))
    leak_text = json.dumps(leak.outputs)
    for mrn in hospital.frame["mrn"].head(5):
        assert mrn not in leak_text
    assert leak.outputs, "the blocked cell shows a notice"
    keys = [hospital.verifier_key, result.status["researcher_key"]]
    report = verify_ledger(result.ledger, keys, openings=result.openings)
    theirs = hospital_ledger(hospital, result.status["session"])
    assert entries(result.ledger) == entries(theirs)
    decisions = {e.get("decision") for e in entries(theirs) if e["kind"] == "output"}
    assert "released" in decisions
    # the in-kernel guard's block reaches both ledgers, marked as the kernel's, and the reports
    blocked = [
        e
        for e in entries(theirs)
        if e["kind"] == "output" and e["decision"] == "blocked" and e["rule"] == "row-level"
    ]
    assert blocked, "the leak's block is in the ledger"
    assert all(e["layer"] == "kernel" and e["kernel_decision"] == "blocked" for e in blocked)
    assert report.decisions["blocked"] >= 1 and report.stopped[("blocked", "kernel")] >= 1
    assert "blocked by kernel" in report.summary()
    assert result.status["outputs_stopped"]["blocked"]["kernel"] >= 1
    # the reviewer notebook verifies and replays what the walkthrough left, on a local kernel
    import shutil
    import sys

    from nbclient import NotebookClient

    review = tmp_path / "review"
    review.mkdir()
    shutil.copyfile(result.ledger, review / "session.ledger")
    shutil.copyfile(result.openings, review / "session.openings")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    reviewer = nbformat.read(WALKTHROUGH.with_name("02-reviewer.ipynb"), as_version=4)
    NotebookClient(
        reviewer, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(review)}}
    ).execute()
    assert (review / "replayed.ipynb").exists()
    outputs = json.dumps([c.get("outputs", []) for c in reviewer.cells], ensure_ascii=False)
    assert ": OK —" in outputs and "sealed: yes" in outputs and "Traceback" not in outputs


def test_mutual_tls_gateway(tmp_path, hospital, start_gateway) -> None:
    """The extension's TLS settings (client certificate, key and CA) reach the gateway."""
    from .conftest import chain_kernelspec

    notebooks = tmp_path / "nb"
    specs = {"bedside": chain_kernelspec(hospital)}
    with start_gateway(specs, default="bedside", mutual_tls=True) as gateway:
        assert gateway.url.startswith("https://")
        write_notebook(notebooks, [], gateway.kernel_name, intent())
        certs = gateway.certs

        async def scenario() -> tuple[dict, dict]:
            async with study_session(
                tmp_path,
                gateway,
                notebooks,
                client_cert=str(certs.client_cert),
                client_key=str(certs.client_key),
                ca_certs=str(certs.ca_cert),
            ) as (_, client):
                reply, _ = await client.execute("print('over mutual TLS')", timeout=120)
                status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
                return reply, status

        reply, status = asyncio.run(scenario())
    assert reply["content"]["status"] == "ok"
    assert reply["metadata"]["bedside"]["verified"] is True
    assert status["state"] == "active" and status["unverified_messages"] == 0


def test_anchor_endpoint_on_devchain(tmp_path, hospital, eg_gateway, monkeypatch) -> None:
    """`POST /bedside/sessions/{id}/anchor` on a ganache dev chain: refused before the seal,
    then the last cosigned checkpoint goes on chain and the researcher's ledger verifies with
    its anchor entry against the chain; anchoring the same checkpoint twice is refused."""
    from bedside.extension._demo import deploy_demo_contract

    from . import test_anchor_devchain as chain

    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent())
    (tmp_path / "ganache").mkdir()
    with chain.start_devchain(tmp_path / "ganache") as rpc:
        # as `bedside demo` deploys it and configures the extension
        settings = deploy_demo_contract(rpc, tmp_path / "secrets")
        contract = settings["BEDSIDE_ANCHOR_CONTRACT"]
        for name, value in settings.items():
            monkeypatch.setenv(name, value)

        async def scenario() -> tuple[int, dict, int]:
            async with study_session(tmp_path, eg_gateway, notebooks) as (server, client):
                reply, _ = await client.execute("print('to be anchored')", timeout=120)
                assert reply["content"]["status"] == "ok"
                path = f"/bedside/sessions/{client.kernel_id}"
                with pytest.raises(HTTPClientError) as early:
                    await client.api("POST", path + "/anchor")
                await client.api("POST", path + "/seal")
                anchored = await client.api("POST", path + "/anchor", timeout=300)
                with pytest.raises(HTTPClientError) as again:
                    await client.api("POST", path + "/anchor", timeout=300)
                return early.value.code, anchored, again.value.code

        early, anchored, again = asyncio.run(scenario())
        assert early == 409 and again == 409
        assert anchored["state"] == "sealed"
        anchor = anchored["anchor"]
        assert anchor["kind"] == "anchor" and anchor["chain_id"] == chain.CHAIN_ID
        assert anchor["contract"].lower() == contract.lower()
        mine = tmp_path / "sessions" / anchored["kernel_id"] / "session.ledger"
        ours = entries(mine)
        # the sealed ledger ends on a checkpoint both sides signed over the seal, and that
        # final checkpoint is the one anchored
        assert [e["kind"] for e in ours[-3:]] == ["seal", "checkpoint", "anchor"]
        assert anchor["checkpoint_index"] == len(ours) - 2
        cosigned = ours[anchor["checkpoint_index"]]
        assert cosigned["kind"] == "checkpoint" and cosigned["size"] == len(ours) - 2
        keys = [hospital.verifier_key, anchored["researcher_key"]]
        checkpoint, names = open_checkpoint(cosigned["note"], [Verifier(k) for k in keys])
        assert len(names) == 2 and checkpoint.size == len(ours) - 2  # everything up to the seal
        report = verify_ledger(
            mine, keys, openings=mine.with_suffix(".openings"), rpc=rpc, contract=contract
        )
        assert not [w for w in report.warnings if "after the latest signed checkpoint" in w]
        assert report.signed_size == len(ours) - 2 and report.sealed
        # the hospital's ledger is the researcher's, up to the anchor entry
        theirs = hospital_ledger(hospital, anchored["session"])
        assert entries(theirs) == ours[:-1]
