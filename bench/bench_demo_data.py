"""Benchmark `bedside demo-data`: time to write a synthetic hospital of 1,000,000 patients.

Measures `write_demo_hospital` (patients, admissions, lab results; Parquet and CSV; policy) and,
as the plain path in the same run, generating patients row by row with Faker calls (the obvious
implementation) on a sample, extrapolated to the same number of patients.

    .venv/bin/python bench/bench_demo_data.py [--patients 1000000] [--out FILE]

Prints one JSON object per line; `--out` also writes them as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def per_row_faker(rows: int, seed: int) -> float:
    """Seconds to make `rows` patients the naive way: one Faker call per field per row."""
    from faker import Faker

    fake = Faker("en_GB")
    fake.seed_instance(seed)
    rnd = random.Random(seed)
    t = time.perf_counter()
    out = []
    for i in range(rows):
        out.append(
            {
                "mrn": f"MRN{i:08d}",
                "name": fake.name(),
                "dob": fake.date_of_birth(minimum_age=0, maximum_age=104).isoformat(),
                "postcode": fake.postcode(),
                "phone": fake.phone_number(),
                "sex": rnd.choice("FM"),
                "age": rnd.randint(0, 104),
                "ward": rnd.choice(["Cardiology", "Surgery", "Oncology"]),
                "diagnosis": rnd.choice(["I21.9", "J18.9", "C34.9"]),
                "los_days": int(rnd.lognormvariate(1.4, 0.75)),
                "cost": round(rnd.lognormvariate(8.5, 0.6), 2),
                "hiv": int(rnd.random() < 0.003),
                "died": int(rnd.random() < 0.04),
            }
        )
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from bedside.policy.synthetic import write_demo_hospital

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        t = time.perf_counter()
        paths = write_demo_hospital(tmp, patients=args.patients, seed=args.seed, progress=True)
        seconds = time.perf_counter() - t
        import pyarrow.parquet as pq

        rows = {
            name.split(".")[0]: pq.read_metadata(path).num_rows
            for name, path in paths.items()
            if name.endswith(".parquet")
        }
        sizes = {name: path.stat().st_size for name, path in paths.items()}
    baseline = per_row_faker(args.baseline_rows, args.seed)
    extrapolated = baseline / args.baseline_rows * args.patients
    results.append(
        {
            "bench": "demo_data",
            "patients": args.patients,
            "seconds": round(seconds, 1),
            "patients_per_s": round(args.patients / seconds),
            "rows": rows,
            "bytes": sizes,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "baseline_per_row_faker_patients_only_s": round(extrapolated, 1),
            "baseline_sample_rows": args.baseline_rows,
            "speedup_vs_per_row_faker": round(extrapolated / seconds, 1),
        }
    )
    for row in results:
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
