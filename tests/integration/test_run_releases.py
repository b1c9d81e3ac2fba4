"""`bedside run --wait-releases`: a release requested during a headless run is decided by two
custodians (the `bedside review` CLI pointed at the gateway's --state-dir, as at the hospital)
while the run keeps the session open, then fetched and verified before the seal.

Real chain on loopback: jupyter_server + extension → Enterprise Gateway → sentry → sandboxed
guarded kernel.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from bedside.extension._headless import run_notebook
from bedside.ledger import Ledger
from tests._release_support import custodian_keys, review, train_and_release

from ._researcher import intent, write_notebook
from .conftest import Hospital, make_release_hospital

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TRAIN = train_and_release("mortality")


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return make_release_hospital(tmp_path_factory.mktemp("hospital"))


def custodians(state: Path, keys: dict[str, Path], done: dict, stop: threading.Event) -> None:
    """Approve the first pending request as carol, then dave, through the gateway state dir."""
    while not stop.is_set():
        listed = review(state, "list", "--json")
        rows = json.loads(listed.stdout) if listed.returncode == 0 else []
        pending = [r for r in rows if r["status"] == "pending"]
        if pending:
            rid = pending[0]["id"]
            for name in ("carol", "dave"):
                done[name] = review(state, "approve", rid, "--as", name, "--key", str(keys[name]))
            done["id"] = rid
            return
        time.sleep(0.5)


def test_run_waits_for_custodians_then_fetches_before_the_seal(
    tmp_path, hospital, eg_gateway, monkeypatch
) -> None:
    monkeypatch.setenv("KERNEL_USERNAME", eg_gateway.username)
    notebook = write_notebook(
        tmp_path / "nb", [TRAIN], eg_gateway.kernel_name, intent(model_job="mortality model")
    )
    keys = custodian_keys(tmp_path, "carol", "dave")
    done: dict = {}
    stop = threading.Event()
    worker = threading.Thread(target=custodians, args=(hospital.state, keys, done, stop))
    worker.start()
    try:
        result = asyncio.run(
            run_notebook(
                notebook,
                gateway_url=eg_gateway.url,
                gateway_token=eg_gateway.token,
                out_dir=tmp_path / "out",
                kernel_name=eg_gateway.kernel_name,
                wait_releases=180,
            )
        )
    finally:
        stop.set()
        worker.join(timeout=120)
    log = (tmp_path / "out" / "jupyter_server.log").read_text()
    for name in ("carol", "dave"):
        assert done[name].returncode == 0, done[name].stderr
    assert not result.errors, (result.errors, log[-3000:])
    assert result.status["state"] == "sealed", log[-3000:]
    (row,) = result.releases
    assert row["id"] == done["id"] and row["state"] == "approved"
    assert row["fetched"]["verified"] is True
    assert (notebook.parent / row["fetched"]["path"] / "mortality.safetensors").is_file()
    # the approvals and the delivery precede the seal in the researcher's ledger
    ledger = Ledger.open(result.ledger)
    kinds = [ledger.entry(i)["kind"] for i in range(ledger.size)]
    assert "seal" in kinds
    # the hospital's ledger holds the approvals and the delivery before its seal
    (session_dir,) = [d for d in hospital.state.iterdir() if (d / "airlock.json").is_file()]
    theirs = Ledger.open(session_dir / "session.ledger")
    steps = [theirs.entry(i).get("step") or theirs.entry(i)["kind"] for i in range(theirs.size)]
    assert steps.index("delivery") < steps.index("seal")
    assert steps.count("approval") == 2
    # after the seal the request is settled: a late decision is refused
    late = review(
        hospital.state,
        "deny",
        done["id"],
        "--as",
        "carol",
        "--key",
        str(keys["carol"]),
        "--reason",
        "late",
    )
    assert late.returncode == 1 and "is delivered" in late.stderr
