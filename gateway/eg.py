"""Enterprise Gateway for a hospital: kernelspecs that launch the sentry chain, the gateway's
configuration, and the gateway process itself.

Enterprise Gateway 3.3 lives in its own environment (`.venv-eg`, `make eg-venv`) because it pins
`jupyter_server<2`; the kernelspecs it launches point at the bedside environment's interpreter by
absolute path. Everything the gateway reads (config, kernelspecs, runtime files) sits in one
private directory, `home`, so that no stock kernelspec on the machine is ever offered.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bedside.errors import GatewayError

__all__ = [
    "EG_VERSION",
    "EnterpriseGateway",
    "GatewaySettings",
    "eg_executable",
    "free_port",
    "local_kernelspec",
    "sentry_kernelspec",
    "write_kernelspecs",
]

log = logging.getLogger(__name__)

EG_VERSION = "3.3.0"
LOCAL_PROXY = "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy"
CONFIG_TEMPLATE_DIR = Path(__file__).resolve().parent / "eg_config"
CONFIG_NAME = "jupyter_enterprise_gateway_config.py"
# Where `make eg-venv` puts the gateway environment: the project root (editable installs) or
# the current directory; BEDSIDE_EG_VENV overrides both.
EG_VENV_ENV = "BEDSIDE_EG_VENV"


def eg_executable() -> Path:
    """The `jupyter-enterprisegateway` of the gateway environment; a clear error when missing."""
    candidates = []
    if os.environ.get(EG_VENV_ENV):
        candidates.append(Path(os.environ[EG_VENV_ENV]))
    candidates += [Path(__file__).resolve().parent.parent / ".venv-eg", Path.cwd() / ".venv-eg"]
    for venv in candidates:
        exe = venv / "bin" / "jupyter-enterprisegateway"
        if exe.exists():
            return exe
    raise GatewayError(
        "Enterprise Gateway is not installed: run `make eg-venv` in the bedside checkout "
        f"(it creates .venv-eg), or set {EG_VENV_ENV} to an environment with "
        f"jupyter-enterprise-gateway=={EG_VERSION}"
    )


def sentry_kernelspec(
    *,
    policy: Path,
    custodian_key: Path,
    state_dir: Path,
    python: str = sys.executable,
    sandbox: bool = True,
    kernel: str = "guarded",
    display_name: str = "bedside (guarded, hospital)",
) -> dict[str, Any]:
    """The kernel.json of the guarded chain for Enterprise Gateway: the `bedside` kernelspec
    (the sentry owns the kernel ports of the connection file and starts the sandboxed kernel
    behind it), launched by EG's local process proxy."""
    from bedside.gateway.kernelspec import kernelspec_dict

    spec = kernelspec_dict(
        policy=policy,
        custodian_key=custodian_key,
        state_dir=state_dir,
        sandbox=sandbox,
        kernel=kernel,
        display_name=display_name,
        python=python,
    )
    spec["metadata"]["process_proxy"] = {"class_name": LOCAL_PROXY}
    return spec


def local_kernelspec(argv: Sequence[str], display_name: str) -> dict[str, Any]:
    """A kernelspec for any kernel command line, launched by EG's local process proxy (the plain
    ipykernel baseline of the benchmarks, or a kernel under test)."""
    return {
        "argv": list(argv),
        "display_name": display_name,
        "language": "python",
        "metadata": {"process_proxy": {"class_name": LOCAL_PROXY}},
    }


