"""Releases on the gateway path: `hospital.release` in the sandboxed guarded kernel behind the
sentry, the airlock in the sentry, custodians with `bedside review` (a subprocess against the
sentry's state directory), and the researcher fetching the approved artifact over the shell
channel and verifying it with `bedside release verify`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    Client,
    Mirror,
    make_hospital,
    make_patients,
    start_sentry,
)

from bedside.ledger import Ledger  # noqa: E402
from tests._release_support import (  # noqa: E402
    bedside_cli,
    custodian_keys,
    release_policy,
    review,
    train_and_release,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: `make system`"),
]

TRAIN = train_and_release("mortality")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentry-release")
    hospital = make_hospital(root / "hospital", frame=make_patients(2000, seed=11))
    hospital.policy.write_text(hospital.policy.read_text() + release_policy())
    sentry = start_sentry(
        hospital,
        root / "run",
        sandbox=True,
        kernel="guarded",
        extra_env={"KERNEL_USERNAME": "dana"},
    )
    client = None
    try:
        client = Client.connect(sentry)
        yield hospital, sentry, client, root
    finally:
        if client is not None:
            client.close()
        sentry.stop()


def shown(outputs: list[dict]) -> str:
    return "".join(
        m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream"
    ) + "".join(
        json.dumps(m["content"]) for m in outputs if m["msg_type"] in ("error", "execute_result")
    )


def session_dir(hospital) -> Path:
    (found,) = [p.parent for p in hospital.state.glob("*/airlock.json")]
    return found


def wait_for(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def release_rows(client: Client) -> dict[str, dict]:
    reply = client.request("bedside_release_status_request", {})
    assert reply["content"]["status"] == "ok", reply["content"]
    return {r["id"]: r for r in reply["content"]["releases"]}


def test_model_release_reviewed_fetched_and_verified(session, tmp_path):
    hospital, sentry, client, _ = session
    reply, outputs = client.execute(TRAIN, timeout=150)
    text = shown(outputs)
    assert reply["content"]["status"] == "ok", text
    assert "submitted r-" in text, text
    request_id = text.split("submitted ", 1)[1].split()[0]
    state = session_dir(hospital)

    # The sentry's airlock checks it and records it; the researcher sees it pending.
    rows = wait_for(
        lambda: (r := release_rows(client)).get(request_id, {}).get("status") == "pending" and r,
        "the airlock to check the request",
    )
    assert rows[request_id]["required"] == 2
    listed = review(state, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout) if r["id"] == request_id] == ["pending"]

    # Not yet approved: nothing to fetch.
    early = client.request("bedside_release_fetch_request", {"id": request_id})
    assert early["content"]["status"] == "error" and "pending" in early["content"]["evalue"]

    keys = custodian_keys(tmp_path, "dana", "alice", "bob")

    # The requester cannot approve her own request.
    own = review(state, "approve", request_id, "--as", "dana", "--key", str(keys["dana"]))
    assert own.returncode == 0, own.stderr
    outcome = wait_for(
        lambda: list((state / "outbox" / request_id / "decisions").glob("*.outcome")),
        "the sentry to apply the requester's decision",
    )
    assert "two_person_rule" in outcome[0].read_text()
    for name in ("alice", "bob"):
        done = review(state, "approve", request_id, "--as", name, "--key", str(keys[name]))
        assert done.returncode == 0, done.stderr
    wait_for(
        lambda: release_rows(client)[request_id]["status"] == "delivered",
        "two approvals to deliver the release",
    )
    fetched = client.request("bedside_release_fetch_request", {"id": request_id})["content"]
    assert fetched["status"] == "ok", fetched
    artifact = tmp_path / fetched["filename"]
    artifact.write_bytes(base64.b64decode(fetched["data"]))
    envelope = tmp_path / (fetched["filename"] + ".intoto.json")
    envelope.write_text(json.dumps(fetched["attestation"]))
    # The researcher's copy of the ledger, rebuilt from the receipts alone, holds every
    # release step: the attestation verifies against it.
    mirror = Mirror(tmp_path / "mirror.ledger", hospital.signer.verifier_key)
    for channel, msg in client.received:
        mirror.feed(channel, msg)
    mirror.finish().close()
    verified = bedside_cli(
        "release",
        "verify",
        str(artifact),
        "--attestation",
        str(envelope),
        "--ledger",
        str(tmp_path / "mirror.ledger"),
        "--key",
        hospital.signer.verifier_key,
    )
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert "approvers: alice, bob" in verified.stdout
    # Every release step is in the hospital ledger.
    ledger = Ledger.open(sentry.ledger_path())
    steps = [
        e.get("step")
        for e in (ledger.entry(i) for i in range(ledger.size))
        if e.get("kind") == "release" and e.get("request") == request_id
    ]
    assert steps == ["request", "checks", "approval", "approval", "delivery"]


def test_knn_is_refused_with_the_check_named(session):
    _, _, client, _ = session
    reply, outputs = client.execute(
        textwrap.dedent(
            """\
            from sklearn.neighbors import KNeighborsClassifier
            knn = KNeighborsClassifier().fit(X[:1500], y[:1500])
            t = hospital.release(knn, name="knn", kind="model",
                                 train=(X[:1500], y[:1500]), holdout=(X[1500:], y[1500:]))
            print(t.status, t.id, [c.name for c in t.refusals])
            """
        ),
        timeout=120,
    )
    text = shown(outputs)
    assert "refused" in text and "instance_based" in text, text
    request_id = text.split("refused ", 1)[1].split()[0]
    rows = wait_for(
        lambda: (r := release_rows(client)).get(request_id, {}).get("status") == "refused" and r,
        "the airlock to refuse the k-NN model",
    )
    assert "instance_based" in rows[request_id]["refusals"]
    fetch = client.request("bedside_release_fetch_request", {"id": request_id})["content"]
    assert fetch["status"] == "error" and "refused" in fetch["evalue"]


def test_kernel_reaches_neither_other_outboxes_nor_the_custodian_key(session):
    hospital, _, client, _ = session
    other = hospital.state / "other-session" / "outbox"
    other.mkdir(parents=True)
    mine = session_dir(hospital)
    reply, outputs = client.execute(
        textwrap.dedent(
            f"""\
            import os
            from pathlib import Path
            for label, path in [("key", {str(hospital.key)!r}),
                                ("airlock", {str(mine / "airlock.json")!r}),
                                ("ledger", {str(mine / "session.ledger")!r})]:
                try:
                    Path(path).read_bytes(); print(label, "READ")
                except OSError as exc:
                    print(label, "denied", type(exc).__name__)
            for label, path in [("other", {str(other / "x")!r}),
                                ("airlock-outbox", {str(mine / "outbox" / "x")!r})]:
                try:
                    Path(path).write_text("x"); print(label, "WROTE")
                except OSError as exc:
                    print(label, "denied", type(exc).__name__)
            print("outbox", os.environ["BEDSIDE_OUTBOX"].endswith("kernel-outbox"))
            """
        )
    )
    text = shown(outputs)
    assert reply["content"]["status"] == "ok", text
    for label in ("key", "airlock", "ledger", "other", "airlock-outbox"):
        assert f"{label} denied" in text, text
    assert "READ" not in text and "WROTE" not in text
    assert "outbox True" in text
    assert list(other.iterdir()) == []
    assert not (mine / "outbox" / "x").exists()
    assert os.path.exists(hospital.key)


def test_hostile_request_names_and_links_do_not_leave(session):
    hospital, _, client, _ = session
    reply, outputs = client.execute(
        textwrap.dedent(
            f"""\
            import json, os
            from pathlib import Path
            df = hospital.load("patients")
            rid = "r-20260101000000-abcdef"
            d = Path(os.environ["BEDSIDE_OUTBOX"]) / rid
            d.mkdir()
            (d / "x.csv").write_text("a\\n1\\n")
            (d / "status.json").symlink_to({str(hospital.key)!r})
            body = {{"id": rid, "name": str(df.mrn.iloc[0]), "kind": "table", "format": "csv",
                     "filename": "x.csv", "size": str(df.mrn.iloc[1]), "checks": []}}
            (d / "request.json").write_text(json.dumps(body))
            """
        )
    )
    assert reply["content"]["status"] == "ok", shown(outputs)
    row = wait_for(
        lambda: release_rows(client).get("r-20260101000000-abcdef"), "the planted request"
    )
    assert row["name"] == "[withheld]" and row["size"] is None
    text = json.dumps(client.received[-1][1]["content"])
    assert not any(m in text for m in hospital.frame["mrn"].head(5))
    # The planted link was not copied: the airlock checked the request itself.
    assert row["status"] in ("pending", "refused") and row["digest"].startswith("sha256:")
