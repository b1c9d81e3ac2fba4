"""Run every `bench/bench_*.py` and write `docs/benchmarks.md` (`make bench`).

Each benchmark prints one JSON document on stdout (its last top-level JSON object is taken);
this script runs them one after another (they share two cores; running them together would
measure contention), keeps their JSON under `bench/results/`, and writes a page with the ratios
each benchmark reports, the machine and the date. A benchmark that fails is listed as failed
with the end of its output, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def last_json(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in a benchmark's stdout."""
    decoder = json.JSONDecoder()
    found = None
    i = 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict):
            found = obj
        i = end
    return found


def ratios(doc: dict[str, Any]) -> dict[str, Any]:
    """Every entry of a `ratios` mapping, wherever the benchmark put it."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                name = f"{prefix}{key}"
                if "ratio" in key.lower() and isinstance(value, dict):
                    for k, v in value.items():
                        out[f"{prefix}{k}"] = v
                elif "ratio" in key.lower() and isinstance(value, int | float):
                    out[name] = value
                else:
                    walk(value, f"{name}." if isinstance(value, dict) else prefix)

    walk(doc, "")
    return out


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only these (name part)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    args = parser.parse_args()
    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if any(o in s.stem for o in args.only)]
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    sections = []
    for script in scripts:
        print(f"bench: {script.name} …", flush=True)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
                cwd=ROOT,
            )
            output, code = proc.stdout, proc.returncode
            tail = (proc.stdout + proc.stderr)[-1500:]
        except subprocess.TimeoutExpired as exc:
            output, code = "", -1
            tail = f"timed out after {args.timeout:.0f}s\n{str(exc.stdout or '')[-1000:]}"
        seconds = time.monotonic() - started
        doc = last_json(output) if code == 0 else None
        if doc is None:
            print(f"bench: {script.name} FAILED ({code})", file=sys.stderr)
            sections.append(
                f"## {script.stem}\n\nFailed (exit {code}) after {seconds:.0f} s:\n\n"
                f"```\n{tail.strip()}\n```\n"
            )
            continue
        (results_dir / f"{script.stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
        rows = ratios(doc)
        table = "\n".join(f"| {k} | {fmt(v)} |" for k, v in rows.items())
        summary = (doc.get("summary") or doc.get("description") or "").strip()
        sections.append(
            f"## {script.stem}\n\n"
            + (f"{summary}\n\n" if summary else "")
            + (f"| ratio | value |\n|---|---|\n{table}\n\n" if rows else "")
            + f"Ran in {seconds:.0f} s; full results: `bench/results/{script.stem}.json`.\n"
        )
    page = (
        "# Benchmarks\n\n"
        "Written by `make bench` (`bench/run_all.py`); do not edit by hand. Each benchmark "
        "measures the plain path in the same run and reports ratios against it.\n\n"
        f"- Machine: {machine()}\n"
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n" + "\n".join(sections)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
