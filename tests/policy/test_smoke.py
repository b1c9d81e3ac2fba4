"""The first contract users rely on: the minimal policy loads, the index finds values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bedside.policy import IdentifierIndex, load_dataset, load_policy, scan_phi

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


def test_minimal_policy_loads_and_indexes(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    frame = pd.DataFrame(
        {
            "mrn": ["MRN00012345"],
            "name": ["Ada Lovelace"],
            "dob": ["1956-03-12"],
            "postcode": ["SW1A 1AA"],
            "phone": ["020 7946 0123"],
            "age": [70],
        }
    )
    frame.to_parquet(tmp_path / "data" / "patients.parquet")
    (tmp_path / "policy.yaml").write_text(MINIMAL)
    policy = load_policy(tmp_path / "policy.yaml")
    ds = policy.datasets["patients"]
    df = load_dataset(ds)
    index = IdentifierIndex.from_frames([(df, ds.identifiers)])
    assert index.first("patient ada lovelace, born 12/03/1956") is not None
    assert index.first("mean age 70") is None
    assert [m.kind for m in scan_phi("mail ada@example.org")] == ["email"]
