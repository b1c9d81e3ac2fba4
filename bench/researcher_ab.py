"""The researcher extension of another revision against this one, interleaved in one run.

Two jupyter_servers on one tuned Enterprise Gateway (bedside chain: sentry, sandbox, guarded
kernel): one loads the extension as it is in `--base` (copied out of git as the module `oldext`),
the other this worktree's. They take turns, a block of cells each, so that a loaded machine's
load falls on both alike; prints the median, quartile and best wall time of each and the CPU
time of each jupyter_server per cell. Everything but the extension (the ledger, the gateway, the
sentry) is this worktree's on both sides. With `--local`, a third jupyter_server with this
extension and a local kernel (no gateway, Nagle off: `local-nodelay` of bench_researcher.py)
takes its turns too, and the ratios of each side to it are printed. With `--in-process`, no
servers: both extensions' mirrors take turns on the stand-in hospital's messages
(tests/extension), and what is printed is, per message, the wall time until it could go on to
the browser, the wall time with its ledger entry written, and the event loop thread's CPU.
With `--stages`, both servers also load bench/_ext_stages.py, which times each large output's
way through the server (receipt checks, the write to the browser, the deferred ledger entry).
Not part of `make bench` (a development A/B).
Run: `.venv/bin/python bench/researcher_ab.py [--base main] [--blocks 12] [--local]
[--in-process] [--stages]`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_researcher as b  # noqa: E402 - the benchmark's hospital, gateway and probes

from bedside.extension._headless import ResearcherServer  # noqa: E402
from bedside.gateway.eg import sentry_kernelspec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = {"trivial": 10, "one_mb": 4}


class BaseServer(ResearcherServer):
    """A researcher server whose extension is the module `oldext` (the base revision's)."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        extensions = config["ServerApp"]["jpserver_extensions"]
        extensions["oldext"] = extensions["bedside.extension"]
        # off, not just left out: the installed package enables itself by default
        # (jupyter-config/.../bedside.json), and the base server then loaded both extensions
        extensions["bedside.extension"] = False
        return config


def staged(server: ResearcherServer, out: Path, package: str) -> ResearcherServer:
    """`server` with bench/_ext_stages.py loaded too, writing its stage lines to `out`."""
    config = server.config

    def with_stages() -> dict[str, Any]:
        doc = config()
        doc["ServerApp"]["jpserver_extensions"]["_ext_stages"] = True
        return doc

    server.config = with_stages  # type: ignore[method-assign]
    paths = [p for p in (server.env.get("PYTHONPATH"), str(Path(__file__).parent)) if p]
    server.env["PYTHONPATH"] = ":".join(paths)
    server.env["BEDSIDE_STAGES_OUT"] = str(out)
    server.env["BEDSIDE_STAGES_PKG"] = package
    return server


def stage_summary(out: Path) -> dict[str, Any]:
    """Medians of the stage lines of bench/_ext_stages.py (large outputs only)."""
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rows = [line for line in lines if "check_ms" in line]
    drained = [line["drained_ms"] for line in lines if "drained_ms" in line]
    summary: dict[str, Any] = {"messages": len(rows)}
    if rows:
        for key in rows[0]:
            if key.endswith("_ms"):
                summary[f"{key[:-3]}_median_ms"] = round(
                    statistics.median(row[key] for row in rows), 3
                )
        summary["written_at_once"] = sum(1 for row in rows if not row["unsent_bytes"])
        # an A/B of a check that fails is no A/B: say how many went on unverified
        summary["unverified"] = sum(1 for row in rows if row.get("verified") is False)
    if drained:
        summary["drained_median_ms"] = round(statistics.median(drained), 3)
    return summary


def base_extension(rev: str, into: Path) -> None:
    """`extension/` at `rev` as the package `oldext` under `into`."""
    pkg = into / "oldext"
    pkg.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "extension"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(pkg), "--strip-components=1"], input=archive, check=True)
    init = pkg / "__init__.py"
    init.write_text(
        init.read_text().replace('{"module": "bedside.extension"}', '{"module": "oldext"}')
    )


