"""Benchmark the identifier index: build time, peak memory and scan throughput on 1 MB outputs.

For each patient count (default 10,000 and 1,000,000) the identifiers (mrn, name, dob, postcode,
phone) of a synthetic hospital are indexed in a fresh subprocess, so its peak RSS is the index
build's own, and then 1 MB outputs of four shapes are scanned:

- `table`: a pandas text table of aggregates (dense numbers, the worst case for tokens/byte),
- `html`: the same aggregates as an HTML table,
- `log`: ordinary analysis output (model summaries, progress bars, p-values),
- `leaky`: `log` with an identifier value in about one line in a hundred.

`scan_text` (identifiers + PHI patterns + encodings, what the guards call) is timed too.
Baselines measured in the same process on the same texts: `lower+in` (lower-case the text and
test one value with `in`: a floor, it cannot look for a million values) and `regex+set`
(Python `re.findall` of tokens and a set lookup: the obvious pure-Python token matcher).
Targets (issue 2): scan >= 100 MB/s at 1M patients, build <= 20 s, peak memory <= 1 GiB.

    .venv/bin/python bench/bench_identifier_index.py [--patients 10000,1000000] [--out FILE]

Prints one JSON object per line; `--out` also writes them as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
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
    """Four 1 MB outputs; none holds an identifier except `leaky`."""
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
    texts = {
        "table": (table + "\n") * (MB // len(table) + 1),
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


def timed(fn: Any, text: str, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def build_and_scan(path: Path, repeat: int) -> list[dict[str, Any]]:
    """Run in a fresh process: load identifiers, build the index, scan the texts."""
    from bedside.policy import IdentifierIndex, scan_text

    frame = pd.read_parquet(path)
    for c in ID_COLUMNS:
        frame[c] = frame[c].astype(object)
    patients = len(frame)
    sample = frame.sample(200, random_state=0)
    texts = make_texts(sample)
    base_rss = rss_mb()
    base_peak = peak_rss_mb()
    t = time.perf_counter()
    index = IdentifierIndex.from_frames([(frame, ID_COLUMNS)])
    build_s = time.perf_counter() - t
    peak = peak_rss_mb()
    results: list[dict[str, Any]] = [
        {
            "bench": "identifier_index.build",
            "patients": patients,
            "values": len(index),
            "variants": int(len(index._entries)),
            "build_s": round(build_s, 2),
            "index_mb": round(index.nbytes / 2**20, 1),
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
        best, median = timed(index.find, text, repeat)
        b_low, _ = timed(lower_in, text, repeat)
        b_re, _ = timed(regex_set, text, max(3, repeat // 2))
        full, _ = timed(lambda t: scan_text(t, index), text, max(3, repeat // 3))
        mbps = size / best
        results.append(
            {
                "bench": "identifier_index.scan",
                "patients": patients,
                "text": name,
                "mb": round(size, 3),
                "matches": found,
                "find_mb_s": round(mbps, 1),
                "find_mb_s_median": round(size / median, 1),
                "scan_text_mb_s": round(size / full, 1),
                "baseline_lower_in_mb_s": round(size / b_low, 1),
                "baseline_regex_set_mb_s": round(size / b_re, 1),
                "ratio_vs_regex_set": round(b_re / best, 2),
                "ratio_vs_lower_in": round(b_low / best, 3),
                "target_mb_s": 100,
            }
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(build_and_scan(args._child, args.repeat)))
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
                [sys.executable, __file__, "--_child", str(path), "--repeat", str(args.repeat)],
                capture_output=True,
                text=True,
                check=True,
            )
            for row in json.loads(proc.stdout.strip().splitlines()[-1]):
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
