"""Common PHI patterns (e-mail, phone, SSN, NHS number, MRN, date of birth, …) found in text.

This is the dataset-independent net under the identifier index: it finds personal data of a
shape, whatever table it came from. The patterns are tuned against ordinary analysis output —
tables of counts, p-values, ward statistics with dates, arrays of 0/1 labels, library versions —
so that they fire on personal data and not on numbers: phone numbers need a plausible national
or international shape, NHS numbers a valid modulus-11 check digit, SSNs the dashed form with a
valid area and group, MRNs and bare dates a label in front of them.

On long texts each pattern runs only on windows where it can match: runs of digit groups for the
number patterns, a label's neighbourhood for the labelled ones, and for postcodes and IP
addresses the windows the compiled core finds in its one pass over the text
(`_tokens.text_spans`), each holding every match that can start in it and the character its
look-ahead reads, so the result is that of the whole text (tests/policy/test_native.py). Each
distinct window is scanned once (long outputs repeat blocks: a table per fold, the same log
lines; the distinct windows of the number patterns are found once for all of them), and the
label words of MRNs, dates of birth and SSNs are looked for in one compiled pass
(`_scanner.label_words`) rather than nine substring searches of a lower-cased copy. The windows
around the labels of a long text come from the core too (`_scanner.label_windows`, on the text
itself: lower-casing a megabyte that is not ASCII and searching it once per label word cost more
than the patterns), and the text is lower-cased only when that cannot be done (a text holding
U+0130, the one character lower-casing makes two).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from bedside.policy import _tokens
from bedside.policy._tokens import TextSpans, code_units, text_spans
from bedside.policy.model import PHI_PATTERN_DEFAULTS


@dataclass(frozen=True)
class PHIMatch:
    """Where a PHI-shaped span occurs (character offsets) and what it looks like."""

    kind: str
    start: int
    end: int


# Patterns start with a literal or a small character class (no look-behind), so the regex
# engine can skip ahead quickly; what may precede a match is checked afterwards in Python.
_NOT_AFTER = r"(?![\w@\-]|\.\d)"
_BEFORE_NUMBER = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_@+.-/")

_EMAIL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?![\w-])"
)

# UK numbers: +44 / 0044 / trunk 0, then groups of 2-5, 3-4 and 3-4 digits with at most one
# separator between groups; the digit count is checked afterwards.
_PHONE_UK = re.compile(
    r"(?:(?:\+|00)44[ .-]?(?:\(0\)[ .-]?)?\(?|\(?0)"
    r"\d{2,5}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}" + _NOT_AFTER
)
# North American numbers: (555) 123-4567, 555-123-4567, 555.123.4567, +1 555 123 4567.
_PHONE_NA = re.compile(
    r"(?:\(\d{3}\)[ ]?\d{3}[ .-]\d{4}"
    r"|[2-9]\d{2}([.-])\d{3}\1\d{4}"
    r"|\+1[ .-]?\(?[2-9]\d{2}\)?[ .-]?\d{3}[ .-]?\d{4})" + _NOT_AFTER
)
# Other international numbers: +CC then 2-5 groups.
_PHONE_INTL = re.compile(r"\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,5}" + _NOT_AFTER)
_SSN = re.compile(r"\d{3}-\d{2}-\d{4}(?![\w\-]|\.\d)")
_SSN_LABELLED = re.compile(r"(?i)\bssn\b\W{0,3}(\d{9})\b")
_NHS = re.compile(r"(\d{3})([ -]?)(\d{3})\2(\d{4})(?![\w\-]|\.\d)")
_NHS_LABEL = re.compile(r"(?i)\bnhs\b")
_MRN = re.compile(
    r"(?i)(?:mrn|medical[ _]record[ _](?:number|no\.?)|hospital[ _](?:number|no\.?)"
    r"|patient[ _]id)(?:[\s:#=_-]{0,3}|(?=\d))[a-z]{0,3}-?\d{5,}(?![a-z0-9])"
)
_MRN_WORDS = ("mrn", "medical", "hospital", "patient")
_DATE = r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2} [A-Za-z]{3,9},? \d{4}"
_DATE += r"|[A-Za-z]{3,9} \d{1,2},? \d{4})"
_DOB = re.compile(
    r"(?i)\b(?:dob|d\.o\.b\.?|date[ _]of[ _]birth|birth[ _]?date|born(?: on)?)"
    r"[\s:=\"']{0,4}" + _DATE
)
_DOB_WORDS = ("dob", "d.o.b", "birth", "born")
_LABEL_WORDS = (*_MRN_WORDS, *_DOB_WORDS, "ssn")
_POSTCODE = re.compile(r"(?i)[a-z]{1,2}\d[a-z\d]? ?\d[abd-hjlnp-uw-z]{2}(?![\w-])")
_IP = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w.])"
)


def _starts_clear(text: str, start: int, forbidden: frozenset[str]) -> bool:
    return start == 0 or text[start - 1] not in forbidden


_BEFORE_EMAIL = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.%+-")
_BEFORE_WORD = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_BEFORE_IP = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.")
_BEFORE_POSTCODE = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-")


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _uk_phone_ok(text: str, m: re.Match[str]) -> bool:
    d = _digits(m.group(0))
    if d.startswith("0044"):
        d = "0" + d[4:]
    elif d.startswith("44") and m.group(0).lstrip().startswith(("+", "00")):
        d = "0" + d[2:]
    if d.startswith("00"):
        d = d[1:]
    # National numbers: 0 + 9 or 10 digits; the area/mobile code never starts with 0.
    return len(d) in (10, 11) and d[0] == "0" and d[1] != "0"


def _intl_ok(text: str, m: re.Match[str]) -> bool:
    return 8 <= len(_digits(m.group(0))) <= 15


def _ssn_ok(number: str) -> bool:
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _dashed_ssn_ok(text: str, m: re.Match[str]) -> bool:
    return _ssn_ok(m.group(0).replace("-", ""))


def _labelled_ssn_ok(text: str, m: re.Match[str]) -> bool:
    return _ssn_ok(m.group(1))


def nhs_checksum_ok(number: str) -> bool:
    """Modulus 11 check of a 10-digit NHS number."""
    if len(number) != 10 or not number.isdigit():
        return False
    total = sum(int(number[i]) * (10 - i) for i in range(9))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(number[9])


def _nhs_ok(text: str, m: re.Match[str]) -> bool:
    number = m.group(1) + m.group(3) + m.group(4)
    if not nhs_checksum_ok(number) or len(set(number)) == 1:
        return False
    if m.group(2) == "-":
        return True
    # Space-separated or run together: ten digits alone prove little; one in eleven passes
    # the check digit. Require the label within the 40 characters before.
    return _NHS_LABEL.search(text, max(0, m.start() - 40), m.start()) is not None


def _always(text: str, m: re.Match[str]) -> bool:
    return True


_Check = Callable[[str, re.Match[str]], bool]


def scan_phi(
    text: str, kinds: Iterable[str] | None = None, *, spans: TextSpans | None = None
) -> list[PHIMatch]:
    """PHI-shaped spans of `text`, ordered by position.

    `kinds` restricts the search (e.g. a policy's `enabled_phi_patterns`); the default is the
    patterns a policy enables by default. `spans` are the text's candidate spans when the caller
    has them already (see `_tokens.text_spans`).
    """
    wanted = {k for k, on in PHI_PATTERN_DEFAULTS.items() if on} if kinds is None else set(kinds)
    if not text:
        return []
    if spans is None:
        spans = text_spans(text)
    return _scan_phi(text, wanted, spans)


def _scan_phi(text: str, wanted: set[str], spans: TextSpans | None) -> list[PHIMatch]:
    """`scan_phi`; without `spans` (the compiled core is not built) by the reference path."""
    if spans is not None:
        has_digit = spans.has_digit
    else:
        has_digit = _ANY_DIGIT.search(text) is not None
    # The labels are looked for only in texts with a digit; without one, the lower-cased copy
    # serves only to tell whether lower-casing keeps the length, which an ASCII text's does.
    labelled = "mrn" in wanted or "dob" in wanted or "ssn" in wanted
    present: frozenset[str] | None = None  # the label words in the text, when known
    if labelled and has_digit and spans is not None and _tokens._scanner is not None:
        # One pass for all the label words. `w in text.lower()` is the same test: only ASCII
        # letters lower-case to the letters of a label (see test_phi).
        bits = _tokens._scanner.label_words(text, _LABEL_WORDS)
        present = frozenset(w for k, w in enumerate(_LABEL_WORDS) if bits >> k & 1)
    # The lower-cased copy, when the label words are known (`present`), is made only if a
    # labelled pattern (or e-mail) runs on a long text: it serves for their windows and to tell
    # whether lower-casing keeps the length. An ASCII text is lower-cased only for the windows
    # of the labels it holds.
    lower: str | None = None
    if present is None:
        lower = text.lower() if labelled and (has_digit or not text.isascii()) else ""
    elif text.isascii() and not present:
        lower = ""
    # (kind, pattern, check, characters that may not precede a match)
    checks: list[tuple[str, re.Pattern[str], _Check, frozenset[str]]] = []
    if "email" in wanted and "@" in text:
        checks.append(("email", _EMAIL, _always, _BEFORE_EMAIL))
    if has_digit:
        if "phone" in wanted:
            checks.append(("phone", _PHONE_UK, _uk_phone_ok, _BEFORE_NUMBER))
            checks.append(("phone", _PHONE_NA, _always, _BEFORE_NUMBER))
            if "+" in text:
                checks.append(("phone", _PHONE_INTL, _intl_ok, _BEFORE_NUMBER))
        if "ssn" in wanted:
            if "-" in text:
                checks.append(("ssn", _SSN, _dashed_ssn_ok, _BEFORE_IP | {"-"}))
            if "ssn" in present if present is not None else "ssn" in (lower or ""):
                checks.append(("ssn", _SSN_LABELLED, _labelled_ssn_ok, frozenset()))
        if "nhs_number" in wanted:
            checks.append(("nhs_number", _NHS, _nhs_ok, _BEFORE_IP | {"-"}))
        if "mrn" in wanted and _has_label(_MRN_WORDS, lower or "", present):
            checks.append(("mrn", _MRN, _always, _BEFORE_WORD))
        if "dob" in wanted and _has_label(_DOB_WORDS, lower or "", present):
            checks.append(("dob", _DOB, _always, frozenset()))
        if "postcode" in wanted:
            checks.append(("postcode", _POSTCODE, _always, _BEFORE_POSTCODE))
        if "ip_address" in wanted:
            checks.append(("ip_address", _IP, _always, _BEFORE_IP))
    found: list[PHIMatch] = []
    numbers = spans.numbers if spans is not None else _number_windows(text)
    memo: _Memo = {}  # the distinct texts of each list of windows
    # Postcodes and IP addresses: each window found by `text_spans` holds every match of the
    # pattern that starts in it, and the character after it (the look-ahead), so running the
    # pattern window by window finds what it finds on the whole text.
    exact: dict[re.Pattern[str], list[tuple[int, int]]] = {}
    if spans is not None:
        exact = {_POSTCODE: spans.postcode, _IP: spans.ip}
    # Long texts: each pattern runs only where it can match (digit runs for the number patterns,
    # a label's neighbourhood for MRN/DOB/SSN, an "@" for e-mail), on a compact copy of those
    # windows; a regex pass over a whole megabyte costs more than the rest of the scan.
    for kind, pattern, ok, before in checks:
        if pattern in _NUMBER_PATTERNS:
            windows, bounded = numbers, True
        elif len(text) >= _WINDOWED and pattern in _LABELS:
            if present is not None and "\u0130" not in text:
                # The windows of the lower-cased text, found by the core on the text itself:
                # lower-casing keeps the length of a text without U+0130, the one character it
                # makes two (see `_scanner.label_windows`).
                assert _tokens._scanner is not None
                label, reach_back, reach_on = _LABELS[pattern]
                at = _tokens._scanner.label_windows(text, label, reach_back, reach_on)
                pairs = np.frombuffer(at, dtype=np.int64).reshape(-1, 2)
                windows = list(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))
                bounded = False
            else:
                if lower is None:
                    lower = text.lower()
                if not lower or len(lower) == len(text):
                    windows, bounded = _word_windows(lower or text, *_LABELS[pattern]), False
                else:
                    windows, bounded = None, False
        else:
            windows, bounded = None, False
        if pattern in exact:
            # One pass over the windows joined (`_finditer`): no match reads a NUL, and the
            # look-ahead sees a NUL where a window's own end stood, which it accepts alike.
            windows, bounded = exact[pattern], True
        for start, end in _accepted(pattern, text, windows, bounded, before, ok, memo):
            found.append(PHIMatch(kind, start, end))
    found.sort(key=lambda p: (p.start, -p.end))
    return _drop_nested(found)


def _has_label(words: tuple[str, ...], lower: str, present: frozenset[str] | None) -> bool:
    if present is not None:
        return any(w in present for w in words)
    return any(w in lower for w in words)


_ANY_DIGIT = re.compile(r"\d")
_NUMBER_PATTERNS = (_PHONE_UK, _PHONE_NA, _PHONE_INTL, _SSN, _NHS)
_WINDOWED = 2048  # shorter texts are scanned whole
# Labelled patterns: the label words (lower case), characters before and after them to scan.
_LABELS: dict[re.Pattern[str], tuple[tuple[str, ...], int, int]] = {
    _MRN: (_MRN_WORDS, 1, 96),
    _DOB: (_DOB_WORDS, 10, 64),
    _SSN_LABELLED: (("ssn",), 1, 24),
    _EMAIL: (("@",), 70, 320),
}
_NUMBER_BYTES = np.zeros(256, dtype=np.bool_)
_NUMBER_BYTES[np.frombuffer(b"0123456789", dtype=np.uint8)] = True
_NUMBER_SEPARATORS = np.zeros(256, dtype=np.bool_)
_NUMBER_SEPARATORS[np.frombuffer(b" ()+.-", dtype=np.uint8)] = True
_PARENS = np.zeros(256, dtype=np.bool_)
_PARENS[np.frombuffer(b"()", dtype=np.uint8)] = True


def _number_windows(text: str) -> list[tuple[int, int]] | None:
    """Where phone numbers, SSNs and NHS numbers can be: runs of digit groups joined as the
    patterns join them (see below), holding at least 9 digits (with two characters of context
    each side).

    Only for long texts (short ones are scanned whole); None means scan the whole text.
    """
    if len(text) < 2048:
        return None
    data = code_units(text)
    digit = _NUMBER_BYTES[data]
    sep = _NUMBER_SEPARATORS[data]
    # Separator runs join digit groups of one number when they are one character, or two with
    # a parenthesis ("(020) 7946", "+44 (0)20"): no pattern allows more. Wider gaps are the
    # columns of a table.
    edge = np.diff(sep.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    s_start, s_end = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    width = s_end - s_start
    inside = digit.copy()
    inside[s_start[width == 1]] = True
    two = s_start[width == 2]
    two = two[_PARENS[data[two]] | _PARENS[data[two + 1]]]
    inside[two] = True
    inside[two + 1] = True
    edge = np.diff(inside.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    r_start, r_end = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    if not len(r_start):
        return []
    counts = np.concatenate(([0], np.cumsum(digit, dtype=np.int32)))
    enough = (counts[r_end] - counts[r_start]) >= 9
    n = len(text)
    a = np.maximum(r_start[enough] - 2, 0)
    b = np.minimum(r_end[enough] + 2, n)
    if not len(a):
        return []
    # Merge windows that are close (vectorised: windows are sorted and their ends increase).
    new = np.concatenate(([True], (a[1:] - b[:-1]) >= 64))
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(a) - 1)
    return list(zip(a[first].tolist(), b[last].tolist(), strict=True))


def _word_windows(
    lower: str, words: tuple[str, ...], before: int, after: int
) -> list[tuple[int, int]]:
    """Windows of `before`/`after` characters around each occurrence of `words`, merged."""
    n = len(lower)
    spans: list[tuple[int, int]] = []
    for w in words:
        i = lower.find(w)
        while i != -1:
            spans.append((max(0, i - before), min(n, i + len(w) + after)))
            i = lower.find(w, i + 1)
    spans.sort()
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


# The distinct texts of a list of windows: each window's slot among them, their offsets in the
# NUL-joined string, and that string (see `_window_hits`).
_Distinct = tuple[list[int], list[int], str]
_Memo = dict[int, tuple[list[tuple[int, int]], _Distinct]]


def _distinct_windows(text: str, windows: list[tuple[int, int]], memo: _Memo | None) -> _Distinct:
    """`_Distinct` of `windows`; `memo` keeps it for the scan of one text, by the list's
    identity, since several patterns run on the same windows (the number windows)."""
    key = id(windows)
    if memo is not None and key in memo and memo[key][0] is windows:
        return memo[key][1]
    slot: dict[str, int] = {}
    which: list[int] = []
    for lo, hi in windows:
        which.append(slot.setdefault(text[lo:hi], len(slot)))
    at: list[int] = []
    pos = 0
    for chunk in slot:
        at.append(pos)
        pos += len(chunk) + 1
    found = (which, at, "\0".join(slot))
    if memo is not None:
        memo[key] = (windows, found)  # the list itself too: its id is its while it lives
    return found


def _window_hits(
    pattern: re.Pattern[str],
    text: str,
    windows: list[tuple[int, int]],
    memo: _Memo | None = None,
) -> tuple[list[int], list[list[int]]]:
    """Each window's slot among the distinct window texts, and the offsets at which `pattern`
    matches in each distinct text: the distinct texts joined by NUL (which no pattern matches)
    and scanned once."""
    which, at, joined = _distinct_windows(text, windows, memo)
    hits: list[list[int]] = [[] for _ in at]
    for m in pattern.finditer(joined):
        i = bisect.bisect_right(at, m.start()) - 1
        hits[i].append(m.start() - at[i])
    return which, hits


def _finditer(
    pattern: re.Pattern[str], text: str, windows: list[tuple[int, int]] | None, bounded: bool
) -> Iterator[re.Match[str]]:
    """Matches of `pattern` in `text` inside `windows` (None: the whole text).

    The windows are joined by NUL (which no pattern matches) into one compact string scanned
    once; each hit is matched again on `text` at its offset, so callers get matches of `text`.
    `bounded`: a match ends inside its window (else it may run on past it in `text`).
    """
    if windows is None:
        yield from pattern.finditer(text)
        return
    if not windows:
        return
    # Long outputs repeat themselves (a table printed per fold, the same log block): each
    # distinct window is scanned once. What the pattern finds in a window depends on the
    # window's text alone (no match crosses a NUL), so its hits serve every copy of it.
    which, hits = _window_hits(pattern, text, windows)
    for (lo, hi), i in zip(windows, which, strict=True):
        for offset in hits[i]:
            start = lo + offset
            again = pattern.match(text, start, hi) if bounded else pattern.match(text, start)
            if again is not None:
                yield again


# How many characters before a match the checks read: `_starts_clear` one, `_nhs_ok` the 40
# before it and, for the label's \b, one more.
_REACH = {_NHS: 41}


def _accepted(
    pattern: re.Pattern[str],
    text: str,
    windows: list[tuple[int, int]] | None,
    bounded: bool,
    before: frozenset[str],
    ok: _Check,
    memo: _Memo | None = None,
) -> Iterator[tuple[int, int]]:
    """(start, end) of each match of `pattern` in `text` inside `windows` (see `_finditer`)
    that no character of `before` precedes and `ok` accepts, in order.

    In bounded windows a match and the checks read only the window's text, when the match
    starts far enough into it (`_REACH`): the verdict on a hit of a window's text then serves
    every copy of that text, so a long output repeating a block checks its hits once.
    """
    if windows is None or not bounded or not windows:
        for m in _finditer(pattern, text, windows, bounded):
            if before and not _starts_clear(text, m.start(), before):
                continue
            if ok(text, m):
                yield m.start(), m.end()
        return
    which, hits = _window_hits(pattern, text, windows, memo)
    reach = _REACH.get(pattern, 1 if before else 0)
    verdicts: dict[tuple[int, int], tuple[int, int] | None] = {}
    for (lo, hi), i in zip(windows, which, strict=True):
        for offset in hits[i]:
            known = offset >= reach
            if known and (i, offset) in verdicts:
                verdict = verdicts[i, offset]
            else:
                again = pattern.match(text, lo + offset, hi)
                verdict = None
                if again is not None and (not before or _starts_clear(text, again.start(), before)):
                    if ok(text, again):
                        verdict = (offset, again.end() - lo)
                if known:
                    verdicts[i, offset] = verdict
            if verdict is not None:
                yield lo + verdict[0], lo + verdict[1]


def _drop_nested(found: list[PHIMatch]) -> list[PHIMatch]:
    """Drop a match inside an earlier match of the same kind (one phone, not two)."""
    out: list[PHIMatch] = []
    last_end: dict[str, int] = {}
    for m in found:
        if m.end <= last_end.get(m.kind, -1):
            continue
        last_end[m.kind] = max(m.end, last_end.get(m.kind, -1))
        out.append(m)
    return out
