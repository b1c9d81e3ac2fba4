"""The sentry of another revision against this one, interleaved in one run: CPU and wall per cell.

The machine is shared and its speed varies up to 3x within minutes, so a before/after comparison
means something only when both sides run in turns under the same load. This copies `--base` out
of git (with this worktree's compiled scanner, which git does not hold) and points the editable
install's package map for the sentry's packages (`bedside.gateway`, `bedside.ledger`) at it for
the base side's processes (a `sitecustomize` on PYTHONPATH); the policy and kernel packages are
this worktree's on both sides. The other side is this worktree. Each round runs, for each side
in turn (the order alternating between rounds):

- `bench/sentry_trace.py --cells N`: the replay of a trivial cell's wire trace through a real
  `Sentry` without sockets (relay thread CPU, process CPU and wall per cell, back to back);
- `bench/sentry_cpu.py --only sentry+plain --sandbox --cells M`: the real sentry in front of a
  plain ipykernel in bubblewrap, driven by jupyter_client (CPU per cell of each process from
  /proc, and the wall p50).

The bench scripts and the test helpers are this worktree's on both sides; only the `bedside`
package differs. Prints each round and the medians per side, writes JSON (`--out`).

    .venv/bin/python bench/sentry_ab.py [--base main] [--rounds 3] [--trace-cells 2000]
        [--cpu-cells 300] [--out FILE]

Not part of `make bench` (a development A/B).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _report import emit

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# The sentry's own packages are the base's; `bedside`, its policy and its kernel stay this
# worktree's, so that the sandbox (which binds the kernel packages where the sentry finds them)
# holds what the kernel inside imports through the editable install.
SENTRY_PACKAGES = ("bedside.gateway", "bedside.ledger")
SITECUSTOMIZE = """\
try:
    import __editable___bedside_0_1_0_finder as finder
except ImportError:
    finder = None
if finder is not None:
    for name in {packages!r}:
        finder.MAPPING[name] = finder.MAPPING[name].replace({root!r}, {tree!r})
"""


def base_tree(rev: str, into: Path) -> Path:
    """`rev` copied out of git under `into`, and the PYTHONPATH entry that makes it `bedside`."""
    tree = into / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for built in (ROOT / "policy").glob("_scanner*.so"):
        shutil.copy2(built, tree / "policy" / built.name)
    pkg = into / "pkg"
    pkg.mkdir()
    text = SITECUSTOMIZE.format(packages=SENTRY_PACKAGES, root=str(ROOT), tree=str(tree))
    (pkg / "sitecustomize.py").write_text(text)
    return pkg


def run_json(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    return dict(json.loads(out.stdout))


def one(side: str, pkg: Path | None, trace_cells: int, cpu_cells: int) -> dict[str, Any]:
    env = dict(os.environ)
    if pkg is not None:
        env["PYTHONPATH"] = str(pkg)
    trace = run_json([PYTHON, "bench/sentry_trace.py", "--cells", str(trace_cells)], env)
    live = run_json(
        [PYTHON, "bench/sentry_cpu.py", "--only", "sentry+plain", "--sandbox", "--cells",
         str(cpu_cells)],
        env,
    )  # fmt: skip
    cell = live["results"]["sentry+plain"]
    return {
        "side": side,
        "load": os.getloadavg()[0],
        "trace_relay_cpu_us": trace["cpu_us_per_cell_p50"],
        "trace_process_cpu_us": trace["process_cpu_us_per_cell_p50"],
        "trace_wall_us": trace["wall_us_per_cell_p50"],
        "live_sentry_cpu_us": cell["cpu_us_per_cell"]["sentry"],
        "live_relay_thread_us": cell["sentry_threads_us_per_cell"].get("main"),
        "live_zmq_io_us": cell["sentry_threads_us_per_cell"].get("ZMQbg/IO/0"),
        "live_kernel_cpu_us": cell["cpu_us_per_cell"]["kernel"],
        "live_wall_p50_ms": round(cell["wall_p50_ms"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision of the other sentry")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trace-cells", type=int, default=2000)
    parser.add_argument("--cpu-cells", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bedside-sentry-ab-") as tmp:
        pkg = base_tree(args.base, Path(tmp))
        for r in range(args.rounds):
            sides = [("base", pkg), ("branch", None)]
            for side, where in sides if r % 2 == 0 else sides[::-1]:
                row = one(side, where, args.trace_cells, args.cpu_cells)
                row["round"] = r
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    medians: dict[str, dict[str, float]] = {}
    for side in ("base", "branch"):
        mine = [row for row in rows if row["side"] == side]
        medians[side] = {
            key: round(statistics.median(row[key] for row in mine), 3)
            for key in mine[0]
            if key not in ("side", "round") and mine[0][key] is not None
        }
    report = {
        "benchmark": "sentry_ab",
        "base": args.base,
        "rounds": rows,
        "median": medians,
        "branch_over_base": {
            key: round(medians["branch"][key] / medians["base"][key], 3)
            for key in medians["base"]
            if key != "load" and medians["base"][key]
        },
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
