"""The kernel pod's entry point (`bedside.gateway.pod`) against Enterprise Gateway 3.3's own code.

No Kubernetes cluster runs here. What is real: EG's `ResponseManager` (its RSA key pair, response
socket and `_decode_payload`) and `RemoteProcessProxy` comm-port code, run from `.venv-eg`
(`_eg_response_side.py`); the pod entry point started with the argv of the rendered pod
template's sentry container (with `$(NAME)` expanded from the environment EG's
launch_kubernetes.py gives that container, and the pod's mount paths mapped to directories
here); the sentry, the bubblewrap sandbox and the guarded kernel; a jupyter_client talking to the
ports EG decrypted. What stands in for Kubernetes: the pod is a local process on loopback, and in
the two-container test the kernel container is a second local process running the template's
kernel command.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    IDENTIFIERS,
    Client,
    Hospital,
    LeakOracle,
    RunningSentry,
    _free_ports,
    check_receipt,
    make_hospital,
    make_patients,
    notices,
)

from bedside.errors import GatewayError  # noqa: E402
from bedside.gateway.kube import K8sSettings, render_deployment, render_pod  # noqa: E402
from bedside.gateway.pod import encrypt_connection_info, parse_port_range  # noqa: E402
from bedside.ledger import verify_ledger  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EG_PYTHON = REPO / ".venv-eg" / "bin" / "python"
EG_SIDE = Path(__file__).parent / "_eg_response_side.py"
PORT_LOW = 43000
PORT_RANGE = f"{PORT_LOW}..{PORT_LOW + 1999}"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not EG_PYTHON.exists(), reason="Enterprise Gateway's venv: `make eg-venv`"),
]


class EGSide:
    """EG 3.3's receiving and comm-port code in its own interpreter."""

    def __init__(self, kernel_id: str, log_path: Path) -> None:
        env = dict(os.environ)
        env.update(EG_RESPONSE_IP="127.0.0.1", EG_RESPONSE_PORT=str(_free_ports(1)[0]))
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(EG_PYTHON), str(EG_SIDE), kernel_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            first = self.line()
        except BaseException:
            self.stop()
            raise
        self.response_address: str = first["response_address"]
        self.public_key: str = first["public_key"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.lines.put(text)
        self.lines.put("")

    def line(self, timeout: float = 60, about: Any = None) -> dict[str, Any]:
        """The next line EG's side printed; fails with both sides' logs instead of hanging."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            try:
                text = self.lines.get(timeout=0.5)
                break
            except queue.Empty:
                if about is not None and about.proc is not None and about.proc.poll() is not None:
                    break  # the pod exited: no answer is coming
        if not text:
            pod_log = about.log() if about is not None else ""
            raise RuntimeError(
                f"no answer from EG's side:\n{self.log_path.read_text()[-3000:]}\n{pod_log}"
            )
        return json.loads(text)

    def ask(self, request: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self.line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()


def pod_commands(
    hospital: Hospital, eg_env: dict[str, str], *, ipc_dir: Path, outbox_dir: Path
) -> tuple[list[str], Path, dict[str, str]]:
    """The rendered pod template's sentry command as the kubelet would run it: `$(NAME)` expanded
    from the container's env (the template's own entries, then what launch_kubernetes.py adds),
    and the pod's mount paths mapped to directories on this machine. Also the kernel container's
    command (as a script) and environment."""
    out = hospital.root / "k8s"
    from bedside.policy import load_policy

    written = render_deployment(
        load_policy(hospital.policy), K8sSettings(image="registry.example/bedside:0"), out
    )
    keywords = {
        "kernel_id": eg_env["KERNEL_ID"],
        "kernel_pod_name": "alice-" + eg_env["KERNEL_ID"],
        "kernel_namespace": "bedside-kernels",
        "kernel_username": "alice",
    }
    import yaml

    pod = yaml.safe_load(render_pod(written["pod_template"], keywords))
    sentry, kernel = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in sentry.get("env", [])}
    env.update(eg_env)
    mounts = {
        "/etc/bedside/policy/policy.yaml": str(hospital.policy),
        "/var/run/secrets/bedside/custodian.key": str(hospital.key),
        "/var/lib/bedside": str(hospital.state),
        "/run/bedside-ipc": str(ipc_dir),
        "/run/bedside-outbox": str(outbox_dir),
    }

    def kubelet(arg: str) -> str:
        arg = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)
        return mounts.get(arg, arg)

    argv = [sys.executable, *sentry["command"][1:], *(kubelet(a) for a in sentry["args"])]
    assert argv[1:3] == ["-m", "bedside.gateway.pod"]
    kernel_script = kernel["args"][0]
    for container_path, here in mounts.items():
        kernel_script = kernel_script.replace(container_path, here)
    kernel_script = kernel_script.replace("exec python ", f"exec {sys.executable} ")
    script = hospital.root / "kernel-container.sh"
    script.write_text(kernel_script)
    kernel_env = {e["name"]: mounts.get(e["value"], e["value"]) for e in kernel["env"]}
    return argv, script, kernel_env


class Pod:
    """One kernel pod: EG's side, the pod entry point, and the decrypted connection info."""

    def __init__(self, hospital: Hospital, tmp: Path, *, two_containers: bool = False) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.hospital = hospital
        self.kernel_id = str(uuid.uuid4())
        self.eg = EGSide(self.kernel_id, tmp / "eg-side.log")
        self.kernel_proc: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._start(tmp, two_containers)
        except BaseException:
            self.stop()  # no process outlives a failed start
            raise

    def _start(self, tmp: Path, two_containers: bool) -> None:
        hospital = self.hospital
        eg_env = {
            "KERNEL_ID": self.kernel_id,
            "RESPONSE_ADDRESS": self.eg.response_address,
            "PUBLIC_KEY": self.eg.public_key,
            "PORT_RANGE": PORT_RANGE,
        }
        self.ipc_dir = tmp / "ipc"
        outbox = tmp / "outbox"
        outbox.mkdir()
        argv, kernel_script, kernel_env = pod_commands(
            hospital, eg_env, ipc_dir=self.ipc_dir, outbox_dir=outbox
        )
        argv += ["--ip", "127.0.0.1"]
        if not two_containers:
            argv.remove("--kernel-container")
            if shutil.which("bwrap") is None:
                argv.append("--no-sandbox")
        self.log_path = tmp / "pod.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if two_containers:
            env = dict(os.environ, **kernel_env)
            env["HOME"] = str(tmp)  # /tmp in the container
            with (tmp / "kernel.log").open("wb") as log:
                self.kernel_proc = subprocess.Popen(
                    ["sh", str(kernel_script)], stdout=log, stderr=subprocess.STDOUT, env=env
                )
        self.info = self.eg.line(about=self)  # what EG's ResponseManager decrypted

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> Client:
        # As EG's RemoteProcessProxy does: pid/pgid out, the pod's IP in (loopback here).
        info = {k: v for k, v in self.info.items() if k not in ("pid", "pgid")}
        info["ip"] = "127.0.0.1"
        running = RunningSentry(self.proc, info, self.log_path, self.hospital)
        return Client.connect(running)

    def ledger_path(self) -> Path:
        found = sorted(self.hospital.state.glob("*/session.ledger"), key=os.path.getmtime)
        assert found, "no ledger written"
        return found[-1]

    def stop(self) -> None:
        for proc in (self.proc, self.kernel_proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.eg.stop()


@pytest.fixture(scope="module")
def frame():
    return make_patients(1500, seed=21)


@pytest.fixture(scope="module")
def pod(tmp_path_factory, frame):
    root = tmp_path_factory.mktemp("pod")
    hospital = make_hospital(root / "hospital", frame=frame)
    running = Pod(hospital, root / "run")
    client = None
    try:
        client = running.client()
        yield running, client
    finally:
        if client is not None:
            client.close()
        running.stop()


def test_eg_decrypts_the_pods_connection_info(pod):
    running, _ = pod
    info = running.info
    assert info["kernel_id"] == running.kernel_id
    ports = [info[f"{c}_port"] for c in ("shell", "iopub", "stdin", "control", "hb")]
    ports.append(info["comm_port"])
    assert len(set(ports)) == 6
    assert all(PORT_LOW <= p <= PORT_LOW + 1999 for p in ports)
    assert info["transport"] == "tcp" and info["signature_scheme"] == "hmac-sha256"
    assert len(info["key"]) >= 32
    assert info["pid"] == running.proc.pid


def test_the_pod_serves_a_guarded_kernel(pod):
    running, client = pod
    oracle = LeakOracle(running.hospital.frame, IDENTIFIERS)
    reply, _ = client.execute('df = hospital.load("patients")')
    assert reply["content"]["status"] == "ok", reply["content"]
    # A row-level leak: blocked, and nothing of the rows reaches the client.
    _, outputs = client.execute("df.head(20)")
    assert notices(outputs), outputs
    for msg in outputs:
        assert not oracle.leaks(msg)
    # An aggregate: released, with a receipt the custodian's key verifies.
    reply, outputs = client.execute('df.groupby("ward").size()')
    assert reply["content"]["status"] == "ok"
    (result,) = [m for m in outputs if m["msg_type"] == "execute_result"]
    assert "Cardiology" in result["content"]["data"]["text/plain"]
    receipt = check_receipt("iopub", result, running.hospital.signer.verifier_key)
    assert receipt["entries"], "the released output's ledger entry rides on its receipt"
    if shutil.which("bwrap"):
        assert "sandbox on" in running.log()


def test_eg_interrupts_through_the_comm_port(pod):
    running, client = pod
    assert running.eg.ask("signal 0") == {"ok": True, "result": None}  # EG's liveness poll
    msg_id = client.kc.execute("import time\nfor _ in range(600): time.sleep(0.1)")
    deadline = time.monotonic() + 30
    while True:  # wait until the cell runs
        msg = client.kc.iopub_channel.get_msg(timeout=max(0.1, deadline - time.monotonic()))
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "busy"
        ):
            break
    assert running.eg.ask("signal 2")["ok"]
    reply = client.shell_reply(msg_id, timeout=60)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    reply, _ = client.execute("1 + 1")  # the session goes on
    assert reply["content"]["status"] == "ok"


