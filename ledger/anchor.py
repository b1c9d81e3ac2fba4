"""Anchoring signed ledger checkpoints on an EVM chain, and checking such anchors.

An anchor is one call of the `BedsideAnchor` contract (`ledger/contracts/BedsideAnchor.sol`)
that emits `Anchored(submitter, root, size)`. For a single ledger `root` is SHA-256 of the signed
checkpoint note and `size` its tree size; for a batch of ledgers `root` is the RFC 6962 Merkle root
over SHA-256 of each note and `size` the number of notes, and each ledger keeps an inclusion
proof. Nothing else reaches the chain. The same code talks to an in-process test chain, a dev
chain on loopback and Polygon: `connect()` is the plain HTTP provider with the middleware a
proof-of-authority chain needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedside.errors import AnchorError

from . import entries
from .merkle import MerkleTree, ProofError, hash_leaf, verify_inclusion

if TYPE_CHECKING:  # web3 is heavy to import; the reviewer CLI imports it only when anchoring
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

__all__ = [
    "ANCHORED_EVENT",
    "ANCHORED_TOPIC",
    "AnchorReceipt",
    "anchor_batch",
    "anchor_checkpoint",
    "batch_inclusion_proof",
    "batch_root",
    "check_anchor_entry",
    "connect",
    "contract_artifact",
    "deploy_contract",
    "load_key",
    "verify_anchor_entry",
    "verify_batch_inclusion",
]

ANCHORED_EVENT = "Anchored(address,bytes32,uint64)"
# keccak256(ANCHORED_EVENT); a test recomputes it so a typo in either cannot hide.
ANCHORED_TOPIC = "0x89a6d921e8e91c18be78a016997c04625db0d36e402bd063eb22521fe39e03c0"
_UINT64_MAX = 2**64 - 1

# How long the CLI waits for a transaction to be mined and confirmed before giving up.
DEFAULT_TIMEOUT = 600.0


# --------------------------------------------------------------------------------------------
# The compiled contract


def contract_artifact() -> dict[str, Any]:
    """The compiled contract (ABI, bytecode, compiler version, settings) shipped with bedside."""
    text = (
        resources.files("bedside.ledger")
        .joinpath("contracts", "BedsideAnchor.json")
        .read_text(encoding="utf-8")
    )
    artifact: dict[str, Any] = json.loads(text)
    return artifact


def _strip_metadata(code: bytes) -> bytes:
    """Runtime code without solc's trailing CBOR metadata (which changes with comments)."""
    if len(code) < 2:
        return code
    meta_len = int.from_bytes(code[-2:], "big")
    if meta_len + 2 > len(code):
        return code
    return code[: -(meta_len + 2)]


# --------------------------------------------------------------------------------------------
# The batch tree: bedside.ledger.merkle's RFC 6962 tree over the 32-byte checkpoint hashes


def _batch_tree(checkpoint_hashes: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for h in checkpoint_hashes:
        tree.append(hash_leaf(h))
    return tree


def _root_and_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The batch root and every leaf's audit path (O(n log n) with the tree's stored levels)."""
    tree = _batch_tree(leaves)
    n = len(leaves)
    return tree.root(), [tree.inclusion_proof(i, n) for i in range(n)]


def batch_root(checkpoint_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over the 32-byte checkpoint hashes of a batch."""
    return _batch_tree(checkpoint_hashes).root()


