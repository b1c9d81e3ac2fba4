"""Run every `bench/bench_*.py` and write `docs/benchmarks.md` (`make bench`).

Each benchmark prints one JSON document on stdout (its last top-level JSON object is taken);
this script runs them one after another (they share two cores; running them together would
measure contention), keeps their JSON under `bench/results/`, and writes a page with the ratios
each benchmark reports, the machine and the date. A benchmark that fails is listed as failed
with the end of its output, and the others still run.

`--reuse NAME` takes a benchmark's section from its last kept result instead of running it (the
million-patient guard utility run takes the better part of an hour); the page says so and gives
the date that result was measured.
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
                    # `ratios` names its entries itself; any other mapping of ratios (e.g.
                    # `best_round_ratios_on_tuned_eg`) prefixes them with its own name. A group
                    # of ratios (`{"bedside_vs_plain": {"trivial_cell": 1.1}}`) is one row each.
                    head = prefix if key.lower() == "ratios" else f"{name}."
                    for k, v in value.items():
                        if isinstance(v, dict):
                            for k2, v2 in v.items():
                                out[f"{head}{k}.{k2}"] = v2
                        else:
                            out[f"{head}{k}"] = v
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


def utc_now(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def section(stem: str, doc: dict[str, Any], footer: str) -> str:
    """A benchmark's part of the page: its summary, its ratios, then `footer`."""
    rows = ratios(doc)
    table = "\n".join(f"| {k} | {fmt(v)} |" for k, v in rows.items())
    summary = (doc.get("summary") or doc.get("description") or "").strip()
    return (
        f"## {stem}\n\n"
        + (f"{summary}\n\n" if summary else "")
        + (f"| ratio | value |\n|---|---|\n{table}\n\n" if rows else "")
        + footer
        + "\n"
    )


def reused_section(script: Path, results_dir: Path) -> str:
    """The section of a benchmark not run this time, from its kept result, saying when it ran."""
    path = results_dir / f"{script.stem}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return (
            f"## {script.stem}\n\nNot run this time (`--reuse`), and no usable earlier result: "
            f"`{path}`: {exc}. Run `python bench/{script.name}`.\n"
        )
    run = doc.get("bench_run") or {}
    when = run.get("date") or f"{utc_now(path.stat().st_mtime)} (the file's time)"
    took = f", in {run['seconds']} s" if "seconds" in run else ""
    print(f"bench: {script.name} reused from {when}", flush=True)
    return section(
        script.stem,
        doc,
        f"**Not run by this `make bench`** (`--reuse`): measured {when}{took}; full results: "
        f"`bench/results/{script.stem}.json`.",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only these (name part)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        help="do not run these (name part): show their last result in bench/results/, dated",
    )
    args = parser.parse_args()
    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if any(o in s.stem for o in args.only)]
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    sections = []
    for script in scripts:
        if any(r in script.stem for r in args.reuse):
            sections.append(reused_section(script, results_dir))
            continue
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
        doc["bench_run"] = {"date": utc_now(), "seconds": round(seconds)}
        (results_dir / f"{script.stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
        sections.append(
            section(
                script.stem,
                doc,
                f"Ran in {seconds:.0f} s; full results: `bench/results/{script.stem}.json`.",
            )
        )
    page = (
        "# Benchmarks\n\n"
        "Written by `make bench` (`bench/run_all.py`); do not edit by hand. Each benchmark "
        "measures the plain path in the same run and reports ratios against it.\n\n"
        f"- Machine: {machine()}\n"
        f"- Date: {utc_now()}\n\n" + "\n".join(sections)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
