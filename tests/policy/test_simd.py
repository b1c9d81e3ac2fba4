"""The SSE2 steps of the compiled scanner (policy/_scanner.c) against its scalar code.

`plain_display` reads 64 bytes a step and `dense_runs` skips 32 bytes a step where no run can
be kept; `set_simd(False)` turns those steps off, so each result is compared with the scalar
code's on the same string, and `dense_runs` also with the Python reference. Inputs: random
texts over small alphabets (so that runs and the bytes that end them are dense), every
character of interest put at each position around the 16-, 32- and 64-byte boundaries of a
step, and strings of every kind (a character beyond ASCII or Latin-1 changes the loop taken).
(`text_spans`'s 64-byte step: tests/policy/test_spans_words.py.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import _encodings as enc

_scanner = pytest.importorskip("bedside.policy._scanner")


def scalar(call: Callable[[], Any]) -> Any:
    before = _scanner.set_simd(False)
    try:
        return call()
    finally:
        _scanner.set_simd(before)


def assert_agree(text: str) -> None:
    assert _scanner.plain_display(text) == scalar(lambda: _scanner.plain_display(text)), text
    for min_len in (12, 20):
        got = _scanner.dense_runs(text, min_len)
        assert got == scalar(lambda m=min_len: _scanner.dense_runs(text, m)), (text, min_len)
    assert enc.dense_spans(text) == enc.dense_spans(text, native=False), text


# What each step looks for: controls (tab and line feed are plain), DEL, "<", "&"; dense runs
# ("!".."~") of base32/base85 shape among spaces; bytes beyond ASCII.
_SPECIAL = ["\t", "\n", "\r", "\x00", "\x1f", "\x7f", "<", "&", "\x80", "\u00e9", "\u00ff", " "]
_RUNS = ["GJQTEMZUGQ2DMNZY", "7rN?TC`lPgDKKd", '<~87cURD]i,"Ebo80~>', "A" * 11, "A" * 12]
_ALPHABETS = ["ab ", "aZE09.2+/=!~[`, \n", "AB CD", "Ab\u00e9 ", "x<&y \t", "QWERTYUIOP12 "]


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
        st.sampled_from(_RUNS) | st.text(st.sampled_from("aZ09 .!~\n<&\t\x7f\u00e9"), max_size=30),
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
