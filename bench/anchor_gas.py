"""Gas and proof size of anchoring: one transaction per ledger against one batch for many.

Runs on the in-process EVM (eth-tester + py-evm), so the gas figures are the chain's own and do
not depend on this machine. Prints JSON; the ratio is each batch's gas per ledger against a
single anchor's gas measured in the same run. Not part of `make test`.

    .venv/bin/python bench/anchor_gas.py [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys

from _report import emit
from eth_account import Account
from web3 import EthereumTesterProvider, Web3

from bedside.ledger import anchor as A


def note(i: int, size: int) -> bytes:
    root = base64.b64encode(hashlib.sha256(i.to_bytes(8, "big")).digest()).decode()
    return f"hospital.example/bedside/s{i}\n{size}\n{root}\n\n\u2014 hospital AAAA\n".encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    w3 = Web3(EthereumTesterProvider())
    account = Account.from_key(hashlib.sha256(b"bedside-bench").digest())
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address, "value": 10**20})

    def gas(tx: str) -> int:
        return int(w3.eth.get_transaction_receipt(tx)["gasUsed"])

    contract = A.deploy_contract(w3, account)
    deploy_tx = w3.eth.get_block("latest", full_transactions=True)["transactions"][0]
    single = A.anchor_checkpoint(w3, contract, account, note(0, 42), 42)
    single_gas = gas(single.tx)
    batches = []
    for n in (1, 10, 100, 1000, 10000):
        receipts = A.anchor_batch(w3, contract, account, [(note(i, 42), 42) for i in range(n)])
        batch_gas = gas(receipts[0].tx)
        batches.append(
            {
                "ledgers": n,
                "gas": batch_gas,
                "gas_per_ledger": batch_gas / n,
                "ratio_per_ledger_vs_single": round(batch_gas / n / single_gas, 6),
                "proof_hashes_max": max(len(r.proof or ()) for r in receipts),
                "entry_bytes_max": max(
                    len(json.dumps(r.to_entry(0, session="bench"))) for r in receipts
                ),
            }
        )
    result = {
        "chain": "eth-tester/py-evm (in process)",
        "deploy_gas": gas(deploy_tx["hash"]),
        "single_anchor_gas": single_gas,
        "single_entry_bytes": len(json.dumps(single.to_entry(0, session="bench"))),
        "calldata_bytes": len(bytes(w3.eth.get_transaction(single.tx)["input"])),
        "batches": batches,
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
