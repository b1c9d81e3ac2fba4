"""Where a trivial cell's milliseconds go behind the sentry: CPU per cell of each process.

Drives `1 + 1` through jupyter_client against (a) a plain ipykernel started directly, (b) the
sentry in front of a plain ipykernel, (c) the sentry in front of the guarded kernel (the bedside
chain), each with or without bubblewrap, and reads `/proc/<pid>/stat` of every process before
and after: the sentry, the kernel's process tree behind it, and this client. CPU time does not
depend on how busy the machine is, so the figures hold on a shared two-core machine where
wall-clock medians do not; the wall-clock p50 is printed too, as a ratio to the direct kernel.

    .venv/bin/python bench/sentry_cpu.py [--cells 300] [--sandbox] [--output-bytes N] [--out FILE]

With `--output-bytes N` each measured cell prints N characters of ordinary words (bench_gateway's
1 MB output at N = 1000000) instead of `1 + 1`: the text is built by a setup cell, so the
measured cell is the output's path alone.

`BEDSIDE_SENTRY_PROFILE=FILE` in the environment makes each sentry write a cProfile of its run.
Not part of `make test`; the gateway in front is measured by bench/bench_gateway.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "gateway"))

from _report import emit
from _sentry_support import Client, make_hospital, make_patients, start_sentry  # noqa: E402
from jupyter_client import BlockingKernelClient, KernelManager  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of one process (the sentry's main loop vs zmq's I/O)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        label = "main" if task.name == str(pid) else name
        out[label] = out.get(label, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def run_cell(kc: BlockingKernelClient, code: str) -> tuple[float, int]:
    """(seconds until idle and reply, messages received for the cell)."""
    start = time.perf_counter()
    msg_id = kc.execute(code)
    count = 0
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        count += 1
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            count += 1
            break
    return time.perf_counter() - start, count


# The cell measured: `1 + 1`, or (`--output-bytes`) a print of the text SETUP builds.
CODE = {"cell": "1 + 1", "setup": ""}
SETUP = (
    "WORDS = 'cohort analysis survival model baseline outcome ward median interval'.split()\n"
    "TEXT = ' '.join(WORDS[i % len(WORDS)] for i in range(({n} // 5) + 1))[:{n}]\n"
    "len(TEXT)"
)


def measure(kc: BlockingKernelClient, cells: int, sentry: int | None, kernel: list[int]) -> dict:
    if CODE["setup"]:
        run_cell(kc, CODE["setup"])
    for _ in range(20 if CODE["cell"] == "1 + 1" else 3):
        run_cell(kc, CODE["cell"])
    time.sleep(0.3)

    def snap() -> dict[str, float]:
        return {
            "sentry": proc_cpu(sentry) if sentry else 0.0,
            "kernel": sum(proc_cpu(p) for p in kernel),
            "client": time.process_time(),
        }

    threads0 = thread_cpu(sentry) if sentry else {}
    before = snap()
    walls, counts = [], []
    for _ in range(cells):
        wall, count = run_cell(kc, CODE["cell"])
        walls.append(wall)
        counts.append(count)
    time.sleep(0.3)  # the sentry's quiet-time flush belongs to these cells
    after = snap()
    threads1 = thread_cpu(sentry) if sentry else {}
    per_cell = {k: (after[k] - before[k]) / cells * 1e6 for k in before}
    messages = statistics.mean(counts) + 1  # + the execute_request in
    out = {
        "wall_p50_ms": statistics.median(walls) * 1e3,
        "messages_per_cell": messages,
        "cpu_us_per_cell": {k: round(v) for k, v in per_cell.items()},
    }
    if sentry:
        out["sentry_threads_us_per_cell"] = {
            k: round((v - threads0.get(k, 0.0)) / cells * 1e6) for k, v in threads1.items()
        }
        out["sentry_cpu_us_per_message"] = round(per_cell["sentry"] / messages)
    return out


def direct(cells: int) -> dict:
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        return measure(kc, cells, None, [km.provisioner.pid])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def through_sentry(root: Path, cells: int, *, sandbox: bool, kernel: str) -> dict:
    # An egress budget no run reaches (past it every megabyte output would become a notice).
    hospital = make_hospital(
        root, frame=make_patients(2000), max_output_bytes=2_000_000, egress=10**12
    )
    sentry = start_sentry(hospital, root / "run", sandbox=sandbox, kernel=kernel)
    kc = Client.connect(sentry).kc
    try:
        time.sleep(0.5)
        kids = descendants(sentry.proc.pid)
        return measure(kc, cells, sentry.proc.pid, kids)
    finally:
        kc.stop_channels()
        sentry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--sandbox", action="store_true", help="kernels behind the sentry in bwrap")
    parser.add_argument("--only", help="comma-separated subset of direct,sentry+plain,chain")
    parser.add_argument("--output-bytes", type=int, default=0, help="print this much per cell")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.output_bytes:
        CODE.update(cell="print(TEXT)", setup=SETUP.format(n=args.output_bytes))
    tmp = Path(tempfile.mkdtemp(prefix="bedside-cpu-"))
    runs = {
        "direct": lambda: direct(args.cells),
        "sentry+plain": lambda: through_sentry(
            tmp / "p", args.cells, sandbox=args.sandbox, kernel="plain"
        ),
        "chain": lambda: through_sentry(
            tmp / "g", args.cells, sandbox=args.sandbox, kernel="guarded"
        ),
    }
    only = set(args.only.split(",")) if args.only else set(runs)
    results = {}
    for name, run in runs.items():
        if name in only:
            results[name] = run()
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "sentry_cpu",
        "cells": args.cells,
        "sandbox": args.sandbox,
        "cell": CODE["cell"],
        "output_bytes": args.output_bytes,
        "load": os.getloadavg(),
        "results": results,
    }
    if "direct" in results:
        base = results["direct"]["wall_p50_ms"]
        report["wall_ratio_to_direct"] = {
            k: round(v["wall_p50_ms"] / base, 3) for k, v in results.items()
        }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
