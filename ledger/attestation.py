"""Release attestations: a DSSE envelope holding an in-toto Statement v1 about one artifact.

The statement's subject is the artifact (file name and SHA-256), its predicate the policy digest,
the requester and approvers, and the ledger checkpoint with the `release` entries behind it and
their RFC 6962 inclusion proofs. The envelope is securesystemslib's DSSE `Envelope`, signed
through a small `securesystemslib.signer.Signer` adapter over the custodian's bedside key (the
same Ed25519 key that signs the ledger's checkpoints), so there is one key to guard, not two.
This is bedside's only DSSE implementation: securesystemslib's PAE passes the DSSE spec vector
(byte lengths, also for non-ASCII types) and its envelopes round-trip (tests/ledger), so the
hand-written `ledger/dsse.py` that the ledger branch had was removed.

Entries and proofs come from `bedside.ledger` (its RFC 6962 log); `verify_release` returns a
summary and raises `ReleaseError` / `SignatureError` /
`LedgerIntegrityError` naming what failed, in the style of sigstore-python's verifier.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import rfc8785
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import (  # type: ignore[attr-defined]  # re-exported, no __all__
    Key,
    Signature,
    SSlibKey,
)
from securesystemslib.signer import Signer as SSLSigner  # type: ignore[attr-defined]

from bedside.errors import LedgerError, LedgerIntegrityError, ReleaseError, SignatureError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://bedside.dev/release/v1"


class LedgerView(Protocol):
    """The read side of `bedside.ledger.Ledger` an attestation needs."""

    @property
    def size(self) -> int: ...

    def root_at(self, size: int) -> bytes: ...

    def leaf_hash(self, index: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...

    def entry(self, index: int) -> dict[str, Any]: ...


class RawSigner(Protocol):
    """The part of `bedside.ledger.Signer` an attestation needs."""

    @property
    def verifier_key(self) -> str: ...

    def sign(self, msg: bytes) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# Keys


def vkey_public(vkey: str) -> tuple[str, bytes]:
    """C2SP verifier key `name+hexid+base64(0x01||pub32)` → (key id `name+hexid`, pub32).

    Parsed by `bedside.ledger.Verifier`, the one reader of verifier keys.
    """
    from bedside.ledger.note import Verifier

    try:
        verifier = Verifier(vkey)
    except LedgerError as exc:
        raise SignatureError(str(exc)) from exc
    return f"{verifier.name}+{verifier.key_id.hex()}", verifier.public


def sslib_key(vkey: str) -> SSlibKey:
    keyid, pub = vkey_public(vkey)
    return SSlibKey(keyid, "ed25519", "ed25519", {"public": pub.hex()})


class CustodianSigner(SSLSigner):
    """securesystemslib's Signer interface over a bedside key: DSSE signs, the key stays put."""

    def __init__(self, signer: RawSigner) -> None:
        self._signer = signer
        self._key = sslib_key(signer.verifier_key)

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Key, secrets_handler: Callable[[str], str] | None = None
    ) -> SSLSigner:
        raise ValueError("CustodianSigner wraps a loaded bedside key; it has no URI scheme")

    @property
    def public_key(self) -> Key:
        return self._key

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._key.keyid, self._signer.sign(payload).hex())


# ---------------------------------------------------------------------------------------------
# Building


def statement(
    *, subject_name: str, digest_hex: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": digest_hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": dict(predicate),
    }


def ledger_evidence(ledger: LedgerView, indexes: Sequence[int]) -> dict[str, Any]:
    """The ledger's current size and root, and an RFC 6962 inclusion proof for each index."""
    size = ledger.size
    return {
        "size": size,
        "root": ledger.root_at(size).hex(),
        "entries": [
            {
                "index": i,
                "leaf": ledger.leaf_hash(i).hex(),
                "proof": [p.hex() for p in ledger.inclusion_proof(i, size)],
            }
            for i in indexes
        ],
    }


def sign_statement(stmt: Mapping[str, Any], signer: RawSigner) -> dict[str, Any]:
    """The DSSE envelope (JSON-ready dict) over the RFC 8785 bytes of the statement."""
    env = Envelope(rfc8785.dumps(dict(stmt)), PAYLOAD_TYPE, {})
    env.sign(CustodianSigner(signer))
    return env.to_dict()


# ---------------------------------------------------------------------------------------------
# Verifying


def read_envelope(path: Path) -> tuple[Envelope, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text())
        env = Envelope.from_dict(raw)
        stmt = json.loads(env.payload)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(f"{path}: not a DSSE envelope holding a JSON statement ({exc})") from exc
    if env.payload_type != PAYLOAD_TYPE:
        raise ReleaseError(f"{path}: payloadType is {env.payload_type!r}, not {PAYLOAD_TYPE}")
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise ReleaseError(f"{path}: the payload is not an in-toto Statement v1")
    if stmt.get("predicateType") != PREDICATE_TYPE:
        raise ReleaseError(
            f"{path}: predicateType is {stmt.get('predicateType')!r}, not {PREDICATE_TYPE}"
        )
    return env, stmt


def verify_signature(env: Envelope, vkeys: Sequence[str]) -> str:
    """Raises SignatureError unless one of `vkeys` signed the envelope; returns that key."""
    keys = {sslib_key(v).keyid: v for v in vkeys}
    try:
        accepted = env.verify([sslib_key(v) for v in vkeys], 1)
    except (VerificationError, ValueError) as exc:
        names = ", ".join(sorted(keys))
        raise SignatureError(f"the attestation is not signed by a trusted key ({names})") from exc
    return keys[next(iter(accepted))]


