"""The compiled core (policy/_scanner.c) agrees with the numpy reference path, exactly.

`IdentifierIndex.find` and `scan_text` use the compiled core when it is built (`pip install -e .`
builds it); `IdentifierIndex._find_reference` and `_tokens.text_spans` returning None are the
numpy/regex reference paths it replaced. Every test here compares the two on the same input:
random and hypothesis-generated texts (non-ASCII, separators, reformatted values, encodings),
dumps of patient rows, ordinary outputs, and boundary cases.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bedside.policy import IdentifierIndex, _tokens, scan_text
from bedside.policy import phi as phi_mod
from bedside.policy import scan as scan_mod
from tests.policy._native import reference

_scanner = pytest.importorskip("bedside.policy._scanner")

VALUES = {
    "name": [
        "John Smith",
        "Dr Mary Ann Jones Jr",
        "Zoë Ångström",
        "Siobhán O'Brien",
        "İlkay ßtraße",
    ],
    "phone": ["020 7946 0123", "+44 161 496 0123", "07700 900456", "(555) 123-4567"],
    "dob": ["1956-03-12", "1960-01-02"],
    "mrn": ["MRN00012345", "mrn-000987654"],
    "postcode": ["SW1A 1AA", "M1 1AE"],
}

PIECES = [
    # values and the reformattings of the identifiers module docstring
    "John Smith",
    "JOHN   SMITH",
    "Smith, John",
    "smith,john",
    "Mary Jones",
    "Jones, Mary",
    "Dr Mary Ann Jones",
    "MARY ANN JONES JR",
    "Zoë Ångström",
    "ZOË ÅNGSTRÖM",
    "Siobhán O Brien",
    "020 7946 0123",
    "020-7946-0123",
    "(020) 7946 0123",
    "02079460123",
    "0207 946 0123",
    "+44 20 7946 0123",
    "+442079460123",
    "+44 (0)20 7946 0123",
    "0161 496 0123",
    "07700 900456",
    "077 009 004 56",
    "555-123-4567",
    "(555) 123-4567",
    "0207-946-0123",
    "0770-090-0456",
    "(0207) 946 0123",
    "020 79-46 0123",
    "0207 9460-123",
    "1956-03-12",
    "12/03/1956",
    "3/12/1956",
    "12.3.1956",
    "12 Mar 1956",
    "12 March 1956",
    "March 12, 1956",
    "19560312",
    "12031956",
    "1956-03-12T00:00:00",
    "1960-01-02 00:00:00",
    "MRN00012345",
    "mrn-12345",
    "MRN 00012345",
    "Mrn12345",
    "MRN-987654",
    "000987654",
    "SW1A 1AA",
    "sw1a1aa",
    "M1 1AE",
    "ſw1a 1aa",
    "\u212a1 1ae",
    # PHI shapes
    "x.y@example.org",
    "ssn: 123456789",
    "SSN 123-45-6789",
    "NHS 943 476 5919",
    "943-476-5919",
    "DOB: 12/03/1956",
    "born 12 March 1956",
    "MRN: 1234567",
    "patient id 99123",
    "192.168.0.1",
    "1.26.4.1",
    "10.0.0.255.",
    "[74, 111, 104, 110, 32, 83]",
    ".65,66,67,68,69,70,71",
    "65 , 66 ,67,68, 69,70",
    "١٢٣٤٥٦٧٨٩٠",
    "٤5",
    "5٤,",
    "1\u00a02",
    # ordinary output
    "0.123456",
    "20000.000000",
    " 12 ",
    "ward 7946: 0123 patients",
    "100%|██████████|",
    "p = 0.0031",
    "[0 1 0 1]",
    "2023-01-02",
    "v1.2.3",
    "3fa9c0e1d2b3a4f5e6d7c8b9a0f1e2d3",
    "de ad be ef 01 23 45 67",
    "%4A%6F%68%6E",
    "Hello+World%21",
    "1234567890123",
    # separators and scripts
    " ",
    "  ",
    ", ",
    "-",
    ".",
    "(",
    ")",
    "/",
    ":",
    "|",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "«",
    "»",
    "—",
    "█",
    "😀",
    "İ",
    "ß",
    "é",
    "\x1c",
    "\u2028",
    "\u00a0",
    "0",
    "00",
    "a",
    "Z",
    "_",
    "=",
    "+",
    "a" * 64,
    "b" * 65,
    "7" * 64,
    "0" * 70 + "1",
    "9" * 80,
]

_piece = st.sampled_from(PIECES)
_texts = st.lists(_piece | st.text(max_size=6), max_size=40).map("".join)
_long_texts = st.lists(_piece | st.text(max_size=6), min_size=250, max_size=400).map("".join)


def _frame(values: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(v) for k, v in values.items()})


INDEXES = {
    "values": IdentifierIndex.from_frames([(_frame(VALUES), list(VALUES))]),
    "loose": IdentifierIndex.build(
        [
            "a b c d e f g h i j",
            "x" * 70,
            "000123456789",
            "1 2 3",
            "Ab 12 Cd",
            "Zoë",
            "12 34",
            "4 5 6 7 8 9 1 2",
        ],
        min_length=2,
        min_digits=3,
    ),
    "single": IdentifierIndex.build(["987654"]),
    "empty": IdentifierIndex.build([]),
}


def assert_find_agrees(index: IdentifierIndex, text: str) -> None:
    assert index.find(text) == index._find_reference(text), text
    assert index.first(text) == (index._find_reference(text, limit=1) or [None])[0]


def assert_spans_agree(text: str) -> None:
    spans = _tokens.text_spans(text)
    assert spans is not None
    for name, _ in scan_mod._DECODERS:
        got = list(scan_mod._spans(text, name, spans))
        want = list(scan_mod._spans_reference(text, name, _tokens.code_units(text)))
        assert got == want, (name, text)
    assert spans.numbers == phi_mod._number_windows(text), text
    assert spans.has_digit == (phi_mod._ANY_DIGIT.search(text) is not None)
    every = set(phi_mod.PHI_PATTERN_DEFAULTS)
    assert phi_mod._scan_phi(text, every, spans) == phi_mod._scan_phi(text, every, None), text


def test_the_alphanumeric_table_is_pythons() -> None:
    assert _scanner.alnum_table() == _tokens._alnum_table().tobytes()


@settings(max_examples=150, deadline=None)
@given(text=_texts)
def test_tokens_and_hashes_agree(text: str) -> None:
    raw = _tokens.lower_bytes(text)
    ref = _tokens.tokenize(np.frombuffer(raw, dtype=np.uint8))
    got = np.frombuffer(_scanner.tokens(raw), dtype=np.int64).reshape(-1, 5)
    assert got[:, 0].tolist() == ref.start.tolist()
    assert got[:, 1].tolist() == ref.end.tolist()
    assert got[:, 2].view(np.uint64).tolist() == ref.hash.tolist()
    assert got[:, 3].tolist() == ref.significant.tolist()
    assert got[:, 4].astype(bool).tolist() == ref.is_digit.tolist()


@settings(max_examples=200, deadline=None)
@given(text=_texts | st.text(max_size=80))
def test_find_agrees_on_random_texts(text: str) -> None:
    for index in INDEXES.values():
        assert_find_agrees(index, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, upper=st.booleans(), sep=st.sampled_from([" ", "  ", "-", ", ", "\n", "/"]))
def test_find_agrees_on_patient_values(
    patient_index: IdentifierIndex, patients: pd.DataFrame, text: str, upper: bool, sep: str
) -> None:
    rows = patients.head(20)
    values = [str(v) for c in ["mrn", "name", "dob", "postcode", "phone"] for v in rows[c]]
    mixed = sep.join([text, *values[::3], text[::-1], *values[1::3]])
    assert_find_agrees(patient_index, mixed.upper() if upper else mixed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "é",
        "😀",
        "0",
        "00000000000",
        "0000000001234567",
        "MRN",
        "MRN00012345",
        "x MRN00012345",
        "MRN00012345 x",
        "John Smith",
        "John\nSmith",
        "John\r\nSmith",
        "John\rSmith",
        "John  -  Smith",
        "John , Smith",
        "a b c d e f g h i j",
        "a b c d e f g h",
        "4 5 6 7 8 9 1 2 3",
        "x" * 70,
        "x" * 64,
        "12 34 56 78 90 12 34 56 78 90",
        "020 7946 0123 020 7946 0123",
        "0207-946-0123",
        "(0207)946 0123",
        "0207) (946 0123",
        "020 7946 01",
        "99 " * 40,
        "00 " * 40 + "987654",
        "9" * 100 + " " + "9" * 100,
        "(020) 7946 0123\n(020)7946 0123 (020)  7946 0123",
        "020 7946 0123-",
        "-020 7946 0123",
        "İlkay ßtraße İİİ",
        "\ud800John Smith\udfff",
        "John Smith😀Zoë Ångström",
    ],
)
def test_find_agrees_on_boundary_cases(text: str) -> None:
    for index in INDEXES.values():
        assert_find_agrees(index, text)


def test_find_agrees_on_dumps_and_ordinary_outputs(
    patient_index: IdentifierIndex, patients: pd.DataFrame, ordinary_outputs: list[str]
) -> None:
    rows = patients.head(60)
    texts = [
        rows.to_csv(),
        rows.to_json(orient="records"),
        rows.to_string(),
        rows.to_html(),
        str(rows.to_dict("records")),
        rows.to_csv().upper().replace(",", " | "),
        json.dumps(rows.astype(str).to_dict("list"), ensure_ascii=False),
        *ordinary_outputs,
    ]
    texts.append("\n".join(texts))
    for text in texts:
        assert_find_agrees(patient_index, text)
        for cut in (1, 7, len(text) // 3):
            assert_find_agrees(patient_index, text[cut:-cut])


@settings(max_examples=120, deadline=None)
@given(text=_texts | st.text(max_size=60))
def test_candidate_spans_agree(text: str) -> None:
    assert_spans_agree(text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_long_texts)
def test_candidate_spans_agree_on_long_texts(text: str) -> None:
    assert len(text) >= 2048 or _tokens.text_spans(text).numbers is None  # type: ignore[union-attr]
    assert_spans_agree(text)


def test_candidate_spans_agree_on_outputs(
    patients: pd.DataFrame, ordinary_outputs: list[str]
) -> None:
    rows = patients.head(200)
    texts = [*ordinary_outputs, rows.to_csv(), rows.to_json(), rows.to_string()]
    texts.append("\n".join(texts))
    for text in texts:
        assert_spans_agree(text)


def _encoded(value: str) -> list[str]:
    data = value.encode()
    return [
        base64.b64encode(data).decode(),
        data.hex(),
        " ".join(f"{b:02x}" for b in data),
        str(int.from_bytes(data, "big")),
        urllib.parse.quote(value),
        str([ord(c) for c in value]),
        value[::-1],
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, which=st.integers(0, 19), pad=st.integers(0, 3000))
def test_scan_text_agrees(
    patient_index: IdentifierIndex, patients: pd.DataFrame, text: str, which: int, pad: int
) -> None:
    value = str(patients.name.iloc[which])
    full = " ".join([text, *_encoded(value), "0.123456 " * (pad // 9), text])
    for index in (patient_index, INDEXES["values"], None):
        got = scan_text(full, index)
        with reference(*(i for i in (index,) if i is not None)):
            want = scan_text(full, index)
        assert got == want, full[:300]


# Runs of letters (hex and not, both cases) and of digits, which `text_spans` takes in tight
# loops, next to every character that ends or joins a run.
_RUN_PIECES = st.sampled_from(
    ["abcdef", "ABCDEF", "aF", "ghxyz", "GHXYZ", "x" * 30, "aB3" * 5, "0123456789", "7" * 12,
     " ", "  ", ".", ",", ":", "-", "(", ")", "+", "=", "\n", "é", "€", "_", "/",
     # words of a-f and other letters (the letter loop's runs), Latin-1 letters after letters
     "deadbeef cafe", "face bead", "cohort model", "abcdefabcdefxyz", "ÿ", "\xa0", "Ü",
     # postcodes and near misses (windows need a digit and two inward-code letters after)
     "SW1A 1AA", "M1 1AE", "b338th", "CR2 6XH", "DN55 1PT", "W1 1CM", "\u212a1 2AB",
     "\u017f1 2ab", "A1\u0663ab", "1ab", "2CD", "9zz", "e5"]
)  # fmt: skip
_run_texts = st.lists(_RUN_PIECES | st.text("aAfFgGzZ09 .,:-(", max_size=20), max_size=60).map(
    "".join
)


@settings(max_examples=150, deadline=None)
@given(text=_run_texts, pad=st.sampled_from([0, 2048]))
def test_candidate_spans_agree_on_letter_and_digit_runs(text: str, pad: int) -> None:
    # `pad` makes the text long enough for the number windows
    assert_spans_agree("x" * pad + text if pad else text)


_ascii_texts = st.lists(
    st.sampled_from([p for p in PIECES if p.isascii()]) | st.text("aZ09 -/.,:@+\n", max_size=8),
    max_size=40,
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_ascii_texts, which=st.integers(0, 19))
def test_scan_text_of_ascii_output_agrees_with_the_general_path(
    patient_index: IdentifierIndex,
    patients: pd.DataFrame,
    text: str,
    which: int,
) -> None:
    # ASCII outputs are searched forwards and on their reversed bytes apart from the decoded
    # texts; the general path joins the output, its reversal and the decoded texts.
    value = str(patients.name.iloc[which])
    full = " ".join([text, *(e for e in _encoded(value) if e.isascii()), text])
    for index in (patient_index, INDEXES["values"], INDEXES["loose"]):
        fast = scan_text(full, index)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(scan_mod, "_ASCII_FAST", False)
            general = scan_text(full, index)
        assert fast == general, full[:300]


def _long_output(patients: pd.DataFrame, which: int, size: int) -> str:
    """An ASCII output of `size` characters: prose with one patient's values in it, written
    forwards, reversed and encoded, at the start, in the middle and at the end."""
    row = patients.iloc[which]
    values = [str(row["name"]), str(row["mrn"]), str(row["postcode"])]
    leaks = [v for value in values for v in (value, value[::-1], *_encoded(value))]
    leaks = [v for v in leaks if v.isascii()]
    words = "cohort analysis survival model baseline outcome ward median interval "
    filler = (words * (size // len(words) + 1))[:size]
    third = size // 3
    text = " ".join([*leaks, filler[:third], *leaks, filler[third:], *leaks])
    return text[:size] if len(text) > size else text


@pytest.mark.parametrize("which", [0, 7])
def test_long_ascii_output_scanned_in_threads_finds_what_one_thread_finds(
    patient_index: IdentifierIndex, patients: pd.DataFrame, which: int
) -> None:
    # The two index passes of a long ASCII output run in threads beside the PHI patterns; the
    # findings, their order and strength must be those of the passes run one after the other,
    # and of the general path.
    text = _long_output(patients, which, scan_mod.PARALLEL_MIN_CHARS + 1000)
    assert len(text) >= scan_mod.PARALLEL_MIN_CHARS
    threaded = scan_text(text, patient_index)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(scan_mod, "PARALLEL_MIN_CHARS", 0)
        serial = scan_text(text, patient_index)
        m.setattr(scan_mod, "_ASCII_FAST", False)
        general = scan_text(text, patient_index)
    assert threaded == serial == general
    kinds = {f.kind for f in threaded}
    assert {"identifier", "encoded:reversed+identifier"} <= kinds


def test_long_output_scanned_when_no_thread_can_start(
    patient_index: IdentifierIndex, patients: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inside the sandbox a process limit may refuse a new thread: the passes then run in the
    # caller's thread, and nothing is missed.
    text = _long_output(patients, 3, scan_mod.PARALLEL_MIN_CHARS)
    expected = scan_text(text, patient_index)

    def refuse(self: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(scan_mod._Pass, "start", refuse)
    assert scan_text(text, patient_index) == expected


def test_an_error_in_a_scan_thread_reaches_the_caller(
    patient_index: IdentifierIndex, patients: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass that fails must fail the scan (the guards then block), never return no findings.
    text = _long_output(patients, 3, scan_mod.PARALLEL_MIN_CHARS)

    def broken(*args: object) -> tuple[bytes, bytes]:
        raise MemoryError("scan pass")

    monkeypatch.setattr(IdentifierIndex, "_both_part", broken)
    with pytest.raises(MemoryError, match="scan pass"):
        scan_text(text, patient_index)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_char_offsets_agree(text: str, cuts: list[int]) -> None:
    # Byte offsets at character starts, in any order, as character offsets: the core's one
    # pass over the bytes (`_scanner.char_offsets`) against the numpy mask and search.
    from bedside.policy.identifiers import _char_offsets

    raw = text.encode("utf-8", "surrogatepass")
    starts = [len(text[:i].encode("utf-8", "surrogatepass")) for i in range(len(text) + 1)]
    picked = [starts[c % len(starts)] for c in cuts]
    s = np.array(sorted(picked), dtype=np.int64)
    e = np.array(picked, dtype=np.int64)
    got = _char_offsets(text, raw, s, e)
    with reference():
        want = _char_offsets(text, raw, s, e)
    assert [a.tolist() for a in got] == [a.tolist() for a in want]
    with pytest.raises(ValueError, match="ascend"):
        _scanner.char_offsets(b"abc", np.array([2, 1], dtype=np.int64))


def test_concurrent_finds_on_one_index_agree(
    patient_index: IdentifierIndex, patients: pd.DataFrame
) -> None:
    # Each Matcher keeps two scratch buffers between calls, each taken by one call at a time;
    # a third call at once works in fresh ones. Six threads finding at once, on texts of every
    # size (buffers grown, reused and freed), find what one thread finds alone.
    import threading

    texts = [_long_output(patients, which, size) for which in range(6) for size in (300, 60_000)]
    texts.append("")
    alone = [patient_index.find(t) for t in texts]
    got: dict[int, list[object]] = {}
    start = threading.Barrier(6)

    def work(k: int) -> None:
        start.wait()
        got[k] = [patient_index.find(t) for t in texts[k:] + texts[:k]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(6):
        assert got[k] == alone[k:] + alone[:k]


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(max_codepoint=127), max_size=40))
def test_ascii_lower_casing_is_translates(text: str) -> None:
    # eight bytes at a time in the core: every byte value, at every offset and tail length
    want = text.encode("ascii").translate(_tokens._LOWER)
    assert _scanner.lower_ascii(text) == want
    assert _tokens.lower_bytes(text) == want


def test_ascii_lower_casing_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        _scanner.lower_ascii("Zoë")


@settings(max_examples=150, deadline=None)
@given(text=_ascii_texts)
def test_a_backwards_search_is_the_search_of_the_reversed_bytes(text: str) -> None:
    raw = _tokens.lower_bytes(text)
    for index in INDEXES.values():
        want = index._find_lowered(text[::-1], raw[::-1])
        assert index._find_lowered(lambda t=text: t[::-1], raw, backwards=True) == want, text
        if index._matcher is not None:
            assert index._matcher.find(raw, True) == index._matcher.find(raw[::-1]), text
        with reference(index):
            assert index._find_lowered(text[::-1], raw, backwards=True) == want, text
