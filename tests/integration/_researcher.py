"""The researcher's side of the integration tests: a study notebook with its intent, the
researcher's jupyter_server with the bedside extension pointed at a hospital gateway, a kernel
session on it as JupyterLab drives it, and the two ledgers a session leaves.

Written once here so that the tests of the lab protocol, of sealing and of releases
(test_researcher.py, test_researcher_seal.py, test_releases.py, test_run_releases.py) start
and stop sessions the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat

from bedside.extension._headless import KernelSession, ResearcherServer
from bedside.ledger import Ledger


def intent(**overrides: Any) -> dict[str, Any]:
    base = {
        "purpose": "length of stay by ward",
        "cohort": "all admissions",
        "model_job": "none",
        "policy_id": "st-elsewhere",
        "budget": {"cells": 50},
    }
    base.update(overrides)
    return base


def write_notebook(directory: Path, cells: list[str], kernel: str, meta: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    if meta is not None:
        nb.metadata["bedside"] = {"intent": meta}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = directory / "study.ipynb"
    nbformat.write(nb, path)
    return path


def researcher_server(tmp: Path, gateway: Any, notebooks: Path, **kw: Any) -> ResearcherServer:
    return ResearcherServer(
        root_dir=notebooks,
        gateway_url=gateway.url,
        gateway_token=gateway.token,
        sessions_dir=tmp / "sessions",
        researcher_key_file=str(tmp / "researcher.key"),
        log_path=tmp / "jupyter_server.log",
        env={"KERNEL_USERNAME": gateway.username},
        **kw,
    )


@contextlib.asynccontextmanager
async def study_session(
    tmp: Path, gateway: Any, notebooks: Path, *, shutdown: bool = True, **server: Any
) -> AsyncIterator[tuple[ResearcherServer, KernelSession]]:
    """The researcher's server on `gateway` (`server`: more ResearcherServer settings) and a
    kernel session on notebooks/study.ipynb, as JupyterLab drives it. On exit the websocket is
    closed, the kernel shut down unless `shutdown` is False (a test that killed the gateway has
    nobody to ask), and the server stopped."""
    with researcher_server(tmp, gateway, notebooks, **server) as running:
        client = KernelSession(running.url, running.token)
        await client.start("study.ipynb", gateway.kernel_name)
        try:
            yield running, client
        finally:
            await client.close(shutdown=shutdown)


def hospital_ledger(hospital: Any, session: str) -> Path:
    path = hospital.state / session / "session.ledger"
    assert path.exists(), f"no hospital ledger at {path}"
    return path


def both_ledgers(tmp_path: Path, hospital: Any, status: dict) -> tuple[list[str], Path, Path]:
    """A session's two signers' keys, the researcher's ledger and the hospital's."""
    keys = [hospital.verifier_key, status["researcher_key"]]
    mine = tmp_path / "sessions" / status["kernel_id"] / "session.ledger"
    return keys, mine, hospital_ledger(hospital, status["session"])


def entries(path: Path) -> list[dict[str, Any]]:
    ledger = Ledger.open(path)
    try:
        return [ledger.entry(i) for i in range(ledger.size)]
    finally:
        ledger.close()
