"""The sentry: the trusted process at the hospital boundary between Jupyter clients and a kernel.

It owns the five ports of the connection file Enterprise Gateway (or jupyter_client) gave it,
launches the guarded kernel in the sandbox with a private ipc connection file and a fresh key,
and relays the five channels. Every message that leaves passes the boundary guard, is committed
to the hospital copy of the session ledger and carries a receipt signed with the custodian key;
the session's intent, budget and seal are handled here too (docs/custodian/sentry.md).

    python -m bedside.gateway.sentry -f CONNECTION_FILE --policy FILE \\
        --custodian-key KEYFILE --state-dir DIR [--no-sandbox]
"""

from __future__ import annotations

import sys

from bedside.gateway import _early

if __name__ == "__main__":
    # Before the imports below (numpy, pyarrow, zmq, the ledger): start the sandboxed kernel
    # now when this policy's launch is remembered, so that it boots while they load.
    _early.prelaunch(sys.argv[1:])

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from bedside import _starttrace
from bedside.errors import Error, GatewayError, ReleaseError
from bedside.gateway._boundary import (
    BoundaryGuard,
    PolicyScan,
    Verdict,
    kernel_claim,
    policy_scanner,
    status_verdict,
)
from bedside.gateway._loop import Relay, send_frames
from bedside.gateway._receipts import (
    HospitalLedger,
    Prepared,
    canonical_content,
    committed_bytes,
    committed_from_content,
    prepare_release,
)
from bedside.gateway._session import (
    Budget,
    IntentRefused,
    Meter,
    ProcessTreeCPU,
    check_intent,
    environment_digest,
    parse_intent,
    policy_ceiling,
)
from bedside.gateway._wire import MalformedMessage, Message, Wire, dumps, new_header
from bedside.policy.decision import Action, Decision, Layer
from bedside.policy.release import KINDS

log = logging.getLogger("bedside.sentry")

CHANNELS = ("shell", "control", "stdin", "iopub", "hb")
NO_SANDBOX_WARNING = (
    " [Warning: this kernel runs WITHOUT the hospital sandbox (--no-sandbox); "
    "for development only.]"
)
# iopub outputs counted against (and stopped by) the session's egress budget.
EGRESS_COUNTED = frozenset(
    {
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "error",
        "comm_open",
        "comm_msg",
    }
)
# Before the guard is built (see `Sentry._early_verdict`): the requests forwarded to the kernel
# and the replies relayed back, on these channels; with status messages, whose content the
# guard rebuilds from a fixed shape unread. The guard passes kernel_info_reply only after a scan;
# early it passes because no request that runs code has reached the kernel yet.
EARLY_REQUESTS = frozenset({"kernel_info_request"})
EARLY_REPLIES = frozenset({"kernel_info_reply"})
EARLY_CHANNELS = frozenset({"shell", "control"})
CONTROL_TYPES = frozenset(
    {
        "bedside_intent_request",
        "bedside_cosign_request",
        "bedside_seal_request",
        "bedside_status_request",
        "bedside_entries_request",
        "bedside_release_status_request",
        "bedside_release_fetch_request",
    }
)
#: Most bytes of opened content one `bedside_entries_reply` carries (it travels as one
#: websocket message; jupyter_server's gateway client drops any over 10 MiB).
_MAX_ENTRIES_OPENED = 4 * 1024 * 1024
#: Most entries one `bedside_entries_request` returns.
_MAX_ENTRIES_REPLY = 1000
_MAX_REQUESTS = 10_000
# Outputs at least this large are encoded, committed, hashed and base64-encoded for their
# release in a worker thread while the guard scans them (`_kernel_msg`).
PREPARE_MIN_BYTES = 64 * 1024
PREPARED_TYPES = frozenset({"stream", "display_data", "update_display_data", "execute_result"})
# With BEDSIDE_START_TRACE=1 (`bedside._starttrace`, off by default: one flag test per kernel
# message), each iopub message from the kernel with a frame this large leaves a timestamp at each
# step of its way through the sentry (`mb.sentry.*`), read by `bench/mb_timeline.py`.
_TRACE = _starttrace.enabled()
_TRACE_MIN_BYTES = 64 * 1024


def _mark(label: str) -> None:
    """`_starttrace.mark` with the relay thread's own CPU time (where the process's would mix in
    the worker's and the scan's threads)."""
    line = f"bedside-start-trace {label} {time.time():.6f} {os.getpid()} {time.thread_time():.6f}\n"
    try:
        os.write(_starttrace._stderr(), line.encode())
    except OSError:
        pass


# Quiet time after which appended ledger entries are flushed to disk.
QUIET_MS = 30
# How often the airlock looks for new release requests and queued custodian decisions: when the
# relay is quiet, at most every AIRLOCK_POLL_S; while messages keep it busy, every
# AIRLOCK_POLL_BUSY_S (a look costs 0.1-0.3 ms, which would otherwise land on a cell's path).
AIRLOCK_POLL_S = 0.5
AIRLOCK_POLL_BUSY_S = 2.0
# An upper bound on the CPU seconds the kernel can use per second of wall time.
_CORES = os.cpu_count() or 1
# Where the kernel leaves release requests: the only writable path it shares with the sentry.
KERNEL_OUTBOX = _early.KERNEL_OUTBOX


@dataclass
class Request:
    """A request seen on the way in: where its replies go and the header they answer."""

    idents: list[bytes] | None
    raw_header: bytes
    msg_type: str
    channel: str


