"""Release benchmarks: the checks on a 100 MB torch model, and torch training in the guarded
kernel against a plain ipykernel.

Run: .venv/bin/python bench/bench_release.py [--mb 100] [--rounds 3] [--json out.json]

1. Release checks. A ~100 MB torch model (one 5000x5000 hidden layer) trained on synthetic
   patients is serialised and checked as `hospital.release` does it (safetensors, record-shaped
   tensors, training rows by value, vocabularies, the loss-threshold membership-inference attack
   on 1000+1000 records), then re-checked as the airlock does (SHA-256, header-only safetensors
   parse). The plain path measured in the same run is a bare `safetensors.torch.save` of the
   same state dict plus its SHA-256: the ratio says what the checks add to saving the model.
2. Training in the guarded kernel. The same torch training loop over the same synthetic table
   runs in a plain ipykernel (`pd.read_parquet`), in the guarded kernel alone
   (`python -m bedside.kernel`, policy loaded, table read through `hospital.load`), and in the
   guarded kernel as the hospital runs it: behind the sentry, inside the bubblewrap sandbox
   (the `bedside` kernelspec, driven by the same jupyter_client), round-robin, `--rounds`
   times. The loop is timed inside each kernel with `time.perf_counter`, and the whole cell
   from the client (execute request to idle). Target: sandboxed / plain <= 1.05 (issue 6).
   Without bubblewrap (`make system`) the sandboxed path is skipped and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bedside.kernel._model_checks import TrainingData  # noqa: E402
from bedside.kernel.release import run_checks, serialise  # noqa: E402
from bedside.policy.release import ReleaseRules  # noqa: E402
from tests.kernel._data import patients  # noqa: E402


def _features(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    x = frame[["age", "los_days", "cost"]].to_numpy(dtype=np.float32)
    return (x - x.mean(0)) / x.std(0), frame["died"].to_numpy()


def bench_checks(mb: int) -> dict[str, float]:
    torch.manual_seed(0)
    frame = patients(n=3000, seed=5)
    x, y = _features(frame)
    hidden = int((mb * 1e6 / 4) ** 0.5)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 2),
    )
    opt = torch.optim.SGD(net.parameters(), 1e-3)
    xt, yt = torch.tensor(x[:2000]), torch.tensor(y[:2000])
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    rules = ReleaseRules.from_dict({"model": {"max_bytes": "1 GB"}}).for_kind("model")
    data = TrainingData.from_args((x[:2000], y[:2000]), (x[2000:], y[2000:]))

    from safetensors.torch import save

    t0 = time.perf_counter()
    plain = save({k: v.contiguous() for k, v in net.state_dict().items()})
    hashlib.sha256(plain).hexdigest()
    t_plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    artifact = serialise(net, name="big", kind="model")
    t_serialise = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = run_checks(net, artifact, rules, data)
    t_checks = time.perf_counter() - t0
    assert all(r.passed for r in results), [r for r in results if not r.passed]

    from bedside.kernel._model_checks import check_membership_inference, check_torch_tensors

    t0 = time.perf_counter()
    check_torch_tensors(net, data)
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_membership_inference(net, data, 0.6)
    t_mia = time.perf_counter() - t0

    from bedside.gateway.airlock import Airlock

    with tempfile.TemporaryDirectory() as tmp:
        lock = Airlock(
            tmp,
            ledger=None,
            signer=None,
            workspace=tmp,
            rules=ReleaseRules.from_dict({"model": {"max_bytes": "1 GB"}}),
            n_records=3000,
        )
        t0 = time.perf_counter()
        digest = hashlib.sha256(artifact.data).hexdigest()
        rechecks = lock.recheck(
            {"kind": "model", "format": "safetensors", "digest": f"sha256:{digest}"},
            artifact.data,
            digest,
        )
        t_airlock = time.perf_counter() - t0
    assert all(r.passed for r in rechecks), [r for r in rechecks if not r.passed]
    total = t_serialise + t_checks + t_airlock
    return {
        "model_bytes": artifact.size,
        "plain_save_and_hash_s": round(t_plain, 3),
        "serialise_s": round(t_serialise, 3),
        "kernel_checks_s": round(t_checks, 3),
        "of_which_training_rows_scan_s": round(t_rows, 3),
        "of_which_membership_inference_s": round(t_mia, 3),
        "airlock_recheck_s": round(t_airlock, 3),
        "release_total_s": round(total, 3),
        "ratio_vs_plain_save": round(total / t_plain, 2),
        "checks": {
            r.name: round(float(r.details.get("auc", 0)), 3)
            if r.name == "membership_inference"
            else r.passed
            for r in results
        },
    }


TRAIN_CELL = """\
import time, numpy as np, torch
torch.manual_seed(0); torch.set_num_threads(1)
X = df[["age", "los_days", "cost"]].to_numpy(dtype=np.float32)
X = (X - X.mean(0)) / X.std(0)
y = df["died"].to_numpy()
net = torch.nn.Sequential(torch.nn.Linear(3, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                          torch.nn.ReLU(), torch.nn.Linear(256, 2))
opt = torch.optim.Adam(net.parameters(), 1e-3)
xt, yt = torch.tensor(X), torch.tensor(y)
t0, c0 = time.perf_counter(), time.process_time()
for epoch in range({epochs}):
    for i in range(0, len(xt), 256):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt[i:i+256]), yt[i:i+256]).backward()
        opt.step()
