"""The guarded kernel's start: it answers kernel_info before its guard is armed, and nothing a
cell does runs or leaves before the guard is armed, however soon the cell is sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from bedside.kernel import guard, kernel
from tests.kernel._client import Session, kernel_spec_dir

# Sent the moment the kernel process exists, before any kernel_info: prints identifier values
# and a record-level slice, and asks for a count of a group too small to publish.
FIRST_CELL = """\
df = hospital.load("patients")
print(df["mrn"].iloc[0], df["name"].iloc[1])
print(df.iloc[:3].to_string())
df.groupby("mrn").size().head(3)
"""


def test_messages_sent_before_the_guard_is_armed_are_ones_the_guard_passes_unread() -> None:
    assert kernel.EARLY_TYPES <= guard.PASS_TYPES


def _start_without_waiting(root: Path, policy: Path) -> tuple[Any, Any]:
    kdir = kernel_spec_dir(root, "bedside-start", policy, "bedside.kernel")
    km = KernelManager(
        kernel_name="bedside-start", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kdir)])
    )
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    return km, kc


def test_a_first_cell_sent_at_once_is_judged_by_the_armed_guard(
    hospital: tuple[Path, dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    policy, tables = hospital
    km, kc = _start_without_waiting(tmp_path, policy)
    try:
        session = Session(kc)
        got = session.execute(FIRST_CELL)
        shown = got.shown()
        patients = tables["patients"]
        for value in (patients["mrn"].iloc[0], patients["name"].iloc[1], patients["mrn"].iloc[2]):
            assert str(value) not in shown
            assert str(value) not in got.text()
        assert got.decisions() and set(got.decisions()) == {"blocked"}
        # The kernel still answers as the guarded kernel, its debugger off.
        info = session.request(kc.kernel_info).reply["content"]
        assert info["implementation"] == "bedside"
        assert "debugger" not in info.get("supported_features", [])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_guard_that_cannot_be_built_stops_the_kernel(
    hospital: tuple[Path, dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    """Fail closed: a kernel whose guard does not arm exits instead of running cells."""
    policy, _ = hospital
    connection = tmp_path / "kernel.json"
    km = KernelManager(connection_file=str(connection))
    km.write_connection_file()
    # A `bedside.kernel._scan` that cannot be imported: the guard's build fails.
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.modules['bedside.kernel._scan'] = None;"
         "from bedside.kernel.__main__ import main; sys.exit(main(sys.argv[1:]))",
         "-f", str(connection), "--policy", str(policy)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot build the output guard" in proc.stderr
    json.loads(connection.read_text())  # the connection file is the client's, left as it was
