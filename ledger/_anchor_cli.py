"""`bedside ledger deploy` and `bedside ledger anchor`: putting checkpoint hashes on an EVM chain.

`bedside.ledger._cli` calls `register()` with the `ledger` group's subparsers. web3 is imported
only when one of these commands runs, so `bedside --help` and `ledger verify` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bedside.errors import AnchorError, LedgerError

_RPC_HELP = (
    "EVM JSON-RPC URL over HTTP(S), e.g. https://polygon-rpc.com (Polygon, chain id 137), "
    "https://rpc-amoy.polygon.technology (Amoy test net, 80002) or http://127.0.0.1:8545"
)
_KEY_HELP = (
    "file holding the submitter's hex secp256k1 private key (mode 0600; it pays the gas and is "
    "named in the event)"
)


def register(ledger_subparsers: Any) -> None:
    """Add `deploy` and `anchor` to the `bedside ledger` command group."""
    deploy = ledger_subparsers.add_parser(
        "deploy",
        help="deploy the BedsideAnchor contract and print its address",
        description=(
            "Deploy the BedsideAnchor contract (ledger/contracts/BedsideAnchor.sol, compiled with "
            "solc 0.8.28) from the account in --key and print its address on stdout. Deploy once "
            "per chain; every ledger can anchor through the same contract."
        ),
    )
    deploy.add_argument("--rpc", required=True, metavar="URL", help=_RPC_HELP)
    deploy.add_argument("--key", required=True, type=Path, metavar="KEYFILE", help=_KEY_HELP)
    deploy.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="seconds to wait to be mined"
    )
    _fee_argument(deploy)
    deploy.set_defaults(handler=_deploy)

    anchor = ledger_subparsers.add_parser(
        "anchor",
        help="anchor ledgers' latest signed checkpoints on an EVM chain",
        description=(
            "Send SHA-256 of each ledger's latest signed checkpoint to the BedsideAnchor contract "
            "and append an `anchor` entry (transaction, block, chain id) to the ledger. One "
            "ledger: the checkpoint hash and its tree size go on chain. Several ledgers (or "
            "--batch): one transaction carries the RFC 6962 root over their checkpoint hashes "
            "and each ledger keeps its inclusion proof. Nothing else reaches the chain."
        ),
    )
    anchor.add_argument(
        "ledgers",
        nargs="*",
        type=Path,
        metavar="LEDGER",
        help="ledger file(s) to anchor; two or more go in one batch transaction",
    )
    anchor.add_argument(
        "--batch",
        nargs="+",
        action="extend",
        default=[],
        type=Path,
        metavar="LEDGER",
        help="anchor these ledgers (and any positional ones) together in one transaction",
    )
    anchor.add_argument("--rpc", required=True, metavar="URL", help=_RPC_HELP)
    anchor.add_argument(
        "--contract", required=True, metavar="ADDR", help="address printed by `ledger deploy`"
    )
    anchor.add_argument("--key", required=True, type=Path, metavar="KEYFILE", help=_KEY_HELP)
    anchor.add_argument(
        "--confirmations",
        type=int,
        default=1,
        metavar="N",
        help="wait until the anchor block has N confirmations before writing the entry "
        "(default 1: mined)",
    )
    anchor.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for mining and confirmations",
    )
    _fee_argument(anchor)
    anchor.set_defaults(handler=_anchor)


def _fee_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--priority-fee-gwei",
        type=float,
        metavar="GWEI",
        help="EIP-1559 tip to pay instead of the node's suggestion (e.g. when a chain enforces "
        "a minimum tip its node does not suggest)",
    )


def _priority_fee(args: argparse.Namespace) -> int | None:
    gwei = args.priority_fee_gwei
    if gwei is None:
        return None
    if gwei < 0:
        raise AnchorError("--priority-fee-gwei must not be negative")
    return int(gwei * 10**9)


def _rpc_failures(handler: Any) -> Any:
    """Turn a JSON-RPC endpoint failing mid-command into an AnchorError without its URL path."""

    def run(args: argparse.Namespace) -> int:
        from web3.exceptions import Web3Exception

        from .anchor import _redact, _scrub

        try:
            result: int = handler(args)
        except (OSError, Web3Exception) as exc:
            raise AnchorError(
                f"the JSON-RPC endpoint {_redact(args.rpc)} failed: {_scrub(str(exc), args.rpc)}"
            ) from exc
        return result

    return run


@_rpc_failures
def _deploy(args: argparse.Namespace) -> int:
    from . import anchor as A

    account = A.load_key(args.key)
    w3 = A.connect(args.rpc)
    address = A.deploy_contract(w3, account, timeout=args.timeout, priority_fee=_priority_fee(args))
    print(
        f"deployed BedsideAnchor on chain {w3.eth.chain_id} from {account.address}",
        file=sys.stderr,
    )
    print(address)
    return 0


def _latest_checkpoint(ledger: Any, path: Path, chain_id: int, contract: str) -> tuple[int, str]:
    """(entry index, signed note) of the ledger's latest checkpoint that is not yet anchored."""
    anchored: dict[int, int] = {}
    for i in range(ledger.size - 1, -1, -1):
        entry = ledger.entry(i)
        kind = entry.get("kind")
        if kind == "anchor" and entry.get("chain_id") == chain_id:
            if str(entry.get("contract", "")).lower() == contract.lower():
                anchored.setdefault(int(entry["checkpoint_index"]), i)
        elif kind == "checkpoint":
            if i in anchored:
                raise AnchorError(
                    f"{path}: the latest checkpoint (entry {i}) is already anchored on chain "
                    f"{chain_id} by entry {anchored[i]}; sign a new checkpoint first"
                )
            return i, str(entry["note"])
    raise AnchorError(
        f"{path}: the ledger holds no signed checkpoint to anchor; the sentry writes one per "
        "receipt and at seal"
    )


