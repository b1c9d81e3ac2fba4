"""Reading the protected tables a policy names, with identifier columns as text.

Identifier columns are read as `str` whatever the file's types (an MRN with leading zeros must
not become an integer, a date of birth must keep the form the index was built from); missing
values stay missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bedside.errors import PolicyError

if TYPE_CHECKING:
    import pandas as pd

    from bedside.policy.model import Dataset


def load_dataset(dataset: Dataset) -> pd.DataFrame:
    """Read `dataset` (Parquet, CSV or TSV) into a DataFrame; identifier columns are `str`."""
    import pandas as pd

    ids = list(dict.fromkeys([dataset.record_id, *dataset.identifiers]))
    if not dataset.path.is_file():
        raise PolicyError(
            f"dataset '{dataset.name}' file does not exist: {dataset.path}",
            fix="fix the dataset path in the policy (it is relative to the policy file)",
        )
    try:
        if dataset.format == "parquet":
            frame = pd.read_parquet(dataset.path)
        else:
            sep = "\t" if dataset.format == "tsv" else ","
            # Identifier columns as text from the start, so "000123" keeps its zeros.
            frame = pd.read_csv(
                dataset.path, sep=sep, dtype={c: str for c in ids}, low_memory=False
            )
    except PolicyError:
        raise
    except Exception as exc:  # whatever the reader raised, the custodian needs the file named
        raise PolicyError(
            f"cannot read dataset '{dataset.name}' as {dataset.format} ({type(exc).__name__})",
            path=str(dataset.path),
            fix="check the file is intact and the policy's `format:` matches it",
        ) from None
    for col in ids:
        if col not in frame.columns:
            raise PolicyError(
                f"dataset '{dataset.name}' has no column '{col}'",
                path=str(dataset.path),
                fix="the policy's record_id and identifiers must be columns of the file",
            )
        frame[col] = _as_text(frame[col])
    return frame


def _as_text(series: pd.Series[Any]) -> pd.Series[Any]:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        times = series.dt
        if bool(((times.hour == 0) & (times.minute == 0) & (times.second == 0)).all()):
            text = series.dt.strftime("%Y-%m-%d")
        else:
            text = series.dt.strftime("%Y-%m-%dT%H:%M:%S")
        return text.astype(object).where(series.notna(), None)
    if series.dtype == object and bool(series.map(lambda v: v is None or type(v) is str).all()):
        return series
    mask = series.notna()
    out = series.astype(object)
    out[mask] = series[mask].map(str)
    out[~mask] = None
    return out
