"""Shared fixtures for tests that run a real Enterprise Gateway on loopback.

- `hospital` (module): a synthetic patients table (bedside.policy.synthetic, fixed seed), a
  policy, a custodian key.
- `start_gateway` (module): a factory; `with start_gateway(kernelspecs=..., tls=...) as gw:` runs
  one Enterprise Gateway (from `.venv-eg`) and stops it, and every kernel it started, on exit.
- `eg_gateway` (module): one gateway serving the guarded chain (`bedside`: sentry → bubblewrap →
  kernel) and a plain ipykernel (`python3-plain`); yields a `RunningGateway` with `url`,
  `ws_url`, `token`, `username` and `kernel_name`, for any test that needs a hospital gateway.
- `GatewayKernel`: the Jupyter protocol over `/api/kernels/{id}/channels` with websocket-client;
  it records every message the client receives.
- `LeakOracle`: case-insensitive search for every identifier value of the table in what the
  client received, also inside base64 runs (independent of `bedside.policy` on purpose).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import sys
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import websocket

from bedside.errors import GatewayError
from bedside.gateway.eg import (
    EnterpriseGateway,
    GatewaySettings,
    eg_executable,
    free_port,
    local_kernelspec,
    sentry_kernelspec,
)
from tests._hospital import (  # noqa: F401 - LeakOracle, notices: for the integration tests
    Hospital,
    LeakOracle,
    hospital_policy,
    make_patients,
    notices,
    write_hospital,
)
from tests._release_support import release_policy

USERNAME = "alice"


def make_hospital(
    root: Path, *, frame: pd.DataFrame | None = None, processes: int = 128, extra_policy: str = ""
) -> Hospital:
    """The hospital of the integration tests: `frame` as data/patients.parquet, its policy (roomy
    session budgets, `processes` for the sandbox, `extra_policy` appended), the custodian key,
    the state directory."""
    frame = make_patients() if frame is None else frame
    policy = hospital_policy(
        max_cells=5000, egress=200_000_000, max_output_bytes=4_000_000, processes=processes
    )
    return write_hospital(root, frame, policy + extra_policy)


# The sandbox's RLIMIT_NPROC counts every process of the sandbox user on the machine: on a
# machine shared with other test runs 128 is reached (zmq then aborts with "Resource temporarily
# unavailable"), so the hospitals of the long browser and release tests get room for more.
ROOMY = 4096


def make_release_hospital(root: Path, *, max_bytes: str = "5 MB") -> Hospital:
    """A 2,000-patient hospital whose models are reviewed by two custodians before release."""
    return make_hospital(
        root,
        frame=make_patients(2000, seed=11),
        processes=ROOMY,
        extra_policy=release_policy(max_bytes),
    )


def guarded_kernel_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bedside.kernel.kernel") is not None


def chain_kernelspec(hospital: Hospital, *, sandbox: bool = True) -> dict[str, Any]:
    """The kernelspec `bedside gateway start` writes; the plain ipykernel stands in for the
    guarded kernel until that package is present (the sentry is the boundary either way)."""
    return sentry_kernelspec(
        policy=hospital.policy,
        custodian_key=hospital.key,
        state_dir=hospital.state,
        sandbox=sandbox,
        kernel="guarded" if guarded_kernel_available() else "plain",
    )


PLAIN = local_kernelspec(
    [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "plain ipykernel"
)


@dataclass
class RunningGateway:
    eg: EnterpriseGateway
    kernel_name: str
    username: str = USERNAME
    client_cert: tuple[Path, Path] | None = None
    certs: Any = None

    @property
    def url(self) -> str:
        return self.eg.url

    @property
    def ws_url(self) -> str:
        return self.eg.ws_url

    @property
    def token(self) -> str:
        return self.eg.token

    def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("client_cert", self.client_cert)
        return self.eg.api(method, path, body, **kwargs)

    def kernels(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "/api/kernels"))

    def start_kernel(self, name: str | None = None, **kwargs: Any) -> GatewayKernel:
        return GatewayKernel.start(self, name or self.kernel_name, **kwargs)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return make_hospital(tmp_path_factory.mktemp("hospital"))


@pytest.fixture(scope="module")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., contextlib.AbstractContextManager[RunningGateway]]:
    try:
        eg_executable()
    except GatewayError as exc:
        pytest.skip(str(exc))

    @contextlib.contextmanager
    def start(
        kernelspecs: dict[str, dict[str, Any]],
        *,
        default: str,
        tls: bool = False,
        mutual_tls: bool = False,
        authorized_users: list[str] | None = None,
        nodelay: bool = True,
        list_kernels: bool = True,
    ) -> Iterator[RunningGateway]:
        home = tmp_path_factory.mktemp("eg")
        token_file = home / "token"
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
        certs = None
        if tls or mutual_tls:
            from bedside.gateway.certs import make_certificates

            certs = make_certificates(home / "tls")
        settings = GatewaySettings(
            token_file=token_file,
            kernelspecs=kernelspecs,
            default_kernel=default,
            port=free_port(),
            authorized_users=[USERNAME] if authorized_users is None else authorized_users,
            certfile=certs.server_cert if certs else None,
            keyfile=certs.server_key if certs else None,
            client_ca=certs.ca_cert if certs and mutual_tls else None,
            nodelay=nodelay,
            list_kernels=list_kernels,  # so that tests can see that nothing was started
        )
        eg = EnterpriseGateway(home / "home", settings, log_level="DEBUG")
        eg.start(timeout=90)
        client_cert = (certs.client_cert, certs.client_key) if certs and mutual_tls else None
        try:
            yield RunningGateway(eg, default, client_cert=client_cert, certs=certs)
        finally:
            eg.stop()

    return start


@pytest.fixture(scope="module")
def eg_gateway(start_gateway, hospital: Hospital) -> Iterator[RunningGateway]:
    """Enterprise Gateway with the guarded chain (`bedside`) and a plain ipykernel."""
    specs = {"bedside": chain_kernelspec(hospital), "python3-plain": PLAIN}
    with start_gateway(specs, default="bedside") as gateway:
        yield gateway


class KernelDied(RuntimeError):
    """The websocket closed, or the gateway reported the kernel dead, before the cell ended."""


@dataclass
class GatewayKernel:
    """A kernel started through Enterprise Gateway's REST API, driven over its websocket."""

    gateway: RunningGateway
    kernel_id: str
    ws: websocket.WebSocket
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    received: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls, gateway: RunningGateway, name: str, *, username: str | None = None, timeout=120
    ) -> GatewayKernel:
        model = gateway.api(
            "POST",
            "/api/kernels",
            {"name": name, "env": {"KERNEL_USERNAME": username or gateway.username}},
            timeout=timeout,
        )
        ws = connect_ws(gateway, model["id"])
        kernel = cls(gateway, model["id"], ws)
        kernel.wait_ready(timeout=timeout)
        return kernel

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": msg_type,
                        "username": self.gateway.username,
                        "session": self.session,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": channel,
                    "buffers": [],
                }
            )
        )
        return msg_id

    def recv(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no message from the gateway in time")
        self.ws.settimeout(remaining)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError("no message from the gateway in time") from None
        except (websocket.WebSocketConnectionClosedException, ConnectionError) as exc:
            raise KernelDied(f"the gateway closed the kernel's websocket: {exc}") from exc
        if not raw:
            raise KernelDied("the gateway closed the kernel's websocket")
        msg = json.loads(raw)
        self.received.append(msg)
        return msg

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg_id = self.send("kernel_info_request", {})
            step = min(deadline, time.monotonic() + 5)
            try:
                while True:
                    msg = self.recv(step)
                    if (
                        msg["msg_type"] == "kernel_info_reply"
                        and msg["parent_header"].get("msg_id") == msg_id
                    ):
                        return msg
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise

    def request(self, msg_type: str, content: dict[str, Any], timeout: float = 60) -> dict:
        msg_id = self.send(msg_type, content)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(deadline)
            if msg["channel"] == "shell" and msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def execute(self, code: str, *, timeout: float = 120) -> tuple[dict, list[dict]]:
        """Run `code`; (the execute_reply, every iopub message of this request).

        Raises `KernelDied` if the gateway reports the kernel dead or closes the socket, and
        TimeoutError if nothing finishes the cell in time.
        """
        msg_id = self.send(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        deadline = time.monotonic() + timeout
        outputs: list[dict] = []
        reply: dict | None = None
        idle = False
        while reply is None or not idle:
            msg = self.recv(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                if msg["msg_type"] == "status" and msg["content"].get("execution_state") in (
                    "dead",
                    "restarting",
                ):
                    raise KernelDied(f"kernel {msg['content']['execution_state']}: {outputs}")
                continue
            if msg["channel"] == "iopub":
                outputs.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            elif msg["msg_type"] == "execute_reply":
                reply = msg
        return reply, outputs

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        with contextlib.suppress(urllib.error.URLError, OSError):
            self.gateway.api("DELETE", f"/api/kernels/{self.kernel_id}")


def connect_ws(gateway: RunningGateway, kernel_id: str, *, token: str | None = None):
    sslopt: dict[str, Any] | None = None
    if gateway.certs is not None:
        sslopt = {"ca_certs": str(gateway.certs.ca_cert), "cert_reqs": ssl.CERT_REQUIRED}
        if gateway.client_cert:
            sslopt["certfile"] = str(gateway.client_cert[0])
            sslopt["keyfile"] = str(gateway.client_cert[1])
    return websocket.create_connection(
        f"{gateway.ws_url}/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {gateway.token if token is None else token}"],
        sslopt=sslopt,
        timeout=60,
    )
