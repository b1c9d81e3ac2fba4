"""Identifier values whose characters are separated or regrouped: a layer of `scan.scan_text`.

The identifier index matches a value's tokens (runs of letters or of digits) whatever stands
between them, so `Smith, John` and `FY8R-5HF` are found as written. A reader also reads back a
value whose *tokens* were cut apart, which the index cannot: `M R N 5 1 0 6 9 8 5 6`,
`T i a r n a   M o n t e n e g r o`, `MRN51-069856`, `MRN 5106 9856`, `0733.103.5375`, or a
name printed a part per line (`Tiarna` / `Montenegro`). This module finds such phrasings,
writes each compacted (the characters joined again), and runs all of them through the index in
one call. Three forms, each limited by the evidence it needs, because joining characters across
separators is also how honest numbers (table columns, dates, decimals, counts) would turn into
somebody's identifier:

- **spaced characters**: four or more single letters or digits with the same separator between
  each and the next: one character other than a line feed, or two to four that are not all
  blank (`", ".join(v)`, `print(list(v))`'s `', '`); a wider gap (`   ` from
  `" ".join("Ann Lee")`, `- -` from `"-".join(...)`) is a word break. Blanks alone wider than
  one separate table columns, not characters. A run holding a letter is also read without up
  to `TRIM` characters at either end (a word `a` before it joins its first token). A run of
  digits alone is read whole, with `MIN_GROUPED_DIGITS` to `MAX_DIGITS` digits (a printed
  `[1 2 3 4 5 6]` is not a hospital number, a longer run is one token no value has);
- **regrouped digits**: a word that begins a value holding digits (`IdentifierIndex.code_words`,
  e.g. `mrn`) followed by digit groups joined by single separators (space, NBSP, `-`, `.`, `_`,
  `/`), read as the word and the digits joined (`MRN 5106 9856`, `MRN51-069856`), or digit
  groups alone joined by one repeated `.`, `_`, `/` or NBSP with `MIN_GROUPED_DIGITS` digits or
  more (`0733.103.5375`). Two groups joined by a point after the word or a blank are a decimal
  (`loss 0.25`, `I63.9`) and are not joined. Digits split by spaces and dashes alone are the
  index's own regrouping (`_digit_groups`). A compacted run counts only when a value fills it
  exactly (`mrn51069856`, not a value inside `mrn510698567`), so honest numbers joined by chance
  must equal a whole value;
- **a name over two lines**: a line of one to three words of letters only, and the first
  words of the next line, read as one line; the match must cross the line break. Table rows
  are not joined: their lines hold numbers or more fields.

Dates of birth are not looked for in these forms: a date alone is weak anyway (see
`identifiers.strengthen`), and joined digit groups of timestamps and tables would take date
shapes. Findings are reported over the whole separated span, as the decoded layers of
`scan_text` are, with the kind `encoded:separated+identifier`.

Cost: one pass of the compiled core (`_scanner.separated_hints`, SSE2 where built) over the
text says where each form can start: chains of single characters, a word before digit groups,
dotted digit groups, short lines. The regular expressions run only there (a megabyte of prose
costs about 0.3 ms, of a numeric table or a CSV 1-2 ms), and the
regrouped-digit forms only where digits are. Without the core (not built) they run over
the whole text, with the same results (tests/policy/test_separated.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator

import numpy as np

from bedside.policy._tokens import _scanner, has_ascii_digit
from bedside.policy.identifiers import MIN_GROUPED_DIGITS, IdentifierIndex

KIND = "encoded:separated+identifier"
MAX_GROUPS = 16  # digit groups of one run looked at (a phone written a digit at a time: 11)
MAX_DIGITS = 16  # longest run of joined digits looked up (a card number's; phones have 10-13)
TRIM = 2  # characters of a spaced run not part of the value, at either end, looked past

# The separator between two characters of a spaced run: one character other than a line feed,
# or two to four with one that is not blank (`", ".join(v)`, `list(v)` printed: `', '`); a word
# break is the separator around another character (`- -`; ` - ` for the hyphen of
# `Heinz-Otto`; `', ' ', '` in a printed list) or two or three blanks.
_SPACED = re.compile(
    r"(?<![^\W_])[^\W_](?P<s>[^\w\n]{1,4}|_)[^\W_]"
    r"(?:(?:(?P=s)|(?P=s)[^\w\n](?P=s)|[ \u00a0\t]{2,3})[^\W_]){2,}(?![^\W_])"
)
_GAPS = re.compile(r"[\W_]+")
_GROUP_SEP = "[ \u00a0\\-._/]"
# A word and the digit groups after it: `MRN 5106 9856`, `MRN51-069856`, `MRN-5-1-0-6-...`.
_PREFIXED = re.compile(
    r"(?<![^\W_])(?P<word>[^\W\d_]+)(?P<wsep>" + _GROUP_SEP + ")?"
    r"(?P<num>\d+(?:" + _GROUP_SEP + r"\d+)+)(?![^\W_])"
)
# Digit groups joined by one repeated separator that decimals and the index's regrouping (space,
# dash) do not use: `0733.103.5375`, `0733_103_5375`.
_DOTTED = re.compile(r"(?<![\w.])\d+(?P<d>[._/\u00a0])\d+(?:(?P=d)\d+)+(?![\w]|\.\d)")
_DIGITS = re.compile(r"\d+")
_DECIMAL = re.compile(r"\d+\.\d+")
_GLUED = (None, " ", "\u00a0")  # what may stand between a word and a decimal after it
_LINE_FEED = re.compile("\n")
# A line of one to three words of letters only (a hyphen or apostrophe inside), then the first
# words of the next line.
_NAME_WORD = r"[^\W\d_]+(?:['\-][^\W\d_]+)*"  # `Heinz-Otto`, `O'Neill`
_LINE_PAIR = re.compile(
    rf"[ \t]*(?P<a>{_NAME_WORD}(?:[ \t]{_NAME_WORD}){{0,2}})[ \t]*\r?\n"
    rf"[ \t]*(?P<b>{_NAME_WORD}(?:[ \t,]{{1,2}}{_NAME_WORD}){{0,2}})"
)

# (start, end) of the span in the text, its compacted form, the form's rule, and for a name
# over two lines where the first line ends in the form (0 otherwise).
_Candidate = tuple[int, int, str, str, int]


def separated_findings(text: str, index: IdentifierIndex) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, column) of every identifier value written separated in `text`."""
    candidates = list(_candidates(text, index.code_words))
    if not candidates:
        return []
    out: list[tuple[str, int, int, str]] = []
    dates = index.date_kinds
    # One index pass over every compacted form (no form holds a line break: `_find_each`).
    for i, a, b, column in index._find_each([c[2] for c in candidates]):
        if column in dates:
            continue
        start, end, form, rule, cut = candidates[i]
        if _accept(rule, form, a, b, cut):
            out.append((KIND, start, end, column))
    return out