def verify_subject(stmt: Mapping[str, Any], artifact: Path) -> str:
    try:
        data = artifact.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read the artifact {artifact}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    subjects = stmt.get("subject") or []
    for s in subjects:
        if s.get("digest", {}).get("sha256") == digest:
            if s.get("name") != artifact.name:
                raise ReleaseError(
                    f"{artifact.name}: the attestation names this digest {s.get('name')!r}"
                )
            return digest
    want = ", ".join(str(s.get("digest", {}).get("sha256")) for s in subjects)
    raise ReleaseError(
        f"{artifact}: SHA-256 {digest} is not the attested digest ({want}); "
        "the artifact was changed after release"
    )


def verify_inclusion(predicate: Mapping[str, Any], ledger: LedgerView) -> None:
    """Each entry named in the predicate is in the ledger, under the attested checkpoint."""
    from bedside.ledger.merkle import verify_inclusion as merkle_inclusion

    ev = predicate.get("ledger") or {}
    try:
        cp_size, cp_root = int(ev["size"]), bytes.fromhex(ev["root"])
        items = [
            (int(it["index"]), bytes.fromhex(it["leaf"]), [bytes.fromhex(p) for p in it["proof"]])
            for it in ev["entries"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError("the attestation has no ledger checkpoint and entries") from exc
    if not items:
        raise ReleaseError("the attestation names no ledger entries")
    if not 0 < cp_size <= ledger.size:
        raise LedgerIntegrityError(
            f"the attested checkpoint has {cp_size} entries but the "
            f"ledger {ledger.size}: it is not the ledger of this release"
        )
    local = ledger.root_at(cp_size)
    if local != cp_root:
        raise LedgerIntegrityError(
            f"the ledger's root at size {cp_size} is {local.hex()}, the attestation says "
            f"{cp_root.hex()}: the ledger or the attestation was changed"
        )
    for i, leaf, path in items:
        if not 0 <= i < cp_size or ledger.leaf_hash(i) != leaf:
            raise LedgerIntegrityError("the ledger entry differs from the attested one", index=i)
        merkle_inclusion(leaf, i, cp_size, path, cp_root)


def header_keys(header: Mapping[str, Any]) -> list[str]:
    """Every verifier key a ledger header names (its identities), wherever they sit."""
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and v.count("+") >= 2:
            try:
                vkey_public(v)
            except SignatureError:
                return
            found.append(v)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(header)
    return found


def verify_release(
    artifact: Path, envelope_path: Path, ledger_path: Path, *, keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """Digest, signature, ledger inclusion. Raises on the first failure; returns a summary."""
    from bedside.ledger import Ledger

    env, stmt = read_envelope(Path(envelope_path))
    digest = verify_subject(stmt, Path(artifact))
    predicate = stmt.get("predicate") or {}
    try:
        ledger = Ledger.open(Path(ledger_path))
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot open the ledger {ledger_path}: {exc}") from exc
    size = int(ledger.size)
    if keys is None:
        custodian = predicate.get("custodian")
        trusted = header_keys(ledger.entry(0)) if size else []
        if not isinstance(custodian, str) or custodian not in trusted:
            raise SignatureError(
                "the attestation's custodian key is not among the identities in the ledger's "
                "header; pass the custodian's verifier key with --key"
            )
        keys = [custodian]
    key = verify_signature(env, keys)
    verify_inclusion(predicate, ledger)
    _verify_checkpoint_note(predicate, key)
    _verify_story(predicate, ledger.entry, digest)
    return {
        "digest": digest,
        "key": key,
        "size": predicate["ledger"]["size"],
        "entries": len(predicate["ledger"]["entries"]),
        "approvers": [a.get("name") for a in predicate.get("approvers", [])],
    }


def _verify_checkpoint_note(predicate: Mapping[str, Any], key: str) -> None:
    """The attested checkpoint, when present, is a note the same custodian key signed."""
    from bedside.ledger import Verifier, open_checkpoint

    note = (predicate.get("ledger") or {}).get("checkpoint")
    if note is None:
        return
    cp, _ = open_checkpoint(str(note), [Verifier(key)])
    ev = predicate["ledger"]
    if cp.size != int(ev["size"]) or cp.root.hex() != ev["root"]:
        raise LedgerIntegrityError(
            "the signed checkpoint in the attestation is not the attested size and root"
        )


def _verify_story(
    predicate: Mapping[str, Any], entry_at: Callable[[int], Mapping[str, Any]], digest: str
) -> None:
    """The included entries must tell this release's story: request, checks passed, distinct
    approvers (none of them the requester), and a delivery of this very digest."""
    steps: dict[str, list[Mapping[str, Any]]] = {}
    for item in predicate["ledger"]["entries"]:
        e = entry_at(int(item["index"]))
        if e.get("kind") != "release" or e.get("request") != predicate.get("request"):
            raise LedgerIntegrityError(
                "an attested entry is not part of this release", index=int(item["index"])
            )
        steps.setdefault(str(e.get("step")), []).append(e)
    delivery = steps.get("delivery", [])
    if len(delivery) != 1 or delivery[0].get("digest") != f"sha256:{digest}":
        raise ReleaseError("the ledger records no delivery of this digest for this request")
    if not all(e.get("passed") for e in steps.get("checks", [])) or "checks" not in steps:
        raise ReleaseError("the ledger records failed checks for this request")
    names = [str(e.get("name")) for e in steps.get("approval", [])]
    if len(set(names)) != len(names):
        raise ReleaseError("the same custodian approved twice")
    requester = (predicate.get("requester") or {}).get("name")
    if requester is not None and requester in names:
        raise ReleaseError(f"the requester {requester} approved their own release")
    if predicate.get("mode") != "auto" and not names:
        raise ReleaseError("a reviewed release carries no approvals")
