"""PHI patterns: personal data of a shape is found; ordinary analysis output is left alone."""

from __future__ import annotations

import pandas as pd
import pytest

from bedside.policy import scan_phi
from bedside.policy.phi import nhs_checksum_ok

from .outputs import FIXED, generated


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("contact jane.doe+ward7@nhs.net today", "email"),
        ("call 07700 900123", "phone"),
        ("call 020 7946 0123", "phone"),
        ("tel: (0161) 496 0123", "phone"),
        ("+44 20 7946 0123", "phone"),
        ("+44 (0)20 7946 0123", "phone"),
        ("01632 960123", "phone"),
        ("(555) 123-4567", "phone"),
        ("555-123-4567", "phone"),
        ("+1 415 555 2671", "phone"),
        ("+33 1 23 45 67 89", "phone"),
        ("SSN 123-45-6789", "ssn"),
        ("ssn: 123456789", "ssn"),
        ("NHS number 943 476 5919", "nhs_number"),
        ("nhs no 9434765919", "nhs_number"),
        ("943-476-5919", "nhs_number"),
        ("MRN: 1234567", "mrn"),
        ("MRN00012345", "mrn"),
        ("medical record number 0012345", "mrn"),
        ("DOB: 12/03/1956", "dob"),
        ("date of birth 1956-03-12", "dob"),
        ("born 12 March 1956", "dob"),
    ],
)
def test_phi_is_found(text: str, kind: str) -> None:
    assert kind in {m.kind for m in scan_phi(text)}, scan_phi(text)


@pytest.mark.parametrize(
    "text",
    [
        "943 476 5918",  # bad check digit
        "943 476 5919",  # valid check digit but no label and space-separated
        "000-12-3456",  # SSN area 000
        "123-45-67890",
        "0.0123 0.4567 0.8910",
        "version 1.26.4.1",
        "2023-01-15 2023-02-15",
        "tel 0 1 2 3 4 5 6 7 8 9 1",
    ],
)
def test_lookalikes_are_not_phi(text: str) -> None:
    assert scan_phi(text) == []


def test_optional_patterns() -> None:
    assert scan_phi("SW1A 1AA") == []
    assert [m.kind for m in scan_phi("SW1A 1AA", ["postcode"])] == ["postcode"]
    assert [m.kind for m in scan_phi("from 10.0.0.12", ["ip_address"])] == ["ip_address"]


def test_nhs_checksum() -> None:
    assert nhs_checksum_ok("9434765919")
    assert not nhs_checksum_ok("9434765918")
    assert not nhs_checksum_ok("123")


def test_ordinary_outputs_are_not_phi(patients: pd.DataFrame) -> None:
    for text in generated(patients) + FIXED:
        assert scan_phi(text) == [], (text[:300], scan_phi(text))


def test_matches_have_offsets_not_values() -> None:
    text = "x jane@example.org y"
    (m,) = scan_phi(text)
    assert text[m.start : m.end] == "jane@example.org"
    assert "jane" not in repr(m)
