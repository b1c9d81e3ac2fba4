"""An identifier index whose birth dates cover a run of days, for the date-matching tests."""

from __future__ import annotations

import pandas as pd

from bedside.policy import IdentifierIndex


def birth_date_index(days: pd.DatetimeIndex) -> IdentifierIndex:
    """A patient born on each of `days`, with a numeric record number and a name each."""
    n = len(days)
    frame = pd.DataFrame(
        {
            "birth_date": days.strftime("%Y-%m-%d"),
            "hosp_no": [f"{4_000_000 + 7 * i}" for i in range(n)],  # numeric record numbers
            "full_name": [f"Pat{i:05d} Zed{i % 977:03d}x" for i in range(n)],
        }
    )
    return IdentifierIndex.from_frames([(frame, ["birth_date", "hosp_no", "full_name"])])
