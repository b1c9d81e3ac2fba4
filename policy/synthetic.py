"""A synthetic hospital: deterministic patients, admissions and lab results to develop against.

`write_demo_hospital(out, patients=N, seed=S)` writes Parquet and CSV tables and a matching
`policy.yaml`. Everything is synthetic — names, postcodes and phone numbers come from pools drawn
with Faker (seeded), every other value from a seeded numpy Generator — and the same seed always
gives the same bytes. Rows are generated in vectorised chunks (a million patients take seconds,
not the hours per-row Faker calls would), each chunk with its own generator spawned from the
seed so the result does not depend on anything but the seed and the chunk size.

Clinical shape: ages skewed older, wards that depend on age and sex (maternity, paediatrics,
elderly care), ICD-10 diagnoses per ward, log-normal lengths of stay, costs that grow with the
stay, in-hospital mortality rising with age and higher in intensive care, HIV prevalence around
0.3 %.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

PATIENT_COLUMNS = (
    "mrn",
    "name",
    "dob",
    "postcode",
    "phone",
    "sex",
    "age",
    "ward",
    "diagnosis",
    "los_days",
    "cost",
    "hiv",
    "died",
)
CHUNK = 50_000
REFERENCE_DATE = dt.date(2024, 12, 31)  # ages are as of this date

# Faker locales for names, weighted towards en_GB, for a plausibly diverse UK population.
_NAME_LOCALES = {
    "en_GB": 0.62,
    "en_IE": 0.08,
    "en_IN": 0.10,
    "pl_PL": 0.06,
    "it_IT": 0.04,
    "fr_FR": 0.03,
    "es_ES": 0.03,
    "de_DE": 0.04,
}


@dataclass(frozen=True)
class Ward:
    name: str
    weight: float
    daily_cost: float
    los_median: float  # days
    mortality: float  # log-odds offset
    diagnoses: tuple[tuple[str, float], ...]  # ICD-10 code, weight


WARDS: tuple[Ward, ...] = (
    Ward(
        "Cardiology",
        0.13,
        850.0,
        4.0,
        -0.2,
        (("I21.9", 3), ("I50.9", 3), ("I48.9", 3), ("I20.0", 2), ("I10", 1)),
    ),
    Ward(
        "Respiratory",
        0.12,
        700.0,
        5.0,
        0.0,
        (("J18.9", 4), ("J44.1", 3), ("J45.9", 1), ("J96.0", 1), ("U07.1", 1)),
    ),
    Ward(
        "Oncology",
        0.08,
        1100.0,
        6.0,
        0.6,
        (("C34.9", 3), ("C50.9", 3), ("C18.9", 2), ("C61", 2), ("C91.0", 1)),
    ),
    Ward(
        "Orthopaedics",
        0.10,
        750.0,
        5.0,
        -0.8,
        (("S72.0", 4), ("M16.9", 2), ("M17.9", 2), ("S82.2", 1), ("S42.2", 1)),
    ),
    Ward(
        "General Medicine",
        0.20,
        600.0,
        4.0,
        0.0,
        (("E11.9", 2), ("N39.0", 3), ("A41.9", 2), ("K92.2", 1), ("E86", 2), ("R55", 1)),
    ),
    Ward(
        "Surgery",
        0.13,
        900.0,
        3.0,
        -0.9,
        (("K35.8", 3), ("K80.2", 3), ("K40.9", 2), ("K56.6", 1), ("K57.3", 1)),
    ),
    Ward("Maternity", 0.07, 650.0, 2.0, -4.0, (("O80", 5), ("O82", 3), ("O24.4", 1), ("O14.1", 1))),
    Ward(
        "Paediatrics",
        0.06,
        700.0,
        2.0,
        -2.5,
        (("J21.9", 3), ("A09", 3), ("J06.9", 2), ("R56.0", 1)),
    ),
    Ward(
        "Elderly Care",
        0.08,
        550.0,
        8.0,
        0.4,
        (("F03", 3), ("R29.6", 3), ("N17.9", 2), ("J69.0", 1), ("I63.9", 2)),
    ),
    Ward(
        "Intensive Care",
        0.03,
        2500.0,
        4.0,
        1.6,
        (("A41.9", 3), ("J96.0", 3), ("I46.9", 1), ("T51.0", 1), ("S06.9", 1)),
    ),
)
_WARD_INDEX = {w.name: i for i, w in enumerate(WARDS)}

# Lab tests: name, unit, sampler(rng, n) -> values.
_LABS: tuple[
    tuple[str, str, Callable[[np.random.Generator, int], npt.NDArray[np.float64]]], ...
] = (
    ("haemoglobin", "g/L", lambda r, n: np.round(r.normal(130, 18, n), 0)),
    ("creatinine", "umol/L", lambda r, n: np.round(r.lognormal(np.log(85), 0.35, n), 0)),
    ("crp", "mg/L", lambda r, n: np.round(r.lognormal(np.log(8), 1.2, n), 1)),
    ("sodium", "mmol/L", lambda r, n: np.round(r.normal(139, 3.5, n), 0)),
    ("potassium", "mmol/L", lambda r, n: np.round(r.normal(4.3, 0.5, n), 1)),
    ("wbc", "10^9/L", lambda r, n: np.round(r.lognormal(np.log(7.5), 0.4, n), 1)),
)


@dataclass(frozen=True)
class Pools:
    """Identifier building blocks drawn once with Faker, combined per row with numpy."""

    first_female: npt.NDArray[np.str_]
    first_male: npt.NDArray[np.str_]
    last: npt.NDArray[np.str_]
    postcodes: npt.NDArray[np.str_]


def make_pools(seed: int, *, postcodes: int = 60_000) -> Pools:
    """Draw name and postcode pools with Faker (seeded; a few seconds at most)."""
    from faker import Faker

    female: dict[str, None] = {}
    male: dict[str, None] = {}
    last: dict[str, None] = {}
    for i, (locale, weight) in enumerate(_NAME_LOCALES.items()):
        fake = Faker(locale)
        fake.seed_instance(seed * 1000 + i)
        draws = int(4000 * weight) + 200
        for _ in range(draws):
            female[fake.first_name_female()] = None
            male[fake.first_name_male()] = None
            last[fake.last_name()] = None
    uk = Faker("en_GB")
    uk.seed_instance(seed)
    codes: dict[str, None] = {}
    while len(codes) < postcodes:
        codes[uk.postcode()] = None
    return Pools(
        np.array(list(female)), np.array(list(male)), np.array(list(last)), np.array(list(codes))
    )


def _choice(rng: np.random.Generator, weights: list[float], n: int) -> npt.NDArray[np.int64]:
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(p), size=n, p=p / p.sum())


def _mrns(index: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.str_]:
    """Unique 8-digit record numbers: an affine permutation of 0..10**8-1 keyed by the seed."""
    modulus = 100_000_000
    rng = np.random.default_rng([seed, 0x4D524E])
    # Multiplier coprime with 10**8 (odd, not a multiple of 5) so the map is a bijection.
    mult = int(rng.integers(10_000_000, 99_999_999)) | 1
    if mult % 5 == 0:
        mult += 2
    offset = int(rng.integers(0, modulus))
    numbers = (index.astype(np.int64) * mult + offset) % modulus
    return np.char.add("MRN", np.char.zfill(numbers.astype(str), 8))


def _phones(rng: np.random.Generator, n: int) -> npt.NDArray[np.str_]:
    """UK-shaped numbers: mobiles `07xxx xxxxxx`, London `020 xxxx xxxx`, others `01xxx`."""
    kind = _choice(rng, [0.55, 0.15, 0.30], n)
    a = rng.integers(0, 10**9, n)
    out = np.empty(n, dtype=object)
    mob = kind == 0
    m = a[mob]
    out[mob] = [f"07{x // 10**6 % 1000:03d} {x % 10**6:06d}" for x in m.tolist()]
    lon = kind == 1
    out[lon] = [f"020 {7000 + x // 10**4 % 3000:04d} {x % 10**4:04d}" for x in a[lon].tolist()]
    geo = kind == 2
    out[geo] = [
        f"01{x // 10**7 % 100:02d}{x // 10**6 % 10} {x // 10**3 % 1000:03d} {x % 1000:03d}"
        for x in a[geo].tolist()
    ]
    return out.astype(str)


def patients_chunk(start: int, n: int, seed: int, pools: Pools) -> dict[str, npt.NDArray[Any]]:
    """Patients `start` .. `start + n - 1` as column arrays."""
    rng = np.random.default_rng([seed, start])
    index = np.arange(start, start + n, dtype=np.int64)
    sex_f = rng.random(n) < 0.51
    sex = np.where(sex_f, "F", "M")
    # Ages skewed older (hospital in-patients), some children and newborns.
    age = np.round(rng.beta(2.6, 1.5, n) * 100).astype(np.int64)
    child = rng.random(n) < 0.07
    age[child] = rng.integers(0, 16, int(child.sum()))
    age = np.clip(age, 0, 104)
    days = (age * 365.25 + rng.integers(0, 365, n)).astype(np.int64)
    ref = np.datetime64(REFERENCE_DATE.isoformat())
    dob = (ref - days.astype("timedelta64[D]")).astype(str)

    first = np.where(
        sex_f,
        pools.first_female[rng.integers(0, len(pools.first_female), n)],
        pools.first_male[rng.integers(0, len(pools.first_male), n)],
    )
    last = pools.last[rng.integers(0, len(pools.last), n)]
    name = np.char.add(np.char.add(first, " "), last)
    postcode = pools.postcodes[rng.integers(0, len(pools.postcodes), n)]

    ward = _wards(rng, age, sex_f)
    diagnosis = np.empty(n, dtype=object)
    los = np.empty(n, dtype=np.int64)
    cost = np.empty(n, dtype=np.float64)
    logit = -7.6 + 0.06 * age
    for wi, w in enumerate(WARDS):
        sel = np.flatnonzero(ward == wi)
        if not len(sel):
            continue
        codes = [c for c, _ in w.diagnoses]
        diagnosis[sel] = np.array(codes, dtype=object)[
            _choice(rng, [wt for _, wt in w.diagnoses], len(sel))
        ]
        stay = rng.lognormal(np.log(w.los_median), 0.75, len(sel)) * (1 + age[sel] / 200)
        los[sel] = np.maximum(np.ceil(stay).astype(np.int64) - 1, 0)
        cost[sel] = (w.daily_cost * (los[sel] + 1) + rng.normal(1200, 300, len(sel))) * (
            rng.lognormal(0.0, 0.15, len(sel))
        )
        logit[sel] += w.mortality
    cost = np.maximum(cost, 150.0).round(2)
    logit += 0.04 * np.minimum(los, 60)
    died = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    hiv = (rng.random(n) < np.where((age >= 18) & (age <= 70), 0.004, 0.001)).astype(np.int64)
    return {
        "mrn": _mrns(index, seed),
        "name": name,
        "dob": dob,
        "postcode": postcode,
        "phone": _phones(rng, n),
        "sex": sex,
        "age": age,
        "ward": np.array([w.name for w in WARDS], dtype=object)[ward],
        "diagnosis": diagnosis,
        "los_days": los,
        "cost": cost,
        "hiv": hiv,
        "died": died,
    }


def _wards(
    rng: np.random.Generator, age: npt.NDArray[np.int64], female: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    n = len(age)
    adult_weights = [0.0 if w.name in ("Maternity", "Paediatrics") else w.weight for w in WARDS]
    ward = _choice(rng, adult_weights, n)
    elderly = np.flatnonzero((age >= 80) & (rng.random(n) < 0.35))
    ward[elderly] = _WARD_INDEX["Elderly Care"]
    young = (age < 65) & (ward == _WARD_INDEX["Elderly Care"])
    ward[young] = _WARD_INDEX["General Medicine"]
    maternity = np.flatnonzero(female & (age >= 16) & (age <= 45) & (rng.random(n) < 0.25))
    ward[maternity] = _WARD_INDEX["Maternity"]
    ward[age < 16] = _WARD_INDEX["Paediatrics"]
    return ward


def admissions_chunk(
    patients: dict[str, npt.NDArray[Any]], start: int, seed: int
) -> dict[str, npt.NDArray[Any]]:
    """Admissions of the given patients: the index stay (as in `patients`) plus earlier ones."""
    n = len(patients["mrn"])
    rng = np.random.default_rng([seed, start, 1])
    extra = rng.poisson(0.5, n)
    count = 1 + extra
    owner = np.repeat(np.arange(n), count)
    m = len(owner)
    is_index = np.zeros(m, dtype=np.bool_)
    firsts = np.zeros(n, dtype=np.int64)
    np.cumsum(count[:-1], out=firsts[1:])
    is_index[firsts] = True
    # Admission ids: unique over the whole hospital (patient index * 16 + stay number).
    stay = np.arange(m) - np.repeat(firsts, count)
    ids = 1_000_000_000 + (start + owner) * 16 + stay
    admission_id = np.char.add("ADM", ids.astype(str))

    ward_names = np.array([w.name for w in WARDS], dtype=object)
    ward = np.where(
        is_index, patients["ward"][owner], ward_names[_choice(rng, [w.weight for w in WARDS], m)]
    )
    los = np.where(
        is_index,
        patients["los_days"][owner],
        np.maximum(np.ceil(rng.lognormal(np.log(3.5), 0.8, m)).astype(np.int64) - 1, 0),
    )
    diagnosis = patients["diagnosis"][owner].copy()
    for w in WARDS:
        sel = np.flatnonzero(~is_index & (ward == w.name))
        if len(sel):
            codes = np.array([c for c, _ in w.diagnoses], dtype=object)
            diagnosis[sel] = codes[_choice(rng, [wt for _, wt in w.diagnoses], len(sel))]
    # The index stay ends in the last year; earlier stays up to five years before it.
    end_ref = np.datetime64(REFERENCE_DATE.isoformat())
    back = np.where(is_index, rng.integers(0, 365, m), rng.integers(365, 5 * 365, m))
    discharged = end_ref - back.astype("timedelta64[D]")
    admitted = discharged - los.astype("timedelta64[D]")
    dob = patients["dob"][owner].astype("datetime64[D]")
    admitted = np.maximum(admitted, dob)
    discharged = np.maximum(discharged, admitted)
    return {
        "admission_id": admission_id,
        "mrn": patients["mrn"][owner],
        "admitted": admitted.astype(str),
        "discharged": discharged.astype(str),
        "ward": ward,
        "diagnosis": diagnosis,
        "los_days": (discharged - admitted).astype(np.int64),
        "emergency": (rng.random(m) < 0.62).astype(np.int64),
    }


def labs_chunk(
    admissions: dict[str, npt.NDArray[Any]], start: int, seed: int
) -> dict[str, npt.NDArray[Any]]:
    """Two to four lab results per admission, taken during the stay."""
    rng = np.random.default_rng([seed, start, 2])
    n = len(admissions["admission_id"])
    count = rng.integers(2, 5, n)
    owner = np.repeat(np.arange(n), count)
    m = len(owner)
    test = rng.integers(0, len(_LABS), m)
    value = np.empty(m, dtype=np.float64)
    unit = np.empty(m, dtype=object)
    for ti, (_, u, sample) in enumerate(_LABS):
        sel = np.flatnonzero(test == ti)
        value[sel] = sample(rng, len(sel))
        unit[sel] = u
    admitted = admissions["admitted"][owner].astype("datetime64[m]")
    los = admissions["los_days"][owner]
    minutes = (rng.random(m) * (los + 1) * 24 * 60).astype(np.int64)
    taken = admitted + minutes.astype("timedelta64[m]")
    return {
        "admission_id": admissions["admission_id"][owner],
        "mrn": admissions["mrn"][owner],
        "test": np.array([t for t, _, _ in _LABS], dtype=object)[test],
        "value": value,
        "unit": unit,
        "taken_at": np.datetime_as_string(taken, unit="m"),
    }


def _table(columns: dict[str, npt.NDArray[Any]]) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        if values.dtype.kind in "OU":
            arrays[name] = pa.array(values.astype(object), type=pa.string())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


POLICY_TEMPLATE = """\
# Policy for the synthetic demo hospital written by `bedside demo-data`.
# Reference: docs/custodian/policy.md
version: bedside/v1
id: {policy_id}
datasets:
  patients:
    path: data/patients.{ext}
    record_id: mrn
    identifiers: [mrn, name, dob, postcode, phone]
  admissions:
    path: data/admissions.{ext}
    record_id: mrn
    identifiers: [admission_id, mrn]
  lab_results:
    path: data/lab_results.{ext}
    record_id: mrn
    identifiers: [admission_id, mrn]
