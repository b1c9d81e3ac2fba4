"""Benchmark: where a kernel start through Enterprise Gateway spends its time.

Starts kernels through the bedside-tuned gateway (a plain ipykernel, the sentry in front of a
plain ipykernel in the sandbox, and the whole chain: sentry + sandbox + guarded kernel), in
turn, and prints for each the median time of every step after the client's POST /api/kernels:
the sentry's process start and imports, the sandbox's spawn, the kernel's process start,
imports, policy and sockets, the kernel's first kernel_info_reply, the sentry's first relayed
kernel message, and the client's view (POST answered, websocket open, kernel_info_reply
received, and the reply to a first `1 + 1` sent at once, which on the guarded kernel also waits
for its guard to be armed). The chain's steps come from `BEDSIDE_START_TRACE=1`
(`bedside._starttrace`), written to the gateway's log with each process's CPU time (the
sentry marks `sentry.guard_ready` and `sentry.first_kernel_message`). Wall-clock steps on a
shared machine are noisy: compare the configurations of one run, not runs with each other.

Run: .venv/bin/python bench/start_timeline.py [--rounds 7] [--out start-timeline.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import websocket

sys.path.insert(0, str(Path(__file__).parent))

from bench_gateway import make_hospital  # noqa: E402

from bedside._starttrace import ENV as TRACE_ENV  # noqa: E402
from bedside.gateway.eg import (  # noqa: E402
    EnterpriseGateway,
    GatewaySettings,
    free_port,
    local_kernelspec,
    sentry_kernelspec,
)


def kernel_info(ws: websocket.WebSocket, session: str) -> str:
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "bench",
              "session": session, "version": "5.3", "date": ""}  # fmt: skip
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": {},
                        "channel": "shell", "buffers": []}))  # fmt: skip
    return msg_id


def start_once(eg: EnterpriseGateway, name: str) -> tuple[dict[str, float], str]:
    """Client-side marks (unix times) of one start, and the kernel id (still running)."""
    marks = {"client.post": time.time()}
    model = eg.api("POST", "/api/kernels", {"name": name, "env": {"KERNEL_USERNAME": "bench"}})
    marks["client.post_answered"] = time.time()
    ws = websocket.create_connection(
        f"{eg.ws_url}/api/kernels/{model['id']}/channels",
        header=[f"Authorization: token {eg.token}"],
        timeout=120,
    )
    marks["client.ws_open"] = time.time()
    session = uuid.uuid4().hex
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msg_id = kernel_info(ws, session)
        ws.settimeout(2)
        try:
            while json.loads(ws.recv())["parent_header"].get("msg_id") != msg_id:
                pass
            break
        except websocket.WebSocketTimeoutException:
            continue
    marks["client.kernel_info_reply"] = time.time()
    # The first cell right away: on the guarded kernel it also waits for the guard to be armed.
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench",
              "session": session, "version": "5.3", "date": ""}  # fmt: skip
    content = {"code": "1 + 1", "silent": False, "store_history": False, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}  # fmt: skip
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                        "content": content, "channel": "shell", "buffers": []}))  # fmt: skip
    ws.settimeout(120)
    while True:
        msg = json.loads(ws.recv())
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
            break
    marks["client.first_cell_reply"] = time.time()
    ws.close()
    return marks, model["id"]


def trace_marks(log: Path, offset: int) -> tuple[list[tuple[str, float]], int]:
    data = log.read_bytes()
    out = []
    for line in data[offset:].decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "bedside-start-trace":
            out.append((parts[1], float(parts[2])))
            out.append((f"{parts[1]} [cpu ms]", float(parts[4])))
    return out, len(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("start-timeline.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bedside-timeline-"))
    hospital = make_hospital(work / "hospital")
    common = {"policy": hospital["policy"], "custodian_key": hospital["key"],
              "state_dir": hospital["state"]}  # fmt: skip
    specs = {
        "plain": local_kernelspec(
            [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "plain"
        ),
        "sentry+plain": sentry_kernelspec(**common, kernel="plain"),
        "bedside": sentry_kernelspec(**common),
    }
    for spec in specs.values():  # Enterprise Gateway passes a kernelspec's env to the kernel
        spec["env"] = {TRACE_ENV: "1"}
    token_file = work / "token"
    token_file.write_text(secrets.token_urlsafe(32))
    settings = GatewaySettings(token_file=token_file, kernelspecs=specs, default_kernel="bedside",
                               port=free_port(), authorized_users=["bench"])  # fmt: skip
    eg = EnterpriseGateway(work / "eg", settings, log_level="WARN")
    steps: dict[str, dict[str, list[float]]] = {name: {} for name in specs}
    eg.start()
    try:
        offset = eg.log_file.stat().st_size
        for name in specs:  # warm-up: the sentry remembers the policy's launch view
            _, kid = start_once(eg, name)
            eg.api("DELETE", f"/api/kernels/{kid}")
        for r in range(args.rounds):
            order = list(specs)[r % len(specs) :] + list(specs)[: r % len(specs)]
            for name in order:
                time.sleep(0.3)
                offset = eg.log_file.stat().st_size
                marks, kid = start_once(eg, name)
                time.sleep(0.05)
                traced, offset = trace_marks(eg.log_file, offset)
                eg.api("DELETE", f"/api/kernels/{kid}")
                t0 = marks["client.post"]
                seen: dict[str, float] = {}
                for label, stamp in traced:
                    seen.setdefault(label, stamp)
                seen.update(marks)
                for label, stamp in seen.items():
                    value = stamp if label.endswith("[cpu ms]") else stamp - t0
                    steps[name].setdefault(label, []).append(value * 1e3)
    finally:
        eg.stop()
    result: dict[str, Any] = {"benchmark": "start_timeline", "rounds": args.rounds, "runs": {},
                              "samples": steps}  # fmt: skip
    for name, labels in steps.items():
        medians = {label: statistics.median(v) for label, v in labels.items()}
        cpu = {k: v for k, v in medians.items() if k.endswith("[cpu ms]")}
        result["runs"][name] = dict(sorted(medians.items(), key=lambda kv: kv[1]))
        print(f"\n{name} (median ms after POST; the process's CPU ms so far; {args.rounds} starts)")
        for label, ms in result["runs"][name].items():
            if label not in cpu:
                used = cpu.get(f"{label} [cpu ms]")
                print(f"  {ms:8.0f}  {label:32s}" + (f" {used:6.0f}" if used is not None else ""))
    ready = {n: r["client.kernel_info_reply"] for n, r in result["runs"].items()}
    result["start_ratio_bedside_vs_plain"] = ready["bedside"] / ready["plain"]
    result["start_ratio_sentry_plain_vs_plain"] = ready["sentry+plain"] / ready["plain"]
    print(f"\nstart ratio bedside/plain {result['start_ratio_bedside_vs_plain']:.2f}x, "
          f"sentry+plain/plain {result['start_ratio_sentry_plain_vs_plain']:.2f}x")  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
