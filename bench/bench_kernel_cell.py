"""Per-cell latency of the guarded kernel against a plain ipykernel, measured in the same run.

The guarded kernel and a plain ipykernel are started through jupyter_client on the same synthetic
hospital, with a second plain ipykernel as a control. The run is made of `--rounds` rounds; in each
round every cell kind is run `--per-round` times on each kernel, the kernels taking turns cell by
cell (each of them first, second and last equally often, in both directions), so a burst of load
from other processes falls on all of them. A cell is timed from its execute_request to the later of
its execute_reply and its idle status on iopub (what a client waits for), both sockets watched at
once by one zmq poller.

Per cell kind it reports the p50 and p90 of each kernel over all its runs, and as the headline
`ratio_p50` the median over rounds of each round's guarded p50 / reference p50, with the first and
third quartiles of those per-round ratios (`ratio_p50_q1`, `ratio_p50_q3`): the spread says how much
one round's load moved the ratio, and no single round decides it (target p50 <= 1.10x). The
reference is the mean of the two plain kernels, started one before and one after the guarded kernel
(an effect of the start order cancels); `vs_plain_p50` and `vs_control_p50` are the ratios against
each alone. `control_ratio_p50` compares the two plain kernels: identical, so whatever it differs
from 1.00 is the bench's own error on this machine (`--no-control` leaves the control out; the
reference is then the plain kernel). `ratio_p50_pooled` is the ratio of the p50s over all runs. Also
reported: the CPU time each kernel process spends per cell (`ratio_cpu`, medians; all its threads,
in ns from /proc/<pid>/task/*/schedstat, not clock ticks), which other processes loading the machine
move less, and the messages and bytes each kernel sends per cell on shell and iopub (the guard adds
metadata, never messages). Results go to stdout as JSON (and to --out if given).

    .venv/bin/python bench/bench_kernel_cell.py [--rounds 12] [--per-round 18] [--fresh]
        [--no-control] [--big] [--behind-sentry] [--cells empty,aggregate] [--out FILE]

The guard remembers what it worked out for outputs and groupings it has just seen (the text and
row-order scans of an identical output, the record sets of the same groups, the per-cell records
of a crosstab or pivot_table over the same columns), so a cell run again costs it less than a
new one; every memo is keyed by the data it depends on (copied arrays, immutable pyarrow arrays,
versions of the indexes), never by object identity alone, so changed data is judged again
(tests/kernel/test_memos.py); the verdict on an aggregate shown again is remembered too, keyed by
those memo values, the result's labels and values, the rules and the differencing log and its
version (tests/kernel/test_verdicts.py). `--fresh` adds cells whose output and records differ on
every run, to measure the guard on outputs it has not seen (the target is stated for the default
cells). `--big` adds cells with a 1 MB output (`print` of a million characters of words and of
one letter, and the same text as an execute_result; no target of their own, they show the
guard's cost on the path of bench_gateway.py's 1 MB output). `--behind-sentry` starts the guarded
kernel as the sentry starts it (`BEDSIDE_BEHIND_SENTRY=1`): it leaves the identifier/PHI scan of
texts of 64 KiB or more to the sentry, which runs that same scan on everything it lets out (the
sentry itself is not started here; bench_gateway.py measures the whole chain).
`bench/kernel_cell_callgrind.py`
counts the instructions per cell of the same cells under callgrind, which a loaded machine does
not change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _report, also when a test loads this

from _report import emit  # noqa: E402

from bedside.kernel import BEHIND_SENTRY_ENV  # noqa: E402
from tests.kernel._client import start, stop  # noqa: E402
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
# 1 MB outputs (`--big`): the guard's cost on the output path of bench_gateway.py and
# bench_researcher.py, a stream of ordinary words, one of a single letter, and an execute_result.
BIG = {
    "print_1mb": "print(TEXT)",
    "print_x_1mb": "print('x' * 1_000_000)",
    "result_1mb": "TEXT",
}
SETUP_BIG = (
    "\nWORDS = 'cohort analysis survival model baseline outcome ward median interval'.split()\n"
    "TEXT = ' '.join(WORDS[i % len(WORDS)] for i in range(200000))[:1000000]"
)
TARGET = 1.10


@dataclass
class Exchange:
    """One cell as the client saw it: wall time and what arrived per channel."""

    seconds: float
    messages: dict[str, int] = field(default_factory=lambda: {"shell": 0, "iopub": 0})
    nbytes: dict[str, int] = field(default_factory=lambda: {"shell": 0, "iopub": 0})


_pollers: dict[int, zmq.Poller] = {}


def exchange(kc: Any, code: str, timeout: float = 60.0) -> Exchange:
    """Run `code`, reading shell and iopub as their messages arrive, until reply and idle."""
    shell, iopub = kc.shell_channel.socket, kc.iopub_channel.socket
    poller = _pollers.get(id(kc))
    if poller is None:
        poller = _pollers[id(kc)] = zmq.Poller()
        poller.register(shell, zmq.POLLIN)
        poller.register(iopub, zmq.POLLIN)
    session = kc.session
    got = Exchange(0.0)
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    reply = idle = False
    while not (reply and idle):
        ready = dict(poller.poll(int(timeout * 1000)))
        if not ready:
            raise TimeoutError(f"no message about {code!r} for {timeout} s")
        for sock, channel in ((shell, "shell"), (iopub, "iopub")):
            if sock not in ready:
                continue
            frames = sock.recv_multipart(copy=True)
            _, smsg = session.feed_identities(frames)
            msg = session.deserialize(smsg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue  # late output of an earlier cell
            got.messages[channel] += 1
            got.nbytes[channel] += sum(len(f) for f in frames)
            if channel == "shell":
                reply = True
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
    got.seconds = time.perf_counter() - t0
    return got


def run_cell(kc: Any, code: str, timeout: float = 60.0) -> float:
    """Seconds from execute_request to reply and idle (also used by kernel_cell_callgrind.py)."""
    return exchange(kc, code, timeout).seconds


def cpu_ns(pid: int) -> int:
    """CPU time of all threads of a process so far, in ns (Linux schedstat; 0 elsewhere)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, interpolated."""
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


def round_p50s(runs: dict[str, list[list[Exchange]]], name: str) -> list[float]:
    """The p50 of each round of kernel `name`, in seconds."""
    return [statistics.median(e.seconds for e in rnd) for rnd in runs[name]]


def summarize(cell: str, runs: dict[str, list[list[Exchange]]],
              cpu: dict[str, list[int]]) -> dict[str, Any]:  # fmt: skip
    """Figures of one cell kind: pooled percentiles, per-round p50 ratios, CPU and messages.

    The reference is the plain kernel, or with the control the mean of the two plain kernels
    (started before and after the guarded one, so an effect of the start order cancels)."""
    names = list(runs)
    refs = [k for k in ("plain", "control") if k in runs]
    pooled = {k: [e.seconds for rnd in runs[k] for e in rnd] for k in names}
    p50s = {k: round_p50s(runs, k) for k in names}
    reference = [statistics.fmean(r) for r in zip(*(p50s[k] for k in refs), strict=True)]
    per_round = [g / r for g, r in zip(p50s["guarded"], reference, strict=True)]
    row: dict[str, Any] = {"reference": " + ".join(refs)}
    for k in names:
        row[f"{k}_p50_ms"] = statistics.median(pooled[k]) * 1e3
        row[f"{k}_p90_ms"] = quantile(pooled[k], 0.9) * 1e3
        row[f"{k}_cpu_ms"] = statistics.median(cpu[k]) / 1e6
        row[f"{k}_cpu_mean_ms"] = statistics.fmean(cpu[k]) / 1e6
    ref = {what: statistics.fmean(row[f"{k}_{what}"] for k in refs)
           for what in ("p50_ms", "p90_ms", "cpu_ms")}  # fmt: skip
    row["ratio_p50"] = statistics.median(per_round)
    row["ratio_p50_q1"] = quantile(per_round, 0.25)
    row["ratio_p50_q3"] = quantile(per_round, 0.75)
    row["ratio_p50_pooled"] = row["guarded_p50_ms"] / ref["p50_ms"]
    row["ratio_p90"] = row["guarded_p90_ms"] / ref["p90_ms"]
    row["ratio_cpu"] = row["guarded_cpu_ms"] / max(ref["cpu_ms"], 1e-9)
    for k in refs:  # against each plain kernel alone (median of per-round ratios)
        row[f"vs_{k}_p50"] = statistics.median(
            g / r for g, r in zip(p50s["guarded"], p50s[k], strict=True))  # fmt: skip
    if "control" in runs:  # two identical kernels: what the bench itself reads as a difference
        row["control_ratio_p50"] = statistics.median(
            c / p for c, p in zip(p50s["control"], p50s["plain"], strict=True))  # fmt: skip
        row["control_ratio_cpu"] = row["control_cpu_ms"] / max(row["plain_cpu_ms"], 1e-9)
    row["per_cell"] = {
        k: {f"{what}_{ch}": statistics.median(getattr(e, attr)[ch] for rnd in runs[k] for e in rnd)
            for what, attr in (("messages", "messages"), ("bytes", "nbytes"))
            for ch in ("shell", "iopub")}
        for k in names
    }  # fmt: skip
    row["per_round_ratios"] = [round(r, 4) for r in per_round]
    print(
        f"{cell:15s} p50 {row['guarded_p50_ms']:7.2f} vs {ref['p50_ms']:7.2f} ms  ratio "
        f"{row['ratio_p50']:.3f} [IQR {row['ratio_p50_q1']:.3f}-{row['ratio_p50_q3']:.3f}] | "
        f"p90 ratio {row['ratio_p90']:.3f} | cpu p50 {row['guarded_cpu_ms']:6.2f} vs "
        f"{ref['cpu_ms']:6.2f} ms ratio {row['ratio_cpu']:.3f}"
        + (f" | control/plain p50 {row['control_ratio_p50']:.3f} cpu {row['control_ratio_cpu']:.3f}"
           if "control" in runs else ""),
        file=sys.stderr,
    )  # fmt: skip
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=18, help="runs of each cell per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fresh", action="store_true", help="also cells with a new output every run")
    ap.add_argument("--big", action="store_true", help="also cells with a 1 MB output")
    ap.add_argument(
        "--no-control",
        action="store_true",
        help="without the second plain kernel that measures the bench's own noise",
    )
    ap.add_argument(
        "--behind-sentry",
        action="store_true",
        help="start the guarded kernel as the sentry does (long texts' scan left to the sentry)",
    )
    ap.add_argument("--cells", help="comma-separated cell names (default: all)")
    args = ap.parse_args()
    cells = {**CELLS, **FRESH} if args.fresh else dict(CELLS)
    if args.big:
        cells.update(BIG)
    if args.cells:
        cells = {c: {**CELLS, **FRESH, **BIG}[c] for c in args.cells.split(",")}
    root = Path(tempfile.mkdtemp(prefix="bench-kernel-"))
    policy, _ = write_hospital(root)
    plain_setup = f"import pandas as pd\ndf = pd.read_parquet({str(root / 'patients.parquet')!r})"
    setup = {"guarded": "import pandas as pd\ndf = hospital.load('patients')",
             "plain": plain_setup, "control": plain_setup}  # fmt: skip
    if set(cells) & set(BIG):
        setup = {k: v + SETUP_BIG for k, v in setup.items()}
    names = ["guarded", "plain"] + ([] if args.no_control else ["control"])
    kernels: dict[str, Any] = {}
    started = time.monotonic()
    try:
        # started plain, guarded, control: the reference (both plain kernels) brackets the
        # guarded one; the kernels' turns below do not depend on this order
        kernels["plain"] = start(root, "bench-plain", None, module="ipykernel_launcher")
        env = {BEHIND_SENTRY_ENV: "1"} if args.behind_sentry else None
        kernels["guarded"] = start(root, "bench-guarded", policy, env=env)
        if "control" in names:
            kernels["control"] = start(root, "bench-control", None, module="ipykernel_launcher")
        for name, (_, kc) in kernels.items():
            run_cell(kc, setup[name])
        pids = {name: km.provisioner.process.pid for name, (km, _) in kernels.items()}
        for code in cells.values():
            for _ in range(args.warmup):
                for _, kc in kernels.values():
                    run_cell(kc, code)
        runs: dict[str, dict[str, list[list[Exchange]]]] = {c: {k: [] for k in names}
                                                            for c in cells}  # fmt: skip
        cpu: dict[str, dict[str, list[int]]] = {c: {k: [] for k in names} for c in cells}
        for _ in range(args.rounds):
            for cell, code in cells.items():
                for k in names:
                    runs[cell][k].append([])
                for i in range(args.per_round):
                    # every kernel first, second (and third) equally often, in both directions
                    order = names[i % len(names) :] + names[: i % len(names)]
                    for name in order if (i // len(names)) % 2 == 0 else order[::-1]:
                        c0 = cpu_ns(pids[name])
                        runs[cell][name][-1].append(exchange(kernels[name][1], code))
                        cpu[cell][name].append(cpu_ns(pids[name]) - c0)
        result: dict[str, Any] = {
            "rounds": args.rounds, "per_round": args.per_round,
            "behind_sentry": args.behind_sentry,
            "cells": {c: summarize(c, runs[c], cpu[c]) for c in cells},
        }  # fmt: skip
        # the target is stated for the default cells only (none of them run: no verdict)
        worst = max((result["cells"][c]["ratio_p50"] for c in cells if c in CELLS), default=None)
        result["target_p50_ratio"] = TARGET
        result["worst_p50_ratio"] = worst
        result["meets_target"] = None if worst is None else worst <= TARGET
        result["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        result["seconds"] = round(time.monotonic() - started, 1)
        control = [r["control_ratio_p50"] for r in result["cells"].values()
                   if "control_ratio_p50" in r]  # fmt: skip
        result["summary"] = (
            f"Per cell kind, `ratio_p50` is the median over {args.rounds} rounds of the guarded "
            "kernel's p50 over the mean p50 of the plain kernels, `_q1`/`_q3` the quartiles of "
            "those per-round ratios, `ratio_cpu` the same for CPU time per cell (medians). "
            + (f"Worst ratio_p50 {worst:.3f} (target {TARGET:.2f})." if worst is not None else "")
            + (f" `control_ratio_p50` is one plain kernel against the other, the bench's own "
               f"error: {min(control):.3f}-{max(control):.3f} in this run." if control else "")
        )  # fmt: skip
        emit(result, args.out)
    finally:
        for km, kc in kernels.values():
            stop(km, kc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