print("elapsed", round(time.perf_counter() - t0, 4), "cpu", round(time.process_time() - c0, 4))
"""


def _start(spec_root: Path, name: str, argv: list[str], cwd: Path):
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    d = spec_root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": name, "language": "python"})
    )
    km = KernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_root)])
    )
    km.start_kernel(cwd=str(cwd))
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def _run(kc, code: str, timeout: float = 600) -> tuple[str, float]:
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    out, idle = [], False
    while not idle:
        try:
            m = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(code[:40]) from None
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        t = m["header"]["msg_type"]
        if t == "stream":
            out.append(m["content"]["text"])
        elif t == "error":
            raise RuntimeError(m["content"]["ename"] + ": " + m["content"]["evalue"])
        elif t == "status" and m["content"]["execution_state"] == "idle":
            idle = True
    return "".join(out), time.perf_counter() - t0


def _sandboxed_spec(root: Path) -> list[str] | None:
    """The argv of the `bedside` kernelspec (sentry → bwrap → guarded kernel), or None."""
    import shutil

    from bedside.gateway.kernelspec import kernelspec_dict
    from bedside.ledger import Signer

    if shutil.which("bwrap") is None:
        return None
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700)
    Signer.generate("bench-hospital").save(secrets / "custodian.key")
    state = root / "private" / "state"  # the sandbox wants a 0700 parent around its state
    state.parent.mkdir(mode=0o700)
    state.mkdir(mode=0o700)
    spec = kernelspec_dict(
        policy=root / "policy.yaml",
        custodian_key=secrets / "custodian.key",
        state_dir=state,
        sandbox=True,
        kernel="guarded",
    )
    return list(spec["argv"])


def bench_training(rounds: int, epochs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the sandboxed kernel runs as another user: it must be able to read the data
        root.chmod(0o755)
        patients(n=20000, seed=9).to_parquet(root / "patients.parquet", index=False)
        (root / "patients.parquet").chmod(0o644)
        (root / "policy.yaml").write_text(
            textwrap.dedent("""\
            version: bedside/v1
            id: bench
            datasets:
              patients:
                path: patients.parquet
                record_id: mrn
                identifiers: [mrn, name, dob, postcode, phone]
            disclosure:
              min_cell_count: 10
            outputs:
              mime_allow: [text/plain]
            limits:
              memory_mb: 4096
              cpu_seconds: 36000
              processes: 4096
            """)
        )
        (root / "policy.yaml").chmod(0o644)
        kernels = {
            "guarded": (
                _start(
                    root / "kernels",
                    "guarded",
                    [
                        sys.executable,
                        "-m",
                        "bedside.kernel",
                        "-f",
                        "{connection_file}",
                        "--policy",
                        str(root / "policy.yaml"),
                    ],
                    root,
                ),
                'df = hospital.load("patients")',
            ),
            "plain": (
                _start(
                    root / "kernels",
                    "plain",
                    [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    root,
                ),
                'import pandas as pd; df = pd.read_parquet("patients.parquet")',
            ),
        }
        sandboxed = _sandboxed_spec(root)
        if sandboxed is not None:
            kernels["sandboxed"] = (
                _start(root / "kernels", "sandboxed", sandboxed, root),
                'df = hospital.load("patients")',
            )
        loop: dict[str, list[float]] = {name: [] for name in kernels}
        cell: dict[str, list[float]] = {name: [] for name in kernels}
        # CPU seconds of the loop in the kernel process: what the kernel itself spent, less
        # disturbed than wall time by other load on a shared machine.
        cpu: dict[str, list[float]] = {name: [] for name in kernels}
        try:
            for (_, kc), load in kernels.values():
                _run(kc, load)
                _run(kc, TRAIN_CELL.format(epochs=1))  # warm up torch in both
            for _ in range(rounds):
                for name, ((_, kc), _load) in kernels.items():
                    text, wall = _run(kc, TRAIN_CELL.format(epochs=epochs))
                    loop[name].append(float(text.split("elapsed", 1)[1].split()[0]))
                    cpu[name].append(float(text.split("cpu", 1)[1].split()[0]))
                    cell[name].append(wall)
        finally:
            for (km, kc), _ in kernels.values():
                kc.stop_channels()
                km.shutdown_kernel(now=True)
    g_loop, p_loop = statistics.median(loop["guarded"]), statistics.median(loop["plain"])
    g_cell, p_cell = statistics.median(cell["guarded"]), statistics.median(cell["plain"])
    if "sandboxed" in loop:
        s_loop, s_cell = statistics.median(loop["sandboxed"]), statistics.median(cell["sandboxed"])
        sandbox: dict[str, object] = {
            "loop_sandboxed_s": round(s_loop, 3),
            "cell_sandboxed_s": round(s_cell, 3),
            "sandboxed_loop_ratio": round(s_loop / p_loop, 3),
            "sandboxed_cell_ratio": round(s_cell / p_cell, 3),
            "sandboxed_loop_ratio_best": round(min(loop["sandboxed"]) / min(loop["plain"]), 3),
            "sandboxed_loop_cpu_ratio": round(
                statistics.median(cpu["sandboxed"]) / statistics.median(cpu["plain"]), 3
            ),
        }
    else:
        sandbox = {"sandboxed": "skipped: bubblewrap is missing (`make system`)"}
    return {
        "records": 20000,
        "epochs": epochs,
        "rounds": rounds,
        "loop_guarded_s": round(g_loop, 3),
        "loop_plain_s": round(p_loop, 3),
        "loop_ratio": round(g_loop / p_loop, 3),
        "cell_guarded_s": round(g_cell, 3),
        "cell_plain_s": round(p_cell, 3),
        "cell_ratio": round(g_cell / p_cell, 3),
        # The fastest round of each is the least disturbed by other load on the machine.
        "loop_ratio_best": round(min(loop["guarded"]) / min(loop["plain"]), 3),
        "loop_cpu_ratio": round(
            statistics.median(cpu["guarded"]) / statistics.median(cpu["plain"]), 3
        ),
        **sandbox,
        "target_ratio": 1.05,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--mb", type=int, default=100, help="model size for the checks benchmark")
    ap.add_argument("--rounds", type=int, default=3, help="alternating training rounds")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per training round")
    ap.add_argument("--skip-kernels", action="store_true", help="only the checks benchmark")
    ap.add_argument("--skip-checks", action="store_true", help="only the kernel benchmark")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results: dict[str, object] = {}
    if not args.skip_checks:
        results["release_checks"] = bench_checks(args.mb)
        print(json.dumps(results, indent=2), flush=True)
    if not args.skip_kernels:
        results["training_in_kernel"] = bench_training(args.rounds, args.epochs)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