def _accept(rule: str, form: str, a: int, b: int, cut: int) -> bool:
    """Whether a match at [a, b) of a compacted `form` has the evidence its rule needs."""
    if rule == "spaced":
        matched = form[a:b]
        return not matched.isdigit() or len(matched) >= MIN_GROUPED_DIGITS
    if rule == "regrouped":
        return a == 0 and b == len(form)  # the run is the value, nothing more
    # "lines": the match crosses the joined line break (the space after the first line).
    return a < cut < b


def _candidates(text: str, code_words: frozenset[str]) -> Iterator[_Candidate]:
    hints = _hints(text, max((len(w) for w in code_words), default=0))
    if hints is None:
        yield from _spaced(text, None)
        if has_ascii_digit(text):
            yield from _prefixed(text, None, code_words)
            yield from _dotted(text, None)
        if "\n" in text:
            yield from _line_pairs(text, None)
        return
    yield from _spaced(text, list(zip(hints[1], hints[5], strict=True)))
    # Words before digit groups: only those that begin a value with digits are read further.
    words = [a for a, b in zip(hints[2], hints[6], strict=True) if text[a:b].lower() in code_words]
    yield from _prefixed(text, words, code_words)
    yield from _dotted(text, hints[3])
    yield from _line_pairs(text, hints[4])


def _hints(text: str, max_word: int) -> dict[int, list[int]] | None:
    """Where each form can start in `text` (`_scanner.separated_hints`), by form, words before
    digit groups of at most `max_word` letters; None when every position must be tried (the
    core not built)."""
    if _scanner is None:
        return None
    found = _scanner.separated_hints(text, MIN_GROUPED_DIGITS, MAX_DIGITS, max_word)
    pairs = np.frombuffer(found, dtype=np.int64).reshape(-1, 2)
    out: dict[int, list[int]] = {0: [], 1: [], 2: [], 3: [], 4: [], 5: [], 6: []}
    for form, at in pairs.tolist():
        out[form].append(at)
    return out


