"""What the red-team files (test_redteam9, test_redteam10) share: a guarded kernel behind the real
sentry for one synthetic hospital, a cell's messages as the client received them, the guards'
decisions among them, and runs of values in record order (what a listing of rows shows)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from _sentry_support import Client, start_sentry, write_hospital  # noqa: E402


@contextmanager
def sentry_client(frame: pd.DataFrame, policy: str, setup: str, root: Path) -> Iterator[Client]:
    """A client of the sentry in front of the guarded kernel, with `setup` run in it."""
    hospital = write_hospital(root / "hospital", frame, policy)
    sentry = start_sentry(hospital, root / "run", kernel="guarded")
    c = None
    try:
        c = Client.connect(sentry)
        reply, outputs = c.execute(setup)
        assert reply["content"]["status"] == "ok", (reply["content"], outputs)
        yield c
    finally:
        if c is not None:
            c.close()
        sentry.stop()


def run_cell(client: Client, code: str) -> list[dict[str, Any]]:
    """Every message the client received for one cell, on every channel."""
    before = len(client.received)
    client.execute(code)
    client.drain()
    return [m for _, m in client.received[before:]]


def decisions(messages: list[dict[str, Any]]) -> list[str]:
    """The guards' decisions (`metadata["bedside"]["decision"]`) among these messages."""
    out = []
    for m in messages:
        for meta in (m.get("metadata") or {}, (m.get("content") or {}).get("metadata") or {}):
            if isinstance(meta, dict) and isinstance(meta.get("bedside"), dict):
                out.append(meta["bedside"].get("decision", ""))
    return out


def record_runs(col: np.ndarray, k: int = 5) -> set[tuple[float, ...]]:
    """Every run of `k` consecutive values (not all equal) of a column's first 400 rows."""
    vals = np.round(col[:400], 2).tolist()
    return {
        tuple(vals[i : i + k]) for i in range(len(vals) - k + 1) if len(set(vals[i : i + k])) > 1
    }


def contains_run(nums: np.ndarray, runs: set[tuple[float, ...]], k: int = 5) -> bool:
    """Whether numbers shown hold one of `runs`, read one, two or three apart (a listing of
    several columns shows a column's values every second or third number)."""
    vals = np.round(nums, 2).tolist()
    for stride in range(1, 4):
        for off in range(stride):
            seq = vals[off::stride]
            if any(tuple(seq[i : i + k]) in runs for i in range(len(seq) - k + 1)):
                return True
    return False
