"""PHI patterns: personal data of a shape is found; ordinary analysis output is left alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import scan_phi
from bedside.policy.model import PHI_PATTERN_DEFAULTS
from bedside.policy.phi import nhs_checksum_ok
from tests.policy._native import reference

PHI_KINDS = tuple(PHI_PATTERN_DEFAULTS)


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


def test_ordinary_outputs_are_not_phi(ordinary_outputs: list[str]) -> None:
    for text in ordinary_outputs:
        assert scan_phi(text) == [], (text[:300], scan_phi(text))


def test_matches_have_offsets_not_values() -> None:
    text = "x jane@example.org y"
    (m,) = scan_phi(text)
    assert text[m.start : m.end] == "jane@example.org"
    assert "jane" not in repr(m)


def test_long_texts_find_the_same_as_a_full_scan(
    ordinary_outputs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long ASCII texts only scan digit-run windows for numbers; nothing may be lost by it."""
    import random

    from bedside.policy import phi

    rnd = random.Random(5)
    samples = [
        "07700 900123",
        "(0161) 496 0123",
        "+44 (0)20 7946 0123",
        "555-123-4567",
        "(555) 123-4567",
        "+33 1 23 45 67 89",
        "123-45-6789",
        "943-476-5919",
        "NHS 943 476 5919",
        "a@b.org",
    ]
    filler = [t for t in ordinary_outputs if t.isascii()]
    parts = []
    for _ in range(60):
        parts.append(rnd.choice(filler)[:400])
        parts.append(rnd.choice(["", " ", "\n", "tel: ", "x=", "  |  "]) + rnd.choice(samples))
    text = " ".join(parts)
    assert len(text) > 4096 and text.isascii()
    windowed = phi.scan_phi(text)
    monkeypatch.setattr(phi, "_number_windows", lambda _text: None)
    assert phi.scan_phi(text) == windowed
    assert len(windowed) >= 50


_BLOCKS = [
    "call 020 7946 0123 or 07700 900123; (555) 123-4567, 555.123.4567, +33 1 23 45 67 89\n",
    "SSN 123-45-6789; ssn: 123456789; NHS number 943 476 5919; 943-476-5919; 9434765919\n",
    "MRN: 1234567, patient id 99123; DOB: 12/03/1956, born 12 March 1956; x.y@example.org\n",
    "SW1A 1AA, M1 1AE, 192.168.0.1, 10.0.0.255.\n",
    "count  20000.000000  20000.000000\nmean 59.347150 7729.079691 0.002450 20240301-120000\n",
    "epoch 1: loss 0.6812 [0.12345678, 0.23456789] 1.23-2.75 2019-2024 12,345,678.25\n",
    "100%|██████████| 1000/1000 [00:00<00:00, 48213.77it/s] Zoë 0207 946 0123\n",
    "nhs no. 943 476 5919 / 943 476 5919 (12 345 678 901 234 567 890 943 476 5919)\n",
    "x" * 30 + " NHS " + "1 " * 20 + "943 476 5919\n",
    # the same window text after a label and after none (checks read before the window)
    "nhs no: 943 476 5919 " + "y" * 70 + "\n",
    "abc no: 943 476 5919 " + "y" * 70 + "\n",
]


