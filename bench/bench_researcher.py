"""Researcher-side latency: a trivial cell and a 1 MB output, JupyterLab's path end to end.

Four paths, each driven over `/api/kernels/{id}/channels` with the server token as JupyterLab
drives it (TCP_NODELAY on the client, as browsers set it):

- local:   stock jupyter_server → local ipykernel
- local-nodelay: the same with the bedside extension loaded but no gateway (Nagle off)
- stock:   stock jupyter_server → stock Enterprise Gateway (Nagle on) → plain ipykernel
- bedside: jupyter_server + bedside extension → bedside gateway → sentry → sandbox → guarded kernel
- bedside-noext: stock jupyter_server → the same bedside gateway (isolates the extension's cost:
  receipt checks, researcher signatures and the ledger copy, per cell)

All five run side by side and take turns, a block of cells each (`BLOCK`; trivial cells, then
1 MB cells), so that the machine's load falls on all alike. Prints a JSON document with medians
and best rounds (ms) and the ratios the issue sets targets for; with --out it also writes it to
a file. It also
reports the CPU time per cell of each process of the chain (`trivial_cpu_ms_by_process`,
`one_mb_cpu_ms_by_process`: jupyter_server, gateway, sentry, kernel; from /proc/<pid>/stat of
jupyter_server, the gateway and their descendants, counted around each configuration's own
cells), which a loaded machine does not inflate the way it does wall-clock medians.
Run: `.venv/bin/python bench/bench_researcher.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from bedside.extension._headless import KernelSession, ResearcherServer
from bedside.gateway.eg import (
    EnterpriseGateway,
    GatewaySettings,
    free_port,
    local_kernelspec,
    sentry_kernelspec,
)
from bedside.ledger import Signer

TRIVIAL = "1 + 1"
ONE_MB = "print('x' * 1_000_000)"
USER = "bench"


def hospital(root: Path) -> tuple[Path, Path]:
    subprocess.run(
        [sys.executable, "-m", "bedside", "demo-data", "--out", str(root / "hospital"),
         "--patients", "300", "--seed", "3"],
        check=True, capture_output=True,
    )  # fmt: skip
    policy = root / "hospital" / "policy.yaml"
    doc = yaml.safe_load(policy.read_text())
    doc["outputs"]["max_output_bytes"] = 4_000_000  # a 1 MB output must pass
    doc["outputs"]["session_egress_bytes"] = 2_000_000_000
    policy.write_text(yaml.safe_dump(doc))
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    key = root / "secrets" / "custodian.key"
    key.parent.mkdir(mode=0o700)
    Signer.generate("bench-custodian").save(key)
    return policy, key


@contextmanager
def gateway(home: Path, specs: dict[str, Any], default: str, nodelay: bool) -> Iterator[Any]:
    token_file = home / "token"
    home.mkdir(parents=True)
    token_file.write_text(secrets.token_urlsafe(32))
    token_file.chmod(0o600)
    settings = GatewaySettings(
        token_file=token_file,
        kernelspecs=specs,
        default_kernel=default,
        port=free_port(),
        authorized_users=[USER],
        nodelay=nodelay,
    )
    eg = EnterpriseGateway(home / "home", settings, log_file=home / "eg.log", log_level="WARN")
    eg.start(timeout=120)
    try:
        yield eg
    finally:
        eg.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc), robust to a loaded machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _role(pid: int) -> str:
    try:
        cmd = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return "gone"
    for needle, role in (
        ("bwrap", "sandbox"),
        ("bedside.gateway", "sentry"),
        ("sentry", "sentry"),
        ("enterprise_gateway", "gateway"),
        ("jupyter-enterprisegateway", "gateway"),
        ("jupyter_server", "jupyter_server"),
        ("jupyter-server", "jupyter_server"),
        ("kernel", "kernel"),
    ):
        if needle in cmd:
            return role
    return "other"


def process_cpu(roots: list[int]) -> dict[str, float]:
    """CPU seconds so far of `roots` and all their descendants, summed by role (/proc)."""
    kids = _children()
    out: dict[str, float] = {}
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(kids.get(pid, []))
        try:
            cpu = cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue
        role = _role(pid)
        out[role] = out.get(role, 0.0) + cpu
    return out


class Probe:
    """One configuration under measurement: its server, a kernel session, and what it took.

    The configurations run side by side and take turns (`measure`), so that a change in the
    machine's load falls on all of them alike."""

    def __init__(self, server: ResearcherServer, kernel: str, roots: list[int]) -> None:
        assert server.proc is not None
        self.server, self.kernel = server, kernel
        self.pid = server.proc.pid
        self.roots = [self.pid, *roots]
        self.client = KernelSession(server.url, server.token)
        self.wall: dict[str, list[float]] = {"trivial": [], "one_mb": []}
        self.cpu: dict[str, dict[str, float]] = {"trivial": {}, "one_mb": {}}

    async def start(self) -> None:
        await self.client.start("bench.ipynb", self.kernel)
        await self.client.request("kernel_info_request", {}, timeout=180)
        for _ in range(3):
            await self.client.execute(TRIVIAL)
        await self.client.execute(ONE_MB)

    async def cell(self, label: str) -> None:
        cpu0 = process_cpu(self.roots)
        t = time.perf_counter()
        reply, iopub = await self.client.execute(TRIVIAL if label == "trivial" else ONE_MB)
        self.wall[label].append((time.perf_counter() - t) * 1000)
        cpu1 = process_cpu(self.roots)
        assert reply["content"]["status"] == "ok", reply["content"]
        if label == "one_mb":
            text = "".join(m["content"].get("text", "") for m in iopub
                           if m["header"]["msg_type"] == "stream")  # fmt: skip
            assert len(text) >= 1_000_000, f"1 MB output did not arrive ({len(text)} bytes)"
        spent = self.cpu[label]
        for role, seconds in cpu1.items():
            spent[role] = spent.get(role, 0.0) + seconds - cpu0.get(role, 0.0)

    def result(self) -> dict[str, Any]:
        small, big = self.wall["trivial"], self.wall["one_mb"]

        def per_cell(label: str, role: str | None = None) -> dict[str, float] | float:
            n = len(self.wall[label])
            if role is not None:
                return self.cpu[label].get(role, 0.0) / n * 1000
            return {r: round(v / n * 1000, 2) for r, v in sorted(self.cpu[label].items())}

        return {
            "trivial_ms": statistics.median(small),
            "trivial_best_ms": min(small),
            "one_mb_ms": statistics.median(big),
            "one_mb_best_ms": min(big),
            # CPU of the researcher's jupyter_server per cell (the browser-facing side's cost)
            "server_cpu_trivial_ms": per_cell("trivial", "jupyter_server"),
            "server_cpu_one_mb_ms": per_cell("one_mb", "jupyter_server"),
            # CPU ms per cell of each process of the chain (/proc/<pid>/stat, descendants of
            # jupyter_server and of the gateway, by role)
            "trivial_cpu_ms_by_process": per_cell("trivial"),
            "one_mb_cpu_ms_by_process": per_cell("one_mb"),
            "n": [len(small), len(big)],
        }


