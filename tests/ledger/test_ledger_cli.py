"""The reviewer's commands, run through the real `bedside` entry point: exit statuses and the
messages a reviewer reads."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bedside._cli import main
from bedside.ledger import Signer, Verifier, openings_path
from bedside.ledger._cli import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE


def test_keys_new_writes_c2sp_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "st-marys", "--dir", str(tmp_path)]) == EXIT_OK
    key, pub = tmp_path / "st-marys.key", tmp_path / "st-marys.pub"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_text().startswith("PRIVATE+KEY+st-marys+")
    vkey = pub.read_text().strip()
    assert Verifier(vkey).name == "st-marys"
    assert Signer.load(key).verifier_key == vkey
    assert vkey in capsys.readouterr().out
    # Never overwrite a key.
    assert main(["keys", "new", "st-marys", "--dir", str(tmp_path)]) == 1


def test_verify_ok_and_json(
    session_ledger: Path, custodian: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["ledger", "verify", str(session_ledger), "--key", custodian.verifier_key]
    assert main(args) == EXIT_OK
    assert "OK" in capsys.readouterr().out
    assert main([*args, "--openings", str(openings_path(session_ledger)), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["openings_checked"] == 9 and report["sealed"]


def test_verify_names_the_first_bad_entry(
    session_ledger: Path, custodian: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(session_ledger.read_bytes())
    data[-100] ^= 0x20
    session_ledger.write_bytes(bytes(data))
    rc = main(["ledger", "verify", str(session_ledger), "--key", custodian.verifier_key])
    assert rc == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("FAILED: entry 16:") and "checksum" in err


def test_verify_unusable_input(
    tmp_path: Path, custodian: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", "verify", str(tmp_path / "missing.ledger")]) == EXIT_UNUSABLE
    assert "missing.ledger" in capsys.readouterr().err
    (tmp_path / "x.ledger").write_text("not a ledger")
    # A file that is not a ledger at all fails verification (it is what was handed over).
    assert main(["ledger", "verify", str(tmp_path / "x.ledger")]) == EXIT_FAILED
    assert "not a bedside ledger" in capsys.readouterr().err


def test_verify_with_the_wrong_key_fails(
    session_ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Signer.generate("custodian")
    rc = main(["ledger", "verify", str(session_ledger), "--key", other.verifier_key])
    assert rc == EXIT_FAILED
    assert "no trusted key signed" in capsys.readouterr().err


def test_verify_holding_the_final_checkpoint_catches_truncation(
    session_ledger: Path,
    custodian: Signer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bedside.ledger import Ledger

    with Ledger.open(session_ledger) as ledger:
        note = ledger.entry(ledger.size - 1)["note"]
        cut = ledger._offsets[10]  # keep 10 entries
    held = tmp_path / "final.note"
    held.write_text(note)
    session_ledger.write_bytes(session_ledger.read_bytes()[:cut])
    rc = main(
        [
            "ledger",
            "verify",
            str(session_ledger),
            "--key",
            custodian.verifier_key,
            "--checkpoint",
            str(held),
        ]
    )
    assert rc == EXIT_FAILED
    assert "entry 10:" in capsys.readouterr().err


def test_prove_and_check_proof(
    session_ledger: Path,
    custodian: Signer,
    researcher: Signer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proof_path = tmp_path / "proof.json"
    assert (
        main(
            [
                "ledger",
                "prove",
                str(session_ledger),
                "--entry",
                "2",
                "-o",
                str(proof_path),
                "--openings",
                str(openings_path(session_ledger)),
            ]
        )
        == EXIT_OK
    )
    proof = json.loads(proof_path.read_text())
    assert proof["index"] == 2 and proof["tree_size"] == 16 and "opening" in proof
    pub = tmp_path / "custodian.pub"
    pub.write_text(custodian.verifier_key + "\n")
    assert main(["ledger", "check-proof", str(proof_path), "--key", str(pub)]) == EXIT_OK
    assert "entry 2 (output)" in capsys.readouterr().out
    # The researcher cosigned the final checkpoint, so their key alone suffices as well.
    assert (
        main(["ledger", "check-proof", str(proof_path), "--key", researcher.verifier_key])
        == EXIT_OK
    )
    # Tamper with the entry: the proof no longer leads to the signed root.
    proof["entry"]["decision"] = "blocked"
    proof_path.write_text(json.dumps(proof))
    assert main(["ledger", "check-proof", str(proof_path), "--key", str(pub)]) == EXIT_FAILED
    assert "entry 2:" in capsys.readouterr().err
    # No checkpoint covers an entry past the last one.
    assert main(["ledger", "prove", str(session_ledger), "--entry", "99"]) == EXIT_UNUSABLE


def test_publish_openings(
    session_ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "public.openings"
    assert main(["ledger", "publish-openings", str(session_ledger), "-o", str(out)]) == EXIT_OK
    assert "3 withheld" in capsys.readouterr().out


def test_report_html(session_ledger: Path, custodian: Signer, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert (
        main(
            [
                "ledger",
                "report",
                str(session_ledger),
                "-o",
                str(out),
                "--key",
                custodian.verifier_key,
            ]
        )
        == EXIT_OK
    )
    text = out.read_text()
    assert "VERIFIED" in text and "Guard decisions" in text and "data:image/png" in text
    assert "MRN" not in text  # blocked content never reaches the report
    data = bytearray(session_ledger.read_bytes())
    data[-100] ^= 0x20
    session_ledger.write_bytes(bytes(data))
    assert main(["ledger", "report", str(session_ledger), "-o", str(out)]) == EXIT_FAILED
    assert "VERIFICATION FAILED" in out.read_text()


def test_ledger_import_pulls_in_no_jupyter() -> None:
    code = (
        "import argparse, sys, bedside.ledger, bedside.ledger._cli\n"
        "bedside.ledger._cli.register(argparse.ArgumentParser().add_subparsers())\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('nbformat', 'nbclient', 'nbconvert', 'jupyter_client', 'ipykernel', 'matplotlib', "
        "'web3', 'zmq')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ledger", "verify", "--help"])
    assert "first bad entry" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "status"),
    [
        (["verify", "{missing}"], EXIT_UNUSABLE),
        (["replay", "{missing}", "--openings", "{missing}", "-o", "{out}"], EXIT_UNUSABLE),
        (["verify", "{garbage}"], EXIT_FAILED),
        (["prove", "{garbage}", "--entry", "0"], EXIT_FAILED),
        (["publish-openings", "{garbage}", "-o", "{out}"], EXIT_FAILED),
        (["replay", "{garbage}", "--openings", "{garbage}", "-o", "{out}"], EXIT_FAILED),
    ],
    ids=lambda c: c[0] if isinstance(c, list) else str(c),
)
def test_commands_report_a_bad_ledger_once(
    command: list[str], status: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger that is not there (exit 2) or is not a ledger (exit 1): one `FAILED: …` line
    naming it, on stderr, and nothing on stdout."""
    missing, garbage, out = tmp_path / "missing.ledger", tmp_path / "x.ledger", tmp_path / "out"
    garbage.write_text("not a ledger")
    args = [a.format(missing=missing, garbage=garbage, out=out) for a in command]
    assert main(["ledger", *args]) == status
    captured = capsys.readouterr()
    assert captured.err.startswith("FAILED: ") and tmp_path.name in captured.err, captured.err
    assert captured.err.count("FAILED: ") == 1 and not captured.out


