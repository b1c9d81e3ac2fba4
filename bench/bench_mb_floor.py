"""Benchmark: the least a sentry must add to a 1 MB output, against what issue #4's target allows.

The target is bedside ≤ 1.3× plain for `print(TEXT)` of 1,000,000 characters through the tuned
Enterprise Gateway (`bench/bench_gateway.py`), so bedside may add 0.3 × the plain path. This
script measures, in one run and on this machine, the plain path and the work that no arrangement
of the sentry can take off a released megabyte's path, and prints the two side by side:

  plain            p50 of `print(TEXT)` until idle, plain ipykernel behind the tuned gateway
  ipc hop          one 1 MB message (its two frames) over a zmq ipc socket between two idle
                   processes: the hop the issue asks for (kernel → sentry over ipc), which the
                   plain path does not make
  scan             the sentry's own scanner (`policy_scanner`, bench_gateway's hospital) on the
                   text: wall with its threads, and its CPU
  hmac             HMAC-SHA256 of the message's content: the formats need three such passes in
                   the sentry (the kernel's signature checked, the commitment, the client-side
                   signature made)
  json             orjson's read of the content frame (the sentry must read what it scans)
  write            the content's bytes written to a file (the opening must be in the hospital's
                   openings file before the output is released, so that a sentry crash loses
                   nothing; written raw here, where bedside writes it base64-encoded)

The floor is `ipc hop + (scan CPU + 3 × hmac + json + write) / 2`: every byte's required work spread
perfectly over both cores while nothing else runs, no copies, no interpreter, no ledger write,
no hand-over between threads, and the guarded kernel's own check left out. It is a lower bound
on what the sentry adds, not an estimate of it. bench_gateway's bedside p50 minus the plain p50
is what it adds in fact.

Run: .venv/bin/python bench/bench_mb_floor.py [--rounds 12] [--out FILE]  (make bench runs it)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import zmq

sys.path.insert(0, str(Path(__file__).parent))

from bench_gateway import SETUP_1MB, Kernel, make_hospital  # noqa: E402

from bedside.gateway._boundary import policy_scanner  # noqa: E402
from bedside.gateway.eg import EnterpriseGateway, GatewaySettings, free_port, local_kernelspec  # noqa: E402
from bedside.policy import load_policy  # noqa: E402

TARGET = 1.3


def text() -> str:
    namespace: dict[str, Any] = {}
    exec(SETUP_1MB.rsplit("\n", 1)[0], namespace)  # the setup cell without its last line
    return str(namespace["TEXT"]) + "\n"


def content_frame(body: str) -> bytes:
    return orjson.dumps({"name": "stdout", "text": body})


def _echo(address: str, n: int) -> None:
    """The receiving end of the ipc hop: takes each message and says so."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(address)
    push = ctx.socket(zmq.PUSH)
    push.connect(address + "-ack")
    for _ in range(n):
        pull.recv_multipart(copy=False)
        push.send(b"")
    ctx.destroy(linger=0)


def ipc_hop_ms(frame: bytes, rounds: int, work: Path) -> list[float]:
    """One-way time of a 1 MB two-frame message over zmq ipc, sender to an idle receiver (the
    round trip less the empty answer's trip, measured alone)."""
    address = f"ipc://{work}/hop"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.bind(address)
    ack = ctx.socket(zmq.PULL)
    ack.bind(address + "-ack")
    n = rounds * 2 + 10
    child = multiprocessing.get_context("spawn").Process(target=_echo, args=(address, n))
    child.start()
    header = orjson.dumps({"msg_id": secrets.token_hex(16), "msg_type": "stream"})
    times_big, times_small = [], []
    try:
        for i in range(n):
            parts = [header, frame] if i % 2 else [header, b"{}"]
            time.sleep(0.02)
            start = time.perf_counter()
            push.send_multipart(parts)
            ack.recv()
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= 10:
                (times_big if i % 2 else times_small).append(elapsed)
    finally:
        child.join(timeout=30)
        ctx.destroy(linger=0)
    small = statistics.median(times_small)
    return [t - small for t in times_big]


