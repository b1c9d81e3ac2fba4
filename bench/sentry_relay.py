"""Cost of the sentry and of the sandbox, separated: the same jupyter_client drives a plain
ipykernel directly, the same kernel inside bubblewrap (no sentry), the kernel behind the sentry
without and with the sandbox, then the full chain (sentry + sandbox + guarded kernel). Prints
ratios against the direct kernel measured in the same run and writes JSON. With `--cpu`, the
sentry's own CPU time per cell is reported as well (from /proc, independent of machine load).

    .venv/bin/python bench/sentry_relay.py [--cells 200] [--out bench-sentry.json]

Not part of `make test`. Enterprise Gateway in front of the chain is measured by
bench/bench_gateway.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "gateway"))

from _report import emit
from _sentry_support import Client, make_hospital, make_patients, start_sentry  # noqa: E402
from jupyter_client import BlockingKernelClient, KernelManager  # noqa: E402

ONE_MB = "print('x' * 1_000_000)"


def run_cell(kc: BlockingKernelClient, code: str) -> float:
    start = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            break
    while True:
        reply = kc.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    return time.perf_counter() - start


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kc: BlockingKernelClient, cells: int, pid: int | None = None) -> dict[str, float]:
    for _ in range(10):
        run_cell(kc, "1 + 1")
    cpu0 = cpu_seconds(pid)
    trivial = [run_cell(kc, "1 + 1") for _ in range(cells)]
    cpu1 = cpu_seconds(pid)
    big = [run_cell(kc, ONE_MB) for _ in range(max(3, cells // 40))]
    cpu2 = cpu_seconds(pid)
    out = {
        "trivial_p50_ms": statistics.median(trivial) * 1000,
        "trivial_p90_ms": sorted(trivial)[int(len(trivial) * 0.9)] * 1000,
        "one_mb_p50_ms": statistics.median(big) * 1000,
    }
    if pid is not None:
        out["sentry_cpu_ms_per_trivial"] = (cpu1 - cpu0) / len(trivial) * 1000
        out["sentry_cpu_ms_per_1mb"] = (cpu2 - cpu1) / len(big) * 1000
    return out


def drain(kc: BlockingKernelClient) -> None:
    for get in (kc.get_iopub_msg, kc.get_shell_msg):
        while True:
            try:
                get(timeout=0.2)
            except Empty:
                break


def direct(cells: int) -> dict[str, float]:
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        drain(kc)
        return measure(kc, cells)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def in_bwrap(root: Path, cells: int) -> dict[str, float]:
    """A plain ipykernel in the sandbox, reached over ipc directly (no sentry)."""
    from bedside.gateway._early import write_connection
    from bedside.gateway.sandbox import SandboxSpec, launch

    root.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="bedside-", dir=root))
    ipc = private / "ipc"
    ipc.mkdir(mode=0o700)
    (private / "scratch").mkdir(mode=0o700)
    conn, info = write_connection(ipc, secrets.token_hex(16))
    policy = SimpleNamespace(datasets={}, limits=None, path=None)
    spec = SandboxSpec(policy=policy, ipc_dir=ipc, scratch_dir=private / "scratch", env={})
    proc = launch([sys.executable, "-m", "ipykernel_launcher", "-f", str(conn)], spec)
    kc = BlockingKernelClient()
    kc.load_connection_info(info)
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        drain(kc)
        return measure(kc, cells)
    finally:
        kc.stop_channels()
        proc.kill()
        proc.wait()


def through_sentry(root: Path, cells: int, *, sandbox: bool, kernel: str) -> dict[str, float]:
    hospital = make_hospital(root, frame=make_patients(5000), max_output_bytes=2_000_000)
    started = time.perf_counter()
    sentry = start_sentry(hospital, root / "run", sandbox=sandbox, kernel=kernel)
    kc = Client.connect(sentry).kc  # retries while the sentry loads its index
    ready = time.perf_counter() - started
    try:
        drain(kc)
        out = measure(kc, cells, sentry.proc.pid)
        out["start_ms"] = ready * 1000
        return out
    finally:
        kc.stop_channels()
        sentry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", help="comma-separated subset of the runs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bedside-bench-"))
    runs = {
        "direct": lambda: direct(args.cells),
        "bwrap": lambda: in_bwrap(tmp / "w", args.cells),
        "sentry": lambda: through_sentry(tmp / "a", args.cells, sandbox=False, kernel="plain"),
        "sentry+bwrap": lambda: through_sentry(tmp / "c", args.cells, sandbox=True, kernel="plain"),
        "chain": lambda: through_sentry(tmp / "b", args.cells, sandbox=True, kernel="guarded"),
    }
    only = set(args.only.split(",")) if args.only else set(runs)
    only.add("direct")
    results = {}
    try:
        for name, run in runs.items():
            if name not in only:
                continue
            if ("bwrap" in name or name == "chain") and not shutil.which("bwrap"):
                continue
            results[name] = run()
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results["direct"]
    report = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load": os.getloadavg(),
        "cells": args.cells,
        "results": results,
        "ratios": {
            name: {k: round(v / base[k], 3) for k, v in r.items() if k in base}
            for name, r in results.items()
        },
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
