"""Dates of birth at a million patients: numbers that merely look like dates are not matched,
a calendar axis is not a listing, and real date-of-birth leaks are still caught in every common
format and container (attacker's side: the text a client would receive).

The index holds a birth date on every day from 1920 to 2024, which is what a million patients'
`dob` column covers, so any date-shaped text matches some patient.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from bedside.policy import IdentifierIndex, scan_text
from bedside.policy._matching import calendar_axis, date_shaped, keep_match, parse_date
from bedside.policy.scan import findings_block
from tests.policy._dates import birth_date_index

EVERY_DAY = pd.date_range("1920-01-01", "2024-12-31", freq="D")


@pytest.fixture(scope="module")
def dense() -> IdentifierIndex:
    return birth_date_index(EVERY_DAY)


def blocks(text: str, index: IdentifierIndex) -> bool:
    return findings_block(scan_text(text, index))


def test_csv_fields_are_not_dates(dense: IdentifierIndex) -> None:
    rng = np.random.default_rng(3)
    agg = pd.DataFrame({"ward_code": rng.integers(1, 13, 60), "readmit": rng.integers(0, 2, 60),
                        "episodes": rng.integers(1920, 2024, 60)})  # fmt: skip
    for text in (agg.to_csv(index=False), agg.to_csv(sep="\t"), agg.to_string(),
                 str(agg.values.tolist()), agg.to_json(orient="values")):  # fmt: skip
        assert not [f for f in scan_text(text, dense) if f.column == "birth_date"], text[:200]
    assert not blocks("9,1,1952\n3,12,1956\n1,1,1950\n2,2,1960\n7,7,1970", dense)
    assert not blocks("9 1 1952\n3 12 1956\n1 1 1950\n2 2 1960\n7 7 1970", dense)


@pytest.mark.parametrize(
    ("span", "before", "shaped"),
    [
        ("1956-03-12", "", True),
        ("12/03/1956", "", True),
        ("3/12/1956", "", True),
        ("12.3.1956", "", True),
        ("12 / 03 / 1956", "", True),
        ("12 March 1956", "", True),
        ("Mar 12, 1956", "", True),
        ("19560312", "", True),
        ("1956, 3, 12", "datetime.date(", True),
        ("9,1,1952", "", False),
        ("9, 1, 1952", "[", False),
        ("9 1 1952", "", False),
        ("9\t1\t1952", "", False),
        ("9,1-1952", "", False),
    ],
)
def test_date_shape(span: str, before: str, shaped: bool) -> None:
    assert date_shaped(span, before) is shaped


def test_parse_and_axis() -> None:
    d = dt.date(1956, 3, 12)
    for span in ("1956-03-12", "12/03/1956", "3/12/1956".replace("3/12", "12/3"), "12 March 1956",
                 "March 12, 1956", "19560312", "12031956", "1956 mar 12"):  # fmt: skip
        assert d in parse_date(span), span
    days = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(10)]
    assert calendar_axis([[d] for d in days]) == set(days)
    weeks = [dt.date(2021, 1, 4) + dt.timedelta(weeks=i) for i in range(6)]
    assert calendar_axis([[d] for d in weeks]) == set(weeks)
    assert calendar_axis([[d] for d in weeks[::-2] + weeks[::2]]) == set(weeks)  # any order
    months = [dt.date(2020 + i // 12, i % 12 + 1, 1) for i in range(14)]
    assert calendar_axis([[d] for d in months]) == set(months)
    rng = np.random.default_rng(5)
    scattered = [dt.date(1930, 1, 1) + dt.timedelta(days=int(x)) for x in
                 rng.integers(0, 30_000, 40)]  # fmt: skip
    assert len(calendar_axis([[d] for d in scattered])) < 3


def test_decimals_are_not_record_numbers(dense: IdentifierIndex) -> None:
    hosp = "4000007"
    assert blocks(f"patient {hosp}", dense)
    assert blocks(f"{hosp}.0", dense)  # an id column read as float
    for text in (f"0.{hosp}", f"mean {hosp}.25", f"1.{hosp}e+06", f"p=0.0{hosp}"):
        assert not blocks(text, dense), text
    at = len("mean ")
    assert not keep_match("mean 4000007.25", at, at + 7, date=False)


@pytest.mark.parametrize("freq", ["D", "W-MON", "MS", "QS"])
@pytest.mark.parametrize("fmt", ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d %B %Y"])
def test_admission_series_are_not_listings(dense: IdentifierIndex, freq: str, fmt: str) -> None:
    days = pd.date_range("2021-01-01", periods=40, freq=freq)
    counts = pd.Series(np.arange(40) % 7 * 5 + 20, index=days.strftime(fmt), name="admissions")
    for text in (counts.to_string(), counts.to_csv(), counts.to_frame().to_html(),
                 json.dumps(counts.to_dict())):  # fmt: skip
        assert not blocks(text, dense), (freq, fmt, text[:200])


def _random_dobs(k: int = 12) -> list[dt.date]:
    rng = np.random.default_rng(11)
    return [dt.date(1930, 1, 1) + dt.timedelta(days=int(x)) for x in rng.integers(0, 30_000, k)]


@pytest.mark.parametrize(
    "fmt",
    [
        "{d:%Y-%m-%d}",
        "{d:%d/%m/%Y}",
        "{d.month}/{d.day}/{d.year}",
        "{d.day} {d:%B} {d.year}",
        "{d:%b} {d.day}, {d.year}",
        "{d:%Y%m%d}",
        "{d:%Y-%m-%d}T00:00:00.000",
        "{d!r}",
        "Timestamp('{d:%Y-%m-%d} 00:00:00')",
    ],
)
def test_dob_listings_are_blocked_in_every_format(dense: IdentifierIndex, fmt: str) -> None:
    dobs = [fmt.format(d=d) for d in _random_dobs()]
    wards = ["ICU", "W12A", "MAT3", "CCU"] * 3
    frame = pd.DataFrame({"birth_date": dobs, "ward_code": wards, "los_days": range(12)})
    texts = [
        frame.to_csv(index=False),
        frame.to_json(orient="records"),
        frame.to_html(),
        frame.to_string(),
        repr(frame.to_dict("records")),
        str(dobs),
        "\n".join(dobs),
    ]
    for text in texts:
        assert blocks(text, dense), (fmt, text[:300])


def test_one_dob_beside_a_name_is_blocked(dense: IdentifierIndex) -> None:
    for d in _random_dobs(3):
        for text in (f"Pat00012 Zed012x,{d:%d/%m/%Y}", f"Pat00012 Zed012x born {d:%d %B %Y}",
                     f'{{"full_name": "Pat00012 Zed012x", "birth_date": "{d}"}}'):  # fmt: skip
            assert blocks(text, dense), text
    # Alone it is weak: at this density every date is somebody's birthday.
    assert not blocks("peak admissions on 1956-03-12", dense)