def timed(fn: Any, n: int) -> tuple[float, float]:
    """(wall p50 ms, CPU ms per call of this process's threads)."""
    walls = []
    cpu0 = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - start) * 1e3)
    return statistics.median(walls), (time.process_time() - cpu0) / n * 1e3


def plain_p50_ms(work: Path, rounds: int) -> list[float]:
    token = work / "token"
    token.write_text(secrets.token_urlsafe(32))
    spec = local_kernelspec(
        [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "plain"
    )
    settings = GatewaySettings(
        token_file=token,
        kernelspecs={"plain": spec},
        default_kernel="plain",
        port=free_port(),
        authorized_users=["bench"],
        nodelay=True,
    )
    eg = EnterpriseGateway(work / "eg", settings, log_level="WARN")
    eg.start()
    try:
        kernel = Kernel(eg, "plain")
        try:
            for _ in range(3):
                kernel.execute("1 + 1")
            kernel.execute(SETUP_1MB)
            times = []
            for _ in range(rounds):
                time.sleep(0.05)
                seconds, size, status = kernel.execute("print(TEXT)")
                assert status == "ok" and size >= 1_000_000
                times.append(seconds * 1e3)
            return times
        finally:
            kernel.close()
    finally:
        eg.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bedside-floor-"))
    hospital = make_hospital(work / "hospital")
    body = text()
    frame = content_frame(body)
    key = secrets.token_bytes(32)

    print("plain 1 MB through the tuned gateway ...", file=sys.stderr, flush=True)
    plain = plain_p50_ms(work, args.rounds)
    print("ipc hop ...", file=sys.stderr, flush=True)
    hop = ipc_hop_ms(frame, args.rounds * 3, work)
    scan, _ = policy_scanner(load_policy(hospital["policy"]))
    for _ in range(3):
        scan(body)
    n = args.rounds * 3
    scan_wall, scan_cpu = timed(lambda: scan(body), n)
    _, hmac_cpu = timed(lambda: hmac.new(key, frame, hashlib.sha256).digest(), n)
    _, json_cpu = timed(lambda: orjson.loads(frame), n)
    openings = work / "openings"

    def write() -> None:
        with openings.open("ab") as f:
            f.write(frame)
        if openings.stat().st_size > 64_000_000:
            openings.unlink()

    write_wall, _ = timed(write, n)

    plain_ms = statistics.median(plain)
    hop_ms = statistics.median(hop)
    floor = hop_ms + (scan_cpu + 3 * hmac_cpu + json_cpu + write_wall) / 2
    allowed = (TARGET - 1) * plain_ms
    result = {
        "benchmark": "bench_mb_floor",
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "plain_p50_ms": round(plain_ms, 2),
        "ipc_hop_ms": round(hop_ms, 3),
        "scan_wall_ms": round(scan_wall, 3),
        "scan_cpu_ms": round(scan_cpu, 3),
        "hmac_1mb_ms": round(hmac_cpu, 3),
        "json_read_ms": round(json_cpu, 3),
        "opening_write_ms": round(write_wall, 3),
        "floor_added_ms": round(floor, 2),
        "allowed_added_ms": round(allowed, 2),
        "floor_ratio": round((plain_ms + floor) / plain_ms, 3),
        "target": TARGET,
    }
    print(
        f"plain 1 MB p50 {plain_ms:.2f} ms: the 1.3x target lets bedside add {allowed:.2f} ms\n"
        f"ipc hop {hop_ms:.2f} ms, scan {scan_cpu:.2f} ms CPU ({scan_wall:.2f} wall), "
        f"HMAC {hmac_cpu:.2f} ms x3, JSON read {json_cpu:.2f} ms, "
        f"opening write {write_wall:.2f} ms\n"
        f"floor of what the sentry adds: {floor:.2f} ms -> at best {result['floor_ratio']:.2f}x "
        f"plain (target {TARGET}x)"
    )
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
