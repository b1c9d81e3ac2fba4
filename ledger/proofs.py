"""Stand-alone inclusion proofs: one entry, shown to be in a signed checkpoint.

A proof file lets a reviewer convince a third party that one entry (say, the release of a model)
is part of the session the hospital signed, without handing over the whole ledger:

    {"type": "bedside/inclusion-proof/v1", "origin", "index", "entry", "tree_size",
     "proof": [base64 hashes], "checkpoint": "<signed note>", "opening"?: {...}}

`check_inclusion_proof` recomputes the entry's leaf hash from its canonical bytes, walks the
RFC 9162 audit path to the root, and checks that a trusted key signed that root.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from bedside.errors import LedgerError, LedgerIntegrityError

from . import entries as E
from ._records import LEDGER_MAGIC, Tail, iter_records
from .commitment import canonical_json, open_commitment, parse_canonical
from .merkle import MerkleTree, ProofError, hash_leaf, verify_inclusion
from .note import Checkpoint, Verifier, open_checkpoint, parse_note
from .openings import iter_openings

PROOF_TYPE = "bedside/inclusion-proof/v1"


def make_inclusion_proof(
    path: str | os.PathLike[str],
    index: int,
    *,
    checkpoint: str | None = None,
    openings: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build the inclusion proof of entry `index` against the latest checkpoint covering it.

    `checkpoint` (a signed note) overrides the choice; `openings` adds the entry's opening so
    the recipient can also see what was committed. Reads the ledger without changing it.
    """
    from .log import read_meta

    p = Path(path)
    leaves = MerkleTree()
    target: dict[str, Any] | None = None
    latest: str | None = None
    with open(p, "rb") as fh:
        meta, start = read_meta(fh, LEDGER_MAGIC, p)
        for i, item in enumerate(iter_records(fh, start)):
            if isinstance(item, Tail):
                if item.nbytes:
                    raise LedgerIntegrityError(f"{p}: {item.reason}", index=i)
                break
            if not item.valid:
                raise LedgerIntegrityError(f"{p}: record checksum mismatch", index=i)
            leaves.append(item.check)
            if i == index:
                target = parse_canonical(item.payload)
            if i > index and b'"kind":"checkpoint"' in item.payload:
                entry = parse_canonical(item.payload)
                if entry.get("kind") == E.CHECKPOINT and entry.get("size", 0) > index:
                    latest = entry["note"]
    if target is None:
        raise LedgerError(f"{p}: no entry {index} (the ledger has {len(leaves)} entries)")
    note = checkpoint if checkpoint is not None else latest
    if note is None:
        raise LedgerError(
            f"{p}: no signed checkpoint covers entry {index} yet; ask for a newer ledger or pass "
            "a checkpoint note with --checkpoint"
        )
    cp = Checkpoint.parse(parse_note(note).text)
    if cp.origin != meta["origin"] or cp.size > len(leaves) or cp.size <= index:
        raise LedgerError(f"{p}: the checkpoint does not cover entry {index} of this ledger")
    proof = leaves.inclusion_proof(index, cp.size)
    verify_inclusion(leaves[index], index, cp.size, proof, cp.root)  # refuse to emit a bad proof
    result: dict[str, Any] = {
        "type": PROOF_TYPE,
        "origin": meta["origin"],
        "index": index,
        "entry": target,
        "tree_size": cp.size,
        "proof": [base64.b64encode(h).decode() for h in proof],
        "checkpoint": note,
    }
    if openings is not None:
        for o in iter_openings(openings):
            if o.index == index:
                result["opening"] = {
                    "field": o.field,
                    "domain": o.domain,
                    "salt": base64.b64encode(o.salt).decode(),
                    "content": base64.b64encode(o.content).decode(),
                }
                break
    return result


def check_inclusion_proof(proof: dict[str, Any], keys: list[str | Verifier]) -> list[str]:
    """Verify a proof made by `make_inclusion_proof`; returns the names of the trusted signers.

    Raises `LedgerIntegrityError`/`SignatureError` (index = the entry) when anything fails.
    """
    if proof.get("type") != PROOF_TYPE:
        raise LedgerError(f"not a bedside inclusion proof (type {proof.get('type')!r})")
    try:
        index = int(proof["index"])
        size = int(proof["tree_size"])
        entry = proof["entry"]
        path = [base64.b64decode(h, validate=True) for h in proof["proof"]]
        note = str(proof["checkpoint"])
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise LedgerError(f"malformed inclusion proof: {exc}") from exc
    verifiers = [k if isinstance(k, Verifier) else Verifier(k) for k in keys]
    if not verifiers:
        raise LedgerError("pass at least one trusted verifier key (--key)")
    cp, signers = open_checkpoint(note, verifiers)
    if cp.size != size or cp.origin != proof.get("origin"):
        raise LedgerIntegrityError(
            "the proof's tree size or origin differs from its signed checkpoint", index=index
        )
    E.check_entry(entry, index)
    if entry["seq"] != index:
        raise LedgerIntegrityError(f"entry says seq {entry['seq']}", index=index)
    try:
        verify_inclusion(hash_leaf(canonical_json(entry)), index, size, path, cp.root)
    except ProofError as exc:
        raise LedgerIntegrityError(exc.message, index=index) from exc
    opening = proof.get("opening")
    if opening is not None:
        field, domain = E.COMMITTED_FIELD.get(entry["kind"], ("", ""))
        if (opening.get("field"), opening.get("domain")) != (field, domain):
            raise LedgerIntegrityError("the opening is for another field or domain", index=index)
        try:
            salt = base64.b64decode(opening["salt"], validate=True)
            content = base64.b64decode(opening["content"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise LedgerIntegrityError(f"malformed opening: {exc}", index=index) from exc
        open_commitment(domain, content, salt, entry[field], index=index)
    return signers
