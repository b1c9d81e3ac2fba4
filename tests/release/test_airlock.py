"""The airlock end to end: a request from the kernel side, the trusted re-check, two custodians,
delivery with a signed attestation, and `bedside release verify` from the reviewer's side."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
import torch

from bedside._cli import main as bedside
from bedside.errors import LedgerIntegrityError, ReleaseError, SignatureError
from bedside.gateway.airlock import Airlock, Identity
from bedside.kernel.release import request_release
from bedside.ledger import Ledger, Signer, entries
from bedside.ledger.attestation import verify_release
from bedside.policy.release import ReleaseRules

from .test_checks import train_net

ORIGIN = "hospital.example/bedside"


@pytest.fixture
def session(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    signers = {}
    for name in ("hospital.example/custodian", "alice", "bob", "dana"):
        s = Signer.generate(name)
        short = name.rsplit("/", 1)[-1]
        s.save(keys / f"{short}.key")
        signers[short] = s
    ledger_path = tmp_path / "state" / "session.ledger"
    ledger_path.parent.mkdir()
    ledger = Ledger.create(ledger_path, session_id="s-test", origin=ORIGIN)
    ledger.append(
        entries.header(
            session="s-test",
            origin=ORIGIN,
            intent={"purpose": "diabetes risk model"},
            policy_id="test",
            policy_digest="sha256:00",
            kernel_env="sha256:00",
            identities={
                "custodian": signers["custodian"].verifier_key,
                "researcher": signers["dana"].verifier_key,
            },
        ),
        sync=True,
    )
    state = tmp_path / "state"
    workspace = tmp_path / "workspace"
    Airlock.configure(
        state,
        ledger=ledger_path,
        key=keys / "custodian.key",
        workspace=workspace,
        requester=Identity("dana", signers["dana"].verifier_key),
    )
    return SimpleNamespace(
        tmp=tmp_path,
        keys=keys,
        signers=signers,
        ledger=ledger,
        ledger_path=ledger_path,
        state=state,
        workspace=workspace,
    )


def airlock(session, **rules):
    return Airlock(
        session.state,
        ledger=session.ledger,
        signer=session.signers["custodian"],
        workspace=session.workspace,
        rules=ReleaseRules.from_dict(rules or None),
        policy_id="test",
        policy_digest="sha256:00",
        requester=Identity("dana", session.signers["dana"].verifier_key),
    )


def hospital(session, **rules):
    """The duck-typed part of the kernel's `hospital` object the release API reads."""
    return SimpleNamespace(
        policy=SimpleNamespace(release=ReleaseRules.from_dict(rules or None)),
        outbox=session.state / "outbox",
        identifier_index=None,
    )


def decide(session, verb: str, request_id: str, who: str, *extra: str, key: str = "") -> int:
    """`bedside review approve|deny REQUEST --as WHO --key KEY` (KEY: WHO's key unless `key`
    names another custodian's), in this process: the exit code."""
    key_file = session.keys / f"{key or who}.key"
    args = [verb, request_id, "--as", who, "--key", str(key_file), *extra]
    return bedside(["review", "--state", str(session.state), *args])


def release_entries(ledger):
    return [ledger.entry(i) for i in range(ledger.size) if ledger.entry(i)["kind"] == "release"]