def _read_connection_file(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GatewayError(f"{path}: cannot read the connection file: {exc}") from exc
    for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port", "key"):
        if name not in info:
            raise GatewayError(f"{path}: the connection file lacks {name!r}")
    if info.get("transport", "tcp") != "tcp":
        raise GatewayError(f"{path}: the sentry listens on tcp only (transport is ipc)")
    return info


class Sentry:
    """One kernel session behind the hospital boundary."""

    def __init__(
        self,
        *,
        connection_file: Path,
        policy_path: Path,
        custodian_key: Path,
        state_dir: Path,
        sandbox: bool = True,
        kernel: str = "guarded",
        origin: str | None = None,
    ) -> None:
        self.connection_file = connection_file
        self.policy_path = policy_path
        self.custodian_key = custodian_key
        self.sandbox = sandbox
        self.kernel = kernel
        # A kernel `_early.prelaunch` started for this command line: its session and key are
        # this session's (adopted in `start` once the policy is validated).
        self._prelaunched = _early.pending(policy_path, state_dir, kernel, sandbox)
        self.session_id = self._prelaunched.session_id if self._prelaunched else uuid.uuid4().hex
        self.state_root = state_dir
        self.state_dir = state_dir / self.session_id
        self.origin = origin or f"{socket.gethostname()}/bedside/{self.session_id}"
        self.outer_info = _read_connection_file(connection_file)
        self.outer = Wire(
            self.outer_info["key"].encode(),
            self.outer_info.get("signature_scheme", "hmac-sha256"),
            name="client",
        )
        inner_key = self._prelaunched.inner_key if self._prelaunched else secrets.token_hex(32)
        self.inner = Wire(inner_key.encode(), name="kernel")
        self.requests: OrderedDict[str, Request] = OrderedDict()
        self.pending_executes: deque[str] = deque()
        self.hb_pending: OrderedDict[tuple[bytes, ...], None] = OrderedDict()
        self.meter = Meter()
        self.budget = Budget()
        self.intent: dict[str, Any] | None = None
        self.refused: str | None = None
        # The first intent and our answer, given again for the same intent (_intent).
        self._intent_answer: tuple[Any, dict[str, Any]] | None = None
        self.sealed = False
        self.shutting_down = False
        self.stop_requested = False
        self.dropped = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu: ProcessTreeCPU | None = None
        self._private_dir: Path | None = None
        self._ipc_dir: Path | None = None
        self._scratch_dir: Path | None = None
        self._ctx = zmq.Context()
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        # The sockets sent on since the relay last asked them for messages (`run`).
        self._sent_on: set[Any] = set()
        self._cpu_checked = 0.0
        # The kernel's CPU seconds changed (a cell ended) and were not read yet. Reading them
        # walks the kernel's process tree in /proc (about a millisecond in the sandbox), so it
        # happens when the relay is quiet, not on the path of every cell: a cell admitted
        # meanwhile is checked against a reading at most 1 s old when the budget could have run
        # out since the last one (`_refusal`), and `_watch_cpu` stops a running cell within a
        # second of the budget running out either way.
        self._cpu_stale = False
        self._cpu_read_at = 0.0
        self._guard_ready = threading.Event()
        # Whether the relay uses the guard; until then it holds what only the guard may judge,
        # in order (client requests, kernel messages), and passes the EARLY_* kinds.
        self._guard_open = False
        self._relayed_any = False
        # Whether the kernel message being handled is traced (`_TRACE`).
        self._tracing = False
        self._held_client: list[tuple[str, Message]] = []
        self._held_kernel: list[tuple[str, Message]] = []
        self._guard_error: BaseException | None = None
        self._scan: PolicyScan | None = None
        self.airlock: Any = None
        self._preparer: ThreadPoolExecutor | None = None

    # -- start --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the outer ports, launch the kernel, open the ledger; load the policy's data in
        the background while the kernel boots (no kernel message is read before it is ready)."""
        from bedside.ledger import Signer
        from bedside.policy import load_policy

        self.policy = load_policy(self.policy_path)
        self._remember_launch()
        self.signer = Signer.load(self.custodian_key)
        self._bind_outer()
        # Before the kernel: its release outbox lives in the session's (0700) state directory.
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.state_dir / KERNEL_OUTBOX).mkdir(mode=0o700, exist_ok=True)
        self._launch_kernel()
        self._guard_thread = threading.Thread(
            target=self._build_guard, name="bedside-index", daemon=True
        )
        self._guard_thread.start()
        self.budget = policy_ceiling(self.policy)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ledger = HospitalLedger(
            self.state_dir / "session.ledger",
            session_id=self.session_id,
            origin=self.origin,
            signer=self.signer,
        )
        self._open_airlock()
        log.info(
            "sentry session %s: policy %s, ledger %s, sandbox %s",
            self.session_id,
            self.policy.id,
            self.ledger.path,
            "on" if self.sandbox else "OFF",
        )

    def _build_guard(self) -> None:
        try:
            scan = self._build_scan()
            self.guard = BoundaryGuard(
                scan,
                mime_allow=list(self.policy.outputs.mime_allow),
                max_output_bytes=int(self.policy.outputs.max_output_bytes),
                notice_suffix="" if self.sandbox else NO_SANDBOX_WARNING,
                scan_seam=scan,
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the relay's thread
            self._guard_error = exc
        finally:
            _starttrace.mark("sentry.guard_ready")
            self._guard_ready.set()
        # The session header needs it before the first cell runs. Computed here, after the
        # guard is ready (it never holds up the kernel's start) and usually while the kernel
        # still boots, it does not hold up that first cell either: it reads the metadata of
        # every installed distribution (0.3-1 s).
        try:
            environment_digest()
        except Exception:  # noqa: BLE001 - the relay computes it again and reports the failure
            log.exception("cannot compute the environment digest")

    def _open_guard(self) -> None:
        """Wait for the guard, then relay what waited for it: the kernel's messages first (sent
        before any request that runs code), then the client's requests, each in order. A guard
        that cannot be built stops the session with a notice to the client."""
        self._guard_ready.wait()
        if self._guard_error is not None:
            self._guard_failed()
        self._guard_open = True
        held, self._held_kernel = self._held_kernel, []
        for channel, msg in held:
            self._relay_held(self._kernel_msg, channel, msg, None)
        requests, self._held_client = self._held_client, []
        for channel, msg in requests:
            self._relay_held(self._client_msg, channel, msg)

    def _relay_held(self, handler: Any, *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            # Fail closed, as the relay loop does: the message is not relayed.
            self.dropped += 1
            log.exception("dropped a message the sentry could not process")

    def _guard_failed(self) -> None:
        """Tell the client the session stops (no detail of the failure leaves), then stop."""
        exc = self._guard_error
        log.error("the sentry cannot build its guard: %r", exc)
        text = (
            "[bedside] The hospital sentry cannot build its output guard "
            f"({type(exc).__name__}); no output can leave, so the session stops. "
            "The custodian finds the cause in the sentry log."
        )
        if not self.sandbox:
            text += NO_SANDBOX_WARNING
        decision = Decision.block("guard_unavailable", "the sentry's guard could not be built",
                                  layer=Layer.SENTRY)  # fmt: skip
        meta = {"bedside": decision.to_metadata()}
        answered = False
        for channel, msg in self._held_client:
            if channel == "shell" and msg.msg_type == "execute_request":
                answered = True
                parent = (msg.raw_header, msg.msg_id)
                self._answer_with_error(
                    msg.idents, parent, "BedsideSessionStopped", text, meta, decision
                )
        if not answered:
            self._emit(
                "iopub", None, "stream", {"name": "stderr", "text": text + "\n"}, meta, [],
                parent=(b"{}", ""), decision=decision,
            )  # fmt: skip
        self._held_client = []
        self._held_kernel = []
        raise GatewayError(f"the sentry cannot build its guard: {exc}") from exc

    def _build_scan(self) -> PolicyScan:
        scan, size = policy_scanner(self.policy)
        self._scan = scan
        log.info("identifier index: %d values from %d datasets", size, len(self.policy.datasets))
        return scan

    def _bind_outer(self) -> None:
        info = self.outer_info
        ip = info.get("ip", "127.0.0.1")
        kinds = {
            "shell": zmq.ROUTER,
            "control": zmq.ROUTER,
            "stdin": zmq.ROUTER,
            # XPUB, as ipykernel's: each new subscriber is greeted (`_iopub_subscribed`).
            "iopub": zmq.XPUB,
            "hb": zmq.ROUTER,
        }
        for channel, kind in kinds.items():
            sock = self._ctx.socket(kind)
            sock.linger = 1000
            if kind == zmq.ROUTER:
                sock.router_handover = 1
            if kind == zmq.XPUB:
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber, not only the first
            try:
                sock.bind(f"tcp://{ip}:{info[f'{channel}_port']}")
            except zmq.ZMQError as exc:
                raise GatewayError(
                    f"cannot bind the {channel} port {info[f'{channel}_port']} on {ip}: {exc}"
                ) from exc
            self._sockets[f"outer_{channel}"] = sock

    def _remember_launch(self) -> None:
        """Keep this policy's launch view for the next start (see `_early`)."""
        if not self.sandbox:
            return
        try:
            key = _early.cache_key(self.policy_path, self.kernel)
            _early.remember(self.state_root, key, _early.launch_view(self.policy))
        except OSError as exc:
            log.warning("cannot remember the kernel's launch (%s); later starts are slower", exc)

    def _kernel_argv(self, connection: Path) -> list[str]:
        return _early.kernel_argv(self.kernel, connection, str(self.policy.path))

    def _kernel_env(self) -> dict[str, str]:
        """What the kernel's environment adds (the sandbox fixes HOME and TMPDIR itself)."""
        assert self._scratch_dir is not None
        return _early.kernel_env(self._scratch_dir, self.state_dir / KERNEL_OUTBOX)

    def _launch_kernel(self) -> None:
        early, self._prelaunched = self._prelaunched, None
        if early is not None and _early.adopt(early, self.policy):
            log.info("adopted the kernel started before the policy was loaded")
            self._private_dir = early.private_dir
            self._ipc_dir = early.private_dir / "ipc"
            self._scratch_dir = early.private_dir / "scratch"
            self.proc = early.proc
            self.cpu = ProcessTreeCPU(self.proc.pid)
            self._connect_inner(early.info)
            return
        self._private_dir, self._ipc_dir, self._scratch_dir = _early.make_private_dir()
        connection, info = _early.write_connection(self._ipc_dir, self.inner.key.decode())
        argv = self._kernel_argv(connection)
        env = self._kernel_env()
        self.proc = self._spawn(argv, env)
        self.cpu = ProcessTreeCPU(self.proc.pid)
        self._connect_inner(info)

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        from bedside.gateway.sandbox import SandboxSpec, launch

        assert self._ipc_dir is not None and self._scratch_dir is not None
        spec = SandboxSpec(
            policy=self.policy,
            ipc_dir=self._ipc_dir,
            scratch_dir=self._scratch_dir,
            env=env,
            extra_rw=[self.state_dir / KERNEL_OUTBOX],
        )
        return launch(argv, spec, sandbox=self.sandbox)

    def _connect_inner(self, info: dict[str, Any]) -> None:
        ip = info["ip"]
        # The kernel routes input_request to the shell requester's identity: shell and stdin
        # dealers share one identity, as jupyter_client's do.
        identity = uuid.uuid4().hex.encode()
        kinds = {
            "shell": zmq.DEALER,
            "control": zmq.DEALER,
            "stdin": zmq.DEALER,
            "iopub": zmq.SUB,
            "hb": zmq.DEALER,
        }
        for channel, kind in kinds.items():
            sock = self._ctx.socket(kind)
            sock.linger = 0
            if channel in ("shell", "stdin"):
                sock.identity = identity
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            # The kernel binds these a second or so from now; retry often (zmq's default is
            # every 100 ms), so the relay is connected as soon as it is up.
            sock.reconnect_ivl = 10
            sock.connect(f"ipc://{ip}-{info[f'{channel}_port']}")
            self._sockets[f"inner_{channel}"] = sock

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Relay until the kernel exits or the sentry is told to stop; the exit status."""
        s = self._sockets
        handlers = {
            s["outer_shell"]: lambda f: self._from_client("shell", f),
            s["outer_control"]: lambda f: self._from_client("control", f),
            s["outer_stdin"]: lambda f: self._from_client("stdin", f),
            s["outer_hb"]: self._hb_from_client,
            s["outer_iopub"]: self._iopub_subscribed,
            s["inner_shell"]: lambda f: self._from_kernel("shell", f),
            s["inner_control"]: lambda f: self._from_kernel("control", f),
            s["inner_stdin"]: lambda f: self._from_kernel("stdin", f),
            s["inner_iopub"]: lambda f: self._from_kernel("iopub", f),
            s["inner_hb"]: self._hb_from_kernel,
        }
        # Until the guard is built, kernel_info and status messages pass and the rest is held
        # (`_from_client`, `_from_kernel`); `_open_guard` then relays what was held, in order.
        relay = Relay(handlers)
        # Every send goes through `_send`, which notes the socket here: the relay asks it for
        # waiting messages before it sleeps (a send may take in a socket's arrival signal).
        self._sent_on = relay.sent_on
        try:
            return self._relay(relay)
        finally:
            self._sent_on = set()
            relay.close()

    def _relay(self, relay: Relay) -> int:
        last_check = last_poll = 0.0
        # The sentry stands in for the kernel process, so it behaves like ipykernel's
        # ParentPollerUnix: when whatever launched it (Enterprise Gateway, a KernelManager) is
        # gone without shutting it down, nobody can reach the session any more, so it ends it.
        launcher = os.getppid()
        while not self.stop_requested:
            if not self._guard_open and self._guard_ready.is_set():
                self._open_guard()
            # While entries wait to be made durable, wake up soon: the flush (two fsyncs)
            # happens as soon as the burst of a cell has settled, off the messages' path.
            busy = self.ledger.dirty or not self._guard_open
            events = 0
            for sock in relay.wait(QUIET_MS if busy else 200):
                events += relay.drain(sock, self._handler_failed)
            clock = time.monotonic()
            self.ledger.flush_if_due(force=not events)
            if not events:
                self._read_cpu()
            if clock - last_poll > (AIRLOCK_POLL_S if not events else AIRLOCK_POLL_BUSY_S):
                last_poll = clock
                self._poll_airlock()
            if not events or clock - last_check > 0.2:
                last_check = clock
                code = self._check_kernel()
                if code is not None:
                    return code
                if os.getppid() != launcher:
                    self._launcher_gone(launcher)
                    return 1
        return 0

    def _handler_failed(self) -> None:
        # Fail closed: the message is not relayed, the session goes on.
        self.dropped += 1
        log.exception("dropped a message the sentry could not process")

    def _send(self, name: str, frames: list[Any]) -> None:
        """Send one message on socket `name` (`_loop.send_frames`), noted for the relay."""
        sock = self._sockets[name]
        send_frames(sock, frames)
        self._sent_on.add(sock)
        if self._tracing:
            _mark("mb.sentry.sent")

    def _launcher_gone(self, launcher: int) -> None:
        """The process that started this kernel died: record the interruption and stop."""
        log.error("the process that launched this kernel (pid %s) is gone; stopping", launcher)
        if self.ledger.has_header and not self.ledger.sealed:
            cut = self.pending_executes[0] if self.pending_executes else None
            self.ledger.interrupted("the kernel's launcher (Enterprise Gateway) went away", cut)
            self.ledger.custodian_checkpoint()

    def _check_kernel(self) -> int | None:
        """The sentry's exit status once the kernel has exited, else None."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            self._watch_cpu()
            return None
        if self.shutting_down:
            log.info("kernel exited after shutdown_request (status %s)", code)
            self._drain_kernel()
            return 0
        self._kernel_died(code)
        return 1

    def _drain_kernel(self) -> None:
        """Relay what the kernel sent before it exited (its shutdown_reply, last outputs)."""
        if not self._guard_open:
            self._open_guard()
        deadline = time.monotonic() + 0.5
        for channel in ("iopub", "control", "shell"):
            sock = self._sockets[f"inner_{channel}"]
            while time.monotonic() < deadline:
                if not sock.poll(50):
                    break
                self._from_kernel(channel, sock.recv_multipart())

    def _watch_cpu(self) -> None:
        """While a cell runs, stop it when it overruns the session's CPU budget."""
        limit = self.budget.cpu_seconds
        if limit is None or not self.pending_executes or self.cpu is None:
            return
        clock = time.monotonic()
        if clock - self._cpu_checked < 1.0:
            return
        # Since the last reading the kernel can have used at most the wall time on every core:
        # while that bound stays under the budget nothing can have run out, and the walk of the
        # kernel's processes in /proc (about a millisecond) stays off the running cell's path.
        if self.meter.cpu_seconds + (clock - self._cpu_read_at) * _CORES < limit:
            return
        self._cpu_checked = clock
        self._cpu_read_at = clock
        self.meter.cpu_seconds = self.cpu.read()
        if self.meter.cpu_seconds >= limit:
            log.warning("CPU budget of %gs used up: interrupting the kernel", limit)
            self._send_kernel_control("interrupt_request", {})

    def _send_kernel_control(self, msg_type: str, content: dict[str, Any]) -> None:
        header = new_header(msg_type, self.session_id)
        raw_header = dumps(header)
        self._remember(header["msg_id"], Request(None, raw_header, msg_type, "control"))
        frames = self.inner.frames([], raw_header, b"{}", b"{}", dumps(content))
        self._send("inner_control", frames)

    # -- client -> kernel ---------------------------------------------------------------------

    def _remember(self, msg_id: str, request: Request) -> None:
        self.requests[msg_id] = request
        if len(self.requests) > _MAX_REQUESTS:
            self.requests.popitem(last=False)

    def _from_client(self, channel: str, frames: list[bytes]) -> None:
        try:
            msg = self.outer.parse(frames, content=False)
        except MalformedMessage as exc:
            self.dropped += 1
            log.warning("dropped a message from the client side on %s: %s", channel, exc)
            return
        if not self._guard_open and (
            self._held_client or msg.msg_type not in EARLY_REQUESTS or channel not in EARLY_CHANNELS
        ):
            # Until the guard exists only kernel_info reaches the kernel: no code runs there
            # before its outputs can be judged, so its early replies are its own (EARLY_REPLIES).
            self._held_client.append((channel, msg))
            return
        self._client_msg(channel, msg)

    def _client_msg(self, channel: str, msg: Message) -> None:
        msg_type = msg.msg_type
        if channel == "shell" and (msg_type in CONTROL_TYPES or msg_type == "execute_request"):
            try:
                msg.content = json.loads(msg.raw_content)
            except ValueError:
                log.warning("dropped a %s with unreadable content", msg_type)
                return
            if not isinstance(msg.content, dict):
                log.warning("dropped a %s whose content is not an object", msg_type)
                return
        if channel != "stdin":
            self._remember(msg.msg_id, Request(msg.idents, msg.raw_header, msg_type, channel))
        if channel == "shell" and msg_type in CONTROL_TYPES:
            self._control(msg)
            return
        if msg_type.startswith("bedside_"):
            log.warning("dropped an unknown control message %s on %s", msg_type, channel)
            return
        execute = channel == "shell" and msg_type == "execute_request"
        if execute:
            reason = self._refusal()
            if reason is not None:
                self._record_execute(msg)
                self._refuse_execute(msg, reason)
                return
            self.meter.cells += 1
            self.pending_executes.append(msg.msg_id)
        if channel == "control" and msg_type == "shutdown_request":
            self.shutting_down = True
        out = self.inner.frames(
            msg.idents,
            msg.raw_header,
            msg.raw_parent,
            msg.raw_metadata,
            msg.raw_content,
            msg.buffers,
        )
        # Frames above pyzmq's copy threshold (64 KiB: a big cell, a large output) are handed
        # to zmq without another copy (`_loop.send_frames`); smaller ones are copied.
        self._send(f"inner_{channel}", out)
        if execute:
            # Recorded right after it is sent, so the kernel starts the cell meanwhile. Nothing
            # the kernel answers is read before this returns (one thread serves both sides), so
            # the entry still comes before every output of the cell and rides on the first
            # receipt; an entry appended before the send was no more durable (flushed later).
            try:
                self._record_execute(msg)
            except Exception as exc:  # noqa: BLE001 - fail closed: no cell runs unrecorded
                log.exception("cannot record an execute request; the session stops")
                self.refused = f"the hospital ledger cannot record cells ({type(exc).__name__})"
                self._send_kernel_control("interrupt_request", {})

    def _record_execute(self, msg: Message) -> None:
        """Append an execute request's entry (and the session's header before the first)."""
        code = msg.content.get("code", "")
        code = code if isinstance(code, str) else ""
        if self._ensure_header():
            bedside = msg.metadata.get("bedside")
            sig = bedside.get("researcher_sig") if isinstance(bedside, dict) else None
            cell_id = msg.metadata.get("cellId")
            self.ledger.execute_request(
                msg.msg_id,
                code,
                sig if isinstance(sig, str) else None,
                cell_id if isinstance(cell_id, str) else None,
            )

    def _read_cpu(self, max_age: float = 0.0) -> None:
        """Bring the meter's CPU seconds up to date after a cell ended, unless the last reading
        is younger than `max_age` seconds."""
        clock = time.monotonic()
        if self._cpu_stale and self.cpu is not None and clock - self._cpu_read_at >= max_age:
            self._cpu_stale = False
            self._cpu_read_at = clock
            self.meter.cpu_seconds = self.cpu.read()

    def _refusal(self) -> str | None:
        # The kernel's CPU is read here, on the request's path (a walk of its processes in /proc,
        # a millisecond or more in the sandbox), only when the budget could have run out since
        # the last reading: the kernel cannot have used more than the wall time on every core.
        limit = self.budget.cpu_seconds
        if (
            limit is not None
            and self.meter.cpu_seconds + (time.monotonic() - self._cpu_read_at) * _CORES >= limit
        ):
            self._read_cpu(max_age=1.0)
        if self.refused is not None:
            return f"the session's intent was refused: {self.refused}"
        if self.sealed:
            return "the session is sealed and accepts no more cells"
        exhausted = self.meter.exhausted(self.budget)
        if exhausted is not None:
            return exhausted + "; the session accepts no more cells"
        return None

    def _refuse_execute(self, msg: Message, reason: str) -> None:
        text = f"[bedside] Cell not run: {reason}."
        decision = Decision.block(
            "session_budget" if self.refused is None and not self.sealed else "session_state",
            reason,
            "Seal this session and start a new one with a budget that fits the policy.",
            layer=Layer.SENTRY,
        )
        meta = {"bedside": decision.to_metadata()}
        parent = (msg.raw_header, msg.msg_id)
        self._emit_iopub("status", {"execution_state": "busy"}, parent)
        self._answer_with_error(msg.idents, parent, "BedsideSessionStopped", text, meta, decision)

    def _answer_with_error(
        self,
        idents: Any,
        parent: tuple[bytes, str],
        ename: str,
        text: str,
        meta: dict[str, Any],
        decision: Decision,
    ) -> None:
        """Answer an execute request the kernel will not run: an error, its reply, then idle."""
        error = {"ename": ename, "evalue": text, "traceback": [text]}
        self._emit_iopub("error", error, parent, metadata=meta, decision=decision)
        reply = {
            "status": "error",
            "execution_count": None,
            **error,
            "user_expressions": {},
            "payload": [],
        }
        self._emit(
            "shell", idents, "execute_reply", reply, meta, [], parent=parent, decision=decision
        )
        self._emit_iopub("status", {"execution_state": "idle"}, parent, end_of_cell=True)

    # -- kernel -> client ---------------------------------------------------------------------

    def _from_kernel(self, channel: str, frames: list[bytes]) -> None:
        if _TRACE and channel == "iopub" and max(map(len, frames)) >= _TRACE_MIN_BYTES:
            _mark("mb.sentry.received")
            self._tracing = True
            try:
                self._from_kernel_checked(channel, frames)
            finally:
                self._tracing = False
                _mark("mb.sentry.done")
            return
        self._from_kernel_checked(channel, frames)

    def _from_kernel_checked(self, channel: str, frames: list[bytes]) -> None:
        try:
            # A large message's JSON is read in the worker thread while its signature is checked
            # here; a large output's release is then prepared there at once (`_release_ahead`).
            ahead = self._release_ahead if channel == "iopub" and self._guard_open else None
            msg = self.inner.parse(frames, pool=self._prepare_pool(), ahead=ahead)
            if self._tracing:
                _mark("mb.sentry.parsed")
        except MalformedMessage as exc:
            self.dropped += 1
            log.warning("dropped a message from the kernel on %s: %s", channel, exc)
            return
        if channel == "iopub" and msg.msg_type == "iopub_welcome":
            return
        if not self._guard_open:
            behind = any(held == channel for held, _ in self._held_kernel)
            early = None if behind else self._early_verdict(channel, msg)
            if early is None:
                self._held_kernel.append((channel, msg))
                return
            self._kernel_msg(channel, msg, early)
            return
        self._kernel_msg(channel, msg, None)

    def _early_verdict(self, channel: str, msg: Message) -> Verdict | None:
        """The verdict on a kernel message before the guard exists, or None to hold it.

        Only what the guard would pass without reading it: a status of the fixed shape (the
        guard rebuilds it from its state alone), and the kernel's answer to kernel_info, the
        only request the kernel has been given (so no code of the researcher has run there).
        """
        if msg.buffers or len(msg.raw_content) > self.policy.outputs.max_output_bytes:
            return None
        if msg.msg_type == "status":
            return status_verdict(msg.content)
        if msg.msg_type in EARLY_REPLIES and channel in EARLY_CHANNELS:
            return Verdict(
                Decision.release(layer=Layer.SENTRY), msg.msg_type, msg.content, msg.metadata, []
            )
        return None

    def _kernel_msg(self, channel: str, msg: Message, early: Verdict | None) -> None:
        if not self._relayed_any:
            self._relayed_any = True
            _starttrace.mark("sentry.first_kernel_message")
        msg_type = msg.msg_type
        request = self.requests.get(msg.parent_id)
        if channel != "iopub":
            if request is None or request.idents is None:
                if request is None:
                    self.dropped += 1
                    log.warning("dropped a %s on %s answering no known request", msg_type, channel)
                return
            if (
                channel == "shell"
                and msg_type == "execute_reply"
                and request.msg_type == ("execute_request")
            ):
                try:
                    self.pending_executes.remove(msg.parent_id)
                except ValueError:
                    pass
        size = len(msg.raw_content) + sum(len(b) for b in msg.buffers)
        ahead: Future[Prepared] | None = None
        if early is not None:
            verdict = early
        else:
            if (
                channel == "iopub"
                and msg_type in PREPARED_TYPES
                and size >= PREPARE_MIN_BYTES
                and size <= self.guard.max_output_bytes
                and not msg.buffers
            ):
                # The release's encoding and hashing run beside the scan; they are used only
                # if the verdict releases this very content unchanged (`_prepared`).
                early = msg.extra.get("ahead")
                if early is not None:
                    ahead = _made_for(early, msg_type)
                else:
                    ahead = self._prepare_pool().submit(
                        prepare_release, channel, msg_type, msg.content, []
                    )
            answered = request.msg_type if request is not None and channel != "iopub" else ""
            verdict = self.guard.check(
                channel,
                msg_type,
                msg.content,
                msg.metadata,
                msg.buffers,
                size,
                reply_type=answered.removesuffix("_request") + "_reply" if answered else "",
            )
            if self._tracing:
                _mark("mb.sentry.checked")
        if channel == "iopub" and verdict.msg_type in EGRESS_COUNTED and not verdict.blocked:
            verdict = self._egress(verdict, channel, size)
        if self._guard_open:
            verdict = self.guard.joined(channel, msg.parent_id, verdict)
        prepared = self._prepared(ahead, msg, verdict) if ahead is not None else None
        if self._tracing:
            _mark("mb.sentry.prepared")
        if verdict.blocked:
            log.info(
                "blocked a %s on %s (rule %s: %s)",
                msg_type,
                channel,
                verdict.decision.rule,
                verdict.decision.details.get("kind", verdict.decision.reason),
            )
        parent = (request.raw_header, msg.parent_id) if request is not None else (b"{}", "")
        end_of_cell = (
            channel == "iopub"
            and msg_type == "status"
            and verdict.content.get("execution_state") == "idle"
            and request is not None
            and request.msg_type == "execute_request"
        )
        metadata = verdict.metadata
        if verdict.changed and not verdict.blocked:
            metadata = dict(metadata)
            # A plain release must not hide what the in-kernel guard said about the same output
            # (e.g. its notice, only marked here with the no-sandbox warning).
            if verdict.decision.action is not Action.RELEASED or "bedside" not in metadata:
                metadata["bedside"] = verdict.decision.to_metadata()
        blocked_original = None
        if verdict.blocked:
            blocked_original = self._committed_or_none(channel, msg_type, msg.content, msg.buffers)
        if end_of_cell:
            self._cpu_stale = True
        if msg_type == "shutdown_reply" and channel == "control" and self._recording():
            # The session ends here: leave a custodian-signed checkpoint in both copies.
            self.ledger.custodian_checkpoint()
        idents = request.idents if (request is not None and channel != "iopub") else None
        self._emit(
            channel,
            idents,
            verdict.msg_type,
            verdict.content,
            metadata,
            verdict.buffers,
            parent=parent,
            decision=verdict.decision,
            kernel=None if msg_type == "status" else self._kernel_claim(msg.metadata),
            blocked_original=blocked_original,
            end_of_cell=end_of_cell,
            prepared=prepared,
        )

    def _kernel_claim(self, metadata: Any) -> Decision | None:
        """The in-kernel guard's claim as the ledger may record it (a rule name that could carry
        a value is withheld: entries reach the researcher in receipts)."""
        if self._guard_open:
            return self.guard.kernel_claim(metadata)
        return kernel_claim(metadata)

    def _release_ahead(
        self, header: dict[str, Any], content: dict[str, Any], size: int
    ) -> tuple[str, Prepared] | None:
        """A large output's release prepared in the worker thread as soon as its JSON is read
        there, while this thread still checks its signature (`Wire.parse`'s `ahead`): the
        worker would otherwise wait for the scan to start. Made from the message as it arrived;
        `_kernel_msg` uses it only for the message that passed, of the type it was made for,
        and `_prepared` only if the verdict releases this very content unchanged."""
        msg_type = header.get("msg_type")
        if msg_type not in PREPARED_TYPES or size > self.guard.max_output_bytes:
            return None
        return msg_type, prepare_release("iopub", msg_type, content, [])

    def _prepare_pool(self) -> ThreadPoolExecutor:
        if self._preparer is None:
            self._preparer = ThreadPoolExecutor(1, thread_name_prefix="bedside-prepare")
        return self._preparer

    @staticmethod
    def _prepared(ahead: Future[Prepared], msg: Message, verdict: Verdict) -> Prepared | None:
        """The release prepared ahead, if the verdict lets out exactly what it encodes: the
        kernel's content object itself, unchanged, of the same type, without buffers."""
        if (
            verdict.blocked
            or verdict.changed
            or verdict.content is not msg.content
            or verdict.msg_type != msg.msg_type
            or verdict.buffers
        ):
            ahead.cancel()
            return None
        try:
            return ahead.result()
        except Exception:  # noqa: BLE001 - e.g. content that cannot be encoded: _emit decides
            return None

    @staticmethod
    def _committed_or_none(
        channel: str, msg_type: str, content: dict[str, Any], buffers: list[bytes]
    ) -> bytes | None:
        try:
            return committed_bytes(channel, msg_type, content, buffers)
        except Exception:  # noqa: BLE001 - unencodable content is committed by its notice only
            return None

    def _egress(self, verdict: Verdict, channel: str, size: int) -> Verdict:
        limit = self.budget.egress_bytes
        if limit is not None and self.meter.egress_bytes + size > limit:
            decision = Decision.block(
                "session_egress_bytes",
                f"the session's egress budget of {limit} bytes would be exceeded "
                f"({self.meter.egress_bytes} bytes used)",
                "Seal this session; ask the custodian for a larger budget if you need one.",
                layer=Layer.SENTRY,
            )
            return self.guard.notice(channel, verdict.msg_type, verdict.content, decision)
        return verdict

    def _emit_iopub(
        self,
        msg_type: str,
        content: dict[str, Any],
        parent: tuple[bytes, str],
        *,
        metadata: dict[str, Any] | None = None,
        decision: Decision | None = None,
        end_of_cell: bool = False,
    ) -> None:
        self._emit(
            "iopub",
            None,
            msg_type,
            content,
            metadata or {},
            [],
            parent=parent,
            decision=decision or Decision.release(layer=Layer.SENTRY),
            end_of_cell=end_of_cell,
        )

    def _emit(
        self,
        channel: str,
        idents: list[bytes] | None,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any],
        buffers: list[bytes],
        *,
        parent: tuple[bytes, str],
        decision: Decision,
        kernel: Decision | None = None,
        blocked_original: bytes | None = None,
        end_of_cell: bool = False,
        checkpoint: bool = False,
        prepared: Prepared | None = None,
    ) -> None:
        """Commit, receipt, sign and send one message to the client side.

        `kernel` is the in-kernel guard's claim about the message, recorded beside `decision`.
        `prepared` is this content's release computed ahead (`prepare_release`).
        """
        header = new_header(msg_type, self.session_id)
        try:
            if prepared is not None:
                raw_content, committed = prepared.raw_content, prepared.committed
            else:
                # One encoding of the content: its canonical bytes are both the content frame
                # sent and the middle of the committed bytes (any JSON reader reads them).
                raw_content = canonical_content(content)
                committed = committed_from_content(channel, msg_type, raw_content, buffers, content)
        except Exception as exc:  # noqa: BLE001 - NaN, huge integers, non-JSON values
            if not self._guard_open:
                raise  # no notice without the guard: dropped (the relay logs it)
            log.warning("blocked a %s whose content cannot be encoded: %s", msg_type, exc)
            decision = Decision.block(
                "malformed", "the output cannot be encoded as JSON", layer=Layer.SENTRY
            )
            verdict = self.guard.notice(channel, msg_type, content, decision)
            msg_type, content, metadata, buffers = (
                verdict.msg_type,
                verdict.content,
                verdict.metadata,
                [],
            )
            header["msg_type"] = msg_type
            raw_content = canonical_content(content)
            committed = committed_from_content(channel, msg_type, raw_content, buffers, content)
        if channel == "iopub" and msg_type in EGRESS_COUNTED and not decision.blocked:
            self.meter.egress_bytes += len(committed)
        if (
            prepared is not None
            and channel == "iopub"
            and blocked_original is None
            and not decision.blocked
            and not (end_of_cell or checkpoint)
            and self._recording()
        ):
            self._emit_released_ahead(
                channel, header, raw_content, metadata, parent, decision, kernel, prepared
            )
            return
        if self._recording():
            self.ledger.output(
                msg_id=header["msg_id"],
                parent=parent[1],
                channel=channel,
                msg_type=msg_type,
                committed=blocked_original if blocked_original is not None else committed,
                decision=decision,
                kernel=kernel,
                prepared=prepared if blocked_original is None else None,
            )
        note = None
        if (end_of_cell or checkpoint) and self.ledger.has_header:
            note = self.ledger.sign_checkpoint()
        receipt = self.ledger.receipt_bytes(
            header["msg_id"],
            committed,
            checkpoint=note,
            digest=prepared.digest if prepared is not None else None,
        )
        raw_metadata = _metadata_with_receipt(metadata, receipt)
        raw_header = dumps(header)
        if channel == "iopub":
            topic = f"kernel.{self.session_id}.{msg_type}".encode()
            frames = self.outer.frames(
                [topic], raw_header, parent[0], raw_metadata, raw_content, buffers
            )
        else:
            frames = self.outer.frames(
                idents or [], raw_header, parent[0], raw_metadata, raw_content, buffers
            )
        self._send(f"outer_{channel}", frames)

    def _emit_released_ahead(
        self,
        channel: str,
        header: dict[str, Any],
        raw_content: bytes,
        metadata: dict[str, Any],
        parent: tuple[bytes, str],
        decision: Decision,
        kernel: Decision | None,
        prepared: Prepared,
    ) -> None:
        """`_emit` of a large output released as prepared: its receipt is made before its entry
        is appended (from the bytes and root the append will leave), so the message is signed
        in the worker thread while the ledger writes the entry and its megabyte opening. The
        message leaves after the append, and only with a receipt of what was written."""
        msg_type = header["msg_type"]
        ahead = self.ledger.released_ahead(
            msg_id=header["msg_id"],
            parent=parent[1],
            channel=channel,
            msg_type=msg_type,
            prepared=prepared,
            decision=decision,
            kernel=kernel,
        )
        raw_header = dumps(header)
        raw_metadata = _metadata_with_receipt(metadata, ahead.receipt)
        signed = [raw_header, parent[0], raw_metadata, raw_content]
        try:
            signing: Future[bytes] | None = self._prepare_pool().submit(self.outer.sign, signed)
        except RuntimeError:  # the pool is shut down: the sentry is closing
            signing = None
        if self._tracing:
            _mark("mb.sentry.receipt")
        if self.ledger.append_ahead(ahead):
            if self._tracing:
                _mark("mb.sentry.appended")
            signature = signing.result() if signing is not None else None
            if self._tracing:
                _mark("mb.sentry.signed")
        else:
            # Not what the receipt named (cannot happen while only this thread appends): the
            # receipt of what the ledger holds, signed here.
            log.warning("a receipt made ahead did not match the ledger; made again")
            receipt = self.ledger.receipt_bytes(header["msg_id"], prepared.committed,
                                                digest=prepared.digest)  # fmt: skip
            raw_metadata = _metadata_with_receipt(metadata, receipt)
            signature = None
        topic = f"kernel.{self.session_id}.{msg_type}".encode()
        frames = self.outer.frames(
            [topic], raw_header, parent[0], raw_metadata, raw_content, signature=signature
        )
        self._send(f"outer_{channel}", frames)

    def _recording(self) -> bool:
        """Whether messages leaving now get ledger entries (after the header, before the seal).

        Before the session's header (no cell yet, no intent) nothing is recorded: what leaves
        then is the handshake and start-up noise, published before most clients subscribe, so
        recording it would leave gaps in the researcher's copy. It still carries a receipt.
        """
        return self.ledger.has_header and not self.ledger.sealed

    def _ensure_header(self) -> bool:
        """Write the default header if the session has none; whether entries may follow."""
        if self.ledger.sealed or self.refused is not None:
            return False
        if self.ledger.has_header:
            return True
        # No declared intent: the policy's defaults, recorded as such.
        self.ledger.header(
            intent={},
            grant={"declared": False, "budget": self.budget.to_dict(), "sandbox": self.sandbox},
            policy_id=self.policy.id,
            policy_digest=self.policy.digest,
            environment_digest=environment_digest(),
            researcher_key=None,
        )
        return True

    def _iopub_subscribed(self, frames: list[bytes]) -> None:
        """Greet a new iopub subscriber with `iopub_welcome` (JEP 65), as ipykernel does:
        Enterprise Gateway's readiness nudge ends with the first iopub message it receives.

        Only before the session's header, when what leaves carries a receipt and no ledger
        entry (`_recording`): the welcome is the sentry's own, with nothing of the kernel in it,
        and a later subscriber waits for the kernel's status messages as before.
        """
        for frame in frames:
            if frame[:1] != b"\x01" or self.ledger.has_header:
                continue  # an unsubscription, or a session already recording
            try:
                topic = frame[1:].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self._emit_iopub("iopub_welcome", {"subscription": topic}, (b"{}", ""))

    # -- heartbeat ----------------------------------------------------------------------------

    def _hb_from_client(self, frames: list[bytes]) -> None:
        self.hb_pending[tuple(frames)] = None
        if len(self.hb_pending) > 1024:
            self.hb_pending.popitem(last=False)
        self._send("inner_hb", frames)

    def _hb_from_kernel(self, frames: list[bytes]) -> None:
        # Only an exact echo of a ping goes back out: the heartbeat carries no kernel data.
        key = tuple(frames)
        if key not in self.hb_pending:
            self.dropped += 1
            log.warning("dropped a heartbeat frame that echoes no ping")
            return
        del self.hb_pending[key]
        self._send("outer_hb", frames)

    # -- control protocol ---------------------------------------------------------------------

    def _control(self, msg: Message) -> None:
        handler = {
            "bedside_intent_request": self._intent,
            "bedside_cosign_request": self._cosign,
            "bedside_seal_request": self._seal,
            "bedside_status_request": self._status,
            "bedside_entries_request": self._entries,
            "bedside_release_status_request": self._release_status,
            "bedside_release_fetch_request": self._release_fetch,
        }[msg.msg_type]
        reply_type = msg.msg_type.replace("_request", "_reply")
        checkpoint = False
        try:
            content, checkpoint = handler(msg)
        except Error as exc:
            content = {"status": "error", "ename": type(exc).__name__, "evalue": exc.diagnostics()}
        self._emit(
            "shell",
            msg.idents,
            reply_type,
            content,
            {},
            [],
            parent=(msg.raw_header, msg.msg_id),
            decision=Decision.release(layer=Layer.SENTRY),
            checkpoint=checkpoint,
        )

    def _intent(self, msg: Message) -> tuple[dict[str, Any], bool]:
        """Decide the session's intent once; the same intent sent again gets the same answer.

        The researcher's server sends its intent again on every new connection until it has our
        answer: a browser that drops its first websocket (JupyterLab does on a cold start) loses
        the answer with it, and the session must not end refused for asking twice.
        """
        raw = msg.content.get("intent", msg.content)
        answered = self._intent_answer
        if answered is not None and answered[0] == raw:
            return answered[1], False
        content, checkpoint = self._decide_intent(msg)
        if answered is None:
            self._intent_answer = (raw, content)
        return content, checkpoint

    def _decide_intent(self, msg: Message) -> tuple[dict[str, Any], bool]:
        env = environment_digest()
        if self.ledger.has_header or self.refused is not None:
            return {
                "status": "error",
                "ename": "IntentRefused",
                "evalue": "the session already has a header; declare the intent before the "
                "first cell (restart the kernel to start a new session)",
                "environment_digest": env,
            }, False
        try:
            intent = parse_intent(msg.content)
            budget = check_intent(intent, self.policy, env)
            if intent.researcher_key is not None:
                from bedside.ledger import Verifier

                researcher = Verifier(intent.researcher_key)
                if "researcher_sig" in intent.raw:
                    _check_intent_signature(intent.raw, researcher)
        except IntentRefused as exc:
            self.refused = exc.text()
            log.warning("intent refused: %s", self.refused)
            return {
                "status": "error",
                "ename": "IntentRefused",
                "evalue": f"intent refused: {self.refused}",
                "environment_digest": env,
                "policy": {"id": self.policy.id, "digest": self.policy.digest},
            }, False
        except Error as exc:
            self.refused = f"researcher_key is not a verifier key ({exc.diagnostics()})"
            return {
                "status": "error",
                "ename": "IntentRefused",
                "evalue": f"intent refused: {self.refused}",
                "environment_digest": env,
            }, False
        self.budget = budget
        self.intent = intent.raw
        self.researcher_key = intent.researcher_key
        index, entry = self.ledger.header(
            intent=intent.raw,  # exactly as the researcher signed it
            grant={"declared": True, "budget": budget.to_dict(), "sandbox": self.sandbox},
            policy_id=self.policy.id,
            policy_digest=self.policy.digest,
            environment_digest=env,
            researcher_key=intent.researcher_key,
        )
        return {
            "status": "ok",
            "header": {"index": index, "entry": entry},
            "budget": budget.to_dict(),
            "environment_digest": env,
            "policy": {"id": self.policy.id, "digest": self.policy.digest},
            "session": self.session_id,
            "sandbox": self.sandbox,
        }, False

    def _cosign(self, msg: Message) -> tuple[dict[str, Any], bool]:
        note = msg.content.get("checkpoint")
        key = getattr(self, "researcher_key", None)
        if not isinstance(note, str) or not note:
            return {
                "status": "error",
                "ename": "CosignRefused",
                "evalue": "the request carries no checkpoint note",
            }, False
        if key is None:
            return {
                "status": "error",
                "ename": "CosignRefused",
                "evalue": "no researcher key was declared in the session's intent",
            }, False
        if self.ledger.sealed and not self.ledger.awaits_final_cosign(note):
            return {
                "status": "error",
                "ename": "CosignRefused",
                "evalue": "the session is sealed: only the checkpoint covering the seal can be "
                "cosigned, once",
            }, False
        try:
            index = self.ledger.cosigned_checkpoint(note, key)
        except Error as exc:
            return {"status": "error", "ename": "CosignRefused", "evalue": exc.diagnostics()}, False
        return {"status": "ok", "index": index}, False

    def _seal(self, msg: Message) -> tuple[dict[str, Any], bool]:
        asked = msg.content.get("session")
        if isinstance(asked, str) and asked and asked != self.session_id:
            # The researcher seals the session it holds; after a kernel restart this sentry
            # runs a new one, and sealing it instead would record a session nobody used.
            return {
                "status": "error",
                "ename": "SessionMismatch",
                "evalue": f"this kernel now runs session {self.session_id}: session {asked} "
                "ended when its kernel stopped, and can no longer be sealed",
                "session": self.session_id,
            }, False
        if self.sealed:
            return {
                "status": "error",
                "ename": "SessionSealed",
                "evalue": "the session is already sealed",
            }, False
        if not self._ensure_header():
            return {
                "status": "error",
                "ename": "SessionRefused",
                "evalue": "the session's intent was refused; it has no ledger to seal",
            }, False
        if self.cpu is not None:
            self.meter.cpu_seconds = self.cpu.read()
        self.sealed = True
        counters: dict[str, int | str] = {
            "cells": self.meter.cells,
            "cpu_ms": int(self.meter.cpu_seconds * 1000),
            "egress_bytes": self.meter.egress_bytes,
            "dropped_messages": self.dropped,
        }
        for name, value in self.budget.to_dict().items():
            if value is not None:
                counters[f"budget_{name}"] = int(value)
        index = self.ledger.metering(counters)
        self.ledger.custodian_checkpoint()
        reason = msg.content.get("reason")
        seal_index = self.ledger.seal(reason if isinstance(reason, str) and reason else "sealed")
        return {
            "status": "ok",
            "metering": index,
            "seal": seal_index,
            "used": self.meter.to_dict(),
        }, True

    def _status(self, msg: Message) -> tuple[dict[str, Any], bool]:
        if self.cpu is not None:
            self.meter.cpu_seconds = self.cpu.read()
        return {
            "status": "ok",
            "session": self.session_id,
            "policy": {"id": self.policy.id, "digest": self.policy.digest},
            "environment_digest": environment_digest(),
            "budget": self.budget.to_dict(),
            "used": self.meter.to_dict(),
            "exhausted": self.meter.exhausted(self.budget),
            "refused": self.refused,
            "sealed": self.sealed,
            "sandbox": self.sandbox,
            "size": self.ledger.size,
            "root": self.ledger.ledger.root().hex(),
            "dropped_messages": self.dropped,
            "last_checkpoint": self.ledger.last_checkpoint,
        }, False

    def _entries(self, msg: Message) -> tuple[dict[str, Any], bool]:
        """Ledger entries by index, for a researcher whose copy has a gap.

        Receipts carry each entry once, on the next message out; when that message goes to a
        connection the researcher does not hold (Enterprise Gateway's own kernel_info "nudge"
        channels, a message published before a client subscribed), the researcher asks for the
        entries here; the signed roots of later receipts and checkpoints prove them. Entries
        whose opening went out with their receipt (execute requests, outputs let out) carry it
        again, `salt` and `content`, so the researcher's openings stay complete; a reply stops
        after `_MAX_ENTRIES_OPENED` bytes of content (the researcher asks for the rest).
        """
        size = self.ledger.size
        start, end = msg.content.get("from"), msg.content.get("to", size)
        if (
            not isinstance(start, int)
            or not isinstance(end, int)
            or isinstance(start, bool)
            or isinstance(end, bool)
            or not 0 <= start <= end
        ):
            return {
                "status": "error",
                "ename": "BadRequest",
                "evalue": "bedside_entries_request needs integers 0 <= from <= to",
            }, False
        end = min(end, size, start + _MAX_ENTRIES_REPLY)
        opened, end = self.ledger.public_openings(start, end, _MAX_ENTRIES_OPENED)
        items: list[dict[str, Any]] = []
        for i in range(start, end):
            item: dict[str, Any] = {"index": i, "entry": self.ledger.ledger.entry(i)}
            if i in opened:
                item["salt"], item["content"] = opened[i]
            items.append(item)
        return {"status": "ok", "entries": items, "size": size}, False

    # -- releases -----------------------------------------------------------------------------

    def _open_airlock(self) -> None:
        """The session's airlock: `<session>/outbox` (sentry-only), deliveries under
        `<session>/delivery/releases`, decisions queued by `bedside review` while we run."""
        from bedside.gateway.airlock import Airlock, Identity

        requester = Identity(os.environ.get("KERNEL_USERNAME") or "researcher")
        workspace = self.state_dir / "delivery"
        Airlock.configure(
            self.state_dir,
            ledger=self.ledger.path,
            key=self.custodian_key,
            workspace=workspace,
            policy=self.policy.path,
            requester=requester,
            owner_pid=os.getpid(),
        )
        self.airlock = Airlock(
            self.state_dir,
            ledger=self.ledger.ledger,
            append=self.ledger.append,
            signer=self.signer,
            workspace=workspace,
            rules=self.policy.release,
            policy_id=self.policy.id,
            policy_digest=self.policy.digest,
            requester=requester,
            find_identifier=self._find_identifier,
        )

    def _find_identifier(self, text: str) -> Any:
        # Identifier values only: PHI patterns are withheld by the airlock itself.
        if self._scan is None:
            return None
        found = self._scan(text)
        return found if found is not None and "identifier" in str(found.kind) else None

    def _poll_airlock(self) -> None:
        """Take the kernel's finished requests, let the airlock check them and apply queued
        decisions. Entries need the session's header and go nowhere after the seal."""
        if self.airlock is None or not self._guard_ready.is_set() or self._scan is None:
            return
        if self.ledger.sealed or not self.ledger.has_header:
            return
        try:
            self._collect_requests()
            for line in self.airlock.poll():
                log.info("release decision %s", line)
        except Exception:
            log.exception("the airlock failed; release requests wait for the next poll")

    def _collect_requests(self) -> None:
        """Copy each finished request out of the kernel's writable outbox into the airlock's.

        The kernel owns its outbox and could plant symlinks or rewrite files after the check:
        only plain files (opened without following links, within the policy's size cap) are
        copied, into a folder the kernel cannot reach, and the kernel's folder is removed.
        """
        from bedside.gateway.airlock import _ID

        inbox = self.state_dir / KERNEL_OUTBOX
        cap = max(k.max_bytes for k in self.policy.release.kinds.values()) + 1_000_000
        for folder in sorted(inbox.iterdir()):
            if not folder.is_dir() or folder.is_symlink():
                continue
            if not (folder / "request.json").exists():
                continue  # still being written (request.json comes last)
            target = self.airlock.outbox / folder.name
            if _ID.match(folder.name) and not target.exists():
                target.mkdir()
                for item in folder.iterdir():
                    if item.name.endswith(".tmp"):
                        continue
                    try:
                        fd = os.open(item, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    except OSError:
                        continue
                    with os.fdopen(fd, "rb") as fh:
                        if not stat.S_ISREG(os.fstat(fd).st_mode):
                            continue
                        data = fh.read(cap + 1)
                    if len(data) <= cap:
                        (target / item.name).write_bytes(data)
                if not (target / "request.json").exists():
                    shutil.rmtree(target)
            else:
                log.warning("dropped a release folder %r from the kernel", folder.name)
            shutil.rmtree(folder, ignore_errors=True)

    def _release_status(self, msg: Message) -> tuple[dict[str, Any], bool]:
        from bedside.gateway.airlock import read_requests

        self._poll_airlock()
        releases = []
        for req in read_requests(self.state_dir):
            # request.json is the kernel's: only short plain labels the scanner finds clean leave.
            row = req.summary()
            size = req.request.get("size")
            row.update(
                name=self._label(row["name"]),
                kind=row["kind"] if row["kind"] in KINDS else None,
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                refusals=[self._label(c) for c in row["refusals"]],
                filename=self._label(req.request.get("filename")),
                digest=req.status.get("digest"),
            )
            if "denial" in req.status:
                row["denial"] = req.status["denial"].get("reason")
            releases.append(row)
        return {"status": "ok", "session": self.session_id, "releases": releases}, False

    def _label(self, value: Any) -> str | None:
        """A kernel-written name as it may leave: a plain file-name-like label with no
        identifier value in it, else withheld."""
        from bedside.gateway.airlock import _FILE

        if not isinstance(value, str) or not _FILE.match(value):
            return None
        if self._scan is None or self._scan(value) is not None:
            return "[withheld]"
        return value

    def _release_fetch(self, msg: Message) -> tuple[dict[str, Any], bool]:
        from bedside.gateway.airlock import fetch_delivered, read_request

        self._poll_airlock()
        request_id = msg.content.get("id")
        if not isinstance(request_id, str):
            raise ReleaseError('bedside_release_fetch_request needs {"id": RELEASE_ID}')
        kind = str(read_request(self.state_dir, request_id).request.get("kind"))
        reply = fetch_delivered(
            self.state_dir,
            request_id,
            max_bytes=self.policy.release.for_kind(kind).max_bytes,
            offset=msg.content.get("offset", 0),
            length=msg.content.get("length"),
        )
        reply["name"] = self._label(read_request(self.state_dir, request_id).request.get("name"))
        return reply, False

    # -- the end ------------------------------------------------------------------------------

    def _kernel_died(self, code: int) -> None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        text = (
            f"[bedside] The kernel stopped unexpectedly (it {how}). The session ledger is intact "
            "and records the interruption; restart the kernel to continue."
        )
        if not self.sandbox:
            text += NO_SANDBOX_WARNING
        log.error("kernel %s", how)
        self._drain_kernel()
        if self._ensure_header():
            cut = self.pending_executes[0] if self.pending_executes else None
            self.ledger.interrupted(f"kernel {how}", cut)
            self.ledger.custodian_checkpoint()
        decision = Decision.block("kernel_died", f"the kernel {how}", layer=Layer.SENTRY)
        meta = {"bedside": decision.to_metadata()}
        if not self.pending_executes:
            self._emit(
                "iopub",
                None,
                "stream",
                {"name": "stderr", "text": text + "\n"},
                meta,
                [],
                parent=(b"{}", ""),
                decision=decision,
                checkpoint=True,
            )
        while self.pending_executes:
            msg_id = self.pending_executes.popleft()
            request = self.requests.get(msg_id)
            if request is None:
                continue
            parent = (request.raw_header, msg_id)
            self._answer_with_error(request.idents, parent, "DeadKernelError", text, meta, decision)

    def close(self) -> None:
        """Stop the kernel, flush what is queued to clients, remove the private directories."""
        if self._prelaunched is not None:  # the sentry stopped before it adopted the kernel
            self._prelaunched.discard()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._preparer is not None:
            self._preparer.shutdown(wait=True, cancel_futures=True)
        for name, sock in self._sockets.items():
            sock.close(linger=1000 if name.startswith("outer") else 0)
        self._ctx.term()
        ledger = getattr(self, "ledger", None)
        if ledger is not None:
            try:
                if (
                    ledger.has_header
                    and not ledger.sealed
                    and ledger.last_signed_size != ledger.size
                ):
                    ledger.custodian_checkpoint()
            finally:
                ledger.close()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)