def test_eg_shuts_the_pod_down_and_the_ledger_is_finished(pod):
    running, _ = pod
    assert running.eg.ask("shutdown") == {"ok": True}
    assert running.proc.wait(30) == 0, running.log()
    ledger = running.ledger_path()
    report = verify_ledger(ledger, keys=[running.hospital.signer.verifier_key])
    assert report is not None
    from bedside.ledger import Ledger

    opened = Ledger.open(ledger)
    entries = [opened.entry(i) for i in range(opened.size)]
    opened.close()
    assert [e["kind"] for e in entries[-2:]] == ["interrupted", "checkpoint"], entries[-3:]
    assert entries[-2]["reason"] == "a shutdown request on the kernel pod's communication port"


def test_two_containers_kernel_beside_the_sentry(tmp_path, frame):
    """The pod template's own layout: the sentry writes the kernel's ipc connection file into
    the shared volume and the kernel container's command picks it up."""
    hospital = make_hospital(tmp_path / "hospital", frame=frame)
    running = Pod(hospital, tmp_path / "run", two_containers=True)
    client = None
    try:
        client = running.client()
        reply, outputs = client.execute('hospital.load("patients").groupby("ward").size()')
        assert reply["content"]["status"] == "ok", reply["content"]
        (result,) = [m for m in outputs if m["msg_type"] == "execute_result"]
        check_receipt("iopub", result, hospital.signer.verifier_key)
        assert (running.ipc_dir / "kernel.json").stat().st_mode & 0o777 == 0o644
        # A release request crosses the shared outbox into the sentry's airlock.
        reply, outputs = client.execute(
            'counts = hospital.load("patients").groupby("ward").size().to_frame("patients")\n'
            't = hospital.release(counts, name="ward-counts", kind="table")\nprint(t.status)'
        )
        assert reply["content"]["status"] == "ok", outputs
        deadline = time.monotonic() + 30
        while True:
            reply = client.request("bedside_release_status_request", {})
            names = [r["name"] for r in reply["content"]["releases"]]
            if names or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert names == ["ward-counts"], reply["content"]
        assert not list((tmp_path / "run" / "outbox").iterdir())  # copied out, then removed
        assert running.eg.ask("shutdown") == {"ok": True}
        assert running.proc.wait(30) == 0, running.log()
    finally:
        if client is not None:
            client.close()
        running.stop()


