"""Cost of the sentry alone: the same jupyter_client drives a plain ipykernel directly and the
same kernel behind the sentry (no sandbox), then the full chain (sentry + sandbox + guarded
kernel). Prints ratios against the direct kernel measured in the same run and writes JSON.

    .venv/bin/python bench/sentry_relay.py [--cells 200] [--out bench-sentry.json]

Not part of `make test`. Enterprise Gateway in front of the chain is measured by the gateway's
own benchmarks.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "gateway"))

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


def measure(kc: BlockingKernelClient, cells: int) -> dict[str, float]:
    for _ in range(10):
        run_cell(kc, "1 + 1")
    trivial = [run_cell(kc, "1 + 1") for _ in range(cells)]
    big = [run_cell(kc, ONE_MB) for _ in range(max(3, cells // 40))]
    return {
        "trivial_p50_ms": statistics.median(trivial) * 1000,
        "trivial_p90_ms": sorted(trivial)[int(len(trivial) * 0.9)] * 1000,
        "one_mb_p50_ms": statistics.median(big) * 1000,
    }


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


def through_sentry(root: Path, cells: int, *, sandbox: bool, kernel: str) -> dict[str, float]:
    hospital = make_hospital(root, frame=make_patients(5000), max_output_bytes=2_000_000)
    sentry = start_sentry(hospital, root / "run", sandbox=sandbox, kernel=kernel)
    kc = Client.connect(sentry).kc  # retries while the sentry loads its index
    try:
        drain(kc)
        return measure(kc, cells)
    finally:
        kc.stop_channels()
        sentry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bedside-bench-"))
    try:
        results = {"direct": direct(args.cells)}
        results["sentry"] = through_sentry(tmp / "a", args.cells, sandbox=False, kernel="plain")
        if shutil.which("bwrap"):
            results["chain"] = through_sentry(tmp / "b", args.cells, sandbox=True, kernel="guarded")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results["direct"]
    report = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cells": args.cells,
        "results": results,
        "ratios": {
            name: {k: round(v / base[k], 3) for k, v in r.items()} for name, r in results.items()
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
