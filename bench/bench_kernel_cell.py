"""Per-cell latency of the guarded kernel against a plain ipykernel, measured in the same run.

Both kernels are started through jupyter_client on the same synthetic hospital; each cell is run
alternately on the two kernels, timing execute_request -> execute_reply plus the idle status on
iopub (what a client waits for). Prints p50/p90 per cell and the guarded/plain ratios (target
p50 <= 1.10x), and writes the results as JSON (stdout, and --out if given). Also reported: the
CPU time each kernel process spends per cell (all its threads, from the OS), whose ratio holds
when other processes load the machine and make the wall-clock figures noisy.

    .venv/bin/python bench/bench_kernel_cell.py [--runs 200] [--fresh] [--out FILE]

The guard remembers what it worked out for outputs and groupings it has just seen (the text and
row-order scans of an identical output, the record sets of the same groups, the per-cell records
of a crosstab or pivot_table over the same columns), so a cell run again costs it less than a
new one; every memo is keyed by the data it depends on (copied arrays, immutable pyarrow arrays,
versions of the indexes), never by object identity alone, so changed data is judged again
(tests/kernel/test_memos.py); the verdict on an aggregate shown again is remembered too, keyed by
those memo values, the result's labels and values, the rules and the differencing log and its
version (tests/kernel/test_verdicts.py). `--fresh` adds cells whose output and records differ on
every run, to measure the guard on outputs it has not seen (the target is stated for the default
cells). `bench/kernel_cell_callgrind.py` counts the instructions per cell of the same cells under
callgrind, which a loaded machine does not change.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kernel._client import start  # noqa: E402
from tests.kernel._data import write_hospital  # noqa: E402

CELLS = {
    "empty": "pass",
    "arithmetic": "1 + 1",
    "print": "print('hello')",
    "aggregate": "df.groupby('ward').los_days.mean()",
    "crosstab": "pd.crosstab(df.sex, df.died)",
}
FRESH = {
    "print_fresh": "import random; print(random.random())",
    "aggregate_fresh": "df.sample(frac=0.5).groupby('ward').los_days.mean()",
    "crosstab_fresh": "d = df.sample(frac=0.5)\npd.crosstab(d.sex, d.died)",
}


def run_cell(kc: Any, code: str) -> float:
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    idle = reply = False
    while not (idle and reply):
        if not reply:
            try:
                m = kc.get_shell_msg(timeout=0.001 if not idle else 30)
                reply = m["parent_header"].get("msg_id") == msg_id
            except queue.Empty:
                pass
        if not idle:
            try:
                m = kc.get_iopub_msg(timeout=0.001 if not reply else 30)
                idle = (m["parent_header"].get("msg_id") == msg_id
                        and m["header"]["msg_type"] == "status"
                        and m["content"]["execution_state"] == "idle")  # fmt: skip
            except queue.Empty:
                pass
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else xs[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fresh", action="store_true", help="also cells with a new output every run")
    args = ap.parse_args()
    cells = {**CELLS, **FRESH} if args.fresh else CELLS
    root = Path(tempfile.mkdtemp(prefix="bench-kernel-"))
    policy, _ = write_hospital(root)
    kernels = {
        "guarded": start(root, "bench-guarded", policy),
        "plain": start(root, "bench-plain", None, module="ipykernel_launcher"),
    }
    setup = {
        "guarded": "import pandas as pd\ndf = hospital.load('patients')",
        "plain": f"import pandas as pd\ndf = pd.read_parquet({str(root / 'patients.parquet')!r})",
    }
    try:
        for name, (_, kc) in kernels.items():
            run_cell(kc, setup[name])
        times: dict[str, dict[str, list[float]]] = {k: {c: [] for c in cells} for k in kernels}
        cpu: dict[str, dict[str, float]] = {k: dict.fromkeys(cells, 0.0) for k in kernels}
        pids = {name: km.provisioner.process.pid for name, (km, _) in kernels.items()}
        for cell, code in cells.items():
            for _name, (_, kc) in kernels.items():  # warm-up
                for _ in range(5):
                    run_cell(kc, code)
            for _ in range(args.runs):
                for name, (_, kc) in kernels.items():
                    c0 = cpu_seconds(pids[name])
                    times[name][cell].append(run_cell(kc, code))
                    cpu[name][cell] += cpu_seconds(pids[name]) - c0
        result: dict[str, Any] = {"runs": args.runs, "cells": {}}
        for cell in cells:
            g, p = times["guarded"][cell], times["plain"][cell]
            row = {
                "guarded_p50_ms": pct(g, 50) * 1e3, "guarded_p90_ms": pct(g, 90) * 1e3,
                "plain_p50_ms": pct(p, 50) * 1e3, "plain_p90_ms": pct(p, 90) * 1e3,
            }  # fmt: skip
            row["ratio_p50"] = row["guarded_p50_ms"] / row["plain_p50_ms"]
            row["ratio_p90"] = row["guarded_p90_ms"] / row["plain_p90_ms"]
            row["guarded_cpu_ms"] = cpu["guarded"][cell] / args.runs * 1e3
            row["plain_cpu_ms"] = cpu["plain"][cell] / args.runs * 1e3
            row["ratio_cpu"] = row["guarded_cpu_ms"] / max(row["plain_cpu_ms"], 1e-9)
            result["cells"][cell] = row
            print(
                f"{cell:11s} p50 {row['guarded_p50_ms']:7.2f} ms vs {row['plain_p50_ms']:7.2f} ms"
                f"  ratio {row['ratio_p50']:.2f}x | p90 {row['guarded_p90_ms']:7.2f} vs "
                f"{row['plain_p90_ms']:7.2f}  ratio {row['ratio_p90']:.2f}x | cpu "
                f"{row['guarded_cpu_ms']:6.2f} vs {row['plain_cpu_ms']:6.2f} ms  ratio "
                f"{row['ratio_cpu']:.2f}x",
                file=sys.stderr,
            )
        result["target_p50_ratio"] = 1.10
        result["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        for km, kc in kernels.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
