"""The compiled matching rules agree with the pure-Python reference (`_matching`), exactly.

`_scanner.keep_spans` decides `keep_match` (decimal fractions, "a date must be written like a
date") for every match of a text at once, and `_scanner.dates_in_text` finds the dates a text
prints (`_matching._DATE_IN_TEXT`, for the calendar-axis rule). Both work on ASCII and hand
anything else to the reference; these tests compare them with it on generated texts: dates in
many formats, decimals, CSV rows, JSON-escaped slashes and non-ASCII text (where character and
byte offsets differ), and compare `find`/`scan_text` with the compiled core on and off.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedside.policy import IdentifierIndex, _matching, _tokens, scan_text
from tests.policy._dates import birth_date_index
from tests.policy._native import reference

_scanner = pytest.importorskip("bedside.policy._scanner")

DATE_PIECES = [
    "1956-03-12", "1956-3-2", "12/03/1956", "3/12/1956", "12.3.1956", "12-03-1956",
    "12 / 03 / 1956", "12 Mar 1956", "12 March 1956", "12-mar-1956", "March 12, 1956",
    "MAR 12 1956", "Marchx 1 1956",
    "19560312", "12031956", "1956-03-12T00:00:00", "1956-03-12 00:00:00", "12\\/03\\/1956",
    "date(1956, 3, 12)", "datetime.date(1956, 3, 12)", "(  1956, 3, 12)", "Timestamp(1956,3,12)",
    "9,1,1952", "9, 1, 1952", "9 1 1952", "9\t1\t1952", "9,1-1952", "1956,03,12", "12-3/1956",
    "2023-01-02", "2023-01-09", "01/02/2024", "1/1/1950", "2/2/1960", "7.7.1970", "1950-1-1",
    "123456", "4000007", "0.4000007", "4000007.25", "4000007.0", "4000007.000", "1.4000007e+06",
    "12345678", "123456789", "4000007.1", "4000007.01", "4000007.10", "4000007.00", "4000007.",
    "0.400000", "1956-03-123", "1956-031-12", "12/03/19567", "x12/03/1956",
    "1956-03-12x", "_1956-03-12", ".12/03/1956", "a 12 jan 2001", "jan 1, 2001", "janu 1,2001",
    "sept 31, 2001", "feb 30 2001", "dec-12-2001", "1 dec 20010", "may 5,  2005",
]  # fmt: skip
OTHER_PIECES = [
    " ", "  ", ",", ", ", "-", "/", ".", "\\", "\\/", "(", ")", "\n", "\r\n", "\t", ":", '"', "'",
    "[", "]", "{", "}", "x", "ab", "0", "00", "7", "99", "2024", "\x1c", "\x1f", "\x0b", "\x0c",
    " \x1e/", "é", "Zoë", "١٢٣٤", "٣", "²", "\u00a0", "\u2028", "ſ", "\u212a", "😀", "█", "İ", "ß",
]  # fmt: skip

_piece = st.sampled_from(DATE_PIECES + OTHER_PIECES)
_texts = st.lists(_piece | st.text(max_size=5), max_size=40).map("".join)
_ascii_texts = st.lists(
    st.sampled_from([p for p in DATE_PIECES + OTHER_PIECES if p.isascii()])
    | st.text("0123456789 ,./-:()\\\nMarJanDecy", max_size=8),
    max_size=40,
).map("".join)

# Date-like fragments built from their parts: digit runs of every length next to every
# separator and month word, so that each condition of the rules is met and just missed.
_date_like = st.lists(
    st.integers(0, 10**9).map(str)
    | st.sampled_from(["0", "00", "07", "12", "1956", "2024", "19560312", "123"])
    | st.sampled_from(["jan", "Mar", "MARCH", "sept", "mayo", "Dec", "decx", "ja", "ju1"])
    | st.sampled_from(
        [
            "/",
            ".",
            "-",
            " ",
            "  ",
            ", ",
            ",",
            "\\/",
            "\\",
            "\x1f",
            "\t",
            "(",
            "_",
            "x",
            "\n",
            "é",
            "²",
            "\u00a0",
            "١",
        ]
    ),
    max_size=14,
).map("".join)


def _all_spans(text: str, limit: int = 400) -> tuple[list[int], list[int]]:
    """Spans between token edges (where the index's matches start and end), and a few others."""
    edges = sorted(
        {0, len(text)}
        | {m.start() for m in _matching._TOKEN.finditer(text)}
        | {m.end() for m in _matching._TOKEN.finditer(text)}
    )
    starts, ends = [], []
    for i, a in enumerate(edges):
        for b in edges[i : i + 8]:
            starts.append(a)
            ends.append(b)
    return starts[:limit], ends[:limit]


def assert_keep_agrees(text: str) -> None:
    starts, ends = _all_spans(text)
    s = np.array(starts, dtype=np.int64)
    e = np.array(ends, dtype=np.int64)
    for date in (False, True):
        d = np.full(len(s), date, dtype=np.bool_)
        got = _matching.keep_matches(text, s, e, d).tolist()
        pairs = zip(starts, ends, strict=True)
        want = [_matching.keep_match(text, a, b, date=date) for a, b in pairs]
        assert got == want, (text, date)


def assert_dates_agree(text: str) -> None:
    got = _matching.printed_dates(text)
    want = [m.group() for m in _matching._DATE_IN_TEXT.finditer(text)]
    assert Counter(got) == Counter(want), text
    # ... and counted by spelling in the core (`_scanner.date_counts`), as `listed_values` reads.
    assert _matching.printed_date_counts(text) == Counter(want), text
    # On lines without an alphanumeric character outside ASCII the core finds the very spans
    # the pattern does (it returns the other lines to the pattern).
    found, _ = _scanner.dates_in_text(text)
    spans = [tuple(p) for p in np.frombuffer(found, dtype=np.int64).reshape(-1, 2).tolist()]
    ascii_lines = set()
    pos = 0
    for line in text.split("\n"):
        if all(ch.isascii() or not ch.isalnum() for ch in line):
            ascii_lines.add(pos)
        pos += len(line) + 1
    line_of = [0] * (len(text) + 1)
    for i, ch in enumerate(text):
        line_of[i + 1] = i + 1 if ch == "\n" else line_of[i]
    expected = [
        m.span()
        for m in _matching._DATE_IN_TEXT.finditer(text)
        if line_of[m.start()] in ascii_lines
    ]
    assert sorted(spans) == sorted(expected), text


def test_keep_spans_on_the_rules_examples() -> None:
    for text in [*DATE_PIECES, "mean 4000007.25", "p=0.04000007", "4000007.\u0663", "4000007.0²"]:
        assert_keep_agrees(text)
        assert_keep_agrees(f"x {text} y")


@settings(max_examples=300, deadline=None)
@given(text=_texts)
def test_keep_spans_agree(text: str) -> None:
    assert_keep_agrees(text)


@settings(max_examples=400, deadline=None)
@given(text=_ascii_texts | _date_like)
def test_keep_spans_agree_on_ascii(text: str) -> None:
    assert_keep_agrees(text)


@settings(max_examples=500, deadline=None)
@given(text=_texts | _ascii_texts | _date_like)
def test_printed_dates_agree(text: str) -> None:
    assert_dates_agree(text)


def test_printed_dates_of_tables_and_series() -> None:
    days = pd.date_range("2021-01-01", periods=60, freq="D")
    counts = pd.Series(np.arange(60) % 7 * 5 + 20, index=days)
    texts = []
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d %B %Y", "%b %d, %Y", "%Y%m%d", "%d.%m.%Y"):
        s = counts.copy()
        s.index = days.strftime(fmt)
        texts += [s.to_string(), s.to_csv(), s.to_frame().to_html(), json.dumps(s.to_dict())]
    texts.append("\n".join(texts))
    texts.append("█ " + texts[-1] + " Zoë")  # one string kind wider than ASCII
    texts.append("😀\n" + texts[-2])  # ... and a 4-byte kind
    for text in texts:
        assert_dates_agree(text)


DOBS = pd.date_range("1990-01-01", "1999-12-31", freq="D")


@pytest.fixture(scope="module")
def dated() -> IdentifierIndex:
    """Birth dates on every day of a decade, numeric record numbers and names."""
    return birth_date_index(DOBS)


def _values(k: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(DOBS), k).tolist():
        d: dt.date = DOBS[i].date()
        fmt = [
            f"{d:%Y-%m-%d}", f"{d:%d/%m/%Y}", f"{d.month}/{d.day}/{d.year}", f"{d:%d %B %Y}",
            f"{d:%b} {d.day}, {d.year}", f"{d:%Y%m%d}", f"{d.day},{d.month},{d.year}",
            f"{d:%d\\/%m\\/%Y}", f"date({d.year}, {d.month}, {d.day})", f"{4_000_000 + 7 * i}",
            f"0.{4_000_000 + 7 * i}", f"{4_000_000 + 7 * i}.25", f"{4_000_000 + 7 * i}.0",
            f"Pat{i:05d} Zed{i % 977:03d}x",
        ][int(rng.integers(0, 14))]  # fmt: skip
        out.append(fmt)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_texts,
    k=st.integers(0, 14),
    seed=st.integers(0, 1000),
    sep=st.sampled_from([" ", ",", "\n", ", ", " | ", "é ", "\t"]),
)
def test_find_and_scan_text_agree_with_the_reference(
    dated: IdentifierIndex, text: str, k: int, seed: int, sep: str
) -> None:
    full = sep.join([text, *_values(k, seed), text[::-1]])
    fast = dated.find(full)
    fast_scan = scan_text(full, dated)
    with reference(dated):
        assert dated.find(full) == fast, full[:300]
        assert scan_text(full, dated) == fast_scan, full[:300]


