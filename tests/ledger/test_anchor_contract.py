"""The compiled contract in the repository is exactly what the pinned solc makes of the source."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bedside.ledger.anchor import contract_artifact

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compile_contract.mjs"


def test_artifact_reproduces_byte_for_byte_with_pinned_solc() -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "solc").exists():
        pytest.fail("node and node_modules/solc are needed: run `make npm`")
    result = subprocess.run(
        [node, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "reproduces byte for byte" in result.stdout


def test_artifact_records_compiler_and_settings() -> None:
    artifact = contract_artifact()
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["solc"]
    assert artifact["compiler"]["version"].startswith(f"{pinned}+commit.")
    assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 200}
    assert artifact["settings"]["evmVersion"] == "paris"
    metadata = json.loads(artifact["metadata"])
    assert metadata["compiler"]["version"] == artifact["compiler"]["version"]
    assert set(metadata["sources"]) == {"BedsideAnchor.sol"}
    # The packaged copy is the repository's file, not a stale one.
    on_disk = json.loads((ROOT / "ledger" / "contracts" / "BedsideAnchor.json").read_text())
    assert on_disk == artifact
    # No PUSH0 (Shanghai) in a paris build, so older EVM chains run it too.
    assert artifact["bytecode"].startswith("0x6080604052")
