"""Anchoring against an in-process EVM (eth-tester + py-evm): deploy, single and batch anchors,
what reaches the chain, and every way verification must fail, each with its own message."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3

from bedside.errors import AnchorError
from bedside.ledger import anchor
from bedside.ledger import entries as E
from bedside.ledger.anchor import (
    ANCHORED_EVENT,
    ANCHORED_TOPIC,
    anchor_batch,
    anchor_checkpoint,
    batch_inclusion_proof,
    batch_root,
    check_anchor_entry,
    deploy_contract,
    verify_anchor_entry,
    verify_batch_inclusion,
)


def make_note(origin: str, size: int) -> bytes:
    """A C2SP tlog-checkpoint signed note with a synthetic root and signature."""
    root = hashlib.sha256(f"{origin}/{size}".encode()).digest()
    sig = base64.b64encode(b"\x01\x02\x03\x04" + hashlib.sha512(root).digest()).decode()
    body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    return f"{body}\n\u2014 hospital {sig}\n".encode()


def funded(w3: Web3, seed: str) -> Any:
    account = Account.from_key(hashlib.sha256(seed.encode()).digest())
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address, "value": 10**19})
    return account


@pytest.fixture(scope="module")
def chain() -> dict[str, Any]:
    w3 = Web3(EthereumTesterProvider())
    submitter = funded(w3, "bedside-test-submitter")
    other = funded(w3, "bedside-test-other")
    contract = deploy_contract(w3, submitter)
    return {"w3": w3, "submitter": submitter, "other": other, "contract": contract}


def deploy_raw(w3: Web3, account: Any, runtime: bytes) -> str:
    """Deploy hand-assembled runtime code (decoy contracts for the failure tests)."""
    assert len(runtime) < 256
    init = bytes([0x60, len(runtime), 0x80, 0x60, 0x0B, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3])
    tx = {
        "from": account.address,
        "data": init + runtime,
        "nonce": w3.eth.get_transaction_count(account.address),
        "gas": 200_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "chainId": w3.eth.chain_id,
    }
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    address = w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"]
    assert address
    return str(address)


def call_raw(w3: Web3, account: Any, to: str, data: bytes = b"", gas: int = 100_000) -> Any:
    tx = {
        "from": account.address,
        "to": to,
        "data": data,
        "nonce": w3.eth.get_transaction_count(account.address),
        "gas": gas,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "chainId": w3.eth.chain_id,
    }
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash)


# --- the contract and its event ------------------------------------------------------------


def test_topic_is_keccak_of_the_event_signature() -> None:
    assert ANCHORED_EVENT == "Anchored(address,bytes32,uint64)"
    assert "0x" + keccak(text=ANCHORED_EVENT).hex() == ANCHORED_TOPIC
    abi = anchor.contract_artifact()["abi"]
    event = next(item for item in abi if item.get("name") == "Anchored")
    assert [i["type"] for i in event["inputs"]] == ["address", "bytes32", "uint64"]


def test_deploy_returns_checksummed_address_running_the_artifact(chain: dict[str, Any]) -> None:
    w3 = chain["w3"]
    assert Web3.is_checksum_address(chain["contract"])
    code = bytes(w3.eth.get_code(chain["contract"]))
    assert "0x" + code.hex() == anchor.contract_artifact()["deployedBytecode"]


# --- single anchor -------------------------------------------------------------------------


def test_single_anchor_round_trip(chain: dict[str, Any]) -> None:
    w3, acct = chain["w3"], chain["submitter"]
    note = make_note("hospital.example/bedside/s1", 7)
    receipt = anchor_checkpoint(w3, chain["contract"], acct, note, 7)
    entry = receipt.to_entry(12, session="s", ts="2026-11-29T16:00:00.000000Z")
    assert entry == {
        "v": 1,
        "kind": "anchor",
        "session": "s",
        "ts": "2026-11-29T16:00:00.000000Z",
        "checkpoint_index": 12,
        "checkpoint_hash": hashlib.sha256(note).hexdigest(),
        "chain_id": w3.eth.chain_id,
        "contract": chain["contract"],
        "tx": entry["tx"],
        "block": entry["block"],
        "submitter": acct.address,
        "root": "0x" + hashlib.sha256(note).hexdigest(),
        "size": 7,
    }
    assert re.fullmatch(r"0x[0-9a-f]{64}", entry["tx"])
    E.check_entry(entry | {"seq": 13})  # the ledger's schema: one definition of the entry
    check_anchor_entry(entry, note)
    verify_anchor_entry(
        entry,
        note,
        w3,
        expected_contract=chain["contract"],
        expected_submitter=acct.address,
    )
    verify_anchor_entry(entry, note, w3, finalized=True)


def test_only_the_hash_and_size_reach_the_chain(chain: dict[str, Any]) -> None:
    """The transaction's calldata is the selector, the 32-byte root and the size: nothing else."""
    w3 = chain["w3"]
    note = make_note("hospital.example/bedside/secret-cohort-name", 3)
    receipt = anchor_checkpoint(w3, chain["contract"], chain["submitter"], note, 3)
    tx = w3.eth.get_transaction(receipt.tx)
    data = bytes(tx["input"])
    selector = keccak(text="anchor(bytes32,uint64)")[:4]
    assert data == selector + hashlib.sha256(note).digest() + (3).to_bytes(32, "big")
    assert tx["value"] == 0
    assert b"secret-cohort-name" not in data
    log = w3.eth.get_transaction_receipt(receipt.tx)["logs"][0]
    assert bytes(log["data"]) == (3).to_bytes(32, "big")


