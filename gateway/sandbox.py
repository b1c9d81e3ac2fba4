"""Launch the guarded kernel inside a bubblewrap sandbox (the untrusted side of the sentry).

The sentry calls `launch(kernel_argv, SandboxSpec(...))`. The kernel gets no network at all (its
own network namespace; it talks to the sentry only over ZMQ ipc sockets in `ipc_dir`), read-only
views of the system, the Python installation and the policy's datasets, a private writable
scratch directory as `/tmp` and `$HOME`, a private size-capped `/dev/shm`, no view of anything
else (the custodian key, the sentry's state directory), no capabilities, and the resource limits
of the policy. It dies with the sentry. `sandbox=False` runs the kernel unconfined and says so
loudly: it exists only for development machines without bubblewrap.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bedside import _starttrace
from bedside.errors import GatewayError

__all__ = [
    "SANDBOX_ENV",
    "SandboxSpec",
    "bwrap_argv",
    "launch",
    "sandbox_mode",
]

log = logging.getLogger(__name__)

# Set in the kernel's environment and in the sentry's own: "bwrap" or "off". The sentry reads it
# (through `sandbox_mode()`) to say in every notice when the kernel runs unconfined.
SANDBOX_ENV = "BEDSIDE_SANDBOX"

# Under a root sentry each kernel runs as a uid of its own, drawn from this range (no passwd
# entry needed), switched to with setpriv inside the sandbox. Linux does not enforce RLIMIT_NPROC
# for uid 0 and counts it per uid across the machine, so a shared uid such as `nobody` would let
# one kernel's processes eat another's budget; and a uid-0 kernel could read any root-owned
# file that ended up visible.
KERNEL_UIDS = range(1_000_000, 1_900_000)

# System paths the kernel needs, bound read-only when present. /etc is not bound wholesale: only
# what the dynamic linker, name lookups, time zones, TLS roots and fonts read.
_SYSTEM_RO = ("/usr", "/opt/conda")
_ETC_RO = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/fonts",
    "/etc/mime.types",
    "/etc/matplotlibrc",
)
# On merged-/usr systems these are symlinks into /usr; elsewhere they are real directories.
_TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# bedside packages the guarded kernel imports; editable installs keep them outside site-packages.
_KERNEL_PACKAGES = (
    "bedside",
    "bedside.kernel",
    "bedside.policy",
    "bedside.ledger",
    "bedside.gateway",
)


@dataclass(frozen=True)
class SandboxSpec:
    """What the sandboxed kernel may see: the policy (datasets, limits), the ipc socket directory
    shared with the sentry, a private scratch directory and the kernel's environment.

    `extra_ro` lists further paths to bind read-only (e.g. a kernel-side connection file kept
    outside `ipc_dir`); the policy file and its datasets are bound without being listed.
    `extra_rw` lists directories bound writable at the same path (the session's release outbox);
    like `ipc_dir` they must sit in a private directory and are handed to the kernel's uid.
    """

    policy: Any
    ipc_dir: Path
    scratch_dir: Path
    env: dict[str, str]
    extra_ro: Sequence[Path] = field(default=())
    extra_rw: Sequence[Path] = field(default=())


def sandbox_mode() -> str:
    """How the kernels of this process are confined: "bwrap", "off", or "" (none launched)."""
    return os.environ.get(SANDBOX_ENV, "")


def launch(
    kernel_argv: list[str],
    spec: SandboxSpec,
    *,
    sandbox: bool = True,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `kernel_argv` confined by `spec`; the process dies when the caller exits.

    `stdout`/`stderr` go to `subprocess.Popen` (default: inherit the sentry's).

    Raises `GatewayError` when bubblewrap is missing or the argv is empty. Call it from the
    thread that lives as long as the kernel should: the parent-death signal follows the thread.
    """
    if not kernel_argv:
        raise GatewayError("sandbox: empty kernel command line")
    limits = _limits(spec.policy)
    if not sandbox:
        log.warning(
            "\n%s\nbedside: the kernel runs WITHOUT the sandbox (--no-sandbox): it has the "
            "network and can read every file the sentry can, including the custodian key; "
            "only the resource limits %s still apply. Use this only on a development "
            "machine.\n%s",
            "!" * 78,
            limits,
            "!" * 78,
        )
        os.environ[SANDBOX_ENV] = "off"
        spec.scratch_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(spec.env)
        env[SANDBOX_ENV] = "off"
        return subprocess.Popen(
            kernel_argv,
            env=env,
            cwd=spec.scratch_dir,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=_child_setup(limits),  # noqa: PLW1509 - single-threaded child setup
        )
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise GatewayError(
            "sandbox: bubblewrap (bwrap) is not installed; run `make system` "
            "(apt-get install bubblewrap), or pass --no-sandbox on a development machine"
        )
    spec.ipc_dir.mkdir(parents=True, exist_ok=True)
    spec.scratch_dir.mkdir(parents=True, exist_ok=True)
    for path in spec.extra_rw:
        path.mkdir(parents=True, exist_ok=True)
    drop_to = kernel_uid() if os.geteuid() == 0 and shutil.which("setpriv") else None
    if drop_to is not None:
        _check_private_parent(spec.ipc_dir, spec.scratch_dir, *spec.extra_rw)
        # The kernel (as its own uid) creates its ipc sockets here and writes its scratch files.
        # bubblewrap (uid 0 without CAP_DAC_OVERRIDE) must still create mount points in them;
        # both live only in the sentry's private state directory.
        for path in (spec.ipc_dir, spec.scratch_dir, *spec.extra_rw):
            os.chown(path, drop_to, drop_to)
            os.chmod(path, 0o1777)  # noqa: S103 - private dirs, sticky
    elif os.geteuid() == 0:
        log.warning("sandbox: setpriv missing; the kernel runs as uid 0 (RLIMIT_NPROC unenforced)")
    os.environ[SANDBOX_ENV] = "bwrap"
    argv = bwrap_argv(kernel_argv, spec, bwrap=bwrap, drop_to=drop_to)
    _starttrace.mark("sandbox.spawn")
    return subprocess.Popen(
        argv,
        env={},
        cwd="/",
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_child_setup(limits),  # noqa: PLW1509 - single-threaded child setup
    )


def _check_private_parent(*paths: Path) -> None:
    """The ipc and scratch directories become world-writable (sticky) for the kernel's uid, so
    their parent must keep everyone else out, as the sentry's mkdtemp directory does."""
    for path in paths:
        parent = path.resolve().parent
        info = parent.stat()
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise GatewayError(
                f"sandbox: {path} must sit in a private directory (owned by this user, mode "
                f"0700); {parent} has mode {info.st_mode & 0o777:o}. Create it with "
                "tempfile.mkdtemp() or chmod 700 it."
            )


def kernel_uid() -> int:
    """A uid from `KERNEL_UIDS` that no running process uses."""
    in_use: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                in_use.add(entry.stat().st_uid)
            except OSError:
                continue
    while True:
        uid = KERNEL_UIDS.start + secrets.randbelow(len(KERNEL_UIDS))
        if uid not in in_use:
            return uid


def bwrap_argv(
    kernel_argv: list[str], spec: SandboxSpec, *, bwrap: str = "bwrap", drop_to: int | None = None
) -> list[str]:
    """The full bubblewrap command line for `kernel_argv` under `spec`.

    With `drop_to` (a root sentry), bubblewrap keeps only CAP_SETUID and CAP_SETGID so that
    `setpriv` can switch to that uid inside the sandbox; the switch clears every capability
    before the kernel starts.
    """
    caps = ["--cap-drop", "ALL"]
    prefix: list[str] = []
    if drop_to is not None:
        caps += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        prefix = [
            shutil.which("setpriv") or "setpriv",
            f"--reuid={drop_to}",
            f"--regid={drop_to}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    args: list[str] = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        *caps,
        "--hostname",
        "bedside-kernel",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        # A private, size-capped /dev/shm: joblib and multiprocessing put their shared memory
        # and semaphores there, and without one they fall back to serial mode with a warning.
        # tmpfs pages count as the kernel's memory, so the cap follows the policy's memory.
        "--perms",
        "1777",
        "--size",
        str(shm_bytes(spec.policy)),
        "--tmpfs",
        "/dev/shm",  # noqa: S108 - the sandbox's own tmpfs, not the host's
    ]
    for path in _SYSTEM_RO:
        args += ["--ro-bind-try", path, path]
    for top in _TOP_LINKS:
        p = Path(top)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), top]
        elif p.is_dir():
            args += ["--ro-bind", top, top]
    for path in _ETC_RO:
        args += ["--ro-bind-try", path, path]
    # Scratch first: later binds under /tmp (pytest's tmp_path, say) are mounted on top of it.
    scratch = str(spec.scratch_dir.resolve())
    args += ["--bind", scratch, "/tmp"]  # noqa: S108 - the sandbox's private /tmp
    seen: set[str] = set()
    made: set[str] = set()

    def parents(path: Path) -> list[str]:
        # Parents bubblewrap creates default to 0700, which the unprivileged kernel cannot cross.
        out: list[str] = []
        for parent in reversed(path.parents):
            if str(parent) not in ("/", "/tmp") and str(parent) not in made:  # noqa: S108
                made.add(str(parent))
                out += ["--perms", "0755", "--dir", str(parent)]
        return out

    for path in _readonly_paths(kernel_argv, spec):
        key = str(path)
        if key in seen or _covered(key, _SYSTEM_RO):
            continue
        seen.add(key)
        args += [*parents(path), "--ro-bind", key, key]
    ipc = spec.ipc_dir.resolve()
    args += [*parents(ipc), "--bind", str(ipc), str(ipc)]
    for rw in spec.extra_rw:
        writable = rw.resolve()
        args += [*parents(writable), "--bind", str(writable), str(writable)]
    env = _kernel_env(kernel_argv, spec)
    args += ["--clearenv"]
    for name, value in sorted(env.items()):
        args += ["--setenv", name, value]
    args += ["--chdir", "/tmp", "--"]  # noqa: S108
    return args + prefix + list(kernel_argv)


