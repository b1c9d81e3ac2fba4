"""`Matcher.find_both` (policy/_scanner.c) finds an ASCII text's matches forwards and in its
reversal from one tokenization: the reversed text's tokens are made from the text's (mirrored
offsets, hashes of the bytes read backwards, a digit token's trailing zeros as its leading ones,
the gap before a token as the gap after it). Whatever it finds must be what `find` finds on the
bytes and on the bytes reversed, for the whole text and for any two parts of it (`scan_text`
runs the parts in threads), and what the reference path finds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import IdentifierIndex, _tokens
from tests.policy._native import reference
from tests.policy.test_native import INDEXES, PIECES

_scanner = pytest.importorskip("bedside.policy._scanner")

# Digit tokens whose reversal drops other zeros (trailing zeros lead once reversed), groups in
# parentheses (a reversed "(020) 7946" reads "6497 )020(": not joinable the same way), tokens
# longer than eight bytes and than MAX_TOKEN (64), letters against digits without a gap.
_PIECES = [
    *(p for p in PIECES if p.isascii()),
    "1000",
    "000",
    "0",
    "0001200",
    "54321000",
    "00012345",
    "(020) 7946 0123",
    "3210 6497 )020(",
    "020-7946-0123",
    "12 34 56 78 90 12",
    "21 09 87 65 43 21",
    "ab12cd",
    "htims nhoj",
    "nhoj",
    "x" * 70,
    "9" * 66,
    "1" + "0" * 70,
    "abcdefghijklmnopq",
    "8" * 9,
]
_texts = st.lists(
    st.sampled_from(_PIECES) | st.text("aZ09 -/.,:@+()\n", max_size=8), max_size=40
).map("".join)

DIGITS = IdentifierIndex.build(
    ["000123456789", "John Smith", "020 7946 0123", "5432100", "1000000"]
)
ALL = {**INDEXES, "digits": DIGITS}


def _spans(ix: IdentifierIndex, records: bytes) -> list[list[int]]:
    return [a.tolist() for a in ix._records_spans(records)]


def _agree(ix: IdentifierIndex, raw: bytes, cuts: list[int]) -> None:
    """find_both's records, whole and in two parts at each cut, are find's."""
    assert ix._matcher is not None
    fwd = _spans(ix, ix._matcher.find(raw))
    bwd = _spans(ix, ix._matcher.find(raw[::-1]))
    f, b = ix._matcher.find_both(raw)
    assert (_spans(ix, f), _spans(ix, b)) == (fwd, bwd), raw
    for cut in cuts:
        (f1, b1), (f2, b2) = ix._both_part(raw, 0, cut), ix._both_part(raw, cut, len(raw))
        assert (_spans(ix, f1 + f2), _spans(ix, b1 + b2)) == (fwd, bwd), (raw, cut)


@settings(max_examples=300, deadline=None)
@given(text=_texts, cuts=st.lists(st.integers(0, 400), max_size=3))
def test_find_both_is_find_forwards_and_on_the_reversed_bytes(text: str, cuts: list[int]) -> None:
    raw = _tokens.lower_bytes(text)
    for ix in ALL.values():
        if ix._matcher is not None:
            _agree(ix, raw, [c % (len(raw) + 1) for c in cuts])


@settings(max_examples=150, deadline=None)
@given(text=_texts)
def test_find_both_agrees_with_the_reference_path(text: str) -> None:
    raw = _tokens.lower_bytes(text)
    for ix in ALL.values():
        got = ix._find_both(text, raw)
        with reference(ix):
            want = (ix._find_lowered(text, raw), ix._find_lowered(text[::-1], raw[::-1]))
            assert ix._find_both(text, raw) == want, text
        assert got == want, text


def test_every_cut_of_a_short_text_finds_everything() -> None:
    # A cut inside a token moves to the token's end (a part never starts inside one), so the
    # parts neither cut a value nor miss one, wherever the cut falls.
    text = (
        "MRN 00012345 john smith 020 7946 0123 0012345 ab12cd 987654321000 (020) 7946 0123 "
        "htims nhoj 0000001 1000000 3210-6497-020"
    )
    raw = _tokens.lower_bytes(text)
    assert DIGITS._matcher is not None
    found = DIGITS._find_both(text, raw)
    assert found[0] and found[1]  # something forwards and something backwards
    for ix in ALL.values():
        if ix._matcher is not None:
            _agree(ix, raw, list(range(len(raw) + 1)))


def test_parts_of_a_long_text_meet_at_any_cut(patient_index: IdentifierIndex) -> None:
    # Values on both sides of the cut, across window ends (4096 tokens), written both ways.
    values = ["john smith", "020 7946 0123", "(020) 7946-0123", "000123456789", "12 000"]
    rng = np.random.default_rng(5)
    words = ["cohort", "w", "12", "0", "7946", "ab", "x" * 70, "9" * 66]
    parts: list[str] = []
    for i in range(30_000):
        parts.append(words[int(rng.integers(len(words)))])
        if i % 997 == 0:
            value = values[(i // 997) % len(values)]
            parts.append(value if i % 2 else value[::-1])
    text = " ".join(parts)
    raw = _tokens.lower_bytes(text)
    n = len(raw)
    for ix in (DIGITS, patient_index):
        cuts = [0, 1, n // 2, n - 1, n, *(int(c) for c in rng.integers(0, n, size=6))]
        _agree(ix, raw, cuts)


def test_a_text_outside_ascii_is_refused() -> None:
    assert DIGITS._matcher is not None
    with pytest.raises(ValueError, match="ASCII"):
        DIGITS._matcher.find_both("zoë smith".encode())
