"""Jupyter wire messages as the sentry sees them: split, check, parse and re-sign.

The sentry sits between two keys: K1 (the connection file Enterprise Gateway or jupyter_client
was given) and K2 (the private ipc connection file of the sandboxed kernel). Every message is
checked with the key of the side it came from and signed with the key of the side it goes to.
Frames that need no change are passed on as the exact bytes that arrived, so the common case
costs one HMAC check, one HMAC signature and one JSON parse.
"""

from __future__ import annotations

import _hashlib  # type: ignore[import-not-found]
import hashlib
import hmac
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any

import orjson

from bedside.errors import GatewayError
from bedside.ledger.commitment import holds_float
from bedside.ledger.entries import now

DELIM = b"<IDS|MSG>"
# A message whose content frame is at least this large has its signature checked beside the
# reading of its JSON when the caller gives `Wire.parse` a pool (the sentry does, for the kernel
# side); below it a thread's hand-over costs more than the overlap saves.
CHECK_APART_BYTES = 64 * 1024
PROTOCOL_VERSION = "5.3"


class MalformedMessage(Exception):
    """A message that cannot be trusted: bad framing, bad signature, bad JSON, or a replay."""


@dataclass
class Message:
    """One parsed Jupyter message, with the raw frames it arrived as."""

    idents: list[bytes]
    header: dict[str, Any]
    parent: dict[str, Any]
    metadata: dict[str, Any]
    content: dict[str, Any]
    buffers: list[bytes]
    raw_header: bytes
    raw_parent: bytes
    raw_metadata: bytes
    raw_content: bytes
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def parent_id(self) -> str:
        value = self.parent.get("msg_id", "") if isinstance(self.parent, dict) else ""
        return value if isinstance(value, str) else ""


_decode = json.JSONDecoder().decode


