"""The guard's utility on tables it has not seen: false positives on safe outputs, blocks on leaks.

A generator writes a clinical hospital whose table and column names, categories and identifier
formats appear nowhere else in the project (`cohort`: one row per patient, wide lab columns;
`episodes`: one row per admission; `labs`: long form), with Faker name and postcode pools
(`bedside.policy.synthetic.make_pools`, fixed seed) and seeded numpy for everything else:
numeric hospital numbers (`patient_no`, the record id), NHS numbers, `birth_date`, dates of
admission and discharge that are not birth dates, numeric episode references that are not
identifiers, `ward_code`, `los_days`, `hba1c_mmol`, ...

A real guarded kernel (through jupyter_client) then runs

- safe outputs: aggregates (counts, crosstabs, means, sums, a daily admissions series, wide and
  long lab summaries), each displayed as an object and printed as CSV, JSON, HTML, a string and
  a dict. ACRO (`.venv-acro`, `make acro-venv`) checks the same tables with its crosstab: an
  aggregate ACRO passes should be released (counts rounded at most), one it flags should be
  redacted or blocked. A block of the printed text of an aggregate ACRO passes is a false
  positive of the text scans;
- leaking outputs: row listings and identifier values in phrasings the corpus does not use.
  A leak is stopped when the client receives a block and none of the leaked values.

Prints the rates and the agreement with ACRO and writes them as JSON (stdout, `--out`).

    .venv/bin/python bench/bench_guard_utility.py [--patients 1000000] [--seed 11] [--out FILE]
        [--birth-years 2012 2024] [--no-acro]

`--acro-worker` is the mode `.venv-acro/bin/python` runs this file in (stdlib, numpy, pandas
and acro only at module level).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ACRO_PY = ROOT / ".venv-acro" / "bin" / "python"

WARD_CODES = [f"W{i:02d}" for i in range(1, 15)] + ["ITU", "HDU", "NNU", "AMU"]
SPECIALTIES = ["cardio", "resp", "gastro", "ortho", "neuro", "obs", "paeds", "onc", "renal"]
ETHNIC = ["White British", "White Other", "Asian", "Black", "Mixed", "Other", "Not stated"]
SMOKER = ["never", "ex", "current", "unknown"]
OUTCOME = ["home", "transfer", "care home", "died"]
TESTS = ["HBA1C", "EGFR", "CRP"]
REFERENCE = np.datetime64("2024-12-31")
LAB_PATIENTS = 100_000
CELL_TIMEOUT = 1800.0  # seconds; loading a million patients on a loaded machine is slow

POLICY = """\
version: bedside/v1
id: unseen-tables
datasets:
  cohort:
    path: cohort.parquet
    record_id: patient_no
    identifiers: [patient_no, nhs_no, full_name, birth_date, post_code, mobile]
  episodes:
    path: episodes.parquet
    record_id: patient_no
    identifiers: [patient_no]
  labs:
    path: labs.parquet
    record_id: patient_no
    identifiers: [patient_no]
