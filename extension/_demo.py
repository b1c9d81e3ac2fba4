"""`bedside demo`: a synthetic hospital and a researcher's JupyterLab on one machine.

Writes the demo hospital (synthetic patients, its policy, a custodian key), starts the hospital
side (`bedside gateway start`: Enterprise Gateway with the sentry and sandboxed kernels), a local
dev chain for anchoring when the anchor module and ganache are installed, and JupyterLab with the
bedside extension pointed at the gateway, opening the walkthrough notebooks. Ctrl-C stops all.

Ctrl-C in a terminal signals the whole foreground process group. The gateway and the chain run
in sessions of their own so that they get exactly one signal, from the demo, in order: a second
signal would interrupt `bedside gateway start` while it is stopping Enterprise Gateway and its
kernels. They also get SIGTERM if the demo itself dies (PR_SET_PDEATHSIG), so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bedside.errors import GatewayError

from ._headless import KernelSession, ResearcherServer, free_port

REPO = Path(__file__).resolve().parents[1]


def _bedside(*args: str) -> list[str]:
    return [sys.executable, "-m", "bedside", *args]


def _wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GatewayError(f"{what} exited with status {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise GatewayError(f"{what} did not start within {timeout:.0f}s; see {log}")


_PR_SET_PDEATHSIG = 1


def _own_session() -> None:
    """In the child, before exec: a session of its own, and SIGTERM when the demo dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=_own_session,  # noqa: PLW1509 (the demo starts no threads before this)
    )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        # longer than `bedside gateway start` gives Enterprise Gateway to stop its kernels
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _readable(path: Path) -> None:
    """The sandboxed kernel runs as an unprivileged user: it must be able to read the data."""
    for p in [path, *path.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
        elif p.suffix in (".parquet", ".csv", ".yaml"):
            p.chmod(0o644)


#: ganache's chain id, and the first account of its `--wallet.deterministic` test mnemonic: a
#: well-known dev key that pays for the demo's anchors on the local chain and nowhere else.
DEMO_CHAIN_ID = 1337
DEMO_CHAIN_KEY = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def deploy_demo_contract(rpc: str, secrets_dir: Path) -> dict[str, str]:
    """Deploy BedsideAnchor on the demo chain; the extension's anchor settings (as env vars)."""
    from bedside.ledger import anchor as A

    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets_dir / "anchor.key"
    if not key.exists():
        key.write_text(DEMO_CHAIN_KEY + "\n")
    key.chmod(0o600)
    contract = A.deploy_contract(A.connect(rpc), A.load_key(key))
    return {
        "BEDSIDE_ANCHOR_RPC": rpc,
        "BEDSIDE_ANCHOR_CONTRACT": contract,
        "BEDSIDE_ANCHOR_KEY": str(key),
    }


def prepare_hospital(work: Path, patients: int) -> tuple[Path, Path]:
    hospital = work / "hospital"
    policy = hospital / "policy.yaml"
    if not policy.exists():
        print(f"bedside demo: writing a synthetic hospital ({patients} patients) to {hospital}")
        subprocess.run(
            _bedside("demo-data", "--out", str(hospital), "--patients", str(patients),
                     "--seed", "7"),
            check=True,
        )  # fmt: skip
    _readable(hospital)
    secrets_dir = work / "secrets"
    key = secrets_dir / "custodian.key"
    if not key.exists():
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            _bedside("keys", "new", "--dir", str(secrets_dir), "custodian"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return policy, key


WALKTHROUGH = "01-walkthrough.ipynb"


async def _start_walkthrough_session(lab: ResearcherServer, notebooks: Path) -> dict[str, object]:
    """Start the walkthrough's hospital session before anyone opens the notebook.

    JupyterLab then joins the running session. Opening the notebook cold in JupyterLab 4.6 drops
    its first kernel websocket, and the session intent sent on it can be lost with it (the
    session stays pending-intent; docs/data-scientist/jupyterlab.md, known issues). Starting it
    here also proves the whole chain works before the demo says what to open.
    """
    kernel = json.loads((notebooks / WALKTHROUGH).read_text())["metadata"]["kernelspec"]["name"]
    client = KernelSession(lab.url, lab.token)
    await client.start(WALKTHROUGH, kernel)
    try:
        await client.request("kernel_info_request", {}, timeout=150)
        status: dict[str, object] = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
        deadline = time.monotonic() + 30
        while status.get("state") == "pending-intent" and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
        return status
    finally:
        await client.close(shutdown=False)


def run_demo(work: Path, *, port: int = 8888, patients: int = 2000) -> int:
    """Run the demo until Ctrl-C (or SIGTERM); `port` 0 picks a free port for JupyterLab."""

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo as cleanly as Ctrl-C

    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C stops the demo even when it was started with SIGINT ignored (a shell's background
    # job, nohup, a CI runner), which Python would otherwise keep: the demo would never stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # What to open is printed once: it must reach a pipe (`make demo | tee`) at once, too.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    port = port or free_port()
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    policy, key = prepare_hospital(work, patients)
    notebooks = work / "notebooks"
    if not notebooks.exists():
        shutil.copytree(REPO / "notebooks", notebooks)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    token_file = work / "secrets" / "gateway.token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
    gateway_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    lab: ResearcherServer | None = None
    reviewer: ResearcherServer | None = None
    try:
        gw_log = logs / "gateway.log"
        gateway = _child(
            _bedside("gateway", "start", "--policy", str(policy), "--custodian-key", str(key),
                     "--state-dir", str(work / "hospital-state"), "--port", str(gateway_port),
                     "--token-file", str(token_file)),
            gw_log,
        )  # fmt: skip
        procs.append(gateway)
        print(f"bedside demo: starting the hospital's gateway on port {gateway_port} …")
        _wait_port(gateway_port, gateway, "the hospital's gateway", gw_log, 120)

        chain, anchor_env = "", {}
        ganache = REPO / "node_modules" / "ganache" / "dist" / "node" / "cli.js"
        node = shutil.which("node")
        if node is not None and ganache.exists():
            chain_port = 8545 if _port_free(8545) else free_port()
            chain_log = logs / "chain.log"
            procs.append(
                _child(
                    [
                        node,
                        str(ganache),
                        "--server.host=127.0.0.1",
                        f"--server.port={chain_port}",
                        f"--chain.chainId={DEMO_CHAIN_ID}",
                        "--wallet.deterministic",
                        "--logging.quiet",
                    ],
                    chain_log,
                )
            )
            _wait_port(chain_port, procs[-1], "the local chain", chain_log, 60)
            chain = f"http://127.0.0.1:{chain_port}"
            anchor_env = deploy_demo_contract(chain, work / "secrets")

        user = os.environ.get("KERNEL_USERNAME") or "researcher"
        # `bedside` on the PATH of the notebooks' kernels and terminals (`make demo` does not
        # activate the environment)
        path = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        lab = ResearcherServer(
            root_dir=notebooks,
            gateway_url=f"http://127.0.0.1:{gateway_port}",
            gateway_token=token_file.read_text().strip(),
            sessions_dir=work / "sessions",
            port=port,
            lab=True,
            log_path=logs / "jupyterlab.log",
            env={"KERNEL_USERNAME": user, **anchor_env, **path},
        )
        # The reviewer's JupyterLab: local kernels, no gateway, the chain's address but no key
        reviewer = ResearcherServer(
            root_dir=notebooks,
            gateway_url="",
            port=free_port(),
            lab=True,
            log_path=logs / "reviewer-jupyterlab.log",
            env={k: v for k, v in anchor_env.items() if k != "BEDSIDE_ANCHOR_KEY"} | path,
        )
        print("bedside demo: starting JupyterLab with the bedside extension …")
        lab.start()
        reviewer.start()
        print("bedside demo: starting the walkthrough's kernel at the hospital …")
        session = asyncio.run(_start_walkthrough_session(lab, notebooks))
        if session.get("state") != "active":
            raise GatewayError(
                f"the walkthrough's hospital session is {session.get('state')!r}"
                + (f": {session['reason']}" if session.get("reason") else "")
                + f"; see {logs / 'jupyterlab.log'} and {gw_log}"
            )
        print()
        print("  Open:   " + f"{lab.url}/lab/tree/01-walkthrough.ipynb?token={lab.token}")
        print(f"  Token:  {lab.token}")
        print("  Review: " + f"{reviewer.url}/lab/tree/02-reviewer.ipynb?token={reviewer.token}"
              " (the reviewer's JupyterLab: local kernels, no access to the hospital)")  # fmt: skip
        print(f"  Kernel: 'bedside (guarded, hospital)' runs at the demo hospital ({policy}); "
              f"session {session.get('kernel_id')} is active")  # fmt: skip
        print(f"  Gateway: http://127.0.0.1:{gateway_port} (token in {token_file}; for "
              "`bedside run NOTEBOOK --gateway URL --token TOKEN`)")  # fmt: skip
        print(f"  Ledgers: yours in {work / 'sessions'}, the hospital's in "
              f"{work / 'hospital-state'}")  # fmt: skip
        if chain:
            print(f"  Chain:  {chain} (ganache, chain id {DEMO_CHAIN_ID}), BedsideAnchor at "
                  f"{anchor_env['BEDSIDE_ANCHOR_CONTRACT']}: POST /bedside/sessions/<id>/anchor "
                  "after the seal")  # fmt: skip
        else:
            print("  Chain:  not started (anchoring needs node and `make npm`)")
        print(f"  Logs:   {logs}")
        print("\nPress Ctrl-C to stop everything.")
        labs = (lab, reviewer)
        while all(p.poll() is None for p in procs) and all(
            s.proc is not None and s.proc.poll() is None for s in labs
        ):
            time.sleep(0.5)
        print("bedside demo: a component stopped; see the logs in", logs, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbedside demo: stopping …")
        return 0
    finally:
        # An impatient second Ctrl-C must not cut the stopping short and leave kernels behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in (reviewer, lab):
            if server is not None:
                server.stop()
        for proc in reversed(procs):
            _stop(proc)
        print(f"bedside demo: stopped. Your ledgers are in {work / 'sessions'}; check one with "
              "`bedside ledger verify DIR/session.ledger`")  # fmt: skip