def batch_inclusion_proof(index: int, checkpoint_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 audit path of leaf `index` in the batch tree."""
    if not 0 <= index < len(checkpoint_hashes):
        raise AnchorError(f"batch index {index} is outside a batch of {len(checkpoint_hashes)}")
    return _batch_tree(checkpoint_hashes).inclusion_proof(index, len(checkpoint_hashes))


def verify_batch_inclusion(
    checkpoint_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an RFC 9162 (section 2.1.3.2) inclusion proof; raise AnchorError if it fails."""
    if not 0 <= index < size:
        raise AnchorError(f"batch index {index} is outside a batch of {size} checkpoints")
    try:
        verify_inclusion(hash_leaf(checkpoint_hash), index, size, proof, root)
    except ProofError as exc:
        raise AnchorError(
            f"batch inclusion proof for checkpoint {index} of {size} does not lead to the "
            f"anchored root 0x{root.hex()} ({exc.message}): the proof or the note was altered"
        ) from exc


# --------------------------------------------------------------------------------------------
# Checkpoint notes


def checkpoint_tree_size(note: bytes) -> int:
    """The tree size on line 2 of a C2SP tlog-checkpoint (signed note)."""
    lines = note.split(b"\n", 2)
    if len(lines) < 3 or not lines[1].isdigit() or (len(lines[1]) > 1 and lines[1][0:1] == b"0"):
        raise AnchorError(
            "checkpoint note is not a C2SP tlog-checkpoint: line 2 must be the decimal tree size"
        )
    return int(lines[1])


def _check_size(note: bytes, tree_size: int) -> None:
    if not 0 <= tree_size <= _UINT64_MAX:
        raise AnchorError(f"tree size {tree_size} does not fit in uint64")
    in_note = checkpoint_tree_size(note)
    if in_note != tree_size:
        raise AnchorError(
            f"tree size {tree_size} does not match the checkpoint note, which says {in_note}"
        )


# --------------------------------------------------------------------------------------------
# Connecting, keys, sending


def connect(rpc_url: str, *, timeout: float = 30.0) -> Web3:
    """A Web3 over plain JSON-RPC/HTTP: the code path a user points at Polygon.

    Polygon PoS (and other proof-of-authority chains) put more than 32 bytes in a block's
    extraData, which web3 rejects unless the POA middleware is installed; on other chains the
    middleware does nothing, so it is always installed.
    """
    from web3 import HTTPProvider, Web3
    from web3.middleware import ExtraDataToPOAMiddleware

    if not rpc_url.startswith(("http://", "https://")):
        raise AnchorError(f"RPC URL {rpc_url!r} must start with http:// or https://")
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    try:
        w3.eth.chain_id  # noqa: B018 - fail here, with the URL in the message, not later
    except Exception as exc:
        where, why = _redact(rpc_url), _scrub(str(exc), rpc_url)
        raise AnchorError(f"cannot reach the JSON-RPC endpoint {where}: {why}") from exc
    return w3


def _scrub(text: str, url: str) -> str:
    """`text` with the URL's path and query (where API keys live) replaced by an ellipsis."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    secrets = [url, f"{parts.path}?{parts.query}", parts.query, parts.path]
    for secret in sorted({x for x in secrets if x not in ("", "/", "?")}, key=len, reverse=True):
        text = text.replace(secret, "…")
    return text


def _redact(url: str) -> str:
    """Scheme and host only: provider URLs often carry an API key in the path or query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def load_key(path: str | os.PathLike[str]) -> LocalAccount:
    """The account whose hex secp256k1 private key is in `path` (mode 0600 or stricter)."""
    from eth_account import Account

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise AnchorError(f"{p}: cannot read the key file: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(
            f"{p}: key file is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"fix: chmod 600 {p}"
        )
    try:
        text = p.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise AnchorError(f"{p}: cannot read the key file: {exc.strerror}") from exc
    hex_key = text[2:] if text.startswith(("0x", "0X")) else text
    if len(hex_key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hex_key):
        raise AnchorError(
            f"{p}: not a secp256k1 private key: the file must hold 64 hex digits "
            "(optionally prefixed 0x) and nothing else"
        )
    try:
        account: LocalAccount = Account.from_key(bytes.fromhex(hex_key))
    except Exception as exc:  # out-of-range scalar
        raise AnchorError(f"{p}: not a valid secp256k1 private key: {exc}") from exc
    return account


def _fees(w3: Web3, priority_fee: int | None = None) -> dict[str, int]:
    """EIP-1559 fees where the chain has a base fee, a legacy gas price where it has not.

    `priority_fee` (wei) overrides the node's suggested tip, for chains that enforce a minimum
    tip their nodes do not suggest.
    """
    latest = w3.eth.get_block("latest")
    base_fee = latest.get("baseFeePerGas")
    if base_fee is None:
        price = int(w3.eth.gas_price)
        return {"gasPrice": max(price, priority_fee or 0)}
    if priority_fee is not None:
        tip = priority_fee
    else:
        try:
            tip = int(w3.eth.max_priority_fee)
        except Exception:
            tip = 10**9  # 1 gwei: what dev chains accept when they lack the RPC method
    # Twice the base fee leaves room for six full blocks of base-fee growth.
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * int(base_fee) + tip}


