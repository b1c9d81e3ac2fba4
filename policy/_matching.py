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

Kept apart from `identifiers` (the index and its speed) so the rules read on their own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

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
    return date_shaped(span, text[:start])


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
        return out
    if len(tokens) != 3:
        return out
    nums = [t for t in tokens if t.isdigit()]
    words = [t for t in tokens if not t.isdigit()]
    if words:
        years = [n for n in nums if len(n) == 4]
        if len(words) == 1 and words[0][:3] in _MONTHS and len(years) == 1:
            day = next(n for n in nums if len(n) != 4) if any(len(n) != 4 for n in nums) else ""
            if day:
                add(int(years[0]), _MONTHS[words[0][:3]], int(day))
        return out
    a, b, c = (int(t) for t in tokens)
    if len(tokens[0]) == 4:
        add(a, b, c)
    else:
        add(c, b, a)
        add(c, a, b)
    return out


MIN_GRID = 8  # dates that all fall on one weekday or one day of the month: a weekly/monthly axis

_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_DATE_IN_TEXT = re.compile(
    r"(?<![\w.])(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}([/.-])\d{1,2}\1\d{4}|\d{8}"
    rf"|\d{{1,2}}[ -]{_MONTH_RE}[ -]\d{{4}}|{_MONTH_RE} \d{{1,2}},? \d{{4}})(?![\w])",
    re.IGNORECASE,
)


def calendar_axis(readings: Iterable[list[dt.date]]) -> set[dt.date]:
    """The dates that lie on a regular calendar axis, given the possible readings of each date
    a text prints: three or more distinct dates equally spaced by at most `MAX_AXIS_DAYS` days,
    or on one day of the month and equally spaced by at most `MAX_AXIS_MONTHS` months; and all
    of them when `MIN_GRID` or more dates fall on one weekday (weekly periods, in any order)
    or on one day of the month."""
    groups = [r for r in readings if r]
    u = sorted({d for r in groups for d in r})
    axis: set[dt.date] = set()
    if len(groups) >= MIN_GRID:
        for key in (dt.date.weekday, lambda d: d.day):
            shared = set.intersection(*({key(d) for d in r} for r in groups))
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
    readings = {v: parse_date(v) for v in set(values)}
    printed = [parse_date(m.group()) for m in _DATE_IN_TEXT.finditer(text)] if text else []
    axis = calendar_axis([*readings.values(), *printed])
    return sum(1 for ds in readings.values() if not any(d in axis for d in ds))
