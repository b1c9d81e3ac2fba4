"""Hiding commitments to code and output content, and RFC 8785 canonical JSON.

A commitment is HMAC-SHA256(salt, domain || content) with a fresh random 32-byte salt per entry:
the ledger can be published without revealing anything about the content (the salt hides even
low-entropy content such as a count), yet whoever holds the opening (salt and content) can show
that the ledger committed to exactly these bytes. Domains separate code, outputs and artifacts so
an opening of one kind can never be passed off as another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

import rfc8785

from bedside.errors import LedgerError, LedgerIntegrityError

DOMAIN_CODE = "bedside/code/v1"
DOMAIN_OUTPUT = "bedside/output/v1"
DOMAIN_ARTIFACT = "bedside/artifact/v1"
DOMAINS = (DOMAIN_CODE, DOMAIN_OUTPUT, DOMAIN_ARTIFACT)

SALT_SIZE = 32


def _mac(domain: str, content: bytes, salt: bytes) -> str:
    return hmac.new(salt, domain.encode("utf-8") + content, hashlib.sha256).hexdigest()


def commit(domain: str, content: bytes, *, salt: bytes | None = None) -> tuple[str, bytes]:
    """Commit to `content`: returns (commitment hex, salt). A fresh salt is drawn unless given."""
    if domain not in DOMAINS:
        raise LedgerError(f"unknown commitment domain {domain!r}; use one of {', '.join(DOMAINS)}")
    if salt is None:
        salt = os.urandom(SALT_SIZE)
    elif len(salt) != SALT_SIZE:
        raise LedgerError("a commitment salt is 32 bytes")
    return _mac(domain, content, salt), salt


def open_commitment(
    domain: str, content: bytes, salt: bytes, commitment: str, *, index: int | None = None
) -> None:
    """Raise LedgerIntegrityError unless (salt, content) opens `commitment` in `domain`."""
    if len(salt) != SALT_SIZE:
        raise LedgerIntegrityError("opening salt is not 32 bytes", index=index)
    if not hmac.compare_digest(_mac(domain, content, salt), commitment):
        raise LedgerIntegrityError(
            f"opening does not match the {domain} commitment {commitment[:16]}…", index=index
        )


# --- RFC 8785 -------------------------------------------------------------------------------


def _fast_ok(obj: Any) -> bool:
    """True when json.dumps(sort_keys) already yields RFC 8785 bytes for `obj`.

    That holds for str/int/bool/None/list/dict with ASCII keys and integers a double represents
    exactly; floats and non-ASCII keys (UTF-16 key order) take the reference implementation.
    """
    t = type(obj)
    if t is str or t is bool or obj is None:
        return True
    if t is int:
        return bool(-(2**53) < obj < 2**53)
    if t is dict:
        return all(type(k) is str and k.isascii() and _fast_ok(v) for k, v in obj.items())
    if t is list or t is tuple:
        return all(_fast_ok(v) for v in obj)
    return False


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 (JCS) bytes of `obj`."""
    if _fast_ok(obj):
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise LedgerError(f"value cannot be written as canonical JSON: {exc}") from exc


class _FloatSeen(Exception):
    pass


def _no_float(_: str) -> float:
    raise _FloatSeen


def parse_canonical(data: bytes) -> Any:
    """Parse JSON bytes and check that they are in RFC 8785 canonical form.

    Raises ValueError when they are not JSON or not canonical.
    """
    if data.isascii():
        # Fast path: no floats and ASCII only means json.dumps(sort_keys) is the canonical form.
        try:
            obj = json.loads(data, parse_float=_no_float)
        except _FloatSeen:
            obj = None
        else:
            if (
                json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
                != data
            ):
                raise ValueError("entry bytes are not RFC 8785 canonical JSON")
            return obj
    obj = json.loads(data)
    try:
        canonical = rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ValueError(f"entry cannot be canonicalized: {exc}") from exc
    if canonical != data:
        raise ValueError("entry bytes are not RFC 8785 canonical JSON")
    return obj
