"""Kernel start behind the sentry, from the client's side: a first cell sent the moment the
sentry is launched, before any kernel_info, is judged by the guarded kernel's armed guard (the
hospital ledger records the kernel's own "blocked") as well as by the sentry, and no identifier
value reaches the client."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    IDENTIFIERS,
    LeakOracle,
    make_hospital,
    make_patients,
    start_sentry,
)

from bedside.ledger.verify import iter_entries  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: `make system`"),
]

FIRST_CELL = """\
df = hospital.load("patients")
print(df["mrn"].iloc[0], df["name"].iloc[1])
df.iloc[:3]
"""


def _first_cell(tmp_path: Path, kernel: str) -> tuple[list[dict], list[dict]]:
    """A leaking first cell sent at launch: what the client got for it, and the sentry's
    ledger entries of its shown outputs."""
    frame = make_patients(400, seed=5)
    hospital = make_hospital(tmp_path / "hospital", frame=frame)
    sentry = start_sentry(hospital, tmp_path / "run", sandbox=True, kernel=kernel)
    kc = BlockingKernelClient()
    try:
        kc.load_connection_info(sentry.connection)
        kc.start_channels()
        code = FIRST_CELL
        if kernel == "plain":  # no `hospital` object there: the file itself
            path = str(hospital.data)
            code = (
                "import pandas as pd\n\nclass hospital:\n"
                f"    load = staticmethod(lambda name: pd.read_parquet({path!r}))\n\n"
            ) + FIRST_CELL
        msg_id = kc.execute(code)  # at once: the sentry is still starting
        outputs = []
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, sentry.log()
            assert sentry.proc.poll() is None, sentry.log()
            try:
                msg = kc.iopub_channel.get_msg(timeout=0.5)
            except Exception:  # noqa: BLE001 - queue.Empty: keep waiting
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            outputs.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        shown = [m for m in outputs if m["msg_type"] in ("stream", "execute_result")]
        assert shown, outputs
        oracle = LeakOracle(frame, IDENTIFIERS)
        for msg in outputs:
            assert not oracle.leaks(msg), msg
        ids = {m["header"]["msg_id"] for m in shown}
        entries = [
            e
            for _, e in iter_entries(sentry.ledger_path())
            if e["kind"] == "output" and e["msg_id"] in ids
        ]
        assert entries and all(e["decision"] == "blocked" for e in entries), entries
        return outputs, entries
    finally:
        kc.stop_channels()
        sentry.stop()


def test_a_first_cell_sent_at_launch_is_judged_by_the_armed_kernel_guard(tmp_path: Path) -> None:
    _, entries = _first_cell(tmp_path, "guarded")
    # The in-kernel guard was armed before the cell ran: it blocked the outputs itself.
    assert all(e.get("kernel_decision") == "blocked" for e in entries), entries


def test_a_first_cell_sent_at_launch_is_blocked_by_the_sentry_before_a_plain_kernel(
    tmp_path: Path,
) -> None:
    # The sentry relays kernel_info and status while its guard is built; the cell waits for the
    # guard, and with a kernel that guards nothing the sentry alone blocks its outputs.
    outputs, entries = _first_cell(tmp_path, "plain")
    assert all(e.get("kernel_decision") is None for e in entries), entries
    assert all(m["metadata"]["bedside"]["decision"] == "blocked" for m in outputs
               if m["msg_type"] in ("stream", "execute_result")), outputs  # fmt: skip
