"""End to end against a JSON-RPC dev chain on loopback (ganache 7.9.2 from node_modules), through
`bedside.ledger.anchor.connect`: the same HTTP provider code a user points at Polygon."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak

from bedside.errors import AnchorError
from bedside.ledger import Ledger, Signer
from bedside.ledger import anchor as A
from bedside.ledger import entries as E
from tests._release_support import bedside_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GANACHE = ROOT / "node_modules" / "ganache" / "dist" / "node" / "cli.js"
CHAIN_ID = 1337
# ganache --wallet.deterministic: the well-known test mnemonic's first two accounts.
KEY_0 = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"
KEY_1 = "0x6cbed15c793ce57650b9877cf6fa156fbef513c4e6134f022a85b1ffdd59b2a1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
        return json.loads(response.read())["result"]


@pytest.fixture(scope="module")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ganache dev chain on a free loopback port; stopped (and reaped) after the module."""
    with start_devchain(tmp_path_factory.mktemp("ganache")) as url:
        yield url


@contextlib.contextmanager
def start_devchain(directory: Path) -> Iterator[str]:
    """Run ganache on a free loopback port (log in `directory`); its URL; stopped on exit."""
    node = shutil.which("node")
    if node is None or not GANACHE.exists():
        pytest.fail("node and node_modules/ganache are needed: run `make npm`")
    log = directory / "ganache.log"
    for _attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    node,
                    str(GANACHE),
                    "--server.host=127.0.0.1",
                    f"--server.port={port}",
                    f"--chain.chainId={CHAIN_ID}",
                    "--wallet.deterministic",
                    "--wallet.totalAccounts=3",
                    "--logging.quiet",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if int(_rpc(url, "eth_chainId"), 16) == CHAIN_ID:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            proc.kill()
            proc.wait()
            continue  # port taken in between, or a slow start: try another port
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pytest.fail(f"ganache did not start; its log:\n{log.read_text(errors='replace')}")


def key_file(tmp_path: Path, key: str, name: str = "submitter.key") -> Path:
    path = tmp_path / name
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def make_note(origin: str, size: int) -> bytes:
    root = base64.b64encode(hashlib.sha256(f"{origin}/{size}".encode()).digest()).decode()
    return f"{origin}\n{size}\n{root}\n\n\u2014 hospital AAAA\n".encode()


