"""`text_spans` takes ordinary words 64 bytes a step with SSE2 (`words_block64` in
policy/_scanner.c) and eight bytes a step otherwise (`words_block`): its candidate spans must be
the reference path's exactly, wherever a run of base64, hex or spaced hex starts or ends
relative to those bytes, and the same with the SSE2 step turned off (`set_simd`).

The texts are words of letters in and out of a-f, both cases, joined mostly by single spaces
(the shape the step takes) and now and then by what ends it (two spaces, punctuation, digits,
Latin-1 letters), behind a prefix of every length modulo eight, so each run boundary falls on
every byte of a step.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import _scanner
from tests.policy.test_native import assert_spans_agree as _agree_with_reference

pytest.importorskip("bedside.policy._scanner")


def assert_spans_agree(text: str) -> None:
    """The spans agree with the reference path's, and the raw runs (before the decoders'
    filters, which hide a run kept by one character too few) with the one-character path's.

    A text of one-byte characters (Latin-1) takes the eight-byte steps; with a character beyond
    Latin-1 after it, the same text is read one character at a time (the steps read one-byte
    strings only). The "." between ends every base64, hex and spaced hex run where the text ends."""
    _agree_with_reference(text)
    steps = _scanner.text_spans(text)[:3]
    one_at_a_time = _scanner.text_spans(text + ".\u0100")[:3]
    assert steps == one_at_a_time, text
    assert_simd_agrees(text)


def assert_simd_agrees(text: str) -> None:
    """Everything `text_spans` returns is the same with the SSE2 step and without it."""
    before = _scanner.set_simd(False)
    try:
        scalar = _scanner.text_spans(text)
    finally:
        _scanner.set_simd(before)
    assert _scanner.text_spans(text) == scalar, text


# Letters of a-f (hex, both cases) and beyond it; lengths around the runs' minimum lengths
# (12 base64, 10 hex, 14 spaced hex) and the eight bytes of a step.
_WORD = st.text("abcdefABCDEFgxzGXZ", min_size=1, max_size=20) | st.sampled_from(
    ["deadbeefcafe", "DeadBeefCafeBabe", "abcdefabcdef", "aBcDeFaBcDeFaB", "cohort", "Ward"]
)
_GAP = st.sampled_from([" "] * 12 + ["  ", ".", ",", "-", ":", "\n", "7", " 12 ", "\t", "@"])
_words = st.lists(st.tuples(_WORD, _GAP), min_size=1, max_size=40).map(
    lambda pairs: "".join(w + g for w, g in pairs)
)


@settings(max_examples=300, deadline=None)
@given(text=_words, shift=st.integers(0, 7), pad=st.sampled_from([0, 2048]))
def test_word_steps_find_the_spans_one_character_at_a_time_finds(
    text: str, shift: int, pad: int
) -> None:
    # `pad` (letters) makes the text long enough for the number windows; `shift` moves every
    # boundary across the eight bytes of a step.
    assert_spans_agree("q" * (pad + shift) + text)


@pytest.mark.parametrize("end", ["", " ", "  ", "x", "é"])
def test_spaced_hex_and_base64_runs_through_whole_steps(end: str) -> None:
    # Runs much longer than a step: spaced hex over many steps, base64 of both cases, hex;
    # each ended (or not) by the last character.
    for body in (
        "ab cd ef 01 " * 3 + "ab cd ef ab cd ef ab cd ef",
        "aBcDeFgHiJkLmNoPqRsTuVwXyZ" * 3,
        "deadbeef" * 6,
        "face bead cafe dead beef " * 4,
    ):
        for lead in ("", "w", "wo", "word ", "words q"):
            assert_spans_agree(lead + body + end)


@pytest.mark.parametrize("length", range(8, 17))
def test_hex_runs_of_every_length_near_the_minimum_end_anywhere_in_a_step(length: int) -> None:
    # A hex run (10 or more) or spaced hex run (14 or more) kept or not by one character, ended
    # by a space or by a letter outside a-f at each byte of a step.
    word = ("deadbeefcafe" * 2)[:length]
    for shift in range(8):
        for after in (" word", "x word", "X", "  ", " ab cd ef 12 34 56 78 z"):
            assert_spans_agree("q" * shift + "word " + word + after)
            assert_spans_agree("q" * shift + "word " + word.upper() + after)
            assert_spans_agree("q" * shift + "wo " + " ".join([word[:4], word]) + after)


@pytest.mark.parametrize("pairs", range(4, 8))
def test_spaced_hex_runs_near_the_minimum_end_anywhere_in_a_step(pairs: int) -> None:
    # Spaced hex ("ab cd ef ...", 14 characters or more with ten hex digits) that starts right
    # after a letter outside a-f and ends at one, or at a space, at each byte of a step.
    run = " ".join(["ab", "cd", "ef", "fa", "ce", "db", "be"][:pairs])
    for shift in range(8):
        for before, after in (("x", "x"), ("x", " wx"), ("wx ", "z"), ("x", "")):
            for extra in ("", "a", "ab"):
                assert_spans_agree("q" * shift + "word " + before + run + extra + after)


@pytest.mark.parametrize("digits", range(7, 12))
def test_spaced_hex_counts_only_its_own_digits(digits: int) -> None:
    # Single hex letters apart ("a b c ..."): long enough, but kept only with ten hex digits;
    # hex letters before the letter that starts the run (in the same step) are not its own.
    run = " ".join("abcdefabcdef"[:digits])
    for shift in range(8):
        for before in ("facex", "fx", "x", "beadx "):
            assert_spans_agree("q" * shift + "word " + before + run + "x tail")


# Words of every length around the runs' minimum lengths, mostly joined by single spaces, so
# that whole 64-byte steps are taken and runs that begin and end inside one (which the step
# leaves to the smaller steps) fall on every byte of it.
_LONG_WORD = st.text("abcdefABCDEFgxzGXZ", min_size=1, max_size=70) | st.sampled_from(
    ["deadbeefcafe", "DeadBeefCafeBabe", "abcdefabcdef", "aBcDeFaBcDeFaB", "characteristics",
     "a b c d e f a b c d e f", "face bead cafe dead beef", "Ward", "analysis"]
)  # fmt: skip
_SPACES = st.sampled_from([" "] * 30 + ["  ", ".", "7", "\n", "\u00e9", "\u00ff", "\x80"])
_prose = st.lists(st.tuples(_LONG_WORD, _SPACES), min_size=1, max_size=60).map(
    lambda pairs: "".join(w + g for w, g in pairs)
)


@settings(max_examples=400, deadline=None)
@given(text=_prose, shift=st.integers(0, 63))
def test_simd_steps_find_what_the_scalar_steps_find(text: str, shift: int) -> None:
    assert_spans_agree("q" * shift + text)


@pytest.mark.parametrize("seed", range(6))
def test_simd_steps_on_random_and_adversarial_bytes(seed: int) -> None:
    # Random texts over small alphabets (letters in and out of a-f, spaces, a non-ASCII
    # Latin-1 letter, a digit), and prose with one character changed at each position of a
    # 64-byte step, at 16-, 32- and 64-byte boundaries and next to them.
    import random

    rng = random.Random(seed)
    for _ in range(300):
        alphabet = rng.choice(["abcdefxyzABCDEFXYZ ", "abcdef ", "aB ", "aBcD xy\u00e9", "ab 7."])
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(60, 400)))
        assert_simd_agrees(text)
        assert_simd_agrees("q" * rng.randint(0, 63) + text)
    words = "cohort analysis survival model baseline outcome ward median interval".split()
    prose = " ".join(rng.choice(words) for _ in range(80))
    for at in [15, 16, 17, 31, 32, 33, 63, 64, 65, *range(0, 130, 7)]:
        for put in ("  ", "\u00e9", "\x80", "7", "A", "deadbeefcafef00d", "x" * 13, "\n"):
            assert_spans_agree(prose[:at] + put + prose[at + len(put) :])
