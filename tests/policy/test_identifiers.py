"""The identifier index: reformatted values are found, longer tokens and ordinary output not."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bedside.policy import IdentifierIndex
from bedside.policy.identifiers import _SUFFIXES, _TITLES

VALUES = {
    "name": ["John Smith", "Dr Mary Ann Jones", "Zoë Ångström", "Siobhán O'Brien"],
    "phone": ["020 7946 0123", "+44 161 496 0123", "07700 900456"],
    "dob": ["1956-03-12"],
    "mrn": ["MRN00012345"],
    "postcode": ["SW1A 1AA"],
}


@pytest.fixture(scope="module")
def index() -> IdentifierIndex:
    frame = pd.DataFrame({k: pd.Series(v) for k, v in VALUES.items()})
    return IdentifierIndex.from_frames([(frame, list(VALUES))])


def spans(index: IdentifierIndex, text: str) -> list[str]:
    return [text[m.start : m.end] for m in index.find(text)]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("patient JOHN   SMITH seen", "name"),
        ("Smith, John", "name"),
        ("john\tsmith", "name"),
        ("Mary Jones", "name"),
        ("Jones, Mary", "name"),
        ("MARY ANN JONES", "name"),
        ("zoë ångström", "name"),
        ("ZOË ÅNGSTRÖM", "name"),
        ("Siobhán O Brien", "name"),
        ("02079460123", "phone"),
        ("(020) 7946-0123", "phone"),
        ("020-7946-0123", "phone"),
        ("0207 946 0123", "phone"),
        ("+44 20 7946 0123", "phone"),
        ("+442079460123", "phone"),
        ("+44 (0)20 7946 0123", "phone"),
        ("0161 496 0123", "phone"),
        ("01614960123", "phone"),
        ("07700900456", "phone"),
        ("1956-03-12", "dob"),
        ("12/03/1956", "dob"),
        ("12.3.1956", "dob"),
        ("3/12/1956", "dob"),
        ("12 Mar 1956", "dob"),
        ("12 March 1956", "dob"),
        ("March 12, 1956", "dob"),
        ("19560312", "dob"),
        ("12031956", "dob"),
        ("1956-03-12T00:00:00.000Z", "dob"),
        ("Timestamp('1956-03-12 00:00:00')", "dob"),
        ("MRN00012345", "mrn"),
        ("mrn00012345", "mrn"),
        ("MRN-12345", "mrn"),
        ("mrn 00012345", "mrn"),
        ("Mrn12345", "mrn"),
        ("sw1a 1aa", "postcode"),
        ("SW1A1AA", "postcode"),
    ],
)
def test_reformatted_values_are_found(index: IdentifierIndex, text: str, kind: str) -> None:
    found = index.find(f"[{text}]")
    assert found, text
    assert kind in {m.value_kind for m in found}
    assert index.first(f"<<{text}>>") is not None


@pytest.mark.parametrize(
    "text",
    [
        "Johnny Smithson",
        "Joann Smithers",
        "johnsmith",
        "XMRN00012345",
        "MRN000123456",
        "MRN0001234",
        "020794601234",
        "9020 7946 0123 5",
        "1956-03-13",
        "21956-03-12",
        "SW1A 1AAB",
        "John",
        "Smith",
        "Mary",
        "ward 7946: 0123 patients",
    ],
)
def test_longer_tokens_and_fragments_do_not_match(index: IdentifierIndex, text: str) -> None:
    assert spans(index, text) == [], text


def test_offsets_point_at_the_value_in_unicode_text(index: IdentifierIndex) -> None:
    text = "→ née «Zoë Ångström» et John Smith"
    got = spans(index, text)
    assert got == ["Zoë Ångström", "John Smith"]


def test_matches_carry_no_value_and_repr_is_clean(index: IdentifierIndex) -> None:
    match = index.find("call 020 7946 0123")[0]
    assert "7946" not in repr(match)
    assert "Smith" not in repr(index) and "7946" not in repr(index)
    assert len(index) == sum(len(v) for v in VALUES.values())


def test_short_and_numeric_values_are_not_indexed() -> None:
    index = IdentifierIndex.build(["12", "Al", "4521", "987654"])
    assert index.find("12 Al 4521") == []
    assert index.find("id 987654") != []


def test_a_codes_digits_alone_are_found_when_a_number_would_be() -> None:
    # `value[3:]` prints the record number without its letters: its digits are indexed as a
    # numeric value is, so with fewer than `min_digits` significant digits they are not.
    index = IdentifierIndex.build(["MRN51069856", "XJ-123456789", "P4100754", "MRN00012345"])
    for text in ("case 51069856", "123456789", "id=4100754,", "51069856.0"):
        assert index.find(text) != [], text
    for text in ("12345", "00012345", "0.51069856", "510698560", "1069856"):
        assert index.find(text) == [], text


def test_build_and_first(index: IdentifierIndex) -> None:
    assert index.first("nothing here") is None
    m = index.first("a then John Smith then 1956-03-12")
    assert m is not None and m.value_kind == "name"
    assert len(index.find("John Smith " * 50, limit=3)) == 3


def test_every_demo_identifier_is_found(
    patients: pd.DataFrame, patient_index: IdentifierIndex
) -> None:
    sample = patients.sample(200, random_state=1)
    for column in ["mrn", "name", "dob", "postcode", "phone"]:
        text = " | ".join(sample[column].tolist())
        found = patient_index.find(text)
        assert len(found) >= len(sample), column
    # Reformatted: upper-case names, digits-only phones, day-first dates.
    for _, row in sample.head(50).iterrows():
        assert patient_index.first(row["name"].upper())
        assert patient_index.first("".join(ch for ch in row["phone"] if ch.isdigit()))
        d = dt.date.fromisoformat(row["dob"])
        assert patient_index.first(f"born {d.day}/{d.month}/{d.year}")
        assert patient_index.first(row["mrn"].lower().replace("mrn", "MRN-"))


def test_ordinary_outputs_do_not_match(
    ordinary_outputs: list[str], patient_index: IdentifierIndex
) -> None:
    for text in ordinary_outputs:
        hits = patient_index.find(text)
        # Dates of birth can coincide with any date an output prints; only fixed texts without
        # dates are held to zero hits here (dates are covered in test_phi).
        assert [m.value_kind for m in hits if m.value_kind != "dob"] == [], text[:200]


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)


@settings(max_examples=60, deadline=None)
@given(first=_names, last=_names, upper=st.booleans(), comma=st.booleans(), pad=st.integers(1, 2))
def test_names_any_case_spacing_and_order(
    first: str, last: str, upper: bool, comma: bool, pad: int
) -> None:
    assume(first not in _TITLES and last not in _TITLES + _SUFFIXES)
    index = IdentifierIndex.build([f"{first.title()} {last.title()}"])
    text = f"{last},{' ' * pad}{first}" if comma else f"{first}{' ' * pad}{last}"
    text = text.upper() if upper else text
    assert index.first(f"x: {text}.") is not None
    assert index.first(f"x{first} {last}") is None or first.startswith(first)  # boundary
    assert index.first(f"{first}{last}q") is None


@settings(max_examples=60, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=9, max_size=9),
    sizes=st.lists(st.integers(2, 5), min_size=1, max_size=4),
    sep=st.sampled_from([" ", "-"]),
)
def test_phone_any_grouping(digits: str, sizes: list[int], sep: str) -> None:
    number = "07" + digits  # 11 digits, UK mobile shape
    index = IdentifierIndex.build([f"{number[:5]} {number[5:]}"])
    parts, at = [], 0
    for size in sizes:
        if len(number) - (at + size) < 2:
            break
        parts.append(number[at : at + size])
        at += size
    parts.append(number[at:])
    assert index.first("tel " + sep.join(parts)) is not None, parts
    assert index.first("tel " + number + "9") is None


@settings(max_examples=60, deadline=None)
@given(day=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2024, 12, 31)))
def test_dates_in_common_formats(day: dt.date) -> None:
    index = IdentifierIndex.build([day.isoformat()])
    for form in ("%d/%m/%Y", "%Y%m%d", "%d %b %Y", "%B %d, %Y", "%Y-%m-%d 00:00:00"):
        assert index.first("on " + day.strftime(form)) is not None, form
    other = day + dt.timedelta(days=1)
    assert index.first(other.isoformat()) is None


@settings(max_examples=40, deadline=None)
@given(numbers=st.lists(st.integers(0, 99_999), min_size=5, max_size=60))
def test_tables_of_small_numbers_do_not_match_phones_or_records(numbers: list[int]) -> None:
    index = IdentifierIndex.build(["020 7946 0123", "MRN00012345", "07700 900456"])
    text = "\n".join(f"{i:>4}  {n:>6}  {n / 7:.3f}" for i, n in enumerate(numbers))
    assert index.find(text) == []
