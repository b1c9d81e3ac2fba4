"""The SSE2 steps of the compiled scanner (policy/_scanner.c) against its scalar code.

`lower_ascii` reads 16 bytes a step, `plain_display` 64, `dense_runs` skips 32 bytes a step
where no run can be kept, and `separated_hints` passes 64 bytes at once where none holds a
position it stops at (else 16 at a time, as without the step); `set_simd(False)` turns those
steps off, so each result is compared with the scalar code's on the same string, and
`dense_runs` also with the Python reference. Inputs: random texts over small alphabets (so
that runs and the bytes that end them are dense), every character of interest put at each
position around the 16-, 32- and 64-byte boundaries of a step, and strings of every kind (a
character beyond ASCII or Latin-1 changes the loop taken). (`text_spans`'s 64-byte step:
test_spans_words.py.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import _encodings as enc
from bedside.policy._separated import MAX_DIGITS, MIN_GROUPED_DIGITS

_scanner = pytest.importorskip("bedside.policy._scanner")


def scalar(call: Callable[[], Any]) -> Any:
    before = _scanner.set_simd(False)
    try:
        return call()
    finally:
        _scanner.set_simd(before)


def assert_agree(text: str) -> None:
    if text.isascii():
        lowered = _scanner.lower_ascii(text)
        assert lowered == scalar(lambda: _scanner.lower_ascii(text)), text
        assert lowered == text.lower().encode("ascii"), text
    assert _scanner.plain_display(text) == scalar(lambda: _scanner.plain_display(text)), text
    for min_len in (12, 20):
        got = _scanner.dense_runs(text, min_len)
        assert got == scalar(lambda m=min_len: _scanner.dense_runs(text, m)), (text, min_len)
    assert enc.dense_spans(text) == enc.dense_spans(text, native=False), text
    for args in ((MIN_GROUPED_DIGITS, MAX_DIGITS, 6), (3, 4, 2)):
        got = _scanner.separated_hints(text, *args)
        assert got == scalar(lambda a=args: _scanner.separated_hints(text, *a)), (text, args)


# What each step looks for: controls (tab and line feed are plain), DEL, "<", "&"; dense runs
# ("!".."~") of base32/base85 shape among spaces; bytes beyond ASCII.
_SPECIAL = ["\t", "\n", "\r", "\x00", "\x1f", "\x7f", "<", "&", "\x80", "\u00e9", "\u00ff", " "]
# ... and what stops `separated_hints`: a single letter or digit, a digit run's first digit,
# one of "._/" after a digit, a line feed.
_SPECIAL += [" a ", " 7 ", "12.5", "1/2", "a_1", "x 1 2 3 4", "\nab\ncd"]
# (a long digit run, so that the "." or "/" after it is the only stop in 64 bytes)
_SPECIAL += ["1" * 70 + ". x", "2" * 90 + "/y", "3" * 75 + "_z"]
_RUNS = ["GJQTEMZUGQ2DMNZY", "7rN?TC`lPgDKKd", '<~87cURD]i,"Ebo80~>', "A" * 11, "A" * 12]
_ALPHABETS = [
    "ab ",
    "aZE09.2+/=!~[`, \n",
    "AB CD",
    "Ab\u00e9 ",
    "x<&y \t",
    "QWERTYUIOP12 ",
    "ab 1._/\n",
]


def _texts(rng: random.Random) -> Iterator[str]:
    for _ in range(200):
        alphabet = rng.choice(_ALPHABETS)
        yield "".join(rng.choice(alphabet) for _ in range(rng.randint(40, 300)))
    words = "cohort analysis survival model baseline outcome ward median interval".split()
    prose = " ".join(rng.choice(words) for _ in range(60))
    for at in [11, 12, 13, 15, 16, 17, 31, 32, 33, 51, 52, 53, 63, 64, 65, 127, 128, 129]:
        for put in [*_SPECIAL, *_RUNS]:
            yield prose[:at] + put + prose[at + len(put) :]


@pytest.mark.parametrize("seed", range(4))
def test_simd_steps_agree_with_the_scalar_code(seed: int) -> None:
    for text in _texts(random.Random(seed)):
        assert_agree(text)
        # The same beyond Latin-1 (two-byte strings take their own loops).
        assert_agree(text + "\u0100")


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(_RUNS)
        | st.text(st.sampled_from("aZ09 ._/!~\n<&\t\x7f\u00e9"), max_size=30),
        max_size=20,
    ),
    shift=st.integers(0, 63),
)
def test_simd_steps_agree_on_mixed_texts(pieces: list[str], shift: int) -> None:
    assert_agree("q" * shift + "".join(pieces))


def test_set_simd_returns_the_previous_setting() -> None:
    assert _scanner.set_simd(True) is True
    assert _scanner.set_simd(False) is True
    assert _scanner.set_simd(True) is False


@pytest.mark.parametrize("sep", [".", "/", "_"])
def test_a_separator_after_a_long_digit_run_is_stopped_at(sep: str) -> None:
    # Digit groups joined by one separator (form 3 of `separated_hints`) after a run of digits
    # long enough that its separator is the only stop in 64 bytes, at each offset of a step.
    prose = "cohort analysis survival model baseline outcome ward median interval " * 3
    for shift in range(70):
        text = "q" * shift + " " + "1" * 70 + sep + "2222" + sep + "3333 " + prose
        assert_agree(text)
