"""The kernel websocket path to the hospital, with every message checked and recorded.

`BedsideWebSocketConnection` is jupyter_server's `GatewayWebSocketConnection` (selected through
`ServerApp.kernel_websocket_connection_class`) with the session mirror in both directions:
execute requests are signed before they leave, every message that comes back is checked against
its receipt and marked `metadata.bedside.verified`. It also turns off Nagle's algorithm on both
websockets, which otherwise holds back each small message by tens of milliseconds on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from tornado.ioloop import IOLoop

from .mirror import PENDING, REFUSED, SessionMirror, new_message
from .sessions import SessionRegistry

REGISTRY_KEY = "bedside_sessions"


def _nodelay(ws: Any) -> None:
    protocol = getattr(ws, "protocol", None)
    if protocol is not None:
        protocol.set_nodelay(True)


class BedsideWebSocketConnection(GatewayWebSocketConnection):
    """Gateway websocket connection that signs requests and verifies hospital receipts."""

    mirror: SessionMirror | None = None
    _held: list[str] | None = None
    _intent_timer: object | None = None

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

    async def connect(self) -> None:
        self.websocket_handler.set_nodelay(True)
        registry = self.registry
        fresh = False
        if registry is not None:
            self.mirror, fresh = registry.open(self.kernel_id, await self._notebook_path())
            self.mirror.send = self._send_to_gateway
            self.mirror.schedule = IOLoop.current().call_later
        self._held = [] if fresh and self.mirror is not None else None
        await super().connect()
        assert self.ws_future is not None
        self.ws_future.add_done_callback(lambda fut: self._on_gateway_open(fut, fresh))

    def _on_gateway_open(self, fut: Any, fresh: bool) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        _nodelay(fut.result())
        mirror = self.mirror
        if mirror is None or not fresh:
            return
        request = mirror.intent_request()
        fut.result().write_message(json.dumps(request))
        registry = self.registry
        timeout = registry.config.intent_timeout if registry is not None else 30.0
        self._intent_timer = IOLoop.current().call_later(timeout, self._intent_timed_out)

    def _intent_timed_out(self) -> None:
        if self.mirror is not None and self.mirror.state == PENDING:
            self.mirror.mark_unmonitored("the hospital did not answer the session intent")
            self._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        for message in held:
            self.handle_incoming_message(message)

    def _send_to_gateway(self, msg: dict[str, Any]) -> None:
        self._write_message(json.dumps(msg))

    # browser -> hospital
    def handle_incoming_message(self, message: str) -> None:
        mirror = self.mirror
        if mirror is None:
            super().handle_incoming_message(message)
            return
        if self._held is not None and mirror.state == PENDING:
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
        msg = json.loads(incoming_msg)
        was_pending = mirror.state == PENDING
        verdict = mirror.observe_reply(msg)
        if was_pending and mirror.state != PENDING:
            if self._intent_timer is not None:
                IOLoop.current().remove_timeout(self._intent_timer)
                self._intent_timer = None
            self._release_held()
        if verdict.consumed:
            return
        super().handle_outgoing_message(json.dumps(msg), *args)

    async def _read_messages(self) -> None:
        await super()._read_messages()
        if not self.disconnected and self.mirror is not None:
            self.mirror.mark_interrupted("lost the connection to the hospital's gateway")


class LocalNoDelayConnection(ZMQChannelsWebsocketConnection):
    """Local kernels (no gateway configured): stock behaviour, without Nagle's delay."""

    def connect(self) -> Any:
        self.websocket_handler.set_nodelay(True)
        return super().connect()
