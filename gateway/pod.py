"""The kernel pod's entry point for Enterprise Gateway's Kubernetes process proxy.

It does what Enterprise Gateway's own kernel launcher (`launch_ipykernel.py` in EG's kernel
images) does, with the sentry in the place of the kernel: choose the five kernel ports (within
EG's port range), write their connection file, start the sentry on them (which starts the guarded
kernel beside it), send the connection information to EG's response address encrypted as EG 3.3
expects, and serve EG's communication port: `{"signum": 2}` interrupts the kernel,
`{"signum": 0}` is EG's liveness poll, `{"shutdown": 1}` (and SIGTERM, which Kubernetes sends
when EG deletes the pod) ends the session cleanly, the ledger closed with a custodian checkpoint.

    python -m bedside.gateway.pod --kernel-id ID --response-address IP:PORT --public-key KEY \\
        --port-range LOW..HIGH --policy FILE --custodian-key KEYFILE --state-dir DIR \\
        [--kernel-container --ipc-dir DIR [--outbox-dir DIR] | --no-sandbox]

EG's `launch_kubernetes.py` puts the four EG values in the pod's first container's environment
(`KERNEL_ID`, `RESPONSE_ADDRESS`, `PUBLIC_KEY`, `PORT_RANGE`); they are the defaults of the
options, and the EG 3.3 spellings `--RemoteProcessProxy.kernel-id` etc. are accepted too.

With `--kernel-container` the kernel is not started here: it runs in the pod's second container
(no custodian key, no ledger volume; the pod's NetworkPolicy is its network boundary), and the
two share only `--ipc-dir`, where the sentry writes the kernel's ipc connection file, and
`--outbox-dir`, where the kernel leaves release requests. Without it (a single machine, the
tests) the sentry starts the kernel in its bubblewrap sandbox, as the local kernelspec does.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import queue
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bedside._cli import report_error
from bedside.errors import Error, GatewayError
from bedside.gateway._early import write_connection
from bedside.gateway.sentry import KERNEL_OUTBOX, Sentry

__all__ = [
    "LAUNCHER_VERSION",
    "CommRequest",
    "PodSentry",
    "PortRange",
    "build_parser",
    "encrypt_connection_info",
    "main",
    "parse_port_range",
]

log = logging.getLogger("bedside.pod")

#: The payload version EG 3.3's ResponseManager._decode_payload understands (RSA-wrapped AES key).
LAUNCHER_VERSION = 1
#: EG passes its own minimum with the kernel's environment (EG_MIN_PORT_RANGE_SIZE).
DEFAULT_MIN_PORT_RANGE = 1000
# How long the comm listener waits in accept() before looking at the stop flag again.
_ACCEPT_TIMEOUT_S = 0.5
# Largest request EG sends on the comm port ({"signum": n} or {"shutdown": 1}).
_MAX_REQUEST_BYTES = 4096
# EG sends the kernel's shutdown_request (control channel) and the comm port's {"shutdown": 1}
# at once, and Kubernetes' SIGTERM follows when EG deletes the pod: the session ends once the
# kernel has exited after the request, or after this grace when no request came.
SHUTDOWN_GRACE_S = 3.0


@dataclass(frozen=True)
class PortRange:
    """EG's `--port-range LOW..HIGH`; 0..0 means any free port."""

    low: int
    high: int

    def candidate(self) -> int:
        if self.high == self.low:
            return 0
        return random.randint(self.low, self.high)  # noqa: S311 - a port, not a secret


def parse_port_range(text: str | None, *, min_size: int | None = None) -> PortRange:
    """Parse and check `LOW..HIGH` the way EG's launcher does (a non-empty range must span at
    least EG_MIN_PORT_RANGE_SIZE ports)."""
    if not text:
        return PortRange(0, 0)
    if min_size is None:
        min_size = int(os.environ.get("EG_MIN_PORT_RANGE_SIZE", DEFAULT_MIN_PORT_RANGE))
    parts = text.split("..")
    try:
        if len(parts) != 2:
            raise ValueError("expected LOW..HIGH")
        low, high = int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise GatewayError(
            f"--port-range {text!r}: {exc}; EG passes it as LOW..HIGH (e.g. 40000..41000, or "
            "0..0 for any port): set EG_PORT_RANGE on the gateway"
        ) from exc
    if not (0 <= low <= high <= 65535):
        raise GatewayError(f"--port-range {text!r}: ports must satisfy 0 <= LOW <= HIGH <= 65535")
    if high != low and high - low < min_size:
        raise GatewayError(
            f"--port-range {text!r} spans {high - low} ports, fewer than {min_size} "
            "(EG_MIN_PORT_RANGE_SIZE): widen EG_PORT_RANGE on the gateway"
        )
    return PortRange(low, high)


