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
        "fewer than 10 residual degrees of freedom",
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


# The mistakes a custodian makes while editing the demo's policy, as `bedside policy check`
# reports them: (what, replace, with, the line that is wrong, words of the message, of the fix).
CUSTODIAN_MISTAKES = [
    (
        "bad indentation",
        "    record_id: mrn",
        "     record_id: mrn",
        "record_id",  # the over-indented line itself
        "invalid YAML",
        "indentation",
    ),
    (
        "count as a string",
        "min_cell_count: 10",
        'min_cell_count: "10"',
        "min_cell_count",
        "must be a whole number, not '10'",
        "no quotes",
    ),
    (
        "a list for a number",
        "p_ratio: 0.1",
        "p_ratio: [0.1]",
        "p_ratio",
        "must be a number, not a list",
        "p_ratio: 0.1",
    ),
    (
        "record id in the wrong case",
        "record_id: mrn",
        "record_id: MRN",
        "record_id",
        "'MRN' is not a column",
        "did you mean 'mrn'",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line_has", "message_has", "fix_has"),
    [m[1:] for m in CUSTODIAN_MISTAKES],
    ids=[m[0] for m in CUSTODIAN_MISTAKES],
)
def test_check_names_file_line_and_fix_for_custodian_mistakes(
    policy_dir: Path,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    line_has: str,
    message_has: str,
    fix_has: str,
) -> None:
    text = (policy_dir / "policy.yaml").read_text()
    assert old in text
    text = text.replace(old, new, 1)
    bad = policy_dir / "bad.yaml"
    bad.write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if line_has in t)
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    first, fix = err.split("\n", 1)
    assert first.startswith(f"error: {bad}:{line}: "), err
    assert message_has in first and "Node(" not in err, err
    assert fix.strip().startswith("fix:") and fix_has in fix, err
