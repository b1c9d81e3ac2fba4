"""Synthetic tables for the kernel tests: fixed seeds, written to temporary directories."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from faker import Faker

from tests._hospital import RULES

WARDS = [
    "Cardiology",
    "Oncology",
    "Respiratory",
    "Orthopaedics",
    "Neurology",
    "Renal",
    "Geriatrics",
    "General Surgery",
]
ICD10 = [
    "I10",
    "E11",
    "J44",
    "I50",
    "N18",
    "C34",
    "J18",
    "I21",
    "S72",
    "F32",
    "K35",
    "G40",
    "C50",
    "I48",
    "E78",
    "M17",
    "K80",
    "N39",
    "A41",
    "J45",
    "C18",
    "I63",
    "K57",
    "L03",
    "R07",
    "R55",
    "Z38",
    "O80",
    "M54",
    "B20",
]


def patients(n: int = 5000, seed: int = 7) -> pd.DataFrame:
    fake = Faker("en_GB")
    Faker.seed(seed)
    rng = np.random.default_rng(seed)
    today = dt.date(2026, 1, 1)
    dobs = [fake.date_of_birth(minimum_age=18, maximum_age=99) for _ in range(n)]
    age = np.array([(today - d).days // 365 for d in dobs])
    p_icd = 1.0 / np.arange(1, len(ICD10) + 1)
    died_p = 0.03 + 0.15 * (age > 65) + 0.1 * (age > 85)
    cost = np.round(rng.lognormal(8, 0.8, n), 2)
    return pd.DataFrame(
        {
            "mrn": [f"MRN{7000000 + i * 37:08d}" for i in range(n)],
            "name": [fake.name() for _ in range(n)],
            "dob": [d.isoformat() for d in dobs],
            "postcode": [fake.postcode() for _ in range(n)],
            "phone": [fake.phone_number() for _ in range(n)],
            "sex": rng.choice(["F", "M"], n),
            "age": age,
            "ward": rng.choice(WARDS, n),
            "diagnosis": rng.choice(ICD10, n, p=p_icd / p_icd.sum()),
            "los_days": rng.integers(1, 45, n),
            "cost": cost,
            "hiv": (rng.random(n) < 0.01).astype(int),
            "died": (rng.random(n) < died_p).astype(int),
        }
    )


def members(n: int = 3000, seed: int = 11) -> pd.DataFrame:
    """Another table with other names, so no test depends on the corpus's column names."""
    fake = Faker("en_US")
    Faker.seed(seed)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "member_no": [f"MB-{90000 + i * 13}" for i in range(n)],
            "full_name": [fake.name() for _ in range(n)],
            "birth_date": [
                fake.date_of_birth(minimum_age=20, maximum_age=90).isoformat() for _ in range(n)
            ],
            "zip": [fake.zipcode() for _ in range(n)],
            "mobile": [fake.phone_number() for _ in range(n)],
            "plan": rng.choice(["bronze", "silver", "gold", "platinum"], n),
            "years": rng.integers(0, 40, n),
            "claims": rng.poisson(3, n),
            "paid": np.round(rng.gamma(2.0, 900.0, n), 2),
            "smoker": (rng.random(n) < 0.2).astype(int),
        }
    )


POLICY = f"""\
version: bedside/v1
id: kernel-tests
datasets:
  patients:
    path: patients.parquet
    record_id: mrn
    identifiers: [mrn, name, dob, postcode, phone]
  members:
    path: members.csv
    record_id: member_no
    identifiers: [member_no, full_name, birth_date, zip, mobile]
{RULES}"""


def write_hospital(root: Path) -> tuple[Path, dict[str, pd.DataFrame]]:
    tables = {"patients": patients(), "members": members()}
    tables["patients"].to_parquet(root / "patients.parquet", index=False)
    tables["members"].to_csv(root / "members.csv", index=False)
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    return policy, tables