def test_torch_model_is_requested_reviewed_delivered_and_verified(session, cohort, capsys):
    net = train_net(cohort.x_train, cohort.y_train)
    ticket = request_release(
        hospital(session),
        net,
        name="diabetes-risk",
        kind="model",
        producing_cells=[3, 4],
        train=(cohort.x_train, cohort.y_train),
        holdout=(cohort.x_test, cohort.y_test),
    )
    assert ticket.status == "submitted", ticket
    state = ["--state", str(session.state)]

    assert bedside(["review", *state, "list"]) == 0
    out = capsys.readouterr().out
    assert ticket.id in out and "pending" in out and "approvals 0/2" in out
    assert bedside(["review", *state, "show", ticket.id]) == 0
    assert "membership_inference" in capsys.readouterr().out

    assert decide(session, "approve", ticket.id, "alice") == 0
    assert "approval 1 of 2" in capsys.readouterr().out
    assert not (session.workspace / "releases").exists()
    assert decide(session, "approve", ticket.id, "bob") == 0
    assert "delivered" in capsys.readouterr().out

    artifact = session.workspace / "releases" / "diabetes-risk.safetensors"
    envelope = artifact.with_name(artifact.name + ".intoto.json")
    assert artifact.exists() and envelope.exists()
    stmt = json.loads(base64.b64decode(json.loads(envelope.read_text())["payload"]))
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["subject"][0]["name"] == "diabetes-risk.safetensors"
    assert stmt["subject"][0]["digest"]["sha256"] == ticket.digest
    assert [a["name"] for a in stmt["predicate"]["approvers"]] == ["alice", "bob"]
    assert stmt["predicate"]["requester"]["name"] == "dana"

    # Every step is a release entry in the ledger.
    steps = [
        e["step"]
        for e in Ledger.open(session.ledger_path)
        and release_entries(Ledger.open(session.ledger_path))
    ]
    assert steps == ["request", "checks", "approval", "approval", "delivery"]

    assert (
        bedside(
            [
                "release",
                "verify",
                str(artifact),
                "--attestation",
                str(envelope),
                "--ledger",
                str(session.ledger_path),
            ]
        )
        == 0
    )
    assert "OK diabetes-risk.safetensors" in capsys.readouterr().out
    # The researcher loads the weights back without pickle.
    from safetensors.torch import load_file

    assert torch.equal(load_file(artifact)["0.weight"], net.state_dict()["0.weight"])


def _submit(session, net, cohort, **rules):
    return request_release(
        hospital(session, **rules),
        net,
        name="m",
        kind="model",
        train=(cohort.x_train, cohort.y_train),
        holdout=(cohort.x_test, cohort.y_test),
    )


def test_requester_cannot_approve_and_one_custodian_counts_once(session, cohort, capsys):
    ticket = _submit(session, train_net(cohort.x_train, cohort.y_train), cohort)
    assert decide(session, "approve", ticket.id, "dana") == 1
    assert "two_person_rule: dana requested" in capsys.readouterr().err
    # The requester's key under another name is still the requester.
    assert decide(session, "approve", ticket.id, "not-dana", key="dana") == 1
    assert "two_person_rule" in capsys.readouterr().err
    assert decide(session, "approve", ticket.id, "alice") == 0
    assert decide(session, "approve", ticket.id, "alice") == 1
    assert "already approved" in capsys.readouterr().err
    assert not (session.workspace / "releases").exists()


def test_denial_is_recorded_and_final(session, cohort, capsys):
    ticket = _submit(session, train_net(cohort.x_train, cohort.y_train), cohort)
    state = ["--state", str(session.state)]
    assert decide(session, "deny", ticket.id, "alice", "--reason", "no DPIA") == 0
    assert bedside(["review", *state, "approve", ticket.id, "--as", "bob"]) == 1
    assert "is denied" in capsys.readouterr().err
    denial = release_entries(Ledger.open(session.ledger_path))[-1]
    assert denial["step"] == "denial" and denial["reason"] == "no DPIA"


@pytest.mark.parametrize("case", ["knn", "buffer", "oversized"])
def test_refused_requests_never_reach_review(session, cohort, case):
    from sklearn.neighbors import KNeighborsClassifier

    rules = {}
    if case == "knn":
        model = KNeighborsClassifier().fit(cohort.x_train, cohort.y_train)
        check = "instance_based"
    elif case == "buffer":
        model = train_net(cohort.x_train, cohort.y_train)
        model.register_buffer("cache", torch.tensor(cohort.x_train[:40]))
        check = "training_rows"
    else:
        model = train_net(cohort.x_train, cohort.y_train, hidden=512, epochs=1)
        rules = {"model": {"max_bytes": 4000}}
        check = "max_bytes"
    ticket = _submit(session, model, cohort, **rules)
    assert ticket.refused and check in [c.name for c in ticket.refusals]
    lock = airlock(session, **rules)
    req = lock.get(ticket.id)
    assert req.state == "refused"
    assert check in req.summary()["refusals"]
    with pytest.raises(ReleaseError, match=f"refused by: .*{check}"):
        lock.approve(ticket.id, Identity("alice"))
    checks = [e for e in release_entries(session.ledger) if e["step"] == "checks"][-1]
    assert checks["passed"] is False
    assert any(c["check"] == check and not c["passed"] for c in checks["checks"])