def test_tree_size_must_match_the_note(chain: dict[str, Any]) -> None:
    note = make_note("hospital.example/bedside/s2", 5)
    with pytest.raises(AnchorError, match="does not match the checkpoint note, which says 5"):
        anchor_checkpoint(chain["w3"], chain["contract"], chain["submitter"], note, 6)
    with pytest.raises(AnchorError, match="not a C2SP tlog-checkpoint"):
        anchor_checkpoint(chain["w3"], chain["contract"], chain["submitter"], b"hello\n", 1)


def test_anchoring_to_an_address_without_code_is_refused(chain: dict[str, Any]) -> None:
    note = make_note("hospital.example/bedside/s3", 1)
    with pytest.raises(AnchorError, match="no contract at"):
        anchor_checkpoint(chain["w3"], chain["other"].address, chain["submitter"], note, 1)


# --- batch anchor --------------------------------------------------------------------------


def test_batch_anchor_is_one_transaction_with_a_proof_per_session(chain: dict[str, Any]) -> None:
    w3, acct = chain["w3"], chain["submitter"]
    notes = [(make_note(f"hospital.example/bedside/b{i}", 10 + i), 10 + i) for i in range(5)]
    receipts = anchor_batch(w3, chain["contract"], acct, notes)
    assert len({r.tx for r in receipts}) == 1
    hashes = [hashlib.sha256(n).digest() for n, _ in notes]
    root = batch_root(hashes)
    tx = w3.eth.get_transaction(receipts[0].tx)
    selector = keccak(text="anchor(bytes32,uint64)")[:4]
    assert bytes(tx["input"]) == selector + root + (5).to_bytes(32, "big")
    for i, (receipt, (note, _)) in enumerate(zip(receipts, notes, strict=True)):
        entry = receipt.to_entry(40 + i, session="s")
        assert entry["batch_index"] == i and entry["batch_size"] == 5
        assert entry["root"] == "0x" + root.hex() and entry["size"] == 5
        assert entry["checkpoint_hash"] == hashes[i].hex()
        E.check_entry(entry | {"seq": 41 + i})
        check_anchor_entry(entry, note)
        verify_anchor_entry(entry, note, w3, expected_submitter=acct.address)
    # A session's note does not verify under another session's proof.
    wrong = receipts[1].to_entry(0, session="s") | {"checkpoint_hash": hashes[2].hex()}
    with pytest.raises(AnchorError, match="does not lead to the anchored root"):
        verify_anchor_entry(wrong, notes[2][0], w3)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_batch_proofs_verify_at_every_index(n: int) -> None:
    hashes = [hashlib.sha256(bytes([i])).digest() for i in range(n)]
    root = batch_root(hashes)
    all_root, all_paths = anchor._root_and_paths(hashes)
    assert all_root == root
    for i in range(n):
        proof = batch_inclusion_proof(i, hashes)
        assert proof == all_paths[i]
        verify_batch_inclusion(hashes[i], i, n, proof, root)
        if proof:
            with pytest.raises(AnchorError, match="shorter than the tree is deep"):
                verify_batch_inclusion(hashes[i], i, n, proof[:-1], root)
        with pytest.raises(AnchorError, match="longer than the tree is deep|does not lead"):
            verify_batch_inclusion(hashes[i], i, n, [*proof, hashes[0]], root)


