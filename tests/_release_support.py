"""What the release tests share: the custodian's release rules, the torch model a cell trains at
the hospital, the custodians' keys, and the `bedside` command line (`review`, `release verify`)
run as a subprocess, as custodians and reviewers run it.

The release tests (tests/release, tests/gateway/test_sentry_release.py,
tests/integration/test_releases.py and test_run_releases.py, tests/frontend/test_releases.py)
drive the same training cell down different paths (kernel, sentry, gateway, JupyterLab); it is
written once here so that a change to the model or to the rules reaches every path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bedside.ledger import Signer


def release_policy(max_bytes: str = "5 MB") -> str:
    """The policy's `release:` section: models reviewed by two custodians."""
    return (
        "release:\n"
        "  approvals_required: 2\n"
        f"  model: {{mode: review, max_bytes: {max_bytes}, min_leaf_size: 10, mia_auc_max: 0.6}}\n"
    )


# A small mortality classifier trained in the kernel: `X`, `y`, `xt`, `yt` and `net` stay in the
# kernel's namespace for the cells that follow. Rows 1500.. are the holdout of the release checks.
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
"""


def train_and_release(*names: str) -> str:
    """TRAIN, then one release request of the model per name, each printing `name status id`."""
    return TRAIN + (
        f"for name in {list(names)!r}:\n"
        '    t = hospital.release(net, name=name, kind="model",\n'
        "                         train=(X[:1500], y[:1500]), holdout=(X[1500:], y[1500:]))\n"
        "    print(name, t.status, t.id)\n"
    )


def custodian_keys(folder: Path, *names: str) -> dict[str, Path]:
    """A fresh Ed25519 key file per custodian, by name."""
    keys = {}
    for name in names:
        keys[name] = folder / f"{name}.key"
        Signer.generate(name).save(keys[name])
    return keys


def bedside_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`bedside ARGS...` as a subprocess, as a custodian or reviewer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "bedside", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def review(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`bedside review --state STATE ARGS...`, the custodians' CLI."""
    return bedside_cli("review", "--state", str(state), *args)
