"""The sentry's cheap pre-checks read only what their verdict depends on, with the same verdict.

`trivially_clean` matches words of at most 16 characters and `_lines_join_runs` reads at most
12 characters at each end of a line, so a megabyte-long line costs nothing; these tests hold
them to the whole-word and whole-line readings they replaced.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.gateway._boundary import (
    _PROTOCOL_WORDS,
    _RUN_CHARS,
    _lines_join_runs,
    trivially_clean,
)

_WHOLE_WORD = re.compile(r"[^\W_]+")


def _trivially_clean_whole_words(text: str) -> bool:
    numbers = 0
    for match in _WHOLE_WORD.finditer(text):
        word = match.group(0)
        if word in _PROTOCOL_WORDS:
            continue
        if len(word) <= 2 and word.isdigit():
            numbers += 1
            if numbers <= 2:
                continue
        return False
    return True


def _lines_join_runs_whole_lines(text: str) -> bool:
    if "\n" not in text:
        return False
    lines = text.split("\n")
    for upper, lower in zip(lines, lines[1:], strict=False):
        upper = upper.rstrip("\r")
        tail = len(upper) - len(upper.rstrip(_RUN_CHARS))
        if not tail:
            continue
        head = len(lower) - len(lower.lstrip(_RUN_CHARS))
        if head and max(tail, head) >= 12:
            return True
    return False


_pieces = st.sampled_from(
    [*sorted(_PROTOCOL_WORDS), "1", "42", "123", "x" * 15, "x" * 16, "x" * 17, "é" * 20,
     "statusstatusstatus", " ", "_", "/", "\n", "\r", "\r\n", ":", "{", '"', "=", "+", "-",
     "QUJD" * 4, "ab" * 7]
)  # fmt: skip
_texts = st.lists(_pieces | st.text(max_size=8), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_texts)
def test_trivially_clean_reads_words_as_whole_words(text: str) -> None:
    assert trivially_clean(text) == _trivially_clean_whole_words(text)


@settings(max_examples=300, deadline=None)
@given(text=_texts)
def test_lines_join_runs_reads_lines_as_whole_lines(text: str) -> None:
    assert _lines_join_runs(text) == _lines_join_runs_whole_lines(text)


def test_a_megabyte_line_is_not_trivially_clean() -> None:
    text = "x" * 1_000_000 + "\n" + "y" * 1_000_000
    assert not trivially_clean(text)
    assert _lines_join_runs(text) == _lines_join_runs_whole_lines(text)
    assert trivially_clean("status ok\n1 2\n")
