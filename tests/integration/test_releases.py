"""Releases from the researcher's side, on the real chain: jupyter_server + bedside extension →
Enterprise Gateway → sentry → sandboxed guarded kernel, all on loopback.

A torch model trained at the hospital is requested with `hospital.release`; custodians decide
with the `bedside review` CLI (a subprocess against the sentry's state directory, as they would
at the hospital); the researcher follows the requests and fetches through the extension's REST
API (`/bedside/sessions/{id}/releases`), and what lands in `releases/` verifies with
`bedside release verify`. A denied request cannot be fetched; an artifact swapped at the
hospital after approval (by someone without the custodian key) is refused on arrival and
leaves nothing in `releases/`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from bedside.extension._headless import KernelSession
from tests._release_support import bedside_cli, custodian_keys, review, train_and_release

from ._researcher import intent, researcher_server, study_session, write_notebook
from .conftest import Hospital, make_release_hospital

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Three requests of the small model, then a wide one of ~10 MB of parameters: more than one
# websocket message may carry (jupyter_server's gateway client drops messages over 10 MiB), so it
# comes in pieces
TRAIN = (
    train_and_release("mortality", "mortality-denied", "mortality-swapped")
    + """\
wide = torch.nn.Sequential(torch.nn.Linear(3, 1600), torch.nn.ReLU(), torch.nn.Linear(1600, 1600),
                           torch.nn.ReLU(), torch.nn.Linear(1600, 2))
opt = torch.optim.SGD(wide.parameters(), 1e-3)
for _ in range(5):
    opt.zero_grad(); torch.nn.functional.cross_entropy(wide(xt), yt).backward(); opt.step()
t = hospital.release(wide, name="mortality-wide", kind="model",
                     train=(X[:1500], y[:1500]), holdout=(X[1500:], y[1500:]))