"""


# ---------------------------------------------------------------------------- the generator


def _nhs_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ten-digit NHS numbers with a valid modulus-11 check digit, written `### ### ####`."""
    body = rng.integers(400_000_000, 999_999_999, n * 2)
    digits = (body[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    check = (11 - (digits * np.arange(10, 1, -1)).sum(axis=1) % 11) % 11
    ok = check < 10
    body, check = body[ok][:n], check[ok][:n]
    full = pd.Series(body * 10 + check).astype(str)
    return (full.str[:3] + " " + full.str[3:6] + " " + full.str[6:]).to_numpy()


def generate(n: int, seed: int, *, birth_years: tuple[int, int] = (1920, 2024)) -> dict[str, Any]:
    """The unseen hospital: {"cohort": df, "episodes": df, "labs": df, "policy": text}."""
    from bedside.policy.synthetic import make_pools

    rng = np.random.default_rng([seed, 0x554E53])
    pools = make_pools(seed, postcodes=20_000)
    female = rng.random(n) < 0.5
    ff, fm = np.asarray(pools.first_female), np.asarray(pools.first_male)
    first = np.where(female, ff[rng.integers(0, len(ff), n)], fm[rng.integers(0, len(fm), n)])
    last = np.asarray(pools.last)[rng.integers(0, len(pools.last), n)]
    lo = (np.datetime64(f"{birth_years[0]}-01-01") - np.datetime64("1970-01-01")).astype(int)
    hi = (np.datetime64(f"{birth_years[1]}-12-31") - np.datetime64("1970-01-01")).astype(int)
    birth = np.datetime64("1970-01-01") + rng.integers(lo, hi + 1, n).astype("timedelta64[D]")
    # Numeric hospital numbers, dense in their range (sequential allocation, shuffled).
    patient_no = (3_000_000 + rng.permutation(n)).astype(str)
    sex = rng.choice(["Female", "Male", "Indeterminate"], n, p=[0.5, 0.4995, 0.0005])
    sex[female] = "Female"
    sex[~female & (sex == "Female")] = "Male"
    ward = rng.choice(WARD_CODES, n)
    admit = REFERENCE - rng.integers(0, 5 * 365, n).astype("timedelta64[D]")
    admit = np.maximum(admit, birth)
    los = np.minimum(rng.negative_binomial(2, 0.35, n), 120)
    hba1c = np.round(rng.lognormal(np.log(42), 0.25, n), 1)
    cohort = pd.DataFrame(
        {
            "patient_no": patient_no,
            "nhs_no": _nhs_numbers(rng, n),
            "full_name": np.char.add(np.char.add(first.astype(str), " "), last.astype(str)),
            "birth_date": pd.to_datetime(birth).strftime("%Y-%m-%d"),
            "post_code": np.asarray(pools.postcodes)[rng.integers(0, len(pools.postcodes), n)],
            "mobile": np.char.add("07", np.char.zfill(rng.integers(0, 10**9, n).astype(str), 9)),
            "sex": sex,
            "ethnic_group": rng.choice(ETHNIC, n, p=[0.6, 0.1, 0.12, 0.07, 0.04, 0.03, 0.04]),
            "imd_quintile": rng.integers(1, 6, n),
            "ward_code": ward,
            "smoker": rng.choice(SMOKER, n, p=[0.5, 0.25, 0.17, 0.08]),
            "bmi": np.round(rng.normal(27.5, 5.5, n).clip(14, 70), 1),
            "hba1c_mmol": hba1c,
            "hba1c_t1": np.round(hba1c * rng.lognormal(0, 0.08, n), 1),
            "hba1c_t2": np.round(hba1c * rng.lognormal(-0.02, 0.1, n), 1),
            "sbp_mmhg": np.round(rng.normal(132, 17, n)).astype(int),
            "egfr": np.round(rng.normal(78, 20, n).clip(5, 140), 1),
            "frailty_score": rng.integers(1, 10, n),
            "readmit_30d": (rng.random(n) < 0.12).astype(int),
            "admit_date": admit.astype("datetime64[ns]"),
            "discharge_date": (admit + los.astype("timedelta64[D]")).astype("datetime64[ns]"),
            "los_days": los,
            "episode_ref": 500_000_000 + rng.permutation(n) * 7,  # numeric, not an identifier
        }
    )
    # Long form: one row per admission (1 + Poisson(0.6) per patient).
    per = 1 + rng.poisson(0.6, n)
    owner = np.repeat(np.arange(n), per)
    m = len(owner)
    e_admit = REFERENCE - rng.integers(0, 5 * 365, m).astype("timedelta64[D]")
    e_los = np.minimum(rng.negative_binomial(2, 0.35, m), 120)
    episodes = pd.DataFrame(
        {
            "episode_ref": 700_000_000 + np.arange(m) * 3,
            "patient_no": patient_no[owner],
            "admit_date": e_admit.astype("datetime64[ns]"),
            "discharge_date": (e_admit + e_los.astype("timedelta64[D]")).astype("datetime64[ns]"),
            "specialty": rng.choice(SPECIALTIES, m),
            "ward_code": rng.choice(WARD_CODES, m),
            "los_days": e_los,
            "outcome": rng.choice(OUTCOME, m, p=[0.8, 0.1, 0.07, 0.03]),
        }
    )
    visits = 3
    k = min(n, LAB_PATIENTS)  # the long lab table covers a sample of patients
    labs = pd.DataFrame(
        {
            "patient_no": np.repeat(patient_no[:k], visits * len(TESTS)),
            "visit": np.tile(np.repeat(np.arange(visits), len(TESTS)), k),
            "test_code": np.tile(TESTS, k * visits),
            "result": np.round(rng.lognormal(3.2, 0.5, k * visits * len(TESTS)), 1),
        }
    )
    return {"cohort": cohort, "episodes": episodes, "labs": labs, "policy": POLICY}


def write(out: Path, tables: dict[str, Any]) -> Path:
    for name in ("cohort", "episodes", "labs"):
        tables[name].to_parquet(out / f"{name}.parquet", index=False)
    policy = out / "policy.yaml"
    policy.write_text(tables["policy"])
    return policy


# ---------------------------------------------------------------------------- the outputs

# Derived grouping columns, computed the same way in the kernel and for ACRO.
DERIVED = {
    "cohort": {
        "bmi_band": "pd.cut(c.bmi, [0, 18.5, 25, 30, 35, 100]).astype(str)",
        "age_band": "(2024 - pd.to_datetime(c.birth_date).dt.year).floordiv(20).astype(str)",
    },
    "episodes": {
        "admit_day": "e.admit_date.dt.strftime('%Y-%m-%d')",
        "admit_week": "e.admit_date.dt.to_period('W').dt.start_time.dt.strftime('%d/%m/%Y')",
        "admit_month": "e.admit_date.dt.strftime('%Y-%m')",
        "discharge_year": "e.discharge_date.dt.year.astype(str)",
    },
    "labs": {},
}
ALIAS = {"cohort": "c", "episodes": "e", "labs": "l"}

# (name, table, index, columns or None, values or None, aggfunc)
AGGREGATES: list[tuple[str, str, str, str | None, str | None, str]] = [
    ("ward_counts", "cohort", "ward_code", None, None, "count"),
    ("smoker_by_readmit", "cohort", "smoker", "readmit_30d", None, "count"),
    ("sex_by_smoker", "cohort", "sex", "smoker", None, "count"),
    ("ward_by_frailty", "cohort", "ward_code", "frailty_score", None, "count"),
    ("hba1c_by_imd", "cohort", "imd_quintile", None, "hba1c_mmol", "mean"),
    ("egfr_ethnic_imd", "cohort", "ethnic_group", "imd_quintile", "egfr", "mean"),
    ("los_sum_by_ward", "cohort", "ward_code", None, "los_days", "sum"),
    ("sbp_by_bmi_band", "cohort", "bmi_band", None, "sbp_mmhg", "mean"),
    ("hba1c_t2_by_age", "cohort", "age_band", None, "hba1c_t2", "mean"),
    ("specialty_counts", "episodes", "specialty", None, None, "count"),
    ("daily_admissions", "episodes", "admit_day", None, None, "count"),
    ("weekly_admissions", "episodes", "admit_week", None, None, "count"),
    ("monthly_los", "episodes", "admit_month", None, "los_days", "mean"),
    ("outcome_by_specialty", "episodes", "outcome", "specialty", None, "count"),
    ("los_by_discharge_year", "episodes", "discharge_year", "specialty", "los_days", "mean"),
    ("labs_long_mean", "labs", "test_code", "visit", "result", "mean"),
]

# Each aggregate `X` is shown in these phrasings ("object" is judged as an aggregate; the others
# are text, judged by the text scans).
PHRASINGS = {
    "object": "X",
    "csv": "print(X.to_csv())",
    "json": "print(X.to_json())",
    "html": "from IPython.display import HTML; HTML(pd.DataFrame(X).to_html())",
    "string": "print(X.to_string())",
    "dict": "print(X.to_dict())",
}


def aggregate_code(table: str, index: str, columns: str | None, values: str | None,
                   aggfunc: str) -> str:  # fmt: skip
    a = ALIAS[table]
    keys = [index] if columns is None else [index, columns]
    if values is None:
        if columns is None:
            return f"{a}.groupby({index!r}).size()"
        return f"pd.crosstab({a}[{index!r}], {a}[{columns!r}])"
    if columns is None:
        return f"{a}.groupby({index!r})[{values!r}].{aggfunc}()"
    return f"{a}.pivot_table(index={keys[0]!r}, columns={keys[1]!r}, values={values!r}, " \
        f"aggfunc={aggfunc!r})"  # fmt: skip


def setup_code() -> str:
    lines = ["import pandas as pd, numpy as np"]
    for table, alias in ALIAS.items():
        lines.append(f"{alias} = hospital.load({table!r})")
        for table2 in ("episodes",):
            if table == table2:
                lines.append(f"{alias}['admit_date'] = pd.to_datetime({alias}.admit_date)")
                lines.append(f"{alias}['discharge_date'] = pd.to_datetime({alias}.discharge_date)")
        for col, expr in DERIVED[table].items():
            lines.append(f"{alias}[{col!r}] = {expr}")
    return "\n".join(lines)


def leak_cells(tables: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(name, code, leaked values as the client would read them) for each leaking output."""
    c = tables["cohort"]
    r = 17
    d = dt.date.fromisoformat(c.birth_date.iloc[r])
    dobs = [dt.date.fromisoformat(x) for x in c.birth_date.iloc[:12]]
    name = c.full_name.iloc[r]
    return [
        ("head", "c.head()", [c.full_name.iloc[0]]),
        (
            "clinical_rows_csv",
            "print(c[['ward_code', 'los_days', 'hba1c_mmol', 'sbp_mmhg']].head(30).to_csv())",
            [],
        ),  # fmt: skip
        (
            "episode_rows_json",
            "print(e[['episode_ref', 'admit_date', 'ward_code']].head(20)"
            ".to_json(orient='records'))",
            [],
        ),  # fmt: skip
        (
            "sample_html",
            "from IPython.display import HTML; HTML(c.sample(5, random_state=1).to_html())",
            [],
        ),  # fmt: skip
        ("name_upper", f"print(c.full_name.iloc[{r}].upper())", [name.upper()]),
        (
            "name_surname_first",
            f"n = c.full_name.iloc[{r}].split(); print(n[-1] + ', ' + n[0])",
            [name.split()[-1] + ", " + name.split()[0]],
        ),
        (
            "patient_no_fstring",
            f"print(f'follow up {{c.patient_no.iloc[{r}]}} next week')",
            [c.patient_no.iloc[r]],
        ),
        ("patient_no_int", f"int(c.patient_no.iloc[{r}]) + 0", [c.patient_no.iloc[r]]),
        (
            "nhs_no_compact",
            f"c.nhs_no.iloc[{r}].replace(' ', '')",
            [c.nhs_no.iloc[r].replace(" ", "")],
        ),
        ("mobile_intl", f"print('+44 ' + c.mobile.iloc[{r}][1:])", [c.mobile.iloc[r][1:]]),
        (
            "postcode_nospace",
            f"print(c.post_code.iloc[{r}].replace(' ', '').lower())",
            [c.post_code.iloc[r].replace(" ", "").lower()],
        ),
        ("dob_beside_name", f"print(c.full_name.iloc[{r}], '|', c.birth_date.iloc[{r}])", [name]),
        (
            "dob_long_format",
            f"print(c.full_name.iloc[{r}], pd.Timestamp(c.birth_date.iloc[{r}])"
            ".strftime('%d %B %Y'))",
            [name, f"{d.day} {d:%B %Y}"],
        ),  # fmt: skip
        (
            "dob_listing_us",
            "print([pd.Timestamp(x).strftime('%m/%d/%Y') for x in c.birth_date.iloc[:12]])",
            [f"{x:%m/%d/%Y}" for x in dobs],
        ),  # fmt: skip
        (
            "dob_listing_repr",
            "print([pd.Timestamp(x).date() for x in c.birth_date.iloc[:12]])",
            [repr(x) for x in dobs],
        ),
        (
            "dob_rows_csv",
            "print(c[['birth_date', 'ward_code', 'los_days']].iloc[:12].to_csv(index=False))",
            [x.isoformat() for x in dobs],
        ),  # fmt: skip
        (
            "record_json",
            f"import json; print(json.dumps(c.iloc[{r}][['full_name', 'post_code']].to_dict()))",
            [name],
        ),  # fmt: skip
    ]


# ---------------------------------------------------------------------------- ACRO


def acro_tables(tables: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The tables with the derived columns, as the kernel computes them (for ACRO)."""
    out = {}
    c, e, l = tables["cohort"].copy(), tables["episodes"].copy(), tables["labs"].copy()  # noqa: E741
    env = {"pd": pd, "np": np, "c": c, "e": e, "l": l}
    for table, alias in ALIAS.items():
        frame = env[alias]
        for col, expr in DERIVED[table].items():
            frame[col] = eval(expr, env)  # noqa: S307 - our own constant expressions
        out[table] = frame
    return out


def acro_worker() -> None:
    """In `.venv-acro`: read {"dir", "cases"} on stdin, print ACRO's flagged cells per case."""
    import logging

    logging.disable(logging.CRITICAL)
    from acro import ACRO

    job = json.load(sys.stdin)
    frames = {t: pd.read_csv(Path(job["dir"]) / f"{t}.acro.csv") for t in ALIAS}
    acro = ACRO(suppress=False)
    out = []
    for table, index, columns, values, aggfunc in job["cases"]:
        f = frames[table]
        col = f[columns] if columns else pd.Series("all", index=f.index, name="all")
        if values is None:
            acro.crosstab(f[index], col)
        else:
            acro.crosstab(f[index], col, values=f[values], aggfunc=aggfunc)
        record = list(acro.results.results.values())[-1]
        checks = ("threshold", "p-ratio", "nk-rule", "all-values-are-same", "negative")
        cells = {k: len(v) for k, v in record.sdc["cells"].items()}
        summary = record.sdc.get("summary", {})
        out.append({"cells": cells, "summary": {k: summary.get(k) for k in checks},
                    "status": record.status})  # fmt: skip
    json.dump(out, sys.stdout)


ACRO_FLAGS = ("MinimumThresholdCheck", "PresenceOfZeroCheck", "NKCheck", "PPercentCheck")


def acro_verdicts(tables: dict[str, Any], work: Path) -> list[bool] | None:
    """Per aggregate: does ACRO flag any cell (threshold, zeros, N-K, p%)? None: no ACRO."""
    if not ACRO_PY.exists():
        return None
    for name, frame in acro_tables(tables).items():
        keep = {a[2] for a in AGGREGATES if a[1] == name} | {
            a[3] for a in AGGREGATES if a[1] == name and a[3]} | {
            a[4] for a in AGGREGATES if a[1] == name and a[4]}  # fmt: skip
        # CSV: the two environments' pandas versions cannot share pickles.
        frame[sorted(keep)].to_csv(work / f"{name}.acro.csv", index=False)
    job = {"dir": str(work), "cases": [list(a[1:]) for a in AGGREGATES]}
    proc = subprocess.run([str(ACRO_PY), __file__, "--acro-worker"], input=json.dumps(job),
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"ACRO failed: {proc.stderr[-3000:]}")
    return [any(r["cells"].get(k, 0) for k in ACRO_FLAGS) for r in json.loads(proc.stdout)]


# ---------------------------------------------------------------------------- measuring


def decision_of(reply: Any) -> tuple[str, str]:
    """The strictest decision the client received for a cell, and its rule."""
    order = {"released": 0, "redacted": 1, "blocked": 2}
    best = ("released", "")
    for _, m in reply.messages:
        for meta in (m.get("metadata") or {}, (m.get("content") or {}).get("metadata") or {}):
            b = meta.get("bedside") if isinstance(meta, dict) else None
            if isinstance(b, dict) and order.get(b.get("decision"), 0) > order[best[0]]:
                best = (b["decision"], str(b.get("rule", "")))
            elif isinstance(b, dict) and b.get("decision") == best[0] and not best[1]:
                best = (best[0], str(b.get("rule", "")))
    if any(m["header"]["msg_type"] == "error" for _, m in reply.messages):
        err = next(m for _, m in reply.messages if m["header"]["msg_type"] == "error")
        if best[0] != "blocked":
            best = ("error", err["content"].get("ename", ""))
    return best


def measure(n: int, seed: int, *, birth_years: tuple[int, int] = (1920, 2024),
            acro: bool = True, phrasings: dict[str, str] | None = None,
            aggregates: list[Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Generate, start a guarded kernel, run every output, compare with ACRO; the results."""
    sys.path.insert(0, str(ROOT))
    from tests.kernel._client import Session, start

    phrasings = PHRASINGS if phrasings is None else phrasings
    aggregates = AGGREGATES if aggregates is None else aggregates
    t0 = time.monotonic()
    tables = generate(n, seed, birth_years=birth_years)
    with tempfile.TemporaryDirectory(prefix="bedside-utility-") as tmp:
        work = Path(tmp)
        policy = write(work, tables)
        generated = time.monotonic() - t0
        acro_flags = acro_verdicts(tables, work) if acro else None
        km, kc = start(work / "spec", "bedside-utility", policy)
        try:
            session = Session(kc)
            setup = session.request(lambda: kc.execute(setup_code()), timeout=CELL_TIMEOUT)
            if decision_of(setup)[0] == "error":
                raise RuntimeError(f"setup failed: {setup.shown()[-2000:]}")
            safe: list[dict[str, Any]] = []
            for i, (name, table, index, columns, values, aggfunc) in enumerate(aggregates):
                expr = aggregate_code(table, index, columns, values, aggfunc)
                for phrase, template in phrasings.items():
                    cell = f"X = {expr}\n{template}"
                    reply = session.request(lambda c=cell: kc.execute(c), timeout=CELL_TIMEOUT)
                    decision, rule = decision_of(reply)
                    flags = None if acro_flags is None else acro_flags[i]
                    safe.append({"aggregate": name, "phrasing": phrase, "decision": decision,
                                 "rule": rule, "table": table, "acro_flags": flags})  # fmt: skip
            leaks: list[dict[str, Any]] = []
            for name, code, values in leak_cells(tables):
                reply = session.request(lambda c=code: kc.execute(c), timeout=CELL_TIMEOUT)
                decision, rule = decision_of(reply)
                shown = reply.text().lower()
                seen = [v for v in values if v.lower() in shown]
                leaks.append({"leak": name, "decision": decision, "rule": rule,
                              "stopped": decision == "blocked" and not seen,
                              "values_seen": len(seen)})  # fmt: skip
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return summarise(n, seed, safe, leaks, seconds=time.monotonic() - t0, generated=generated)


def _released(s: dict[str, Any]) -> bool:
    return s["decision"] == "released" or s["rule"] == "rounding"


def summarise(n: int, seed: int, safe: list[dict[str, Any]], leaks: list[dict[str, Any]], *,
              seconds: float, generated: float) -> dict[str, Any]:  # fmt: skip
    text = [s for s in safe if s["phrasing"] != "object"]
    objects = [s for s in safe if s["phrasing"] == "object"]
    acro_pass_text = [s for s in text if s["acro_flags"] is False]
    fp_text = [s for s in acro_pass_text if s["decision"] in ("blocked", "error")]
    compared = [s for s in objects if s["acro_flags"] is not None]
    # ACRO passes <=> the guard releases (counts rounded at most).
    agree = [s for s in compared if (not s["acro_flags"]) == _released(s)]
    stopped = [x for x in leaks if x["stopped"]]
    return {
        "summary": (
            f"Guard on unseen tables ({n:,} patients): false-positive blocks of ACRO-passing "
            "aggregates printed as text, agreement with ACRO on displayed aggregates, and the "
            "share of leaking outputs stopped."
        ),
        "patients": n,
        "seed": seed,
        "seconds": round(seconds, 1),
        "generate_seconds": round(generated, 1),
        "ratios": {
            "text_false_positive_rate": round(len(fp_text) / max(len(acro_pass_text), 1), 4),
            "acro_agreement": round(len(agree) / len(compared), 4) if compared else None,
            "leak_block_rate": round(len(stopped) / max(len(leaks), 1), 4),
        },
        "counts": {
            "safe_outputs": len(safe),
            "acro_pass_text_outputs": len(acro_pass_text),
            "false_positive_blocks": len(fp_text),
            "objects_compared_with_acro": len(compared),
            "objects_agreeing": len(agree),
            "leaks": len(leaks),
            "leaks_stopped": len(stopped),
        },
        "false_positives": [f"{s['aggregate']}/{s['phrasing']}: {s['rule']}" for s in fp_text],
        "disagreements": [
            f"{s['aggregate']}: guard {s['decision']} ({s['rule']}), ACRO "
            f"{'flags' if s['acro_flags'] else 'passes'}"
            for s in compared
            if s not in agree
        ],
        "leaks_not_stopped": [
            f"{x['leak']}: {x['decision']} ({x['rule']}), {x['values_seen']} values seen"
            for x in leaks
            if not x["stopped"]
        ],  # fmt: skip
        "safe": safe,
        "leaks": leaks,
    }


# ---------------------------------------------------------------------------- the wider check

WIDE_SEEDS = tuple(range(1, 9))


dr_extremes = "extremes"


def _flags(decision: str, rule: str) -> bool:
    """Does the guard withhold anything of the table (a cell suppressed, the output blocked)?"""
    return decision in ("blocked", "redacted") and rule != "rounding"


def measure_wide(seeds: tuple[int, ...] = WIDE_SEEDS, *, acro: bool = True) -> dict[str, Any]:
    """`bench/unseen_wide.py`: per seed a new table and ~30 aggregates in three phrasings
    (display, print, to_csv) through a guarded kernel, against ACRO's crosstab / pivot_table."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import unseen_wide as uw

    from tests.kernel._client import Session, start

    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        gen = uw.generate(seed)
        schema = gen["schema"]
        ops = uw.operations(schema)
        with tempfile.TemporaryDirectory(prefix="bedside-wide-") as tmp:
            work = Path(tmp)
            policy = uw.write(work, gen)
            csv = work / f"{schema.table}.acro.csv"
            verdicts = (uw.acro_verdicts(ACRO_PY, csv, ops) if acro and ACRO_PY.exists()
                        else [None] * len(ops))  # fmt: skip
            km, kc = start(work / "spec", "bedside-wide", policy)
            try:
                session = Session(kc)
                table = schema.table
                load = f"import pandas as pd, numpy as np\n{uw.ALIAS} = hospital.load({table!r})"
                setup = session.request(lambda k=kc, c=load: k.execute(c))
                if decision_of(setup)[0] == "error":
                    raise RuntimeError(f"setup failed: {setup.shown()[-2000:]}")
                for op, verdict in zip(ops, verdicts, strict=True):
                    for phrase, template in uw.PHRASINGS.items():
                        cell = f"X = {op.code}\n{template}"
                        reply = session.request(lambda k=kc, c=cell: k.execute(c))
                        decision, rule = decision_of(reply)
                        cells: dict[str, int] = {}
                        if phrase == "display" and verdict is not None:
                            shown = session.request(lambda k=kc: k.execute(uw.MASK_CODE))
                            cells = uw.cell_misses(verdict, _mask_of(shown))
                        rows.append({
                            "seed": seed, "table": schema.table, "op": op.name,
                            "phrasing": phrase, "decision": decision, "rule": rule,
                            "acro_flags": uw.acro_flags(verdict), "cells": cells,
                            "acro": None if verdict is None else {
                                k: verdict.get(k) for k in ("flags", "status", "error")},
                        })  # fmt: skip
            finally:
                kc.stop_channels()
                km.shutdown_kernel(now=True)
    return summarise_wide(rows, seeds, time.monotonic() - t0)


def _mask_of(reply: Any) -> dict[str, Any] | None:
    for line in reversed(reply.shown().splitlines()):
        if line.startswith('{"blocked"'):
            return json.loads(line)  # type: ignore[no-any-return]
    return None


def summarise_wide(rows: list[dict[str, Any]], seeds: tuple[int, ...],
                   seconds: float) -> dict[str, Any]:  # fmt: skip
    compared = [r for r in rows if r["acro_flags"] is not None]
    flagged = [r for r in compared if r["acro_flags"]]
    passing = [r for r in compared if not r["acro_flags"]]
    misses = [r for r in flagged if not _flags(r["decision"], r["rule"])]
    false_blocks = [r for r in passing if _flags(r["decision"], r["rule"])]
    errors = [r for r in rows if r["decision"] == "error"]
    agree = len(compared) - len(misses) - len(false_blocks)
    # stricter than ACRO by design: ACRO has no rule for extremes (a min or max is one record's
    # value) nor for class disclosure (a 0/1 rate of 0% or 100%)
    by_design = [r for r in false_blocks if r["rule"] in (dr_extremes, "class-disclosure")]
    acro_cells = sum(r["cells"].get("acro_cells", 0) for r in rows)
    cell_missed = [r for r in rows if r["cells"].get("missed")]

    def line(r: dict[str, Any]) -> str:
        acro = r["acro"] or {}
        return (f"seed {r['seed']} {r['op']}/{r['phrasing']}: guard {r['decision']} "
                f"({r['rule']}), ACRO {acro.get('flags')}")  # fmt: skip

    return {
        "seeds": list(seeds),
        "seconds": round(seconds, 1),
        "ratios": {
            "acro_agreement_wide": round(agree / len(compared), 4) if compared else None,
            "acro_miss_rate_wide": round(len(misses) / len(flagged), 4) if flagged else None,
            "acro_false_block_rate_wide": (
                round(len(false_blocks) / len(passing), 4) if passing else None
            ),  # fmt: skip
            "acro_false_block_rate_wide_not_by_design": (
                round((len(false_blocks) - len(by_design)) / len(passing), 4) if passing else None
            ),  # fmt: skip
            "acro_cell_miss_rate_wide": (
                round(sum(r["cells"]["missed"] for r in cell_missed) / acro_cells, 4)
                if acro_cells
                else None
            ),  # fmt: skip
        },
        "counts": {
            "outputs": len(rows),
            "compared_with_acro": len(compared),
            "acro_flags": len(flagged),
            "acro_passes": len(passing),
            "agreeing": agree,
            "misses": len(misses),
            "false_blocks": len(false_blocks),
            "false_blocks_by_design": len(by_design),
            "acro_flagged_cells_compared": acro_cells,
            "acro_flagged_cells_shown": sum(r["cells"]["missed"] for r in cell_missed),
            "cells_suppressed_acro_passes": sum(r["cells"].get("stricter", 0) for r in rows),
            "errors": len(errors),
            "no_acro_equivalent": len(rows) - len(compared),
        },
        "misses": [line(r) for r in misses],
        "false_blocks": [
            line(r) + (" [by design]" if r in by_design else "") for r in false_blocks
        ],  # fmt: skip
        "cell_misses": [f"{line(r)}: {r['cells']}" for r in cell_missed],
        "errors": [line(r) for r in errors],
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--birth-years", type=int, nargs=2, default=(1920, 2024),
                        metavar=("FIRST", "LAST"),
                        help="birth years of the patients (a narrow range makes a small "
                        "hospital's birth dates as dense as a million patients')")  # fmt: skip
    parser.add_argument("--no-acro", action="store_true", help="skip the ACRO comparison")
    parser.add_argument("--wide-seeds", type=int, nargs="*", default=list(WIDE_SEEDS),
                        help="seeds of bench/unseen_wide.py's tables (none: skip the wider "
                        "comparison)")  # fmt: skip
    parser.add_argument("--out", type=Path)
    parser.add_argument("--acro-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.acro_worker:
        acro_worker()
        return 0
    result = measure(args.patients, args.seed, birth_years=tuple(args.birth_years),
                     acro=not args.no_acro)  # fmt: skip
    r, c = result["ratios"], result["counts"]
    print(f"patients {args.patients:,}: {c['safe_outputs']} safe outputs, {c['leaks']} leaks "
          f"({result['seconds']} s)", file=sys.stderr)  # fmt: skip
    print(
        f"  false positives on ACRO-passing text: {c['false_positive_blocks']}/"
        f"{c['acro_pass_text_outputs']} = {r['text_false_positive_rate']}",
        file=sys.stderr,
    )
    print(
        f"  agreement with ACRO (displayed aggregates): {c['objects_agreeing']}/"
        f"{c['objects_compared_with_acro']} = {r['acro_agreement']}",
        file=sys.stderr,
    )
    print(
        f"  leaks stopped: {c['leaks_stopped']}/{c['leaks']} = {r['leak_block_rate']}",
        file=sys.stderr,
    )
    for key in ("false_positives", "disagreements", "leaks_not_stopped"):
        for line in result[key]:
            print(f"  {key}: {line}", file=sys.stderr)
    if args.wide_seeds:
        wide = measure_wide(tuple(args.wide_seeds), acro=not args.no_acro)
        # (its per-output rows stay out of the kept JSON: 768 of them; its ratios are kept
        # once, in `ratios`)
        result["wide"] = {k: v for k, v in wide.items() if k not in ("rows", "ratios")}
        result["ratios"].update(wide["ratios"])
        w, wc = wide["ratios"], wide["counts"]
        print(f"  wider check ({len(args.wide_seeds)} unseen tables, {wc['outputs']} outputs, "
              f"{wide['seconds']} s): agreement with ACRO {wc['agreeing']}/"
              f"{wc['compared_with_acro']} = {w['acro_agreement_wide']}, misses "
              f"{wc['misses']}/{wc['acro_flags']} = {w['acro_miss_rate_wide']}, false blocks "
              f"{wc['false_blocks']}/{wc['acro_passes']} ({wc['false_blocks_by_design']} by "
              f"design), ACRO-flagged cells shown {wc['acro_flagged_cells_shown']}/"
              f"{wc['acro_flagged_cells_compared']}", file=sys.stderr)  # fmt: skip
        for key in ("misses", "false_blocks", "cell_misses", "errors"):
            for line in wide[key]:
                print(f"  wide {key}: {line}", file=sys.stderr)
    doc = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.write_text(doc + "\n")
    print(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