# -- no processes -----------------------------------------------------------------------------


def test_port_range_is_checked_as_eg_checks_it():
    assert parse_port_range("0..0").low == 0
    assert parse_port_range(None).high == 0
    with pytest.raises(GatewayError, match="EG_MIN_PORT_RANGE_SIZE"):
        parse_port_range("40000..40010", min_size=1000)
    with pytest.raises(GatewayError, match="LOW..HIGH"):
        parse_port_range("40000-41000")


def test_a_key_that_is_not_egs_is_refused():
    with pytest.raises(GatewayError, match="public-key"):
        encrypt_connection_info({"kernel_id": "x"}, "bm90IGEga2V5")


def test_a_pod_not_created_by_eg_says_so(capsys, tmp_path):
    from bedside.gateway.pod import main

    code = main(
        [
            *("--kernel-id", "$(KERNEL_ID)", "--response-address", "10.0.0.1:8877"),
            *("--public-key", "x", "--policy", str(tmp_path / "p.yaml")),
            *("--custodian-key", str(tmp_path / "k"), "--state-dir", str(tmp_path)),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("bedside pod: ") and "launch_kubernetes.py" in err, err


def test_comm_port_ignores_malformed_requests():
    import socket

    from bedside.gateway.pod import CommListener, CommRequest

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    requests: queue.Queue[CommRequest] = queue.Queue()
    listener = CommListener(sock, requests)
    listener.start()
    try:
        for payload in (b"not json", b"[1, 2]", b'{"signum": 2}', b'{"shutdown": 1}'):
            with socket.create_connection(sock.getsockname()) as conn:
                conn.sendall(payload)
        assert requests.get(timeout=10) == CommRequest(signum=2)
        assert requests.get(timeout=10) == CommRequest(shutdown=True)
        listener.join(10)
        assert not listener.is_alive()  # the listener ends after a shutdown request
    finally:
        listener.stop()
