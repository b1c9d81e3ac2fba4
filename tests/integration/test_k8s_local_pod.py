"""Enterprise Gateway 3.3 launching the kernel pod's entry point, with Kubernetes replaced by a
local process.

Real: Enterprise Gateway (`.venv-eg`), its RemoteKernelManager and RemoteProcessProxy life cycle
(response address, RSA key, `receive_connection_info`, comm-port signals and `shutdown_listener`),
its REST API and websocket; `python -m bedside.gateway.pod` with EG's `{kernel_id}`,
`{response_address}`, `{public_key}`, `{port_range}`; the sentry, bubblewrap and the guarded
kernel. Stand-in: `_k8s_local_pod_proxy.LocalPodProcessProxy` runs the entry point as a local
process where `KubernetesProcessProxy` would create a pod (no pod spec, volumes, security
context or NetworkPolicy here; tests/gateway/test_k8s.py validates those manifests).
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from pathlib import Path

import pytest

from bedside.errors import GatewayError
from bedside.gateway.eg import EnterpriseGateway, GatewaySettings, eg_executable, free_port
from bedside.ledger import Ledger, verify_ledger

from .conftest import USERNAME, Hospital, LeakOracle, RunningGateway, notices

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KERNEL = "bedside_localpod"


def local_pod_kernelspec(hospital: Hospital) -> dict:
    argv = [
        sys.executable,
        "-m",
        "bedside.gateway.pod",
        "--RemoteProcessProxy.kernel-id",
        "{kernel_id}",
        "--RemoteProcessProxy.port-range",
        "{port_range}",
        "--RemoteProcessProxy.response-address",
        "{response_address}",
        "--RemoteProcessProxy.public-key",
        "{public_key}",
        "--policy",
        str(hospital.policy),
        "--custodian-key",
        str(hospital.key),
        "--state-dir",
        str(hospital.state),
        "--ip",
        "127.0.0.1",
    ]
    if shutil.which("bwrap") is None:
        argv.append("--no-sandbox")
    return {
        "argv": argv,
        "display_name": "bedside (local pod)",
        "language": "python",
        # "signal": EG interrupts through the launcher's comm port, the path under test here
        # (the Kubernetes kernelspec uses "message", relayed by the sentry).
        "interrupt_mode": "signal",
        "metadata": {"process_proxy": {"class_name": "_k8s_local_pod_proxy.LocalPodProcessProxy"}},
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, hospital):
    try:
        eg_executable()
    except GatewayError as exc:
        pytest.skip(str(exc))
    home = tmp_path_factory.mktemp("eg-localpod")
    token_file = home / "token"
    token_file.write_text(secrets.token_urlsafe(32))
    token_file.chmod(0o600)
    settings = GatewaySettings(
        token_file=token_file,
        kernelspecs={KERNEL: local_pod_kernelspec(hospital)},
        default_kernel=KERNEL,
        port=free_port(),
        authorized_users=[USERNAME],
        list_kernels=True,
    )
    eg = EnterpriseGateway(
        home / "home",
        settings,
        log_level="DEBUG",
        extra_env={
            "PYTHONPATH": str(Path(__file__).parent),
            "EG_RESPONSE_IP": "127.0.0.1",
            "EG_RESPONSE_PORT": str(free_port()),
            "EG_PORT_RANGE": "45000..46999",
            "EG_KERNEL_LAUNCH_TIMEOUT": "120",
        },
    )
    eg.start(timeout=90)
    try:
        yield RunningGateway(eg, KERNEL)
    finally:
        eg.stop()


def test_eg_runs_a_guarded_kernel_in_a_local_pod(gateway, hospital):
    kernel = gateway.start_kernel()
    try:
        log = gateway.eg.log_file.read_text(errors="replace")
        assert "LocalPodProcessProxy: 'pod' pid" in log
        assert f"Connection info received for kernel '{kernel.kernel_id}'" in log
        oracle = LeakOracle(hospital.frame)
        reply, _ = kernel.execute('df = hospital.load("patients")')
        assert reply["content"]["status"] == "ok", reply["content"]
        _, outputs = kernel.execute("df.head(20)")
        assert notices(outputs)
        assert not any(oracle.leaks(m) for m in outputs)
        reply, outputs = kernel.execute('df.groupby("ward").size()')
        (result,) = [m for m in outputs if m["msg_type"] == "execute_result"]
        receipt = result["metadata"]["bedside"]["receipt"]
        assert receipt["key"] == hospital.verifier_key

        # EG's interrupt: RemoteKernelManager.signal_kernel -> the pod's comm port.
        msg_id = kernel.send(
            "execute_request",
            {"code": "import time\nfor _ in range(600): time.sleep(0.1)", "silent": False},
        )
        deadline = time.monotonic() + 60
        while True:
            msg = kernel.recv(deadline)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
                break
        gateway.api("POST", f"/api/kernels/{kernel.kernel_id}/interrupt")
        while True:
            msg = kernel.recv(deadline)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
                break
        assert msg["content"]["ename"] == "KeyboardInterrupt"
        log = gateway.eg.log_file.read_text(errors="replace")
        assert "Signal (2) sent via gateway communication port" in log
    finally:
        kernel.shutdown()  # DELETE: shutdown_request, then the comm port's shutdown

    deadline = time.monotonic() + 60
    while gateway.kernels() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gateway.kernels() == []
    ledgers = sorted(hospital.state.glob("*/session.ledger"), key=lambda p: p.stat().st_mtime)
    ledger = ledgers[-1]
    verify_ledger(ledger, keys=[hospital.verifier_key])
    opened = Ledger.open(ledger)
    last = opened.entry(opened.size - 1)
    opened.close()
    assert last["kind"] == "checkpoint", json.dumps(last)[:300]
