"""Where a large output's time goes in the researcher's jupyter_server (bench only).

A server extension that `bench/researcher_ab.py --stages` loads beside `bedside.extension`:
it wraps the gateway connection's `handle_outgoing_message` and, for every message from the
hospital of at least `MIN_CHARS`, writes one JSON line to the file named by
`BEDSIDE_STAGES_OUT` with the wall and CPU (the event loop thread's `thread_time`) milliseconds
of each stage: `check` (parse, receipt signature, digest, commitment, schema, tree root),
`write` (tornado's websocket write to the browser, with the bytes it could not send at once),
`settle` (the deferred ledger entry and opening) and `drained` (wall until the browser's socket
took the last byte, when that was not at once), and whether the message went on marked
verified. Never loaded by the product.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

MIN_CHARS = 100_000


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "_ext_stages"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    import importlib

    from jupyter_server.gateway.connections import GatewayWebSocketConnection

    # the extension under measurement: this worktree's, or researcher_ab's `oldext`
    connection = importlib.import_module(
        os.environ.get("BEDSIDE_STAGES_PKG", "bedside.extension") + ".connection"
    )
    out = open(os.environ["BEDSIDE_STAGES_OUT"], "a", buffering=1)  # noqa: SIM115 - process-long
    bedside_cls = connection.BedsideWebSocketConnection
    checked = bedside_cls.handle_outgoing_message
    stock = GatewayWebSocketConnection.handle_outgoing_message
    marks: dict[str, Any] = {}

    def write(self: Any, message: Any, *args: Any) -> None:
        # GatewayWebSocketConnection.handle_outgoing_message, with the write's future kept
        if len(message) < MIN_CHARS:
            stock(self, message, *args)
            return
        marks["w0"], marks["cw0"] = time.perf_counter(), time.thread_time()
        tail = message[-16384:] if isinstance(message, bytes) else message[-16384:].encode()
        head = message[:16384] if isinstance(message, bytes) else message[:16384].encode()
        marks["verified"] = b'"verified":true' in head + tail
        future = self.websocket_handler.write_message(message)
        marks["w1"], marks["cw1"] = time.perf_counter(), time.thread_time()
        stream = self.websocket_handler.ws_connection.stream
        marks["unsent"] = len(stream._write_buffer)
        if marks["unsent"]:
            start = marks["w1"]
            future.add_done_callback(
                lambda _f: out.write(
                    json.dumps({"drained_ms": (time.perf_counter() - start) * 1000}) + "\n"
                )
            )

    def handle(self: Any, incoming: str, *args: Any) -> None:
        if len(incoming) < MIN_CHARS or self.mirror is None:
            checked(self, incoming, *args)
            return
        marks.clear()
        t0, c0 = time.perf_counter(), time.thread_time()
        checked(self, incoming, *args)
        t1, c1 = time.perf_counter(), time.thread_time()
        if "w0" not in marks:
            return  # consumed (a control reply) or written elsewhere
        ms = 1000
        line = {
            "chars": len(incoming),
            "check_ms": (marks["w0"] - t0) * ms,
            "check_cpu_ms": (marks["cw0"] - c0) * ms,
            "write_ms": (marks["w1"] - marks["w0"]) * ms,
            "write_cpu_ms": (marks["cw1"] - marks["cw0"]) * ms,
            "unsent_bytes": marks["unsent"],
            "verified": marks["verified"],
            "settle_ms": (t1 - marks["w1"]) * ms,
            "settle_cpu_ms": (c1 - marks["cw1"]) * ms,
        }
        out.write(json.dumps(line) + "\n")

    GatewayWebSocketConnection.handle_outgoing_message = write  # type: ignore[method-assign]
    bedside_cls.handle_outgoing_message = handle  # type: ignore[method-assign]
