"""The kernel websocket path to the hospital, with every message checked and recorded.

`BedsideWebSocketConnection` is jupyter_server's `GatewayWebSocketConnection` (selected through
`ServerApp.kernel_websocket_connection_class`) with the session mirror in both directions:
execute requests are signed before they leave, every message that comes back is checked against
its receipt and marked `metadata.bedside.verified`. It also turns off Nagle's algorithm on both
websockets, which otherwise holds back each small message by tens of milliseconds on loopback.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from tornado.ioloop import IOLoop

from bedside.errors import GatewayError

from .mirror import COSIGN_DELAY, PENDING, REFUSED, SessionMirror, new_message
from .sessions import SessionRegistry

REGISTRY_KEY = "bedside_sessions"

log = logging.getLogger("bedside.extension")


_DECODER = json.JSONDecoder()
_WS = " \t\n\r"

#: Content strings at least this long (as JSON text) are handed to the mirror as text.
TOKEN_MIN_CHARS = 64 * 1024


class _Shape(Exception):
    """The text is not laid out as `parse_message` expects: parse it the ordinary way."""


def _ws(text: str, i: int) -> int:
    while text[i] in _WS:
        i += 1
    return i


def _members(text: str, i: int, walk: str = "") -> tuple[list[tuple[str, int, int, Any]], int]:
    """The members (key, value start, value end, value) of the JSON object at text[i], in
    order, and the index after the object. The value of key `walk`, if an object, is walked in
    turn instead of decoded whole: its value is (dict, its members)."""
    if text[i] != "{":
        raise _Shape
    members: list[tuple[str, int, int, Any]] = []
    i = _ws(text, i + 1)
    if text[i] == "}":
        return members, i + 1
    while True:
        if text[i] != '"':
            raise _Shape
        key, i = _DECODER.raw_decode(text, i)
        i = _ws(text, i)
        if text[i] != ":":
            raise _Shape
        start = _ws(text, i + 1)
        value: Any
        if key == walk and text[start] == "{":
            inner, end = _members(text, start)
            value = ({k: v for k, _a, _b, v in inner}, inner)
        else:
            value, end = _DECODER.raw_decode(text, start)
        members.append((key, start, end, value))
        i = _ws(text, end)
        if text[i] == "}":
            return members, i + 1
        if text[i] != ",":
            raise _Shape
        i = _ws(text, i + 1)


class Parsed:
    """One message from the gateway: parsed, with where its metadata and long strings sit."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.meta_span: tuple[int, int] | None = None
        self.tokens: dict[str, bytes | memoryview] = {}
        # the text as UTF-8 when it is ASCII (as stock Enterprise Gateway writes it): then
        # character and byte offsets agree, and tokens and the output are slices of it
        big = len(text) >= TOKEN_MIN_CHARS
        self.data = text.encode("ascii") if big and text.isascii() else None
        try:
            self.msg = self._walk()
        except (_Shape, ValueError, IndexError):
            self.meta_span, self.tokens = None, {}
            self.msg = json.loads(text)

    def _walk(self) -> dict[str, Any]:
        """json.loads(text), recording spans on the way (same value, same duplicate-key rule:
        the last one wins, for the spans too)."""
        text = self.text
        members, end = _members(text, _ws(text, 0), walk="content")
        if text[end:].strip(_WS):
            raise _Shape  # json.loads: "Extra data"
        msg: dict[str, Any] = {}
        spans: dict[str, tuple[int, int]] = {}
        for key, a, b, value in members:
            spans[key] = (a, b)
            if key == "content" and isinstance(value, tuple):
                value, inner = value
                tokens: dict[str, tuple[int, int]] = {}
                for ckey, ca, cb, cvalue in inner:
                    tokens.pop(ckey, None)
                    if isinstance(cvalue, str) and cb - ca >= TOKEN_MIN_CHARS:
                        tokens[ckey] = (ca, cb)
                self.tokens = {k: self._slice(ca, cb) for k, (ca, cb) in tokens.items()}
            elif key == "content":
                self.tokens = {}
            msg[key] = value
        self.meta_span = spans.get("metadata")
        return msg

    def _slice(self, a: int, b: int) -> bytes | memoryview:
        if self.data is not None:
            return memoryview(self.data)[a:b]
        return self.text[a:b].encode("utf-8")

    def with_metadata(self) -> str | bytes:
        """The message as received, its top-level `metadata` replaced by `msg["metadata"]`.

        Only the metadata changes on the way to the browser, so the rest of the text (a 1 MB
        output) is passed on as it came instead of being serialised again; bytes when the text
        is ASCII (tornado sends bytes as they are). Without a metadata span, serialised in full.
        """
        span = self.meta_span
        if span is None:
            return json.dumps(self.msg)
        meta = json.dumps(self.msg["metadata"])
        if self.data is not None:
            view = memoryview(self.data)
            return b"".join((view[: span[0]], meta.encode("ascii"), view[span[1] :]))
        return self.text[: span[0]] + meta + self.text[span[1] :]