def test_airlock_recheck_catches_what_a_lying_kernel_hides(session, cohort):
    """Hostile kernel code can write request.json itself; the airlock reads the bytes."""
    net = train_net(cohort.x_train, cohort.y_train)
    net.register_buffer("everyone", torch.zeros(600, 4))
    lock = airlock(session)
    lock.n_records = 600  # the records of the loaded datasets, known to the trusted side
    ticket = request_release(
        hospital(session, model={"mia_auc_max": None}), net, name="m", kind="model"
    )  # no training data given: the kernel sees nothing
    assert ticket.status == "submitted"
    req = lock.get(ticket.id)
    assert req.state == "refused"
    airlock_checks = {c["check"]: c for c in req.status["checks"] if c["by"] == "airlock"}
    assert "(600)" in airlock_checks["record_shaped"]["evidence"]


def _deliver(session, cohort):
    ticket = _submit(session, train_net(cohort.x_train, cohort.y_train), cohort)
    lock = airlock(session)
    lock.approve(ticket.id, Identity("alice"), session.signers["alice"])
    lock.approve(ticket.id, Identity("bob"), session.signers["bob"])
    artifact = session.workspace / "releases" / "m.safetensors"
    return artifact, artifact.with_name("m.safetensors.intoto.json")


def test_tampered_artifact_fails_verification(session, cohort):
    artifact, envelope = _deliver(session, cohort)
    verify_release(artifact, envelope, session.ledger_path)
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 1
    artifact.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="the artifact was changed after release"):
        verify_release(artifact, envelope, session.ledger_path)