def _bind_in_range(ip: str, ports: PortRange, *, retries: int = 25) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for _ in range(retries + 1):
        try:
            sock.bind((ip, ports.candidate()))
            return sock
        except OSError:
            continue
    sock.close()
    raise GatewayError(
        f"no free port on {ip} within {ports.low}..{ports.high} after {retries + 1} tries: "
        "widen EG_PORT_RANGE or stop what holds the ports"
    )


def select_ports(ip: str, ports: PortRange, count: int = 5) -> list[int]:
    """`count` distinct free ports in the range (held together while choosing, as EG's launcher
    does, then released for the sentry to bind)."""
    held = [_bind_in_range(ip, ports) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def _load_public_key(public_key: str) -> RSAPublicKey:
    # EG sends its PEM body without the header, footer and newlines: base64 of the DER
    # SubjectPublicKeyInfo (ResponseManager.public_key).
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key, validate=True))
    except ValueError as exc:
        raise GatewayError(
            f"--public-key is not Enterprise Gateway's RSA public key ({exc}); it must be the "
            "{public_key} value EG substitutes into the kernelspec's argv"
        ) from exc
    if not isinstance(key, RSAPublicKey):
        raise GatewayError("--public-key is not an RSA key; Enterprise Gateway 3.3 sends RSA")
    return key


