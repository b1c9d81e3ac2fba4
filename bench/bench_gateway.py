"""Benchmark: the guarded chain (sentry → bubblewrap → guarded kernel) behind Enterprise Gateway
against a plain ipykernel behind the same gateway, measured in the same run, on a stock gateway
(Nagle's algorithm on, as EG 3.3 ships) and on the bedside-tuned gateway (TCP_NODELAY).

Measures, over the gateway's websocket as JupyterLab would use it:
  trivial cell  `1 + 1`, round trip until the kernel is idle again (p50)  target ≤ 1.15×
  1 MB output   `print(TEXT)` of 1,000,000 characters, until idle (p50)   target ≤ 1.3×
  kernel start  POST /api/kernels until the first kernel_info_reply (p50) target ≤ 1.5×

The guarded kernel skips ipykernel's 0.5 ms sleep before each execute_reply (kernel/kernel.py);
the attribution runs include a plain ipykernel started with `--Kernel._execute_sleep=0`, and the
ratio `bedside_vs_plain_nosleep_on_tuned_eg` against it is bedside's cost without that saving.

Run: .venv/bin/python bench/bench_gateway.py [--out FILE] [--quick] [--base REV]
With `--base REV` the tuned gateway also runs the chain whose sentry (`bedside.gateway` and
`bedside.ledger`) is REV's, copied out of git (`tuned/bedside-base`, see bench/sentry_ab.py), in
the same rounds: a before/after of the sentry on a shared machine (`bedside_vs_base_on_tuned_eg`).
Its policy and kernel packages are this worktree's.
Prints a table and writes the results as JSON, with the CPU time per trivial cell of each process
(the gateway, the client, the kernel or sentry it launched, and what that started), read from
/proc: unlike wall-clock medians it does not depend on how busy the machine is. It records
too whether the client's socket has TCP_NODELAY, the best round of each measurement beside its
median (and the ratios of the best rounds), and how busy the machine was in each phase (busy and
steal shares from /proc/stat): when every configuration, plain included, takes ~40 ms for
`1 + 1` while each process uses several times its usual CPU per cell, the machine was loaded;
a Nagle/delayed-ACK stall would show as wall time without the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import websocket

from bedside.gateway.eg import (
    EnterpriseGateway,
    GatewaySettings,
    free_port,
    local_kernelspec,
    sentry_kernelspec,
)
from bedside.ledger import Signer

POLICY = """\
version: bedside/v1
id: bench-hospital
datasets:
  patients:
    path: data/patients.parquet
    record_id: mrn
    identifiers: [mrn, name]
outputs:
  mime_allow: [text/plain, text/html, image/png, application/json]
  max_output_bytes: 8000000
  session_egress_bytes: 100000000000
limits:
  memory_mb: 8192
  cpu_seconds: 36000
  processes: 256
session:
  max_cells: 1000000
  max_cpu_seconds: 36000
  max_egress_bytes: 100000000000
"""

TARGETS = {"trivial_cell": 1.15, "output_1mb": 1.3, "kernel_start": 1.5}

# 1,000,000 characters of ordinary words: no identifier, nothing PHI-shaped, so the output is
# released and the sentry's scan of the whole text is what is measured.
SETUP_1MB = (
    "WORDS = 'cohort analysis survival model baseline outcome ward median interval'.split()\n"
    "TEXT = ' '.join(WORDS[i % len(WORDS)] for i in range(200000))[:1000000]\n"
    "len(TEXT)"
)


def make_hospital(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    n = 2000
    frame = pd.DataFrame(
        {
            "mrn": [f"MRN{9_000_000 + i * 13:08d}" for i in range(n)],
            "name": [f"Patient{i:05d} Example" for i in range(n)],
            "age": rng.integers(18, 100, size=n),
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    for path in [root, *root.parents]:
        if str(path) in ("/", "/tmp"):
            break
        path.chmod(path.stat().st_mode | 0o755)
    (root / "data").mkdir(exist_ok=True)
    frame.to_parquet(root / "data" / "patients.parquet")
    (root / "data" / "patients.parquet").chmod(0o644)
    (root / "policy.yaml").write_text(POLICY)
    (root / "policy.yaml").chmod(0o644)
    keys = root / "secrets"
    keys.mkdir(mode=0o700, exist_ok=True)
    Signer.generate("bench-hospital").save(keys / "custodian.key")
    state = root / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return {"policy": root / "policy.yaml", "key": keys / "custodian.key", "state": state}


def cpu_ns(pid: int) -> int:
    """CPU time of a process, all its threads, in ns (schedstat; 0 once it is gone)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_ticks() -> list[int]:
    """The machine's CPU ticks from /proc/stat: user, nice, system, idle, iowait, irq, softirq,
    steal (summed over all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return [int(v) for v in fields]


def machine_share(before: list[int], after: list[int]) -> dict[str, float]:
    """Share of the machine's CPU time that was busy and that the hypervisor stole, between
    two `machine_ticks` readings. On a busy (or overcommitted) machine every process of the
    run, plain ones included, takes several times its usual CPU time per cell (compare
    `trivial_cell_cpu_us` with a quiet run), and wall times grow with it."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    return {
        "busy": round(1 - (delta[3] + delta[4]) / total, 3),
        "steal": round(delta[7] / total, 3),
    }