#: /dev/shm's size without a memory limit in the policy, and the share of the limit with one.
SHM_DEFAULT_BYTES = 256 * 2**20
SHM_SHARE_OF_MEMORY = 4


def shm_bytes(policy: Any) -> int:
    """The sandbox's /dev/shm cap: a quarter of the policy's memory limit, else 256 MiB."""
    memory = _limits(policy)["memory_mb"]
    if memory:
        return max(16 * 2**20, int(memory) * 2**20 // SHM_SHARE_OF_MEMORY)
    return SHM_DEFAULT_BYTES


def _readonly_paths(kernel_argv: list[str], spec: SandboxSpec) -> list[Path]:
    """Every path the kernel reads: its Python (venv and base installation), the bedside
    packages, the policy file, the policy's datasets, and any extra paths of the spec."""
    paths: list[Path] = []
    exe = Path(kernel_argv[0])
    if not exe.is_absolute():
        found = shutil.which(kernel_argv[0])
        if found is None:
            raise GatewayError(f"sandbox: kernel executable {kernel_argv[0]!r} not found on PATH")
        exe = Path(found)
    venv = exe.parent.parent
    if (venv / "pyvenv.cfg").exists():
        paths.append(venv.absolute())
    real_prefix = exe.resolve().parent.parent
    paths.append(real_prefix)
    # The sentry's own interpreter usually is the kernel's; bind its prefixes too.
    paths += [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    for name in _KERNEL_PACKAGES:
        try:
            found_spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            continue
        if found_spec is not None and found_spec.submodule_search_locations:
            paths += [Path(p).resolve() for p in found_spec.submodule_search_locations]
    policy = spec.policy
    policy_path = getattr(policy, "path", None)
    if policy_path:
        paths.append(Path(policy_path).resolve())
    for dataset in (getattr(policy, "datasets", None) or {}).values():
        paths.append(Path(dataset.path).resolve())
    paths += [Path(p).resolve() for p in spec.extra_ro]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise GatewayError(f"sandbox: paths the kernel needs do not exist: {missing}")
    # Shortest first, and drop paths inside an already bound directory.
    out: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(path.is_relative_to(o) for o in out if o.is_dir()):
            out.append(path)
    return out


def _covered(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _kernel_env(kernel_argv: list[str], spec: SandboxSpec) -> dict[str, str]:
    exe_dir = str(Path(kernel_argv[0]).parent) if os.sep in kernel_argv[0] else ""
    env = {
        "USER": "bedside",  # the kernel's uid has no passwd entry; getpass reads these first
        "LOGNAME": "bedside",
        "PATH": os.pathsep.join(p for p in (exe_dir, "/usr/local/bin", "/usr/bin", "/bin") if p),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "agg",
    }
    env.update(spec.env)
    # Not overridable by the caller: the sandbox's own view of itself.
    env.update(
        {
            "HOME": "/tmp",  # noqa: S108
            "TMPDIR": "/tmp",  # noqa: S108
            "MPLCONFIGDIR": "/tmp/.matplotlib",  # noqa: S108
            SANDBOX_ENV: "bwrap",
        }
    )
    return env


def _limits(policy: Any) -> dict[str, int | None]:
    limits = getattr(policy, "limits", None)
    return {
        "memory_mb": getattr(limits, "memory_mb", None),
        "cpu_seconds": getattr(limits, "cpu_seconds", None),
        "processes": getattr(limits, "processes", None),
    }


_PR_SET_PDEATHSIG = 1


def _child_setup(limits: dict[str, int | None]) -> Callable[[], None]:
    """The function run in the child between fork and exec: set the rlimits (inherited by
    bubblewrap's child, the kernel) and die with the parent."""

    def setup() -> None:
        memory = limits["memory_mb"]
        if memory:
            size = int(memory) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
            resource.setrlimit(resource.RLIMIT_DATA, (size, size))
        cpu = limits["cpu_seconds"]
        if cpu:
            resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu)))
        procs = limits["processes"]
        if procs:
            resource.setrlimit(resource.RLIMIT_NPROC, (int(procs), int(procs)))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)

    return setup