disclosure:
  min_cell_count: 10
  round_counts_to: 5
  dominance: {{n: 2, k: 0.9}}
  p_ratio: 0.1
  zeros_disclosive: true
  extremes: suppress
outputs:
  mime_allow: [text/plain, text/html, image/png, application/json]
  max_output_bytes: 1000000
  session_egress_bytes: 50000000
errors: scrub
shell: deny
"""


def write_demo_hospital(
    out: str | Path,
    *,
    patients: int,
    seed: int = 0,
    formats: tuple[str, ...] = ("parquet", "csv"),
    progress: bool = True,
    policy_id: str = "demo-hospital",
) -> dict[str, Path]:
    """Write the synthetic hospital to `out`; return the paths written by name."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from tqdm import tqdm

    if patients < 1:
        raise ValueError("patients must be at least 1")
    if not formats or any(f not in ("parquet", "csv") for f in formats):
        raise ValueError("formats must be a non-empty subset of ('parquet', 'csv')")
    root = Path(out)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    # About 15 patients per postcode, as in a real catchment area.
    pools = make_pools(seed, postcodes=min(60_000, max(1_000, patients // 15)))
    writers: dict[tuple[str, str], Any] = {}
    paths: dict[str, Path] = {}

    def write(name: str, table: pa.Table) -> None:
        for fmt in formats:
            key = (name, fmt)
            path = data / f"{name}.{fmt}"
            if key not in writers:
                paths[f"{name}.{fmt}"] = path
                if fmt == "parquet":
                    writers[key] = pq.ParquetWriter(path, table.schema, compression="zstd")
                else:
                    writers[key] = pacsv.CSVWriter(path, table.schema)
            writers[key].write_table(table)

    try:
        with tqdm(
            total=patients,
            unit="patient",
            unit_scale=True,
            disable=not progress,
            desc="demo-data",
        ) as bar:
            for start in range(0, patients, CHUNK):
                n = min(CHUNK, patients - start)
                pat = patients_chunk(start, n, seed, pools)
                adm = admissions_chunk(pat, start, seed)
                lab = labs_chunk(adm, start, seed)
                write("patients", _table(pat))
                write("admissions", _table(adm))
                write("lab_results", _table(lab))
                bar.update(n)
    finally:
        for w in writers.values():
            w.close()
    policy = root / "policy.yaml"
    text = POLICY_TEMPLATE.format(policy_id=policy_id, ext=formats[0])
    policy.write_text(text, encoding="utf-8")
    paths["policy"] = policy
    return paths
