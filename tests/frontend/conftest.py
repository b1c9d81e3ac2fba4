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
from integration.conftest import (  # noqa: F401
    ROOMY,
    Hospital,
    RunningGateway,
    eg_gateway,
    make_hospital,
    start_gateway,
)
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
    """The integration hospital, with room for more processes (see ROOMY)."""
    return make_hospital(tmp_path_factory.mktemp("hospital"), processes=ROOMY)


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


def lab_notebook(
    gateway: RunningGateway, cells: list[str] | None = None, intent: dict[str, Any] | None = None
) -> nbformat.NotebookNode:
    """The walkthrough notebook for the fixture hospital, or, with `cells`, a new notebook with
    the walkthrough's kernelspec and intent (or `intent`) and those cells."""
    walkthrough = nbformat.read(WALKTHROUGH, as_version=4)
    walkthrough.metadata["kernelspec"]["name"] = gateway.kernel_name
    walkthrough.metadata["bedside"]["intent"]["policy_id"] = "st-elsewhere"  # the fixture hospital
    if cells is None:
        return walkthrough
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = walkthrough.metadata["kernelspec"]
    nb.metadata["bedside"] = {"intent": intent or walkthrough.metadata["bedside"]["intent"]}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    return nb


def lab_server(
    tmp: Path, gateway: RunningGateway, notebooks: dict[str, nbformat.NotebookNode], **env: str
) -> LabServer:
    """A JupyterLab (not started) on the gateway, serving `notebooks` from tmp/notebooks, with
    the quiet LAB_SETTINGS, its sessions in tmp/sessions and its log in tmp/jupyterlab.log."""
    root = tmp / "notebooks"
    root.mkdir()
    for name, nb in notebooks.items():
        nbformat.write(nb, root / name)
    settings = tmp / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    return LabServer(
        root_dir=root,
        gateway_url=gateway.url,
        gateway_token=gateway.token,
        sessions_dir=tmp / "sessions",
        researcher_key_file=str(tmp / "researcher.key"),
        log_path=tmp / "jupyterlab.log",
        lab=True,
        env={
            "KERNEL_USERNAME": gateway.username,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
            **env,
        },
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, eg_gateway) -> Iterator[Lab]:  # noqa: F811
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make system` installs it")
    tmp = tmp_path_factory.mktemp("lab")
    chain = contextlib.ExitStack()
    # the demo's chain: ganache with BedsideAnchor deployed, the extension pointed at it
    rpc = chain.enter_context(start_devchain(tmp_path_factory.mktemp("ganache")))
    try:
        anchor_env = deploy_demo_contract(rpc, tmp / "secrets")
        notebooks = {WALKTHROUGH.name: lab_notebook(eg_gateway)}
        server = lab_server(tmp, eg_gateway, notebooks, **anchor_env)
    except BaseException:
        chain.close()
        raise
    try:
        with server:
            yield Lab(server, server.root_dir / WALKTHROUGH.name, tmp / "sessions")
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