#: Cells a configuration runs back to back before the next one takes its turn.
BLOCK = {"trivial": 10, "one_mb": 5}


async def measure(probes: dict[str, Probe], n_small: int, n_big: int) -> dict[str, Any]:
    """Every configuration in turn, a block of cells each (n_small trivial cells, then n_big
    1 MB cells per configuration in all).

    Blocks, not single cells, and the first cell of each block not measured: cells run back to
    back, as a user's `Run All` runs them, is what shows Nagle's delay. A connection that idled
    while the others took their turn starts its next cell with the peer's delayed ACK long sent
    (Linux acknowledges at once after an idle period), which hides the ~40 ms stall of a stock
    gateway; the unmeasured cell also absorbs work the previous configuration left running."""
    try:
        for probe in probes.values():
            await probe.start()
        for label, total in (("trivial", n_small), ("one_mb", n_big)):
            block = min(BLOCK[label], total)
            for _ in range(max(1, total // block)):
                for probe in probes.values():
                    await probe.client.execute(TRIVIAL if label == "trivial" else ONE_MB)
                    for _ in range(block):
                        await probe.cell(label)
    finally:
        for probe in probes.values():
            await probe.client.close()
    return {name: probe.result() for name, probe in probes.items()}


def mirror_cost(root: Path, cells: int = 200) -> dict[str, dict[str, float]]:
    """The researcher side's own work per cell, in process, as the server connection does it:
    sign the request, parse each message from the hospital, check its receipt (Ed25519), open
    its commitment, append the entries and openings, and write the message back out with its
    new metadata (no network, no kernel); the checkpoint is cosigned as the server does for
    cells run back to back, the newest one each `COSIGN_DELAY` (taken as 50 trivial cells, or
    every 1 MB cell). Wall and CPU ms per cell, and the wall time of the messages from the
    hospital until each could go on to the browser (`to_browser_wall_ms`: a large output's
    entry is written after that, `SessionMirror.settle`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "extension"))
    from conftest import StandInHospital  # the receipt-protocol stand-in of the unit tests

    from bedside.extension.connection import Parsed
    from bedside.extension.mirror import COSIGN_DELAY, SessionMirror, new_message

    out: dict[str, dict[str, float]] = {}
    for label, text in (("trivial", "2\n"), ("one_mb", "x" * 1_000_000 + "\n")):
        d = root / f"mirror-{label}"
        d.mkdir()
        hospital = StandInHospital(d)
        intent = {"purpose": "bench", "policy_id": "demo"}
        mirror = SessionMirror(
            kernel_id=label, directory=d / "r", signer=Signer.generate("r"), intent=intent
        )
        sent: list[dict[str, Any]] = []
        mirror.send = sent.append
        timers: list[Any] = []
        mirror.schedule = lambda _delay, callback, timers=timers: timers.append(callback)
        mirror.cosign_delay = COSIGN_DELAY
        mirror.observe_reply(hospital.intent(mirror.intent_request()))
        spent = {"wall": 0.0, "cpu": 0.0, "main": 0.0, "to_browser": 0.0}

        @contextmanager
        def counted(spent: dict[str, float] = spent) -> Iterator[None]:
            t, c, m = time.perf_counter(), time.process_time(), time.thread_time()
            yield
            spent["wall"] += time.perf_counter() - t
            spent["cpu"] += time.process_time() - c  # every thread of the process
            spent["main"] += time.thread_time() - m  # the event loop's thread only

        def handle(
            raw: str, mirror: SessionMirror = mirror, spent: dict[str, float] = spent
        ) -> None:
            t = time.perf_counter()
            parsed = Parsed(raw)
            mirror.observe_reply(parsed.msg)
            parsed.dumps()
            spent["to_browser"] += time.perf_counter() - t
            mirror.settle()  # as the connection does once the message has gone on

        n = cells if label == "trivial" else 10
        for cell in range(n):
            request = new_message("execute_request", {"code": "print(2)"}, session="b")
            with counted():
                mirror.observe_request(request)
                json.dumps(request)
            # the hospital's work is not counted
            replies = [json.dumps(m) for m in hospital.execute(request, text)]
            with counted():
                for raw in replies:
                    handle(raw)
            if label == "one_mb" or cell % 50 == 49 or cell == n - 1:
                with counted():
                    while timers:
                        timers.pop()()  # the cosign delay ends
            for cosign in sent:
                raw = json.dumps(hospital.cosign(cosign))
                with counted():
                    handle(raw)
            sent.clear()
        with counted():
            mirror.close()  # the group commit (fsync) a seal or download does
        out[label] = {
            "wall_ms": spent["wall"] / n * 1000,
            # of which before each message from the hospital could go on to the browser
            "to_browser_wall_ms": spent["to_browser"] / n * 1000,
            "cpu_ms": spent["cpu"] / n * 1000,
            # without the worker thread that prepares a large output's opening meanwhile
            "main_thread_cpu_ms": spent["main"] / n * 1000,
        }
    return out


def server(root: Path, name: str, url: str, token: str, extension: bool) -> ResearcherServer:
    nb_dir = root / f"nb-{name}"
    nb_dir.mkdir()
    (nb_dir / "bench.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {"bedside": {"intent": {
            "purpose": "benchmark", "cohort": "none", "model_job": "none",
            "policy_id": "demo-hospital", "budget": {"cells": 1000}}}},
            "nbformat": 4, "nbformat_minor": 5})
    )  # fmt: skip
    return ResearcherServer(
        root_dir=nb_dir,
        gateway_url=url,
        gateway_token=token,
        extension=extension,
        sessions_dir=root / f"sessions-{name}",
        researcher_key_file=str(root / "researcher.key"),
        log_path=root / f"server-{name}.log",
        env={"KERNEL_USERNAME": USER},
    )


def egpids(eg: Any) -> list[int]:
    return [eg.process.pid] if eg.process is not None else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--mirror-only", action="store_true", help="only the researcher side's in-process cost"
    )
    args = parser.parse_args()
    if args.mirror_only:
        with tempfile.TemporaryDirectory(prefix="bench-researcher-") as tmp:
            print(json.dumps({"researcher_side_per_cell_ms": mirror_cost(Path(tmp))}, indent=2))
        return 0
    n_small, n_big = (10, 3) if args.quick else (40, 10)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-researcher-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        policy, key = hospital(root)
        plain = local_kernelspec(
            [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "plain"
        )
        (root / "state").mkdir(mode=0o700)
        chain = sentry_kernelspec(policy=policy, custodian_key=key, state_dir=root / "state")
        with ExitStack() as stack:
            eg_stock = stack.enter_context(
                gateway(root / "eg-stock", {"plain": plain}, "plain", nodelay=False)
            )
            eg_bedside = stack.enter_context(
                gateway(root / "eg-bedside", {"bedside": chain}, "bedside", nodelay=True)
            )
            configs = {
                # name: (gateway, extension, kernel, processes to count besides the server)
                "local": (None, False, "python3", []),
                "local-nodelay": (None, True, "python3", []),
                "stock": (eg_stock, False, "plain", egpids(eg_stock)),
                "bedside": (eg_bedside, True, "bedside", egpids(eg_bedside)),
                "bedside-noext": (eg_bedside, False, "bedside", []),
            }
            probes = {}
            for name, (eg, extension, kernel, roots) in configs.items():
                url, token = (eg.url, eg.token) if eg is not None else ("", "")
                s = stack.enter_context(server(root, name, url, token, extension=extension))
                probes[name] = Probe(s, kernel, roots)
            results.update(asyncio.run(measure(probes, n_small, n_big)))
        ledger_ms = mirror_cost(root)
    local, stock, bedside = results["local"], results["stock"], results["bedside"]
    noext = results["bedside-noext"]
    doc = {
        "benchmark": "researcher",
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"{platform.system()} {platform.release()}, python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "summary": (
            "A trivial cell (`1 + 1`) and a 1 MB stream output through jupyter_server → "
            "Enterprise Gateway, JupyterLab's websocket protocol. stock = stock jupyter_server "
            "→ stock EG (Nagle on) → plain ipykernel; bedside = jupyter_server + extension → "
            "bedside EG → sentry → bubblewrap → guarded kernel; local = stock jupyter_server → "
            "local ipykernel (local-nodelay: with Nagle off). Medians and best rounds in ms are "
            "in the JSON; on a shared 2-core machine the medians move with the load."
        ),
        "results_ms": results,
        "ratios": {
            # The "local kernel" (5 ms for `1 + 1`) is one without the Nagle stall, so
            # the targets are judged against local-nodelay; the Nagle-on local figure is kept
            # because it is what a stock jupyter_server with a local kernel gives.
            "trivial bedside/stock (target < 1)": bedside["trivial_ms"] / stock["trivial_ms"],
            "trivial bedside/local-nodelay (target <= 1.5)": bedside["trivial_ms"]
            / results["local-nodelay"]["trivial_ms"],
            "1MB bedside/stock (target < 1)": bedside["one_mb_ms"] / stock["one_mb_ms"],
            "1MB bedside/local-nodelay (target <= 2)": bedside["one_mb_ms"]
            / results["local-nodelay"]["one_mb_ms"],
            "trivial bedside/stock, best rounds": bedside["trivial_best_ms"]
            / stock["trivial_best_ms"],
            "1MB bedside/stock, best rounds": bedside["one_mb_best_ms"] / stock["one_mb_best_ms"],
            "trivial bedside/local with Nagle on": bedside["trivial_ms"] / local["trivial_ms"],
            "1MB bedside/local with Nagle on": bedside["one_mb_ms"] / local["one_mb_ms"],
        },
        # the extension's own work per cell: parse, receipts, ledger, openings, cosign
        "researcher_side_per_cell_ms": ledger_ms,
        "extension_cost_per_cell_ms": {
            "trivial": bedside["trivial_ms"] - noext["trivial_ms"],
            "one_mb": bedside["one_mb_ms"] - noext["one_mb_ms"],
        },
        # the same difference in the server's CPU time, which a loaded machine does not move
        "extension_cpu_per_cell_ms": {
            "trivial": bedside["server_cpu_trivial_ms"] - noext["server_cpu_trivial_ms"],
            "one_mb": bedside["server_cpu_one_mb_ms"] - noext["server_cpu_one_mb_ms"],
        },
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
