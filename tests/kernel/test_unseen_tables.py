"""The guard on tables, column names and phrasings it has not seen (the generator of
`bench/bench_guard_utility.py`), judged from the client's side.

A small hospital whose patients were born 2012-2024 (a children's hospital) covers most dates of
those years with a birthday, as a million patients cover every date of the last century, so the
dates of admission collide with birth dates here as they do at scale. Safe outputs (aggregates
whose every cell holds at least 10 patients, counted independently of the guard) must come
through in every phrasing; leaks (row listings, identifier values in new phrasings) must be
blocked, with none of the leaked values reaching the client.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.kernel._client import Session, running

ROOT = Path(__file__).resolve().parents[2]
N = 4000
SEED = 11
BIRTH_YEARS = (2012, 2024)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_guard_utility", ROOT / "bench" / "bench_guard_utility.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_guard_utility", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def tables() -> dict[str, Any]:
    return bench.generate(N, SEED, birth_years=BIRTH_YEARS)


@pytest.fixture(scope="module")
def unseen(tables: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    work = tmp_path_factory.mktemp("unseen")
    policy = bench.write(work, tables)
    with running(work / "spec", "bedside-unseen", policy) as session:
        setup = session.execute(bench.setup_code())
        assert bench.decision_of(setup)[0] != "error", setup.shown()[-1500:]
        yield session


def test_generator_is_deterministic_and_unseen(tables: dict[str, Any]) -> None:
    again = bench.generate(N, SEED, birth_years=BIRTH_YEARS)
    for name in ("cohort", "episodes", "labs"):
        pd.testing.assert_frame_equal(tables[name], again[name])
    corpus = {"mrn", "name", "dob", "postcode", "phone", "ward", "diagnosis", "cost", "age"}
    assert not corpus & set(tables["cohort"].columns)
    # Admission dates collide with birth dates, as at a million patients.
    admitted = set(tables["episodes"].admit_date.dt.strftime("%Y-%m-%d"))
    assert len(admitted & set(tables["cohort"].birth_date)) > 0.3 * len(admitted)


def _passes_threshold(tables: dict[str, Any], aggregate: tuple[Any, ...]) -> bool:
    """Every cell holds at least 10 patients and none is empty (independent of the guard)."""
    _, table, index, columns, _, _ = aggregate
    frame = bench.acro_tables(tables)[table]
    keys = [index] if columns is None else [index, columns]
    persons = frame.groupby(keys).patient_no.nunique()
    if columns is not None:
        persons = persons.unstack(fill_value=0)
    return bool((np.asarray(persons) >= 10).all())


SAFE_PHRASINGS = {k: bench.PHRASINGS[k] for k in ("object", "csv", "string")}


def test_safe_outputs_come_through(unseen: Session, tables: dict[str, Any]) -> None:
    safe = [a for a in bench.AGGREGATES if _passes_threshold(tables, a)]
    names = {a[0] for a in safe}
    assert {"weekly_admissions", "hba1c_by_imd", "labs_long_mean", "monthly_los"} <= names
    wrong = []
    for name, table, index, columns, values, aggfunc in safe:
        expr = bench.aggregate_code(table, index, columns, values, aggfunc)
        for phrase, template in SAFE_PHRASINGS.items():
            decision, rule = bench.decision_of(unseen.execute(f"X = {expr}\n{template}"))
            if decision in ("blocked", "error") or (phrase == "object" and decision == "redacted"
                                                    and rule != "rounding"):  # fmt: skip
                wrong.append(f"{name}/{phrase}: {decision} {rule}")
    assert wrong == []


def test_leaks_in_new_phrasings_are_stopped(unseen: Session, tables: dict[str, Any]) -> None:
    missed = []
    for name, code, values in bench.leak_cells(tables):
        reply = unseen.execute(code)
        decision, rule = bench.decision_of(reply)
        shown = reply.text().lower()
        seen = [v for v in values if v.lower() in shown]
        if decision != "blocked" or seen:
            missed.append(f"{name}: {decision} {rule}, {len(seen)} values seen")
    assert missed == []


def test_row_structure_needs_informative_runs() -> None:
    """Runs of common values (small counts) are not a row signature; rare values still are."""
    from bedside.kernel._scan import RowStructure

    rng = np.random.default_rng(4)
    n = 200_000
    frame = pd.DataFrame(
        {
            "los_days": np.minimum(rng.negative_binomial(2, 0.35, n), 120),
            "hba1c_mmol": np.round(rng.lognormal(np.log(42), 0.25, n), 1),
        }  # fmt: skip
    )
    rows = RowStructure()
    rows.add_frame(frame, [])
    assert not rows.matches(np.array([1.0, 48.2, 2.0, 47.9, 3.0, 47.5, 4.0, 48.8, 5.0, 48.1]))
    # A long run of small counts still is one.
    assert rows.matches(frame.los_days.to_numpy()[1000:1040].astype(float))
    assert not rows.matches(np.arange(1.0, 13.0))
    assert rows.matches(frame.hba1c_mmol.to_numpy()[5000:5010])
    interleaved = frame.iloc[7000:7010].to_numpy().ravel()
    assert rows.matches(interleaved)
