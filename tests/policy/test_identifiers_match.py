"""`IdentifierIndex.find` builds its `IdentifierMatch` objects without the dataclass `__init__`
(a megabyte of output can hold thousands): they must be the very objects `__init__` makes."""

from __future__ import annotations

import dataclasses
import pickle

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import IdentifierIndex
from bedside.policy.identifiers import STRONG, WEAK, IdentifierMatch


@pytest.fixture(scope="module")
def index() -> IdentifierIndex:
    """Record numbers, names and dates of birth (weak alone, strong beside a name)."""
    n = 400
    frame = pd.DataFrame(
        {
            "hosp_no": [f"{5_000_000 + 13 * i}" for i in range(n)],
            "full_name": [f"Quill{i:04d} Varn{i % 97:02d}q" for i in range(n)],
            "birth_date": pd.date_range("1950-01-01", periods=n, freq="7D").strftime("%Y-%m-%d"),
        }
    )
    return IdentifierIndex.from_frames([(frame, ["hosp_no", "full_name", "birth_date"])])


def _rebuilt(m: IdentifierMatch) -> IdentifierMatch:
    return IdentifierMatch(m.start, m.end, m.value_kind, m.strength)


def assert_same_as_init(found: list[IdentifierMatch]) -> None:
    for m in found:
        ref = _rebuilt(m)
        assert type(m) is IdentifierMatch
        assert m == ref and ref == m
        assert hash(m) == hash(ref)
        assert repr(m) == repr(ref)
        assert vars(m) == vars(ref)
        assert list(vars(m)) == list(vars(ref))  # field order, as asdict/astuple read it
        assert dataclasses.astuple(m) == dataclasses.astuple(ref)
        assert pickle.loads(pickle.dumps(m)) == ref
        assert type(m.start) is int and type(m.end) is int
        assert m.strength in (STRONG, WEAK)
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.start = 0  # type: ignore[misc]


_pieces = st.lists(
    st.sampled_from(
        [
            "5000013",
            "05000026",
            "Quill0003 Varn03q",
            "quill0010 varn10q",
            "1950-01-08",
            "1950-01-15",
            "8 Jan 1950",
            "█",
            "é",
            " ",
            "\n",
            ", ",
            "total 12",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=60, deadline=None)
@given(text=_pieces, limit=st.none() | st.integers(0, 5))
def test_find_makes_the_objects_init_makes(index: IdentifierIndex, text: str, limit: int) -> None:
    assert_same_as_init(index.find(text, limit=limit))


def test_weak_and_strong_matches_are_built_alike(index: IdentifierIndex) -> None:
    far = " ".join(["cohort"] * 100)  # a date this far from any other value stays weak
    found = index.find(f"born 1950-01-08 {far}\n{far}\n5000013 Quill0001 Varn01q 1950-01-15 █")
    assert {m.strength for m in found} == {STRONG, WEAK}
    assert_same_as_init(found)
