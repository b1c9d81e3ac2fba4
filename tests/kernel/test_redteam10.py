"""Tenth round's red team: a US claims table nobody tuned for, from the client's side of the real
sentry.

`claims` (Faker en_US, fixed seed): `member_no` (`XJ` and nine digits), `given`, `family`,
`dob` as strings in three formats mixed in one column (`1956-03-12`, `03/12/1956`,
`Mar 12, 1956`), `npi` (the treating provider's ten-digit number), `state`, `payer`, `icd10`
(one code held by a single member, two by three), `los_days`, `charge_usd`, `readmit` (0/1) and a
free-text `note` that names the member. The policy lists member_no, given, family and dob as
identifiers; the note is not declared. Everything is judged by what the client receives on every
channel, by a judge written here and independent of `bedside.policy`:

- identifier values as written and in the other date formats, full names, the member number's
  digits, and any text of a note (its words beside the member's name);
- `SECRETS`: the disclosive number each small-cell probe is after (the charge of the only member
  with a code, the largest charge, the mean charge of three members), computed here from the
  frame: it must not reach the client in any rounding a reader could use;
- record-order runs of charges and lengths of stay.

`LEAKS` are cells an analyst could write by mistake or on purpose; `HONEST` the same kinds
written safely, which must come through with nothing blocked.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np
import pandas as pd
import pytest
from faker import Faker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from _sentry_support import Client  # noqa: E402

from tests.kernel._redteam import contains_run, decisions, record_runs, run_cell, sentry_client  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

N = 4000
SEED = 1010
STATES = ["CA", "TX", "NY", "FL", "OH", "WA"]
PAYERS = ["Medicare", "Medicaid", "Commercial", "Self-pay"]
COMMON = ["I10", "E11.9", "J44.1", "I50.9", "N18.3", "J18.9", "M17.11", "F32.9", "K35.80"]
RARE_ONE = "A92.5"  # Zika: one member
RARE_THREE = "T86.11"  # kidney transplant rejection: three members

POLICY = """\
version: bedside/v1
id: st-elsewhere
datasets:
  claims:
    path: data/patients.parquet
    record_id: member_no
    identifiers: [member_no, given, family, dob]
disclosure:
  min_cell_count: 10
  round_counts_to: 5
  dominance: {n: 2, k: 0.9}
  p_ratio: 0.1
  zeros_disclosive: true
  extremes: suppress
outputs:
  mime_allow: [text/plain, text/html, text/markdown, text/latex, image/png, application/json]
  max_output_bytes: 1000000
  session_egress_bytes: 50000000
errors: scrub
shell: deny
session:
  max_cells: 2000
  max_cpu_seconds: 3600
  max_egress_bytes: 50000000
