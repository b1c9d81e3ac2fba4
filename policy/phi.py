"""Common PHI patterns (e-mail, phone, SSN, NHS number, MRN, date of birth, …) found in text.

This is the dataset-independent net under the identifier index: it finds personal data of a
shape, whatever table it came from. The patterns are tuned against ordinary analysis output —
tables of counts, p-values, ward statistics with dates, arrays of 0/1 labels, library versions —
so that they fire on personal data and not on numbers: phone numbers need a plausible national
or international shape, NHS numbers a valid modulus-11 check digit, SSNs the dashed form with a
valid area and group, MRNs and bare dates a label in front of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bedside.policy.model import PHI_PATTERN_DEFAULTS


@dataclass(frozen=True)
class PHIMatch:
    """Where a PHI-shaped span occurs (character offsets) and what it looks like."""

    kind: str
    start: int
    end: int


_NOT_BEFORE = r"(?<![\w@+.\-/])"
_NOT_AFTER = r"(?![\w@\-]|\.\d)"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?![\w-])"
)

# UK numbers: +44 / 0044 / trunk 0, then groups of 2-5, 3-4 and 3-4 digits with at most one
# separator between groups; the digit count is checked afterwards.
_PHONE_UK = re.compile(
    _NOT_BEFORE
    + r"(?:(?:\+|00)44[ .-]?(?:\(0\)[ .-]?)?\(?|\(?0)"
    + r"\d{2,5}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}"
    + _NOT_AFTER
)
# North American numbers: (555) 123-4567, 555-123-4567, 555.123.4567, +1 555 123 4567.
_PHONE_NA = re.compile(
    _NOT_BEFORE
    + r"(?:\(\d{3}\)[ ]?\d{3}[ .-]\d{4}"
    + r"|[2-9]\d{2}([.-])\d{3}\1\d{4}"
    + r"|\+1[ .-]?\(?[2-9]\d{2}\)?[ .-]?\d{3}[ .-]?\d{4})"
    + _NOT_AFTER
)
# Other international numbers: +CC then 2-5 groups.
_PHONE_INTL = re.compile(_NOT_BEFORE + r"\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,5}" + _NOT_AFTER)
_SSN = re.compile(
    r"(?<![\w\-.])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w\-]|\.\d)"
    r"|(?i:\bssn\b\W{0,3})(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}\b"
)
_NHS = re.compile(r"(?<![\w\-.])(\d{3})([ -]?)(\d{3})\2(\d{4})(?![\w\-]|\.\d)")
_NHS_LABEL = re.compile(r"(?i)\bnhs\b")
_MRN = re.compile(
    r"(?i)(?<![a-z0-9])(?:mrn|medical[ _]record[ _](?:number|no\.?)|hospital[ _](?:number|no\.?)"
    r"|patient[ _]id)(?:[\s:#=_-]{0,3}|(?=\d))[a-z]{0,3}-?\d{5,}(?![a-z0-9])"
)
_DATE = r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2} [A-Za-z]{3,9},? \d{4}"
_DATE += r"|[A-Za-z]{3,9} \d{1,2},? \d{4})"
_DOB = re.compile(
    r"(?i)\b(?:dob|d\.o\.b\.?|date[ _]of[ _]birth|birth[ _]?date|born(?: on)?)"
    r"[\s:=\"']{0,4}" + _DATE
)
_POSTCODE = re.compile(r"(?i)(?<![\w-])[a-z]{1,2}\d[a-z\d]? ?\d[abd-hjlnp-uw-z]{2}(?![\w-])")
_IP = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w.])"
)


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _uk_phone_ok(m: re.Match[str]) -> bool:
    d = _digits(m.group(0))
    if d.startswith("0044"):
        d = "0" + d[4:]
    elif d.startswith("44") and m.group(0).lstrip().startswith(("+", "00")):
        d = "0" + d[2:]
    if d.startswith("00"):
        d = d[1:]
    # National numbers: 0 + 9 or 10 digits; the area/mobile code never starts with 0.
    return len(d) in (10, 11) and d[0] == "0" and d[1] != "0"


def _intl_ok(m: re.Match[str]) -> bool:
    return 8 <= len(_digits(m.group(0))) <= 15


def nhs_checksum_ok(number: str) -> bool:
    """Modulus 11 check of a 10-digit NHS number."""
    if len(number) != 10 or not number.isdigit():
        return False
    total = sum(int(number[i]) * (10 - i) for i in range(9))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(number[9])


def _nhs_ok(text: str) -> Callable[[re.Match[str]], bool]:
    def ok(m: re.Match[str]) -> bool:
        number = m.group(1) + m.group(3) + m.group(4)
        if not nhs_checksum_ok(number) or len(set(number)) == 1:
            return False
        if m.group(2) == "-":
            return True
        # Space-separated or run together: ten digits alone prove little; one in eleven passes
        # the check digit. Require the label within the 40 characters before.
        return _NHS_LABEL.search(text, max(0, m.start() - 40), m.start()) is not None

    return ok


def _always(_: re.Match[str]) -> bool:
    return True


def scan_phi(text: str, kinds: Iterable[str] | None = None) -> list[PHIMatch]:
    """PHI-shaped spans of `text`, ordered by position.

    `kinds` restricts the search (e.g. a policy's `enabled_phi_patterns`); the default is the
    patterns a policy enables by default.
    """
    wanted = {k for k, on in PHI_PATTERN_DEFAULTS.items() if on} if kinds is None else set(kinds)
    found: list[PHIMatch] = []
    has_digit = any(ch.isdigit() for ch in text[:4096]) or re.search(r"\d", text) is not None
    checks: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool]]] = []
    if "email" in wanted and "@" in text:
        checks.append(("email", _EMAIL, _always))
    if has_digit:
        if "phone" in wanted:
            checks.append(("phone", _PHONE_UK, _uk_phone_ok))
            checks.append(("phone", _PHONE_NA, _always))
            if "+" in text:
                checks.append(("phone", _PHONE_INTL, _intl_ok))
        if "ssn" in wanted:
            checks.append(("ssn", _SSN, _always))
        if "nhs_number" in wanted:
            checks.append(("nhs_number", _NHS, _nhs_ok(text)))
        if "mrn" in wanted:
            checks.append(("mrn", _MRN, _always))
        if "dob" in wanted:
            checks.append(("dob", _DOB, _always))
        if "postcode" in wanted:
            checks.append(("postcode", _POSTCODE, _always))
        if "ip_address" in wanted:
            checks.append(("ip_address", _IP, _always))
    for kind, pattern, ok in checks:
        for m in pattern.finditer(text):
            if ok(m):
                found.append(PHIMatch(kind, m.start(), m.end()))
    found.sort(key=lambda p: (p.start, -p.end))
    return _drop_nested(found)


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
