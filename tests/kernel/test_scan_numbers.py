"""`numbers_in` reads the numbers of a text exactly as its original pattern did
(`(?<![\\w.])-?\\d+(?:\\.\\d*)?(?:[eE][+-]?\\d+)?`), only faster."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from bedside.kernel._scan import _NUM, RowStructure, numbers_in

ORIGINAL = re.compile(r"(?<![\w.])-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")


def test_the_pattern_finds_what_the_original_found():
    rng = random.Random(7)
    alphabet = "0123456789-.eE+ a_\n\t٣xZ,"
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert _NUM.findall(text) == ORIGINAL.findall(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no digits at all, only words",
        "a-12 x1e-5 y1e+5 1.2.3 -3.5e7 MRN00012 ٣٤ (7) -8 .5 5. --4",
        "mean 12.5 (sd 3.25), n=1234; range -4..17\n" * 500,
    ],
)
def test_numbers_in_agrees_with_the_original(text):
    expected = np.array(ORIGINAL.findall(text), dtype=float) if ORIGINAL.findall(text) else []
    got = numbers_in(text)
    assert list(got) == list(np.asarray(expected)[np.isfinite(expected)] if len(expected) else [])


def test_an_empty_row_structure_matches_nothing():
    assert RowStructure().empty
    assert not RowStructure().matches(np.arange(100.0))