async def measure(probes: dict[str, b.Probe], blocks: int) -> dict[str, Any]:
    for probe in probes.values():
        await probe.start()
    out: dict[str, Any] = {}
    try:
        for label, code in (("trivial", b.TRIVIAL), ("one_mb", b.ONE_MB)):
            walls: dict[str, list[float]] = {k: [] for k in probes}
            cpu = dict.fromkeys(probes, 0.0)
            names = list(probes)
            for turn in range(blocks if label == "trivial" else max(2, blocks // 2)):
                # Each side starts a turn in its turn: with a fixed order, two copies of the
                # same extension differed by 10-20% on a 1 MB cell (the one after the local
                # kernel's turn slower) on a loaded machine.
                for name in names[turn % len(names) :] + names[: turn % len(names)]:
                    probe = probes[name]
                    await probe.client.execute(code)  # not measured (see bench_researcher)
                    before = b.cpu_seconds(probe.pid)
                    for _ in range(BLOCK[label]):
                        t = time.perf_counter()
                        await probe.client.execute(code)
                        walls[name].append((time.perf_counter() - t) * 1000)
                    cpu[name] += b.cpu_seconds(probe.pid) - before
            for name in probes:
                w = sorted(walls[name])
                if "local" in probes and name != "local":
                    local = statistics.median(walls["local"])
                    out[f"{label} {name}/local median ratio"] = round(
                        statistics.median(w) / local, 3
                    )
                out[f"{label} {name}"] = {
                    "median_ms": round(statistics.median(w), 2),
                    "p25_ms": round(w[len(w) // 4], 2),
                    "best_ms": round(w[0], 2),
                    "server_cpu_ms_per_cell": round(cpu[name] / len(w) * 1000, 2),
                    "n": len(w),
                }
    finally:
        for probe in probes.values():
            await probe.client.close()
    return out


def in_process(base: Path, cells: int) -> dict[str, Any]:
    """Both extensions' mirrors in this process, in turn, on the same kinds of messages."""
    sys.path.insert(0, str(ROOT / "tests" / "extension"))
    sys.path.insert(0, str(base))
    from conftest import StandInHospital  # the receipt-protocol stand-in of the unit tests

    from bedside.ledger import Signer

    sides = {
        name: (
            importlib.import_module(f"{pkg}.connection"),
            importlib.import_module(f"{pkg}.mirror"),
        )
        for name, pkg in (("base", "oldext"), ("this", "bedside.extension"))
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="researcher-ab-") as tmp:
        for label, text in (("trivial", "2\n"), ("one_mb", "x" * 1_000_000 + "\n")):
            runs = {}
            for name, (conn, mir) in sides.items():
                d = Path(tmp) / f"{label}-{name}"
                d.mkdir()
                hospital = StandInHospital(d)
                mirror = mir.SessionMirror(
                    kernel_id=name, directory=d / "r", signer=Signer.generate("r"),
                    intent={"purpose": "bench", "policy_id": "demo"},
                )  # fmt: skip
                mirror.send = lambda msg: None
                mirror.observe_reply(hospital.intent(mirror.intent_request()))
                runs[name] = (conn, mir, hospital, mirror)
            got: dict[str, dict[str, list[float]]] = {
                k: {
                    "to_browser": [],
                    "written": [],
                    "main_cpu_to_browser": [],
                    "main_cpu": [],
                    "process_cpu": [],
                }
                for k in runs
            }
            for cell in range(cells):
                for name, (conn, mir, hospital, mirror) in runs.items():
                    request = mir.new_message("execute_request", {"code": "print(2)"}, session="b")
                    mirror.observe_request(request)
                    raws = [json.dumps(m) for m in hospital.execute(copy.deepcopy(request), text)]
                    settle = getattr(mirror, "settle", lambda: None)
                    for raw in raws:
                        c, t, pc = time.thread_time(), time.perf_counter(), time.process_time()
                        parsed = conn.Parsed(raw)
                        verdict = mirror.observe_reply(parsed.msg)
                        parsed.dumps()
                        t1, c1 = time.perf_counter(), time.thread_time()
                        settle()
                        if getattr(mirror, "_preparing", None) is None and hasattr(
                            mir, "_OPENINGS"
                        ):
                            mir._OPENINGS.submit(int).result()  # the worker's work is counted
                        t2, c2, pc2 = time.perf_counter(), time.thread_time(), time.process_time()
                        assert verdict.verified, verdict.reason
                        if cell >= 3 and (label == "trivial" or len(raw) > 100_000):
                            got[name]["to_browser"].append((t1 - t) * 1000)
                            got[name]["written"].append((t2 - t) * 1000)
                            got[name]["main_cpu_to_browser"].append((c1 - c) * 1000)
                            got[name]["main_cpu"].append((c2 - c) * 1000)
                            got[name]["process_cpu"].append((pc2 - pc) * 1000)
            for name, series in got.items():
                out[f"{label} {name}"] = {
                    f"{k}_median_ms": round(statistics.median(v), 3) for k, v in series.items()
                } | {"messages": len(series["to_browser"])}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision of the other extension")
    parser.add_argument("--blocks", type=int, default=12, help="turns of trivial cells each")
    parser.add_argument("--local", action="store_true", help="also a local kernel, Nagle off")
    parser.add_argument("--in-process", action="store_true", help="the mirrors only, no servers")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time each large output's stages in both servers (bench/_ext_stages.py)",
    )
    args = parser.parse_args()
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="researcher-ab-") as tmp:
            base_extension(args.base, Path(tmp) / "base")
            result = in_process(Path(tmp) / "base", max(args.blocks, 12))
        doc = {"benchmark": "researcher-ab-in-process", "base": args.base, "results": result}
        print(json.dumps(doc, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="researcher-ab-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        base_extension(args.base, root / "base")
        policy, key = b.hospital(root)
        (root / "state").mkdir(mode=0o700)
        chain = sentry_kernelspec(policy=policy, custodian_key=key, state_dir=root / "state")
        with ExitStack() as stack:
            eg = stack.enter_context(
                b.gateway(root / "eg", {"bedside": chain}, "bedside", nodelay=True)
            )
            probes = {}
            for name in ("base", "this"):
                server = b.server(root, name, eg.url, eg.token, extension=True)
                if name == "base":
                    fields = vars(server).copy()
                    fields.pop("proc", None)
                    fields.pop("_tmp", None)
                    server = BaseServer(**fields)
                    server.env["PYTHONPATH"] = str(root / "base")
                if args.stages:
                    package = "oldext" if name == "base" else "bedside.extension"
                    server = staged(server, root / f"stages-{name}.jsonl", package)
                probes[name] = b.Probe(stack.enter_context(server), "bedside", [])
            if args.local:
                server = b.server(root, "local", "", "", extension=True)
                probes["local"] = b.Probe(stack.enter_context(server), "python3", [])
            result = asyncio.run(measure(probes, args.blocks))
            if args.stages:
                for name in ("base", "this"):
                    result[f"stages {name}"] = stage_summary(root / f"stages-{name}.jsonl")
    print(
        json.dumps({"benchmark": "researcher-ab", "base": args.base, "results": result}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
