"""Benchmark: where the wall time of one 1 MB output goes, bedside against a plain ipykernel.

Runs `print(TEXT)` (the 1,000,000 characters of `bench/bench_gateway.py`) through the tuned
Enterprise Gateway on a plain ipykernel, the sentry in front of a plain ipykernel (sandboxed) and
the whole chain (sentry → bubblewrap → guarded kernel), one cell of each per round in a shuffled
order, and prints for each the median time of every step after the client sent the request:

  kernel.print / kernel.flushed  the cell's own clock around `print(TEXT); sys.stdout.flush()`
                                 (read back through `user_expressions`): the flush returns once
                                 ipykernel's IOPub thread has handed the message to zmq
  mb.kernel.*                    the guarded kernel's send guard takes the message, has checked
                                 it, has sent it (`BEDSIDE_START_TRACE=1`, kernel/kernel.py)
  mb.sentry.*                    (with the relay thread's CPU since it arrived) the sentry
                                 received it, read and checked its signature, scanned
                                 it (`checked`), had its release prepared, made its receipt,
                                 appended it to the ledger, signed it, sent it (gateway/sentry.py)
  client.stream_readable         the client's socket had bytes of the stream message
  client.stream                  the client had the whole stream message
  client.idle                    the client had the kernel's idle status (what bench_gateway
                                 times)

and the CPU each process used per cell (from /proc: the gateway, the process it launched, what
that one started) with the time its threads spent runnable but waiting for a core (`*_runqueue`:
on a shared two-core machine, the part of the wall time that is the machine's, not the code's),
and the CPU per thread name of the launched process. All clocks are the machine's `time.time()`:
the processes run on one host. The marks cost a few tens of microseconds per traced message and
are off unless the kernelspec sets `BEDSIDE_START_TRACE=1`, as this script does.

`--base main` adds the chain with main's code (PYTHONPATH to main's files, for the sentry and the
kernel behind it), interleaved with the others: a before/after in one run (any revision: main
moves as other branches merge, so a branch's own before is `git merge-base main HEAD`). It runs
every chain without the sandbox, which would give the kernel its own environment. `--untraced`
adds the chain without the marks (what they cost).

Run: .venv/bin/python bench/mb_timeline.py [--rounds 15] [--base main] [--untraced] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_gateway import SETUP_1MB, Kernel, make_hospital  # noqa: E402

from bedside._starttrace import ENV as TRACE_ENV  # noqa: E402
from bedside.gateway.eg import (  # noqa: E402
    EnterpriseGateway,
    GatewaySettings,
    free_port,
    local_kernelspec,
    sentry_kernelspec,
)

CELL = (
    "import sys as _mb_sys, time as _mb_time\n"
    "_mb0 = _mb_time.time()\n"
    "print(TEXT)\n"
    "_mb_sys.stdout.flush()\n"
    "_mb1 = _mb_time.time()"
)
EXPRESSIONS = {"mb": "'%.6f %.6f' % (_mb0, _mb1)"}


class TracedKernel(Kernel):
    def execute_traced(self) -> dict[str, float]:
        """One 1 MB cell; the client's marks (unix times) and the kernel's own two."""
        self.ws.settimeout(120)
        marks = {"client.send": time.time()}
        msg_id = self.send(
            "execute_request",
            {
                "code": CELL,
                "silent": False,
                "store_history": False,
                "user_expressions": EXPRESSIONS,
                "allow_stdin": False,
                "stop_on_error": False,
            },
        )
        idle = replied = False
        readable = 0.0
        while not (idle and replied):
            select.select([self.ws.sock], [], [], 120)
            readable = readable or time.time()
            raw = self.ws.recv()
            got = time.time()
            msg = json.loads(raw)
            if msg["parent_header"].get("msg_id") != msg_id:
                readable = 0.0
                continue
            kind = msg["msg_type"]
            if kind == "stream" and len(raw) > 100_000:
                marks["client.stream_readable"] = readable
                marks["client.stream"] = got
            elif kind == "execute_reply":
                replied = True
                marks["client.execute_reply"] = got
                content = msg["content"]
                if content.get("status") != "ok":
                    raise RuntimeError(f"the cell failed: {content}")
                text = content["user_expressions"]["mb"]["data"]["text/plain"].strip("'\"")
                start, end = (float(v) for v in text.split())
                marks["kernel.print"], marks["kernel.flushed"] = start, end
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
                marks["client.idle"] = got
            readable = 0.0
        if "client.stream" not in marks:
            raise RuntimeError("no 1 MB stream message reached the client")
        return marks


def base_package(rev: str, into: Path) -> Path:
    """The `bedside` package as it is at git revision `rev`, laid out under `into` for
    PYTHONPATH (the editable install maps bedside.gateway to gateway/ and so on), with this
    checkout's compiled scanner (built from policy/_scanner.c: `rev` must have the same one)."""
    root = Path(__file__).resolve().parents[1]
    tree = into / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", rev], check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    package = into / "bedside"
    shutil.copytree(tree / "bedside", package)
    for part in ("extension", "gateway", "kernel", "ledger", "policy"):
        shutil.copytree(tree / part, package / part)
    for built in (root / "policy").glob("_scanner*.so"):
        shutil.copy2(built, package / "policy" / built.name)
    return into


