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

import orjson
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from tornado.ioloop import IOLoop

from bedside.errors import GatewayError
from bedside.ledger.commitment import holds_float

from .mirror import COSIGN_DELAY, PENDING, REFUSED, SessionMirror, new_message
from .sessions import SessionRegistry

REGISTRY_KEY = "bedside_sessions"

log = logging.getLogger("bedside.extension")


class Parsed:
    """One message from the gateway, parsed once, and written out again for the browser.

    Read by orjson (several times faster than json for a small message, and for a megabyte
    output at about memory speed) whenever that gives exactly `json.loads`'s value (`holds_float`),
    else by json. The mirror encodes the committed bytes from this value (`canonical_json`, by
    orjson too) and the receipt (its digest, or the message's own output commitment) decides
    whether they are the ones the hospital signed.
    """

    def __init__(self, text: str | bytes) -> None:
        self.exact = False  # orjson's value (then orjson writes it out again)
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = None
        else:
            self.exact = not holds_float(msg)
        self.msg: Any = msg if self.exact else json.loads(text)

    def dumps(self) -> str | bytes:
        """The message as it now is (for the browser, with the metadata the mirror gave it; for
        the gateway, signed): UTF-8 bytes from orjson (tornado sends bytes as they are, as the
        text frame), or json's text for values only json reads (such as NaN, which orjson
        would write as null)."""
        if self.exact:
            try:
                return orjson.dumps(self.msg)
            except (orjson.JSONEncodeError, TypeError):
                pass  # a value the mirror added that orjson does not write
        return json.dumps(self.msg)


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
        parsed = Parsed(message)
        msg = parsed.msg
        if (msg.get("header") or {}).get("msg_type") != "execute_request":
            super().handle_incoming_message(message)
            return
        if mirror.state == REFUSED:
            self._refuse(msg, f"The hospital refused this session: {mirror.reason}")
            return
        mirror.observe_request(msg)
        # text: while the gateway websocket is still opening, jupyter_server hands the message
        # to this method again once it is open (to be signed again, the same signature)
        out = parsed.dumps()
        super().handle_incoming_message(out.decode("utf-8") if isinstance(out, bytes) else out)

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
        verdict = mirror.observe_reply(msg)
        if was_pending and mirror.state != PENDING:
            self._decided(mirror)
        elif was_awaiting and not mirror.awaiting_intent:
            log.info("bedside: session of kernel %s is %s", self.kernel_id, mirror.state)
        try:
            if not verdict.consumed:
                # orjson's UTF-8 bytes: tornado's write_message sends them as they are, as the
                # text frame
                super().handle_outgoing_message(parsed.dumps(), *args)  # type: ignore[arg-type]
        finally:
            # a large output checked and marked but not yet written to our ledger copy: now
            # that it is on its way to the browser (SessionMirror._defer)
            mirror.settle()

    async def _read_messages(self) -> None:
        await super()._read_messages()
        if not self.disconnected and self.mirror is not None:
            self.mirror.mark_interrupted("lost the connection to the hospital's gateway")


class LocalNoDelayConnection(ZMQChannelsWebsocketConnection):
    """Local kernels (no gateway configured): stock behaviour, without Nagle's delay."""

    def connect(self) -> Any:
        self.websocket_handler.set_nodelay(True)
        return super().connect()
