"""scan_text on the encodings of policy/_encodings.py: found for an MRN, a name and CSV rows;
honest look-alikes (digests, UUIDs, weights, numbers, capitals, paths) give nothing."""

from __future__ import annotations

import base64
import binascii
import bz2
import codecs
import gzip
import hashlib
import io
import lzma
import pickle
import quopri
import random
import re
import uuid
import zipfile
import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.policy import IdentifierIndex, scan_text
from bedside.policy import _encodings as enc
from bedside.policy.scan import _DECODERS, findings_block


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rows.csv", data)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# (label, encode: str -> str, the kind its findings have). Each encodes the value's UTF-8.
ENCODINGS: list[tuple[str, Callable[[str], str], str]] = [
    ("base32", lambda v: base64.b32encode(v.encode()).decode(), "encoded:base32+identifier"),
    ("base85", lambda v: base64.b85encode(v.encode()).decode(), "encoded:base85+identifier"),
    ("ascii85", lambda v: base64.a85encode(v.encode()).decode(), "encoded:ascii85+identifier"),
    (
        "ascii85 adobe",
        lambda v: base64.a85encode(v.encode(), adobe=True).decode(),
        "encoded:ascii85+identifier",
    ),
    ("uu", lambda v: binascii.b2a_uu(v.encode()[:45]).decode(), "encoded:uu+identifier"),
    ("zlib b64", lambda v: b64(zlib.compress(v.encode())), "encoded:base64+zlib+identifier"),
    ("zlib hex", lambda v: zlib.compress(v.encode()).hex(), "encoded:hex+zlib+identifier"),
    ("gzip b64", lambda v: b64(gzip.compress(v.encode())), "encoded:base64+gzip+identifier"),
    ("bz2 b64", lambda v: b64(bz2.compress(v.encode())), "encoded:base64+bz2+identifier"),
    ("xz b64", lambda v: b64(lzma.compress(v.encode())), "encoded:base64+lzma+identifier"),
    (
        "lzma alone hex",
        lambda v: lzma.compress(v.encode(), format=lzma.FORMAT_ALONE).hex(),
        "encoded:hex+lzma+identifier",
    ),
    ("zip b64", lambda v: b64(_zip(v.encode())), "encoded:base64+zip+identifier"),
    ("utf16 hex", lambda v: v.encode("utf-16-be").hex(), "encoded:hex+utf16+identifier"),
    ("utf16 b64", lambda v: b64(v.encode("utf-16")), "encoded:base64+utf16+identifier"),
    ("utf32 hex", lambda v: v.encode("utf-32-le").hex(), "encoded:hex+utf32+identifier"),
    (
        "pickle b64",
        lambda v: b64(pickle.dumps(pd.DataFrame({"v": v.splitlines()}))),
        "encoded:base64+strings+identifier",
    ),
    ("\\u", lambda v: "".join(f"\\u{ord(c):04x}" for c in v), "encoded:escapes+identifier"),
    ("\\x", lambda v: "".join(f"\\x{b:02x}" for b in v.encode()), "encoded:escapes+identifier"),
    ("octal", lambda v: "".join(f"\\{b:03o}" for b in v.encode()), "encoded:escapes+identifier"),
    (
        "unicode_escape",
        lambda v: v.encode("unicode_escape").decode().replace("\\n", "\n"),
        "identifier",
    ),
    (
        "quoted-printable",
        lambda v: quopri.encodestring(v.encode()).decode(),
        "identifier",  # ASCII values pass through it unchanged
    ),
    ("bits", lambda v: " ".join(f"{b:08b}" for b in v.encode()), "encoded:bits+identifier"),
    ("bits ord", lambda v: " ".join(f"{ord(c):b}" for c in v), "encoded:bits+identifier"),
    ("rot13", lambda v: codecs.encode(v, "rot13"), "encoded:rot13+identifier"),
]


@pytest.fixture(scope="module")
def values(patients: pd.DataFrame) -> dict[str, str]:
    return {
        "mrn": str(patients.mrn.iloc[7]),
        "name": str(patients.name.iloc[7]),
        "rows": patients.head(5)[["mrn", "name"]].to_csv(index=False),
    }


