"""`hospital.release` through a real guarded kernel (jupyter_client), then the airlock, two
custodians and `verify_release` — and what a researcher sees when a release is refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from bedside.gateway.airlock import Airlock, Identity
from bedside.ledger import Ledger, Signer, entries
from bedside.ledger.attestation import verify_release
from bedside.policy import load_policy
from tests._release_support import TRAIN, release_policy
from tests.kernel._client import Session, kernel_spec_dir
from tests.kernel._data import patients

pytestmark = pytest.mark.integration

POLICY = """\
version: bedside/v1
id: release-tests
datasets:
  patients:
    path: patients.parquet
    record_id: mrn
    identifiers: [mrn, name, dob, postcode, phone]
disclosure:
  min_cell_count: 10
outputs:
  mime_allow: [text/plain, text/html, image/png, application/json]
""" + release_policy()


@pytest.fixture(scope="module")
def hospital_kernel(tmp_path_factory):
    root = tmp_path_factory.mktemp("release-hospital")
    frame = patients(n=2000, seed=3)
    frame.to_parquet(root / "patients.parquet", index=False)
    (root / "policy.yaml").write_text(POLICY)
    state = root / "state"
    (state / "outbox").mkdir(parents=True)
    kernels = kernel_spec_dir(
        root,
        "bedside-release",
        root / "policy.yaml",
        env={"BEDSIDE_OUTBOX": str(state / "outbox")},
    )
    km = KernelManager(
        kernel_name="bedside-release",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
    )
    km.start_kernel(cwd=str(root))
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield root, state, frame, Session(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(session: Session, code: str):
    return session.request(lambda: session.kc.execute(textwrap.dedent(code)))


def test_model_released_from_the_guarded_kernel_is_verified(hospital_kernel, tmp_path):
    root, state, _, session = hospital_kernel
    assert "error" not in [m["header"]["msg_type"] for _, m in run(session, TRAIN).messages]
    reply = run(
        session,
        """\
        t = hospital.release(net, name="mortality", kind="model",
                             train=(X[:1500], y[:1500]), holdout=(X[1500:], y[1500:]))
        print(t.status, t.id)
    """,
    )
    shown = reply.shown()
    assert "submitted r-" in shown, shown
    request_id = shown.split("submitted ", 1)[1].split()[0]

    custodian, alice, bob = (Signer.generate(n) for n in ("hospital/custodian", "alice", "bob"))
    ledger = Ledger.create(tmp_path / "session.ledger", session_id="s-k", origin="hospital/x")
    ledger.append(
        entries.header(
            session="s-k",
            origin="hospital/x",
            intent={},
            policy_id="release-tests",
            policy_digest="sha256:00",
            kernel_env="sha256:00",
            identities={"custodian": custodian.verifier_key},
        ),
        sync=True,
    )
    policy = load_policy(root / "policy.yaml")
    lock = Airlock(
        state,
        ledger=ledger,
        signer=custodian,
        workspace=tmp_path / "ws",
        rules=policy.release,
        policy_id=policy.id,
        policy_digest=policy.digest,
        requester=Identity("dana"),
        n_records=2000,
    )
    req = lock.get(request_id)
    assert req.state == "pending", req.status["checks"]
    by_kernel = {c["check"] for c in req.status["checks"] if c["by"] == "kernel"}
    assert {"max_bytes", "record_shaped", "membership_inference"} <= by_kernel
    lock.approve(request_id, Identity("alice"), alice)
    lock.approve(request_id, Identity("bob"), bob)
    artifact = tmp_path / "ws" / "releases" / "mortality.safetensors"
    summary = verify_release(artifact, Path(f"{artifact}.intoto.json"), tmp_path / "session.ledger")
    assert summary["approvers"] == ["alice", "bob"]


def test_refused_release_names_the_check_and_never_the_records(hospital_kernel):
    _, _, frame, session = hospital_kernel
    reply = run(
        session,
        """\
        from sklearn.neighbors import KNeighborsClassifier
        knn = KNeighborsClassifier().fit(X[:1500], y[:1500])
        t = hospital.release(knn, name="knn", kind="model",
                             train=(X[:1500], y[:1500]), holdout=(X[1500:], y[1500:]))
        print(t)
    """,
    )
    shown = reply.shown()
    assert "refused" in shown and "instance_based" in shown and "_fit_X" in shown, shown
    # What reaches the client: no identifier value of any patient.
    text = reply.text()
    assert not any(m in text for m in frame["mrn"].head(200))


def test_tables_and_figures_pass_the_output_guard_before_release(hospital_kernel):
    root, state, frame, session = hospital_kernel
    reply = run(
        session,
        """\
        counts = df.groupby("ward").size().to_frame("patients")
        ok = hospital.release(counts, name="ward-counts", kind="table")
        raw = hospital.release(df[["mrn", "age"]].head(20), name="raw", kind="table")
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.hist(df["age"], bins=10)
        fig_ok = hospital.release(fig, name="ages", kind="figure")
        print(ok.status, raw.status, fig_ok.status)
        print([c.name for c in raw.refusals])
    """,
    )
    shown = reply.shown()
    assert "submitted refused submitted" in shown, shown
    assert "disclosure" in shown or "identifiers" in shown
    csv = (state / "outbox").glob("*/ward-counts.csv")
    assert next(csv).read_text().startswith("ward,patients")
    assert list((state / "outbox").glob("*/ages.png"))
