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
from bedside.ledger import Ledger, Signer

from .conftest import Hospital, make_hospital, make_patients
from .test_releases import RELEASE, review
from .test_researcher import intent, write_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TRAIN = """\
import numpy as np, torch
torch.manual_seed(0); torch.set_num_threads(1)
df = hospital.load("patients")
X = df[["age", "los_days", "cost"]].to_numpy(dtype=np.float32)
X = (X - X.mean(0)) / X.std(0)
y = df["died"].to_numpy()
net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
opt = torch.optim.Adam(net.parameters(), 1e-2)
xt, yt = torch.tensor(X[:1500]), torch.tensor(y[:1500])
for _ in range(100):
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(xt), yt).backward(); opt.step()
t = hospital.release(net, name="mortality", kind="model",
                     train=(X[:1500], y[:1500]), holdout=(X[1500:], y[1500:]))
print("mortality", t.status, t.id)
"""


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    hospital = make_hospital(
        tmp_path_factory.mktemp("hospital"), frame=make_patients(2000, seed=11)
    )
    text = hospital.policy.read_text().replace("processes: 128", "processes: 4096")
    hospital.policy.write_text(text + RELEASE)
    return hospital


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
    keys = {}
    for name in ("carol", "dave"):
        keys[name] = tmp_path / f"{name}.key"
        Signer.generate(name).save(keys[name])
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