@pytest.mark.parametrize("seed", range(10))
def test_windows_find_what_the_whole_text_holds(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Long outputs are scanned window by window, each distinct window once: the same findings
    # as every pattern run over the whole text, on texts that repeat blocks (and vary them).
    import random

    from bedside.policy import phi

    rng = random.Random(seed)
    blocks = [rng.choice(_BLOCKS) + rng.choice(["", " ", "x", "-", "\n", "0"]) for _ in range(200)]
    text = "".join(blocks)
    assert len(text) >= phi._WINDOWED
    every = set(phi.PHI_PATTERN_DEFAULTS)
    windowed = phi.scan_phi(text, every)

    def whole_text(pattern, text, windows, bounded, before, ok, memo=None):  # type: ignore[no-untyped-def]
        for m in pattern.finditer(text):
            if (not before or phi._starts_clear(text, m.start(), before)) and ok(text, m):
                yield m.start(), m.end()

    monkeypatch.setattr(phi, "_accepted", whole_text)
    whole = phi.scan_phi(text, every)
    assert windowed == whole
    assert {m.kind for m in whole} >= {"phone", "ssn", "nhs_number", "mrn", "dob", "email"}


def test_only_ascii_letters_lower_case_to_the_letters_of_a_label() -> None:
    # `phi` finds the label words (MRN, DOB, SSN) of an ASCII text in one pass folding ASCII
    # case only, for `w in text.lower()`; that is the same test because no other character
    # lower-cases to a letter of a label, except U+0130, whose "i" a combining dot follows.
    from bedside.policy import phi

    letters = set("".join(phi._LABEL_WORDS))
    odd = [
        ch
        for ch in map(chr, range(0x110000))
        if not ch.isascii() and not 0xD800 <= ord(ch) < 0xE000 and letters & set(ch.lower())
    ]
    assert odd == ["\u0130"]
    assert "\u0130".lower() == "i\u0307"
    assert not any(w.endswith("i") for w in phi._LABEL_WORDS)


@pytest.mark.parametrize(
    "text",
    ["", "MRN", "mrn", "xMrNx", "d.o.b", "D.O.B.", "dob", "d.o", "Medical record", "HOSPITAL",
     "patien", "PATIENT", "birthday", "BoRn", "ssn", "SSN:", "ssN", "s s n", "\u212arn",
     "mr\u0130n", "m\u0307rn", "mrn" * 3, "xx " * 1000 + "born"],
)  # fmt: skip
def test_label_words_agree_with_lower(text: str) -> None:
    from bedside.policy import _tokens, phi

    if _tokens._scanner is None:
        pytest.skip("compiled core not built")
    bits = _tokens._scanner.label_words(text, phi._LABEL_WORDS)
    lower = text.lower()
    assert [bool(bits >> k & 1) for k in range(len(phi._LABEL_WORDS))] == [
        w in lower for w in phi._LABEL_WORDS
    ]


def test_only_u0130_changes_length_when_lower_cased() -> None:
    # `phi` takes the label windows of a long text from the core, on the text itself, when it
    # holds no U+0130: then `text.lower()` has its length and every character stays in place.
    longer = [ch for ch in map(chr, range(0x110000)) if len(ch.lower()) != 1]
    assert longer == ["\u0130"]
    to_ascii = [ch for ch in map(chr, range(0x80, 0x110000)) if ch.lower().isascii() and ch.lower()]
    assert to_ascii == ["\u212a"]  # the Kelvin sign, which the core reads as "k"


_label_texts = st.lists(
    st.sampled_from(
        ["MRN", "mrn", "Mrn:", "medical", "HOSPITAL", "patient", "dob", "D.O.B", "birth", "Born",
         "ssn", "SSN", "@", "x@y.org", " ", "\n", "12345678", "é", "█", "😀", "\u212a", "k",
         "ſ", "Σ", "m", "r", "n", "d.o", "abc"]
    ),
    max_size=60,
).map("".join)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(text=_label_texts, before=st.integers(0, 12), after=st.integers(0, 40))
def test_label_windows_agree_with_word_windows_of_lower(text: str, before: int, after: int) -> None:
    from bedside.policy import _tokens, phi

    if _tokens._scanner is None:
        pytest.skip("compiled core not built")
    for words, _, _ in phi._LABELS.values():
        for w in (words, (*words, "k"), ("rn",)):
            got = np.frombuffer(_tokens._scanner.label_windows(text, w, before, after), np.int64)
            want = phi._word_windows(text.lower(), w, before, after)
            assert got.reshape(-1, 2).tolist() == [list(p) for p in want], (text, w)


@settings(max_examples=60, deadline=None)
@given(text=_label_texts, pad=st.sampled_from(["", "\u0130", "é", "😀"]))
def test_long_text_phi_agrees_with_the_reference(text: str, pad: str) -> None:
    # Long texts take their label windows from the core (or lower-case only when they must):
    # the findings are those of the reference path, which lower-cases the whole text.
    from bedside.policy import _tokens

    if _tokens._scanner is None:
        pytest.skip("compiled core not built")
    long = (text + " mrn 1234567 born on 12/03/1956 ssn 123456789 " + pad + "\n") * 40
    fast = scan_phi(long, list(PHI_KINDS))
    with reference():
        slow = scan_phi(long, list(PHI_KINDS))
    assert fast == slow
