"""scan_text's separated layer: values spaced out or regrouped are found, honest look-alikes not."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from bedside.policy import IdentifierIndex, scan_text
from bedside.policy import _separated as S
from bedside.policy.scan import findings_block

KIND = "encoded:separated+identifier"


@pytest.fixture(scope="module")
def row(patients: pd.DataFrame) -> dict[str, str]:
    """A patient whose name is two words of ASCII letters (the phrasings below split them)."""
    plain = patients[patients.name.str.fullmatch(r"[A-Za-z]+ [A-Za-z]+")]
    return {k: str(v) for k, v in plain.iloc[3].items()}


def separated(text: str, index: IdentifierIndex) -> list[str]:
    """Columns of the separated-layer findings of `text`."""
    return [f.column for f in scan_text(text, index) if f.kind == KIND]


def spaced(value: str, sep: str = " ") -> str:
    return sep.join(value)


PHRASINGS = {
    # spaced characters
    "mrn spaced": lambda r: spaced(r["mrn"]),
    "mrn dashed": lambda r: spaced(r["mrn"], "-"),
    "mrn dotted": lambda r: spaced(r["mrn"], "."),
    "mrn underscored": lambda r: spaced(r["mrn"], "_"),
    "mrn commas": lambda r: spaced(r["mrn"], ","),
    "mrn nbsp": lambda r: spaced(r["mrn"], "\u00a0"),
    "mrn comma space": lambda r: spaced(r["mrn"], ", "),
    "mrn as a list": lambda r: str(list(r["mrn"])),
    "name as a list": lambda r: str(list(r["name"])),
    "phone as a tuple": lambda r: str(tuple(r["phone"].replace(" ", ""))),
    "name spaced": lambda r: spaced(r["name"]),
    "name dashed": lambda r: spaced(r["name"], "-"),
    "name tabbed": lambda r: spaced(r["name"], "\t"),
    "postcode spaced": lambda r: spaced(r["postcode"]),
    "postcode compact spaced": lambda r: spaced(r["postcode"].replace(" ", "")),
    "phone spaced": lambda r: spaced(r["phone"].replace(" ", "")),
    "phone spaced with gap": lambda r: spaced(r["phone"]),
    # separators inside a value
    "mrn prefix dashed digits": lambda r: "MRN-" + spaced(r["mrn"][3:], "-"),
    "mrn regrouped dash": lambda r: r["mrn"][:5] + "-" + r["mrn"][5:],
    "mrn regrouped spaces": lambda r: f"{r['mrn'][:3]} {r['mrn'][3:7]} {r['mrn'][7:]}",
    "mrn regrouped dots": lambda r: f"{r['mrn'][:3]}.{r['mrn'][3:7]}.{r['mrn'][7:]}",
    "mrn regrouped slash": lambda r: f"{r['mrn'][:6]}/{r['mrn'][6:]}",
    "mrn regrouped nbsp": lambda r: f"{r['mrn'][:3]}\u00a0{r['mrn'][3:7]}\u00a0{r['mrn'][7:]}",
    "phone dotted": lambda r: _regroup(r["phone"], "."),
    "phone underscored": lambda r: _regroup(r["phone"], "_"),
    "phone slashed": lambda r: _regroup(r["phone"], "/"),
    # a name over two lines
    "name over lines": lambda r: r["name"].replace(" ", "\n"),
    "name over lines, indented": lambda r: r["name"].replace(" ", "  \r\n   "),
    "name over lines, reordered": lambda r: "\n".join(reversed(r["name"].split())),
}


def _regroup(phone: str, sep: str) -> str:
    digits = phone.replace(" ", "")
    return sep.join((digits[:4], digits[4:7], digits[7:]))


@pytest.mark.parametrize("phrasing", sorted(PHRASINGS))
def test_phrasing_is_found(
    phrasing: str, row: dict[str, str], patient_index: IdentifierIndex
) -> None:
    written = PHRASINGS[phrasing](row)
    for text in (written, f"patient {written} seen", f"x\n{written}\ny", f"{written} \u2588\u00e9"):
        found = scan_text(text, patient_index)
        assert findings_block(found), (phrasing, text)
        # Reported over the separated span, never with the value.
        assert all(written not in repr(f) for f in found)
    text = f"a: {written} ;b"
    for f in scan_text(text, patient_index):
        if f.kind == KIND:
            # The span found is the value's, perhaps with the words joined to it.
            assert f.column in {"mrn", "name", "postcode", "phone"}
            assert 0 <= f.start < 3 + len(written) and 3 < f.end <= len(text)


def test_spaced_name_is_the_separated_layer(
    row: dict[str, str], patient_index: IdentifierIndex
) -> None:
    assert separated(f"id {spaced(row['name'])} end", patient_index) == ["name"]
    assert separated(f"id {spaced(row['mrn'])} end", patient_index) == ["mrn"]
    first, last = row["name"].split()
    assert separated(f"{first}\n{last}\n", patient_index) == ["name"]
    # The plain value is the index's own match, not this layer's.
    assert separated(f"id {row['mrn']} {row['name']} end", patient_index) == []


@pytest.mark.parametrize("sep", [" ", "-", "."])
def test_hyphenated_name_spaced(sep: str) -> None:
    index = IdentifierIndex.from_frames(
        [(pd.DataFrame({"name": ["Heinz-Otto Schlosser", "Ann Lee"]}), ["name"])]
    )
    text = "name: " + sep.join("Heinz-Otto Schlosser") + "\n"
    assert separated(text, index) == ["name"]
    assert separated("Heinz-Otto\nSchlosser", index) == ["name"]


def test_date_of_birth_is_not_looked_for(
    row: dict[str, str], patient_index: IdentifierIndex
) -> None:
    # A date alone is weak; joined digits of dates and times are what tables hold.
    assert separated(spaced(row["dob"].replace("-", "")), patient_index) == []


HONEST = [
    "[0 1 0 0 1 1 0 1 0 0 0 1 1 1 0 0 1 0 1 0]",
    "[1 2 3 4 5 6 7 8]",
    "[1, 2, 3, 4, 5, 6, 7, 8]",
    "['F', 'M', 'M', 'F', 'F', 'M', 'M', 'F', 'F', 'F']",
    "(0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1)",
    "1  2  3  4  5  6  7  8  9  0  1",
    "a  b  c  d  e  f",
    "[[1 2 3]\n [4 5 6]\n [7 8 9]]",
    "a b c d e f g h",
    "A B C D\nE F G H",
    "Q: is x = y ? A: n o",
    "version 1.2.3, build 2024.01.05, python 3.11.9",
    "loss 0.25 acc 0.913 lr 0.0001 step 12 34 56",
    "epoch 3/10 12/50 [00:03<00:10, 4.12it/s]",
    "100%|##########| 1000/1000 [00:00<00:00, 48213.77it/s]",
    "2024-01-05 10:30:00 2024-01-05T10:30:00.123456 05/01/2024 10:30",
    "192.168.100.200 10.0.0.1 255.255.255.0",
    "totals 12 345 678 901 234 counts 1 234 567",
    "ward\nGeneral Medicine\nCardiology\nElderly Care",
    "Summary\nmean age by ward",
    "p < 0.05\nn = 2000",
    "Results\nNo rows matched\nDone",
]


def _tables(patients: pd.DataFrame) -> list[str]:
    rng = np.random.default_rng(3)
    nums = pd.DataFrame(rng.normal(size=(200, 6)), columns=list("abcdef"))
    ints = pd.DataFrame(rng.integers(0, 10, size=(200, 12)))
    small = pd.DataFrame(rng.integers(0, 100000, size=(100, 5)))
    return [
        patients.describe().to_string(),
        str(patients.describe(include="all")),
        patients.ward.value_counts().to_string(),
        pd.crosstab(patients.ward, patients.sex).to_string(),
        pd.crosstab(patients.ward, patients.died, margins=True).to_string(),
        patients.groupby("ward")[["age", "los_days", "cost"]].mean().to_string(),
        patients.groupby(["ward", "sex"]).size().to_string(),
        patients[["age", "los_days", "cost", "died"]].head(50).to_string(),
        patients[["sex", "ward"]].head(50).to_string(),
        nums.to_string(),
        ints.to_string(),
        small.to_string(),
        str(rng.integers(0, 10, size=(30, 30))),
        np.array2string(rng.integers(0, 10, size=500), max_line_width=200),
        "\n".join(" ".join(str(x) for x in rng.integers(0, 10, size=11)) for _ in range(50)),
        "\n".join(
            f"{i} {j}"
            for i, j in zip(rng.integers(0, 99, 200), rng.integers(0, 9999, 200), strict=True)
        ),
        pd.Series(pd.date_range("2023-01-01", periods=60, freq="D")).to_string(),
        "\n".join(
            f"{i:>4}/1000 [{i // 60:02d}:{i % 60:02d}<00:10, {rng.random() * 50:.2f}it/s] loss "
            f"{rng.random():.4f}"
            for i in range(300)
        ),
    ]


def test_honest_outputs_are_not_found(
    patients: pd.DataFrame, patient_index: IdentifierIndex, ordinary_outputs: list[str]
) -> None:
    for text in HONEST + _tables(patients) + ordinary_outputs:
        assert separated(text, patient_index) == [], text[:200]


def test_hints_find_what_the_expressions_find(
    row: dict[str, str], patients: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled core only says where to look: with it and without it (every position
    tried) the candidates are the same, on phrasings, tables and noise."""
    rnd = random.Random(5)
    pieces = [p(row) for p in PHRASINGS.values()] + HONEST + _tables(patients)[:6]
    alphabet = [*"aB3 .-_/\n\t,:|x7\u00a0\u00e9\u0142\u2588'", "mrn", "0733", "Ann", "  "]
    texts = list(pieces)
    for _ in range(300):
        noise = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 120)))
        texts.append(noise + rnd.choice(pieces) + noise[::-1])
    # Long plain words around them, at every offset of a 16-byte block (the core skips such
    # blocks whole where it can).
    words = "lorem ipsum dolor sit amet consectetur adipiscing "
    numbers = "12.5 0.25 3/4 1_2 7 x 2024-01-05 a1 b 9.9.9 \n"
    for shift in range(34):
        texts.append(words * 3 + "x" * shift + " " + rnd.choice(pieces) + " " + words * 2)
        texts.append(numbers * 3 + "7" * shift + " " + rnd.choice(pieces) + " " + numbers * 2)
    assert S._scanner is not None
    words = frozenset({"mrn", "ab", "x"})
    with_hints = [list(S._candidates(t, words)) for t in texts]
    monkeypatch.setattr(S, "_scanner", None)
    without = [list(S._candidates(t, words)) for t in texts]
    for text, a, b in zip(texts, with_hints, without, strict=True):
        assert sorted(a) == sorted(b), text


@pytest.mark.parametrize(
    "prefix",
    [
        "a b-c d-e f-g h-i j-k l-m n-o p-q r-s t-u v-w x-y z ",  # a long chain, mixed separators
        " ".join("1234567890" * 4) + "-",  # a long chain of digits, then another separator
        "x, y, z ",
        "this is a ",
        "I ",
    ],
)
def test_runs_after_other_single_characters(
    prefix: str, row: dict[str, str], patient_index: IdentifierIndex
) -> None:
    for written in (spaced(row["mrn"]), spaced(row["phone"].replace(" ", ""), "-")):
        assert separated(prefix + written + " end", patient_index), (prefix, written)
    name = spaced(row["name"])
    for text in (prefix + name, f"{prefix}{name} a", f"{prefix}{spaced(row['mrn'])} 1"):
        assert separated(text, patient_index), text


def test_no_index_no_layer() -> None:
    assert scan_text("M R N 1 2 3 4 5 6 7 8", None) == []
    assert S.separated_findings("", IdentifierIndex.build([])) == []