def parse_message(text: str) -> Parsed:
    """A message from the gateway, parsed once: see `Parsed`."""
    return Parsed(text)


def with_metadata(text: str, msg: dict[str, Any]) -> str:
    """`text` (one message as JSON) with its top-level `metadata` replaced by `msg["metadata"]`
    (the headless runner's and the benchmark's form of `Parsed.with_metadata`)."""
    parsed = Parsed(text)
    parsed.msg = msg
    out = parsed.with_metadata()
    return out.decode("ascii") if isinstance(out, bytes) else out


def _nodelay(ws: Any) -> None:
    protocol = getattr(ws, "protocol", None)
    if protocol is not None:
        protocol.set_nodelay(True)


class BedsideWebSocketConnection(GatewayWebSocketConnection):
    """Gateway websocket connection that signs requests and verifies hospital receipts.

    The session (its intent, its ledger copy) belongs to the kernel, not to a websocket: the
    browser opens and drops websockets as it likes (JupyterLab 4.6 drops its first one within
    milliseconds when a notebook opens cold). So every connection of a kernel joins the one
    `SessionMirror`; while the hospital has not answered the intent, each new gateway connection
    sends it again (the sentry answers the same intent the same way) and holds the browser's
    messages, and the answer, on whichever connection it arrives, releases all of them.
    """

    mirror: SessionMirror | None = None
    _held: list[str] | None = None

    @property
    def registry(self) -> SessionRegistry | None:
        registry = self.websocket_handler.settings.get(REGISTRY_KEY)
        return registry if isinstance(registry, SessionRegistry) else None

    async def _notebook_path(self) -> Path | None:
        settings = self.websocket_handler.settings
        manager = settings.get("session_manager")
        if manager is None:
            return None
        try:
            model = await manager.get_session(kernel_id=self.kernel_id)
        except (web.HTTPError, KeyError, TypeError):
            return None
        path = model.get("path") or (model.get("notebook") or {}).get("path")
        if not path:
            return None
        root = Path(settings.get("server_root_dir") or ".").expanduser()
        return root / path

    def _links(self) -> list[BedsideWebSocketConnection]:
        registry = self.registry
        if registry is None:
            return []
        links: list[BedsideWebSocketConnection] = registry.connections.setdefault(
            self.kernel_id, []
        )
        return links

    async def connect(self) -> None:
        self.websocket_handler.set_nodelay(True)
        registry = self.registry
        if registry is not None:
            notebook = await self._notebook_path()
            if self.disconnected:
                # The browser dropped this websocket while we looked up its notebook: opening
                # a gateway connection for it now would, at the gateway, replace the one its
                # successor (same session id) has just opened.
                return
            mirror = registry.open(self.kernel_id, notebook)
            self.mirror = mirror
            if self not in self._links():  # (a gateway reconnect calls connect again)
                self._links().append(self)
            mirror.send = self._sender(registry, self.kernel_id)
            mirror.schedule = IOLoop.current().call_later
            mirror.cosign_delay = COSIGN_DELAY
            self._held = [] if mirror.state == PENDING else None
            self._fresh_session_if_busy(registry)
        await super().connect()
        assert self.ws_future is not None
        if registry is not None:
            key = (self.kernel_id, self.session_id)
            registry.handshakes.add(key)
            self.ws_future.add_done_callback(lambda fut: self._handshake_done(registry, key, fut))
        self.ws_future.add_done_callback(self._on_gateway_open)

    def _fresh_session_if_busy(self, registry: SessionRegistry) -> None:
        """Connect under a new session id when the browser's is still busy at the gateway.

        Enterprise Gateway (jupyter_server 1.x) lets one websocket per kernel and session id
        exist: a new one first closes the "stale" one and waits until it has closed. A stale one
        still in its handshake (the kernel is still starting) closes only once it has opened,
        and one whose handshake failed never does, so every later connection under that session
        id waits for good: the browser sees the kernel "Unknown" and the intent never leaves.
        That happens when JupyterLab drops its first websocket and opens the next under the same
        session id while the kernel starts, and when a handshake times out on a loaded machine.
        The session id only names the connection at the gateway (messages carry their own), so
        a fresh one costs nothing but the gateway's replay of messages buffered for the old id.
        """
        if (self.kernel_id, self.session_id) in registry.handshakes:
            fresh = uuid.uuid4().hex
            log.info(
                "bedside: gateway session %s of kernel %s is still opening (or failed to); "
                "connecting as %s",
                self.session_id,
                self.kernel_id,
                fresh,
            )
            self.session.session = fresh

    @staticmethod
    def _handshake_done(registry: SessionRegistry, key: tuple[str, str], fut: Any) -> None:
        # a failed handshake stays in the gateway's table of open sessions: keep its id busy
        if not fut.cancelled() and fut.exception() is None:
            registry.handshakes.discard(key)

    @staticmethod
    def _sender(registry: SessionRegistry, kernel_id: str) -> Any:
        """Send a control request on the kernel's newest open gateway connection."""

        def send(msg: dict[str, Any]) -> None:
            for link in reversed(registry.connections.get(kernel_id, [])):
                if link.ws is not None and not link.disconnected:
                    link._write_message(json.dumps(msg))
                    return
            raise GatewayError(f"no open connection to the hospital for kernel {kernel_id}")

        return send

    def disconnect(self) -> None:
        links = self._links()
        if self in links:
            links.remove(self)
        self._held = None  # the browser that sent them is gone
        if self.mirror is not None and not links:
            self.mirror.send = None
        fut = self.ws_future
        if self.ws is None and fut is not None and not fut.done():
            # jupyter_server cancels a gateway connection still opening, but tornado completes
            # the handshake anyway and leaves that websocket open, unread, at the gateway; a
            # reconnect with the same session id then waits behind it (Enterprise Gateway
            # closes the "stale" one first). Let it open, then close it (_on_gateway_open).
            self.disconnected = True
            return
        super().disconnect()

    def _on_gateway_open(self, fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        ws = fut.result()
        if self.disconnected:
            ws.close()
            return
        _nodelay(ws)
        mirror = self.mirror
        if mirror is None or not mirror.awaiting_intent:
            return
        # Until the hospital answers, every new connection asks again: an answer sent to a
        # connection the browser has since dropped is lost with it.
        log.info("bedside: session intent sent for kernel %s", self.kernel_id)
        ws.write_message(json.dumps(mirror.intent_request()))
        if mirror.intent_timer is None and mirror.state == PENDING:
            mirror.intent_timer = IOLoop.current().call_later(
                self._intent_timeout(), lambda: self._intent_timed_out(mirror)
            )

    def _intent_timed_out(self, mirror: SessionMirror) -> None:
        mirror.intent_timer = None
        if mirror.state == PENDING:
            # The browser is let through unverified; a late answer still activates the session
            # (SessionMirror.awaiting_intent), and new connections keep asking.
            mirror.mark_unmonitored(
                "the hospital did not answer the session intent "
                f"within {self._intent_timeout():g} s (Bedside.intent_timeout)",
                waiting=True,
            )
            self._decided(mirror)

    def _intent_timeout(self) -> float:
        registry = self.registry
        return registry.config.intent_timeout if registry is not None else 30.0

    def _decided(self, mirror: SessionMirror) -> None:
        """The intent is answered (or given up on): let every connection's browser through."""
        log.info("bedside: session of kernel %s is %s", self.kernel_id, mirror.state)
        if mirror.intent_timer is not None:
            IOLoop.current().remove_timeout(mirror.intent_timer)
            mirror.intent_timer = None
        for link in list(self._links()):
            link._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        for message in held:
            self.handle_incoming_message(message)

    # browser -> hospital
    def handle_incoming_message(self, message: str) -> None:
        mirror = self.mirror
        if mirror is None:
            super().handle_incoming_message(message)
            return
        if mirror.state == PENDING and self._held is not None:
            self._held.append(message)
            return
        if '"execute_request"' not in message:
            super().handle_incoming_message(message)
            return
        msg = json.loads(message)
        if (msg.get("header") or {}).get("msg_type") != "execute_request":
            super().handle_incoming_message(message)
            return
        if mirror.state == REFUSED:
            self._refuse(msg, f"The hospital refused this session: {mirror.reason}")
            return
        mirror.observe_request(msg)
        super().handle_incoming_message(json.dumps(msg))

    def _refuse(self, request: dict[str, Any], reason: str) -> None:
        """Answer an execute request ourselves, the way a kernel reports an error."""
        parent = request.get("header") or {}
        session = parent.get("session", "")
        error = {"ename": "BedsideSessionRefused", "evalue": reason, "traceback": [reason]}
        for channel, msg_type, content in (
            ("iopub", "status", {"execution_state": "busy"}),
            ("iopub", "error", error),
            ("shell", "execute_reply", {"status": "error", "execution_count": None, **error}),
            ("iopub", "status", {"execution_state": "idle"}),
        ):
            msg = new_message(msg_type, content, session=session)
            msg["channel"] = channel
            msg["parent_header"] = parent
            msg["metadata"] = {"bedside": {"verified": False, "refused": True}}
            super().handle_outgoing_message(json.dumps(msg))

    # hospital -> browser
    def handle_outgoing_message(self, incoming_msg: str, *args: Any) -> None:
        mirror = self.mirror
        if mirror is None:
            super().handle_outgoing_message(incoming_msg, *args)
            return
        parsed = Parsed(incoming_msg)
        msg = parsed.msg
        was_pending = mirror.state == PENDING
        was_awaiting = mirror.awaiting_intent
        verdict = mirror.observe_reply(msg, parsed.tokens)
        if was_pending and mirror.state != PENDING:
            self._decided(mirror)
        elif was_awaiting and not mirror.awaiting_intent:
            log.info("bedside: session of kernel %s is %s", self.kernel_id, mirror.state)
        if verdict.consumed:
            return
        # bytes for an ASCII message: tornado's write_message sends them as the text frame
        super().handle_outgoing_message(parsed.with_metadata(), *args)  # type: ignore[arg-type]

    async def _read_messages(self) -> None:
        await super()._read_messages()
        if not self.disconnected and self.mirror is not None:
            self.mirror.mark_interrupted("lost the connection to the hospital's gateway")


class LocalNoDelayConnection(ZMQChannelsWebsocketConnection):
    """Local kernels (no gateway configured): stock behaviour, without Nagle's delay."""

    def connect(self) -> Any:
        self.websocket_handler.set_nodelay(True)
        return super().connect()