print("mortality-wide", t.status, t.id)
"""
)
MAX_BYTES = "20 MB"  # the wide model


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    """The integration hospital with release rules: models are reviewed by two custodians."""
    return make_release_hospital(tmp_path_factory.mktemp("hospital"), max_bytes=MAX_BYTES)


async def until(client: KernelSession, path: str, ok: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.api("GET", path)
        if ok(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {answer}")
        await asyncio.sleep(0.3)


async def refused(client: KernelSession, path: str) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await client.api("POST", path)
    body = json.loads(info.value.response.body or b"{}")
    return info.value.code, str(body.get("message", ""))


def test_release_followed_fetched_and_verified(tmp_path, hospital, eg_gateway) -> None:
    notebooks = tmp_path / "nb"
    write_notebook(notebooks, [], eg_gateway.kernel_name, intent(model_job="mortality model"))
    keys = custodian_keys(tmp_path, "carol", "dave")
    report: dict[str, Any] = {}

    async def scenario() -> None:
        async with study_session(tmp_path, eg_gateway, notebooks) as (_, client):
            base = f"/bedside/sessions/{client.kernel_id}"
            reply, iopub = await client.execute(TRAIN, timeout=180)
            text = "".join(m["content"].get("text", "") for m in iopub)
            assert reply["content"]["status"] == "ok", (reply["content"], text)
            ids = {
                line.split()[0]: line.split()[2]
                for line in text.splitlines()
                if " submitted r-" in line
            }
            assert len(ids) == 4, text

            # The hospital's airlock checked them: all wait for two custodians.
            listed = await until(
                client,
                f"{base}/releases",
                lambda a: (
                    len(a["releases"]) == 4 and all(r["state"] == "pending" for r in a["releases"])
                ),
                "four pending requests",
            )
            row = next(r for r in listed["releases"] if r["id"] == ids["mortality"])
            assert row["label"] == "pending review (0 of 2 approvals)"
            assert row["kind"] == "model" and row["digest"].startswith("sha256:")
            # Nothing to fetch before the review.
            code, why = await refused(client, f"{base}/releases/{ids['mortality']}/fetch")
            assert code == 409 and "pending" in why and "0 of 2" in why, why

            session = (await client.api("GET", base))["session"]
            state = hospital.state / session
            approved = ("mortality", "mortality-swapped", "mortality-wide")
            for rid in (ids[n] for n in approved):
                done = review(state, "approve", rid, "--as", "carol", "--key", str(keys["carol"]))
                assert done.returncode == 0, done.stderr
            half = await until(
                client,
                f"{base}/releases",
                lambda a: any(
                    r["id"] == ids["mortality"] and r["approvals"] == ["carol"]
                    for r in a["releases"]
                ),
                "the first approval",
            )
            row = next(r for r in half["releases"] if r["id"] == ids["mortality"])
            assert row["state"] == "pending", row
            assert row["label"] == "approved 1 of 2, waiting for review"
            for rid in (ids[n] for n in approved):
                done = review(state, "approve", rid, "--as", "dave", "--key", str(keys["dave"]))
                assert done.returncode == 0, done.stderr
            done = review(
                state,
                "deny",
                ids["mortality-denied"],
                "--as",
                "carol",
                "--key",
                str(keys["carol"]),
                "--reason",
                "duplicate of the approved model",
            )
            assert done.returncode == 0, done.stderr
            listed = await until(
                client,
                f"{base}/releases",
                lambda a: {r["state"] for r in a["releases"]} == {"approved", "denied"},
                "the decisions",
            )
            rows = {r["id"]: r for r in listed["releases"]}
            assert rows[ids["mortality"]]["label"] == "approved 2 of 2: ready to fetch"
            denied = rows[ids["mortality-denied"]]
            assert denied["label"] == "denied: duplicate of the approved model"

            # A denied request cannot be fetched, and says why.
            code, why = await refused(client, f"{base}/releases/{ids['mortality-denied']}/fetch")
            assert code == 409 and "denied" in why and "duplicate" in why, why

            # The approved one: fetched into releases/, verified on arrival.
            fetched = await client.api("POST", f"{base}/releases/{ids['mortality']}/fetch")
            report["fetched"] = fetched
            # The notebook is closed (no websocket open): the server fetches over its own
            # connection to the gateway, and lists what it fetched.
            await client.close(shutdown=False)
            wide = f"{base}/releases/{ids['mortality-wide']}/fetch"
            report["wide"] = await client.api("POST", wide, timeout=180)
            after = await client.api("GET", f"{base}/releases")
            report["after"] = {r["id"]: r for r in after["releases"]}
            report["after_live"] = after["live"]

            # Someone at the hospital without the custodian key swaps an approved artifact
            # (and the digest the airlock noted): the sentry sends it, we refuse it.
            status_path = state / "outbox" / ids["mortality-swapped"] / "status.json"
            status = json.loads(status_path.read_text())
            delivered = Path(status["delivered"]["artifact"])
            swapped = bytearray(delivered.read_bytes())
            swapped[-1] ^= 0xFF
            delivered.write_bytes(bytes(swapped))
            import hashlib

            status["digest"] = "sha256:" + hashlib.sha256(bytes(swapped)).hexdigest()
            status_path.write_text(json.dumps(status))
            code, why = await refused(client, f"{base}/releases/{ids['mortality-swapped']}/fetch")
            report["swapped"] = (code, why)
            last = await client.api("GET", f"{base}/releases")
            report["last"] = {r["id"]: r for r in last["releases"]}
            report["ids"] = ids
            report["status"] = await client.api("GET", base)

    async def afterwards() -> dict[str, Any]:
        """A new server process knows the past session's releases from its own records."""
        with researcher_server(tmp_path, eg_gateway, notebooks) as server:
            client = KernelSession(server.url, server.token)
            kernel = report["status"]["kernel_id"]
            return await client.api("GET", f"/bedside/sessions/{kernel}/releases")

    asyncio.run(scenario())
    past = asyncio.run(afterwards())
    ids, fetched = report["ids"], report["fetched"]
    assert past["live"] is False
    states = {r["id"]: r["state"] for r in past["releases"]}
    assert states == {
        ids["mortality"]: "delivered",
        ids["mortality-wide"]: "delivered",
        ids["mortality-swapped"]: "failed",
    }
    folder = tmp_path / "nb" / "releases" / "mortality"
    assert fetched["path"] == "releases/mortality/"
    assert fetched["verified"] is True and fetched["approvers"] == ["carol", "dave"]
    assert fetched["custodian"] == hospital.verifier_key
    assert fetched["fetch_entries"], "the fetch is recorded in the ledger"
    artifact = folder / fetched["artifact"]
    assert artifact.name == "mortality.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            artifact.name,
            artifact.name + ".intoto.json",
            "session.ledger",
            "session.openings",
            "verification.json",
        ]
    )
    assert report["after_live"] is False  # listed from this server's own records
    assert report["after"][ids["mortality"]]["state"] == "delivered"
    assert report["after"][ids["mortality"]]["label"].startswith("delivered to releases/")

    # What landed verifies with the reviewer's command, trusting the ledger header's keys.
    verified = bedside_cli(
        "release",
        "verify",
        str(artifact),
        "--attestation",
        str(folder / (artifact.name + ".intoto.json")),
        "--ledger",
        str(folder / "session.ledger"),
    )
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert "approvers: carol, dave" in verified.stdout

    # The fetch replies are `output` entries of the researcher's own ledger copy.
    from bedside.ledger import Ledger

    mine = Ledger.open(tmp_path / "sessions" / report["status"]["kernel_id"] / "session.ledger")
    try:
        for index in fetched["fetch_entries"]:
            entry = mine.entry(index)
            assert entry["kind"] == "output"
            assert entry["msg_type"] == "bedside_release_fetch_reply"
    finally:
        mine.close()

    # The wide model (in base64, more than one websocket message may carry) came in three
    # pieces of at most 4 MiB, each one a ledger entry.
    wide = report["wide"]
    assert wide["verified"] is True and wide["size"] * 4 / 3 > 10 * 2**20
    assert len(wide["fetch_entries"]) == 3
    landed = tmp_path / "nb" / "releases" / "mortality-wide" / wide["artifact"]
    assert landed.stat().st_size == wide["size"]
    # Each fetch reply's entry commits to its piece's SHA-256, not its bytes: the artifact is
    # stored once, in releases/, and neither side's openings file holds a copy of it.
    import hashlib

    from bedside.ledger.openings import read_openings

    session_dir = tmp_path / "sessions" / report["status"]["kernel_id"]
    opened = read_openings(session_dir / "session.openings")
    data, offset = landed.read_bytes(), 0
    for index in wide["fetch_entries"]:
        piece = json.loads(opened[index].content)["content"]["data"]
        assert piece["sha256"] == hashlib.sha256(data[offset : offset + piece["bytes"]]).hexdigest()
        offset += piece["bytes"]
    assert offset == len(data)
    assert (session_dir / "session.openings").stat().st_size < wide["size"] / 4
    theirs = read_openings(hospital.state / report["status"]["session"] / "session.openings")
    for index in wide["fetch_entries"]:
        assert theirs[index].content == opened[index].content  # the same digest, no bytes

    # The swapped artifact: refused on arrival, nothing written, the reason shown.
    code, why = report["swapped"]
    assert code == 422 and "failed verification" in why and "changed after release" in why, why
    assert not (tmp_path / "nb" / "releases" / "mortality-swapped").exists()
    assert sorted(p.name for p in (tmp_path / "nb" / "releases").iterdir()) == [
        "mortality",
        "mortality-wide",
    ]
    row = report["last"][ids["mortality-swapped"]]
    assert row["state"] == "failed" and "changed after release" in row["label"]
