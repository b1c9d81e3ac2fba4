"""jupyter_server with the bedside extension, driven over HTTP and the kernel websocket the way
JupyterLab drives it, against a stand-in gateway (the real chain is in tests/integration)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import nbformat
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from bedside.extension._headless import KernelSession, ResearcherServer
from bedside.ledger import Ledger, verify_ledger

sys.path.insert(0, str(Path(__file__).parent))
from gateway_standin import StandInGateway  # noqa: E402

pytestmark = pytest.mark.timeout(120)

INTENT = {"purpose": "test", "cohort": "all", "model_job": "none", "policy_id": "demo"}


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "nb"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hospital", "display_name": "Hospital", "language": "py"}
    nb.metadata["bedside"] = {"intent": INTENT}
    nb.cells = [nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_code_cell("print('hi')")]
    nbformat.write(nb, d / "study.ipynb")
    return d


def _server(tmp_path: Path, gateway: StandInGateway, notebook_dir: Path) -> ResearcherServer:
    return ResearcherServer(
        root_dir=notebook_dir,
        gateway_url=gateway.url,
        sessions_dir=tmp_path / "sessions",
        researcher_key_file=str(tmp_path / "researcher.key"),
        log_path=tmp_path / "server.log",
    )


@pytest.fixture
def gateway(tmp_path: Path, standin):
    gw = StandInGateway(tmp_path / "hospital", standin)
    gw.start()
    yield gw
    gw.stop()


def test_lab_protocol_cells_verified_and_ledgers_agree(tmp_path, gateway, notebook_dir) -> None:
    async def scenario() -> None:
        with _server(tmp_path, gateway, notebook_dir) as server:
            client = KernelSession(server.url, server.token)
            await client.start("study.ipynb", "hospital")
            try:
                info, _ = await client.request("kernel_info_request", {})
                assert info["metadata"]["bedside"]["verified"] is True
                for code in ("1 + 1", "print('hi')"):
                    reply, iopub = await client.execute(code)
                    assert reply["content"]["status"] == "ok"
                    assert all(m["metadata"]["bedside"]["verified"] for m in iopub + [reply])
                    stream = [m for m in iopub if m["header"]["msg_type"] == "stream"]
                    assert stream[0]["content"]["text"] == f"ran: {code}\n"
                # control replies never reach the browser
                await asyncio.sleep(0.2)
                assert all(
                    not (m or {}).get("header", {}).get("msg_type", "").startswith("bedside_")
                    for m in list(client._inbox._queue)  # type: ignore[attr-defined]
                )
                status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
                sealed = await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
                listed = await client.api("GET", "/bedside/sessions")
                ledger = await client.api("GET", f"/bedside/sessions/{client.kernel_id}/ledger")
                with pytest.raises(HTTPClientError) as err:
                    await client.api("POST", f"/bedside/sessions/{client.kernel_id}/anchor")
                # no chain configured here (tests/integration anchors on ganache)
                assert err.value.code == 503
                assert b"BEDSIDE_ANCHOR_RPC" in err.value.response.body
            finally:
                await client.close()
        assert status["state"] == "active" and status["unverified_messages"] == 0
        assert sealed["state"] == "sealed"
        assert [s["kernel_id"] for s in listed["sessions"]] == [client.kernel_id]
        hospital = gateway.kernels[client.kernel_id]
        hospital.ledger.flush()
        assert ledger == hospital.ledger.path.read_bytes()
        assert status["root"] is not None
        keys = [hospital.signer.verifier_key, status["researcher_key"]]
        session_dir = tmp_path / "sessions" / client.kernel_id
        verify_ledger(
            session_dir / "session.ledger", keys, openings=session_dir / "session.openings"
        )
        # the intent came from the notebook metadata, with the researcher's key added
        intent = next(
            r for r in gateway.requests if r["header"]["msg_type"].endswith("intent_request")
        )
        assert intent["content"]["intent"]["purpose"] == "test"

    asyncio.run(scenario())


def test_refused_intent_answers_cells_with_the_reason(tmp_path, standin, notebook_dir) -> None:
    gw = StandInGateway(tmp_path / "hospital", standin, refuse="unknown policy id 'demo'")
    gw.start()

    async def scenario() -> None:
        with _server(tmp_path, gw, notebook_dir) as server:
            client = KernelSession(server.url, server.token)
            await client.start("study.ipynb", "hospital")
            try:
                reply, iopub = await client.execute("1 + 1")
                status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            finally:
                await client.close()
        assert reply["content"]["status"] == "error"
        assert "unknown policy id" in reply["content"]["evalue"]
        assert any(m["header"]["msg_type"] == "error" for m in iopub)
        assert status["state"] == "refused"
        # the refused cell never reached the hospital
        assert not [r for r in gw.requests if r["header"]["msg_type"] == "execute_request"]

    try:
        asyncio.run(scenario())
    finally:
        gw.stop()


def test_no_token_gets_nothing(tmp_path, gateway, notebook_dir) -> None:
    async def scenario() -> None:
        with _server(tmp_path, gateway, notebook_dir) as server:
            http = AsyncHTTPClient()
            paths = (
                "/bedside/sessions",
                "/api/kernels",
                "/api/sessions",
                "/bedside/sessions/x/ledger",
            )
            for path in paths:
                with pytest.raises(HTTPClientError) as err:
                    await http.fetch(server.url + path, follow_redirects=False)
                assert err.value.code in (401, 403)
            with pytest.raises(HTTPClientError) as err:
                await http.fetch(
                    HTTPRequest(server.url + "/bedside/sessions/x/seal", method="POST", body=b"")
                )
            assert err.value.code in (401, 403)
            client = KernelSession(server.url, "wrong-token")
            with pytest.raises(HTTPClientError) as err:
                await client.api("GET", "/bedside/sessions")
            assert err.value.code in (401, 403)
            ok = KernelSession(server.url, server.token)
            assert await ok.api("GET", "/bedside/sessions") == {"sessions": []}
            with pytest.raises(HTTPClientError) as err:
                await ok.api("GET", "/bedside/sessions/nope")
            assert err.value.code == 404

    asyncio.run(scenario())
    assert not json.dumps(gateway.requests).count("execute_request")


def test_intent_file_errors_name_the_file(tmp_path) -> None:
    from bedside.errors import Error
    from bedside.extension.sessions import read_intent

    bad = tmp_path / "intent.json"
    bad.write_text("{not json")
    with pytest.raises(Error, match="intent.json: the session intent is not valid json"):
        read_intent(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(Error, match="must be a mapping"):
        read_intent(bad)
    good = tmp_path / "intent.yaml"
    good.write_text("intent:\n  purpose: p\n  policy_id: demo\n")
    assert read_intent(good) == {"purpose": "p", "policy_id": "demo"}


def test_websocket_dropped_before_the_intent_answer(tmp_path, standin, notebook_dir) -> None:
    """JupyterLab 4.6 opening a notebook cold: its first kernel websocket goes away before the
    hospital's answer to the intent comes back, and it reconnects. The session is the kernel's:
    the intent goes again on the new connection and the session starts, with one header."""
    gw = StandInGateway(tmp_path / "hospital", standin, intent_delay=0.3)
    gw.start()

    def intents() -> list[dict]:
        return [r for r in gw.requests if r["header"]["msg_type"] == "bedside_intent_request"]

    async def scenario() -> dict:
        with _server(tmp_path, gw, notebook_dir) as server:
            client = KernelSession(server.url, server.token)
            await client.start("study.ipynb", "hospital")
            while not intents():  # the hospital has the intent; its answer is on its way
                await asyncio.sleep(0.002)
            await client.close(shutdown=False)
            await client.connect()
            try:
                info, _ = await client.request("kernel_info_request", {}, timeout=30)
                assert info["metadata"]["bedside"]["verified"] is True
                reply, iopub = await client.execute("print('hi')", timeout=30)
                assert reply["content"]["status"] == "ok"
                assert all(m["metadata"]["bedside"]["verified"] for m in iopub + [reply])
                return await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
            finally:
                await client.close()

    try:
        status = asyncio.run(scenario())
    finally:
        gw.stop()
    assert status["state"] == "sealed" and status["unverified_messages"] == 0, status
    assert status["cells_run"] == 1
    sent = intents()
    assert len(sent) == 2 and sent[0]["content"] == sent[1]["content"]
    hospital = gw.kernels[status["kernel_id"]]
    copy = Ledger.open(hospital.ledger.path)
    kinds = [copy.entry(i)["kind"] for i in range(copy.size)]
    copy.close()
    assert kinds.count("header") == 1
    # the researcher's copy opens the code too (the salt came with the entry) and the header
    # holds the intent exactly as the researcher signed it
    session_dir = tmp_path / "sessions" / status["kernel_id"]
    report = verify_ledger(
        session_dir / "session.ledger",
        [hospital.signer.verifier_key, status["researcher_key"]],
        openings=session_dir / "session.openings",
    )
    assert report.intent_signed
    assert report.researcher_sigs_checked == 1 and report.openings_missing_count == 0


def test_entries_whose_receipt_went_elsewhere_are_fetched(tmp_path, gateway, notebook_dir) -> None:
    """A message the browser never gets (it went to a websocket since dropped) took ledger
    entries with its receipt: the server asks the hospital for them on its gateway connection,
    and the copy is complete and verifies after the seal."""

    async def scenario() -> dict:
        with _server(tmp_path, gateway, notebook_dir) as server:
            client = KernelSession(server.url, server.token)
            await client.start("study.ipynb", "hospital")
            try:
                await client.execute("1 + 1", timeout=30)
                hospital = gateway.kernels[client.kernel_id]
                # an output whose message (and receipt) went to a connection we do not hold
                hospital.message("iopub", "stream", {"name": "stdout", "text": "lost"}, {})
                await client.execute("print('hi')", timeout=30)
                return await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
            finally:
                await client.close()

    status = asyncio.run(scenario())
    assert status["state"] == "sealed" and status["entries_in_flight"] == 0, status
    asked = [r for r in gateway.requests if r["header"]["msg_type"] == "bedside_entries_request"]
    assert asked, "the gap was filled by asking the hospital"
    hospital = gateway.kernels[status["kernel_id"]]
    hospital.ledger.flush()
    session_dir = tmp_path / "sessions" / status["kernel_id"]
    assert (session_dir / "session.ledger").read_bytes() == hospital.ledger.path.read_bytes()


def test_seal_with_no_websocket_open(tmp_path, gateway, notebook_dir) -> None:
    """The notebook is closed: the server connects to the gateway itself for the seal, and
    closes that connection after."""

    async def scenario() -> tuple[dict, int]:
        with _server(tmp_path, gateway, notebook_dir) as server:
            client = KernelSession(server.url, server.token)
            await client.start("study.ipynb", "hospital")
            try:
                reply, _ = await client.execute("print('hi')")
                assert reply["content"]["status"] == "ok"
                await client.close(shutdown=False)
                sealed = await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
            finally:
                await client.close()
        seals = [r for r in gateway.requests if r["header"]["msg_type"] == "bedside_seal_request"]
        assert seals[0]["content"]["session"] == sealed["session"]
        return sealed, len(seals)

    sealed, asked = asyncio.run(scenario())
    assert sealed["state"] == "sealed" and asked == 1
    hospital = gateway.kernels[sealed["kernel_id"]]
    hospital.ledger.flush()
    mine = tmp_path / "sessions" / sealed["kernel_id"] / "session.ledger"
    assert mine.read_bytes() == hospital.ledger.path.read_bytes()


# "gateway": a gone gateway also makes jupyter_server's own shutdown slow (it retries deleting
# the kernel there), so that case runs once, against the real gateway, in tests/integration.
@pytest.mark.parametrize("gone", ["kernel"])
def test_seal_when_the_hospital_is_gone(tmp_path, gateway, notebook_dir, gone) -> None:
    """No websocket open and the kernel (or the whole gateway) gone: the seal answers at once
    with the reason, the session is interrupted and its ledger copy stays valid."""

    async def scenario() -> tuple[int, str, dict]:
        with _server(tmp_path, gateway, notebook_dir) as server:
            client = KernelSession(server.url, server.token)
            await client.start("study.ipynb", "hospital")
            try:
                reply, _ = await client.execute("print('hi')")
                assert reply["content"]["status"] == "ok"
                await client.close(shutdown=False)
                if gone == "kernel":
                    gateway.running.discard(client.kernel_id)
                else:
                    gateway.stop()
                with pytest.raises(HTTPClientError) as err:
                    await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
                status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
            finally:
                await client.close(shutdown=False)
        body = json.loads(err.value.response.body)
        return err.value.code, body["message"], status

    code, why, status = asyncio.run(scenario())
    if gone == "kernel":
        assert code == 410 and "no longer has kernel" in why, why
    else:
        assert code == 502 and "cannot reach the hospital's gateway" in why, why
    assert "ledger copy holds" in why and "bedside ledger replay" in why
    assert status["state"] == "interrupted"
    mine = tmp_path / "sessions" / status["kernel_id"] / "session.ledger"
    keys = [status["custodian_key"], status["researcher_key"]]
    verify_ledger(mine, keys, openings=mine.with_suffix(".openings"), require_checkpoint=False)