@_rpc_failures
def _anchor(args: argparse.Namespace) -> int:
    from bedside.ledger import Ledger

    from . import anchor as A

    paths: list[Path] = [*args.ledgers, *args.batch]
    if not paths:
        raise AnchorError("name at least one LEDGER to anchor")
    if len({p.resolve() for p in paths}) != len(paths):
        raise AnchorError("a ledger is named twice; each ledger can appear once in a batch")
    if args.confirmations < 1:
        raise AnchorError("--confirmations must be at least 1")
    account = A.load_key(args.key)
    w3 = A.connect(args.rpc)
    chain_id = int(w3.eth.chain_id)
    try:
        contract = w3.to_checksum_address(args.contract)
    except ValueError as exc:
        raise AnchorError(f"--contract {args.contract!r} is not an address: {exc}") from exc

    with ExitStack() as stack:
        ledgers = []
        for path in paths:
            try:
                ledger = stack.enter_context(Ledger.open(path))
            except LedgerError as exc:
                raise AnchorError(f"{path}: cannot open the ledger: {exc}") from exc
            # A sealed ledger still takes anchor entries: anchoring its final checkpoint
            # (the one covering the seal) is the usual case.
            index, note = _latest_checkpoint(ledger, path, chain_id, contract)
            ledgers.append((path, ledger, index, note))

        notes = [
            (n.encode("utf-8"), A.checkpoint_tree_size(n.encode("utf-8"))) for _, _, _, n in ledgers
        ]
        if len(ledgers) == 1 and not args.batch:
            receipts = [
                A.anchor_checkpoint(
                    w3,
                    contract,
                    account,
                    notes[0][0],
                    notes[0][1],
                    timeout=args.timeout,
                    priority_fee=_priority_fee(args),
                )
            ]
        else:
            receipts = A.anchor_batch(
                w3,
                contract,
                account,
                notes,
                timeout=args.timeout,
                priority_fee=_priority_fee(args),
            )
        A.wait_for_confirmations(w3, receipts[0].block, args.confirmations, timeout=args.timeout)

        for (path, ledger, index, _note), receipt in zip(ledgers, receipts, strict=True):
            entry = receipt.to_entry(index, session=ledger.session_id)
            try:
                at = ledger.append(entry, sync=True)
            except LedgerError as exc:
                # The transaction is on chain already: hand the entry to the user, not lose it.
                raise AnchorError(
                    f"{path}: anchored in {receipt.tx} but the entry could not be appended "
                    f"({exc}); append it by hand: {json.dumps(entry, sort_keys=True)}"
                ) from exc
            print(
                f"{path}: checkpoint entry {index} anchored on chain {receipt.chain_id} in "
                f"transaction {receipt.tx} (block {receipt.block}); anchor entry {at}"
            )
    return 0
