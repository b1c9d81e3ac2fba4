"""`bedside review --state <gateway --state-dir>`: requests across every session, found by ID,
and a clear refusal (with the fix) for decisions on a sealed session."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bedside._cli import main as bedside
from bedside.gateway.airlock import Airlock, Identity
from bedside.kernel.release import request_release
from bedside.ledger import Ledger, Signer, entries
from bedside.policy.release import ReleaseRules

ORIGIN = "hospital.example/bedside"


@pytest.fixture
def gateway_state(tmp_path):
    """A gateway --state-dir as the sentry leaves it: `<state>/<session>/` per session."""
    keys = tmp_path / "keys"
    keys.mkdir()
    signers = {}
    for name in ("custodian", "alice", "bob", "dana"):
        signers[name] = Signer.generate(name)
        signers[name].save(keys / f"{name}.key")
    root = tmp_path / "bedside-state"
    (root / "eg").mkdir(parents=True)  # the gateway's own home lives beside the sessions
    sessions = {}
    for sid in ("s-one", "s-two"):
        state = root / sid
        state.mkdir()
        ledger = Ledger.create(state / "session.ledger", session_id=sid, origin=ORIGIN)
        ledger.append(
            entries.header(
                session=sid,
                origin=ORIGIN,
                intent={"purpose": "counts"},
                policy_id="test",
                policy_digest="sha256:00",
                kernel_env="sha256:00",
                identities={"custodian": signers["custodian"].verifier_key},
            ),
            sync=True,
        )
        ledger.close()
        Airlock.configure(
            state,
            ledger=state / "session.ledger",
            key=keys / "custodian.key",
            workspace=tmp_path / f"workspace-{sid}",
            requester=Identity("dana", signers["dana"].verifier_key),
        )
        sessions[sid] = state
    return SimpleNamespace(root=root, keys=keys, sessions=sessions, tmp=tmp_path)


def _table_request(state, cohort, name):
    hospital = SimpleNamespace(
        policy=SimpleNamespace(release=ReleaseRules.from_dict(None)),
        outbox=state / "outbox",
        identifier_index=None,
    )
    table = cohort.frame.groupby("diabetes").size().to_frame("patients")
    ticket = request_release(hospital, table, name=name, kind="table")
    assert ticket.status == "submitted", ticket
    return ticket.id


def _decide(g, action, rid, who, *extra):
    return bedside(
        [
            "review",
            "--state",
            str(g.root),
            action,
            rid,
            "--as",
            who,
            "--key",
            str(g.keys / f"{who}.key"),
            *extra,
        ]
    )


def test_list_spans_every_session_and_decisions_find_the_session_by_id(
    gateway_state, cohort, capsys
):
    g = gateway_state
    one = _table_request(g.sessions["s-one"], cohort, "counts-one")
    two = _table_request(g.sessions["s-two"], cohort, "counts-two")

    assert bedside(["review", "--state", str(g.root), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(one in line and "s-one" in line and "pending" in line for line in lines)
    assert any(two in line and "s-two" in line and "pending" in line for line in lines)
    assert bedside(["review", "--state", str(g.root), "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[one]["session"] == "s-one" and rows[two]["session"] == "s-two"

    assert bedside(["review", "--state", str(g.root), "show", two]) == 0
    assert "session s-two" in capsys.readouterr().out
    assert _decide(g, "deny", one, "alice", "--reason", "not needed") == 0
    assert _decide(g, "approve", two, "alice") == 0
    assert _decide(g, "approve", two, "bob") == 0
    assert "delivered" in capsys.readouterr().out
    assert (g.tmp / "workspace-s-two" / "releases" / "counts-two.csv").is_file()
    assert not (g.tmp / "workspace-s-one" / "releases").exists()
    # each decision went into its own session's ledger
    for sid, step in (("s-one", "denial"), ("s-two", "delivery")):
        ledger = Ledger.open(g.sessions[sid] / "session.ledger")
        assert ledger.entry(ledger.size - 1)["step"] == step


def test_unknown_id_and_wrong_directory_name_the_fix(gateway_state, tmp_path, capsys):
    g = gateway_state
    assert bedside(["review", "--state", str(g.root), "show", "r-20260101000000-abcdef"]) == 1
    err = capsys.readouterr().err
    assert "any of the 2 sessions" in err and "bedside review list" in err
    assert bedside(["review", "--state", str(tmp_path / "keys"), "list"]) == 1
    assert "--state-dir" in capsys.readouterr().err


def test_decision_on_a_sealed_session_is_refused_with_the_fix(gateway_state, cohort, capsys):
    g = gateway_state
    rid = _table_request(g.sessions["s-one"], cohort, "late")
    assert bedside(["review", "--state", str(g.root), "list"]) == 0  # ingested while live
    capsys.readouterr()
    ledger = Ledger.open(g.sessions["s-one"] / "session.ledger")
    ledger.append(entries.seal(session="s-one"), sync=True)
    size = ledger.size
    ledger.close()

    assert bedside(["review", "--state", str(g.root), "list"]) == 0
    assert rid in capsys.readouterr().out
    assert _decide(g, "approve", rid, "alice") == 1
    err = capsys.readouterr().err
    assert "is sealed" in err and "--wait-releases" in err
    assert Ledger.open(g.sessions["s-one"] / "session.ledger").size == size
