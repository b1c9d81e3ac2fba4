"""A third synthetic table for the guard-gap tests, with names the corpus and the other tests never
use: `cohort` (record id `subject_id`) with low-cardinality columns (a single-letter trial arm, a
two-word site, a 0/1 flag, a two-valued gender), an admission month and skewed charges with two
dominant records in one site and arm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from faker import Faker

from tests._hospital import RULES

SITES = ["North Clinic", "South Clinic", "East Clinic", "West Clinic", "Central Clinic"]
IDENTIFIERS = ["subject_id", "given_name", "date_of_birth", "zipcode"]
N = 2000

POLICY = f"""\
version: bedside/v1
id: guard-gaps
datasets:
  cohort:
    path: cohort.csv
    record_id: subject_id
    identifiers: [subject_id, given_name, date_of_birth, zipcode]
{RULES}"""


def cohort(n: int = N, seed: int = 23) -> pd.DataFrame:
    fake = Faker("en_GB")
    Faker.seed(seed)
    rng = np.random.default_rng(seed)
    site = rng.choice(SITES, n)
    arm = rng.choice(["A", "B"], n)
    charges = np.round(rng.lognormal(7, 0.5, n), 2)
    # two records dominate the charges of East Clinic, arm B
    heavy = np.flatnonzero((site == "East Clinic") & (arm == "B"))[:2]
    charges[heavy] = [9_500_000.25, 8_700_000.75]
    months = pd.date_range("2023-01-01", periods=24, freq="MS").strftime("%Y-%m-%d")
    return pd.DataFrame(
        {
            "subject_id": [f"SUB{310000 + i * 7}" for i in range(n)],
            "given_name": [fake.name() for _ in range(n)],
            "date_of_birth": [
                fake.date_of_birth(minimum_age=18, maximum_age=95).isoformat() for _ in range(n)
            ],
            "zipcode": [fake.postcode() for _ in range(n)],
            "arm": arm,
            "gender": rng.choice(["female", "male"], n),
            "site": site,
            "readmitted": (rng.random(n) < 0.15).astype(int),
            "stay": rng.integers(1, 30, n),
            "charges": charges,
            "admit_month": rng.choice(months, n),
        }
    )


def write_cohort(root: Path) -> tuple[Path, pd.DataFrame]:
    frame = cohort()
    frame.to_csv(root / "cohort.csv", index=False)
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    return policy, frame