def test_tampered_attestation_fails_verification(session, cohort):
    artifact, envelope = _deliver(session, cohort)
    env = json.loads(envelope.read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["approvers"].append({"name": "carol"})
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    envelope.write_text(json.dumps(env))
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        verify_release(artifact, envelope, session.ledger_path)


def test_attestation_signed_by_another_key_fails(session, cohort):
    artifact, envelope = _deliver(session, cohort)
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        verify_release(
            artifact, envelope, session.ledger_path, keys=[session.signers["alice"].verifier_key]
        )


def test_attestation_against_another_ledger_fails(session, cohort, tmp_path):
    artifact, envelope = _deliver(session, cohort)
    (tmp_path / "other").mkdir()
    # The same session replayed with one approver changed: a forged copy of the ledger.
    other = Ledger.create(tmp_path / "other" / "session.ledger", session_id="s-test", origin=ORIGIN)
    for i in range(session.ledger.size):
        e = dict(session.ledger.entry(i))
        if e.get("step") == "delivery":
            e["approvers"] = ["mallory"]
        other.append(e, sync=True)
    with pytest.raises(LedgerIntegrityError, match="changed|differs"):
        verify_release(
            artifact,
            envelope,
            tmp_path / "other" / "session.ledger",
            keys=[session.signers["custodian"].verifier_key],
        )


def test_live_session_custodians_queue_signed_decisions_the_sentry_applies(session, cohort, capsys):
    """While the sentry owns the ledger, `bedside review` never appends to it: decisions are
    queued, signed, and the sentry's airlock verifies and records them."""
    import os

    Airlock.configure(
        session.state,
        ledger=session.ledger_path,
        key=session.keys / "custodian.key",
        workspace=session.workspace,
        requester=Identity("dana", session.signers["dana"].verifier_key),
        owner_pid=os.getpid(),
    )  # this test process plays the sentry
    sentry = airlock(session)
    ticket = _submit(session, train_net(cohort.x_train, cohort.y_train), cohort)
    sentry.poll()
    size = session.ledger.size
    state = ["--state", str(session.state)]
    assert bedside(["review", *state, "approve", ticket.id, "--as", "alice"]) == 1
    assert "must be signed" in capsys.readouterr().err
    for who in ("dana", "alice", "bob"):
        assert decide(session, "approve", ticket.id, who) == 0
        assert "queued" in capsys.readouterr().out
    assert session.ledger.size == size  # nothing appended by the CLI
    log = sentry.poll()
    assert any("rejected: two_person_rule: dana" in line for line in log)
    assert sum("applied" in line for line in log) == 2
    assert bedside(["review", *state, "show", ticket.id]) == 0
    out = capsys.readouterr().out
    assert "delivered to" in out and "rejected: two_person_rule" in out
    artifact = session.workspace / "releases" / "m.safetensors"
    verify_release(artifact, artifact.with_name("m.safetensors.intoto.json"), session.ledger_path)
    # A forged decision (signature by another key) is rejected, not applied.
    ticket2 = _submit(session, train_net(cohort.x_train, cohort.y_train), cohort)
    sentry.poll()
    path = Airlock.queue_decision(
        session.state, ticket2.id, "approve", Identity("carol"), session.signers["alice"]
    )
    forged = json.loads(path.read_text())
    forged["key"] = session.signers["bob"].verifier_key
    path.write_text(json.dumps(forged))
    assert any("rejected" in line for line in sentry.poll())
    assert sentry.get(ticket2.id).status["approvals"] == []


def test_kernel_text_carrying_identifiers_never_reaches_the_ledger(session, cohort):
    """A hostile kernel writes patient identifiers into its check report: the request is
    refused and no identifier value is written to the ledger (which leaves the hospital)."""
    mrns = list(cohort.frame["mrn"])
    ticket = _submit(session, train_net(cohort.x_train, cohort.y_train), cohort)
    path = session.state / "outbox" / ticket.id / "request.json"
    body = json.loads(path.read_text())
    body["checks"][0]["evidence"] = "fine, patients " + ", ".join(mrns[:20])
    path.write_text(json.dumps(body))
    lock = airlock(session)
    known = {m.lower() for m in mrns}
    lock.find_identifier = lambda text: next(
        (w for w in text.replace(",", " ").lower().split() if w in known), None
    )
    req = lock.get(ticket.id)
    assert req.state == "refused"
    assert "request" in req.summary()["refusals"]
    evidence = {c["check"]: c["evidence"] for c in req.status["checks"]}
    assert "identifier values" in evidence["request"]
    raw = session.ledger_path.read_bytes()
    assert not any(m.encode() in raw for m in mrns)


def test_airlock_accepts_sound_sklearn_models_and_refuses_foreign_types(session, cohort):
    """Trees and boosting predictors are scikit-learn internals skops does not trust by default;
    the airlock accepts them, and refuses a type from outside scikit-learn."""
    import fractions
    import hashlib

    import skops.io
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    lock = airlock(session)
    for model in (
        RandomForestClassifier(n_estimators=5, min_samples_leaf=20, random_state=0),
        HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=20),
    ):
        model.fit(cohort.x_train, cohort.y_train)
        data = skops.io.dumps(model)
        digest = hashlib.sha256(data).hexdigest()
        results = lock.recheck({"kind": "model", "format": "skops", "digest": digest}, data, digest)
        assert all(r.passed for r in results), [r for r in results if not r.passed]
    model = RandomForestClassifier(n_estimators=2, min_samples_leaf=20).fit(
        cohort.x_train, cohort.y_train
    )
    model.smuggled = fractions.Fraction(1, 3)  # a type from outside sklearn
    data = skops.io.dumps(model)
    results = {r.name: r for r in lock.recheck({"kind": "model", "format": "skops"}, data, "")}
    assert not results["format"].passed and "fractions.Fraction" in results["format"].evidence


def test_auto_mode_delivers_a_passing_table_without_review(session, cohort):
    rules = {"table": {"mode": "auto"}}
    table = cohort.frame.groupby("diabetes").size().to_frame("patients")
    ticket = request_release(hospital(session, **rules), table, name="counts", kind="table")
    lock = airlock(session, **rules)
    req = lock.get(ticket.id)
    assert req.state == "delivered" and req.status["approvals"] == []
    artifact = session.workspace / "releases" / "counts.csv"
    summary = verify_release(
        artifact, artifact.with_name("counts.csv.intoto.json"), session.ledger_path
    )
    assert summary["approvers"] == []
