"""TEMPORARY stand-in for bedside.policy's loader and identifier index until that branch lands.

Only used when `bedside.policy` does not yet export `load_policy`; delete after the merge.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ahocorasick
import pandas as pd
import yaml

from bedside.errors import PolicyError


def load_policy(path: Path) -> Any:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(str(exc), path=str(path), fix="write valid YAML") from exc
    if not isinstance(raw, dict) or raw.get("version") != "bedside/v1":
        raise PolicyError("version must be bedside/v1", path=str(path), line=1,
                          fix="start the file with `version: bedside/v1`")
    d = raw.get("disclosure", {})
    dom = d.get("dominance", {})
    datasets = {
        name: SimpleNamespace(name=name, path=(path.parent / ds["path"]).resolve(),
                              format=Path(ds["path"]).suffix.lstrip("."),
                              record_id=ds["record_id"], identifiers=list(ds["identifiers"]))
        for name, ds in raw["datasets"].items()
    }
    return SimpleNamespace(
        id=raw["id"], version=raw["version"], path=path, datasets=datasets,
        disclosure=SimpleNamespace(
            min_cell_count=d.get("min_cell_count", 10), round_counts_to=d.get("round_counts_to", 5),
            dominance_n=dom.get("n", 2), dominance_k=dom.get("k", 0.9),
            p_ratio=d.get("p_ratio", 0.1), zeros_disclosive=d.get("zeros_disclosive", True),
            extremes=d.get("extremes", "suppress")),
        errors=raw.get("errors", "scrub"), shell=raw.get("shell", "deny"),
        magics_deny=raw.get("magics_deny", []),
    )


def load_dataset(ds: Any) -> pd.DataFrame:
    dtype = {c: str for c in ds.identifiers}
    if str(ds.path).endswith(".csv"):
        return pd.read_csv(ds.path, dtype=dtype)
    df = pd.read_parquet(ds.path)
    for c in ds.identifiers:
        df[c] = df[c].astype(str)
    return df


class _Match(SimpleNamespace):
    pass


class IdentifierIndex:
    def __init__(self, values: list[tuple[str, str]]) -> None:
        self._a = ahocorasick.Automaton()
        for v, kind in values:
            v = v.lower().strip()
            if len(v) >= 3:
                self._a.add_word(v, (len(v), kind))
        self._empty = len(self._a) == 0
        if not self._empty:
            self._a.make_automaton()

    @classmethod
    def from_frames(cls, frames: list[tuple[pd.DataFrame, list[str]]]) -> IdentifierIndex:
        vals = []
        for df, cols in frames:
            for c in cols:
                vals.extend((str(v), c) for v in df[c].dropna().unique())
        return cls(vals)

    def first(self, text: str) -> Any:
        if self._empty:
            return None
        low = text.lower()
        for end, (n, kind) in self._a.iter(low):
            start = end - n + 1
            if (start == 0 or not low[start - 1].isalnum()) and (
                end + 1 == len(low) or not low[end + 1].isalnum()
            ):
                return _Match(start=start, end=end + 1, value_kind=kind)
        return None


_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")


def scan_phi(text: str) -> list[Any]:
    m = _EMAIL.search(text)
    return [_Match(kind="email", start=m.start(), end=m.end())] if m else []