def _made_for(early: Future[Any], msg_type: str) -> Future[Prepared]:
    """The release `Sentry._release_ahead` prepared, as a future: its result once made, if it
    was made for `msg_type` (else the future fails, and `_prepared` uses nothing)."""
    out: Future[Prepared] = Future()

    def done(made: Future[Any]) -> None:
        if not out.set_running_or_notify_cancel():
            return  # cancelled: the verdict did not release this content unchanged
        try:
            result = made.result()
        except BaseException as exc:  # noqa: BLE001 - handed to `_prepared`, which drops it
            out.set_exception(exc)
            return
        if result is None or result[0] != msg_type:
            out.set_exception(LookupError(f"no release prepared for a {msg_type}"))
        else:
            out.set_result(result[1])

    early.add_done_callback(done)
    return out


def _metadata_with_receipt(metadata: dict[str, Any], receipt: bytes) -> bytes:
    """`metadata` with `["bedside"]["receipt"]` set to the receipt, as JSON bytes.

    The receipt's JSON is spliced in as the ledger signed it, not parsed and encoded again.
    """
    rest = dict(metadata)
    bedside = rest.pop("bedside", None)
    bedside = dict(bedside) if isinstance(bedside, dict) else {}
    bedside.pop("receipt", None)
    inner = b'{"receipt":' + receipt + (b"," + dumps(bedside)[1:] if bedside else b"}")
    return b'{"bedside":' + inner + (b"," + dumps(rest)[1:] if rest else b"}")


