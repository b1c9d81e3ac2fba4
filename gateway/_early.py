"""Start the sandboxed kernel before the sentry's heavy imports, so that the two boot together.

The kernel's launch needs only the policy's view of the sandbox (the policy file, the datasets it
binds, the resource limits), but reading and validating the policy imports numpy and pyarrow, and
the relay imports zmq and the ledger: about half a second, and over a second on a loaded machine,
before the kernel, which needs a second or two itself, could start. So the sentry remembers that
view in its private state directory (`<state-dir>/.launch/`, keyed by the policy file's bytes and
path, the kernel and the interpreter) each time it validates a policy, and on the next start with
the same policy file, `prelaunch` (stdlib only; run by `python -m bedside.gateway.sentry` before
anything else) starts the kernel from the remembered view at once.

Nothing relies on the remembered view: once the sentry has loaded and validated the policy it
compares the view with the policy's own (`adopt`), and a kernel launched from a view that differs
is killed and launched again from the policy before any message is relayed. The kernel cannot
read or write `<state-dir>/.launch/` (it sees only its own outbox under the state directory).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bedside import _starttrace
from bedside.kernel import BEHIND_SENTRY_ENV

log = logging.getLogger("bedside.sentry")

CACHE_DIR = ".launch"
# Where the kernel leaves release requests: the only writable path it shares with the sentry.
KERNEL_OUTBOX = "kernel-outbox"


@dataclass
class Launched:
    """A kernel started by `prelaunch`, waiting for the sentry to adopt it."""

    cache_key: str
    view: dict[str, Any]
    policy_path: Path
    state_root: Path
    kernel: str
    session_id: str
    inner_key: str
    private_dir: Path
    info: dict[str, Any]
    proc: subprocess.Popen[bytes]

    def discard(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.private_dir, ignore_errors=True)


_launched: Launched | None = None


# -- what the kernel is launched with (shared by the early and the normal path) ----------------


def make_private_dir() -> tuple[Path, Path, Path]:
    """(private, ipc, scratch): a short 0700 directory, since a unix socket path must fit in 107
    bytes and the state directory is often deep; only the sentry (and, through its binds, the
    sandboxed kernel) reaches the sockets and the kernel's key."""
    private = Path(tempfile.mkdtemp(prefix="bedside-"))
    ipc, scratch = private / "ipc", private / "scratch"
    ipc.mkdir(mode=0o700)
    scratch.mkdir(mode=0o700)
    return private, ipc, scratch


def write_connection(ipc_dir: Path, key: str) -> tuple[Path, dict[str, Any]]:
    """The kernel's private ipc connection file, written whole and then renamed into place (a
    kernel in another container starts as soon as the file exists), readable by the kernel,
    which may run as another user under a root sentry (or another uid with the pod's fsGroup)."""
    connection = ipc_dir / "kernel.json"
    info = {
        "transport": "ipc",
        "ip": str(ipc_dir / "k"),
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "bedside-inner",
    }
    fd, tmp = tempfile.mkstemp(dir=ipc_dir, prefix=".kernel-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(info, out)
    os.chmod(tmp, 0o644)
    os.replace(tmp, connection)
    return connection, info


def kernel_argv(kernel: str, connection: Path, policy_path: str) -> list[str]:
    if kernel == "plain":
        return [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection)]
    return [sys.executable, "-m", "bedside.kernel", "-f", str(connection), "--policy", policy_path]


def kernel_env(scratch: Path, outbox: Path) -> dict[str, str]:
    """What the kernel's environment adds (the sandbox fixes HOME and TMPDIR itself)."""
    # PYDEVD_DISABLE_FILE_VALIDATION: ipykernel's debugger otherwise prints a frozen-modules
    # warning at start-up, a parentless output that opens the ledger before the intent.
    return {
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PYTHONNOUSERSITE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "BEDSIDE_OUTBOX": str(outbox),
        # The kernel runs behind this sentry, which scans all it sends: the in-kernel guard
        # leaves the identifier/PHI scan of long texts to it (kernel/guard.py).
        BEHIND_SENTRY_ENV: "1",
        **({_starttrace.ENV: "1"} if _starttrace.enabled() else {}),
    }


# -- the remembered view -------------------------------------------------------------------------


