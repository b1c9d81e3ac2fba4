"""The per-cell benchmark's arithmetic and client (bench/bench_kernel_cell.py).

Its headline is the median over rounds of each round's guarded p50 / plain p50, with the
quartiles of those per-round ratios; one round made slow by other processes must not move it.
Its client reads shell and iopub as messages arrive and counts only the cell's own messages.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_kernel_cell", ROOT / "bench" / "bench_kernel_cell.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _rounds(bench: ModuleType, *medians_ms: float) -> list[list[Any]]:
    """One round per median: three runs around it."""
    return [[bench.Exchange(m * f / 1e3) for f in (0.9, 1.0, 1.1)] for m in medians_ms]


def test_headline_is_the_median_of_per_round_ratios(bench: ModuleType) -> None:
    runs = {
        "guarded": _rounds(bench, 10.5, 10.5, 10.5, 10.5, 40.0),  # the last round was loaded
        "plain": _rounds(bench, 10.0, 10.0, 10.0, 10.0, 10.0),
        "control": _rounds(bench, 10.0, 10.0, 10.0, 10.0, 10.0),
    }
    cpu = {"guarded": [2_100_000, 2_000_000, 2_200_000], "plain": [2_000_000] * 3,
           "control": [2_000_000] * 3}  # fmt: skip
    row = bench.summarize("aggregate", runs, cpu)
    assert row["ratio_p50"] == pytest.approx(1.05)
    assert row["ratio_p50_q1"] == pytest.approx(1.05)
    assert row["ratio_p50_q3"] == pytest.approx(1.05)
    assert row["per_round_ratios"][-1] == pytest.approx(4.0)
    assert row["control_ratio_p50"] == pytest.approx(1.0)
    assert row["ratio_cpu"] == pytest.approx(1.05)  # medians: 2.1 ms against 2.0 ms
    assert row["control_ratio_cpu"] == pytest.approx(1.0)


def test_reference_is_both_plain_kernels(bench: ModuleType) -> None:
    runs = {
        "guarded": _rounds(bench, 11.0, 11.0, 11.0),
        "plain": _rounds(bench, 12.0, 12.0, 12.0),  # the two plain kernels differ by the
        "control": _rounds(bench, 10.0, 10.0, 10.0),  # bench's own error
    }
    cpu = {k: [1_000_000] for k in runs}
    row = bench.summarize("print", runs, cpu)
    assert row["ratio_p50"] == pytest.approx(1.0)  # 11 against (12 + 10) / 2
    assert row["vs_plain_p50"] == pytest.approx(11 / 12)
    assert row["vs_control_p50"] == pytest.approx(1.1)
    assert row["control_ratio_p50"] == pytest.approx(10 / 12)


def test_client_counts_the_cells_own_messages(bench: ModuleType, guarded: Any) -> None:
    kc = guarded.kc
    kc.execute("print('late')")  # not waited for: its messages arrive during the next cell
    got = bench.exchange(kc, "1 + 1")
    assert got.seconds > 0
    assert got.messages == {"shell": 1, "iopub": 4}  # busy, execute_input, result, idle
    assert got.nbytes["iopub"] > got.nbytes["shell"] > 0
    again = bench.exchange(kc, "print('x')")
    assert again.messages["shell"] == 1 and again.messages["iopub"] >= 4  # stream chunks vary
