"""Encodings an attacker tries first, from the attacker's side: the sentry in front of a plain
ipykernel (no in-kernel guard: what hostile code that switched it off amounts to) prints a
patient's identifiers as base32, base85, Ascii85, uuencode, compressed base64, escapes, bits,
UTF-16 hex, rot13 and a pickled DataFrame. The oracle is independent of `bedside.policy`: the
test encodes the same value itself with the standard library and checks that neither that text
nor the value reaches the client, and that the sentry said it blocked something."""

from __future__ import annotations

import base64
import binascii
import codecs
import pickle
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import make_patients, notices  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


# (name, the expression the hostile cell prints (of `v`), the same encoding done here)
CASES: list[tuple[str, str, Callable[[str], str]]] = [
    (
        "base32",
        "base64.b32encode(v.encode()).decode()",
        lambda v: base64.b32encode(v.encode()).decode(),
    ),
    (
        "base85",
        "base64.b85encode(v.encode()).decode()",
        lambda v: base64.b85encode(v.encode()).decode(),
    ),
    (
        "ascii85",
        "base64.a85encode(v.encode()).decode()",
        lambda v: base64.a85encode(v.encode()).decode(),
    ),
    ("uu", "binascii.b2a_uu(v.encode()).decode()", lambda v: binascii.b2a_uu(v.encode()).decode()),
    (
        "zlib base64",
        "base64.b64encode(zlib.compress(v.encode())).decode()",
        lambda v: base64.b64encode(zlib.compress(v.encode())).decode(),
    ),
    (
        "\\u escapes",
        "''.join(f'\\\\u{ord(c):04x}' for c in v)",
        lambda v: "".join(f"\\u{ord(c):04x}" for c in v),
    ),
    (
        "bits",
        "' '.join(f'{ord(c):08b}' for c in v)",
        lambda v: " ".join(f"{ord(c):08b}" for c in v),
    ),
    ("utf-16 hex", "v.encode('utf-16-be').hex()", lambda v: v.encode("utf-16-be").hex()),
    ("rot13", "codecs.encode(v, 'rot13')", lambda v: codecs.encode(v, "rot13")),
]


@pytest.fixture(scope="module")
def frame():
    return make_patients(400, seed=31)


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _shown(outputs: list[dict]) -> str:
    """Every string of every message's content the client received, joined."""
    return "\n".join(s for m in outputs for s in _strings(m.get("content", {})))


@pytest.mark.parametrize(("name", "expr", "encode"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("column", ["mrn", "name"])
def test_an_encoded_value_does_not_reach_the_client(hostile, name, expr, encode, column):
    client, oracle, frame = hostile
    row = 20 + [c[0] for c in CASES].index(name)
    value = str(frame[column].iloc[row])
    _, outputs = client.execute(f"v = str(df[{column!r}].iloc[{row}])\nprint('out:', {expr})")
    shown = _shown(outputs)
    assert encode(value).strip() not in shown, name
    assert value.lower() not in shown.lower()
    assert not oracle.leaks_shown(outputs)
    said = [n for n in notices(outputs) if n["layer"] == "sentry"]
    assert said and said[0]["decision"] == "blocked", (name, column, shown[:300])


def test_a_pickled_frame_in_base64_does_not_reach_the_client(hostile):
    client, _, frame = hostile
    code = "print(base64.b64encode(pickle.dumps(df[['mrn', 'name']].head(3))).decode())"
    _, outputs = client.execute(code)
    mine = base64.b64encode(pickle.dumps(pd.DataFrame(frame[["mrn", "name"]].head(3)))).decode()
    shown = _shown(outputs)
    assert mine[:200] not in shown
    assert all(str(v) not in shown for v in frame.mrn.head(3))
    assert [n["decision"] for n in notices(outputs) if n["layer"] == "sentry"][:1] == ["blocked"]


def test_honest_digests_ids_and_weights_pass(hostile):
    client, _, _ = hostile
    code = (
        "import hashlib, uuid, numpy as np\n"
        "for i in range(20): print(hashlib.sha256(str(i).encode()).hexdigest(), uuid.UUID(int=i))\n"
        "w = np.random.default_rng(0).normal(size=256).astype('float32').tobytes()\n"
        "print(base64.b64encode(w).decode())\n"
        "print(base64.b64encode(zlib.compress(b'mean age 54.2\\n' * 50)).decode())\n"
        "print(' '.join(f'{b:08b}' for b in range(40, 60)))\n"
        "print('MAX_SEQUENCE_LENGTH=512 RESULTS_SUMMARY_TABLE r\"C:\\\\data\\\\123\"')\n"
    )
    _, outputs = client.execute(code)
    assert not notices(outputs), notices(outputs)
    assert "MAX_SEQUENCE_LENGTH=512" in _shown(outputs)


def test_a_value_behind_compressible_filler_is_blocked(hostile):
    """Past the inflation bound nothing is read, so such data is blocked rather than passed."""
    client, _, frame = hostile
    code = (
        "v = str(df.mrn.iloc[40])\n"
        "print(base64.b64encode(zlib.compress(b'\\0' * 2_000_000 + v.encode())).decode())"
    )
    _, outputs = client.execute(code)
    assert str(frame.mrn.iloc[40]) not in _shown(outputs)
    said = [n for n in notices(outputs) if n["layer"] == "sentry"]
    assert said and said[0]["decision"] == "blocked"
