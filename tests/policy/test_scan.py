"""scan_text: identifiers and PHI, also inside encodings; nothing on ordinary outputs."""

from __future__ import annotations

import base64
import codecs
import json
import urllib.parse

import pandas as pd
import pytest

from bedside.policy import Finding, IdentifierIndex, scan_text
from bedside.policy.scan import findings_block


@pytest.fixture(scope="module")
def rows(patients: pd.DataFrame) -> pd.DataFrame:
    return patients.head(10)


def kinds(found: list[Finding]) -> set[str]:
    return {f.kind for f in found}


def test_plain_identifiers_and_phi(patient_index: IdentifierIndex, rows: pd.DataFrame) -> None:
    name = rows.name.iloc[0]
    found = scan_text(f"{name} wrote from x.y@example.org", patient_index)
    assert {"identifier", "phi:email"} <= kinds(found)
    ident = next(f for f in found if f.kind == "identifier")
    assert ident.column == "name"
    assert name not in repr(found)


@pytest.mark.parametrize(
    ("encode", "kind"),
    [
        (lambda s: base64.b64encode(s.encode()).decode(), "encoded:base64+identifier"),
        (
            lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
            "encoded:base64+identifier",
        ),
        (
            lambda s: base64.encodebytes((s + "\n").encode() * 4).decode(),
            "encoded:base64+identifier",
        ),
        (lambda s: s.encode().hex(), "encoded:hex+identifier"),
        (lambda s: s.encode().hex().upper(), "encoded:hex+identifier"),
        (lambda s: " ".join(f"{b:02x}" for b in s.encode()), "encoded:hex+identifier"),
        (lambda s: str(int.from_bytes(s.encode(), "big")), "encoded:int+identifier"),
        (lambda s: str(int.from_bytes(s.encode(), "little")), "encoded:int+"),
        (lambda s: urllib.parse.quote(s), "encoded:percent+identifier"),
        (lambda s: s[::-1], "encoded:reversed+identifier"),
        (lambda s: str([ord(c) for c in s]), "encoded:ords+identifier"),
        (
            lambda s: base64.b64encode(s.encode().hex().encode()).decode(),
            "encoded:base64+encoded:hex+identifier",
        ),
    ],
)
def test_encoded_names_are_found(
    patient_index: IdentifierIndex, rows: pd.DataFrame, encode, kind: str
) -> None:
    name = rows.name.iloc[1]
    if not name.isascii() and "ords" in kind:
        pytest.skip("ords covers ASCII")
    text = "value: " + encode(name) + " (end)"
    found = scan_text(text, patient_index)
    enc = next((f for f in found if f.kind.startswith(kind)), None)
    assert enc is not None, (kind, found)
    assert 0 <= enc.start < enc.end <= len(text)


def test_base64_of_a_csv_of_rows(patient_index: IdentifierIndex, rows: pd.DataFrame) -> None:
    blob = base64.b64encode(rows.to_csv().encode()).decode()
    found = scan_text(blob, patient_index)
    assert "encoded:base64+identifier" in kinds(found)


def test_rot13_is_found_through_the_index(
    patient_index: IdentifierIndex, rows: pd.DataFrame
) -> None:
    # The index holds the rot13 forms of values (tests/policy/test_encodings.py has the rest).
    text = codecs.encode(rows.name.iloc[2], "rot13")
    found = scan_text(text, patient_index)
    assert [(f.kind, f.column) for f in found] == [("encoded:rot13+identifier", "name")]


def test_phi_off_and_decode_off(patient_index: IdentifierIndex, rows: pd.DataFrame) -> None:
    text = base64.b64encode(rows.name.iloc[0].encode()).decode() + " a@b.org"
    assert kinds(scan_text(text, patient_index, phi=False, decode=False)) == set()
    assert kinds(scan_text(text, None, decode=False)) == {"phi:email"}
    assert "phi:email" not in kinds(scan_text(text, None, phi_kinds=["phone"]))


def test_ordinary_outputs_give_no_findings(
    ordinary_outputs: list[str], patient_index: IdentifierIndex
) -> None:
    texts = list(ordinary_outputs)
    texts.append(json.dumps({"text/plain": texts[4], "text/html": texts[7]}))
    for text in texts:
        found = [f for f in scan_text(text, patient_index) if f.column != "dob"]
        assert found == [], (text[:300], found)


def test_image_payloads_are_not_misread(patient_index: IdentifierIndex) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.hist([1, 2, 2, 3, 3, 3])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    assert scan_text(png, patient_index) == []


def test_a_date_of_birth_alone_is_weak(patient_index: IdentifierIndex, rows: pd.DataFrame) -> None:
    dob, name = rows.dob.iloc[0], rows.name.iloc[0]
    assert "dob" in patient_index.date_kinds
    alone = scan_text(f"admissions peaked on {dob}.", patient_index)
    assert [f.strength for f in alone if f.column == "dob"] == ["weak"]
    assert not findings_block(alone)
    # Beside another identifier (same line or a short window) it is part of a record.
    for text in (f"{name}, {dob}", f"{name}\n{dob}", f"{name} | ward A | {dob}"):
        found = scan_text(text, patient_index)
        assert {f.strength for f in found} == {"strong"}, text
        assert findings_block(found)
    # Beside PHI too.
    found = scan_text(f"x.y@example.org {dob}", patient_index)
    assert all(f.strength == "strong" for f in found) and findings_block(found)
    # Far away on another line it stays weak.
    found = scan_text(f"{name}\n" + "-" * 200 + f"\n{dob}", patient_index)
    assert findings_block(found)
    assert [f.strength for f in found if f.column == "dob"] == ["weak"]


def test_a_listing_of_dates_of_birth_is_strong(
    patient_index: IdentifierIndex, rows: pd.DataFrame
) -> None:
    dates = sorted(set(rows.dob))[:5]
    assert len(dates) == 5
    few = scan_text(" ".join(dates[:4]), patient_index)
    assert few and not findings_block(few)
    many = scan_text("\n".join(dates), patient_index)
    assert findings_block(many)
    assert {f.strength for f in many} == {"strong"}
    match = patient_index.first(dates[0])
    assert match is not None and match.strength == "weak"
    assert {m.strength for m in patient_index.find(" ".join(dates))} == {"strong"}


def test_other_identifiers_are_strong(patient_index: IdentifierIndex, rows: pd.DataFrame) -> None:
    for column in ["mrn", "name", "postcode", "phone"]:
        found = scan_text(f"value {rows[column].iloc[3]} here", patient_index)
        assert found and all(f.strength == "strong" for f in found), column
        assert findings_block(found)
    assert not findings_block([])