def test_find_agrees_on_dumps(dated: IdentifierIndex) -> None:
    vals = _values(300, 1)
    frame = pd.DataFrame({"v": vals, "n": range(300), "x": np.linspace(0, 1, 300)})
    texts = [frame.to_csv(), frame.to_json(orient="records"), frame.to_string(), frame.to_html(),
             str(frame.to_dict("records")), "Zoë " + frame.to_csv()]  # fmt: skip
    for text in texts:
        fast = dated.find(text)
        with reference(dated):
            assert dated.find(text) == fast


_NUMS = ["1", "12", "123", "1956", "20241", "19560312", "123456789", "0", "00", "000", "10", "0.5"]
_SEPS = ["/", ".", "-", " ", ",", ", ", "  ", "\\/", "\\", "\x1f", "\x1c", "\t", "(", ")", "_", "x",
         "\n", ":", "'", "T"]  # fmt: skip
_MONTH_WORDS = ["mar", "March", "SEPT", "sep", "jux", "dec", "Ja", "mayday", "é", "٣"]


def _random_date_like(rng: np.random.Generator, count: int) -> list[str]:
    """Texts alternating digit runs, separators and month words (seeded, many short texts:
    each rule's conditions met and just missed far more often than free text does)."""
    out = []
    for _ in range(count):
        parts = []
        for _ in range(int(rng.integers(1, 10))):
            pool = (_NUMS, _SEPS, _MONTH_WORDS)[int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
            parts.append(pool[int(rng.integers(0, len(pool)))])
        out.append("".join(parts))
    return out


def test_rules_agree_on_random_date_like_texts() -> None:
    rng = np.random.default_rng(20261130)
    for text in _random_date_like(rng, 20_000):
        assert_dates_agree(text)
    for text in _random_date_like(rng, 3_000):
        assert_keep_agrees(text)


_ALPHABET = ["1", "12", "123", "1956", "19560312", "/", "-", " ", ",", ", ", ".", "mar", "March",
             "x", "\\/"]  # fmt: skip


def test_rules_agree_on_every_short_date_like_text() -> None:
    # Every sequence of up to four pieces: a near miss of each branch of the date pattern.
    texts = [""]
    for length in range(1, 5):
        texts = [t + p for t in texts for p in _ALPHABET] if length > 1 else list(_ALPHABET)
        for text in texts:
            assert_dates_agree(text)
            if length <= 3:
                assert_keep_agrees(text)


def test_lower_bytes_of_every_character() -> None:
    # The compiled lower-casing answers only where it is `text.lower()`; every code point, in
    # texts of every string kind, after ASCII capitals and before a capital sigma.
    points = [chr(c) for c in range(0x110000)]
    for lo in range(0, len(points), 4096):
        chunk = "".join(points[lo : lo + 4096])
        for text in (chunk, "A" + chunk + "Σ", "x" + chunk[::-1]):
            fast = _scanner.lower_utf8(text)
            lowered = text.lower()
            if fast is not None:
                assert len(lowered) == len(text)
                assert fast == lowered.encode("utf-8", "surrogatepass"), lo
    assert _scanner.lower_utf8("100%|██████████| Zoë Ångström".lower()) is not None
    assert _scanner.lower_utf8("Zoë") == "zoë".encode()
    for text in ("Ångström", "İlkay", "ΣΑΣ", "\ud800"):
        assert _scanner.lower_utf8(text) is None
    with reference():
        ref = _tokens.lower_bytes("Zoë █ MRN")
    assert _tokens.lower_bytes("Zoë █ MRN") == ref


def _listed_values_reference(values: list[str], text: str) -> int:
    """`listed_values` as it was written first: every printed date parsed, one list."""
    readings = {v: _matching.parse_date(v) for v in set(values)}
    printed = [_matching.parse_date(m.group()) for m in _matching._DATE_IN_TEXT.finditer(text)]
    axis = _matching.calendar_axis([*readings.values(), *printed])
    return sum(1 for ds in readings.values() if not any(d in axis for d in ds))


def test_listed_values_agree_with_the_reference() -> None:
    rng = np.random.default_rng(7)
    days = pd.date_range("2021-01-01", periods=80, freq="D")
    for trial in range(300):
        k = int(rng.integers(0, 12))
        picks = [days[int(i)].date() for i in rng.integers(0, 80, k)]
        if trial % 3 == 0:  # a series: every day, week or month
            step = int(rng.choice([1, 7, 30]))
            picks = [days[0].date() + dt.timedelta(days=step * i) for i in range(k)]
        fmts = ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d %B %Y", "%b %d, %Y", "%Y%m%d"]
        printed = [d.strftime(fmts[int(rng.integers(0, len(fmts)))]) for d in picks]
        text = "\n".join(printed * int(rng.integers(1, 4)))
        values = printed[: int(rng.integers(0, len(printed) + 1))] + ["9,1,1952", "1956-3-12"]
        assert _matching.listed_values(values, text) == _listed_values_reference(values, text)


# Digit runs of the lengths the date pattern cares about (1, 2, 4 and 8, and their neighbours)
# beside each separator, month word and character outside ASCII: the core reads only the lines
# holding a run where a date can have its year (`date_anchor`), so every such shape, and each
# one just missed, must be found as the pattern finds it.
_anchor_texts = st.lists(
    st.sampled_from(["1", "12", "123", "1956", "19560", "19560312", "123456789", "0"])
    | st.sampled_from(["/", ".", "-", " ", ",", ", ", "\n", "x", "_", "(", "jan", "March"])
    | st.sampled_from(["sept", "é", "█", "١", "\u00a0"]),
    max_size=24,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=_anchor_texts)
def test_printed_dates_agree_around_year_runs(text: str) -> None:
    assert_dates_agree(text)


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.text("abcXYZ09 -\n", min_size=0, max_size=19)
        | st.sampled_from(["é", "█", "Å", "😀", "İ", "\ud800", "Σ", "ſ", "ß"]),
        max_size=12,
    ).map("".join)
)
def test_lower_utf8_of_ascii_runs_beside_other_characters(text: str) -> None:
    # The core takes ASCII eight characters at a time: runs of every length and alignment
    # around characters outside ASCII, of every string kind, lower-case as `str.lower` does.
    fast = _scanner.lower_utf8(text)
    if fast is None:
        assert any(not ch.isascii() and (ch.lower() != ch or "\ud800" <= ch < "\ue000")
                   for ch in text)  # fmt: skip
    else:
        assert fast == text.lower().encode("utf-8")
