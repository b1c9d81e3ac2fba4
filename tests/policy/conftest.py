"""Shared fixtures: the issue's minimal policy and a small synthetic hospital."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bedside.policy import IdentifierIndex, load_dataset, load_policy
from bedside.policy.synthetic import write_demo_hospital

MINIMAL = """\
version: bedside/v1
id: demo-hospital
datasets:
  patients:
    path: data/patients.parquet
    record_id: mrn
    identifiers: [mrn, name, dob, postcode, phone]
disclosure:
  min_cell_count: 10
  round_counts_to: 5
  dominance: {n: 2, k: 0.9}
  p_ratio: 0.1
  zeros_disclosive: true
  extremes: suppress
outputs:
  mime_allow: [text/plain, text/html, image/png, application/json]
  max_output_bytes: 1000000
  session_egress_bytes: 50000000
errors: scrub
shell: deny
"""

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
