"""A long ASCII text is matched a window of tokens at a time (`match_windows` in
policy/_scanner.c), each window starting a few tokens before the end of the one before: a value
that straddles the end of a window (a name, a phone number in digit groups, a date, the longest
sequence an index holds) must be found as the reference path finds it, forwards and backwards
(also by `find_both`, which reverses each window's tokens), wherever it falls.
"""

from __future__ import annotations

import pandas as pd
import pytest

from bedside.policy import IdentifierIndex, _tokens
from tests.policy._native import reference
from tests.policy.test_native import INDEXES

_scanner = pytest.importorskip("bedside.policy._scanner")

WINDOW_TOKENS = 4096  # as policy/_scanner.c
MAX_DIGIT_GROUPS = 6
FILLER = "w "  # one token a filler, never indexed (one letter)


def _ends(index: IdentifierIndex) -> list[int]:
    """The token counts at which the first two windows end."""
    overlap = max([MAX_DIGIT_GROUPS, *index._lengths])
    return [WINDOW_TOKENS, 2 * WINDOW_TOKENS - overlap]


def _agree(index: IdentifierIndex, text: str) -> None:
    raw = _tokens.lower_bytes(text)
    assert len(raw) > 64 * 1024  # long enough to be matched in windows
    forwards = index._find_lowered(text, raw)
    backwards = index._find_lowered(lambda: text[::-1], raw, backwards=True)
    with reference(index):
        assert index._find_lowered(text, raw) == forwards
        assert index._find_lowered(text[::-1], raw, backwards=True) == backwards
    assert forwards or backwards  # the value is there, one way or the other
    # Both from one tokenization (`find_both`), whole and in two parts.
    assert index._find_both(text, raw) == (forwards, backwards)
    for cut in (len(raw) // 3, len(raw) // 2):
        parts = [index._both_part(raw, 0, cut), index._both_part(raw, cut, len(raw))]
        assert index._find_both(text, raw, parts) == (forwards, backwards)


def _values(patients: pd.DataFrame) -> list[str]:
    row = patients.iloc[3]
    return [str(row[c]) for c in ("name", "mrn", "phone", "dob", "postcode")]


# An index whose longest sequence is shorter than MAX_DIGIT_GROUPS: the digit groups set the
# overlap.
DIGITS = IdentifierIndex.build(["000123456789", "John Smith"])


@pytest.mark.parametrize("which", ["patients", "loose", "digits"])
def test_values_straddling_a_window_end_are_found(
    patient_index: IdentifierIndex, patients: pd.DataFrame, which: str
) -> None:
    if which == "patients":
        index, values = patient_index, _values(patients)
    elif which == "loose":
        index = INDEXES["loose"]
        values = ["4 5 6 7 8 9 1 2", "Ab 12 Cd", "000123456789", "0001 2345 6789", "12 34"]
    else:
        index, values = DIGITS, ["00 01 23 45 67 89", "0001 23 45 67 89", "John Smith"]
    tail = FILLER * 36000
    for value in values:
        width = len(value.split()) + MAX_DIGIT_GROUPS
        for end in _ends(index):
            for at in range(end - width - 2, end + 3):
                _agree(index, FILLER * at + value + " " + tail)
                # written backwards too, for the reversed search
                _agree(index, FILLER * at + value[::-1] + " " + tail)


def test_a_window_of_one_long_token_and_no_separators(patient_index: IdentifierIndex) -> None:
    # Tokens far longer than a window's bytes, and a text that is one token: windows end on
    # token counts, not bytes.
    for text in ("x" * 70_000 + " john smith", "ab1" * 30_000 + " smith", "9" * 70_000):
        raw = _tokens.lower_bytes(text)
        got = patient_index._find_lowered(text, raw)
        with reference(patient_index):
            assert patient_index._find_lowered(text, raw) == got