def _check_intent_signature(raw: dict[str, Any], researcher: Any) -> None:
    """The header records the intent as signed, and `ledger verify` checks that signature: an
    intent whose signature does not verify is refused here, not written into a ledger that fails."""
    import base64

    from bedside.ledger import canonical_json

    body = {k: v for k, v in raw.items() if k != "researcher_sig"}
    try:
        researcher.verify(canonical_json(body), base64.b64decode(str(raw["researcher_sig"])))
    except (Error, ValueError) as exc:
        raise IntentRefused(
            "the intent's researcher_sig does not verify with its researcher_key",
            "sign rfc8785 of the intent without researcher_sig with the researcher's key",
        ) from exc


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m bedside.gateway.sentry",
        description="Run one guarded kernel behind the bedside sentry (launched by kernelspecs).",
    )
    parser.add_argument(
        "-f",
        "--connection-file",
        required=True,
        type=Path,
        help="the connection file Enterprise Gateway / jupyter_client wrote",
    )
    parser.add_argument("--policy", required=True, type=Path, help="the custodian's policy file")
    parser.add_argument(
        "--custodian-key",
        required=True,
        type=Path,
        help="the custodian's Ed25519 signing key (bedside keys new)",
    )
    parser.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        help="where the hospital ledgers go (one sub-directory per session)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run the kernel WITHOUT the sandbox (development only; every notice says so)",
    )
    parser.add_argument(
        "--kernel",
        choices=("guarded", "plain"),
        default="guarded",
        help="the kernel behind the sentry: the guarded bedside kernel "
        "(default) or a plain ipykernel (tests of the sentry alone)",
    )
    parser.add_argument(
        "--origin", default=None, help="the checkpoint origin line (default: HOST/bedside/SESSION)"
    )
    return parser