"""

_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%b %d, %Y")


def claims(n: int = N, seed: int = SEED) -> pd.DataFrame:
    fake = Faker("en_US")
    Faker.seed(seed)
    rng = np.random.default_rng(seed)
    dobs = [fake.date_of_birth(minimum_age=18, maximum_age=95) for _ in range(n)]
    given = [fake.first_name() for _ in range(n)]
    family = [fake.last_name() for _ in range(n)]
    icd = rng.choice(COMMON, n)
    icd[7] = RARE_ONE
    icd[[11, 12, 13]] = RARE_THREE
    los = rng.integers(1, 30, n)
    charge = np.round(rng.lognormal(9.0, 0.9, n), 2)
    charge[7] = 187_654.32  # the Zika member: the largest charge of the table
    notes = [
        f"Pt {g} {f} seen for {c}; follow-up in {int(d)} days."
        for g, f, c, d in zip(given, family, icd, rng.integers(7, 60, n), strict=True)
    ]
    return pd.DataFrame(
        {
            "member_no": [f"XJ{310000000 + i * 7919}" for i in range(n)],
            "given": given,
            "family": family,
            "dob": [d.strftime(_FORMATS[i % 3]) for i, d in enumerate(dobs)],
            "npi": rng.choice([1000000000 + 7 * k for k in range(40)], n),
            "state": rng.choice(STATES, n),
            "payer": rng.choice(PAYERS, n, p=[0.4, 0.2, 0.35, 0.05]),
            "icd10": icd,
            "los_days": los,
            "charge_usd": charge,
            "readmit": (rng.random(n) < 0.12).astype(int),
            "note": notes,
        }
    )


# -- the judge (independent of bedside.policy) ---------------------------------------------------


def _secrets(frame: pd.DataFrame) -> dict[str, float]:
    three = frame[frame.icd10 == RARE_THREE]
    return {
        "one-charge": float(frame.charge_usd[frame.icd10 == RARE_ONE].iloc[0]),
        "one-los": float(frame.los_days[frame.icd10 == RARE_ONE].iloc[0]),
        "three-mean": float(three.charge_usd.mean()),
        "three-sum": float(three.charge_usd.sum()),
        "three-median": float(three.charge_usd.median()),
        "three-std": float(three.charge_usd.std(ddof=0)),
        "three-one": float(three.charge_usd.iloc[0]),
        "max-charge": float(frame.charge_usd.max()),
        "second-charge": float(frame.charge_usd.nlargest(2).iloc[1]),
    }


class Judge:
    """Which identifiers, note texts, secret numbers or record-order runs a client received."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.auto = ahocorasick.Automaton()
        for row in frame.itertuples():
            # every format of the date of birth, whichever the column holds
            dob = dt.datetime.strptime(row.dob, _FORMATS[int(row.Index) % 3]).date()  # noqa: DTZ007
            forms = {
                "member_no": [row.member_no, row.member_no[2:]],
                "name": [f"{row.given} {row.family}", f"{row.family}, {row.given}"],
                "dob": [dob.strftime(f) for f in _FORMATS],
                "note": [row.note[: row.note.index(" seen")]],  # "Pt Given Family"
            }
            if len(row.family) >= 6:
                forms["family"] = [row.family]
            for column, values in forms.items():
                for value in values:
                    self.auto.add_word(value.casefold(), (column, len(value)))
        self.auto.make_automaton()
        self.secrets = _secrets(frame)
        self.runs = {
            c: record_runs(frame[c].to_numpy(dtype=float)) for c in ("charge_usd", "los_days")
        }

    def leaks(self, messages: list[dict[str, Any]], secrets: tuple[str, ...] = ()) -> list[str]:
        text = "\n".join(json.dumps(m, default=str, ensure_ascii=False) for m in messages)
        streams = "".join(
            str(m["content"].get("text", "")) for m in messages if m.get("msg_type") == "stream"
        )
        found: set[str] = set()
        for view in (text.casefold(), text.replace("\\n", " ").casefold(), streams.casefold()):
            for end, (column, n) in self.auto.iter(view):
                before = view[end - n] if end >= n else " "
                after = view[end + 1] if end + 1 < len(view) else " "
                if not (before.isalnum() or after.isalnum()):
                    found.add(column)
        shown = streams + "\n".join(
            str((m.get("content") or {}).get("data", {}).get("text/plain", "")) for m in messages
        )
        nums = [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*(?:\.\d+)?", shown)]
        for name in secrets:
            v = self.secrets[name]
            # the value to the cent, to the dollar, or in thousands with one decimal
            if any(abs(x - v) < 0.006 or (abs(v) >= 100 and abs(x - round(v)) < 0.5)
                   or (abs(v) >= 10_000 and abs(x - v / 1000) < 0.051) for x in nums):  # fmt: skip
                found.add(f"secret:{name}")
        arr = np.array(nums[:5000])
        for column, runs in self.runs.items():
            if arr.size >= 5 and contains_run(arr, runs):
                found.add(f"rows:{column}")
        return sorted(found)


# -- the cells ------------------------------------------------------------------------------------

SETUP = f"""\
import pandas as pd, numpy as np, json
import matplotlib
matplotlib.use('module://matplotlib_inline.backend_inline')
import matplotlib.pyplot as plt
import statsmodels.formula.api as smf
from IPython.display import display, HTML, Markdown
df = hospital.load('claims')
RARE_ONE, RARE_THREE = {RARE_ONE!r}, {RARE_THREE!r}
"""

# name -> (code, the secrets it is after)
LEAKS: dict[str, tuple[str, tuple[str, ...]]] = {
    # small cells, extremes and tiny subsets
    "mean-of-one": ("df[df.icd10 == RARE_ONE].charge_usd.mean()", ("one-charge",)),
    "group-means": ("df.groupby('icd10').charge_usd.mean().round(2)", ("one-charge", "three-mean")),
    "group-agg-named": (
        "df.groupby('icd10').agg(n=('los_days', 'size'), total=('charge_usd', 'sum'))",
        ("one-charge", "three-sum"),
    ),
    "pivot-state-icd": (
        "df.pivot_table(index='icd10', columns='payer', values='charge_usd', aggfunc='sum')",
        ("one-charge",),
    ),
    "crosstab-values": (
        "pd.crosstab(df.icd10, df.readmit, values=df.charge_usd, aggfunc='mean').round(0)",
        ("one-charge",),
    ),
    "describe-subset": ("df[df.icd10 == RARE_THREE].charge_usd.describe()", ("three-mean",)),
    "describe-whole": ("df.charge_usd.describe()", ("max-charge",)),
    "quantile-top": ("df.charge_usd.quantile([0.5, 0.9999])", ("max-charge", "second-charge")),
    "sort-head": (
        "df.sort_values('charge_usd', ascending=False).head(2)[['icd10', 'charge_usd']]",
        ("max-charge", "second-charge"),
    ),  # fmt: skip
    "nlargest-list": ("df.charge_usd.nlargest(2).tolist()", ("max-charge", "second-charge")),
    "fstring-max": ("print(f'top claim ${df.charge_usd.max():,.2f}')", ("max-charge",)),
    "fstring-one": (
        "c = df.loc[df.icd10 == RARE_ONE, 'charge_usd']\n"
        "print(f'{RARE_ONE}: n={len(c)}, mean ${c.mean():,.0f}')",
        ("one-charge",),
    ),
    "los-of-one": ("print(df[df.icd10 == RARE_ONE].los_days.sum())", ("one-los",)),
    "to-json-groups": (
        "print(df.groupby('icd10').charge_usd.mean().round(2).to_json())",
        ("one-charge",),
    ),  # fmt: skip
    "to-html-groups": (
        "HTML(df.groupby('icd10').charge_usd.sum().to_frame().to_html())",
        ("one-charge", "three-sum"),
    ),  # fmt: skip
    "bar-annotated": (
        "m = df.groupby('icd10').charge_usd.mean()\nfig, ax = plt.subplots()\n"
        "ax.bar(m.index, m.values)\nfor i, v in enumerate(m.values):\n"
        "    ax.annotate(f'{v:.0f}', (i, v))\nplt.show()",
        ("one-charge",),
    ),
    "ols-three": (
        "m = smf.ols('charge_usd ~ los_days', data=df[df.icd10 == RARE_THREE]).fit()\n"
        "print(m.params.round(2))",
        (),
    ),
    "three-sum-np": ("print(np.sum(df[df.icd10 == RARE_THREE][['charge_usd']]))", ("three-sum",)),
    "npi-max": ("df.groupby('npi').charge_usd.max()", ("max-charge",)),
    "crosstab-margins": (
        "pd.crosstab(df.icd10, df.payer, values=df.charge_usd, aggfunc='sum', margins=True)",
        ("one-charge",),
    ),
    "iterrows-print": (
        "for _, r in df[df.icd10 == RARE_ONE].iterrows():\n    print(r.icd10, r.charge_usd)",
        ("one-charge",),
    ),
    "query-agg": (
        "df.query('icd10 == @RARE_THREE').charge_usd.agg(['mean', 'sum'])",
        ("three-mean", "three-sum"),
    ),  # fmt: skip
    "transform-dedup": (
        "df.assign(m=df.groupby('icd10').charge_usd.transform('mean'))"
        ".drop_duplicates('icd10')[['icd10', 'm']]",
        ("one-charge", "three-mean"),
    ),
    "apply-lambda": (
        "df.groupby('icd10').charge_usd.apply(lambda s: s.mean())",
        ("one-charge", "three-mean"),
    ),  # fmt: skip
    "agg-lambda": (
        "df.groupby('icd10').charge_usd.agg(lambda s: s.sum())",
        ("one-charge", "three-sum"),
    ),  # fmt: skip
    "itertuples-fstring": (
        "for r in df[df.icd10 == RARE_THREE].itertuples():\n"
        "    print(f'{r.icd10} {r.payer} ${r.charge_usd:,.2f}')",
        ("three-one",),
    ),
    "value-counts-icd-charge": ("df[df.charge_usd > 150000].icd10.value_counts()", ()),
    # names, dates of birth, notes and rows
    "names-upper": ("df.family.str.upper().head(5).tolist()", ()),
    "initial-family": ("(df.given.str[0] + '. ' + df.family).head(4)", ()),
    "full-name-fstring": ("r = df.iloc[3]\nprint(f'{r.given} {r.family} ({r.dob})')", ()),
    "dob-reformatted": (
        "print(pd.to_datetime(df.dob.head(6), format='mixed').dt.strftime('%b %d, %Y').tolist())",
        (),
    ),
    "member-digits": ("print('member', df.member_no.iloc[9][2:])", ()),
    # numpy on an array taken out of a few rows (its statistics are kept when it is taken)
    "np-mean-values": (
        "print(np.mean(df[df.icd10 == RARE_THREE].charge_usd.values))",
        ("three-mean",),
    ),  # fmt: skip
    "np-median-asarray": (
        "print(np.median(np.asarray(df[df.icd10 == RARE_THREE].charge_usd)))",
        ("three-median",),
    ),  # fmt: skip
    "np-std-to-numpy": (
        "a = df.loc[df.icd10 == RARE_THREE, ['charge_usd', 'los_days']].to_numpy()\n"
        "print('spread', a[:, 0].std())",
        ("three-std",),
    ),  # fmt: skip
    "statistics-mean-list": (
        "import statistics\nprint(statistics.mean(df[df.icd10 == RARE_THREE].charge_usd.tolist()))",
        ("three-mean",),
    ),  # fmt: skip
    "builtin-sum-iter": (
        "print(round(sum(df[df.icd10 == RARE_THREE].charge_usd), 2))",
        ("three-sum",),
    ),  # fmt: skip
    "notes-head": ("df.note.head(3).tolist()", ()),
    "note-extract": ("df.note.str.extract(r'Pt (\\w+ \\w+) seen').head(4)", ()),
    "note-one": ("print(df.note.iloc[40])", ()),
    "rows-to-html": ("HTML(df[['given', 'family', 'icd10']].head(3).to_html())", ()),
    "rows-to-json": ("print(df.head(2).to_json(orient='records'))", ()),
    "value-counts-names": ("df.family.value_counts().head(5)", ()),
    "rare-row": ("df[df.icd10 == RARE_ONE][['given', 'family', 'charge_usd']]", ("one-charge",)),
    "name-annotate": (
        "fig, ax = plt.subplots()\nax.plot([0, 1], [0, 1])\n"
        "ax.annotate(df.family.iloc[5] + ' ' + df.given.iloc[5], (0.5, 0.5))\n"
        "plt.show()",
        (),
    ),  # fmt: skip
}

# Text drawn into a PNG's pixels: the judge does not read pixels, the guard must withhold it.
DRAWN = {"bar-annotated", "name-annotate"}

# Leaks still reaching the client (each a documented limit): strict xfails.
LIMITS: dict[str, tuple[str, tuple[str, ...]]] = {}

HONEST: dict[str, str] = {
    "state-means": "df.groupby('state').charge_usd.mean().round(0)",
    "payer-medians": "df.groupby('payer').los_days.median()",
    "crosstab": "pd.crosstab(df.state, df.payer)",
    "common-codes": "df[df.icd10.isin(df.icd10.value_counts().index[:5])].groupby('icd10')"
    ".charge_usd.mean().round(0)",
    "quantiles": "df.charge_usd.quantile([0.1, 0.5, 0.9]).round(0)",
    "readmit-rate": "df.groupby('payer').readmit.mean().round(3)",
    "note-length": "df.note.str.len().describe().round(1)",
    "name-stats": "print(df.family.nunique(), round(df.given.str.len().mean(), 2))",
    "dob-formats": "df.dob.str.len().value_counts().sort_index()",
    "birth-years": "pd.to_datetime(df.dob, format='mixed').dt.year.floordiv(10).mul(10)"
    ".value_counts().sort_index()",
    "npi-count": "print(df.npi.nunique(), 'providers')",
    "hist": "plt.hist(df.los_days, bins=range(0, 35, 5))\nplt.show()",
    # a failing aggregate in the same cell (the one-member code's readmission rate, 0 or 1)
    # and a histogram with empty bins: nothing of the aggregate is drawn
    "hist-beside-small-groups": "r = df.groupby('icd10').readmit.mean()\n"
    "plt.hist(df.los_days, bins=range(0, 60, 5))\nplt.show()",
    "ols-whole": "smf.ols('charge_usd ~ los_days + C(payer)', data=df).fit().params.round(1)",
    "missing": "df.isna().sum()",
    "fstring-summary": "print(f'{len(df):,} claims, mean ${df.charge_usd.mean():,.0f}')",
    "to-json-states": "print(df.groupby('state').los_days.mean().round(2).to_json())",
    "sum-whole": "print(round(float(np.sum(df[['charge_usd']])) / 1e6, 1), 'M USD')",
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return claims()


@pytest.fixture(scope="module")
def client(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with sentry_client(frame, POLICY, SETUP, tmp_path_factory.mktemp("redteam10")) as c:
        yield c


@pytest.fixture(scope="module")
def judge(frame: pd.DataFrame) -> Judge:
    return Judge(frame)


def test_the_judge_sees_the_raw_leaks(frame: pd.DataFrame, judge: Judge) -> None:
    r = frame.iloc[4]  # dob written `%b %d, %Y` in the table, here the ISO way
    iso = dt.datetime.strptime(r.dob, _FORMATS[1]).date().isoformat()  # noqa: DTZ007
    secret = judge.secrets["one-charge"]
    text = f"{r.given} {r.family} {iso} mean {secret / 1000:.1f}k"
    found = judge.leaks([{"msg_type": "stream", "content": {"text": text}}], ("one-charge",))
    assert {"dob", "name", "secret:one-charge"} <= set(found), found
    msg = {"msg_type": "stream", "content": {"text": "mean 12,345.00"}}
    assert judge.leaks([msg], ("one-charge",)) == []


def _xfail(names: dict[str, Any], reason: str) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reason)) for n in names]