def children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(int(k) for k in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


class Kernel:
    """One kernel over the gateway's websocket."""

    def __init__(self, eg: EnterpriseGateway, name: str) -> None:
        self.eg = eg
        eg_pid = eg.process.pid if eg.process is not None else 0
        before = children(eg_pid)
        start = time.perf_counter()
        model = eg.api("POST", "/api/kernels", {"name": name, "env": {"KERNEL_USERNAME": "bench"}})
        self.kernel_id = model["id"]
        self.ws = websocket.create_connection(
            f"{eg.ws_url}/api/kernels/{self.kernel_id}/channels",
            header=[f"Authorization: token {eg.token}"],
            timeout=120,
            # websocket-client checks the UTF-8 of every text frame in pure Python (no wsaccel
            # here): ~0.3 µs per byte, 150 ms for a 1 MB output and ~1 ms for the receipts of a
            # trivial cell, a cost of this client only (a browser checks at native speed). Its
            # frames are still decoded as UTF-8, in C, by `recv`.
            skip_utf8_validation=True,
            # Nagle off on the client's socket, as a browser's: websocket-client sets it by
            # default, said here so that the measurement does not depend on that default (a
            # stall would show in every configuration alike, plain included).
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        self.nodelay = bool(self.ws.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        self.session = uuid.uuid4().hex
        self._wait_ready()
        self.start_seconds = time.perf_counter() - start
        # What the gateway launched for this kernel: a plain ipykernel, or the sentry (with the
        # sandbox and the kernel behind it as its descendants).
        self.eg_pid = eg_pid
        self.root_pids = sorted(children(eg_pid) - before)

    def processes(self) -> dict[str, list[int]]:
        """{"launched": the gateway's child, "behind": everything it started} (pids)."""
        behind = [p for root in self.root_pids for p in descendants(root)]
        return {"launched": list(self.root_pids), "behind": behind}

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": msg_type,
                        "username": "bench",
                        "session": self.session,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        return msg_id

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msg_id = self.send("kernel_info_request", {})
            self.ws.settimeout(2)
            try:
                while True:
                    msg = json.loads(self.ws.recv())
                    if msg["parent_header"].get("msg_id") == msg_id:
                        return
            except websocket.WebSocketTimeoutException:
                continue
        raise RuntimeError("kernel did not answer kernel_info within 120 s")

    def execute(self, code: str) -> tuple[float, int, str]:
        """(seconds until idle, bytes of output received, reply status)."""
        self.ws.settimeout(120)
        start = time.perf_counter()
        msg_id = self.send(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": False,
            },
        )
        received = 0
        status = ""
        idle = False
        while not (idle and status):
            raw = self.ws.recv()
            msg = json.loads(raw)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_reply":
                status = msg["content"]["status"]
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif msg["msg_type"] in ("stream", "execute_result", "display_data"):
                received += len(raw)
        return time.perf_counter() - start, received, status

    def close(self) -> None:
        self.ws.close()
        self.eg.api("DELETE", f"/api/kernels/{self.kernel_id}")


def p50(values: list[float]) -> float:
    return statistics.median(values)


# Pause before each timed cell. Every kernel of the run is alive at once, and a sentry makes its
# ledger durable (two fsyncs) once its relay has been quiet for 30 ms; without the pause that
# work, and a guarded kernel's own after-cell work, fell into the cell of the configuration
# measured next (in round-robin order always the same one), which read as a cost of that one.
SETTLE_S = 0.1


def rotations(labels: list[str], rounds: int) -> list[list[str]]:
    """The order of each round: the list rotated by one each time, so that every
    configuration follows every other one equally often."""
    return [labels[i % len(labels) :] + labels[: i % len(labels)] for i in range(rounds)]


def measure_interleaved(
    configs: dict[str, tuple[EnterpriseGateway, str]], *, cells: int, big: int, starts: int
) -> dict[str, dict[str, Any]]:
    """Measure every configuration round-robin (one cell each in turn, the order rotating),
    so that load from other work on the machine falls on all of them alike and the ratios
    stay meaningful."""
    kernels = {label: Kernel(eg, name) for label, (eg, name) in configs.items()}
    labels = list(configs)
    trivial: dict[str, list[float]] = {label: [] for label in configs}
    big_runs: dict[str, list[float]] = {label: [] for label in configs}
    start_times: dict[str, list[float]] = {label: [] for label in configs}
    # CPU µs per trivial cell: the gateway (during the cell), this client, the process the
    # gateway launched (plain kernel or sentry) and what that one started (sandbox, kernel).
    cpu: dict[str, dict[str, float]] = {}
    machine: dict[str, dict[str, float]] = {}
    try:
        for label, kernel in kernels.items():
            for _ in range(5):
                kernel.execute("1 + 1")
            _, _, status = kernel.execute(SETUP_1MB)
            assert status == "ok", f"{label}: 1 MB setup cell failed"
        print(f"trivial cells x{cells} ...", file=sys.stderr, flush=True)
        procs = {label: kernel.processes() for label, kernel in kernels.items()}

        def snap(label: str) -> dict[str, int]:
            parts = {part: sum(cpu_ns(p) for p in pids) for part, pids in procs[label].items()}
            return {"gateway": cpu_ns(kernels[label].eg_pid), **parts}

        first = {label: snap(label) for label in labels}
        ticks = machine_ticks()
        during: dict[str, dict[str, int]] = {label: {} for label in labels}
        for order in rotations(labels, cells):
            for label in order:
                time.sleep(SETTLE_S)
                before, me0 = snap(label), time.process_time_ns()
                trivial[label].append(kernels[label].execute("1 + 1")[0])
                me1, after = time.process_time_ns(), snap(label)
                for part in before:
                    during[label][part] = during[label].get(part, 0) + after[part] - before[part]
                during[label]["client"] = during[label].get("client", 0) + me1 - me0
        last = {label: snap(label) for label in labels}
        machine["trivial_cell"] = machine_share(ticks, machine_ticks())
        for label in labels:
            # "during": from the request until the client saw idle (the cell's own path);
            # "all": everything the kernel's processes used over the phase, per cell (adds the
            # sentry's flush after a cell and its idle polling; the gateway is shared).
            cpu[label] = {
                **{f"{k}": round(v / cells / 1e3) for k, v in during[label].items()},
                **{
                    f"{part}_all": round((last[label][part] - first[label][part]) / cells / 1e3)
                    for part in procs[label]
                },
            }
        print(f"1 MB outputs x{big} ...", file=sys.stderr, flush=True)
        ticks = machine_ticks()
        for order in rotations(labels, big):
            for label in order:
                time.sleep(SETTLE_S)
                seconds, size, status = kernels[label].execute("print(TEXT)")
                if status != "ok" or size < 1_000_000:
                    raise RuntimeError(f"{label}: the 1 MB output was not released ({size} B)")
                big_runs[label].append(seconds)
        machine["output_1mb"] = machine_share(ticks, machine_ticks())
    finally:
        for kernel in kernels.values():
            kernel.close()
    print(f"kernel starts x{starts} ...", file=sys.stderr, flush=True)
    ticks = machine_ticks()
    for order in rotations(labels, starts):
        for label in order:
            eg, name = configs[label]
            time.sleep(SETTLE_S)
            k = Kernel(eg, name)
            start_times[label].append(k.start_seconds)
            k.close()
    machine["kernel_start"] = machine_share(ticks, machine_ticks())
    return {
        label: {
            "trivial_cell_p50_ms": p50(trivial[label]) * 1e3,
            "trivial_cell_p90_ms": float(np.percentile(trivial[label], 90)) * 1e3,
            "output_1mb_p50_ms": p50(big_runs[label]) * 1e3,
            "kernel_start_p50_ms": p50(start_times[label]) * 1e3,
            # Best rounds: the least any load on the machine added.
            "trivial_cell_min_ms": min(trivial[label]) * 1e3,
            "output_1mb_min_ms": min(big_runs[label]) * 1e3,
            "kernel_start_min_ms": min(start_times[label]) * 1e3,
            "trivial_cell_cpu_us": cpu[label],
            "client_nodelay": kernels[label].nodelay,
            "machine": machine,
            "n": {"trivial": cells, "output_1mb": big, "kernel_start": starts},
        }
        for label in configs
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--no-sandbox", action="store_true", help="chain without bubblewrap")
    parser.add_argument(
        "--no-attribution", action="store_true", help="skip the sentry+plain-kernel runs"
    )
    parser.add_argument("--cells", type=int, help="trivial cells per configuration")
    parser.add_argument(
        "--only-tuned", action="store_true", help="skip the stock gateway (attribution runs)"
    )
    parser.add_argument("--base", help="also the chain with this git revision's sentry")
    args = parser.parse_args()
    cells, big, starts = (20, 3, 2) if args.quick else (150, 12, 6)
    cells = args.cells or cells

    work = Path(tempfile.mkdtemp(prefix="bedside-bench-"))
    hospital = make_hospital(work / "hospital")
    specs = {
        "plain": local_kernelspec(
            [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "plain"
        ),
        "bedside": sentry_kernelspec(
            policy=hospital["policy"],
            custodian_key=hospital["key"],
            state_dir=hospital["state"],
            sandbox=not args.no_sandbox,
        ),
    }
    # Attribution (tuned gateway only): a plain ipykernel without its 0.5 ms sleep before each
    # execute_reply, which the guarded kernel drops (kernel/kernel.py), so that the part of the
    # ratio that comes from that alone shows; and the sentry in front of a plain ipykernel, with
    # and without bubblewrap, which separates the sentry's and the sandbox's cost from the
    # guarded kernel's.
    specs["plain-nosleep"] = local_kernelspec(
        [
            sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
            "--Kernel._execute_sleep=0",
        ],
        "plain-nosleep",
    )  # fmt: skip
    for label, sandbox in (("sentry+plain", True), ("sentry+plain-nosandbox", False)):
        spec = sentry_kernelspec(
            policy=hospital["policy"],
            custodian_key=hospital["key"],
            state_dir=hospital["state"],
            sandbox=sandbox,
            kernel="plain",
        )
        specs[label] = spec
    if args.base:
        from sentry_ab import base_tree

        spec = sentry_kernelspec(
            policy=hospital["policy"],
            custodian_key=hospital["key"],
            state_dir=hospital["state"],
            sandbox=not args.no_sandbox,
        )
        spec["env"] = {**spec.get("env", {}), "PYTHONPATH": str(base_tree(args.base, work))}
        specs["bedside-base"] = spec
    token_file = work / "token"
    token_file.write_text(secrets.token_urlsafe(32))
    results: dict[str, Any] = {
        "benchmark": "bench_gateway",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "enterprise_gateway": "3.3.0",
        "sandbox": not args.no_sandbox,
        "targets": TARGETS,
        "runs": {},
    }
    gateways = {}
    try:
        variants = {"tuned": True} if args.only_tuned else {"stock": False, "tuned": True}
        for variant, nodelay in variants.items():
            settings = GatewaySettings(
                token_file=token_file,
                kernelspecs=specs,
                default_kernel="bedside",
                port=free_port(),
                authorized_users=["bench"],
                nodelay=nodelay,
            )
            gateways[variant] = EnterpriseGateway(
                work / f"eg-{variant}", settings, log_level="WARN"
            )
            gateways[variant].start()
        configs = {
            f"{variant}/{name}": (gateways[variant], name)
            for variant in variants
            for name in ("plain", "bedside")
        }
        if not args.no_attribution:
            for name in ("plain-nosleep", "sentry+plain", "sentry+plain-nosandbox"):
                configs[f"tuned/{name}"] = (gateways["tuned"], name)
        if args.base:
            configs["tuned/bedside-base"] = (gateways["tuned"], "bedside-base")
        results["runs"] = measure_interleaved(configs, cells=cells, big=big, starts=starts)
    finally:
        for eg in gateways.values():
            eg.stop()

    runs = results["runs"]
    # How busy the machine was in each phase (the same for every configuration).
    shares = [run.pop("machine") for run in runs.values()]
    results["machine_share"] = shares[0] if shares else {}
    metrics = {
        "trivial_cell": "trivial_cell_p50_ms",
        "output_1mb": "output_1mb_p50_ms",
        "kernel_start": "kernel_start_p50_ms",
    }
    ratios: dict[str, dict[str, float]] = {}
    for label, (num, den) in {
        # The chain's own cost on the same gateway.
        "bedside_vs_plain_on_tuned_eg": ("tuned/bedside", "tuned/plain"),
        "bedside_vs_plain_on_stock_eg": ("stock/bedside", "stock/plain"),
        # What a custodian moving from stock EG + plain kernel to bedside sees.
        "bedside_tuned_vs_plain_stock_eg": ("tuned/bedside", "stock/plain"),
        # Against a plain kernel that skips its pre-reply sleep too: bedside's own cost alone.
        "bedside_vs_plain_nosleep_on_tuned_eg": ("tuned/bedside", "tuned/plain-nosleep"),
        # With --base: this worktree's sentry against the base revision's, same gateway.
        "bedside_base_vs_plain_on_tuned_eg": ("tuned/bedside-base", "tuned/plain"),
        "bedside_vs_base_on_tuned_eg": ("tuned/bedside", "tuned/bedside-base"),
    }.items():
        if num in runs and den in runs:
            ratios[label] = {m: runs[num][key] / runs[den][key] for m, key in metrics.items()}
    # The same ratios of the best rounds: on a loaded machine the medians carry the load's
    # delays, the best rounds mostly not.
    best: dict[str, float] = {}
    if "tuned/bedside" in runs and "tuned/plain" in runs:
        best = {
            m: runs["tuned/bedside"][key.replace("_p50_", "_min_")]
            / runs["tuned/plain"][key.replace("_p50_", "_min_")]
            for m, key in metrics.items()
        }
    results["ratios"] = ratios
    results["best_round_ratios_on_tuned_eg"] = best
    results["meets_targets"] = {
        m: ratios["bedside_vs_plain_on_tuned_eg"][m] <= t for m, t in TARGETS.items()
    }

    print(f"{'run':<30}{'1+1 p50 ms':>12}{'1 MB p50 ms':>13}{'start p50 ms':>14}")
    for name, run in runs.items():
        print(
            f"{name:<30}{run['trivial_cell_p50_ms']:>12.2f}{run['output_1mb_p50_ms']:>13.1f}"
            f"{run['kernel_start_p50_ms']:>14.0f}"
        )
    print("CPU µs per trivial cell (during it: gateway, launched process, what it started, client;")
    print("  *_all: the kernel's processes over the whole phase, per cell):")
    for name, run in runs.items():
        print(f"  {name:<28}{json.dumps(run['trivial_cell_cpu_us'])}")
    for label, values in ratios.items():
        text = "  ".join(f"{m} {v:.2f}x" for m, v in values.items())
        print(f"{label}: {text}")
    if best:
        text = "  ".join(f"{m} {v:.2f}x" for m, v in best.items())
        print(f"best rounds, bedside vs plain on tuned EG: {text}")
    print(f"machine busy/steal share per phase: {json.dumps(results['machine_share'])}")
    print(f"targets (bedside vs plain, tuned EG): {results['meets_targets']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
