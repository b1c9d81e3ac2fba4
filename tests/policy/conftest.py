"""Shared fixtures: the issue's minimal policy and a small synthetic hospital."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bedside.policy import IdentifierIndex, load_dataset, load_policy
from bedside.policy.synthetic import write_demo_hospital
from tests._hospital import RULES

MINIMAL = f"""\
version: bedside/v1
id: demo-hospital
datasets:
  patients:
    path: data/patients.parquet
    record_id: mrn
    identifiers: [mrn, name, dob, postcode, phone]
{RULES}"""

PATIENTS = 2000


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2,000-patient demo hospital (Parquet and CSV) with its policy; built once."""
    out = tmp_path_factory.mktemp("hospital")
    write_demo_hospital(out, patients=PATIENTS, seed=7, progress=False)
    return out


@pytest.fixture(scope="session")
def patients(hospital: Path) -> pd.DataFrame:
    policy = load_policy(hospital / "policy.yaml")
    return load_dataset(policy.datasets["patients"])


@pytest.fixture(scope="session")
def patient_index(patients: pd.DataFrame) -> IdentifierIndex:
    return IdentifierIndex.from_frames([(patients, ["mrn", "name", "dob", "postcode", "phone"])])


@pytest.fixture(scope="session")
def ordinary_outputs(patients: pd.DataFrame) -> list[str]:
    """Outputs of ordinary analysis on the demo patients, plus fixed realistic texts."""
    from .outputs import FIXED, generated

    return generated(patients) + FIXED


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A directory with the minimal policy and a one-row patients table it names."""
    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "mrn": ["MRN00012345"],
            "name": ["Ada Lovelace"],
            "dob": ["1956-03-12"],
            "postcode": ["SW1A 1AA"],
            "phone": ["020 7946 0123"],
            "age": [70],
        }
    ).to_parquet(tmp_path / "data" / "patients.parquet")
    (tmp_path / "policy.yaml").write_text(MINIMAL)
    return tmp_path