@pytest.mark.parametrize("name", [*sorted(LEAKS), *_xfail(LIMITS, "a documented limit")])
def test_leak_reaches_no_client(client: Client, judge: Judge, name: str) -> None:
    code, secrets = {**LEAKS, **LIMITS}[name]
    messages = run_cell(client, code)
    assert not judge.leaks(messages, secrets), name
    if name in DRAWN:
        assert "blocked" in decisions(messages), name
    errors = [m["content"]["ename"] for m in messages if m.get("msg_type") == "error"]
    assert not errors, (name, errors)  # the cell ran: a probe that fails proves nothing


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_cell_comes_through(client: Client, name: str) -> None:
    messages = run_cell(client, HONEST[name])
    assert "blocked" not in decisions(messages), name
    shown = [
        m for m in messages if m.get("msg_type") in ("stream", "execute_result", "display_data")
    ]
    assert shown, name
    errors = [m for m in messages if m.get("msg_type") == "error"]
    assert not errors, errors[0]["content"]["evalue"] if errors else ""


# -- ACRO on this table ---------------------------------------------------------------------------

# ACRO 1.0.2's crosstab on `claims()` (its default rules), frozen: the cells it flags for any
# check. Re-derived by `test_acro_verdicts_are_current` when `.venv-acro` exists.
ACRO_TABLES = {
    "counts": ("icd10", "payer", None, None),
    "mean-by-readmit": ("icd10", "readmit", "charge_usd", "mean"),
    "sum-by-state": ("state", "payer", "charge_usd", "sum"),
}
ACRO_FLAGGED: dict[str, set[tuple[str, str]]] = {
    "counts": {(RARE_ONE, p) for p in PAYERS} | {(RARE_THREE, p) for p in PAYERS},
    "mean-by-readmit": {(RARE_ONE, "0"), (RARE_ONE, "1"), (RARE_THREE, "0"), (RARE_THREE, "1")},
    "sum-by-state": set(),
}
ACRO_PY = Path(__file__).resolve().parents[2] / ".venv-acro" / "bin" / "python"


