"""Browser-test fixtures: the real hospital stack (from tests/integration) and JupyterLab.

`hospital`, `start_gateway` and `eg_gateway` are the integration fixtures (Enterprise Gateway
with the sentry and the sandboxed guarded kernel); `lab` adds a JupyterLab server with the
bedside extension pointed at that gateway, serving a copy of notebooks/01-walkthrough.ipynb, and
`browser` is Debian's headless chromium driven by Playwright (never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from integration.conftest import Hospital, eg_gateway, make_hospital, start_gateway  # noqa: F401
from integration.test_anchor_devchain import start_devchain

from bedside.extension._demo import deploy_demo_contract
from bedside.extension._headless import ResearcherServer

REPO = Path(__file__).resolve().parents[2]
WALKTHROUGH = REPO / "notebooks" / "01-walkthrough.ipynb"
ARTIFACTS = REPO / "test-artifacts" / "frontend"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Lab settings for a quiet, deterministic page: every cell in the DOM (no windowing), no news
# or update checks (no network), no pop-ups over the buttons the test clicks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
}


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    """The integration hospital, with room for more processes: the sandbox's RLIMIT_NPROC
    counts every process of the sandbox user on the machine, and on a machine shared with
    other test runs 128 is reached (zmq then aborts with "Resource temporarily unavailable")."""
    hospital = make_hospital(tmp_path_factory.mktemp("hospital"))
    text = hospital.policy.read_text()
    hospital.policy.write_text(text.replace("processes: 128", "processes: 4096"))
    return hospital


@dataclass
class LabServer(ResearcherServer):
    """The researcher's JupyterLab, with the app object exposed to the test's browser."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["LabApp"] = {"expose_app_in_browser": True}
        # the extension's own log (intent sent and answered, gaps filled) in jupyterlab.log
        config["ServerApp"]["logging_config"] = {
            "loggers": {"bedside": {"level": "DEBUG", "handlers": ["console"]}}
        }
        config["ServerApp"]["log_level"] = "DEBUG"
        return config


@dataclass
class Lab:
    server: LabServer
    notebook: Path
    sessions: Path

    def url(self, path: str) -> str:
        return f"{self.server.url}/lab/tree/{path}?token={self.server.token}&reset"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, eg_gateway) -> Iterator[Lab]:  # noqa: F811
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make system` installs it")
    tmp = tmp_path_factory.mktemp("lab")
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(WALKTHROUGH, as_version=4)
    nb.metadata["bedside"]["intent"]["policy_id"] = "st-elsewhere"  # the fixture hospital
    nb.metadata["kernelspec"]["name"] = eg_gateway.kernel_name
    path = notebooks / WALKTHROUGH.name
    nbformat.write(nb, path)
    settings = tmp / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    chain = contextlib.ExitStack()
    # the demo's chain: ganache with BedsideAnchor deployed, the extension pointed at it
    rpc = chain.enter_context(start_devchain(tmp_path_factory.mktemp("ganache")))
    try:
        anchor_env = deploy_demo_contract(rpc, tmp / "secrets")
    except BaseException:
        chain.close()
        raise
    server = LabServer(
        root_dir=notebooks,
        gateway_url=eg_gateway.url,
        gateway_token=eg_gateway.token,
        sessions_dir=tmp / "sessions",
        researcher_key_file=str(tmp / "researcher.key"),
        log_path=tmp / "jupyterlab.log",
        lab=True,
        env={
            "KERNEL_USERNAME": eg_gateway.username,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
            **anchor_env,
        },
    )
    try:
        with server:
            yield Lab(server, path, tmp / "sessions")
    finally:
        chain.close()
    log = tmp / "jupyterlab.log"
    if log.exists():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / "jupyterlab.log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
