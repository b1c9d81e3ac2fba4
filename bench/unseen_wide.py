"""A wider check of the guard against ACRO: tables, names and aggregate phrasings nobody tuned on.

Each seed writes a different clinical table (`generate`): its name, its column names (German,
French, Spanish, Italian, Dutch and English words in snake_case, CamelCase or with spaces,
and value columns named like identifiers that are not, `record_count`, `patient_total`), the
cardinality and skew of its categorical columns (so small cells and empty combinations occur),
a lone unit in a group, a value column with zeros, a 0/1 column that is 100% in one group and
a sum with one dominant contributor (ACRO's N-K and p-ratio rules). Names, dates of birth and
categories come from Faker with the seed; everything else from seeded numpy.

`operations` then writes the aggregates a data scientist writes (`pd.crosstab` with margins,
`normalize`, `values` + `aggfunc`; `pivot_table` with several aggfuncs, two row keys,
`fill_value`; `groupby().agg` with named aggregations; `value_counts(normalize=True)`;
`size().unstack()`; percentages by hand; rounded counts; `describe()`; quantiles), each with
the call of ACRO's own `crosstab` / `pivot_table` that makes the same table (None where ACRO has
no equivalent). `acro_worker` runs in `.venv-acro` (stdlib, numpy, pandas, acro only) and
returns ACRO's verdict and per-cell masks; `bench/bench_guard_utility.py --wide` runs the
aggregates through a real guarded kernel in three phrasings and compares.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Words for table and column names, in several languages and styles. A name is styled per
# seed: snake_case, CamelCase, or words with a space.
TABLE_NAMES = ["aufenthalte", "sejours", "ingresos", "ricoveri", "opnames", "kohorte",
               "encounters_2023", "PatientVisits", "consultas", "verblijven"]  # fmt: skip
CATEGORY_WORDS = [
    ("station", "Station"), ("service", "service hospitalier"), ("servicio", "unidad"),
    ("reparto", "reparto"), ("afdeling", "afdeling"), ("Fachabteilung", "fach abteilung"),
    ("versicherung", "Kasse"), ("mutuelle", "régime"), ("seguro", "aseguradora"),
    ("herkunft", "origine"), ("etnia", "etnia"), ("herkomst", "herkomst"),
    ("Geschlecht", "sexe"), ("sexo", "sesso"), ("geslacht", "gender"),
    ("raucher", "fumeur"), ("fumador", "fumatore"), ("roker", "smoking status"),
    ("Dringlichkeit", "urgence"), ("prioridad", "priorità"), ("urgentie", "triage"),
    ("entlassart", "mode de sortie"), ("destino", "esito"), ("ontslag", "discharge to"),
]  # fmt: skip
VALUE_NAMES = {
    "dominant": [
        "patient_total",
        "Kosten EUR",
        "coût total",
        "importe",
        "costo_totale",
        "kosten",
        "charges",
        "TotalCharge",
    ],
    "zeros": [
        "record_count",
        "Liegetage",
        "jours réa",
        "dias_uci",
        "giorni_ti",
        "ic dagen",
        "icu days",
        "ventDays",
    ],
    "normal": [
        "Hämoglobin",
        "créatinine",
        "glucosa",
        "emoglobina",
        "hemoglobine",
        "crp_mg_l",
        "systolic",
        "BMIwert",
    ],
    "flag": [
        "verstorben",
        "décès",
        "fallecido",
        "deceduto",
        "overleden",
        "readmitted",
        "reingreso",
        "Wiederaufnahme",
    ],
}
ID_NAMES = ["Fallnummer", "n dossier", "num_historia", "cartella", "patientnummer", "PatientId",
            "record_no", "pid"]  # fmt: skip
NAME_NAMES = ["Name", "nom complet", "nombre_paciente", "nome", "naam", "fullName", "patient",
              "Patientenname"]  # fmt: skip
DOB_NAMES = ["Geburtsdatum", "date naissance", "fecha_nac", "data_nascita", "geboortedatum",
             "DateOfBirth", "dob", "geb_datum"]  # fmt: skip
LOCALES = ["de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_GB"]
ALIAS = "df"
CONST = "__all__"  # the one column of a one-way table, for ACRO's crosstab


def _styled(word: str, style: int) -> str:
    parts = word.replace("_", " ").split()
    if style == 0:
        return "_".join(p.lower() for p in parts)
    if style == 1:
        return "".join(p[:1].upper() + p[1:] for p in parts)
    return " ".join(parts)


@dataclass(frozen=True)
class Schema:
    """What `operations` needs to know about a generated table."""

    table: str
    record_id: str
    cats: tuple[str, ...]  # categorical columns, the first the widest
    dominant: str  # a sum with one dominant contributor
    zeros: str  # whole numbers, many zeros
    normal: str  # a roughly normal measurement
    flag: str  # 0/1, 100% in one group


def generate(seed: int, n: int | None = None) -> dict[str, Any]:
    """One unseen table: {"frame", "schema", "policy", "locale"} (deterministic in `seed`)."""
    from faker import Faker

    rng = np.random.default_rng([seed, 0x57494445])
    locale = LOCALES[seed % len(LOCALES)]
    fake = Faker(locale)
    fake.seed_instance(seed)
    # Even seeds: a larger hospital with evenly spread categories (tables ACRO mostly passes);
    # odd seeds: skewed categories, a lone unit, a dominant contributor, a 100% group.
    clean = seed % 2 == 0
    if n is None:
        n = int(rng.integers(3000, 8000)) if clean else int(rng.integers(400, 2500))
    pick = lambda pool: pool[int(rng.integers(0, len(pool)))]  # noqa: E731
    table = pick(TABLE_NAMES)
    words = list(CATEGORY_WORDS)
    rng.shuffle(words)
    n_cats = int(rng.integers(3, 5))
    cats = []
    for i in range(n_cats):
        word = words[i][int(rng.integers(0, 2))]
        cats.append(_styled(word, int(rng.integers(0, 3))))
    rid, name_col, dob_col = pick(ID_NAMES), pick(NAME_NAMES), pick(DOB_NAMES)
    frame: dict[str, Any] = {}
    prefix = pick(["", "F", "P-", "HC"])
    ids = rng.permutation(np.arange(10_000_000, 10_000_000 + n * 7, 7))[:n]
    frame[rid] = [f"{prefix}{x}" for x in ids]
    frame[name_col] = [fake.name() for _ in range(n)]
    frame[dob_col] = [fake.date_of_birth(minimum_age=0, maximum_age=99).isoformat()
                      for _ in range(n)]  # fmt: skip
    for i, col in enumerate(cats):
        # cardinality 2..14 for the first, 2..6 for the others; skewed (Dirichlet, alpha < 1)
        k = int(rng.integers(5, 15)) if i == 0 else int(rng.integers(2, 7))
        if clean:
            k = min(k, 6)
        labels = list(dict.fromkeys(fake.unique.word().capitalize() for _ in range(k)))
        alpha = 20.0 if clean else (0.6 if i == 0 else 1.5)
        p = rng.dirichlet(np.full(len(labels), alpha))
        p = np.maximum(p, 0.004)
        values = rng.choice(labels, n, p=p / p.sum()).astype(object)
        if i == 0 and not clean:
            values[int(rng.integers(0, n))] = "Solo"  # a lone unit in a group of its own
        frame[col] = values
    g = np.asarray(frame[cats[0]])
    top = pd.Series(g).value_counts().index[0]
    dominant = np.round(rng.lognormal(7, 0.6, n), 2)
    big = int(np.flatnonzero(g == top)[0])
    if not clean:
        dominant[big] = round(float(dominant[g == top].sum()) * 20, 2)  # one record dominates
    zeros = np.where(rng.random(n) < 0.55, 0, rng.poisson(3, n))
    normal = np.round(rng.normal(100, 15, n), 1)
    flag = (rng.random(n) < 0.15).astype(int)
    second = pd.Series(g).value_counts().index[1]
    if not clean:
        flag[g == second] = 1  # everyone in one group has it (class disclosure)
    vnames = {k: _styled(pick(v), int(rng.integers(0, 3))) for k, v in VALUE_NAMES.items()}
    # distinct names (two styles of one word could collide with a category)
    for k in vnames:
        while vnames[k] in frame or vnames[k] in cats:
            vnames[k] += "_x"
    frame[vnames["dominant"]] = dominant
    frame[vnames["zeros"]] = zeros
    frame[vnames["normal"]] = normal
    frame[vnames["flag"]] = flag
    df = pd.DataFrame(frame)
    schema = Schema(table, rid, tuple(cats), vnames["dominant"], vnames["zeros"],
                    vnames["normal"], vnames["flag"])  # fmt: skip
    ids_yaml = ", ".join(json.dumps(c) for c in (rid, name_col, dob_col))
    policy = (
        "version: bedside/v1\n"
        f"id: unseen-wide-{seed}\n"
        "datasets:\n"
        f"  {table}:\n"
        f"    path: {table}.parquet\n"
        f"    record_id: {json.dumps(rid)}\n"
        f"    identifiers: [{ids_yaml}]\n"
    )
    return {"frame": df, "schema": schema, "policy": policy, "locale": locale, "seed": seed}


def write(out: Path, gen: dict[str, Any]) -> Path:
    """The table as parquet (for the kernel) and CSV (for ACRO), and the policy; its path."""
    s: Schema = gen["schema"]
    gen["frame"].to_parquet(out / f"{s.table}.parquet", index=False)
    gen["frame"].to_csv(out / f"{s.table}.acro.csv", index=False)
    policy = out / "policy.yaml"
    policy.write_text(gen["policy"])
    return policy


# ---------------------------------------------------------------------------- the operations


@dataclass(frozen=True)
class Operation:
    """An aggregate as written in the notebook (`code`, over `df`) and ACRO's call for the same
    table (`acro`: {"fn": "crosstab" | "pivot_table", ...} or None: no ACRO equivalent)."""

    name: str
    code: str
    acro: dict[str, Any] | None


def operations(s: Schema) -> list[Operation]:
    a, b = s.cats[0], s.cats[1]
    c = s.cats[2]
    d, z, v, f = s.dominant, s.zeros, s.normal, s.flag
    r = repr
    col = lambda x: f"{ALIAS}[{x!r}]"  # noqa: E731
    ct = lambda idx, cols, **kw: {"fn": "crosstab", "index": idx, "columns": cols, **kw}  # noqa: E731
    pv = lambda idx, cols, val, agg, **kw: {  # noqa: E731
        "fn": "pivot_table",
        "index": idx,
        "columns": cols,
        "values": val,
        "aggfunc": agg,
        **kw,
    }
    ops = [
        Operation("crosstab", f"pd.crosstab({col(a)}, {col(b)})", ct([a], [b])),
        Operation(
            "crosstab_margins",
            f"pd.crosstab({col(b)}, {col(c)}, margins=True)",
            ct([b], [c], margins=True),
        ),
        Operation(
            "crosstab_norm_index",
            f"pd.crosstab({col(a)}, {col(b)}, normalize='index')",
            ct([a], [b], normalize="index"),
        ),
        Operation(
            "crosstab_norm_all",
            f"pd.crosstab({col(b)}, {col(c)}, normalize='all')",
            ct([b], [c], normalize="all"),
        ),
    ]
    for agg in ("mean", "sum", "std", "median", "min", "max", "count"):
        val = d if agg in ("sum", "mean") else v
        ops.append(
            Operation(
                f"crosstab_{agg}",
                f"pd.crosstab({col(b)}, {col(c)}, values={col(val)}, aggfunc={agg!r})",
                ct([b], [c], values=val, aggfunc=agg),
            )
        )
    ops += [
        Operation(
            "pivot_mean_fill",
            f"{ALIAS}.pivot_table(index={r(b)}, columns={r(c)}, values={r(v)}, "
            "aggfunc='mean', fill_value=0)",
            pv([b], [c], v, "mean", fill_value=0),
        ),
        Operation(
            "pivot_sum_dominant",
            f"{ALIAS}.pivot_table(index={r(a)}, values={r(d)}, aggfunc='sum')",
            pv([a], [], d, "sum"),
        ),
        Operation(
            "pivot_two_rows",
            f"{ALIAS}.pivot_table(index=[{r(b)}, {r(c)}], values={r(v)}, aggfunc='mean')",
            pv([b, c], [], v, "mean"),
        ),
        Operation(
            "pivot_aggfuncs",
            f"{ALIAS}.pivot_table(index={r(b)}, values={r(z)}, "
            "aggfunc=['mean', 'median', 'count'])",
            pv([b], [], z, ["mean", "median", "count"]),
        ),
        Operation(
            "groupby_named_agg",
            f"{ALIAS}.groupby({r(a)}).agg(n=({r(v)}, 'count'), "
            f"mittel=({r(v)}, 'mean'), spread=({r(v)}, 'std'))",
            pv([a], [], v, ["count", "mean", "std"]),
        ),
        Operation(
            "groupby_sum_dominant", f"{ALIAS}.groupby({r(b)})[{r(d)}].sum()", pv([b], [], d, "sum")
        ),
        Operation(
            "groupby_flag_rate", f"{ALIAS}.groupby({r(a)})[{r(f)}].mean()", pv([a], [], f, "mean")
        ),
        Operation(
            "groupby_zeros_mean", f"{ALIAS}.groupby({r(c)})[{r(z)}].mean()", pv([c], [], z, "mean")
        ),
        Operation(
            "value_counts_norm",
            f"{col(a)}.value_counts(normalize=True)",
            ct([a], [CONST], normalize="all"),
        ),
        Operation("value_counts", f"{col(b)}.value_counts()", ct([b], [CONST])),
        Operation(
            "size_unstack", f"{ALIAS}.groupby([{r(a)}, {r(c)}]).size().unstack()", ct([a], [c])
        ),
        Operation(
            "size_unstack_fill",
            f"{ALIAS}.groupby([{r(b)}, {r(c)}]).size().unstack(fill_value=0)",
            ct([b], [c]),
        ),
        Operation(
            "percent_by_hand",
            f"({ALIAS}.groupby({r(a)}).size() / len({ALIAS}) * 100).round(1)",
            ct([a], [CONST], normalize="all"),
        ),
        Operation("rounded_counts", f"{col(b)}.value_counts().round(-1)", ct([b], [CONST])),
        Operation("crosstab_T", f"pd.crosstab({col(b)}, {col(c)}).T", ct([c], [b])),
        Operation(
            "size_reset_index",
            f"{ALIAS}.groupby([{r(a)}, {r(c)}]).size().reset_index(name='n')",
            ct([a], [c]),
        ),
        Operation(
            "agg_list_T",
            f"{ALIAS}.groupby({r(b)})[{r(v)}].agg(['mean', 'count']).T",
            pv([b], [], v, ["mean", "count"]),
        ),
        Operation("describe", f"{col(v)}.describe()", None),
        Operation("group_describe", f"{ALIAS}.groupby({r(b)})[{r(v)}].describe()", None),
        Operation("quantiles", f"{col(v)}.quantile([0.25, 0.5, 0.75])", None),
        Operation(
            "group_quantiles",
            f"{ALIAS}.groupby({r(a)})[{r(v)}].quantile(0.5)",
            pv([a], [], v, "median"),
        ),
    ]
    return ops


PHRASINGS = {
    "display": "display(X)",
    "print": "print(X)",
    "to_csv": "print(X.to_csv())",
}


# The cells the guard suppresses in `X` as displayed, by their labels (run in the kernel after
# the display: the guard's own verdict, read through the kernel object, for the per-cell
# comparison only).
MASK_CODE = """\
import json as _json
_d, _t = get_ipython().kernel.guard.judge_object(X)
_f = _t.to_frame() if isinstance(_t, pd.Series) else _t
_all = _d is not None and _d.blocked
print(_json.dumps({"blocked": bool(_all), "ncols": int(_f.shape[1]),
    "cells": [[str(r), str(c)] for r in _f.index for c in _f.columns
              if _all or str(_f.at[r, c]) == "suppressed"],
    "shown": [[str(r), str(c)] for r in _f.index for c in _f.columns]}))
