"""Synthetic patients (identifiers from bedside.policy.synthetic, fixed seed) and models trained
on them, for the release tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from tests._hospital import make_patients as synthetic_patients

# The CI machine has two cores shared with the rest of the suite: small models train faster on one.
torch.set_num_threads(1)


@dataclass
class Cohort:
    frame: pd.DataFrame
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def make_patients(n: int, seed: int) -> pd.DataFrame:
    """Record numbers and names of the synthetic hospital (tests/_hospital.py), with clinical
    columns of a known risk model, so that a model trained on them learns something."""
    identifiers = synthetic_patients(n, seed)
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    bmi = rng.normal(27, 5, n).round(1)
    sbp = rng.normal(130, 15, n).round()
    chol = rng.normal(5.2, 1.0, n).round(2)
    risk = 0.04 * (age - 50) + 0.08 * (bmi - 27) + 0.03 * (sbp - 130) + 0.5 * (chol - 5.2)
    y = (risk + rng.normal(0, 1.0, n) > 0).astype(np.int64)
    return pd.DataFrame(
        {
            "mrn": identifiers["mrn"],
            "name": identifiers["name"],
            "age": age,
            "bmi": bmi,
            "sbp": sbp,
            "cholesterol": chol,
            "diabetes": y,
        }
    )


FEATURES = ["age", "bmi", "sbp", "cholesterol"]


@pytest.fixture(scope="session")
def cohort() -> Cohort:
    df = make_patients(600, seed=20261129)
    x = df[FEATURES].to_numpy(dtype=np.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = df["diabetes"].to_numpy()
    return Cohort(df, x[:400], y[:400], x[400:], y[400:])
