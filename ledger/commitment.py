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
from collections.abc import Callable
from typing import Any

import orjson
import rfc8785

from bedside.errors import LedgerError, LedgerIntegrityError

DOMAIN_CODE = "bedside/code/v1"
DOMAIN_OUTPUT = "bedside/output/v1"
DOMAIN_ARTIFACT = "bedside/artifact/v1"
DOMAINS = (DOMAIN_CODE, DOMAIN_OUTPUT, DOMAIN_ARTIFACT)

SALT_SIZE = 32


try:
    # OpenSSL's HMAC object without the `hmac.HMAC` wrapper: the same MAC, about a microsecond
    # less per commitment (the sentry makes one for every message that leaves).
    import _hashlib

    _hmac_new: Callable[..., Any] | None = _hashlib.hmac_new
except (ImportError, AttributeError):  # pragma: no cover - CPython without OpenSSL's HMAC
    _hmac_new = None


def _mac(domain: str, content: bytes, salt: bytes) -> str:
    # Fed in two parts rather than `domain + content`: the same MAC without copying a content
    # that may be megabytes long.
    if _hmac_new is not None:
        mac = _hmac_new(salt, domain.encode("utf-8"), digestmod="sha256")
    else:  # pragma: no cover
        mac = hmac.new(salt, domain.encode("utf-8"), hashlib.sha256)
    mac.update(content)
    return str(mac.hexdigest())


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


_INT_LIMIT = 2**53


def holds_float(value: Any) -> bool:
    """Does a parsed JSON value hold a float anywhere?

    orjson reads a JSON text as `json.loads` does except in what it returns as a float (an
    integer beyond 64 bits, whose digits json keeps exact and the guard scans): the sentry and
    the extension take orjson's value only when it holds no float, and read the text again with
    json otherwise. Kernel messages rarely hold floats."""
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        o = pop()
        t = type(o)
        if t is dict:
            for v in o.values():
                tv = type(v)
                if tv is float:
                    return True
                if tv is dict or tv is list:
                    push(v)
        elif t is list:
            stack.extend(o)
        elif t is float:
            return True
    return False


def _fast_ok(obj: Any) -> bool:
    """True when json.dumps(sort_keys) already yields RFC 8785 bytes for `obj`.

    That holds for str/int/bool/None/list/dict with ASCII keys and integers a double represents
    exactly; floats and non-ASCII keys (UTF-16 key order) take the reference implementation.
    Iterative, with the common leaf types checked inline: this runs on every append.
    """
    stack = [obj]
    pop, push = stack.pop, stack.append
    while stack:
        o = pop()
        t = type(o)
        if t is dict:
            for k, v in o.items():
                if type(k) is not str or not k.isascii():
                    return False
                tv = type(v)
                if tv is str or tv is bool or v is None:
                    continue
                if tv is int:
                    if not -_INT_LIMIT < v < _INT_LIMIT:
                        return False
                    continue
                push(v)
        elif t is list or t is tuple:
            stack.extend(o)
        elif t is str or t is bool or o is None:
            continue
        elif t is int:
            if not -_INT_LIMIT < o < _INT_LIMIT:
                return False
        else:
            return False
    return True


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _make_encode() -> Callable[[Any], str]:
    # JSONEncoder.encode builds a new C encoder on every call; build one once (no circularity
    # markers: entries are trees) and fall back to the pure-Python encoder where there is none.
    try:
        from json.encoder import (  # type: ignore[attr-defined]
            c_make_encoder,
            encode_basestring,
        )
    except ImportError:  # pragma: no cover
        return _ENCODER.encode
    if c_make_encoder is None:  # pragma: no cover
        return _ENCODER.encode
    enc = c_make_encoder(None, None, encode_basestring, None, ":", ",", True, False, False)

    def encode(obj: Any) -> str:
        return "".join(enc(obj, 0))

    return encode


_encode = _make_encode()


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 (JCS) bytes of `obj`."""
    if _fast_ok(obj):
        # orjson writes what json.dumps(sort_keys, ensure_ascii=False) writes for these values
        # (strings escaped alike for every code point, keys sorted by code point), a tenth of
        # the time for an entry and a megabyte output's string at memory speed; it refuses
        # lone surrogates, which the encoder below refuses too (UnicodeEncodeError) as before.
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
        return _encode(obj).encode("utf-8")
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise LedgerError(f"value cannot be written as canonical JSON: {exc}") from exc


class _FloatSeen(Exception):
    pass


def _no_float(_: str) -> float:
    raise _FloatSeen


_DECODER = json.JSONDecoder(parse_float=_no_float)


def parse_canonical(data: bytes) -> Any:
    """Parse JSON bytes and check that they are in RFC 8785 canonical form.

    Raises ValueError when they are not JSON or not canonical.
    """
    if data.isascii():
        # Fast path: no floats and ASCII only means json.dumps(sort_keys) is the canonical form.
        text = data.decode("ascii")
        try:
            obj, end = _DECODER.raw_decode(text)
        except _FloatSeen:
            pass
        else:
            if end != len(text) or _encode(obj) != text:
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
