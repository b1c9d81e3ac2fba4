"""`bench/run_all.py --reuse`: a benchmark not run this time shows its kept result, dated."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("run_all", REPO / "bench" / "run_all.py")
assert _spec is not None and _spec.loader is not None
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

SCRIPT = REPO / "bench" / "bench_guard_utility.py"


def test_reused_section_shows_the_kept_ratios_and_when_they_were_measured(tmp_path: Path) -> None:
    doc = {
        "summary": "Guard utility on unseen tables.",
        "ratios": {"false_positive_rate": 0.0},
        "bench_run": {"date": "2026-11-29 21:10 UTC", "seconds": 2400},
    }
    (tmp_path / "bench_guard_utility.json").write_text(json.dumps(doc))
    text = run_all.reused_section(SCRIPT, tmp_path)
    assert text.startswith("## bench_guard_utility\n\nGuard utility on unseen tables.")
    assert "| false_positive_rate | 0 |" in text
    assert "Not run by this `make bench`" in text
    assert "measured 2026-11-29 21:10 UTC, in 2400 s" in text


def test_a_result_without_its_run_record_is_dated_by_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bench_guard_utility.json"
    path.write_text(json.dumps({"ratios": {"x": 1.5}}))
    text = run_all.reused_section(SCRIPT, tmp_path)
    assert "(the file's time)" in text and "| x | 1.5 |" in text


def test_no_kept_result_says_how_to_get_one(tmp_path: Path) -> None:
    text = run_all.reused_section(SCRIPT, tmp_path)
    assert "no usable earlier result" in text
    assert "python bench/bench_guard_utility.py" in text
