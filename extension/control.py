"""The server's own connection to a kernel at the hospital, for control requests.

A session belongs to its kernel, not to a browser tab: the researcher seals it whether or not a
notebook is open. When none of the kernel's websockets is open, `ControlLink.open` connects to the
gateway itself, the way jupyter_server's `GatewayWebSocketConnection` does (`GatewayClient`'s URL,
token and TLS settings), and hands every message that comes back to the session mirror, so
receipts, fetched entries and checkpoints are handled exactly as on a browser's connection. The
link joins the kernel's connections in the registry, so `mirror.send` uses it, and leaves them
when closed.

A gateway that cannot be reached, or that no longer has the kernel, is `HospitalGone`: the
session is over at the hospital (the ledger copy stays valid up to the last receipt) and the
caller marks it interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from tornado.escape import url_escape
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bedside.errors import GatewayError

from .mirror import SessionMirror
from .sessions import SessionRegistry

log = logging.getLogger("bedside.extension")

#: Seconds to wait for the gateway to accept our own websocket. The kernel is already running
#: (this is not a start), so a gateway that takes longer is as good as gone.
OPEN_TIMEOUT = 15.0


class HospitalGone(GatewayError):
    """The gateway cannot be reached or no longer runs the kernel; `status` is the HTTP status
    the REST API answers with (502 gateway unreachable, 410 kernel gone)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def _nodelay(ws: WebSocketClientConnection) -> None:
    protocol = getattr(ws, "protocol", None)
    if protocol is not None:
        protocol.set_nodelay(True)


class ControlLink:
    """One websocket of the server's own to a kernel at the gateway (no browser behind it)."""

    def __init__(self, registry: SessionRegistry, mirror: SessionMirror) -> None:
        self.registry = registry
        self.mirror = mirror
        self.kernel_id = mirror.kernel_id
        self.ws: WebSocketClientConnection | None = None
        self.disconnected = False
        self._reader: asyncio.Task[None] | None = None

    @staticmethod
    def _gateway() -> Any:
        from jupyter_server.gateway.gateway_client import GatewayClient

        return GatewayClient.instance()

    def _url(self) -> str:
        from jupyter_server.utils import url_path_join

        gateway = self._gateway()
        url: str = url_path_join(
            gateway.ws_url or "", gateway.kernels_endpoint, url_escape(self.kernel_id), "channels"
        )
        # a session id of its own: Enterprise Gateway replaces an open websocket of the same id
        return f"{url}?session_id={uuid.uuid4().hex}"

    async def open(self, timeout: float = OPEN_TIMEOUT) -> None:
        gateway = self._gateway()
        where = gateway.url or "(no GatewayClient.url)"
        kwargs = gateway.load_connection_args()
        kwargs["connect_timeout"] = min(float(kwargs.get("connect_timeout") or timeout), timeout)
        kwargs["request_timeout"] = min(float(kwargs.get("request_timeout") or timeout), timeout)
        try:
            self.ws = await websocket_connect(HTTPRequest(self._url(), **kwargs))
        except HTTPClientError as exc:
            if exc.code == 404:
                raise HospitalGone(
                    f"the hospital's gateway {where} no longer has kernel {self.kernel_id} "
                    "(it was shut down, or died and was not restarted)",
                    status=410,
                ) from exc
            if exc.code in (401, 403):
                raise HospitalGone(
                    f"the hospital's gateway {where} refused our credentials ({exc.code}); "
                    "check Bedside.gateway_token and the client certificate",
                    status=502,
                ) from exc
            raise HospitalGone(
                f"cannot reach the hospital's gateway {where}: {exc}", status=502
            ) from exc
        except (OSError, StreamClosedError, TimeoutError) as exc:
            raise HospitalGone(
                f"cannot reach the hospital's gateway {where}: {exc or type(exc).__name__}",
                status=502,
            ) from exc
        _nodelay(self.ws)
        links = self.registry.connections.setdefault(self.kernel_id, [])
        links.append(self)
        from .connection import BedsideWebSocketConnection

        self.mirror.send = BedsideWebSocketConnection._sender(self.registry, self.kernel_id)
        if self.mirror.schedule is None:
            self.mirror.schedule = IOLoop.current().call_later
        self._reader = asyncio.ensure_future(self._read())
        log.info("bedside: own connection to kernel %s at the gateway is open", self.kernel_id)

    def _write_message(self, text: str) -> None:
        if self.ws is None:
            raise GatewayError(f"no open connection to the hospital for kernel {self.kernel_id}")
        self.ws.write_message(text)

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            message = await self.ws.read_message()
            if message is None:
                break
            if isinstance(message, bytes):
                message = message.decode("utf-8")
            try:
                self.mirror.observe_reply(json.loads(message))
            except Exception:  # noqa: BLE001 - one bad message must not end the link
                log.exception("bedside: a message on the own connection to %s", self.kernel_id)
        self._detach()
        if not self.disconnected:
            self.mirror.mark_interrupted("lost the connection to the hospital's gateway")

    def _detach(self) -> None:
        links = self.registry.connections.get(self.kernel_id, [])
        if self in links:
            links.remove(self)
        if not any(link.ws is not None and not link.disconnected for link in links):
            self.mirror.send = None

    def close(self) -> None:
        self.disconnected = True
        self._detach()
        if self.ws is not None:
            self.ws.close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