def _at(pattern: re.Pattern[str], text: str, hints: list[int] | None) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)`, or the same matches tried at `hints` only (a superset of where
    they start): each hint past the last match, as `finditer` goes on past it."""
    if hints is None:
        yield from pattern.finditer(text)
        return
    end = 0
    for at in hints:
        if at < end:
            continue
        m = pattern.match(text, at)
        if m is not None:
            end = m.end()
            yield m


def _spaced(text: str, chains: list[tuple[int, int]] | None) -> Iterator[_Candidate]:
    """Runs of single characters between separators, compacted (word breaks as one space).

    A run lies within one chain of single characters (`chains`, from the core), so looking
    for runs chain by chain finds what looking through the whole text does."""
    if chains is None:
        matches: Iterable[re.Match[str]] = _SPACED.finditer(text)
    else:
        matches = itertools.chain.from_iterable(
            _SPACED.finditer(text, start, end) for start, end in chains
        )
    for m in matches:
        sep = m.group("s")
        if len(sep) > 1 and sep.isspace():
            continue  # blanks alone separate table columns (`1  2  3`), not a value's characters
        form = _compact(m.group(), sep)
        if form.isdigit():
            # Digits alone: as many as a phone number has (a printed `[1 2 3 4 5 6]` is a list),
            # and no more than a value can have (a longer run is one token, matching nothing).
            if MIN_GROUPED_DIGITS <= len(form) <= MAX_DIGITS:
                yield m.start(), m.end(), form, "spaced", 0
            continue
        for trimmed in _trims(form):
            yield m.start(), m.end(), trimmed, "spaced", 0


def _trims(form: str) -> list[str]:
    """`form` and `form` without up to `TRIM` characters at either end.

    Joined, a character before or after the value that was spaced like it becomes part of
    the value's first or last token (`a M R N 5 1 ...` in a sentence reads `aMRN51...`)."""
    at = [k for k, ch in enumerate(form) if ch != " "]
    out = [form]
    for i in range(TRIM + 1):
        for j in range(TRIM + 1):
            if (i or j) and len(at) - i - j >= 4:
                out.append(form[at[i] : at[len(at) - 1 - j] + 1])
    return out


def _compact(run: str, sep: str) -> str:
    """A spaced run's characters joined: a gap that is `sep` joins, any other is a word break."""
    parts = _GAPS.split(run)
    gaps = _GAPS.findall(run)
    out = [parts[0]]
    for gap, ch in zip(gaps, parts[1:], strict=True):
        out.append(ch if gap == sep else " " + ch)
    return "".join(out)


def _prefixed(
    text: str, hints: list[int] | None, code_words: frozenset[str]
) -> Iterator[_Candidate]:
    """A word that begins a value with digits (`IdentifierIndex.code_words`) and its first
    digit groups joined: `MRN 5106 9856` as `MRN51069856`."""
    for m in _at(_PREFIXED, text, hints):
        if m.group("word").lower() not in code_words:
            continue
        if m.group("wsep") in _GLUED and _DECIMAL.fullmatch(m.group("num")):
            # `loss 0.25`, `I63.9`: a decimal after a word, or a code with one decimal point,
            # not a number in groups (`MRN.5106.9856` is).
            continue
        form = m.group("word")
        digits = 0
        groups = _DIGITS.finditer(text, m.start("num"), m.end())
        for k, g in enumerate(itertools.islice(groups, MAX_GROUPS)):
            form += g.group()
            digits += g.end() - g.start()
            if digits > MAX_DIGITS:
                break
            if k >= 1:  # one group after the word is the index's own match
                yield m.start(), g.end(), form, "regrouped", 0


def _dotted(text: str, hints: list[int] | None) -> Iterator[_Candidate]:
    """Digit groups joined by one repeated `.`, `_`, `/` or NBSP, every run of them joined."""
    for m in _at(_DOTTED, text, hints):
        spans = [(g.start(), g.end()) for g in _DIGITS.finditer(text, m.start(), m.end())]
        spans = spans[:MAX_GROUPS]
        for i, j in itertools.combinations(range(len(spans) + 1), 2):
            if j - i < 2:
                continue
            digits = "".join(text[a:b] for a, b in spans[i:j])
            if MIN_GROUPED_DIGITS <= len(digits) <= MAX_DIGITS:
                yield spans[i][0], spans[j - 1][1], digits, "regrouped", 0


def _line_pairs(text: str, hints: list[int] | None) -> Iterator[_Candidate]:
    """A short line of words and the first words of the next, as one line."""
    if hints is None:
        starts: Iterable[int] = itertools.chain((0,), (m.end() for m in _LINE_FEED.finditer(text)))
    else:
        starts = hints
    for at in starts:
        m = _LINE_PAIR.match(text, at)
        if m is not None:
            first, second = m.group("a"), m.group("b")
            yield m.start("a"), m.end("b"), f"{first} {second}", "lines", len(first)
