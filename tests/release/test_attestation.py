"""DSSE and in-toto pieces of a release attestation (the DSSE PAE vector, signatures, keys).

The Merkle proofs come from bedside.ledger, whose tests run the RFC 6962 vectors."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.dsse import Envelope

from bedside.errors import SignatureError
from bedside.ledger import attestation as att


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


def test_statement_signs_and_verifies_with_the_custodian_key(tmp_path):
    signer = KeySigner("hospital.example/custodian")
    stmt = att.statement(
        subject_name="m.safetensors", digest_hex="ab" * 32, predicate={"request": "r-1"}
    )
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