def schedstat(pid: int) -> tuple[int, int]:
    """(CPU ns, ns spent runnable but waiting for a core) of a process, all its threads."""
    used = waited = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "schedstat").read_text().split()
            used, waited = used + int(fields[0]), waited + int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    return used, waited


def threads(pids: list[int]) -> dict[str, int]:
    """CPU ns of the threads of `pids` by thread name (`comm`, numbered names merged)."""
    out: dict[str, int] = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                comm = (task / "comm").read_text().strip().rstrip("0123456789").rstrip("_/-")
                used = int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            out[comm] = out.get(comm, 0) + used
    return out


def trace_marks(log: Path, offset: int) -> tuple[list[tuple[str, float, float]], int]:
    """(label, unix time, process CPU seconds) of the trace lines written since `offset`."""
    data = log.read_bytes()
    out = []
    for line in data[offset:].decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "bedside-start-trace" and parts[1].startswith("mb."):
            out.append((parts[1], float(parts[2]), float(parts[4])))
    return out, len(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-sandbox", action="store_true")
    parser.add_argument("--untraced", action="store_true",
                        help="also run the chain without the trace, interleaved")  # fmt: skip
    parser.add_argument("--base", default=None, help="also run the chain with this git "
                        "revision's sentry (e.g. main), interleaved")  # fmt: skip
    parser.add_argument(
        "--perf", type=Path, default=None, help="perf record the chain's sentry into this file"
    )
    args = parser.parse_args()

    if args.base:
        # The sandbox gives the kernel an environment of its own and binds the packages the
        # sentry imports: a sentry of `--base` would leave its kernel without this checkout's.
        # Without the sandbox the kernel inherits PYTHONPATH, so the whole chain is `--base`'s.
        args.no_sandbox = True
    work = Path(tempfile.mkdtemp(prefix="bedside-mb-timeline-"))
    hospital = make_hospital(work / "hospital")
    common = {"policy": hospital["policy"], "custodian_key": hospital["key"],
              "state_dir": hospital["state"], "sandbox": not args.no_sandbox}  # fmt: skip
    specs = {
        "plain": local_kernelspec(
            [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "plain"
        ),
        "sentry+plain": sentry_kernelspec(**common, kernel="plain"),
        "bedside": sentry_kernelspec(**common),
    }
    for spec in specs.values():  # Enterprise Gateway passes a kernelspec's env to the kernel
        spec["env"] = {TRACE_ENV: "1"}
    if args.untraced:
        # The chain without the marks: what they cost (its timeline has the client's marks only).
        specs["bedside-untraced"] = sentry_kernelspec(**common)
    if args.base:
        # The same chain (sentry and guarded kernel) with the code of `--base`.
        label = f"bedside@{args.base}"
        base = sentry_kernelspec(**common)
        base["env"] = {TRACE_ENV: "1", "PYTHONPATH": str(base_package(args.base, work / "base"))}
        specs[label] = base
    token_file = work / "token"
    token_file.write_text(secrets.token_urlsafe(32))
    settings = GatewaySettings(token_file=token_file, kernelspecs=specs, default_kernel="bedside",
                               port=free_port(), authorized_users=["bench"])  # fmt: skip
    eg = EnterpriseGateway(work / "eg", settings, log_level="WARN")
    steps: dict[str, dict[str, list[float]]] = {name: {} for name in specs}
    cpu: dict[str, dict[str, list[float]]] = {name: {} for name in specs}
    relay_cpu: dict[str, dict[str, list[float]]] = {name: {} for name in specs}
    by_thread: dict[str, dict[str, list[float]]] = {name: {} for name in specs}
    eg.start()
    kernels: dict[str, TracedKernel] = {}
    try:
        for name in specs:
            kernels[name] = TracedKernel(eg, name)
            for _ in range(3):
                kernels[name].execute("1 + 1")
            assert kernels[name].execute(SETUP_1MB)[2] == "ok"
            kernels[name].execute_traced()  # warm-up
        procs = {name: k.processes() for name, k in kernels.items()}

        def snap(name: str) -> dict[str, int]:
            out: dict[str, int] = {}
            groups = {"gateway": [kernels[name].eg_pid], **procs[name]}
            for part, pids in groups.items():
                stats = [schedstat(p) for p in pids]
                out[part] = sum(u for u, _ in stats)
                out[f"{part}_runqueue"] = sum(w for _, w in stats)
            return out

        recorder = None
        if args.perf:
            # perf over the chain's sentry for the measured cells (its threads by tid).
            sentry = procs["bedside"]["launched"][0]
            recorder = subprocess.Popen(
                ["perf", "record", "-F", "4000", "-p", str(sentry), "-o", str(args.perf)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.5)
        # Each round in a shuffled order (fixed seed): a rotation keeps the cyclic order, so
        # each configuration would always follow the same one and inherit its after-cell work.
        shuffle = random.Random(7).shuffle
        for _ in range(args.rounds):
            order = list(specs)
            shuffle(order)
            for name in order:
                time.sleep(0.15)  # the sentry's ledger flush after the last cell
                offset = eg.log_file.stat().st_size
                before = snap(name)
                threads_before = threads(procs[name]["launched"])
                marks = kernels[name].execute_traced()
                after = snap(name)
                for comm, used in threads(procs[name]["launched"]).items():
                    spent = (used - threads_before.get(comm, 0)) / 1e6
                    by_thread[name].setdefault(comm, []).append(spent)
                time.sleep(0.02)
                traced, _ = trace_marks(eg.log_file, offset)
                t0 = marks["client.send"]
                seen: dict[str, float] = {}
                first_cpu: float | None = None
                for label, stamp, used in traced:
                    if label in seen:
                        continue
                    seen[label] = stamp
                    if label.startswith("mb.sentry."):
                        # The relay thread's CPU since the message arrived.
                        first_cpu = used if first_cpu is None else first_cpu
                        relay_cpu[name].setdefault(label, []).append((used - first_cpu) * 1e3)
                seen.update(marks)
                for label, stamp in seen.items():
                    steps[name].setdefault(label, []).append((stamp - t0) * 1e3)
                for part in before:
                    cpu[name].setdefault(part, []).append((after[part] - before[part]) / 1e6)
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(60)
    finally:
        for kernel in kernels.values():
            kernel.close()
        eg.stop()

    result: dict[str, Any] = {"benchmark": "mb_timeline", "rounds": args.rounds, "runs": {},
                              "cpu_ms": {}, "samples": steps}  # fmt: skip
    for name, labels in steps.items():
        medians = {label: statistics.median(v) for label, v in labels.items()}
        result["runs"][name] = dict(sorted(medians.items(), key=lambda kv: kv[1]))
        result["cpu_ms"][name] = {p: statistics.median(v) for p, v in cpu[name].items()}
        print(f"\n{name} (median ms after the client sent the request; {args.rounds} cells)")
        relay = {label: statistics.median(v) for label, v in relay_cpu[name].items()}
        result.setdefault("relay_thread_cpu_ms", {})[name] = relay
        previous = 0.0
        for label, ms in result["runs"][name].items():
            used = f"  relay thread CPU {relay[label]:5.2f}" if label in relay else ""
            print(f"  {ms:8.2f}  (+{ms - previous:6.2f})  {label:28s}{used}")
            previous = ms
        used = "  ".join(f"{p} {v:.2f}" for p, v in result["cpu_ms"][name].items())
        print(f"  CPU ms per cell (median): {used}")
        mine = {c: statistics.median(v) for c, v in by_thread[name].items()}
        result.setdefault("launched_threads_cpu_ms", {})[name] = mine
        used = "  ".join(f"{c} {v:.2f}" for c, v in sorted(mine.items(), key=lambda kv: -kv[1]))
        print(f"  the launched process's threads, CPU ms per cell (median): {used}")
    # The chain's CPU per cell (gateway, launched process and what it started): on a machine
    # whose two cores the whole chain shares, the wall time cannot fall much below it / 2.
    chain = {n: sum(v for p, v in c.items() if not p.endswith("_runqueue"))
             for n, c in result["cpu_ms"].items()}  # fmt: skip
    result["chain_cpu_ms"] = chain
    for name in chain:
        if name != "plain":
            result[f"cpu_ratio_{name}_vs_plain"] = chain[name] / chain["plain"]
    print("\nthe chain's CPU ms per cell: " + "  ".join(f"{n} {v:.1f}" for n, v in chain.items()))
    idle = {n: r["client.idle"] for n, r in result["runs"].items()}
    result["ratio_bedside_vs_plain"] = idle["bedside"] / idle["plain"]
    result["ratio_sentry_plain_vs_plain"] = idle["sentry+plain"] / idle["plain"]
    for name in idle:
        if name.startswith("bedside@"):
            result[f"ratio_{name}_vs_plain"] = idle[name] / idle["plain"]
            print(f"until idle: {name}/plain {idle[name] / idle['plain']:.2f}x")
    print(f"\nuntil idle: bedside/plain {result['ratio_bedside_vs_plain']:.2f}x, "
          f"sentry+plain/plain {result['ratio_sentry_plain_vs_plain']:.2f}x")  # fmt: skip
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
