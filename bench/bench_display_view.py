"""What the display view costs `scan_text`: the same texts scanned with and without it.

The display view (`bedside.policy._display`) reads a text as a reader sees it (escapes,
overwrites, markup, invisible characters, look-alike letters). Plain ASCII without control
characters, `<` or `&` must cost next to nothing, and the HTML of a large pandas table (block
tags only) must not be scanned twice. Texts, at 10,000 synthetic patients' identifiers:

- `prose`: 1 MB of ASCII words (no view),
- `to_html`: `DataFrame.to_html()` of 3,000 clinical rows (markup check, no view),
- `repr_html`: the same table's `_repr_html_()` (with its `<style>` block),
- `styled`: a pandas Styler's HTML of aggregates (inline tags: a view),
- `french`: 1 MB of French prose (accented letters: folded, no view),
- `progress`: 1 MB of tqdm-style progress lines with carriage returns (a terminal view),
- `ansi`: 1 MB of ANSI-coloured log lines (a terminal view).

Times are the best CPU time (`time.process_time`) of `--repeat` calls, with `display=False`
(the plain path) and with it, in the same process; `ratio` is their quotient.

    .venv/bin/python bench/bench_display_view.py [--repeat 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

MB = 1_000_000


def texts() -> tuple[Any, dict[str, str]]:
    from bedside.policy import IdentifierIndex
    from bedside.policy.synthetic import make_pools, patients_chunk

    pools = make_pools(11, postcodes=1000)
    chunk = patients_chunk(0, 10_000, 11, pools)
    ids = ["mrn", "name", "dob", "postcode", "phone"]
    index = IdentifierIndex.from_frames([(pd.DataFrame({c: chunk[c] for c in ids}), ids)])
    df = pd.DataFrame({k: v for k, v in chunk.items() if k not in ids and k[0] != "_"})
    agg = df.groupby(["ward", "sex"])[["age", "los_days", "cost"]].mean().round(2)
    words = "cohort analysis survival model baseline outcome ward median interval".split()
    french = "Le patient a été hospitalisé; durée médiane du séjour élevée. "
    bar = "".join(f"\r{p:3d}%|{'█' * (p // 10):10s}| {p}/100 [00:01<00:00]" for p in range(101))
    line = "\x1b[32mINFO\x1b[0m epoch 3 loss=\x1b[33m0.412\x1b[0m auc=0.81\n"
    out = {
        "prose": " ".join(words[i % len(words)] for i in range(200_000))[:MB],
        "to_html": df.head(3000).to_html(),
        "repr_html": df.head(3000)._repr_html_(),
        "styled": agg.style.format(precision=1).highlight_max().to_html() * 20,
        "french": (french * (MB // len(french) + 1))[:MB],
        "progress": ((bar + "\n") * (MB // len(bar) + 1))[:MB],
        "ansi": (line * (MB // len(line) + 1))[:MB],
    }
    return index, out


def best_cpu(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from bedside.policy import scan_text

    index, cases = texts()
    rows = []
    for name, text in cases.items():
        plain = best_cpu(lambda t=text: scan_text(t, index, display=False), args.repeat)
        viewed = best_cpu(lambda t=text: scan_text(t, index), args.repeat)
        row = {
            "bench": "display_view",
            "text": name,
            "kb": round(len(text.encode()) / 1000, 1),
            "plain_ms": round(plain * 1e3, 2),
            "display_ms": round(viewed * 1e3, 2),
            "ratio": round(viewed / max(plain, 1e-9), 2),
            "findings": len(scan_text(text, index)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    # The last line is what `make bench` keeps: every text's ratio, and the rows.
    print(
        json.dumps(
            {
                "benchmark": "bench_display_view",
                "summary": "CPU time of `scan_text` with the display view against without it "
                "(the plain path), in the same process, per text.",
                "ratios": {f"{r['text']} with / without view": r["ratio"] for r in rows},
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
