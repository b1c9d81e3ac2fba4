"""DSSE and in-toto pieces of a release attestation, against the published vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from bedside.ledger import attestation as att
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.dsse import Envelope

from bedside.errors import LedgerIntegrityError, SignatureError

VECTORS = Path("/work/shared/vectors")
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                     "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


class KeySigner:
    """A raw Ed25519 key with a C2SP verifier key, standing in for bedside.ledger.Signer."""

    def __init__(self, name: str) -> None:
        self._key = Ed25519PrivateKey.generate()
        pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        keyid = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4].hex()
        blob = base64.b64encode(b"\x01" + pub).decode()
        self.verifier_key = f"{name}+{keyid}+{blob}"

    def sign(self, msg: bytes) -> bytes:
        return self._key.sign(msg)


def test_pae_matches_the_dsse_vector():
    env = Envelope(b"hello world", "http://example.com/HelloWorld", {})
    assert env.pae() == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_merkle_roots_match_rfc6962_vectors():
    leaves = [hashlib.sha256(b"\x00" + d).digest() for d in LEAVES]
    for n, want in ROOTS.items():
        assert att.merkle_root(leaves[:n]).hex() == want


def test_inclusion_paths_verify_for_every_leaf_and_size():
    leaves = [hashlib.sha256(b"\x00" + d).digest() for d in LEAVES]
    for n in range(1, 9):
        root = att.merkle_root(leaves[:n])
        for i in range(n):
            path = att.inclusion_path(leaves[:n], i)
            assert att.root_from_path(i, n, leaves[i], path) == root


def _vector_files():
    base = VECTORS / "rfc6962" / "inclusion"
    return sorted(p for p in base.rglob("*.json")) if base.exists() else []


@pytest.mark.skipif(not _vector_files(), reason="shared vectors not present")
def test_inclusion_vectors_from_transparency_dev():
    checked = 0
    for path in _vector_files():
        v = json.loads(path.read_text())
        b = base64.b64decode
        ok = True
        try:
            if v["leafHash"] is None or v["root"] is None:
                raise LedgerIntegrityError("missing")
            got = att.root_from_path(v["leafIdx"], v["treeSize"], b(v["leafHash"]),
                                     [b(p) for p in v["proof"] or []])
            ok = got == b(v["root"])
        except LedgerIntegrityError:
            ok = False
        assert ok is (not v["wantErr"]), path
        checked += 1
    assert checked > 50


def test_statement_signs_and_verifies_with_the_custodian_key(tmp_path):
    signer = KeySigner("hospital.example/custodian")
    stmt = att.statement(subject_name="m.safetensors", digest_hex="ab" * 32,
                         predicate={"request": "r-1"})
    env = att.sign_statement(stmt, signer)
    path = tmp_path / "m.safetensors.intoto.json"
    path.write_text(json.dumps(env))
    envelope, parsed = att.read_envelope(path)
    assert parsed == stmt
    assert parsed["_type"] == "https://in-toto.io/Statement/v1"
    assert att.verify_signature(envelope, [signer.verifier_key]) == signer.verifier_key
    with pytest.raises(SignatureError):
        att.verify_signature(envelope, [KeySigner("someone-else").verifier_key])
    # A changed payload no longer verifies.
    env["payload"] = base64.b64encode(json.dumps({**stmt, "subject": []}).encode()).decode()
    path.write_text(json.dumps(env))
    envelope, _ = att.read_envelope(path)
    with pytest.raises(SignatureError):
        att.verify_signature(envelope, [signer.verifier_key])


def test_verifier_key_parsing_checks_the_key_id():
    signer = KeySigner("custodian")
    keyid, pub = att.vkey_public(signer.verifier_key)
    assert keyid.startswith("custodian+") and len(pub) == 32
    name, kid, blob = signer.verifier_key.split("+", 2)
    with pytest.raises(SignatureError, match="key id"):
        att.vkey_public(f"{name}+00000000+{blob}")