def encrypt_connection_info(info: dict[str, Any], public_key: str) -> bytes:
    """The response payload EG 3.3 decodes (`ResponseManager._decode_payload`, version 1):
    base64 of JSON `{"version": 1, "key": b64(RSA-PKCS#1 v1.5(aes_key)), "conn_info":
    b64(AES-128-ECB(PKCS#7(json(info))))}`.

    AES in ECB mode and PKCS#1 v1.5 are EG's choice, not ours; the payload holds the kernel
    ports and the sentry's outer HMAC key, and only EG's private key opens it.
    """
    rsa_key = _load_public_key(public_key)
    aes_key = secrets.token_bytes(16)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(json.dumps(info).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()  # noqa: S305 - EG's format
    sealed = encryptor.update(plain) + encryptor.finalize()
    wrapped = rsa_key.encrypt(aes_key, asym_padding.PKCS1v15())
    payload = {
        "version": LAUNCHER_VERSION,
        "key": base64.b64encode(wrapped).decode(),
        "conn_info": base64.b64encode(sealed).decode(),
    }
    return base64.b64encode(json.dumps(payload).encode())


def send_connection_info(payload: bytes, response_address: str, *, timeout: float = 30) -> None:
    """Deliver the payload to EG's response address (`IP:PORT`); EG reads until EOF."""
    host, sep, port = response_address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise GatewayError(
            f"--response-address {response_address!r} is not IP:PORT; it must be the "
            "{response_address} value EG substitutes into the kernelspec's argv"
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            return
        except OSError as exc:
            # A pod can start before the NetworkPolicy and Service routes settle: retry a while.
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"cannot reach Enterprise Gateway's response address {response_address}: "
                    f"{exc}; check the NetworkPolicy allows egress to the gateway's port 8877"
                ) from exc
            time.sleep(0.5)


@dataclass(frozen=True)
class CommRequest:
    """One request EG sent on the communication port."""

    signum: int | None = None
    shutdown: bool = False


def parse_comm_request(data: bytes) -> CommRequest:
    request = json.loads(data.decode())
    if not isinstance(request, dict):
        raise ValueError("a comm request is a JSON object")
    signum = request.get("signum")
    return CommRequest(
        signum=None if signum is None else int(signum),
        shutdown=bool(request.get("shutdown")),
    )


class CommListener(threading.Thread):
    """Accepts EG's communication-port requests and queues them for the sentry's thread (which
    owns the kernel and the ledger)."""

    def __init__(self, sock: socket.socket, requests: queue.Queue[CommRequest]) -> None:
        super().__init__(name="bedside-comm", daemon=True)
        self.sock = sock
        self.requests = requests
        self.stopping = threading.Event()
        self.sock.listen(8)
        self.sock.settimeout(_ACCEPT_TIMEOUT_S)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    data = b""
                    while len(data) <= _MAX_REQUEST_BYTES:
                        chunk = conn.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    request = parse_comm_request(data)
                except (OSError, ValueError) as exc:
                    log.warning("ignored a malformed request on the comm port: %s", exc)
                    continue
            if request.signum != 0:  # EG polls with signum 0 every few seconds
                log.info("comm port: %s", request)
            self.requests.put(request)
            if request.shutdown:
                return

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()


class _SiblingKernel:
    """Stands in for the kernel's `Popen` when the kernel runs in the pod's other container: the
    sentry cannot signal or wait for a process it cannot see, so liveness is the kernel's
    heartbeat over ipc, interrupts are `interrupt_request`s and termination a
    `shutdown_request` (EG's kernelspec uses interrupt_mode "message" for this reason)."""

    def __init__(
        self, sentry: PodSentry, hb_endpoint: str, *, start_timeout: float, hb_timeout: float
    ) -> None:
        self.sentry = sentry
        self.pid = 0
        self.hb_endpoint = hb_endpoint
        self.start_timeout = start_timeout
        self.hb_timeout = hb_timeout
        self.started = time.monotonic()
        self.seen: float | None = None
        self.code: int | None = None
        self._sent: float | None = None
        self._ctx = zmq.Context()
        self._hb = self._socket()

    def _socket(self) -> zmq.Socket[bytes]:
        # Its own context: the sentry terminates its context in close() while this one is still
        # needed to see the kernel go.
        sock = self._ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.connect(self.hb_endpoint)
        return sock

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        clock = time.monotonic()
        if self._sent is not None and self._hb.poll(0):
            self._hb.recv()
            self.seen, self._sent = clock, None
        if self._sent is None:
            self._hb.send(b"bedside-ping")
            self._sent = clock
        elif clock - self._sent > self.hb_timeout and (
            self.seen is not None or clock - self.started > self.start_timeout
        ):
            log.error(
                "the kernel container %s",
                "stopped answering its heartbeat" if self.seen else "never came up",
            )
            self.code = -signal.SIGKILL
        return self.code

    def send_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self.sentry._send_kernel_control("interrupt_request", {})
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            self.terminate()

    def terminate(self) -> None:
        self.sentry._send_kernel_control("shutdown_request", {"restart": False})
        # The kernel is expected to go now: a second without a heartbeat is enough to tell.
        self.hb_timeout = min(self.hb_timeout, 1.0)

    def kill(self) -> None:
        # Nothing to kill from here: Kubernetes removes the container with the pod.
        self.code = -signal.SIGKILL

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("kernel container", timeout or 0)
            time.sleep(0.1)
        assert self.code is not None
        return self.code

    def close(self) -> None:
        self._hb.close(linger=0)
        self._ctx.term()


class PodSentry(Sentry):
    """The sentry with EG's communication port served on its own thread, and optionally the
    kernel in the pod's other container."""

    def __init__(
        self,
        *,
        comm: queue.Queue[CommRequest],
        kernel_ipc_dir: Path | None = None,
        kernel_outbox: Path | None = None,
        kernel_start_timeout: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.comm = comm
        self.kernel_ipc_dir = kernel_ipc_dir
        self.kernel_outbox = kernel_outbox
        self.kernel_start_timeout = kernel_start_timeout
        self.end_reason: str | None = None
        self._end_at: float | None = None

    # The kernel in the other container ------------------------------------------------------

    def _launch_kernel(self) -> None:
        if self.kernel_ipc_dir is None:
            super()._launch_kernel()
            return
        ipc = self.kernel_ipc_dir
        ipc.mkdir(parents=True, exist_ok=True)
        _, info = write_connection(ipc, self.inner.key.decode())
        self._ipc_dir = ipc
        if self.kernel_outbox is not None:
            # The kernel container leaves release requests in the volume both mount; the
            # sentry's airlock reads `<session>/kernel-outbox`, so that name points there. What
            # the kernel wrote is copied out as for the sandbox (plain files only, no links).
            outbox = self.state_dir / KERNEL_OUTBOX
            outbox.rmdir()
            outbox.symlink_to(self.kernel_outbox.resolve(), target_is_directory=True)
        self.proc = _SiblingKernel(  # type: ignore[assignment]
            self,
            f"ipc://{info['ip']}-{info['hb_port']}",
            start_timeout=self.kernel_start_timeout,
            hb_timeout=10.0,
        )
        self.cpu = None
        self._connect_inner(info)

    # EG's requests, handled on the sentry's thread ------------------------------------------

    def _check_kernel(self) -> int | None:
        # Called by the relay loop at least every 0.2 s: the one place where the comm thread's
        # requests can touch the kernel and the ledger without racing the relay.
        while True:
            try:
                request = self.comm.get_nowait()
            except queue.Empty:
                break
            self._serve(request)
        if self._end_at is not None and time.monotonic() >= self._end_at:
            self.stop_requested = True
        return super()._check_kernel()

    def _serve(self, request: CommRequest) -> None:
        signum = request.signum
        if signum == signal.SIGINT:
            # As a message, the way the bedside kernelspecs interrupt (interrupt_mode
            # "message"): a signal would reach bubblewrap, or nothing in the other container.
            self._send_kernel_control("interrupt_request", {})
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            self.end(f"signal {signum} requested on the kernel pod's communication port")
        elif signum not in (None, 0):
            log.warning("comm port: signal %d is not passed to the kernel", signum)
        if request.shutdown:
            self.end("a shutdown request on the kernel pod's communication port")

    def end(self, reason: str, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop within `grace` seconds: earlier when the kernel exits after a shutdown_request
        (its reply is relayed and no interruption recorded), else with `reason` in the ledger."""
        if self.end_reason is None:
            self.end_reason = reason
        deadline = time.monotonic() + grace
        self._end_at = deadline if self._end_at is None else min(self._end_at, deadline)

    def finish(self) -> None:
        """Record why the session ended when nobody asked the kernel to shut down (EG's culler,
        a deleted pod): the ledger then ends on an `interrupted` entry and a custodian
        checkpoint, as when the launcher goes away."""
        ledger = getattr(self, "ledger", None)
        if ledger is None or self.shutting_down or not ledger.has_header or ledger.sealed:
            return
        reason = self.end_reason or "the kernel pod was stopped"
        cut = self.pending_executes[0] if self.pending_executes else None
        ledger.interrupted(reason, cut)
        ledger.custodian_checkpoint()

    def close(self) -> None:
        sibling = self.proc if isinstance(self.proc, _SiblingKernel) else None
        try:
            super().close()
        finally:
            if sibling is not None:
                sibling.close()


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m bedside.gateway.pod",
        description=(
            "The bedside kernel pod's entry point for Enterprise Gateway's Kubernetes process "
            "proxy: the sentry on the kernel ports, connection info back to the gateway, and "
            "the gateway's communication port. Enterprise Gateway's values default to the "
            "environment launch_kubernetes.py sets (KERNEL_ID, RESPONSE_ADDRESS, PUBLIC_KEY, "
            "PORT_RANGE)."
        ),
    )
    eg = [
        ("kernel-id", "KERNEL_ID", "the kernel id Enterprise Gateway assigned"),
        ("response-address", "RESPONSE_ADDRESS", "IP:PORT where the gateway awaits the reply"),
        ("public-key", "PUBLIC_KEY", "the gateway's RSA public key (base64 DER)"),
        ("port-range", "PORT_RANGE", "LOW..HIGH for the kernel ports (0..0: any)"),
    ]
    for name, var, text in eg:
        dest = name.replace("-", "_")
        parser.add_argument(f"--{name}", dest=dest, default=env.get(var), help=f"{text} (${var})")
        parser.add_argument(f"--RemoteProcessProxy.{name}", dest=dest, help=argparse.SUPPRESS)
    parser.add_argument("--policy", required=True, type=Path, help="the custodian's policy file")
    parser.add_argument(
        "--custodian-key", required=True, type=Path, help="the custodian's Ed25519 signing key"
    )
    parser.add_argument(
        "--state-dir", required=True, type=Path, help="where the hospital ledgers go"
    )
    parser.add_argument(
        "--ip",
        default="0.0.0.0",  # noqa: S104 - the pod's own address; the NetworkPolicy admits EG only
        help="address the kernel ports and the comm port listen on (default: all of the pod's)",
    )
    parser.add_argument(
        "--kernel-container",
        action="store_true",
        help="the kernel runs in the pod's other container; share --ipc-dir with it",
    )
    parser.add_argument(
        "--ipc-dir", type=Path, help="the directory shared with the kernel container"
    )
    parser.add_argument(
        "--outbox-dir",
        type=Path,
        help="with --kernel-container: the volume where the kernel leaves release requests",
    )
    parser.add_argument(
        "--kernel-start-timeout",
        type=float,
        default=120.0,
        help="seconds the kernel container may take to answer its first heartbeat",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="start the kernel WITHOUT bubblewrap (development only; every notice says so)",
    )
    parser.add_argument("--origin", default=None, help="the checkpoint origin line")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    missing = [
        f"--{name} (${var})"
        for name, var in (
            ("kernel-id", "KERNEL_ID"),
            ("response-address", "RESPONSE_ADDRESS"),
            ("public-key", "PUBLIC_KEY"),
        )
        if not getattr(args, name.replace("-", "_"))
    ]
    if missing:
        raise GatewayError(
            "missing " + ", ".join(missing) + ": this entry point is started by Enterprise "
            "Gateway's Kubernetes process proxy, which passes them; use `bedside sentry` for a "
            "kernel without a gateway"
        )
    for name, var in (("kernel_id", "KERNEL_ID"), ("response_address", "RESPONSE_ADDRESS")):
        if str(getattr(args, name)).startswith("$("):
            raise GatewayError(
                f"{getattr(args, name)} was not expanded: the pod has no {var} in its "
                "environment; the pod must be created by Enterprise Gateway's "
                "launch_kubernetes.py, which sets it on the first container"
            )
    if args.kernel_container and args.ipc_dir is None:
        raise GatewayError("--kernel-container needs --ipc-dir, the volume both containers mount")
    _load_public_key(args.public_key)


def run(args: argparse.Namespace) -> int:
    """Start the sentry, report to EG, serve until the session ends; the exit status."""
    _check_args(args)
    ports = parse_port_range(args.port_range)
    private = Path(tempfile.mkdtemp(prefix="bedside-pod-"))
    requests: queue.Queue[CommRequest] = queue.Queue()
    comm_sock = _bind_in_range(args.ip, ports)
    listener = CommListener(comm_sock, requests)
    kernel_ports = select_ports(args.ip, ports)
    connection = {
        "shell_port": kernel_ports[0],
        "iopub_port": kernel_ports[1],
        "stdin_port": kernel_ports[2],
        "hb_port": kernel_ports[3],
        "control_port": kernel_ports[4],
        "ip": args.ip,
        "key": secrets.token_hex(32),
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "bedside",
    }
    connection_file = private / f"kernel-{args.kernel_id}.json"
    connection_file.write_text(json.dumps(connection))
    connection_file.chmod(0o600)
    sentry = PodSentry(
        comm=requests,
        kernel_ipc_dir=args.ipc_dir if args.kernel_container else None,
        kernel_outbox=args.outbox_dir if args.kernel_container else None,
        kernel_start_timeout=args.kernel_start_timeout,
        connection_file=connection_file,
        policy_path=args.policy,
        custodian_key=args.custodian_key,
        state_dir=args.state_dir,
        sandbox=not args.no_sandbox,
        origin=args.origin,
    )

    def stop(signum: int, frame: Any) -> None:
        sentry.end(f"the kernel pod received signal {signum}")

    def interrupt(signum: int, frame: Any) -> None:
        requests.put(CommRequest(signum=signal.SIGINT))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, interrupt)
    try:
        sentry.start()
        # What EG's launcher reports, plus nothing of the kernel behind the sentry: EG talks to
        # the sentry's ports and comm port only.
        info = dict(connection)
        info.update(
            pid=os.getpid(),
            pgid=os.getpgid(0),
            comm_port=comm_sock.getsockname()[1],
            kernel_id=args.kernel_id,
        )
        listener.start()
        send_connection_info(encrypt_connection_info(info, args.public_key), args.response_address)
        log.info(
            "kernel %s: connection info sent to %s; comm port %d; ledger session %s",
            args.kernel_id,
            args.response_address,
            info["comm_port"],
            sentry.session_id,
        )
        code = sentry.run()
        sentry.finish()
        return code
    finally:
        listener.stop()
        try:
            sentry.close()
        finally:
            connection_file.unlink(missing_ok=True)
            private.rmdir()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("BEDSIDE_SENTRY_LOG", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Error as exc:
        return report_error(exc, prefix="bedside pod")


if __name__ == "__main__":
    sys.exit(main())
