"""A stand-in Enterprise Gateway whose one "kernel" answers through `StandInHospital`.

Only the REST calls jupyter_server's GatewayClient makes and the channels websocket; the kernel
echoes the code it is given. Used to test the extension's websocket path and REST API in
isolation; the integration tests use the real Enterprise Gateway, sentry and kernel.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path
from typing import Any

from tornado import web, websocket
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from bedside.extension._headless import free_port

SPEC = {
    "name": "hospital",
    "spec": {"display_name": "Hospital (stand-in)", "language": "python", "argv": []},
    "resources": {},
}


def _model(kid: str) -> dict[str, Any]:
    return {
        "id": kid,
        "name": "hospital",
        "last_activity": "2026-01-01T00:00:00.000000Z",
        "execution_state": "idle",
        "connections": 0,
    }


class StandInGateway:
    def __init__(
        self, directory: Path, hospital_factory: Any, *, refuse: str = "", intent_delay: float = 0
    ) -> None:
        self.directory = directory
        self.factory = hospital_factory
        self.refuse = refuse
        # the hospital decides the intent at once, but its answer leaves this much later (a
        # websocket dropped in between loses it, as with a sentry still starting its kernel)
        self.intent_delay = intent_delay
        self.port = free_port()
        self.kernels: dict[str, Any] = {}  # every hospital session, kept after shutdown
        self.running: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self._loop: IOLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hospital(self, kid: str) -> Any:
        if kid not in self.kernels:
            d = self.directory / kid
            d.mkdir(parents=True)
            self.kernels[kid] = self.factory(d)
            self.running.add(kid)
        return self.kernels[kid]

    def app(self) -> web.Application:
        gw = self

        class Specs(web.RequestHandler):
            def get(self) -> None:
                self.finish({"default": "hospital", "kernelspecs": {"hospital": SPEC}})

        class Kernels(web.RequestHandler):
            def get(self) -> None:
                self.finish(json.dumps([_model(k) for k in gw.running]))

            def post(self) -> None:
                kid = str(uuid.uuid4())
                gw.hospital(kid)
                self.set_status(201)
                self.finish(_model(kid))

        class Kernel(web.RequestHandler):
            def get(self, kid: str) -> None:
                if kid not in gw.running:
                    raise web.HTTPError(404)
                self.finish(_model(kid))

            def delete(self, kid: str) -> None:
                gw.running.discard(kid)
                self.set_status(204)
                self.finish()

        class Action(web.RequestHandler):
            def post(self, kid: str, action: str) -> None:
                self.finish(_model(kid))

        class Channels(websocket.WebSocketHandler):
            async def prepare(self) -> None:
                if self.path_args[0] not in gw.running:  # shut down: as Enterprise Gateway
                    raise web.HTTPError(404)

            def open(self, kid: str) -> None:
                self.hospital = gw.hospital(kid)

            def _send(self, msg: dict[str, Any]) -> None:
                try:
                    self.write_message(json.dumps(msg))
                except websocket.WebSocketClosedError:
                    pass  # the researcher's server dropped this connection: the message is lost

            def on_message(self, message: str | bytes) -> None:
                msg = json.loads(message)
                gw.requests.append(msg)
                h = self.hospital
                msg_type = msg["header"]["msg_type"]
                if msg_type == "bedside_intent_request":
                    answer = h.intent(msg, refuse=gw.refuse)
                    IOLoop.current().call_later(gw.intent_delay, lambda: self._send(answer))
                elif msg_type == "bedside_entries_request":
                    self._send(h.entries(msg))
                elif msg_type == "bedside_cosign_request":
                    self._send(h.cosign(msg))
                elif msg_type == "bedside_seal_request":
                    if msg["content"].get("session") not in (None, h.session):
                        content = {"status": "error", "ename": "SessionMismatch", "evalue": "x"}
                        self._send(
                            h.message(
                                "shell", "bedside_seal_reply", content, msg["header"], record=False
                            )
                        )
                        return
                    h.ledger.append({"kind": "seal", "reason": "researcher"})
                    h.pending.append(
                        {"index": h.ledger.size - 1, "entry": h.ledger.entry(h.ledger.size - 1)}
                    )
                    self._send(
                        h.message(
                            "shell",
                            "bedside_seal_reply",
                            {"status": "ok"},
                            msg["header"],
                            record=False,
                        )
                    )
                elif msg_type == "execute_request":
                    for out in h.execute(msg, f"ran: {msg['content']['code']}\n"):
                        self._send(out)
                elif msg_type == "kernel_info_request":
                    parent = msg["header"]
                    content = {
                        "status": "ok",
                        "protocol_version": "5.3",
                        "implementation": "standin",
                        "implementation_version": "0",
                        "language_info": {"name": "python"},
                        "banner": "",
                    }
                    self._send(h.message("iopub", "status", {"execution_state": "busy"}, parent))
                    self._send(h.message("shell", "kernel_info_reply", content, parent))
                    self._send(h.message("iopub", "status", {"execution_state": "idle"}, parent))

        return web.Application(
            [
                (r"/api/kernelspecs", Specs),
                (r"/api/kernels", Kernels),
                (r"/api/kernels/([^/]+)", Kernel),
                (r"/api/kernels/([^/]+)/channels", Channels),
                (r"/api/kernels/([^/]+)/(interrupt|restart)", Action),
            ]
        )

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            self._server = HTTPServer(self.app())
            self._server.listen(self.port, "127.0.0.1")
            ready.set()
            self._loop.start()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            loop, server = self._loop, self._server

            def halt() -> None:
                if server is not None:
                    server.stop()
                loop.stop()

            loop.add_callback(halt)
        if self._thread is not None:
            self._thread.join(10)
        for hospital in self.kernels.values():
            hospital.ledger.close()
