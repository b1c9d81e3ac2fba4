"""Replay: rebuild the notebook from a ledger, re-run it on the stock python3 kernel, and see
which outputs reproduce (commitment recomputed with the ledger's salt)."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from ledger_session import new_session

from bedside.ledger import Signer, openings_path, publishable_openings
from bedside.ledger import entries as E
from bedside.ledger._cli import EXIT_FAILED, EXIT_OK
from bedside.ledger.replay import replay

pytestmark = pytest.mark.timeout(180)

SESSION, ORIGIN = "replay-1", "hospital.example/bedside/replay-1"
CELLS = [
    "print('cohort size', 10 * 12)",
    "3 * 7",
    "import random\nrandom.random()",  # not deterministic: must be reported as differing
    "print('MRN 12345678')",  # the guard blocks this one
    "from IPython.display import display\ndisplay({'a': 1}, raw=False)",
]


def _run_cells(cells: list[str]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """Execute cells on a real python3 kernel; return (msg_id, code, iopub outputs) per cell."""
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        results = []
        for code in cells:
            msg_id = kc.execute(code)
            outputs: list[dict[str, Any]] = []
            while True:
                try:
                    msg = kc.get_iopub_msg(timeout=30)
                except queue.Empty:
                    raise AssertionError("kernel went quiet") from None
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "status" and msg["content"]["execution_state"] == "idle":
                    break
                if kind in ("stream", "execute_result", "display_data", "error"):
                    outputs.append(msg)
            kc.get_shell_msg(timeout=30)
            results.append((msg_id, code, outputs))
        return results
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def session_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger written the way the sentry writes it, from a real kernel's messages."""
    path = tmp_path_factory.mktemp("replay") / "session.ledger"
    custodian = Signer.generate("custodian")
    ledger = new_session(
        path,
        {"custodian": custodian.verifier_key},
        intent={"purpose": "replay test"},
        policy_digest="sha256:" + "0" * 64,
        kernel_env="sha256:" + "1" * 64,
        session=SESSION,
        origin=ORIGIN,
    )
    for msg_id, code, outputs in _run_cells(CELLS):
        entry, opening = E.execute_request(
            session=SESSION, msg_id=msg_id, code=code, researcher_sig=None
        )
        ledger.append(entry, opening=opening)
        for msg in outputs:
            text = json.dumps(msg["content"])
            blocked = "MRN" in text
            entry, opening = E.output(
                session=SESSION,
                msg_id=msg["header"]["msg_id"],
                parent=msg_id,
                channel="iopub",
                msg_type=msg["msg_type"],
                content=msg["content"],
                buffers=msg["buffers"],
                decision="blocked" if blocked else "released",
                rule="identifier" if blocked else "pass",
                layer="sentry",
            )
            ledger.append(entry, opening=opening)
    ledger.append_checkpoint(ledger.sign_checkpoint(custodian))
    ledger.append(E.seal(session=SESSION))
    ledger.close()
    return path


def test_rebuild_shows_released_outputs_and_blocked_notices(
    session_ledger: Path, tmp_path: Path
) -> None:
    public = tmp_path / "public.openings"
    publishable_openings(session_ledger, public)
    result = replay(session_ledger, public, tmp_path / "nb.ipynb")
    nb = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells] == CELLS
    assert nb.cells[0].outputs[0].text == "cohort size 120\n"
    assert nb.cells[1].outputs[0].data["text/plain"] == "21"
    blocked = nb.cells[3].outputs[0]
    assert "MRN" not in json.dumps(blocked) and "blocked" in blocked.data["text/plain"]
    assert result.ok and len(result.cells) == len(CELLS)


def test_execute_reports_which_outputs_reproduce(session_ledger: Path, tmp_path: Path) -> None:
    result = replay(
        session_ledger,
        openings_path(session_ledger),
        tmp_path / "nb.ipynb",
        execute=True,
        kernel="python3",
        timeout=60,
    )
    status = {c.cell: [o.status for o in c.outputs] for c in result.cells}
    assert status[0] == ["reproduced"]
    assert status[1] == ["reproduced"]
    assert status[2] == ["differs"]  # random.random()
    assert status[3] == ["not compared: no opening (blocked output)"] or status[3] == ["reproduced"]
    assert status[4] == ["reproduced"]
    assert not result.ok  # one output differs, and the exit status says so
    assert (tmp_path / "nb.replayed.ipynb").exists()


def test_replay_cli_exit_status(
    session_ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bedside._cli import main

    public = tmp_path / "public.openings"
    publishable_openings(session_ledger, public)
    args = [
        "ledger",
        "replay",
        str(session_ledger),
        "--openings",
        str(public),
        "-o",
        str(tmp_path / "nb.ipynb"),
    ]
    assert main(args) == EXIT_OK
    assert main([*args, "--execute", "--kernel", "python3", "--json"]) == EXIT_FAILED
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert report["counts"]["reproduced"] == 3 and report["counts"]["differs"] == 1
