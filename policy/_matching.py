"""Matching rules: when a token match of the identifier index really is that value.

The index (`identifiers`) matches token sequences and ignores what separates the tokens, so
`9,1,1952` (three fields of a CSV row) has the tokens of the date `9/1/1952`, and the `123456`
of `0.123456` has the token of the record number `123456`. These rules look at the characters
around and between the tokens of a match and drop the ones that cannot be the value:

- a purely numeric match that is the fractional part of a decimal number (`0.123456`,
  `1.234568e+06`) or the integer part of one with a non-zero fraction (`4012345.25`) is a
  statistic, not a record number (`4012345.0`, a float column of ids, still matches);
- a match of a date column (a date of birth) must be written like a date: digits with one
  date separator used throughout (`1956-03-12`, `12/03/1956`, `12.3.1956`, `12 / 03 / 1956`),
  a month name (`12 March 1956`, `Mar 12, 1956`), eight digits (`19560312`), or a constructor
  (`date(1956, 3, 12)`). Commas, tabs or spaces alone between numbers are table columns.

And for the listing rule (`identifiers.strengthen`): distinct dates that lie on a calendar axis
(three or more equally spaced days, weeks or months: a daily admissions series) are not a
listing of birth dates, since every date of the axis is printed whoever was born on it.

Kept apart from `identifiers` (the index and its speed) so the rules read on their own. They
are the reference: `keep_matches` and `printed_dates` answer the same through the compiled core
(`_scanner.keep_spans`, `_scanner.dates_in_text`), which decides ASCII and hands the rest back
here, so that a long output with thousands of matches costs no Python per match. The core reads
for dates only the lines holding a digit run where a date has its year, and counts the dates
printed by spelling (`_scanner.date_counts`, what `listed_values` needs).
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import re
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from bedside.policy import _tokens

_TOKEN = re.compile(r"\d+|[^\W\d_]+")
_DATE_SEPARATORS = ("-", "/", ".")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
MAX_AXIS_DAYS = 31  # daily, weekly, fortnightly, monthly steps in days
MAX_AXIS_MONTHS = 12  # monthly, quarterly, yearly steps on one day of the month


def _fraction_after(text: str, end: int) -> str | None:
    """The digits of a decimal fraction right after `end` (`.25` -> "25"), or None."""
    if end + 1 >= len(text) or text[end] != "." or not text[end + 1].isdigit():
        return None
    stop = end + 1
    while stop < len(text) and text[stop].isdigit():
        stop += 1
    return text[end + 1 : stop]


def keep_match(text: str, start: int, end: int, *, date: bool) -> bool:
    """Whether the index's match `text[start:end]` can be the identifier value (see above).

    `date`: the match is of a date column.
    """
    span = text[start:end]
    if span.isdigit():
        if start >= 2 and text[start - 1] == "." and text[start - 2].isdigit():
            return False  # the fraction of 0.123456
        fraction = _fraction_after(text, end)
        # 4012345.25 is a statistic; 4012345.0 may be an id column read as float.
        return fraction is None or not fraction.strip("0")
    if not date:
        return True
    # Only the last character before the match that is not white space matters to
    # `date_shaped` (`before.rstrip().endswith("(")`): pass that much, not a copy of the text.
    j = start
    while j > 0 and text[j - 1].isspace():
        j -= 1
    return date_shaped(span, text[max(j - 1, 0) : start])


def keep_matches(
    text: str,
    starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    date: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """`keep_match` of every match (character offsets) of `text` at once.

    The compiled core decides every match whose answer reads only ASCII characters
    (`_scanner.keep_spans`); the rest, and every match when the core is not built, go to
    `keep_match` (tests/policy/test_matching_native.py checks both agree).
    """
    n = len(starts)
    scanner = _tokens._scanner
    if scanner is None or not n:
        return np.fromiter(
            (keep_match(text, a, b, date=d)
             for a, b, d in zip(starts.tolist(), ends.tolist(), date.tolist(), strict=True)),
            dtype=np.bool_, count=n,
        )  # fmt: skip
    s = np.ascontiguousarray(starts, dtype=np.int64)
    e = np.ascontiguousarray(ends, dtype=np.int64)
    d = np.ascontiguousarray(date, dtype=np.bool_)
    code = np.frombuffer(scanner.keep_spans(text, s, e, d), dtype=np.uint8)
    keep: npt.NDArray[np.bool_] = code == 1
    for i in np.flatnonzero(code == 2).tolist():
        keep[i] = keep_match(text, int(s[i]), int(e[i]), date=bool(d[i]))
    return keep


def date_shaped(span: str, before: str = "") -> bool:
    """Whether `span` (a match of a date column) is written as a date; `before` precedes it."""
    tokens = [m.group() for m in _TOKEN.finditer(span)]
    if len(tokens) < 2:
        return True  # 19560312: eight digits are a date or nothing
    if any(not t.isdigit() for t in tokens):
        return True  # a month name: 12 March 1956, Mar 12, 1956
    # `\/` is how JSON may escape the slash of 12/03/1956.
    seps = {s.strip().replace("\\", "") for s in _TOKEN.split(span)[1:-1]}
    if len(seps) != 1:
        return False  # 9,1-1952: mixed separators
    sep = seps.pop()
    if sep in _DATE_SEPARATORS:
        return True
    # datetime.date(1956, 3, 12), Timestamp(1956, 3, 12): a constructor, year first.
    return sep == "," and len(tokens[0]) == 4 and before.rstrip().endswith("(")


def parse_date(span: str) -> list[dt.date]:
    """The dates a match of a date column may spell, in any format `date_shaped` accepts.

    Day and month are ambiguous in `3/12/1956`: both readings are returned (used only to tell a
    calendar axis from a listing, where either reading being on the axis suffices).
    """
    return list(_parse_date(span))


@functools.lru_cache(maxsize=8192)
def _parse_date(span: str) -> tuple[dt.date, ...]:
    """`parse_date`, memoised: a long output prints the same dates again and again."""
    tokens = [m.group().lower() for m in _TOKEN.finditer(span)]
    out: list[dt.date] = []

    def add(y: int, m: int, d: int) -> None:
        try:
            out.append(dt.date(y, m, d))
        except ValueError:
            pass

    if len(tokens) == 1 and len(tokens[0]) == 8 and tokens[0].isdigit():
        t = tokens[0]
        add(int(t[:4]), int(t[4:6]), int(t[6:]))
        add(int(t[4:]), int(t[2:4]), int(t[:2]))
        add(int(t[4:]), int(t[:2]), int(t[2:4]))
        return tuple(out)
    if len(tokens) != 3:
        return tuple(out)
    nums = [t for t in tokens if t.isdigit()]
    words = [t for t in tokens if not t.isdigit()]
    if words:
        years = [n for n in nums if len(n) == 4]
        if len(words) == 1 and words[0][:3] in _MONTHS and len(years) == 1:
            day = next(n for n in nums if len(n) != 4) if any(len(n) != 4 for n in nums) else ""
            if day:
                add(int(years[0]), _MONTHS[words[0][:3]], int(day))
        return tuple(out)
    a, b, c = (int(t) for t in tokens)
    if len(tokens[0]) == 4:
        add(a, b, c)
    else:
        add(c, b, a)
        add(c, a, b)
    return tuple(out)


MIN_GRID = 8  # dates that all fall on one weekday or one day of the month: a weekly/monthly axis

_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_DATE_IN_TEXT = re.compile(
    r"(?<![\w.])(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}([/.-])\d{1,2}\1\d{4}|\d{8}"
    rf"|\d{{1,2}}[ -]{_MONTH_RE}[ -]\d{{4}}|{_MONTH_RE} \d{{1,2}},? \d{{4}})(?![\w])",
    re.IGNORECASE,
)


def calendar_axis(readings: Iterable[Sequence[dt.date]]) -> set[dt.date]:
    """The dates that lie on a regular calendar axis, given the possible readings of each date
    a text prints: three or more distinct dates equally spaced by at most `MAX_AXIS_DAYS` days,
    or on one day of the month and equally spaced by at most `MAX_AXIS_MONTHS` months; and all
    of them when `MIN_GRID` or more dates fall on one weekday (weekly periods, in any order)
    or on one day of the month."""
    groups = [tuple(r) for r in readings if r]
    return _axis(set(groups), len(groups))


def _axis(distinct: set[tuple[dt.date, ...]], count: int) -> set[dt.date]:
    """`calendar_axis` of `count` non-empty readings, whose distinct ones are `distinct` (the
    union and the intersections over the readings are those over the distinct ones)."""
    u = sorted({d for r in distinct for d in r})
    axis: set[dt.date] = set()
    if count >= MIN_GRID:
        for key in (dt.date.weekday, lambda d: d.day):
            shared = set.intersection(*({key(d) for d in r} for r in distinct))
            if shared:
                axis.update(d for d in u if key(d) in shared)

    def runs(keys: list[int], items: list[dt.date], limit: int) -> None:
        for i in range(len(keys) - 2):
            step = keys[i + 1] - keys[i]
            if 0 < step <= limit and keys[i + 2] - keys[i + 1] == step:
                axis.update(items[i : i + 3])

    runs([d.toordinal() for d in u], u, MAX_AXIS_DAYS)
    by_day: dict[int, list[dt.date]] = {}
    for d in u:
        by_day.setdefault(d.day, []).append(d)
    for same in by_day.values():
        if len(same) >= 3:
            runs([d.year * 12 + d.month for d in same], same, MAX_AXIS_MONTHS)
    return axis


def listed_values(values: Iterable[str], text: str = "") -> int:
    """How many of the distinct matched date texts `values` count towards a listing: those
    none of whose readings lies on a calendar axis of the dates `text` prints (matched or not:
    a weekly series whose every other week is somebody's birthday is still an axis). Unparsed
    values always count."""
    readings = {v: _parse_date(v) for v in set(values)}
    # A long output prints the same dates again and again: each distinct one is parsed once,
    # and counted as often as it is printed.
    printed = printed_date_counts(text) if text else collections.Counter[str]()
    distinct = {r for r in readings.values() if r}
    count = sum(1 for r in readings.values() if r)
    for v, times in printed.items():
        r = _parse_date(v)
        if r:
            distinct.add(r)
            count += times
    axis = _axis(distinct, count)
    return sum(1 for ds in readings.values() if not any(d in axis for d in ds))


def printed_date_counts(text: str) -> collections.Counter[str]:
    """`Counter(printed_dates(text))`: how often `text` prints each date, by its spelling.

    The compiled core counts the matches of its lines spelled alike (`_scanner.date_counts`),
    so a long output printing the same dates thousands of times costs a string per distinct
    date, not per date printed.
    """
    scanner = _tokens._scanner
    if scanner is None:
        return collections.Counter(printed_dates(text))
    counted, other = scanner.date_counts(text)
    out = collections.Counter(
        {text[a:b]: n for a, b, n in np.frombuffer(counted, dtype=np.int64).reshape(-1, 3).tolist()}
    )
    if other:
        lines = np.frombuffer(other, dtype=np.int64).reshape(-1, 2).tolist()
        joined = "\n".join(text[a:b] for a, b in lines)
        out.update(m.group() for m in _DATE_IN_TEXT.finditer(joined))
    return out


def printed_dates(text: str) -> list[str]:
    """The dates `text` prints (`_DATE_IN_TEXT`), in an order of their own.

    The compiled core matches the pattern on the text's ASCII lines (`_scanner.dates_in_text`,
    exactly as the pattern does) and returns the other lines, which the pattern scans joined:
    no match crosses a newline. Without the core, the pattern scans the whole text.
    """
    scanner = _tokens._scanner
    if scanner is None:
        return [m.group() for m in _DATE_IN_TEXT.finditer(text)]
    found, other = scanner.dates_in_text(text)
    spans = np.frombuffer(found, dtype=np.int64).reshape(-1, 2).tolist()
    out = [text[a:b] for a, b in spans]
    if other:
        lines = np.frombuffer(other, dtype=np.int64).reshape(-1, 2).tolist()
        joined = "\n".join(text[a:b] for a, b in lines)
        out.extend(m.group() for m in _DATE_IN_TEXT.finditer(joined))
    return out
