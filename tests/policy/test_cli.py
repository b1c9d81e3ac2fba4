"""`bedside policy check|explain|hash` and `bedside demo-data`, run through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bedside._cli import main
from bedside.policy import load_policy


def test_check_ok_prints_digest(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(policy_dir / "policy.yaml")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("OK ") and load_policy(policy_dir / "policy.yaml").digest in out[0]


def test_check_error_exits_1_with_file_line_fix(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = policy_dir / "bad.yaml"
    bad.write_text(
        (policy_dir / "policy.yaml").read_text().replace("shell: deny", "shell: sometimes")
    )
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:20:" in err and "fix:" in err


def test_check_no_files(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (policy_dir / "data" / "patients.parquet").unlink()
    assert main(["policy", "check", str(policy_dir / "policy.yaml")]) == 1
    assert main(["policy", "check", "--no-files", str(policy_dir / "policy.yaml")]) == 0


def test_explain_is_plain_language(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", str(policy_dir / "policy.yaml")]) == 0
    out = capsys.readouterr().out
    for phrase in (
        "Protected datasets",
        "patients: data/patients.parquet",
        "identifying columns: mrn, name, dob, postcode, phone",
        "fewer than 10 persons",
        "rounded to the nearest 5",
        "largest 2 contributors",
        "90%",
        "Extremes",
        "text/plain, text/html, image/png, application/json",
        "1,000,000 bytes",
        "50,000,000 bytes",
        "Shell commands",
        "Errors are scrubbed",
        "sha256:",
    ):
        assert phrase in out, phrase


def test_hash_and_canonical_json(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "hash", str(policy_dir / "policy.yaml")]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest == load_policy(policy_dir / "policy.yaml").digest
    assert main(["policy", "hash", "--json", str(policy_dir / "policy.yaml")]) == 0
    assert capsys.readouterr().out.startswith('{"datasets":')


def test_demo_data_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bedside",
            "demo-data",
            "--out",
            str(tmp_path),
            "--patients",
            "300",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "100%" in proc.stderr  # the progress bar
    check = subprocess.run(
        [sys.executable, "-m", "bedside", "policy", "check", str(tmp_path / "policy.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0 and check.stdout.startswith("OK"), check.stderr
    assert main(["demo-data", "--out", str(tmp_path / "x"), "--patients", "0", "--quiet"]) == 1
