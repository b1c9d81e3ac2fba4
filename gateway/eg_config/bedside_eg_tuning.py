"""Enterprise Gateway's kernel websocket path without its avoidable costs, same bytes' meaning.

Loaded from `jupyter_enterprise_gateway_config.py` inside Enterprise Gateway's own environment
(EG 3.3 on jupyter_server 1.24, jupyter_client 6.1, pyzmq 24, all pinned by
gateway/requirements-eg.txt). Every patch keeps what the client receives: the same messages, each
parsing to the same JSON value, after the same signature checks. Measured per 1 MB iopub message
(docs/custodian/gateway.md, "Benchmarks"):

- TCP_NODELAY on every kernel websocket. Tornado leaves Nagle's algorithm on; a Jupyter message
  is one small frame, so the kernel's reply waits for the client's delayed ACK (~40 ms a cell).
- The content of a large message is forwarded as the kernel wrote it. Stock EG parses every
  message (checking its HMAC, which it still does) and serialises it again with `ensure_ascii`
  for the legacy websocket protocol: for a 1 MB output that is a second full pass over the
  megabyte and a UTF-8 copy. The content frame, once checked and parsed, is spliced between the
  re-serialised header parts instead: JSON text of the same value (the kernel's own packing).
- Dates in headers are parsed with `datetime.fromisoformat` where dateutil's general parser
  (stock) would give the same value: each message carries two, and dateutil costs ~70 µs each.
- The activity monitor (idle culling) verifies and parses only status messages: for any other
  iopub message stock EG computes the HMAC over the whole message only to read its type, after
  it has already recorded the activity.
- The content frame of a large message is checked by orjson (a subset of what the stock parser
  accepts; anything it refuses goes to the stock parser), after the stock signature and replay
  checks: ~0.9 ms less per MB than decoding the frame and parsing it with the json module.
- A large websocket frame is written unjoined (the header with the first 64 KiB, the rest as a
  view) instead of tornado's `header + payload` copy of the whole message.

Every patch but nodelay is guarded to the versions it was read against (EG 3.3.0,
jupyter_server 1.24.0, jupyter_client 6.1.12, tornado 6.6.1): on any other, the stock path runs.
The last two took the gateway's CPU per 1 MB cell from 6.8 to 4.8-5.1 ms on a plain local
kernel (`bench/gateway_hop_ab.py`, old and new tuning side by side, CPU from /proc).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import struct
import uuid
from typing import Any

try:  # installed by gateway/requirements-eg.txt; without it large content takes the stock parse
    import orjson
except ImportError:  # pragma: no cover
    orjson = None

log = logging.getLogger("bedside.eg_tuning")

#: Content frames at least this long are forwarded as written; smaller ones take the stock path
#: (re-serialising a few kilobytes costs less than the splice's bookkeeping is worth reasoning
#: about, and every message the handler may rewrite, such as `error`, is small).
SPLICE_MIN_BYTES = 64 * 1024

#: The versions the patches were written against (`Session.deserialize`, tornado's
#: `WebSocketProtocol13._write_frame`, jupyter_server's `_on_zmq_reply`, EG's activity monitor).
#: Any other version takes the stock path.
_JUPYTER_CLIENT = "6.1.12"
_TORNADO = "6.6.1"
_JUPYTER_SERVER = "1.24.0"
_ENTERPRISE_GATEWAY = "3.3.0"

_V1 = "v1.kernel.websocket.jupyter.org"
# Unguessable per process: the slot the content frame goes into, never sent anywhere.
_SLOT_TEXT = "bedside-content-" + uuid.uuid4().hex
_SLOT = object()
# The date forms `fromisoformat` reads exactly as dateutil does (offset with a colon, 1-6 digit
# fraction, an explicit zone); anything else goes to the stock parser.
_FAST_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")


def apply() -> None:
    """Install every tuning below (idempotent)."""
    from enterprise_gateway.services.kernels import handlers

    cls = handlers.ZMQChannelsHandler
    if getattr(cls, "_bedside_tuned", False):
        return
    _nodelay(cls)
    # The rest reimplements or reads private parts of the versions pinned by
    # gateway/requirements-eg.txt: on any other version those stay stock (nodelay is public API).
    if _versions_read_against():
        _splice_large_content(cls)
        _fast_dates()
        _lean_activity()
        _unjoined_large_frames()
    else:
        log.warning("bedside: websocket tuning off (not the versions it was written against)")
    cls._bedside_tuned = True


def _versions_read_against() -> bool:
    """True if EG, jupyter_server and jupyter_client are the versions the patches copy from."""
    import jupyter_client
    import jupyter_server
    from enterprise_gateway._version import __version__ as eg_version

    return (eg_version, jupyter_server.__version__, jupyter_client.__version__) == (
        _ENTERPRISE_GATEWAY,
        _JUPYTER_SERVER,
        _JUPYTER_CLIENT,
    )


def _nodelay(cls: Any) -> None:
    original = cls.open

    def open(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A001 - tornado's name
        self.set_nodelay(True)
        return original(self, *args, **kwargs)

    open._bedside_nodelay = True  # type: ignore[attr-defined]
    cls.open = open


def _content_frame(msg_list: list[Any]) -> bytes | None:
    """The content frame of a ZMQ message if it is large enough to splice, else None."""
    try:
        delim = msg_list.index(b"<IDS|MSG>")
    except ValueError:
        return None
    if len(msg_list) != delim + 6:  # signature, 4 parts and no buffers
        return None
    frame = msg_list[delim + 5]
    if type(frame) is not bytes or len(frame) < SPLICE_MIN_BYTES:
        return None
    return frame


def _splice_large_content(cls: Any) -> None:
    """`_on_zmq_reply` for the legacy (JSON text) protocol with the content frame spliced in.

    The stock method (jupyter_server 1.24: ZMQChannelsHandler._on_zmq_reply, then
    ZMQStreamHandler._on_zmq_reply and _reserialize_reply) runs step for step, including
    `Session.deserialize` (signature, replay check, content parsed, which also proves the frame
    is UTF-8 JSON), the error-masking hook and the iopub rate limit. Only the final
    `json.dumps(msg)` changes: the message is serialised with a placeholder for `content` and
    the frame goes in its place. Anything unusual (buffers, an `error` message the hook may
    rewrite, a protocol major version the adapter would translate) takes the stock path.
    """
    # the `default` stock serialises with (date_default under jupyter_client 6)
    from jupyter_server.base.zmqhandlers import json_default

    original = cls._on_zmq_reply

    def default(obj: Any) -> Any:
        if obj is _SLOT:
            return _SLOT_TEXT
        return json_default(obj)

    def _on_zmq_reply(self: Any, stream: Any, msg_list: list[Any]) -> None:
        if self.subprotocol == _V1:
            return original(self, stream, msg_list)
        frame = _content_frame(msg_list)
        if frame is None:
            return original(self, stream, msg_list)
        try:
            version = json.loads(msg_list[msg_list.index(b"<IDS|MSG>") + 2])["version"]
            if str(version).split(".")[0] != "5":
                return original(self, stream, msg_list)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return original(self, stream, msg_list)
        # ZMQChannelsHandler._on_zmq_reply
        _idents, fed_msg_list = self.session.feed_identities(msg_list)
        msg = _deserialize(self.session, fed_msg_list, frame)
        channel = getattr(stream, "channel", None)
        parts = fed_msg_list[1:]
        self._on_error(channel, msg, parts)
        if self._limit_rate(channel, msg, parts):
            return None
        # ZMQStreamHandler._on_zmq_reply
        if self.ws_connection is None or stream.closed():
            self.log.warning("zmq message arrived on closed channel")
            self.close()
            return None
        if msg["buffers"] or msg["header"].get("msg_type") == "error":
            text: Any = self._reserialize_reply(msg, channel=channel)
            self.write_message(text, binary=isinstance(text, bytes))
            return None
        # _reserialize_reply, with the content as the kernel wrote it
        if channel:
            msg["channel"] = channel
        content, msg["content"] = msg["content"], _SLOT
        try:
            head = json.dumps(msg, default=default)
        finally:
            msg["content"] = content
        cut = head.index(f'"{_SLOT_TEXT}"')
        # ensure_ascii (stock): head is ASCII; the frame is UTF-8 (deserialize decoded it).
        data = b"".join(
            (head[:cut].encode("ascii"), frame, head[cut + len(_SLOT_TEXT) + 2 :].encode("ascii"))
        )
        self.write_message(data, binary=False)
        return None

    _on_zmq_reply._bedside_splice = True  # type: ignore[attr-defined]
    cls._on_zmq_reply = _on_zmq_reply


def _deserialize(session: Any, fed_msg_list: list[Any], frame: bytes) -> dict[str, Any]:
    """`session.deserialize(fed_msg_list)` with the large content frame parsed by orjson.

    Stock (jupyter_client 6.1.12) checks the signature over all four parts, refuses a replayed
    signature and records it, parses header, parent and metadata, then parses the content with
    `json.loads(frame.decode("utf8"))`: a UTF-8 decode and a pure-Python-speed pass over the
    megabyte. Here `deserialize(content=False)` does the same signature and replay checks and
    the same header parts, the signature is recorded as stock records it, and the content is
    parsed by orjson, which accepts a subset of what the stock parser accepts (strict UTF-8
    and RFC 8259: no NaN, no integer beyond 64 bits, no lone surrogate) and reads it to the same
    value. Anything orjson refuses is parsed by the stock unpacker, which raises as stock does.
    On the splice path the content's value is only checked, never re-serialised: the client gets
    the frame as the kernel wrote it.
    """
    from jupyter_client.session import json_unpacker

    if orjson is None or session.unpack is not json_unpacker or session.auth is None:
        return session.deserialize(fed_msg_list)
    msg = session.deserialize(fed_msg_list, content=False)
    # content=False skips recording the signature (stock: "don't store if just peeking")
    session._add_digest(fed_msg_list[0])
    try:
        msg["content"] = orjson.loads(frame)
    except orjson.JSONDecodeError:
        msg["content"] = session.unpack(frame)
    return msg


#: Frames from this size on are written unjoined: the payload's first `_LEAD` bytes go with the
#: header, the rest (always more than tornado's 2 KiB small-write threshold) as a view.
_UNJOINED_MIN = 1 << 18
_LEAD = 1 << 16


def _unjoined_large_frames() -> None:
    """A large server websocket frame written as header, then payload: no megabyte join.

    Stock tornado 6.6.1 builds every frame as `header + data`, a copy of the whole message
    before the socket write. For an unmasked (server side) data frame of 256 KiB or more the
    header (the same 10 bytes stock builds) goes to the stream with the payload's first 64 KiB,
    and the rest of the payload as a view, which tornado's write buffer keeps without a copy:
    the same bytes on the wire, a 64 KiB copy instead of the whole frame's. (The header alone
    as a write of its own cost more than the copy it saved: a 10-byte send.) Anything else
    (small, masked, control frames, another tornado) takes the stock method.
    """
    import tornado
    from tornado.websocket import WebSocketProtocol13

    stock = WebSocketProtocol13._write_frame
    if tornado.version != _TORNADO or getattr(stock, "_bedside_unjoined", False):
        return

    def _write_frame(self: Any, fin: bool, opcode: int, data: bytes, flags: int = 0) -> Any:
        if (
            type(data) is not bytes
            or len(data) < _UNJOINED_MIN
            or self.mask_outgoing
            or opcode & 0x8
        ):
            return stock(self, fin, opcode, data, flags)
        head = struct.pack("!BBQ", (self.FIN if fin else 0) | opcode | flags, 127, len(data))
        self._wire_bytes_out += len(head) + len(data)
        # the header travels with the payload's first 64 KiB (one socket write, as stock's
        # first), the rest as a view of the payload (tornado buffers a view, no copy)
        self.stream.write(head + data[:_LEAD])
        return self.stream.write(memoryview(data)[_LEAD:])

    _write_frame._bedside_unjoined = True  # type: ignore[attr-defined]
    WebSocketProtocol13._write_frame = _write_frame


def _fast_dates() -> None:
    """`jupyter_client.jsonutil.parse_date` with a fast path for the ISO forms kernels write.

    For a string the fast pattern accepts, `fromisoformat` and dateutil give equal aware
    datetimes (same instant, same UTC offset), so `date_default` writes the same text back.
    Any other string, or any error, goes to the stock function.
    """
    from jupyter_client import jsonutil

    stock = jsonutil.parse_date
    if getattr(stock, "_bedside_fast", False):
        return

    def parse_date(s: Any) -> Any:
        if type(s) is str and _FAST_DATE.fullmatch(s):
            try:
                return _dt.datetime.fromisoformat(s)
            except ValueError:
                pass
        return stock(s)

    parse_date._bedside_fast = True  # type: ignore[attr-defined]
    jsonutil.parse_date = parse_date


def _lean_activity() -> None:
    """Activity monitoring that reads only the header of non-status iopub messages.

    Stock `start_watching_activity` records `last_activity` for every iopub message first, then
    deserializes it (HMAC over all of it) just to read `msg_type`, and uses the content only of
    status messages. Here a non-status message updates `last_activity` (as stock) and is done;
    a status message, or one whose header cannot be read, goes to the stock callback unchanged.
    """
    from enterprise_gateway.services.kernels.remotemanager import RemoteMappingKernelManager
    from jupyter_server._tz import utcnow

    original = RemoteMappingKernelManager.start_watching_activity
    if getattr(original, "_bedside_lean", False):
        return

    def start_watching_activity(self: Any, kernel_id: str) -> None:
        original(self, kernel_id)
        kernel = self._kernels[kernel_id]
        stream = getattr(kernel, "_activity_stream", None)
        stock = getattr(stream, "_recv_callback", None)
        if stream is None or stock is None:
            return
        manager = self

        def record_activity(msg_list: list[Any]) -> None:
            try:
                delim = msg_list.index(b"<IDS|MSG>")
                msg_type = json.loads(msg_list[delim + 2])["msg_type"]
            except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
                msg_type = None
            if msg_type is None or msg_type == "status":
                stock(msg_list)
                return
            manager.last_kernel_activity = kernel.last_activity = utcnow()

        stream.on_recv(record_activity)

    start_watching_activity._bedside_lean = True  # type: ignore[attr-defined]
    RemoteMappingKernelManager.start_watching_activity = start_watching_activity