def write_kernelspecs(kernels_dir: Path, specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Write `{name: kernel.json}` under `kernels_dir/<name>/kernel.json`; return the names."""
    for name, spec in specs.items():
        target = kernels_dir / name
        target.mkdir(parents=True, exist_ok=True)
        (target / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
    return list(specs)


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewaySettings:
    """What a custodian decides about the gateway; written to `bedside-eg.json`."""

    token_file: Path
    kernelspecs: dict[str, dict[str, Any]]
    default_kernel: str = "bedside"
    ip: str = "127.0.0.1"
    port: int = 8888
    authorized_users: list[str] = field(default_factory=list)
    certfile: Path | None = None
    keyfile: Path | None = None
    client_ca: Path | None = None
    # TCP_NODELAY and the rest of eg_config/bedside_eg_tuning.py; False keeps EG's stock path
    nodelay: bool = True
    # GET /api/kernels lists every user's kernel ids (enough to attach to them): off by default.
    list_kernels: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "token_file": str(self.token_file.resolve()),
            "authorized_users": list(self.authorized_users),
            "default_kernel": self.default_kernel,
            "kernelspecs": sorted(self.kernelspecs),
            "certfile": str(self.certfile.resolve()) if self.certfile else None,
            "keyfile": str(self.keyfile.resolve()) if self.keyfile else None,
            "client_ca": str(self.client_ca.resolve()) if self.client_ca else None,
            "nodelay": self.nodelay,
            "list_kernels": self.list_kernels,
        }


def read_token(token_file: Path) -> str:
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise GatewayError(f"cannot read the gateway token file {token_file}: {exc}") from exc
    if len(token) < 16:
        raise GatewayError(
            f"the gateway token in {token_file} is too short ({len(token)} characters); "
            "write at least 16 random characters, e.g. "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )
    return token


class EnterpriseGateway:
    """One Enterprise Gateway process with a private home for its config and kernelspecs.

    `start()` writes everything, launches the gateway and waits until its API answers;
    `stop()` sends SIGTERM (EG shuts its kernels down) and kills what is left. Also a context
    manager.
    """

    def __init__(
        self,
        home: Path,
        settings: GatewaySettings,
        *,
        executable: Path | None = None,
        log_file: Path | None = None,
        log_level: str = "INFO",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.settings = settings
        self.executable = executable
        self.log_file = log_file or home / "gateway.log"
        self.log_level = log_level
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self.token = read_token(settings.token_file)

    @property
    def scheme(self) -> str:
        return "https" if self.settings.certfile else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.settings.ip}:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return ("wss" if self.settings.certfile else "ws") + self.url[len(self.scheme) :]

    def prepare(self) -> Path:
        """Write the config directory and kernelspecs; return the config directory."""
        config_dir = self.home / "config"
        data_dir = self.home / "data"
        for path in (self.home, config_dir, data_dir, self.home / "runtime"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
        for name in (CONFIG_NAME, "bedside_eg_tuning.py"):
            shutil.copyfile(CONFIG_TEMPLATE_DIR / name, config_dir / name)
        (config_dir / "bedside-eg.json").write_text(
            json.dumps(self.settings.to_json(), indent=2) + "\n"
        )
        write_kernelspecs(data_dir / "kernels", self.settings.kernelspecs)
        return config_dir

    def environment(self) -> dict[str, str]:
        # A small, explicit environment: EG hands its own environment to every kernel it starts.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.home),
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_PATH": str(self.home / "data"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.extra_env)
        return env

    def start(self, *, timeout: float = 60) -> None:
        if self.process is not None:
            raise GatewayError("this Enterprise Gateway is already running")
        self.prepare()
        exe = self.executable or eg_executable()
        self._log_handle = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [str(exe), f"--log-level={self.log_level}"],
            env=self.environment(),
            cwd=self.home,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its kernels share the group: stop() can reach them all
        )
        try:
            self.wait_ready(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise GatewayError(
                    f"Enterprise Gateway exited with status {self.process.returncode}; "
                    f"its log is {self.log_file}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api")
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise GatewayError(
                        f"Enterprise Gateway did not answer on {self.url} within {timeout:.0f} s; "
                        f"its log is {self.log_file}:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.2)

    def ssl_context(self, *, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext | None:
        """A client TLS context trusting the gateway's CA (`settings.client_ca`'s sibling
        `ca.pem` by convention of `bedside gateway certs`)."""
        if not self.settings.certfile:
            return None
        ca = self.settings.certfile.parent / "ca.pem"
        ctx = ssl.create_default_context(cafile=str(ca) if ca.exists() else None)
        if client_cert:
            ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        return ctx

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        client_cert: tuple[Path, Path] | None = None,
        timeout: float = 60,
    ) -> Any:
        """One REST call with the gateway token; returns the decoded JSON (or None)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"token {self.token if token is None else token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if client_cert is None and self.settings.client_ca:
            client_cert = default_client_cert(self.settings)
        context = self.ssl_context(client_cert=client_cert)
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            payload = response.read()
        return json.loads(payload) if payload else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, timeout: float = 30) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("Enterprise Gateway ignored SIGTERM; killing it")
                    process.kill()
                    process.wait()
            # Whatever EG left behind in its session (kernels, sentries) goes too.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> EnterpriseGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_client_cert(settings: GatewaySettings) -> tuple[Path, Path] | None:
    """`client.pem`/`client.key` beside the client CA, as `bedside gateway certs` writes them."""
    if not settings.client_ca:
        return None
    cert = settings.client_ca.parent / "client.pem"
    key = settings.client_ca.parent / "client.key"
    return (cert, key) if cert.exists() and key.exists() else None
