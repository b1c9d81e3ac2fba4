"""Starting the kernel: refusal on a bad policy, and the kernelspec install command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bedside._cli import main as bedside_main


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bedside.kernel", "-f", "/nonexistent/conn.json", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_refuses_to_start_without_a_policy() -> None:
    proc = _launch(env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "refuses to start" in proc.stderr and "BEDSIDE_POLICY" in proc.stderr


def test_refuses_to_start_on_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: bedside/v1\nid: x\ndatasets: {}\ndisclosure:\n  min_cell_count: -3\n")
    proc = _launch("--policy", str(bad))
    assert proc.returncode == 1
    assert "refuses to start" in proc.stderr and str(bad) in proc.stderr


def test_install_kernelspec_with_absolute_interpreter(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: bedside/v1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bedside.kernel", "install", "--prefix", str(tmp_path / "env"),
         "--name", "bedside-local", "--policy", str(policy), "--env", "OMP_NUM_THREADS", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spec = json.loads((tmp_path / "env/share/jupyter/kernels/bedside-local/kernel.json")
                      .read_text())  # fmt: skip
    assert spec["argv"][0] == sys.executable and Path(spec["argv"][0]).is_absolute()
    assert spec["argv"][1:5] == ["-m", "bedside.kernel", "-f", "{connection_file}"]
    assert spec["argv"][-2:] == ["--policy", str(policy.resolve())]
    assert spec["env"] == {"OMP_NUM_THREADS": "1"}
    assert spec["metadata"]["debugger"] is False


def test_bedside_cli_kernel_install(tmp_path: Path) -> None:
    assert bedside_main(["kernel", "install", "--prefix", str(tmp_path), "--name", "b2"]) == 0
    assert (tmp_path / "share/jupyter/kernels/b2/kernel.json").is_file()
    assert bedside_main(["kernel", "install", "--prefix", str(tmp_path), "--policy",
                         str(tmp_path / "missing.yaml")]) == 1  # fmt: skip