def test_batch_root_matches_the_rfc6962_vectors() -> None:
    """Leaves are the 32-byte checkpoint hashes; the tree is RFC 6962's (checked on 2 leaves)."""
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    leaf = lambda d: hashlib.sha256(b"\x00" + d).digest()  # noqa: E731
    assert batch_root([a]) == leaf(a)
    assert batch_root([a, b]) == hashlib.sha256(b"\x01" + leaf(a) + leaf(b)).digest()
    three = [a, b, a]
    left = hashlib.sha256(b"\x01" + leaf(a) + leaf(b)).digest()
    assert batch_root(three) == hashlib.sha256(b"\x01" + left + leaf(a)).digest()


# --- verification failures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def anchored(chain: dict[str, Any]) -> dict[str, Any]:
    note = make_note("hospital.example/bedside/verify", 9)
    receipt = anchor_checkpoint(chain["w3"], chain["contract"], chain["submitter"], note, 9)
    notes = [(make_note(f"hospital.example/bedside/v{i}", i + 1), i + 1) for i in range(3)]
    batch = anchor_batch(chain["w3"], chain["contract"], chain["submitter"], notes)
    return {"note": note, "entry": receipt.to_entry(3, session="s"), "notes": notes, "batch": batch}


def test_wrong_chain_id(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    entry = anchored["entry"] | {"chain_id": 137}
    with pytest.raises(AnchorError, match=r"^wrong chain: the anchor is on chain id 137"):
        verify_anchor_entry(entry, anchored["note"], chain["w3"])


def test_transaction_not_found(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    entry = anchored["entry"] | {"tx": "0x" + "ab" * 32}
    with pytest.raises(AnchorError, match=r"is not on chain .* \(never mined"):
        verify_anchor_entry(entry, anchored["note"], chain["w3"])


def test_reverted_transaction(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    w3 = chain["w3"]
    # The contract refuses the zero root; with explicit gas the failed call is still mined.
    selector = keccak(text="anchor(bytes32,uint64)")[:4]
    data = selector + bytes(32) + (9).to_bytes(32, "big")
    receipt = call_raw(w3, chain["submitter"], chain["contract"], data)
    assert receipt["status"] == 0
    entry = anchored["entry"] | {"tx": w3.to_hex(receipt["transactionHash"])}
    entry["block"] = receipt["blockNumber"]
    with pytest.raises(AnchorError, match=r"reverted \(status 0\): it anchored nothing"):
        verify_anchor_entry(entry, anchored["note"], w3)


def test_wrong_block(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    entry = anchored["entry"] | {"block": anchored["entry"]["block"] - 1}
    with pytest.raises(AnchorError, match="chain reorganised after anchoring"):
        verify_anchor_entry(entry, anchored["note"], chain["w3"])


def test_wrong_expected_contract(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    other = chain["other"].address
    with pytest.raises(AnchorError, match=r"^wrong contract: the anchor names .* but the expected"):
        verify_anchor_entry(
            anchored["entry"], anchored["note"], chain["w3"], expected_contract=other
        )


def test_log_not_from_the_named_contract(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    w3 = chain["w3"]
    second = deploy_contract(w3, chain["submitter"])
    entry = anchored["entry"] | {"contract": second}
    with pytest.raises(AnchorError, match=r"^wrong contract: transaction .* has no log from"):
        verify_anchor_entry(entry, anchored["note"], w3)


def test_other_event(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    """A contract that emits some other event in place of Anchored."""
    w3 = chain["w3"]
    other_topic = keccak(text="Transfer(address,address,uint256)")
    # PUSH32 topic; PUSH1 0; PUSH1 0; LOG1; STOP
    runtime = b"\x7f" + other_topic + b"\x60\x00\x60\x00\xa1\x00"
    decoy = deploy_raw(w3, chain["submitter"], runtime)
    receipt = call_raw(w3, chain["submitter"], decoy)
    entry = anchored["entry"] | {
        "contract": decoy,
        "tx": w3.to_hex(receipt["transactionHash"]),
        "block": receipt["blockNumber"],
    }
    with pytest.raises(AnchorError, match=r"^wrong event: contract .* emitted no Anchored"):
        verify_anchor_entry(entry, anchored["note"], w3)


def test_forged_anchored_event_from_another_contract(
    chain: dict[str, Any], anchored: dict[str, Any]
) -> None:
    """A contract that emits an Anchored event naming someone else as submitter is caught."""
    w3 = chain["w3"]
    root = bytes.fromhex(anchored["entry"]["root"][2:])
    victim = bytes(12) + bytes.fromhex(chain["other"].address[2:])
    # PUSH1 9; PUSH1 0; MSTORE; PUSH32 root; PUSH32 victim; PUSH32 topic; PUSH1 32; PUSH1 0; LOG3
    runtime = (
        b"\x60\x09\x60\x00\x52"
        + b"\x7f"
        + root
        + b"\x7f"
        + victim
        + b"\x7f"
        + bytes.fromhex(ANCHORED_TOPIC[2:])
        + b"\x60\x20\x60\x00\xa3\x00"
    )
    decoy = deploy_raw(w3, chain["submitter"], runtime)
    receipt = call_raw(w3, chain["submitter"], decoy)
    entry = anchored["entry"] | {
        "contract": decoy,
        "tx": w3.to_hex(receipt["transactionHash"]),
        "block": receipt["blockNumber"],
        "submitter": chain["other"].address,
    }
    with pytest.raises(AnchorError, match="does not run the BedsideAnchor code"):
        verify_anchor_entry(entry, anchored["note"], w3)


def test_wrong_root(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    """The entry and note describe another checkpoint than the one the transaction anchored."""
    other_note = make_note("hospital.example/bedside/verify", 10)
    digest = hashlib.sha256(other_note).hexdigest()
    entry = anchored["entry"] | {"checkpoint_hash": digest, "root": digest}
    with pytest.raises(AnchorError, match=r"^wrong root: the event anchors 0x[0-9a-f]{64} but"):
        verify_anchor_entry(entry, other_note, chain["w3"])


def test_note_is_not_the_one_in_the_entry(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    other_note = make_note("hospital.example/bedside/verify", 10)
    with pytest.raises(AnchorError, match="is not SHA-256 of the checkpoint note"):
        verify_anchor_entry(anchored["entry"], other_note, chain["w3"])


def test_wrong_size(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    entry = anchored["entry"] | {"size": 10}
    with pytest.raises(AnchorError, match=r"^wrong size: the event anchors size 9"):
        verify_anchor_entry(entry, anchored["note"], chain["w3"])


def test_wrong_submitter(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    w3, other = chain["w3"], chain["other"].address
    with pytest.raises(AnchorError, match=r"^wrong submitter: the anchor was sent by .* not by"):
        verify_anchor_entry(anchored["entry"], anchored["note"], w3, expected_submitter=other)
    entry = anchored["entry"] | {"submitter": other}
    with pytest.raises(AnchorError, match=r"^wrong submitter: the event was sent by .* entry says"):
        verify_anchor_entry(entry, anchored["note"], w3)


def test_confirmations(chain: dict[str, Any]) -> None:
    w3 = chain["w3"]
    note = make_note("hospital.example/bedside/confirm", 4)
    entry = anchor_checkpoint(w3, chain["contract"], chain["submitter"], note, 4).to_entry(
        0, session="s"
    )
    with pytest.raises(AnchorError, match=r"^not enough confirmations: block \d+ has 1 .* 5 req"):
        verify_anchor_entry(entry, note, w3, confirmations=5)
    w3.testing.mine(4)
    verify_anchor_entry(entry, note, w3, confirmations=5)


def test_tampered_batch_proof(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    w3 = chain["w3"]
    note = anchored["notes"][0][0]
    entry = anchored["batch"][0].to_entry(0, session="s")
    verify_anchor_entry(entry, note, w3)
    proof = list(entry["proof"])
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    with pytest.raises(AnchorError, match=r"^batch inclusion proof .* does not lead"):
        verify_anchor_entry(entry | {"proof": proof}, note, w3)
    with pytest.raises(AnchorError, match="batch index 3 is outside a batch of 3"):
        verify_anchor_entry(entry | {"batch_index": 3}, note, w3)
    with pytest.raises(AnchorError, match="batch_size 4 is not the anchored batch size 3"):
        verify_anchor_entry(entry | {"batch_size": 4}, note, w3)


def test_malformed_entries_name_the_field(chain: dict[str, Any], anchored: dict[str, Any]) -> None:
    entry = dict(anchored["entry"])
    del entry["tx"]
    with pytest.raises(AnchorError, match="lacks the field 'tx'"):
        verify_anchor_entry(entry, anchored["note"], chain["w3"])
    with pytest.raises(AnchorError, match="field 'root' is not 32 bytes of hex"):
        verify_anchor_entry(anchored["entry"] | {"root": "xyz"}, anchored["note"], chain["w3"])
    with pytest.raises(AnchorError, match="field 'block' has the wrong type"):
        verify_anchor_entry(anchored["entry"] | {"block": "7"}, anchored["note"], chain["w3"])


def test_eip1559_fees_and_tip_override(chain: dict[str, Any]) -> None:
    w3 = chain["w3"]
    note = make_note("hospital.example/bedside/fees", 2)
    receipt = anchor_checkpoint(
        w3, chain["contract"], chain["submitter"], note, 2, priority_fee=3 * 10**9
    )
    tx = w3.eth.get_transaction(receipt.tx)
    assert tx["type"] == 2  # EIP-1559 where the chain has a base fee
    assert tx["maxPriorityFeePerGas"] == 3 * 10**9
    assert tx["maxFeePerGas"] >= 3 * 10**9


class LaggingFinalityProvider(EthereumTesterProvider):
    """eth-tester calls every block final; Polygon finalizes some blocks behind the head. This
    provider answers `finalized` with the block `lag` behind the head (the only thing mocked)."""

    lag = 3

    def make_request(self, method: Any, params: Any) -> Any:
        if method == "eth_getBlockByNumber" and params and params[0] == "finalized":
            result = super().make_request("eth_blockNumber", [])["result"]
            head = int(result, 16) if isinstance(result, str) else int(result)
            params = [max(head - self.lag, 0), *params[1:]]
        return super().make_request(method, params)


def test_not_final_until_the_finalized_block_passes_it() -> None:
    w3 = Web3(LaggingFinalityProvider())
    acct = funded(w3, "bedside-test-finality")
    contract = deploy_contract(w3, acct)
    note = make_note("hospital.example/bedside/finality", 6)
    entry = anchor_checkpoint(w3, contract, acct, note, 6).to_entry(0, session="s")
    with pytest.raises(AnchorError, match=r"^not final: block \d+ is after the finalized block"):
        verify_anchor_entry(entry, note, w3, finalized=True)
    w3.testing.mine(3)
    verify_anchor_entry(entry, note, w3, finalized=True)
