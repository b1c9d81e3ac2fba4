"""The sentry's own CPU per message, without sockets, kernels or a busy machine in the way.

Builds a real `Sentry` (policy, identifier index, guard, hospital ledger, custodian key) but no
kernel and no ports, then replays the wire trace of a trivial cell (`1 + 1`: the client's
execute_request; the kernel's busy, execute_input, execute_result, execute_reply, idle, signed
with the inner key as ipykernel signs them) through `_from_client` / `_from_kernel`, capturing
what would be sent. Reports the relay thread's CPU time per cell and per message (and the
process's, with the worker thread that prepares large releases, and the wall time until the
last message is sent, before the durable flush); the same trace runs under cProfile
(`--profile FILE`) or callgrind: instructions per cell are the difference of two runs
(`valgrind --tool=callgrind --callgrind-out-file=N.out .venv/bin/python bench/sentry_trace.py
--no-flush --rows 200 --cells N` for two values of N), which no load on the machine changes.

    .venv/bin/python bench/sentry_trace.py [--cells 2000] [--output-bytes 1000000]
        [--profile FILE] [--stub-scan] [--out FILE]

`--stub-scan` replaces the text scanner with one that finds nothing at no cost: the difference
to a normal run is the scan's share (bedside.policy.scan_text), the rest is the relay's own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "gateway"))

from _report import emit
from _sentry_support import in_process_sentry, make_hospital, make_patients  # noqa: E402
from jupyter_client.session import Session  # noqa: E402

from bedside.gateway.sentry import Sentry  # noqa: E402


def build(root: Path, cells: int, rows: int = 2000) -> tuple[Sentry, Session, Session]:
    # An egress budget no run reaches: past it every output would be blocked, and a run of
    # megabyte outputs would time the notice path instead of the release.
    hospital = make_hospital(
        root,
        frame=make_patients(rows),
        max_output_bytes=2_000_000,
        max_cells=cells + 100,
        egress=10**12,
    )
    return in_process_sentry(hospital, root, copy=False)


WORDS = "cohort analysis survival model baseline outcome ward median interval".split()


def cell_trace(
    client: Session, kernel: Session, count: int, output_bytes: int = 0
) -> tuple[list[bytes], list[tuple]]:
    """(the client's execute_request frames, the kernel's (channel, frames) in order).

    With `output_bytes`, the cell prints that much ordinary text (one stream message) instead
    of returning `2`: the 1 MB output of bench_gateway, released after a full scan.
    """
    request = client.msg(
        "execute_request",
        {
            "code": "1 + 1",
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": True,
            "stop_on_error": True,
        },
        metadata={"cellId": uuid.uuid4().hex},
    )
    request_frames = [b"client-ident", *client.serialize(request)]
    parent = request["header"]
    out: list[tuple[str, list[bytes]]] = []

    def add(channel: str, msg_type: str, content: dict, metadata: dict | None = None) -> None:
        msg = kernel.msg(msg_type, content, parent=parent, metadata=metadata)
        prefix = [f"kernel.x.{msg_type}".encode()] if channel == "iopub" else [b"client-ident"]
        out.append((channel, [*prefix, *kernel.serialize(msg)]))

    add("iopub", "status", {"execution_state": "busy"})
    add("iopub", "execute_input", {"code": "1 + 1", "execution_count": count})
    if output_bytes:
        text = " ".join(WORDS[i % len(WORDS)] for i in range(output_bytes // 5))[:output_bytes]
        add("iopub", "stream", {"name": "stdout", "text": text + "\n"})
    else:
        add("iopub", "execute_result", {"data": {"text/plain": "2"}, "metadata": {},
                                        "execution_count": count})  # fmt: skip
    add(
        "shell",
        "execute_reply",
        {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []},
        {
            "started": "2026-11-29T21:00:00.123456Z",
            "dependencies_met": True,
            "engine": str(uuid.uuid4()),
            "status": "ok",
        },
    )
    add("iopub", "status", {"execution_state": "idle"})
    return request_frames, out


def run(
    sentry: Sentry, traces: list[tuple[list[bytes], list[tuple]]], timings: dict[str, list[float]]
) -> list[float]:
    """Replay the traces; per cell the relay thread's CPU time (returned), and in `timings`
    the process's CPU time (the relay's worker thread included) and the wall time."""
    per_cell = []
    for request, replies in traces:
        start, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
        sentry._from_client("shell", request)
        for channel, frames in replies:
            sentry._from_kernel(channel, frames)
        timings.setdefault("wall", []).append(time.perf_counter() - wall)
        # What a socket sends is gone once sent: counted and dropped, so that the replay does
        # not keep every cell's megabyte (fresh memory, and its page faults, for every cell).
        for sock in sentry._sockets.values():  # type: ignore[attr-defined]
            timings.setdefault("sent", [0])[0] += len(sock.sent)
            sock.sent.clear()
        sentry.ledger.flush_if_due(force=True)
        per_cell.append(time.thread_time() - start)
        timings.setdefault("process", []).append(time.process_time() - process)
    return per_cell


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--profile", type=Path, help="write a cProfile (thread CPU time) here")
    parser.add_argument("--no-flush", action="store_true", help="leave out the durable flush")
    parser.add_argument(
        "--output-bytes", type=int, default=0, help="print this much text instead of `1 + 1`"
    )
    parser.add_argument("--rows", type=int, default=2000, help="patients in the index")
    parser.add_argument(
        "--stub-scan",
        action="store_true",
        help="attribution only: the text scanner finds nothing at no cost (the rest of the path)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bedside-trace-") as tmp:
        sentry, client, kernel = build(Path(tmp), args.cells, args.rows)
        size = args.output_bytes
        warm = [cell_trace(client, kernel, i, size) for i in range(1, 51 if not size else 4)]
        traces = [cell_trace(client, kernel, i, size) for i in range(51, 51 + args.cells)]
        if args.stub_scan:
            sentry.guard.scan = lambda text: None
        if args.no_flush:
            sentry.ledger.flush_if_due = lambda force=False: None  # type: ignore[method-assign]
        run(sentry, warm, {})
        timings: dict[str, list[float]] = {}
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            times = run(sentry, traces, timings)
            profiler.disable()
            profiler.dump_stats(args.profile)
        else:
            times = run(sentry, traces, timings)
        sent = int(timings["sent"][0])
        messages = 1 + len(traces[0][1])
        assert sent == messages * args.cells, (sent, messages * args.cells)
        sentry.ledger.close()
    total = sum(times)
    report = {
        "benchmark": "sentry_trace",
        "cells": args.cells,
        "output_bytes": args.output_bytes,
        "scan": "stubbed" if args.stub_scan else "policy",
        "messages_per_cell": messages,
        "cpu_us_per_cell_mean": round(total / args.cells * 1e6, 1),
        "cpu_us_per_cell_p50": round(statistics.median(times) * 1e6, 1),
        "cpu_us_per_message": round(total / args.cells / messages * 1e6, 1),
        # With the relay's worker thread (large outputs are encoded and hashed there while
        # the guard scans), and the wall time of a cell on an otherwise idle second core.
        "process_cpu_us_per_cell_p50": round(statistics.median(timings["process"]) * 1e6, 1),
        "wall_us_per_cell_p50": round(statistics.median(timings["wall"]) * 1e6, 1),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
