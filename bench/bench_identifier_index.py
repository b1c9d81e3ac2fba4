"""Benchmark the identifier index: build time, peak memory and scan throughput on 1 MB outputs.

For each patient count (default 10,000 and 1,000,000) the identifiers (mrn, name, dob, postcode,
phone) of a synthetic hospital are indexed in a fresh subprocess, so its peak RSS is the index
build's own, and then 1 MB outputs of seven shapes are scanned:

- `words`: ordinary words (what bench_gateway.py prints as its 1 MB output),
- `table`: a pandas text table of aggregates (dense numbers, the worst case for tokens/byte),
- `csv`: a CSV dump of the clinical (non-identifier) columns of patient rows,
- `json`: the same rows as JSON records,
- `html`: the aggregates of `table` as an HTML table,
- `log`: ordinary analysis output (model summaries, progress bars, p-values),
- `leaky`: `log` with an identifier value in about one line in a hundred.

`find` and `scan_text` (identifiers + PHI patterns + encodings, what the guards call) are timed
against plain paths measured in the same process on the same texts: `json` (`json.dumps` of the
text: what forwarding the output costs the gateway anyway), `lower+in` (lower-case the text and
test one value with `in`: a floor, it cannot look for a million values) and `regex+set` (Python
`re.findall` of tokens and a set lookup: the obvious pure-Python token matcher). Times are the
best of `--repeat` runs, wall clock and CPU (`time.process_time`): on a loaded machine (the
1-minute load average is recorded) the CPU figure is the steadier one. The latency of a
200-character message is measured too, and how many findings are weak (dates of birth alone)
and whether `findings_block` would stop each text.

`find` and `scan_text` run on the compiled core (policy/_scanner.c); `*_ref_*` figures are the
numpy/regex reference path it replaced (`IdentifierIndex._find_reference`, and `scan_text` with
the core switched off), measured on the same texts in the same process, and `speedup_*` their
ratio in CPU time. `--no-reference` skips them.
Targets: find >= 100 MB/s and scan_text >= 50 MB/s at 1M patients, build <= 20 s, peak memory
<= 1 GiB.

    .venv/bin/python bench/bench_identifier_index.py [--patients 10000,1000000] [--out FILE]

Prints one JSON object per line; `--out` also writes them as a JSON list.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ID_COLUMNS = ["mrn", "name", "dob", "postcode", "phone"]
MB = 1_000_000


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_identifiers(patients: int, seed: int, path: Path) -> None:
    from bedside.policy.synthetic import CHUNK, make_pools, patients_chunk

    pools = make_pools(seed, postcodes=min(60_000, max(1_000, patients // 15)))
    parts = []
    for start in range(0, patients, CHUNK):
        chunk = patients_chunk(start, min(CHUNK, patients - start), seed, pools)
        parts.append(pd.DataFrame({c: chunk[c] for c in ID_COLUMNS}))
    pd.concat(parts, ignore_index=True).to_parquet(path)


def make_texts(sample: pd.DataFrame) -> dict[str, str]:
    """Seven 1 MB outputs; none holds an identifier except `leaky`."""
    from bedside.policy.synthetic import make_pools, patients_chunk

    pools = make_pools(99, postcodes=1000)
    chunk = patients_chunk(0, 20_000, 99, pools)
    df = pd.DataFrame({k: v for k, v in chunk.items() if k not in ID_COLUMNS and k[0] != "_"})
    agg = df.groupby(["ward", "diagnosis", "sex"]).agg(
        n=("age", "size"),
        age=("age", "mean"),
        los=("los_days", "mean"),
        cost=("cost", "mean"),
        died=("died", "mean"),
    )
    table = agg.round(3).to_string()
    html = agg.round(3).to_html()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "policy"))
    from outputs import FIXED  # type: ignore[import-not-found]

    log = "\n".join(FIXED) + "\n" + str(df.describe()) + "\n" + str(df.age.value_counts())
    words = "cohort analysis survival model baseline outcome ward median interval".split()
    plain = " ".join(words[i % len(words)] for i in range(200_000))
    rows = df.head(4000)
    csv = rows.to_csv()
    records = rows.to_json(orient="records")
    texts = {
        "words": plain,
        "table": (table + "\n") * (MB // len(table) + 1),
        "csv": (csv + "\n") * (MB // len(csv) + 1),
        "json": (records + "\n") * (MB // len(records) + 1),
        "html": (html + "\n") * (MB // len(html) + 1),
        "log": (log + "\n") * (MB // len(log) + 1),
    }
    texts = {k: v[:MB] for k, v in texts.items()}
    lines = texts["log"].splitlines()
    rng = np.random.default_rng(0)
    values = sample.to_numpy().ravel()
    for i in range(0, len(lines), 100):
        lines[i] += " " + str(values[rng.integers(0, len(values))])
    texts["leaky"] = "\n".join(lines)[:MB]
    return texts


def timed(fn: Any, text: str, repeat: int) -> tuple[float, float, float]:
    """Best wall time, median wall time and best CPU time of `repeat` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        c = time.process_time()
        t = time.perf_counter()
        fn(text)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), statistics.median(walls), max(min(cpus), 1e-6)