def _send(
    w3: Web3,
    account: LocalAccount,
    tx: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    priority_fee: int | None = None,
) -> Any:
    from web3.exceptions import TimeExhausted

    tx = dict(tx)
    tx.setdefault("from", account.address)
    tx["chainId"] = w3.eth.chain_id
    tx["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
    tx.update(_fees(w3, priority_fee))
    if "gas" not in tx:
        try:
            estimate = w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        except Exception as exc:
            raise AnchorError(
                f"the chain refuses the transaction (gas estimate failed): {exc}"
            ) from exc
        tx["gas"] = estimate + estimate // 5  # 20 % headroom against state changes in between
    signed = account.sign_transaction(tx)
    try:
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    except Exception as exc:
        raise AnchorError(
            f"the RPC endpoint refused the transaction from {account.address}: {exc}"
        ) from exc
    try:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    except TimeExhausted as exc:
        raise AnchorError(
            f"transaction {w3.to_hex(tx_hash)} was not mined within {timeout:.0f} s; it may still "
            "be pending: look it up on the chain before sending another"
        ) from exc
    if receipt["status"] != 1:
        raise AnchorError(f"transaction {w3.to_hex(tx_hash)} reverted (status 0)")
    return receipt


def wait_for_confirmations(
    w3: Web3, block: int, confirmations: int, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Wait until `block` has `confirmations` confirmations (the block itself counts as one)."""
    deadline = time.monotonic() + timeout
    while w3.eth.block_number - block + 1 < confirmations:
        if time.monotonic() > deadline:
            raise AnchorError(
                f"block {block} did not reach {confirmations} confirmations within {timeout:.0f} s"
            )
        time.sleep(1.0)


# --------------------------------------------------------------------------------------------
# Deploying and anchoring


def deploy_contract(
    w3: Web3,
    account: LocalAccount,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    priority_fee: int | None = None,
) -> str:
    """Deploy BedsideAnchor from `account`; return its checksummed address."""
    artifact = contract_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    data = factory.constructor().data_in_transaction
    tx = {"data": data, "value": 0}
    receipt = _send(w3, account, tx, timeout=timeout, priority_fee=priority_fee)
    address = receipt["contractAddress"]
    if address is None:
        tx_hash = w3.to_hex(receipt["transactionHash"])
        raise AnchorError(f"deploy transaction {tx_hash} made no contract")
    return str(w3.to_checksum_address(address))


@dataclass(frozen=True)
class AnchorReceipt:
    """What one anchored checkpoint needs to find and re-check its anchor later."""

    chain_id: int
    contract: str
    tx: str
    block: int
    submitter: str
    root: str  # 0x-hex of the bytes32 in the event, as explorers show it
    size: int  # uint64 in the event
    checkpoint_hash: str  # hex SHA-256 of the signed checkpoint note
    batch_index: int | None = None
    batch_size: int | None = None
    proof: tuple[str, ...] | None = None

    def to_entry(
        self, checkpoint_index: int, *, session: str, ts: str | None = None
    ) -> dict[str, Any]:
        """The ledger's `anchor` entry for the checkpoint entry at `checkpoint_index`.

        Built by `bedside.ledger.entries.anchor`, the one definition of the entry's fields.
        """
        return entries.anchor(
            session=session,
            checkpoint_index=checkpoint_index,
            checkpoint_hash=self.checkpoint_hash,
            chain_id=self.chain_id,
            contract=self.contract,
            tx=self.tx,
            block=self.block,
            submitter=self.submitter,
            root=self.root,
            size=self.size,
            batch_index=self.batch_index,
            batch_size=self.batch_size,
            proof=self.proof or (),
            ts=ts,
        )


def _anchor_call(
    w3: Web3,
    contract: str,
    account: LocalAccount,
    root: bytes,
    size: int,
    timeout: float,
    priority_fee: int | None,
) -> tuple[Any, str]:
    artifact = contract_artifact()
    try:
        address = w3.to_checksum_address(contract)
    except ValueError as exc:
        raise AnchorError(f"{contract!r} is not a contract address: {exc}") from exc
    if not w3.eth.get_code(address):
        raise AnchorError(
            f"no contract at {address} on chain {w3.eth.chain_id}: deploy one with "
            "`bedside ledger deploy` or check --contract and --rpc"
        )
    instance = w3.eth.contract(address=address, abi=artifact["abi"])
    data = instance.encode_abi("anchor", args=[root, size])
    tx = {"to": address, "data": data, "value": 0}
    receipt = _send(w3, account, tx, timeout=timeout, priority_fee=priority_fee)
    return receipt, address


def anchor_checkpoint(
    w3: Web3,
    contract: str,
    account: LocalAccount,
    checkpoint_note: bytes,
    tree_size: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    priority_fee: int | None = None,
) -> AnchorReceipt:
    """Anchor one signed checkpoint note: SHA-256 of the note and its tree size go on chain."""
    _check_size(checkpoint_note, tree_size)
    digest = hashlib.sha256(checkpoint_note).digest()
    receipt, address = _anchor_call(w3, contract, account, digest, tree_size, timeout, priority_fee)
    return AnchorReceipt(
        chain_id=int(w3.eth.chain_id),
        contract=address,
        tx=w3.to_hex(receipt["transactionHash"]),
        block=int(receipt["blockNumber"]),
        submitter=account.address,
        root="0x" + digest.hex(),
        size=tree_size,
        checkpoint_hash=digest.hex(),
    )


def anchor_batch(
    w3: Web3,
    contract: str,
    account: LocalAccount,
    notes: list[tuple[bytes, int]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    priority_fee: int | None = None,
) -> list[AnchorReceipt]:
    """Anchor many ledgers' checkpoints in one transaction.

    The chain gets the RFC 6962 root over SHA-256 of each note and the number of notes; each
    ledger gets back its index in the batch and an inclusion proof. Receipts are in input order.
    """
    if not notes:
        raise AnchorError("a batch needs at least one checkpoint note")
    for note, size in notes:
        _check_size(note, size)
    hashes = [hashlib.sha256(note).digest() for note, _ in notes]
    root, paths = _root_and_paths(hashes)
    receipt, address = _anchor_call(w3, contract, account, root, len(notes), timeout, priority_fee)
    common = {
        "chain_id": int(w3.eth.chain_id),
        "contract": address,
        "tx": w3.to_hex(receipt["transactionHash"]),
        "block": int(receipt["blockNumber"]),
        "submitter": account.address,
        "root": "0x" + root.hex(),
        "size": len(notes),
        "batch_size": len(notes),
    }
    return [
        AnchorReceipt(
            checkpoint_hash=h.hex(),
            batch_index=i,
            proof=tuple(p.hex() for p in paths[i]),
            **common,  # type: ignore[arg-type]
        )
        for i, h in enumerate(hashes)
    ]


# --------------------------------------------------------------------------------------------
# Verification


def _field(entry: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in entry:
        raise AnchorError(f"anchor entry lacks the field {name!r}")
    value = entry[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise AnchorError(f"anchor entry field {name!r} has the wrong type ({value!r})")
    return value


def _hex32(value: str, name: str) -> bytes:
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise AnchorError(f"anchor entry field {name!r} is not 32 bytes of hex: {value!r}")
    return raw


def _same_address(a: str, b: str) -> bool:
    return a.lower().removeprefix("0x") == b.lower().removeprefix("0x")


def check_anchor_entry(entry: dict[str, Any], checkpoint_note: bytes) -> None:
    """The checks of an anchor entry that need no chain; raise AnchorError naming what fails.

    The entry must name `checkpoint_note` (its `checkpoint_hash`), and its `root` and `size` must
    be what anchoring that note puts on chain: for a single anchor SHA-256 of the note and the
    note's tree size, for a batch a root the inclusion proof leads to from the checkpoint hash and
    the batch size. `verify_anchor_entry` then checks the chain holds that root and size.
    """
    for name, kind in (
        ("chain_id", int),
        ("contract", str),
        ("tx", str),
        ("block", int),
        ("submitter", str),
    ):
        _field(entry, name, kind)
    entry_root = _hex32(_field(entry, "root", str), "root")
    size = _field(entry, "size", int)
    checkpoint_hash = _hex32(_field(entry, "checkpoint_hash", str), "checkpoint_hash")
    note_hash = hashlib.sha256(checkpoint_note).digest()
    if checkpoint_hash != note_hash:
        raise AnchorError(
            f"anchor entry's checkpoint_hash {checkpoint_hash.hex()} is not SHA-256 of the "
            f"checkpoint note ({note_hash.hex()}): the entry anchors another checkpoint"
        )
    if "batch_index" in entry:
        index = _field(entry, "batch_index", int)
        batch_size = _field(entry, "batch_size", int)
        proof = [_hex32(p, "proof") for p in _field(entry, "proof", list)]
        if batch_size != size:
            raise AnchorError(
                f"anchor entry's batch_size {batch_size} is not the anchored batch size {size}"
            )
        verify_batch_inclusion(note_hash, index, batch_size, proof, entry_root)
        return
    if entry_root != note_hash:
        raise AnchorError(
            f"wrong root: the entry anchors 0x{entry_root.hex()}, not SHA-256 of the checkpoint "
            f"note (0x{note_hash.hex()})"
        )
    note_size = checkpoint_tree_size(checkpoint_note)
    if size != note_size:
        raise AnchorError(
            f"wrong size: the entry anchors tree size {size} but the checkpoint note says "
            f"{note_size}"
        )


def verify_anchor_entry(
    entry: dict[str, Any],
    checkpoint_note: bytes,
    rpc_url: str | Web3,
    *,
    confirmations: int | None = None,
    finalized: bool = False,
    expected_contract: str | None = None,
    expected_submitter: str | None = None,
) -> None:
    """Check that `entry` anchors `checkpoint_note` on the chain behind `rpc_url`.

    Returns None when every check passes; raises AnchorError naming the first that fails: the
    chain id, the transaction and its success, the contract (address and code), the event topic,
    the root (directly or through the batch inclusion proof), the size, the submitter, and the
    confirmations or finality of the block. `rpc_url` may also be a connected Web3 (the tests'
    in-process chain). Without `confirmations` or `finalized`, one confirmation (mined) suffices.
    """
    from web3.exceptions import Web3Exception

    w3 = connect(rpc_url) if isinstance(rpc_url, str) else rpc_url
    try:
        _verify(
            w3,
            entry,
            checkpoint_note,
            confirmations=confirmations,
            finalized=finalized,
            expected_contract=expected_contract,
            expected_submitter=expected_submitter,
        )
    except (OSError, Web3Exception) as exc:  # endpoint failed mid-way; requests errors are OSError
        why = _scrub(str(exc), rpc_url) if isinstance(rpc_url, str) else str(exc)
        raise AnchorError(f"the JSON-RPC endpoint failed during verification: {why}") from exc


def _verify(
    w3: Web3,
    entry: dict[str, Any],
    note: bytes,
    *,
    confirmations: int | None,
    finalized: bool,
    expected_contract: str | None,
    expected_submitter: str | None,
) -> None:
    from web3.exceptions import TransactionNotFound

    chain_id = _field(entry, "chain_id", int)
    contract = _field(entry, "contract", str)
    tx = _field(entry, "tx", str)
    block = _field(entry, "block", int)
    submitter = _field(entry, "submitter", str)
    entry_root = _hex32(_field(entry, "root", str), "root")
    size = _field(entry, "size", int)
    _hex32(_field(entry, "checkpoint_hash", str), "checkpoint_hash")

    # 1. The chain.
    served = int(w3.eth.chain_id)
    if served != chain_id:
        raise AnchorError(
            f"wrong chain: the anchor is on chain id {chain_id} but the RPC endpoint serves "
            f"chain id {served}; point --rpc at chain {chain_id}"
        )

    # 2. The transaction.
    try:
        receipt = w3.eth.get_transaction_receipt(tx)
    except TransactionNotFound:
        receipt = None
    except Exception as exc:
        raise AnchorError(f"cannot fetch transaction {tx} from chain {chain_id}: {exc}") from exc
    if receipt is None:
        raise AnchorError(
            f"transaction {tx} is not on chain {chain_id} (never mined, dropped or reorganised "
            "away)"
        )
    if receipt["status"] != 1:
        raise AnchorError(f"transaction {tx} reverted (status 0): it anchored nothing")
    mined_in = int(receipt["blockNumber"])
    if mined_in != block:
        raise AnchorError(
            f"anchor entry says block {block} but transaction {tx} is in block {mined_in} "
            "(the chain reorganised after anchoring, or the entry was altered)"
        )

    # 3. The contract: the one the reviewer trusts, and (after the topic check) really the
    #    BedsideAnchor code, whose event names msg.sender as submitter: any other contract could
    #    emit an Anchored event naming anyone.
    if expected_contract is not None and not _same_address(contract, expected_contract):
        raise AnchorError(
            f"wrong contract: the anchor names {contract} but the expected contract is "
            f"{expected_contract}"
        )
    logs = [log for log in receipt["logs"] if _same_address(str(log["address"]), contract)]
    if not logs:
        seen = sorted({str(log["address"]) for log in receipt["logs"]}) or ["none"]
        raise AnchorError(
            f"wrong contract: transaction {tx} has no log from contract {contract} "
            f"(logs from: {', '.join(seen)})"
        )

    # 4. The event.
    topic = bytes.fromhex(ANCHORED_TOPIC[2:])
    events = [log for log in logs if log["topics"] and bytes(log["topics"][0]) == topic]
    if not events:
        seen_topics = sorted({w3.to_hex(log["topics"][0]) for log in logs if log["topics"]})
        raise AnchorError(
            f"wrong event: contract {contract} emitted no {ANCHORED_EVENT} in transaction {tx} "
            f"(topic0 seen: {', '.join(seen_topics) or 'none'})"
        )
    # Only now: a contract that emits no Anchored event is reported as the wrong event.
    code = bytes(w3.eth.get_code(w3.to_checksum_address(contract)))
    expected_code = bytes.fromhex(contract_artifact()["deployedBytecode"].removeprefix("0x"))
    if _strip_metadata(code) != _strip_metadata(expected_code):
        raise AnchorError(
            f"contract {contract} does not run the BedsideAnchor code, so its events prove "
            "nothing about who anchored"
        )
    if len(events) > 1:
        raise AnchorError(f"transaction {tx} emits {len(events)} anchors; expected exactly one")
    event = events[0]
    if len(event["topics"]) != 3 or len(bytes(event["data"])) != 32:
        raise AnchorError(f"the {ANCHORED_EVENT} log in {tx} is malformed")
    ev_submitter = w3.to_checksum_address(bytes(event["topics"][1])[12:])
    ev_root = bytes(event["topics"][2])
    ev_size = int.from_bytes(bytes(event["data"]), "big")

    # 5. The root and size.
    if ev_root != entry_root:
        raise AnchorError(
            f"wrong root: the event anchors 0x{ev_root.hex()} but the entry says "
            f"0x{entry_root.hex()}"
        )
    if ev_size != size:
        raise AnchorError(f"wrong size: the event anchors size {ev_size}, the entry says {size}")
    # The chain holds what the entry says; the entry must describe anchoring this note.
    check_anchor_entry(entry, note)

    # 6. The submitter.
    if not _same_address(ev_submitter, submitter):
        raise AnchorError(
            f"wrong submitter: the event was sent by {ev_submitter} but the entry says {submitter}"
        )
    if expected_submitter is not None and not _same_address(ev_submitter, expected_submitter):
        raise AnchorError(
            f"wrong submitter: the anchor was sent by {ev_submitter}, not by the expected "
            f"{expected_submitter}"
        )

    # 7. Finality.
    if finalized:
        try:
            final = int(w3.eth.get_block("finalized")["number"])
        except Exception as exc:
            raise AnchorError(
                f"the RPC endpoint does not report a finalized block ({exc}); check "
                "with --confirmations N instead"
            ) from exc
        if block > final:
            raise AnchorError(
                f"not final: block {block} is after the finalized block {final}; check again later"
            )
    need = 1 if confirmations is None else confirmations
    head = int(w3.eth.block_number)
    have = head - block + 1
    if have < need:
        raise AnchorError(
            f"not enough confirmations: block {block} has {have} (head {head}), {need} "
            "required; check again later"
        )