@pytest.fixture(scope="module")
def deployed(devchain: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keys = tmp_path_factory.mktemp("keys")
    account = A.load_key(key_file(keys, KEY_0))
    w3 = A.connect(devchain)
    contract = A.deploy_contract(w3, account)
    return {"w3": w3, "account": account, "contract": contract, "keys": keys}


def test_single_anchor_over_http(devchain: str, deployed: dict[str, Any]) -> None:
    w3, account, contract = deployed["w3"], deployed["account"], deployed["contract"]
    assert w3.eth.chain_id == CHAIN_ID
    note = make_note("hospital.example/bedside/e2e", 12)
    entry = A.anchor_checkpoint(w3, contract, account, note, 12).to_entry(5, session="s")
    assert entry["chain_id"] == CHAIN_ID and entry["submitter"] == account.address

    # Only the selector, the checkpoint hash and the size went on chain.
    tx = _rpc(devchain, "eth_getTransactionByHash", [entry["tx"]])
    selector = keccak(text="anchor(bytes32,uint64)")[:4]
    sent = bytes.fromhex(tx["input"][2:])
    assert sent == selector + hashlib.sha256(note).digest() + (12).to_bytes(32, "big")

    A.verify_anchor_entry(
        entry, note, devchain, expected_contract=contract, expected_submitter=account.address
    )
    with pytest.raises(AnchorError, match="not enough confirmations"):
        A.verify_anchor_entry(entry, note, devchain, confirmations=3)
    _rpc(devchain, "evm_mine", [])
    _rpc(devchain, "evm_mine", [])
    A.verify_anchor_entry(entry, note, devchain, confirmations=3)
    with pytest.raises(AnchorError, match=r"^wrong chain: the anchor is on chain id 137 "):
        A.verify_anchor_entry(entry | {"chain_id": 137}, note, devchain)
    other = A.load_key(key_file(deployed["keys"], KEY_1, "other.key")).address
    with pytest.raises(AnchorError, match="^wrong submitter"):
        A.verify_anchor_entry(entry, note, devchain, expected_submitter=other)


def test_finalized_block(devchain: str, deployed: dict[str, Any]) -> None:
    note = make_note("hospital.example/bedside/final", 2)
    w3 = deployed["w3"]
    entry = A.anchor_checkpoint(w3, deployed["contract"], deployed["account"], note, 2).to_entry(
        1, session="s"
    )
    # ganache treats the latest block as finalized: the check runs the same RPC call Polygon gets.
    A.verify_anchor_entry(entry, note, devchain, finalized=True)


def test_batch_anchor_over_http(devchain: str, deployed: dict[str, Any]) -> None:
    w3 = deployed["w3"]
    notes = [(make_note(f"hospital.example/bedside/batch{i}", 3 + i), 3 + i) for i in range(3)]
    receipts = A.anchor_batch(w3, deployed["contract"], deployed["account"], notes)
    assert len({r.tx for r in receipts}) == 1
    for i, (receipt, (note, _)) in enumerate(zip(receipts, notes, strict=True)):
        A.verify_anchor_entry(receipt.to_entry(i, session="s"), note, devchain)
    entry = receipts[2].to_entry(2, session="s")
    proof = [("f" if p[0] != "f" else "e") + p[1:] for p in entry["proof"]]
    with pytest.raises(AnchorError, match="does not lead to the anchored root"):
        A.verify_anchor_entry(entry | {"proof": proof}, notes[2][0], devchain)


# --- the commands, end to end -------------------------------------------------------------


def bedside(*args: str) -> subprocess.CompletedProcess[str]:
    return bedside_cli(*args, timeout=180)


def test_deploy_command_prints_the_address(devchain: str, tmp_path: Path) -> None:
    result = bedside("ledger", "deploy", "--rpc", devchain, "--key", str(key_file(tmp_path, KEY_1)))
    assert result.returncode == 0, result.stderr
    address = result.stdout.strip()
    w3 = A.connect(devchain)
    assert w3.is_checksum_address(address) and w3.eth.get_code(address)


def make_ledger(path: Path, custodian: Signer, name: str, *, seal: bool = False) -> None:
    session, origin = name, f"hospital.example/bedside/{name}"
    with Ledger.create(path, session_id=session, origin=origin) as ledger:
        ledger.append(
            E.header(
                session=session,
                origin=origin,
                intent={"purpose": "anchoring test"},
                policy_id="test-policy",
                policy_digest="sha256:" + "ab" * 32,
                kernel_env="sha256:" + "cd" * 32,
                identities={"custodian": custodian.verifier_key},
            )
        )
        ledger.append(E.metering(session=session, counters={"cells": 1}))
        ledger.append_checkpoint(ledger.sign_checkpoint(custodian))
        if seal:
            # As the sentry closes a session: the seal, then the final checkpoint covering it.
            ledger.append(E.seal(session=session))
            ledger.append_checkpoint(ledger.sign_checkpoint(custodian))
        ledger.flush()


@pytest.fixture()
def custodian_key(tmp_path: Path) -> tuple[Signer, Path]:
    signer = Signer.generate("custodian")
    pub = tmp_path / "custodian.pub"
    pub.write_text(signer.verifier_key + "\n")
    return signer, pub


def test_anchor_command_appends_an_entry_that_verify_checks_on_chain(
    devchain: str, deployed: dict[str, Any], tmp_path: Path, custodian_key: tuple[Signer, Path]
) -> None:
    signer, pub = custodian_key
    path = tmp_path / "s1.ledger"
    make_ledger(path, signer, "s1")
    key = key_file(tmp_path, KEY_0)
    common = ["--rpc", devchain, "--contract", deployed["contract"], "--key", str(key)]

    result = bedside("ledger", "anchor", str(path), *common)
    assert result.returncode == 0, result.stderr
    assert "checkpoint entry 2 anchored on chain 1337" in result.stdout
    with Ledger.open(path) as ledger:
        entry = ledger.entry(ledger.size - 1)
        note = ledger.entry(2)["note"].encode()
    assert entry["kind"] == "anchor" and entry["checkpoint_index"] == 2
    assert entry["checkpoint_hash"] == hashlib.sha256(note).hexdigest()
    assert entry["submitter"] == deployed["account"].address and "batch_index" not in entry

    verified = bedside("ledger", "verify", str(path), "--key", str(pub), "--rpc", devchain)
    assert verified.returncode == 0, verified.stderr
    assert "verified on chain" in verified.stdout

    # The same checkpoint is not anchored twice through the same contract (no gas spent).
    nonce = deployed["w3"].eth.get_transaction_count(deployed["account"].address)
    again = bedside("ledger", "anchor", str(path), *common)
    assert again.returncode == 1
    assert "already anchored on chain 1337 by entry 3; sign a new checkpoint" in again.stderr
    assert deployed["w3"].eth.get_transaction_count(deployed["account"].address) == nonce


def test_batch_command_anchors_several_ledgers_in_one_transaction(
    devchain: str, deployed: dict[str, Any], tmp_path: Path, custodian_key: tuple[Signer, Path]
) -> None:
    signer, pub = custodian_key
    paths = [tmp_path / f"b{i}.ledger" for i in range(3)]
    for i, path in enumerate(paths):
        make_ledger(path, signer, f"b{i}")
    key = key_file(tmp_path, KEY_0)
    result = bedside(
        "ledger", "anchor", str(paths[0]), "--batch", str(paths[1]), str(paths[2]),
        "--rpc", devchain, "--contract", deployed["contract"], "--key", str(key),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = []
    for path in paths:
        with Ledger.open(path) as ledger:
            entries.append(ledger.entry(ledger.size - 1))
    assert len({e["tx"] for e in entries}) == 1
    assert [e["batch_index"] for e in entries] == [0, 1, 2]
    assert all(e["batch_size"] == 3 == e["size"] for e in entries)
    for path in paths:
        verified = bedside("ledger", "verify", str(path), "--key", str(pub), "--rpc", devchain)
        assert verified.returncode == 0, verified.stderr


def test_anchor_command_refuses_before_paying_gas(
    devchain: str, deployed: dict[str, Any], tmp_path: Path, custodian_key: tuple[Signer, Path]
) -> None:
    signer, _ = custodian_key
    plain = tmp_path / "plain.ledger"
    make_ledger(plain, signer, "plain")
    key = key_file(tmp_path, KEY_0)
    common = ["--rpc", devchain, "--contract", deployed["contract"], "--key", str(key)]
    w3, address = deployed["w3"], deployed["account"].address
    nonce = w3.eth.get_transaction_count(address)

    empty = tmp_path / "empty.ledger"
    Ledger.create(empty, session_id="e", origin="hospital.example/bedside/e").close()
    result = bedside("ledger", "anchor", str(empty), *common)
    assert result.returncode == 1 and "holds no signed checkpoint" in result.stderr

    bad = ["--rpc", devchain, "--contract", "0xnot-an-address", "--key", str(key)]
    result = bedside("ledger", "anchor", str(plain), *bad)
    assert result.returncode == 1 and "is not an address" in result.stderr

    key.chmod(0o644)
    result = bedside("ledger", "anchor", str(empty), *common)
    assert result.returncode == 1 and "chmod 600" in result.stderr
    assert w3.eth.get_transaction_count(address) == nonce


def rewrite_last_entry(src: Path, dst: Path, **changes: Any) -> int:
    """Copy the ledger `src` to `dst` with its last entry's fields changed: a well-formed ledger
    (checksums, order, canonical JSON all fine) whose anchor entry lies."""
    with Ledger.open(src) as ledger:
        stored = [ledger.entry(i) for i in range(ledger.size)]
        session, origin = ledger.session_id, ledger.origin
    with Ledger.create(dst, session_id=session, origin=origin) as copy:
        for entry in stored[:-1]:
            copy.append(entry)
        at = copy.append(stored[-1] | changes)
        copy.flush()
    return at


def test_sealed_ledger_anchored_by_the_cli_verifies_on_chain_and_lies_are_named(
    devchain: str, deployed: dict[str, Any], tmp_path: Path, custodian_key: tuple[Signer, Path]
) -> None:
    """The whole path a reviewer takes: a sealed session's final checkpoint is anchored with
    `bedside ledger anchor`, `bedside ledger verify --rpc` checks it on chain with every option,
    and an altered anchor entry, another contract or another submitter fail naming the entry."""
    signer, pub = custodian_key
    path = tmp_path / "sealed.ledger"
    make_ledger(path, signer, "sealed", seal=True)
    key = key_file(tmp_path, KEY_0)
    contract, submitter = deployed["contract"], deployed["account"].address
    result = bedside(
        "ledger", "anchor", str(path), "--rpc", devchain, "--contract", contract, "--key", str(key)
    )
    assert result.returncode == 0, result.stderr
    with Ledger.open(path) as ledger:
        assert ledger.sealed
        anchor_at = ledger.size - 1
        entry = ledger.entry(anchor_at)
    assert entry["kind"] == "anchor" and entry["checkpoint_index"] == 4  # the one after the seal

    def verify(ledger: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return bedside("ledger", "verify", str(ledger), "--key", str(pub), "-q", *extra)

    chain = ["--rpc", devchain]
    trusted = ["--contract", contract, "--submitter", submitter]
    ok = verify(path, *chain, *trusted, "--finalized", "--confirmations", "1", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["sealed"] and report["anchors"][0]["status"] == "verified on chain"
    assert report["anchors"][0]["index"] == anchor_at

    # Another contract than the one the reviewer trusts, another submitter than the custodian.
    other_contract = A.deploy_contract(deployed["w3"], deployed["account"])
    failed = verify(path, *chain, "--contract", other_contract, "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["index"] == anchor_at
    assert f"entry {anchor_at}: anchor of checkpoint entry 4: wrong contract" in failed.stderr
    other = A.load_key(key_file(tmp_path, KEY_1, "other.key")).address
    failed = verify(path, *chain, "--submitter", other)
    assert failed.returncode == 1
    assert f"entry {anchor_at}: anchor of checkpoint entry 4: wrong submitter" in failed.stderr

    # A lying anchor entry in an otherwise well-formed ledger: a transaction that is not there,
    # a block it is not in (chain needed), a root that is not the checkpoint's (no chain needed).
    tampered = tmp_path / "tx.ledger"
    at = rewrite_last_entry(path, tampered, tx="0x" + "ab" * 32)
    failed = verify(tampered, *chain)
    assert failed.returncode == 1 and f"entry {at}: anchor of checkpoint entry 4" in failed.stderr
    assert "is not on chain 1337" in failed.stderr
    tampered = tmp_path / "block.ledger"
    rewrite_last_entry(path, tampered, block=entry["block"] + 1)
    failed = verify(tampered, *chain)
    assert failed.returncode == 1 and f"entry {at}:" in failed.stderr
    assert "the entry was altered" in failed.stderr
    tampered = tmp_path / "root.ledger"
    rewrite_last_entry(path, tampered, root="0x" + "ab" * 32)
    failed = verify(tampered)
    assert failed.returncode == 1
    assert f"entry {at}: anchor of checkpoint entry 4: wrong root" in failed.stderr

    # The chain options mean nothing without a chain: refused, not silently ignored.
    unusable = verify(path, "--finalized")
    assert unusable.returncode == 2 and "add --rpc URL" in unusable.stderr