@contextlib.contextmanager
def reference_path(index: Any) -> Iterator[None]:
    """The numpy/regex reference path: the compiled core switched off."""
    from bedside.policy import _tokens

    matcher, scanner = index._matcher, _tokens._scanner
    index._matcher, _tokens._scanner = None, None
    try:
        yield
    finally:
        index._matcher, _tokens._scanner = matcher, scanner


def build_and_scan(path: Path, repeat: int, reference: bool) -> list[dict[str, Any]]:
    """Run in a fresh process: load identifiers, build the index, scan the texts."""
    from bedside.policy import IdentifierIndex, scan_text
    from bedside.policy.scan import findings_block

    frame = pd.read_parquet(path)
    for c in ID_COLUMNS:
        frame[c] = frame[c].astype(object)
    patients = len(frame)
    sample = frame.sample(200, random_state=0)
    texts = make_texts(sample)
    base_rss = rss_mb()
    base_peak = peak_rss_mb()
    t = time.perf_counter()
    c = time.process_time()
    index = IdentifierIndex.from_frames([(frame, ID_COLUMNS)])
    build_s = time.perf_counter() - t
    build_cpu_s = time.process_time() - c
    peak = peak_rss_mb()
    results: list[dict[str, Any]] = [
        {
            "bench": "identifier_index.build",
            "patients": patients,
            "values": len(index),
            "variants": int(len(index._entries)),
            "build_s": round(build_s, 2),
            "build_cpu_s": round(build_cpu_s, 2),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "index_mb": round(index.nbytes / 2**20, 1),
            "compiled_core": index._matcher is not None,
            "rss_before_mb": round(base_rss, 1),
            "peak_rss_mb": round(max(peak, base_peak), 1),
            "build_peak_delta_mb": round(max(peak - base_rss, 0.0), 1),
            "targets": {"build_s": 20, "peak_mb": 1024},
        }
    ]
    vocab = set()
    for v in sample.to_numpy().ravel():
        vocab.update(re.findall(r"[a-z]+|\d+", str(v).lower()))
    needle = str(sample.name.iloc[0]).lower()
    token_re = re.compile(r"[a-z]+|\d+")

    def lower_in(text: str) -> bool:
        return needle in text.lower()

    def regex_set(text: str) -> int:
        return sum(1 for tok in token_re.findall(text.lower()) if tok in vocab)

    for name, text in texts.items():
        size = len(text.encode()) / MB
        found = len(index.find(text))
        findings = scan_text(text, index)
        best, median, cpu = timed(index.find, text, repeat)
        s_best, _, s_cpu = timed(lambda t: scan_text(t, index), text, max(3, repeat // 3))
        j_best, _, j_cpu = timed(json.dumps, text, repeat)
        b_low, _, _ = timed(lower_in, text, repeat)
        b_re, _, _ = timed(regex_set, text, max(3, repeat // 2))
        ref: dict[str, Any] = {}
        if reference:
            r_best, _, r_cpu = timed(index._find_reference, text, 3)
            with reference_path(index):
                assert [(f.kind, f.start, f.end) for f in scan_text(text, index)] == [
                    (f.kind, f.start, f.end) for f in findings
                ], name
                rs_best, _, rs_cpu = timed(lambda t: scan_text(t, index), text, 2)
            ref = {
                "find_ref_mb_s": round(size / r_best, 1),
                "find_ref_cpu_mb_s": round(size / r_cpu, 1),
                "scan_text_ref_mb_s": round(size / rs_best, 1),
                "scan_text_ref_cpu_mb_s": round(size / rs_cpu, 1),
                "speedup_find_cpu": round(r_cpu / cpu, 1),
                "speedup_scan_text_cpu": round(rs_cpu / s_cpu, 1),
            }
        results.append(
            {
                "bench": "identifier_index.scan",
                "patients": patients,
                "text": name,
                "mb": round(size, 3),
                "matches": found,
                "findings": len(findings),
                "weak_findings": sum(1 for f in findings if f.strength == "weak"),
                "blocks": findings_block(findings),
                "find_mb_s": round(size / best, 1),
                "find_mb_s_median": round(size / median, 1),
                "find_cpu_mb_s": round(size / cpu, 1),
                "scan_text_mb_s": round(size / s_best, 1),
                "scan_text_cpu_mb_s": round(size / s_cpu, 1),
                "baseline_json_mb_s": round(size / j_best, 1),
                "baseline_json_cpu_mb_s": round(size / j_cpu, 1),
                "baseline_lower_in_mb_s": round(size / b_low, 1),
                "baseline_regex_set_mb_s": round(size / b_re, 1),
                "scan_text_ratio_vs_json": round(s_best / j_best, 2),
                "ratio_vs_regex_set": round(b_re / best, 2),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "target_find_mb_s": 100,
                "target_scan_text_mb_s": 50,
                **ref,
            }
        )
    small = texts["leaky"][:200]
    reps = 200
    f_best, _, f_cpu = timed(index.find, small, reps)
    s_best, _, s_cpu = timed(lambda t: scan_text(t, index), small, reps)
    results.append(
        {
            "bench": "identifier_index.small",
            "patients": patients,
            "chars": len(small),
            "find_us": round(f_best * 1e6, 1),
            "find_cpu_us": round(f_cpu * 1e6, 1),
            "scan_text_us": round(s_best * 1e6, 1),
            "scan_text_cpu_us": round(s_cpu * 1e6, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference-path measurements"
    )
    parser.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(build_and_scan(args._child, args.repeat, not args.no_reference)))
        return 0
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        for n in (int(x) for x in args.patients.split(",")):
            path = Path(tmp) / f"ids-{n}.parquet"
            t = time.perf_counter()
            make_identifiers(n, args.seed, path)
            print(
                f"# generated {n:,} patients' identifiers in {time.perf_counter() - t:.1f} s",
                file=sys.stderr,
            )
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--_child",
                    str(path),
                    "--repeat",
                    str(args.repeat),
                    *(["--no-reference"] if args.no_reference else []),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            for row in json.loads(proc.stdout.strip().splitlines()[-1]):
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary(results)))
    return 0


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One document for `bench/run_all.py`: figures per output kind and the ratios."""
    lines, ratios = [], {}
    for row in results:
        n = row["patients"]
        if row["bench"] == "identifier_index.build":
            lines.append(
                f"{n:,} patients: build {row['build_s']} s, +{row['build_peak_delta_mb']} MB "
                f"(targets 20 s, 1024 MB); compiled core: {row.get('compiled_core')}."
            )
        elif row["bench"] == "identifier_index.scan":
            key = f"{row['text']}@{n}"
            lines.append(
                f"{key}: find {row['find_cpu_mb_s']} MB/s, scan_text {row['scan_text_cpu_mb_s']}"
                f" MB/s (CPU; reference path {row.get('find_ref_cpu_mb_s', '-')} and "
                f"{row.get('scan_text_ref_cpu_mb_s', '-')} MB/s)"
            )
            ratios[f"{key} find / target"] = round(row["find_cpu_mb_s"] / 100, 2)
            ratios[f"{key} scan_text / json.dumps"] = row["scan_text_ratio_vs_json"]
            if "speedup_find_cpu" in row:
                ratios[f"{key} find speed-up vs reference"] = row["speedup_find_cpu"]
                ratios[f"{key} scan_text speed-up vs reference"] = row["speedup_scan_text_cpu"]
    return {
        "bench": "identifier_index",
        "summary": "\n".join(f"- {line}" for line in lines),
        "ratios": ratios,
        "rows": results,
    }


if __name__ == "__main__":
    sys.exit(main())
