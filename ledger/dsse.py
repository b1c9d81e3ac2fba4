"""DSSE v1 envelopes (Dead Simple Signing Envelope) for release attestations.

A released artifact gets an envelope whose payload is an in-toto Statement v1 naming the
artifact's digest and the ledger entries that produced it. Signatures are Ed25519 over
PAE(payloadType, payload); `keyid` is the signer's C2SP verifier-key name and id.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from bedside.errors import SignatureError

from .note import Signer, Verifier

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1 <len> <type> <len> <payload>"."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _keyid(name: str, key_id: bytes) -> str:
    return f"{name}+{key_id.hex()}"


def sign_envelope(payload_type: str, payload: bytes, *signers: Signer) -> dict[str, Any]:
    msg = pae(payload_type, payload)
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": _keyid(s.name, s.key_id), "sig": base64.b64encode(s.sign(msg)).decode()}
            for s in signers
        ],
    }


def verify_envelope(envelope: dict[str, Any], verifiers: list[Verifier]) -> tuple[str, bytes]:
    """Return (payloadType, payload) if a trusted key signed; raise SignatureError otherwise."""
    try:
        payload_type = str(envelope["payloadType"])
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = list(envelope["signatures"])
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise SignatureError(f"malformed DSSE envelope: {exc}") from exc
    msg = pae(payload_type, payload)
    by_id = {_keyid(v.name, v.key_id): v for v in verifiers}
    trusted = 0
    for s in sigs:
        verifier = by_id.get(str(s.get("keyid", "")))
        if verifier is None:
            continue
        try:
            sig = base64.b64decode(s["sig"], validate=True)
        except (KeyError, ValueError, binascii.Error) as exc:
            raise SignatureError("malformed DSSE signature") from exc
        verifier.verify(msg, sig)
        trusted += 1
    if not trusted:
        raise SignatureError("no trusted key signed the DSSE envelope")
    return payload_type, payload


def intoto_statement(
    *, name: str, sha256: str, predicate_type: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    """An in-toto Statement v1 for one artifact."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": sha256}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
