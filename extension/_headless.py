"""Headless runs: execute a notebook at the hospital with the same ledger as in JupyterLab.

`bedside run` starts a private jupyter_server with the bedside extension pointed at the hospital's
gateway, and drives it exactly as JupyterLab does: a session through `/api/sessions`, then the
kernel protocol over `/api/kernels/{id}/channels` with the server token. So a batch job or CI run
goes through the very code path a researcher's browser does, and leaves the same artifacts: the
executed notebook, the researcher's ledger copy and its openings.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bedside.errors import Error, GatewayError

STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ResearcherServer:
    """A jupyter_server with the bedside extension, run as a child process on loopback."""

    root_dir: Path
    gateway_url: str
    gateway_token: str = ""
    intent_file: str = ""
    sessions_dir: Path | None = None
    custodian_key: str = ""
    researcher_key_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_certs: str = ""
    extension: bool = True
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    lab: bool = False
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. KERNEL_USERNAME for the gateway
    proc: subprocess.Popen[bytes] | None = None
    _tmp: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        server: dict[str, Any] = {
            "ip": "127.0.0.1",
            "port": self.port,
            "port_retries": 0,
            "open_browser": False,
            "root_dir": str(self.root_dir),
            "allow_root": True,  # CI and containers run as root; the server binds loopback only
            "jpserver_extensions": {"bedside.extension": self.extension},
        }
        if not self.lab:
            # A headless server needs only the kernel API: skip the UI extensions' start-up.
            for name in ("jupyterlab", "jupyter_lsp", "notebook_shim", "jupyter_server_terminals"):
                server["jpserver_extensions"][name] = False
        config: dict[str, Any] = {
            "ServerApp": server,
            "IdentityProvider": {"token": self.token},
        }
        if self.extension:
            bedside: dict[str, Any] = {"gateway_url": self.gateway_url}
            for key, value in (
                ("gateway_token", self.gateway_token),
                ("intent_file", self.intent_file),
                ("sessions_dir", str(self.sessions_dir) if self.sessions_dir else ""),
                ("custodian_key", self.custodian_key),
                ("researcher_key_file", self.researcher_key_file),
                ("client_cert", self.client_cert),
                ("client_key", self.client_key),
                ("ca_certs", self.ca_certs),
            ):
                if value:
                    bedside[key] = value
            config["Bedside"] = bedside
        else:
            config["GatewayClient"] = {"url": self.gateway_url}
            if self.gateway_token:
                config["GatewayClient"]["auth_token"] = self.gateway_token
        return config

    def start(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="bedside-server-")
        cfg = Path(self._tmp) / "jupyter_server_config.json"
        cfg.write_text(json.dumps(self.config()))
        app = "jupyterlab" if self.lab else "jupyter_server"
        cmd = [sys.executable, "-m", app, f"--config={cfg}"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, **self.env}
        env.setdefault("JUPYTER_PLATFORM_DIRS", "1")
        # The gateway names the kernel's user from KERNEL_USERNAME and refuses root.
        if not env.get("KERNEL_USERNAME"):
            user = getpass.getuser()
            env["KERNEL_USERNAME"] = "researcher" if user == "root" else user
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayError(
                    f"jupyter_server exited with {self.proc.returncode} while starting"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        self.stop()
        raise GatewayError(f"jupyter_server did not listen on {self.url} within {STARTUP_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = ""

    def __enter__(self) -> ResearcherServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class KernelSession:
    """A client of one kernel through a jupyter_server, speaking the JupyterLab protocol."""

    def __init__(self, server_url: str, token: str) -> None:
        self.server_url = server_url.rstrip("/")
        self.token = token
        self.http = AsyncHTTPClient()
        self.ws: WebSocketClientConnection | None = None
        self.kernel_id = ""
        self.session_id = ""
        self.client_session = uuid.uuid4().hex
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def api(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        request = HTTPRequest(
            self.server_url + path,
            method=method,
            headers={**self._headers(), "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else (b"" if method == "POST" else None),
            request_timeout=timeout,
        )
        response = await self.http.fetch(request)
        if not response.body:
            return None
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(response.body)
        return response.body

    async def start(self, notebook_path: str, kernel_name: str) -> None:
        model = await self.api(
            "POST",
            "/api/sessions",
            {
                "path": notebook_path,
                "type": "notebook",
                "name": "",
                "kernel": {"name": kernel_name},
            },
        )
        self.session_id = model["id"]
        self.kernel_id = model["kernel"]["id"]
        await self.connect()

    async def connect(self) -> None:
        url = (
            self.server_url.replace("http", "ws", 1)
            + f"/api/kernels/{quote(self.kernel_id)}/channels?session_id={self.client_session}"
        )
        self.ws = await websocket_connect(HTTPRequest(url, headers=self._headers()))
        self.ws.protocol.set_nodelay(True)  # type: ignore[union-attr]
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            text = await self.ws.read_message()
            if text is None:
                await self._inbox.put(None)
                return
            await self._inbox.put(json.loads(text))

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        assert self.ws is not None
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "msg_type": msg_type,
                "username": "bedside",
                "session": self.client_session,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
        self.ws.write_message(json.dumps(msg))
        return msg_id

    async def request(
        self, msg_type: str, content: dict[str, Any], timeout: float = 600
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Send a shell request; return its reply and the iopub messages up to idle."""
        msg_id = self.send(msg_type, content)
        reply: dict[str, Any] | None = None
        iopub: list[dict[str, Any]] = []
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or (not idle and msg_type == "execute_request"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GatewayError(f"no answer to {msg_type} within {timeout}s")
            try:
                msg = await asyncio.wait_for(self._inbox.get(), remaining)
            except TimeoutError as exc:
                raise GatewayError(f"no answer to {msg_type} within {timeout}s") from exc
            if msg is None:
                raise GatewayError("the kernel connection closed (the gateway went away?)")
            if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                continue
            if msg.get("channel") == "iopub":
                iopub.append(msg)
                if msg["header"]["msg_type"] == "status" and (
                    msg["content"].get("execution_state") == "idle"
                ):
                    idle = True
            elif msg.get("channel") == "shell":
                reply = msg
        return reply, iopub

    async def execute(self, code: str, timeout: float = 600) -> tuple[dict[str, Any], list[Any]]:
        return await self.request(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            timeout=timeout,
        )

    async def close(self, shutdown: bool = True) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if shutdown and self.session_id:
            with contextlib.suppress(HTTPClientError, OSError):
                await self.api("DELETE", f"/api/sessions/{self.session_id}")


@dataclass
class RunResult:
    notebook: Path
    ledger: Path | None
    openings: Path | None
    status: dict[str, Any]
    errors: list[str]
    unverified: int
    releases: list[dict[str, Any]] = field(default_factory=list)


#: Release states that still wait for the hospital: not yet checked, or waiting for custodians.
UNDECIDED = ("new", "pending")
RELEASE_POLL = 2.0


async def settle_releases(
    api: Any, session: str, timeout: float, *, poll: float = RELEASE_POLL
) -> tuple[list[dict[str, Any]], list[str]]:
    """Wait up to `timeout` seconds for the session's undecided release requests, then fetch
    the approved ones (verified, into `<notebook dir>/releases/<name>/`).

    Decisions can only enter the ledger while the session is live (a sealed ledger is final),
    so this runs before the seal. `api(method, path)` is the researcher server's REST client.
    Returns the release rows as last seen (a fetched one carries `fetched`) and error lines.
    """
    base = f"/bedside/sessions/{quote(session)}/releases"
    deadline = time.monotonic() + timeout
    while True:
        listing = await api("GET", base)
        rows = [r for r in (listing or {}).get("releases") or [] if isinstance(r, dict)]
        waiting = [r for r in rows if r.get("status") in UNDECIDED or r.get("state") in UNDECIDED]
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    errors = [
        f"release {r.get('id')} ({r.get('name')}) is still {r.get('state') or r.get('status')} "
        f"after --wait-releases {timeout:g}s; it can no longer be approved once the session "
        "is sealed: run again with a longer --wait-releases, or ask a custodian to decide sooner"
        for r in waiting
    ]
    for row in rows:
        if row.get("state") == "approved":
            try:
                row["fetched"] = await api("POST", f"{base}/{quote(str(row['id']))}/fetch")
            except HTTPClientError as exc:
                body = exc.response.body.decode(errors="replace") if exc.response else str(exc)
                errors.append(f"release {row.get('id')}: fetching it failed: {body[:300]}")
    return rows, errors


def _outputs(iopub: list[dict[str, Any]]) -> tuple[list[Any], int]:
    outputs = []
    unverified = 0
    for msg in iopub:
        msg_type = msg["header"]["msg_type"]
        if not ((msg.get("metadata") or {}).get("bedside") or {}).get("verified", False):
            unverified += 1
        if msg_type in ("stream", "display_data", "execute_result", "error"):
            out = nbformat.v4.output_from_msg(msg)
            bedside = (msg.get("metadata") or {}).get("bedside")
            if bedside is not None and msg_type != "stream" and msg_type != "error":
                out.setdefault("metadata", {})["bedside"] = {
                    k: v for k, v in bedside.items() if k != "receipt"
                }
            outputs.append(out)
        elif msg_type == "clear_output":
            outputs.clear()
    return outputs, unverified


async def run_notebook(
    notebook: Path,
    *,
    gateway_url: str,
    gateway_token: str = "",
    intent_file: str = "",
    out_dir: Path,
    kernel_name: str = "",
    custodian_key: str = "",
    researcher_key_file: str = "",
    client_cert: str = "",
    client_key: str = "",
    ca_certs: str = "",
    allow_errors: bool = False,
    cell_timeout: float = 600,
    wait_releases: float = 0.0,
) -> RunResult:
    """Execute `notebook` through the gateway; write it, the ledger and openings to `out_dir`."""
    nb = nbformat.read(notebook, as_version=4)
    kernel_name = kernel_name or (nb.metadata.get("kernelspec") or {}).get("name", "")
    if not kernel_name:
        raise Error(f"{notebook}: no kernelspec in the notebook metadata; pass --kernel NAME")
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions = out_dir / "sessions"
    server = ResearcherServer(
        root_dir=notebook.parent.resolve(),
        gateway_url=gateway_url,
        gateway_token=gateway_token,
        intent_file=str(Path(intent_file).resolve()) if intent_file else "",
        sessions_dir=sessions.resolve(),
        custodian_key=custodian_key,
        researcher_key_file=researcher_key_file,
        client_cert=client_cert,
        client_key=client_key,
        ca_certs=ca_certs,
        log_path=(out_dir / "jupyter_server.log").resolve(),
    )
    errors: list[str] = []
    unverified = 0
    released: list[dict[str, Any]] = []
    with server:
        client = KernelSession(server.url, server.token)
        try:
            await client.start(notebook.name, kernel_name)
            await client.request("kernel_info_request", {}, timeout=120)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                reply, iopub = await client.execute(cell.source, timeout=cell_timeout)
                cell.outputs, bad = _outputs(iopub)
                unverified += bad
                cell.execution_count = reply["content"].get("execution_count")
                if reply["content"].get("status") == "error":
                    tags = cell.metadata.get("tags", [])
                    text = f"cell {index}: {reply['content'].get('ename')}: "
                    text += str(reply["content"].get("evalue"))
                    if "raises-exception" not in tags:
                        errors.append(text)
                        if not allow_errors:
                            break
            if wait_releases > 0:
                released, problems = await settle_releases(
                    client.api, client.kernel_id, wait_releases
                )
                errors.extend(problems)
            with contextlib.suppress(HTTPClientError):
                await client.api("POST", f"/bedside/sessions/{client.kernel_id}/seal")
            status = await client.api("GET", f"/bedside/sessions/{client.kernel_id}")
        finally:
            await client.close()
    executed = out_dir / f"{notebook.stem}.bedside.ipynb"
    nbformat.write(nb, executed)
    session_dir = sessions / client.kernel_id
    ledger = openings = None
    if (session_dir / "session.ledger").exists():
        ledger = out_dir / f"{notebook.stem}.ledger"
        shutil.copyfile(session_dir / "session.ledger", ledger)
    if (session_dir / "session.openings").exists():
        openings = out_dir / f"{notebook.stem}.openings"
        shutil.copyfile(session_dir / "session.openings", openings)
    return RunResult(executed, ledger, openings, status, errors, unverified, released)


@contextlib.contextmanager
def running(server: ResearcherServer) -> Iterator[ResearcherServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
