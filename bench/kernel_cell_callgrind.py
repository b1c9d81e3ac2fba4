"""Instructions per cell of the guarded kernel against a plain ipykernel, under callgrind.

The wall-clock figures of `bench_kernel_cell.py` move with the load of a shared machine; the
number of instructions a kernel process executes for a cell does not. This starts both kernels
(the cells and the synthetic hospital of `bench_kernel_cell.py`) under `valgrind
--tool=callgrind`, runs the setup and a few warm-up cells, then for each cell zeroes the
counters (`callgrind_control --zero`), runs it `--runs` times and dumps them
(`callgrind_control --dump`): instructions of all the kernel's threads per cell, and the ratio
guarded/plain. Slow (valgrind runs Python some fifty times slower): a few minutes.

    .venv/bin/python bench/kernel_cell_callgrind.py [--runs 20] [--cells empty,aggregate]
        [--fresh] [--big] [--keep DIR] [--out FILE]

`--keep DIR` keeps the callgrind dumps there (`callgrind_annotate DIR/guarded.<pid>.<n>`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402
from bench_kernel_cell import BIG, CELLS, FRESH, SETUP_BIG, run_cell  # noqa: E402

from tests.kernel._client import start as start_kernel  # noqa: E402
from tests.kernel._client import stop  # noqa: E402
from tests.kernel._data import write_hospital  # noqa: E402

SLOW = 900.0  # seconds a cell may take under valgrind (the setup imports pandas)


def start(root: Path, name: str, policy: Path | None, module: str, out: Path,
          cache_sim: bool = False) -> Any:  # fmt: skip
    """The kernel `name` under callgrind (instrumented from the start, dumped on request)."""
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/{name}.%p",
                "--dump-instr=no", "--vgdb=yes",
                f"--cache-sim={'yes' if cache_sim else 'no'}"]  # fmt: skip
    return start_kernel(root, name, policy, module, prefix=valgrind, timeout=SLOW)


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True,
                   timeout=600)  # fmt: skip


def totals(path: Path) -> dict[str, int]:
    """The dump's event totals by name (Ir; with --cache-sim also the cache misses)."""
    events: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        if line.startswith(("totals:", "summary:")):
            return dict(zip(events or ["Ir"], map(int, line.split()[1:]), strict=False))
    raise RuntimeError(f"{path}: no totals line")


def latest_dump(out: Path, name: str, pid: int, before: set[Path]) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(out.glob(f"{name}.{pid}.*")) - before
        if new:
            time.sleep(0.5)  # let callgrind finish writing it
            return max(new, key=lambda p: p.stat().st_mtime)
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump of {name} appeared in {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cells", help="comma-separated cell names (default: all)")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--keep", type=Path)
    ap.add_argument(
        "--cache-sim",
        action="store_true",
        help="also simulate the caches: D1 and last-level misses per cell",
    )
    ap.add_argument("--big", action="store_true", help="also the 1 MB output cells")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed", file=sys.stderr)
        return 2
    cells = {**CELLS, **FRESH} if args.fresh else dict(CELLS)
    if args.big:
        cells.update(BIG)
    if args.cells:
        cells = {c: {**CELLS, **FRESH, **BIG}[c] for c in args.cells.split(",")}
    root = Path(tempfile.mkdtemp(prefix="bench-kernel-cg-"))
    out = args.keep or (root / "callgrind")
    out.mkdir(parents=True, exist_ok=True)
    policy, _ = write_hospital(root)
    kernels = {
        "guarded": start(root, "guarded", policy, "bedside.kernel", out, args.cache_sim),
        "plain": start(root, "plain", None, "ipykernel_launcher", out, args.cache_sim),
    }
    setup = {
        "guarded": "import pandas as pd\ndf = hospital.load('patients')",
        "plain": f"import pandas as pd\ndf = pd.read_parquet({str(root / 'patients.parquet')!r})",
    }
    if set(cells) & set(BIG):
        setup = {k: v + SETUP_BIG for k, v in setup.items()}
    result: dict[str, Any] = {"runs": args.runs, "unit": "instructions per cell", "cells": {}}
    try:
        pids = {name: km.provisioner.process.pid for name, (km, _) in kernels.items()}
        for name, (_, kc) in kernels.items():
            run_cell(kc, setup[name], timeout=SLOW)
        for cell, code in cells.items():
            row: dict[str, Any] = {}
            for name, (_, kc) in kernels.items():
                for _ in range(3):
                    run_cell(kc, code, timeout=SLOW)
                before = set(out.glob(f"{name}.{pids[name]}.*"))
                control(pids[name], "--zero")
                for _ in range(args.runs):
                    run_cell(kc, code, timeout=SLOW)
                control(pids[name], "--dump=" + cell)
                dump = latest_dump(out, name, pids[name], before)
                events = totals(dump)
                row[name] = events["Ir"] / args.runs
                if args.cache_sim:
                    row[f"{name}_misses"] = {e: n / args.runs for e, n in events.items()
                                             if e != "Ir"}  # fmt: skip
            row["ratio"] = row["guarded"] / row["plain"]
            result["cells"][cell] = row
            line = (f"{cell:16s} guarded {row['guarded'] / 1e6:8.2f} M  plain "
                    f"{row['plain'] / 1e6:8.2f} M  ratio {row['ratio']:.3f}")  # fmt: skip
            if args.cache_sim:
                g, p = row["guarded_misses"], row["plain_misses"]
                line += "".join(f"  {e} {g[e] / 1e3:.0f}k/{p[e] / 1e3:.0f}k"
                                for e in ("D1mr", "D1mw", "DLmr", "DLmw") if e in g)  # fmt: skip
            print(line, file=sys.stderr)
        emit(result, args.out)
    finally:
        for km, kc in kernels.values():
            stop(km, kc)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