def test_acro_verdicts_are_current(frame: pd.DataFrame) -> None:
    if not ACRO_PY.exists():
        pytest.skip(".venv-acro is absent: run `make acro-venv` to re-derive ACRO's verdicts")
    import subprocess

    cases = [
        {"a": frame[a].astype(str).tolist(), "b": frame[b].astype(str).tolist(),
         "v": None if v is None else frame[v].tolist(), "aggfunc": f}
        for a, b, v, f in ACRO_TABLES.values()
    ]  # fmt: skip
    runner = Path(__file__).with_name("_acro_runner.py")
    proc = subprocess.run([str(ACRO_PY), str(runner)], input=json.dumps(cases), text=True,
                          capture_output=True, timeout=240, check=True)  # fmt: skip
    for name, got in zip(ACRO_TABLES, json.loads(proc.stdout), strict=True):
        flagged = {(got["rows"][r], got["cols"][c]) for cells in got["cells"].values()
                   for r, c in cells}  # fmt: skip
        assert flagged == ACRO_FLAGGED[name], name


@pytest.mark.parametrize("name", sorted(ACRO_TABLES))
def test_guard_suppresses_what_acro_flags(client: Client, name: str) -> None:
    """The crosstab as written to JSON on the client: its `suppressed` cells are ACRO's."""
    a, b, v, f = ACRO_TABLES[name]
    values = "" if v is None else f", values=df.{v}, aggfunc={f!r}"
    messages = run_cell(client, f"print(pd.crosstab(df.{a}, df.{b}.astype(str){values}).to_json())")
    out = [m["content"] for m in messages if m.get("msg_type") == "stream"]
    text = "".join(str(c.get("text", "")) for c in out if c.get("name") == "stdout")
    table, _ = json.JSONDecoder().raw_decode(text.strip())  # (the sandbox warning follows)
    suppressed = {(r, c) for c, col in table.items() for r, x in col.items() if x == "suppressed"}
    assert suppressed == ACRO_FLAGGED[name], (name, suppressed ^ ACRO_FLAGGED[name])
