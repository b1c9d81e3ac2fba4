"""Enterprise Gateway + sentry + sandboxed kernel, driven over the gateway's websocket as a
researcher's JupyterLab would: what the client actually receives is what is checked."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import rfc8785
import websocket
import yaml

from bedside.errors import SignatureError
from bedside.ledger import Verifier
from tests._hospital import egress_listener

from .conftest import (
    GatewayKernel,
    KernelDied,
    LeakOracle,
    connect_ws,
    guarded_kernel_available,
    notices,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CORPUS = Path(os.environ.get("BEDSIDE_CORPUS", "/work/shared/corpus")) / "leaks.yaml"


def setup_cell(hospital) -> str:
    if guarded_kernel_available():
        return 'import pandas as pd, numpy as np\ndf = hospital.load("patients")\nlen(df)'
    # The plain kernel behind the sentry: the sentry alone is the boundary.
    return f"import pandas as pd, numpy as np\ndf = pd.read_parquet({str(hospital.data)!r})\n"


@pytest.fixture(scope="module")
def kernel(eg_gateway, hospital):
    k = eg_gateway.start_kernel("bedside")
    reply, _ = k.execute(setup_cell(hospital))
    assert reply["content"]["status"] == "ok", reply
    yield k
    k.shutdown()


def sentry_processes(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"bedside.gateway.sentry" in cmdline and marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def corpus_cells() -> list[tuple[str, str]]:
    if not CORPUS.exists():
        return []
    return [(case["id"], case["cell"]) for case in yaml.safe_load(CORPUS.read_text())]


# --- authentication and authorisation -------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789"])
def test_missing_or_wrong_token_is_refused_and_starts_nothing(eg_gateway, hospital, token):
    before_kernels = eg_gateway.kernels()
    before_sentries = sentry_processes(str(hospital.state))
    with pytest.raises(urllib.error.HTTPError) as refused:
        eg_gateway.api(
            "POST",
            "/api/kernels",
            {"name": "bedside", "env": {"KERNEL_USERNAME": eg_gateway.username}},
            token=token or "",
        )
    assert refused.value.code in (401, 403)
    with pytest.raises(urllib.error.HTTPError) as listing:
        eg_gateway.api("GET", "/api/kernels", token=token or "")
    assert listing.value.code in (401, 403)
    assert eg_gateway.kernels() == before_kernels
    assert sentry_processes(str(hospital.state)) == before_sentries


def test_websocket_with_wrong_token_is_refused(eg_gateway, kernel):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect_ws(eg_gateway, kernel.kernel_id, token="wrong-token-0123456789")
    assert refused.value.status_code in (401, 403)


@pytest.mark.parametrize("user", ["mallory", "root"])
def test_user_outside_the_authorized_list_is_refused(eg_gateway, hospital, user):
    before = eg_gateway.kernels()
    with pytest.raises(urllib.error.HTTPError) as refused:
        eg_gateway.api(
            "POST", "/api/kernels", {"name": "bedside", "env": {"KERNEL_USERNAME": user}}
        )
    assert refused.value.code == 403
    assert eg_gateway.kernels() == before


def test_only_the_configured_kernelspecs_are_offered(eg_gateway):
    specs = eg_gateway.api("GET", "/api/kernelspecs")
    assert sorted(specs["kernelspecs"]) == ["bedside", "python3-plain"]
    assert specs["default"] == "bedside"


# --- the boundary -----------------------------------------------------------------------------


def test_leak_corpus_leaks_no_identifier_value(kernel, hospital):
    cells = corpus_cells()
    if not cells:
        pytest.skip(f"leak corpus not found at {CORPUS}")
    ids = [case_id for case_id, _ in cells]
    assert "L37" in ids and "L38" in ids
    oracle = LeakOracle(hospital.frame)
    start = len(kernel.received)
    leaked: dict[str, list[str]] = {}
    blocked = 0
    for case_id, cell in cells:
        if case_id == "L39":
            continue  # network egress: its own test below, with a listener
        first = len(kernel.received)
        try:
            _reply, outputs = kernel.execute(cell, timeout=120)
        except KernelDied:
            # A cell that kills the kernel must not leak either; start a fresh one.
            pytest.fail(f"{case_id} killed the kernel")
        columns = oracle.leaks_shown(kernel.received[first:])
        if columns:
            leaked.setdefault(case_id, []).extend(columns)
        blocked += bool(notices(outputs))
    assert leaked == {}, f"identifier columns reached the client: {leaked}"
    assert blocked > 0  # the sentry said why, rather than silently dropping everything
    assert len(kernel.received) > start


def test_l39_network_egress_fails_inside_the_sandbox(kernel):
    with egress_listener() as (port, received):
        corpus = dict(corpus_cells()).get("L39") or (
            "import urllib.request\n"
            'urllib.request.urlopen("http://127.0.0.1:9/", '
            "data=df.head(10).to_csv().encode(), timeout=2)\n"
        )
        cell = corpus.replace("127.0.0.1:9/", f"127.0.0.1:{port}/")
        reply, _ = kernel.execute(cell)
    assert reply["content"]["status"] == "error"
    assert received == []


def test_kernel_cannot_read_the_custodian_key(kernel, hospital):
    reply, outputs = kernel.execute(f"print(open({str(hospital.key)!r}).read())")
    assert reply["content"]["status"] == "error"
    key_text = hospital.key.read_text()
    for msg in kernel.received[-len(outputs) - 1 :]:
        assert key_text.strip() not in json.dumps(msg)


def test_kernel_crash_gives_a_notice_not_a_hang(eg_gateway):
    k = eg_gateway.start_kernel("bedside")
    try:
        reply, outputs = k.execute("import os; os._exit(3)", timeout=90)
        # The sentry notices that the sandboxed kernel died and says so, in the reply and on
        # iopub, instead of leaving the cell busy forever.
        assert reply["content"]["status"] == "error"
        said = notices([reply, *outputs])
        assert said and all("kernel" in n["rule"] for n in said), said
        assert all(n["layer"] == "sentry" for n in said)
    finally:
        k.shutdown()


def test_sentry_crash_gives_a_notice_not_a_hang(eg_gateway):
    k = eg_gateway.start_kernel("bedside")
    try:
        pids = sentry_processes(k.kernel_id)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        states = []
        with pytest.raises(KernelDied):
            while True:
                msg = k.recv(deadline)
                if msg["msg_type"] == "status":
                    states.append(msg["content"]["execution_state"])
                    if states[-1] in ("restarting", "dead"):
                        raise KernelDied(states[-1])
    finally:
        k.shutdown()


# --- TLS ----------------------------------------------------------------------------------


def test_mutual_tls_accepts_client_certificates_and_refuses_others(start_gateway, hospital):
    from .conftest import PLAIN

    with start_gateway({"python3-plain": PLAIN}, default="python3-plain", mutual_tls=True) as gw:
        assert gw.url.startswith("https://")
        k = gw.start_kernel()
        try:
            reply, outputs = k.execute("6 * 7")
            assert reply["content"]["status"] == "ok"
            results = [m for m in outputs if m["msg_type"] == "execute_result"]
            assert results[0]["content"]["data"]["text/plain"] == "42"
        finally:
            k.shutdown()
        # The same CA, but no client certificate: the TLS handshake itself fails.
        context = ssl.create_default_context(cafile=str(gw.certs.ca_cert))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            request = urllib.request.Request(gw.url + "/api/kernels")
            request.add_header("Authorization", f"token {gw.token}")
            urllib.request.urlopen(request, context=context, timeout=30).read()
        with pytest.raises((ssl.SSLError, ConnectionError, websocket.WebSocketException)):
            websocket.create_connection(
                f"{gw.ws_url}/api/kernels/{k.kernel_id}/channels",
                header=[f"Authorization: token {gw.token}"],
                sslopt={"ca_certs": str(gw.certs.ca_cert), "cert_reqs": ssl.CERT_REQUIRED},
                timeout=30,
            )


def test_gateway_kernel_is_protocol_compatible_and_receipts_verify(eg_gateway, hospital):
    k = GatewayKernel.start(eg_gateway, "bedside")
    try:
        reply, outputs = k.execute("1 + 1")
        assert reply["content"]["status"] == "ok"
        results = [m for m in outputs if m["msg_type"] == "execute_result"]
        assert results and results[0]["content"]["data"]["text/plain"] == "2"
        # The receipt the sentry signed verifies with the custodian's public key.
        receipt = dict(results[0]["metadata"]["bedside"]["receipt"])
        signature = base64.b64decode(receipt.pop("sig"))
        assert receipt["key"] == hospital.verifier_key
        Verifier(hospital.verifier_key).verify(rfc8785.dumps(receipt), signature)
        with pytest.raises(SignatureError):
            Verifier(hospital.verifier_key).verify(
                rfc8785.dumps({**receipt, "size": receipt["size"] + 1}), signature
            )
    finally:
        k.shutdown()


@pytest.fixture(scope="module")
def unsandboxed(start_gateway, hospital):
    from .conftest import chain_kernelspec

    spec = chain_kernelspec(hospital, sandbox=False)
    assert "NO SANDBOX" in spec["display_name"]
    with start_gateway({"bedside": spec}, default="bedside") as gw:
        k = gw.start_kernel()
        reply, _ = k.execute(setup_cell(hospital))
        assert reply["content"]["status"] == "ok"
        yield k
        k.shutdown()


NO_SANDBOX_TEXT = "WITHOUT the hospital sandbox"


def test_no_sandbox_chain_says_so_in_the_kernels_notices(unsandboxed):
    _, outputs = unsandboxed.execute("print(df.mrn.head(3).tolist())")
    said = notices(outputs)
    assert said
    assert NO_SANDBOX_TEXT in json.dumps([m["content"] for m in outputs])


def test_no_sandbox_chain_says_so_in_the_sentrys_notices(unsandboxed):
    # Runs last on this kernel: the crash notice is the sentry's own.
    reply, outputs = unsandboxed.execute("import os; os._exit(3)", timeout=90)
    said = [n for n in notices([reply, *outputs]) if n.get("layer") == "sentry"]
    assert said, "the sentry gave no notice of the kernel's death"
    # What the researcher reads (the notice's text on iopub) carries the warning.
    assert NO_SANDBOX_TEXT in json.dumps([m["content"] for m in outputs])


def test_tuned_websocket_path_delivers_large_output_and_tracks_activity(eg_gateway):
    """What a client receives through the tuned gateway (eg_config/bedside_eg_tuning.py): a large
    output, whose content frame the gateway forwards as the kernel wrote it, arrives whole (UTF-8
    text included), and the activity monitor, which now reads only status messages in full,
    still tracks the kernel's state and last activity."""
    k = GatewayKernel.start(eg_gateway, "python3-plain")
    try:
        before = eg_gateway.api("GET", f"/api/kernels/{k.kernel_id}")
        text = 'é€😀\t"\\' * 1000 + "x" * 200_000
        reply, outputs = k.execute(f"print({text!r})")
        assert reply["content"]["status"] == "ok"
        printed = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
        assert printed == text + "\n"
        after = eg_gateway.api("GET", f"/api/kernels/{k.kernel_id}")
        assert after["execution_state"] == "idle"
        assert after["last_activity"] > before["last_activity"]
    finally:
        k.shutdown()