def test_verify_json_reports_the_failure_on_both_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.ledger").write_text("not a ledger")
    assert main(["ledger", "verify", str(tmp_path / "x.ledger"), "--json"]) == EXIT_FAILED
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and "not a bedside ledger" in report["error"]
    assert captured.err == f"FAILED: {report['error']}\n"


def test_errors_outside_the_ledger_commands_keep_the_root_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keys new` is not a verification: a refusal is `error: …` with exit 1."""
    assert main(["keys", "new", "k", "--dir", str(tmp_path)]) == EXIT_OK
    capsys.readouterr()
    assert main(["keys", "new", "k", "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'k.pub'}: already exists")


def test_unusable_arguments_and_proofs_exit_2(
    session_ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["ledger", "verify", str(session_ledger), "--confirmations", "3", "--finalized"]
    assert main(args) == EXIT_UNUSABLE
    assert capsys.readouterr().err == (
        "FAILED: --confirmations, --finalized only apply to the on-chain check; add --rpc URL\n"
    )
    proof = tmp_path / "proof.json"
    proof.write_text("{not json")
    assert main(["ledger", "check-proof", str(proof), "--key", "k"]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith(f"FAILED: {proof}: cannot read the proof: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "command",
    [
        ["prove", "{ledger}", "--entry", "0"],
        ["publish-openings", "{ledger}", "-o", "{out}"],
        ["report", "{ledger}", "-o", "{out}"],
        ["prove", "{real}", "--entry", "0", "--openings", "{ledger}"],
    ],
)
def test_commands_refuse_a_missing_file_without_a_traceback(
    command: list[str],
    session_ledger: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every reading command treats a missing ledger or openings file as `verify` does: a
    `FAILED:` line naming the file, exit 2, nothing written."""
    missing, out = tmp_path / "missing.ledger", tmp_path / "out"
    argv = [a.format(ledger=missing, out=out, real=session_ledger) for a in ["ledger", *command]]
    assert main(argv) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith(f"FAILED: {missing}: cannot read") and "Traceback" not in err
    assert not out.exists()
