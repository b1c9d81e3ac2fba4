"""`bedside.policy._parquet.column_names` reads the same top-level names as pyarrow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bedside.policy._parquet import column_names


def _tables() -> dict[str, pa.Table]:
    n = 50
    wide = pa.table({f"c{i:03d}": pa.array(np.arange(n)) for i in range(40)})
    nested = pa.table(
        {
            "mrn": [f"MRN{i:08d}" for i in range(n)],
            "visit": pa.array([{"ward": "A", "when": {"d": 1, "h": 2}}] * n),
            "codes": pa.array([["x", "y"]] * n),
            "attrs": pa.array([[("k", 1)]] * n, type=pa.map_(pa.string(), pa.int64())),
            "flag": [True, False] * (n // 2),
            "born": [dt.date(1950, 1, 1)] * n,
            "ünïcode name": [1.5] * n,
        }
    )
    frame = pd.DataFrame({"a": range(n), "b": ["x"] * n}, index=pd.Index(range(100, 100 + n)))
    return {
        "wide": wide,
        "nested": nested,
        "pandas-index": pa.Table.from_pandas(frame),
        "one": pa.table({"only": [1]}),
    }


@pytest.mark.parametrize("name", sorted(_tables()))
@pytest.mark.parametrize("compression", ["snappy", "none"])
def test_same_names_as_pyarrow(tmp_path: Path, name: str, compression: str) -> None:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(_tables()[name], path, compression=compression)
    assert column_names(path) == list(pq.read_schema(path).names)


def test_a_file_that_is_not_parquet_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"mrn,name\n1,a\n")
    with pytest.raises(ValueError):
        column_names(path)
    path.write_bytes(b"PAR1" + b"\x00" * 20 + b"\x05\x00\x00\x00PAR1")
    with pytest.raises(ValueError):
        column_names(path)