def launch_view(policy: Any) -> dict[str, Any]:
    """Everything of a policy the kernel's launch depends on."""
    limits = getattr(policy, "limits", None)
    return {
        "policy": str(policy.path),
        "datasets": {
            name: str(Path(ds.path).resolve()) for name, ds in sorted(policy.datasets.items())
        },
        "limits": {
            name: getattr(limits, name, None) for name in ("memory_mb", "cpu_seconds", "processes")
        },
    }


def _stand_in(view: dict[str, Any]) -> Any:
    """An object with the attributes of a policy that `sandbox.launch` reads."""
    return SimpleNamespace(
        path=view["policy"],
        datasets={name: SimpleNamespace(path=path) for name, path in view["datasets"].items()},
        limits=SimpleNamespace(**view["limits"]),
    )


def cache_key(policy_path: Path, kernel: str) -> str:
    digest = hashlib.sha256()
    for part in (str(policy_path.resolve()), os.getcwd(), sys.executable, kernel):
        digest.update(part.encode() + b"\0")
    digest.update(policy_path.read_bytes())
    return digest.hexdigest()


def remember(state_root: Path, key: str, view: dict[str, Any]) -> None:
    """Keep `view` for the next start with the same policy file (atomically; 0700 directory)."""
    folder = state_root / CACHE_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / f"{key}.json"
    text = json.dumps(view, sort_keys=True)
    if target.exists() and target.read_text() == text:
        return
    tmp = folder / f"{key}.{os.getpid()}.tmp"
    tmp.write_text(text)
    tmp.replace(target)


def _remembered(state_root: Path, key: str) -> dict[str, Any] | None:
    path = state_root / CACHE_DIR / f"{key}.json"
    try:
        view = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return view if isinstance(view, dict) else None


# -- early start and adoption -------------------------------------------------------------------


def prelaunch(argv: list[str]) -> None:
    """Start the sandboxed kernel of the sentry command line `argv` now, when this policy file's
    launch view is remembered; otherwise do nothing (the sentry launches it after validating
    the policy). Never raises: any doubt falls back to the normal path."""
    global _launched
    _starttrace.mark_process_start("sentry")
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-f", "--connection-file")
    parser.add_argument("--policy", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--kernel", default="guarded")
    parser.add_argument("--no-sandbox", action="store_true")
    try:
        args, _ = parser.parse_known_args(argv)
        if args.no_sandbox or args.policy is None or args.state_dir is None:
            return  # no early start without the sandbox: its warning belongs to the sentry's log
        key = cache_key(args.policy, args.kernel)
        view = _remembered(args.state_dir, key)
        if view is None:
            return
        _launched = _start(args.policy, args.state_dir, args.kernel, key, view)
    except Exception:  # noqa: BLE001 - the sentry launches the kernel itself
        _launched = None


def _start(
    policy_path: Path, state_root: Path, kernel: str, key: str, view: dict[str, Any]
) -> Launched:
    from bedside.gateway.sandbox import SandboxSpec, launch

    session_id = uuid.uuid4().hex
    state_dir = state_root / session_id
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    outbox = state_dir / KERNEL_OUTBOX
    outbox.mkdir(mode=0o700, exist_ok=True)
    private, ipc, scratch = make_private_dir()
    inner_key = secrets.token_hex(32)
    connection, info = write_connection(ipc, inner_key)
    spec = SandboxSpec(
        policy=_stand_in(view),
        ipc_dir=ipc,
        scratch_dir=scratch,
        env=kernel_env(scratch, outbox),
        extra_rw=[outbox],
    )
    proc = launch(kernel_argv(kernel, connection, view["policy"]), spec, sandbox=True)
    return Launched(
        key, view, policy_path, state_root, kernel, session_id, inner_key, private, info, proc
    )


def pending(policy_path: Path, state_root: Path, kernel: str, sandbox: bool) -> Launched | None:
    """The kernel `prelaunch` started for this sentry, if any (it is not adopted yet)."""
    _starttrace.mark("sentry.imported")
    found = _launched
    if found is None or not sandbox:
        return None
    if (found.policy_path, found.state_root, found.kernel) != (policy_path, state_root, kernel):
        return None
    return found


def adopt(found: Launched, policy: Any) -> bool:
    """Whether the early kernel was launched exactly as `policy` (validated) would launch it;
    a kernel that was not is killed. Either way it is no longer pending."""
    global _launched
    _starttrace.mark("sentry.policy_loaded")
    _launched = None
    if found.view == launch_view(policy) and found.proc.poll() is None:
        return True
    log.warning("the kernel started early does not match the policy; starting it again")
    found.discard()
    return False
