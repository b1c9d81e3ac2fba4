"""The synthetic hospital: deterministic, the documented columns, plausible distributions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bedside.policy import load_dataset, load_policy
from bedside.policy.synthetic import PATIENT_COLUMNS, write_demo_hospital

from .conftest import PATIENTS

CORPUS_COLUMNS = (
    "mrn, name, dob, postcode, phone, sex, age, ward, diagnosis, los_days, cost, hiv, died"
)


def test_patient_columns_are_the_corpus_columns(patients: pd.DataFrame) -> None:
    assert tuple(patients.columns) == PATIENT_COLUMNS
    assert ", ".join(PATIENT_COLUMNS) == CORPUS_COLUMNS
    assert len(patients) == PATIENTS


def test_same_seed_same_data_other_seed_other_data(hospital: Path, tmp_path: Path) -> None:
    write_demo_hospital(tmp_path / "a", patients=PATIENTS, seed=7, progress=False)
    write_demo_hospital(tmp_path / "b", patients=PATIENTS, seed=8, progress=False)
    for table in ("patients", "admissions", "lab_results"):
        ours = pq.read_table(hospital / "data" / f"{table}.parquet")
        again = pq.read_table(tmp_path / "a" / "data" / f"{table}.parquet")
        other = pq.read_table(tmp_path / "b" / "data" / f"{table}.parquet")
        assert ours.equals(again), table
        assert not ours.equals(other), table
        assert (hospital / "data" / f"{table}.csv").read_bytes() == (
            tmp_path / "a" / "data" / f"{table}.csv"
        ).read_bytes()
    assert (hospital / "policy.yaml").read_text() == (tmp_path / "a" / "policy.yaml").read_text()


def test_identifiers_are_unique_or_nearly(patients: pd.DataFrame) -> None:
    assert patients.mrn.is_unique
    assert patients.mrn.str.fullmatch(r"MRN\d{8}").all()
    assert patients.phone.nunique() >= 0.99 * len(patients)
    assert patients[["name", "dob"]].drop_duplicates().shape[0] >= 0.995 * len(patients)
    assert patients.postcode.nunique() > 100  # shared, like real postcodes


def test_clinical_distributions_are_plausible(patients: pd.DataFrame) -> None:
    assert patients.age.median() > 55  # in-patients skew older
    assert patients.age.min() >= 0 and patients.age.max() <= 104
    assert 0.01 < patients.died.mean() < 0.12
    assert patients.hiv.mean() < 0.02
    assert set(patients.sex) == {"F", "M"}
    assert 6 <= patients.ward.nunique() <= 12
    assert patients.diagnosis.str.fullmatch(r"[A-Z]\d{2}(\.\d)?").all()  # ICD-10 codes
    assert patients[["los_days", "cost"]].corr().iloc[0, 1] > 0.5
    old = patients[patients.age >= 80].died.mean()
    young = patients[patients.age < 50].died.mean()
    assert old > 3 * young
    paeds = patients[patients.ward == "Paediatrics"]
    assert (paeds.age < 16).all()
    assert (patients[patients.ward == "Maternity"].sex == "F").all()
    # Age agrees with the date of birth (as of the reference date).
    dob = pd.to_datetime(patients.dob)
    years = (pd.Timestamp("2024-12-31") - dob).dt.days / 365.25
    assert ((years - patients.age).abs() < 1.01).all()


def test_admissions_and_labs_link_to_patients(hospital: Path, patients: pd.DataFrame) -> None:
    policy = load_policy(hospital / "policy.yaml")
    adm = load_dataset(policy.datasets["admissions"])
    labs = load_dataset(policy.datasets["lab_results"])
    assert set(adm.mrn) == set(patients.mrn)
    assert adm.admission_id.is_unique
    assert set(labs.admission_id) <= set(adm.admission_id)
    assert (pd.to_datetime(adm.discharged) >= pd.to_datetime(adm.admitted)).all()
    assert len(labs) >= 2 * len(adm)


def test_csv_and_parquet_hold_the_same_rows(hospital: Path) -> None:
    pq_frame = pd.read_parquet(hospital / "data" / "patients.parquet")
    csv_frame = pd.read_csv(hospital / "data" / "patients.csv", dtype={"mrn": str, "phone": str})
    assert list(pq_frame.columns) == list(csv_frame.columns)
    pd.testing.assert_series_equal(pq_frame.mrn, csv_frame.mrn, check_dtype=False)
    pd.testing.assert_series_equal(pq_frame.cost, csv_frame.cost, check_dtype=False)


def test_policy_written_with_the_data_checks(hospital: Path) -> None:
    policy = load_policy(hospital / "policy.yaml")
    assert policy.datasets["patients"].identifiers == ["mrn", "name", "dob", "postcode", "phone"]
    assert policy.datasets["patients"].record_id == "mrn"


def test_csv_only(tmp_path: Path) -> None:
    write_demo_hospital(tmp_path, patients=50, seed=1, formats=("csv",), progress=False)
    policy = load_policy(tmp_path / "policy.yaml")
    assert policy.datasets["patients"].format == "csv"
    assert not (tmp_path / "data" / "patients.parquet").exists()
    with pytest.raises(ValueError):
        write_demo_hospital(tmp_path, patients=0, seed=1, progress=False)