def add_sentry_command(subparsers: Any) -> None:
    """`bedside sentry …` (internal, launched by kernelspecs): one line in gateway._cli."""
    parser = subparsers.add_parser(
        "sentry", help="run one kernel behind the sentry (launched by the bedside kernelspec)"
    )
    build_parser(parser)
    parser.set_defaults(handler=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=os.environ.get("BEDSIDE_SENTRY_LOG", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    sentry = Sentry(
        connection_file=args.connection_file,
        policy_path=args.policy,
        custodian_key=args.custodian_key,
        state_dir=args.state_dir,
        sandbox=not args.no_sandbox,
        kernel=args.kernel,
        origin=args.origin,
    )

    def stop(signum: int, frame: Any) -> None:
        sentry.stop_requested = True

    def interrupt(signum: int, frame: Any) -> None:
        # jupyter_client's signal interrupt mode reaches the sentry: pass it to the kernel.
        if sentry.proc is not None and sentry.proc.poll() is None:
            sentry.proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, interrupt)
    try:
        sentry.start()
        return sentry.run()
    finally:
        sentry.close()


def main(argv: list[str] | None = None) -> int:
    profile = os.environ.get("BEDSIDE_SENTRY_PROFILE")
    if profile:
        import cProfile

        # CPU time of the relay's thread: wall time would count waiting for a core (the machine
        # is shared) and zmq's I/O thread waking up as the cost of whatever call let it run.
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        try:
            return _main(argv)
        finally:
            profiler.disable()
            profiler.dump_stats(profile)
    return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_from_args(args)
    except Error as exc:
        print(f"bedside sentry: {exc.diagnostics()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