"""


def cell_misses(acro: dict[str, Any] | None, mask: dict[str, Any] | None) -> dict[str, int]:
    """ACRO's flagged cells against the guard's suppressed ones, matched by labels (by row
    label alone when either table has one column: a Series against ACRO's one-column table)."""
    if not acro or "labelled" not in acro or not mask:
        return {}
    one = mask["ncols"] == 1 or (acro.get("shape") or [0, 0])[1] == 1

    def key(cell: list[str]) -> tuple[str, ...]:
        return (cell[0],) if one else (cell[0], cell[1])

    shown = {key(c) for c in mask["shown"]}
    hidden = {key(c) for c in mask["cells"]}
    flagged = {key(c) for c in acro["labelled"]} & shown
    return {
        "acro_cells": len(flagged),
        "missed": len(flagged - hidden),
        "stricter": len(hidden - flagged),
    }


# ---------------------------------------------------------------------------- ACRO

# ACRO's cell checks under its default rules: threshold, zeros, N-K, p-ratio. Its degrees-of-
# freedom check of a standard deviation (n - 1 >= 10) lists every cell whatever its outcome
# (ACRO 1.0.2 returns the table of degrees of freedom as the "mask"), so it counts only when
# ACRO's status for the table is "fail".
ACRO_FLAGS = ("MinimumThresholdCheck", "PresenceOfZeroCheck", "NKCheck", "PPercentCheck")
DOF = "MinimumDoFCheck"


def acro_worker() -> None:
    """In `.venv-acro`: read {"csv", "ops": [acro spec | None]} on stdin; print per operation
    {"flags": {check: n cells}, "status", "cells": {check: [[row, col], ...]}} or null."""
    import logging

    logging.disable(logging.CRITICAL)
    from acro import ACRO

    job = json.load(sys.stdin)
    frame = pd.read_csv(job["csv"], keep_default_na=False, na_values=[""])
    frame[CONST] = "all"
    acro = ACRO(suppress=False)
    out: list[Any] = []
    for spec in job["ops"]:
        if spec is None:
            out.append(None)
            continue
        raw = None
        if spec.get("normalize"):
            # ACRO 1.0.2 applies its threshold to the proportions of a normalised crosstab
            # (every cell is below 10): its verdict on that table is kept as `raw`, and the
            # comparison uses its verdict on the counts behind the proportions.
            raw = _acro_call(acro, frame, spec)
            spec = {k: v for k, v in spec.items() if k != "normalize"}
        result = _acro_call(acro, frame, spec)
        if raw is not None and result is not None:
            result["raw_normalized"] = raw
        out.append(result)
    json.dump(out, sys.stdout, default=str)


def _acro_call(acro: Any, frame: pd.DataFrame, spec: dict[str, Any]) -> dict[str, Any]:
    """ACRO's crosstab / pivot_table for `spec`: its status and flagged cells per check."""
    try:
        if spec["fn"] == "crosstab":
            kw = {k: spec[k] for k in ("margins", "normalize", "aggfunc") if k in spec}
            if "values" in spec:
                kw["values"] = frame[spec["values"]]
            idx = [frame[k] for k in spec["index"]]
            cols = [frame[k] for k in spec["columns"]]
            acro.crosstab(idx if len(idx) > 1 else idx[0],
                          cols if len(cols) > 1 else cols[0], **kw)  # fmt: skip
        else:
            kw = {"fill_value": spec["fill_value"]} if "fill_value" in spec else {}
            acro.pivot_table(frame, values=spec["values"], index=spec["index"],
                             columns=spec["columns"] or None, aggfunc=spec["aggfunc"],
                             **kw)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - reported per operation
        return {"error": f"{type(exc).__name__}: {exc}"}
    record = list(acro.results.results.values())[-1]
    cells = {k: v for k, v in record.sdc.get("cells", {}).items() if v}
    # The flagged cells by their labels (row, column), from ACRO's per-cell outcome table (the
    # positions in `cells` index ACRO's table of counts, which can differ from its output).
    table = record.outcome if isinstance(record.outcome, pd.DataFrame) else None
    labelled: list[list[str]] = []
    if table is not None:
        for r in table.index:
            for c in table.columns:
                if any(check in str(table.at[r, c]) for check in ACRO_FLAGS):
                    labelled.append([str(r), str(c)])
    return {"flags": {k: len(v) for k, v in cells.items()}, "status": record.status,
            "cells": cells, "labelled": labelled,
            "shape": None if table is None else list(table.shape)}  # fmt: skip


def acro_flags(result: dict[str, Any] | None) -> bool | None:
    """Does ACRO flag any cell of the table (threshold, zeros, N-K, p-ratio)? None: no verdict."""
    if result is None or "error" in result:
        return None
    if any(result["flags"].get(k, 0) for k in ACRO_FLAGS):
        return True
    return bool(result["flags"].get(DOF)) and result["status"] == "fail"


def acro_verdicts(acro_py: Path, csv: Path, ops: list[Operation]) -> list[dict[str, Any] | None]:
    import subprocess

    job = {"csv": str(csv), "ops": [o.acro for o in ops]}
    proc = subprocess.run([str(acro_py), __file__, "--acro-worker"], input=json.dumps(job),
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"ACRO failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


if __name__ == "__main__" and "--acro-worker" in sys.argv:
    acro_worker()