@pytest.mark.parametrize("which", ["mrn", "name", "rows"])
@pytest.mark.parametrize(("label", "encode", "kind"), ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_encoded_values_are_found(
    patient_index: IdentifierIndex,
    values: dict[str, str],
    which: str,
    label: str,
    encode: Callable[[str], str],
    kind: str,
) -> None:
    encoded = encode(values[which])
    text = f"out: {encoded} :end"
    found = scan_text(text, patient_index)
    assert kind in {f.kind for f in found}, (label, which, text[:200], found)
    assert findings_block(found)
    assert values[which].splitlines()[-1] not in repr(found)


def test_non_ascii_names_in_escapes_and_quoted_printable(patient_index: IdentifierIndex) -> None:
    frame = pd.DataFrame({"name": ["José García Núñez"], "mrn": ["MRN09990001"]})
    index = IdentifierIndex.from_frames([(frame, ["name", "mrn"])])
    name = frame.name.iloc[0]
    cases = {
        "encoded:escapes+identifier": [
            repr(name.encode()),  # b'Jos\xc3\xa9 Garc\xc3\xada ...'
            name.encode("unicode_escape").decode(),  # Jos\xe9 Garc\xeda ...
            "".join(f"\\u{ord(c):04x}" for c in name),
        ],
        "encoded:quoted-printable+identifier": [quopri.encodestring(name.encode()).decode()],
    }
    for kind, texts in cases.items():
        for text in texts:
            assert kind in {f.kind for f in scan_text(f"x = {text}\n", index)}, text


def test_a_soft_line_break_inside_a_value_is_joined(values: dict[str, str]) -> None:
    frame = pd.DataFrame({"name": ["Bartholomew Fitzgerald-Worthington"]})
    index = IdentifierIndex.from_frames([(frame, ["name"])])
    text = "x" * 60 + " Bartholomew Fitzgerald-Wor=\nthington and more\n"
    kinds = {f.kind for f in scan_text(text, index)}
    assert "encoded:quoted-printable+identifier" in kinds


def test_a_compression_bomb_stops_at_the_bound_and_blocks(
    patient_index: IdentifierIndex, values: dict[str, str]
) -> None:
    # A value hidden behind a megabyte of compressible filler: past the bound, unread.
    payload = zlib.compress(b"\0" * 1_000_000 + values["mrn"].encode())
    text = f"blob {b64(payload)} end"
    assert len(text) * enc.INFLATE_FACTOR < 1_000_000
    found = scan_text(text, patient_index)
    assert ("encoded:base64+zlib+over-limit", enc.OVER_LIMIT_WHAT) in {
        (f.kind, f.column) for f in found
    }
    assert findings_block(found)
    # Under the bound, the same filler is read through.
    small = zlib.compress(b"\0" * 1000 + values["mrn"].encode())
    assert "encoded:base64+zlib+strings+identifier" in {
        f.kind for f in scan_text(b64(small), patient_index)
    }


def test_hex_of_a_digest_length_is_read_as_text_only() -> None:
    # The documented limit: 64 hex digits are a SHA-256 to the scan, not binary to mine for
    # printable runs; one byte more and the runs are read.
    name = "Bartholomew Fitzgerald"
    index = IdentifierIndex.from_frames([(pd.DataFrame({"name": [name]}), ["name"])])
    data = b"\x00\x01\x02" + name.encode() + b"\x00" * (32 - 3 - len(name))
    assert len(data) == 32
    assert scan_text(data.hex(), index) == []
    found = scan_text((data + b"\x00").hex(), index)
    assert {f.kind for f in found} == {"encoded:hex+strings+identifier"}


def test_np_save_of_an_object_array(patient_index: IdentifierIndex, values: dict[str, str]) -> None:
    for column in ("mrn", "name"):
        buf = io.BytesIO()
        np.save(buf, np.array([values[column], 3.5, None], dtype=object), allow_pickle=True)
        found = scan_text(b64(buf.getvalue()), patient_index)
        assert ("encoded:base64+strings+identifier", column) in {(f.kind, f.column) for f in found}


# ---------------------------------------------------------------- honest look-alikes


def _honest_texts() -> list[str]:
    rng = random.Random(5)
    nprng = np.random.default_rng(5)
    weights = nprng.normal(size=4096).astype(np.float32).tobytes()
    digests = "\n".join(
        f"{hashlib.sha256(str(i).encode()).hexdigest()}  file_{i}.parquet" for i in range(300)
    )
    shas = "\n".join(
        f"{hashlib.sha1(str(i).encode()).hexdigest()} commit message {i}" for i in range(200)
    )
    uuids = "\n".join(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(300))
    bits_table = "\n".join(" ".join(rng.choice("01") for _ in range(20)) for _ in range(200))
    flags = "\n".join(f"row {i}: {rng.getrandbits(8):08b}" for i in range(50))
    numbers = "\n".join(",".join(f"{x:.6E}" for x in nprng.normal(size=8)) for _ in range(300))
    capitals = (
        "RESULTS_SUMMARY_TABLE: MAX_SEQUENCE_LENGTH=512 HYPERPARAMETERS INTERNATIONALISATION "
        "Significant, Cardiovascular. Hospitalisation/Readmission ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    )
    return [
        "weights: " + b64(weights),
        "weights hex: " + weights[:2048].hex(),
        "gz: " + b64(gzip.compress(b"mean age 54.2, sd 11.3\n" * 200)),
        digests,
        shas,
        uuids,
        bits_table,
        flags,
        numbers,
        capitals,
        r"C:\Users\analyst\data\2024\cohort_123\results.csv and \x00 \u00e9 \101\102",
        "n=100 x=FF epoch=12 lr=3E-4 loss=0.123\nA=9F B=AE\n",
        "https://example.org/Path/To/Resource?Query=Value&Other=123_ABC#Fragment",
        "model.fit(X_train, y_train) -> LogisticRegression(C=1.0, MaxIter=100)",
        str(list(range(0, 2000, 7))),
    ]


# Every part of a finding's kind that this module's decoders add.
_NEW_KINDS = re.compile(
    r"base32|base85|ascii85|uu\+|escapes|quoted-printable|bits|rot13|zlib|gzip|bz2|lzma|zip"
    r"|utf16|utf32|strings|over-limit"
)


def test_honest_look_alikes_are_not_findings(patient_index: IdentifierIndex) -> None:
    # (Hex digests hold postcode-like runs such as "b17ef" as they are: that older limit of the
    # plain index is not this module's, so only findings through the new decoders count.)
    for text in _honest_texts():
        found = [f for f in scan_text(text, patient_index) if _NEW_KINDS.search(f.kind)]
        assert found == [], (text[:200], found)


# ---------------------------------------------------------------- totality


_DECODE = dict(_DECODERS)
_NEW = ["dense", "escapes", "quoted-printable", "bits", "base64", "hex"]


@settings(max_examples=200, deadline=None)
@given(chunk=st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=80))
def test_decoders_never_raise_on_garbage(chunk: str) -> None:
    for name in _NEW:
        _DECODE[name](chunk)
    enc.decode_uu(chunk)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_bytes_readings_never_raise(data: bytes) -> None:
    for head in (
        b"",
        b"\x78\x9c",
        b"\x1f\x8b",
        b"BZh9",
        b"\xfd7zXZ\x00",
        b"\x5d\x00\x00",
        b"PK\x03\x04",
    ):
        enc.bytes_readings(head + data, len(data))


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("aZE09.2+/=!~[`, \n\u00e9\u4e00"), max_size=120),
    shift=st.integers(0, 7),
)
def test_dense_runs_agree_with_the_reference(text: str, shift: int) -> None:
    text = "q" * shift + text
    assert enc.dense_spans(text) == enc.dense_spans(text, native=False)


def test_an_lzma_stream_asking_for_a_huge_dictionary_blocks(
    patient_index: IdentifierIndex, values: dict[str, str]
) -> None:
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 30}]
    payload = lzma.compress(values["mrn"].encode(), filters=filters)
    found = scan_text(b64(payload), patient_index)
    assert "encoded:base64+lzma+over-limit" in {f.kind for f in found}
    assert findings_block(found)


@pytest.mark.parametrize("wide", ["", "\u00e9", "\u2588", "\U0001f600"])
def test_dense_runs_of_every_string_kind_agree_with_the_reference(wide: str) -> None:
    # Encoded runs among noise, in one-, two- and four-byte strs (each has its own loop).
    rng = random.Random(3)
    noise = "aZE09.2+/=!~[`, \nxyQ<>" + wide
    pieces = ["", "GJQTEMZUGQ2DMNZY", "7rN?TC`lPgDKKd", '<~87cURD]i,"Ebo80~>', "A" * 13]
    for _ in range(300):
        text = "".join(
            rng.choice(pieces) + "".join(rng.choice(noise) for _ in range(rng.randint(0, 20)))
            for _ in range(rng.randint(1, 12))
        )
        assert enc.dense_spans(text) == enc.dense_spans(text, native=False), text