def _load_dict(raw: bytes, what: str) -> dict[str, Any]:
    try:
        # orjson reads a megabyte output in half of json's time. It reads an integer beyond
        # 64 bits as a float, where json keeps its digits (which the guard scans: an identifier
        # can hide in a big number), so a value holding any float is read again by json. What
        # orjson refuses and json reads (NaN, lone surrogate escapes) is read by json too: the
        # sentry reads every message exactly as json reads it.
        value = orjson.loads(raw)
        if holds_float(value):
            raise orjson.JSONDecodeError("floats are read by json", "", 0)
    except orjson.JSONDecodeError:
        try:
            # Jupyter frames are UTF-8: decoded here, json skips sniffing for UTF-16/32 and a BOM.
            value = _decode(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise MalformedMessage(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedMessage(f"{what} is not a JSON object")
    return value


def _hmac_object(key: bytes, digest: str) -> Any:
    """OpenSSL's HMAC object itself where there is one (`copy`, `update` and `hexdigest` in C,
    about a microsecond less per message than the `hmac.HMAC` wrapper around it), else that."""
    try:
        return _hashlib.hmac_new(key, digestmod=digest)
    except (AttributeError, ValueError, TypeError):  # pragma: no cover - no OpenSSL HMAC
        return hmac.new(key, digestmod=digest)


# `Wire.parse`'s `ahead`: (header, content, content frame's size) -> anything, in the pool.
Ahead = Callable[[dict[str, Any], dict[str, Any], int], Any]


def _load_apart(
    raw: bytes, raw_header: bytes, ahead: Ahead | None, read: Future[dict[str, Any]]
) -> Any:
    """Read a large message's content in the pool, hand it over through `read` at once, then
    run `ahead` on it; returns what `ahead` returned (None when it raised: the caller then does
    that work itself, or decides it is not needed)."""
    try:
        body = _load_dict(raw, "content")
    except BaseException as exc:  # noqa: BLE001 - reported by `parse`, after the signature
        read.set_exception(exc)
        return None
    read.set_result(body)
    if ahead is None:
        return None
    try:
        return ahead(_load_dict(raw_header, "header"), body, len(raw))
    except Exception:  # noqa: BLE001 - the header is checked again, after the signature
        return None


class Wire:
    """One side of the relay: the HMAC key and signature scheme of one connection file.

    `digest_history` rejects a replayed signature, as jupyter_client's Session does, so that a
    captured request cannot be sent twice.
    """

    def __init__(self, key: bytes, signature_scheme: str = "hmac-sha256", *, name: str) -> None:
        self.name = name
        self.key = key
        # As jupyter_client's Session: "hmac-<hashlib name>", no signature with an empty key.
        # (Not Session itself: importing jupyter_client would delay the kernel's launch.)
        scheme, _, digest = signature_scheme.partition("-")
        if scheme != "hmac" or digest not in hashlib.algorithms_available:
            raise GatewayError(
                f"unsupported signature_scheme {signature_scheme!r} in the connection file "
                "(use hmac-sha256)"
            )
        self._auth = _hmac_object(key, digest) if key else None
        self._history: OrderedDict[bytes, None] = OrderedDict()
        self._history_size = 1 << 16

    def sign(self, parts: list[bytes]) -> bytes:
        if self._auth is None:
            return b""
        mac = self._auth.copy()
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()

    def parse(
        self,
        frames: list[bytes],
        *,
        content: bool = True,
        pool: Executor | None = None,
        ahead: Ahead | None = None,
    ) -> Message:
        """Check and parse one multipart message; raise `MalformedMessage` on any doubt.

        With `pool`, the content frame of a message of `CHECK_APART_BYTES` or more is read
        there while this thread computes its signature, so a megabyte costs the longer of the
        two instead of their sum. That way round, not the other: the JSON reader holds the GIL
        from start to end, the hash lets go of it, so a hash in the pool could not even start
        until the reading here had finished. Either way the message is returned only once its
        signature has matched, and a bad signature is reported as such even when the JSON is
        bad too.

        With `ahead` as well, `ahead(header, content, size)` runs in the pool right after the
        content is read there (on the message as it arrived, before its signature is checked),
        and `msg.extra["ahead"]` is the future of what it returns (None when it raised): work
        on the content that can start before the signature has matched, for the caller to use
        only for the message it then returns (the sentry prepares a large output's release
        there). `parse` returns as soon as the content is read, without waiting for it.
        """
        try:
            cut = frames.index(DELIM)
        except ValueError:
            raise MalformedMessage("no <IDS|MSG> delimiter") from None
        idents = frames[:cut]
        parts = frames[cut + 1 :]
        if len(parts) < 5:
            raise MalformedMessage(f"{len(parts)} frames after the delimiter, expected 5 or more")
        signature, raw_header, raw_parent, raw_metadata, raw_content = parts[:5]
        signed = [raw_header, raw_parent, raw_metadata, raw_content]
        apart: Future[Any] | None = None
        extra: dict[str, Any] = {}
        if content and pool is not None and len(raw_content) >= CHECK_APART_BYTES:
            # (made only here: a Future builds a Condition and its lock, a few microseconds
            # on every small message's path for nothing)
            read: Future[dict[str, Any]] = Future()
            try:
                apart = pool.submit(_load_apart, raw_content, raw_header, ahead, read)
            except RuntimeError:  # the pool is shut down: the sentry is closing
                apart = None
        try:
            if self._auth is not None:
                self._accept(signature, self.sign(signed))
            header = _load_dict(raw_header, "header")
            if not isinstance(header.get("msg_type"), str) or not isinstance(
                header.get("msg_id"), str
            ):
                raise MalformedMessage("header lacks msg_type or msg_id")
            parent = _load_dict(raw_parent, "parent header")
            metadata = _load_dict(raw_metadata, "metadata")
            if apart is not None:
                wait([read, apart], return_when=FIRST_COMPLETED)
                if not read.done() and apart.cancelled():  # the pool shut down meanwhile
                    body = _load_dict(raw_content, "content")
                else:
                    body = read.result()
                if ahead is not None:
                    extra["ahead"] = apart  # what `ahead` returns, when it has run
                apart = None
            else:
                body = _load_dict(raw_content, "content") if content else {}
        finally:
            if apart is not None:
                # Refused: its content is not read if that has not started, and what the pool
                # reads or makes of it is dropped.
                apart.cancel()
        return Message(
            idents=idents,
            header=header,
            parent=parent,
            metadata=metadata,
            content=body,
            buffers=list(parts[5:]),
            raw_header=raw_header,
            raw_parent=raw_parent,
            raw_metadata=raw_metadata,
            raw_content=raw_content,
            extra=extra,
        )

    def _accept(self, signature: bytes, expected: bytes) -> None:
        """Accept `signature` if it is `expected` and was not seen before (a replay)."""
        if not hmac.compare_digest(signature, expected):
            raise MalformedMessage("bad HMAC signature")
        if signature in self._history:
            raise MalformedMessage("replayed signature")
        self._history[signature] = None
        if len(self._history) > self._history_size:
            self._history.popitem(last=False)

    def frames(
        self,
        idents: list[bytes],
        raw_header: bytes,
        raw_parent: bytes,
        raw_metadata: bytes,
        raw_content: bytes,
        buffers: list[bytes] | None = None,
        *,
        signature: bytes | None = None,
    ) -> list[bytes]:
        """The multipart frames of a message signed with this side's key (`signature`: this
        side's signature of these four frames, computed already)."""
        if signature is None:
            signature = self.sign([raw_header, raw_parent, raw_metadata, raw_content])
        out = [*idents, DELIM, signature, raw_header, raw_parent, raw_metadata, raw_content]
        if buffers:
            out.extend(buffers)
        return out


def _make_dumps() -> Any:
    # json.dumps with these options builds a new encoder on every call; its C encoder is built
    # once here (no circularity check: messages are trees, and a cycle is still refused, as
    # RecursionError), about half of json.dumps's time on a header.
    from json.encoder import (  # type: ignore[attr-defined]
        c_make_encoder,
        encode_basestring,
    )

    if c_make_encoder is None:  # pragma: no cover - a Python without the C encoder
        return None

    def fail(obj: Any) -> Any:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    return c_make_encoder(None, fail, encode_basestring, None, ":", ",", False, False, False)


_encoder = _make_dumps()


def dumps(obj: Any) -> bytes:
    """Compact JSON as jupyter_client writes it (UTF-8, no NaN)."""
    if _encoder is not None:
        return "".join(_encoder(obj, 0)).encode()
    return json.dumps(  # pragma: no cover
        obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()


class RandomPool:
    """Bytes of `os.urandom`, read 4 KiB at a time and handed out once each.

    The same CSPRNG output as one `os.urandom` call per message id and commitment salt, with one
    system call per ~100 messages instead of two per message (a few percent of the sentry's
    work on a trivial cell). Not shared across a fork: the sentry does not fork.
    """

    def __init__(self, chunk: int = 4096) -> None:
        self._chunk = chunk
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf = os.urandom(max(self._chunk, n))
                self._pos = 0
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out


RANDOM = RandomPool()


def new_header(msg_type: str, session_id: str, username: str = "bedside") -> dict[str, Any]:
    """A header written by the sentry: nothing of the kernel's own header leaves."""
    return {
        # 128 random bits as 32 hex digits, like uuid4().hex without its object (µs per message).
        "msg_id": RANDOM.take(16).hex(),
        "msg_type": msg_type,
        "username": username,
        "session": session_id,
        "date": now(),
        "version": PROTOCOL_VERSION,
    }
