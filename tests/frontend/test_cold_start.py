"""JupyterLab opening a notebook cold: its session starts and its intent is answered.

No session is started before the browser comes: the page starts the kernel itself (as in
test_lab.py and test_releases.py, whose notebooks are opened cold too). JupyterLab 4.6 then
drops its first kernel websocket within milliseconds and reconnects; the server extension must
still deliver the intent and get the hospital's answer (docs/data-scientist/jupyterlab.md,
"Websockets that come and go"), and the cell the page runs must land in both ledgers.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from bedside.ledger import verify_ledger

from .conftest import CHROMIUM, LAB_SETTINGS, WALKTHROUGH, LabServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

START = 180_000  # ms: the kernel starts in the sandbox


@pytest.fixture(scope="module")
def cold_lab(tmp_path_factory: pytest.TempPathFactory, eg_gateway) -> Iterator[tuple[Any, Path]]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make system` installs it")
    tmp = tmp_path_factory.mktemp("cold-lab")
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    walkthrough = nbformat.read(WALKTHROUGH, as_version=4)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {**walkthrough.metadata["kernelspec"]}
    nb.metadata["kernelspec"]["name"] = eg_gateway.kernel_name
    nb.metadata["bedside"] = {"intent": {**walkthrough.metadata["bedside"]["intent"]}}
    nb.metadata["bedside"]["intent"]["policy_id"] = "st-elsewhere"  # the fixture hospital
    nb.cells = [nbformat.v4.new_code_cell("6 * 7")]
    nbformat.write(nb, notebooks / "cold.ipynb")
    settings = tmp / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
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
        },
    )
    with server:
        yield server, tmp / "sessions"


def test_notebook_opened_cold_gets_its_session(cold_lab, browser, hospital) -> None:
    from playwright.sync_api import expect

    server, sessions = cold_lab
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws) if "/channels" in ws.url else None)
    try:
        page.goto(f"{server.url}/lab/tree/cold.ipynb?token={server.token}&reset")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=START)
        tab = page.locator('.jp-SideBar li[data-id="bedside-session-panel"]')
        expect(tab).to_have_count(1, timeout=30_000)
        tab.click()
        state = page.locator('#bedside-session-panel dd[data-field="state"]')
        settled = re.compile(r"^(active|refused|interrupted|unmonitored|pending-intent)$")
        expect(state).to_have_text(settled, timeout=START)
        expect(state).to_have_text("active", timeout=START)

        page.locator(".jp-Notebook .jp-CodeCell").first.click()
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        badge = page.locator(".jp-Notebook .jp-CodeCell .bedside-CellBadge").first
        expect(badge).to_have_attribute("data-bedside-done", "true", timeout=120_000)
        expect(badge).to_have_attribute("data-bedside-verified", "true")
        expect(page.locator(".jp-Notebook .jp-OutputArea-output").first).to_contain_text("42")
    finally:
        context.close()

    def api(path: str, raw: bool = False) -> Any:
        request = urllib.request.Request(
            server.url + path, headers={"Authorization": f"token {server.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            body = response.read()
        return body if raw else json.loads(body)

    found = [
        api(f"/bedside/sessions/{s['kernel_id']}") for s in api("/bedside/sessions")["sessions"]
    ]
    assert len(found) == 1, found
    session = found[0]
    assert session["state"] == "active", session
    assert session["cells_run"] == 1 and session["unverified_messages"] == 0, session
    assert session["intent"]["purpose"], session
    assert sockets, "the page talked to its kernel over a websocket"
    # the researcher's copy starts with the header holding the intent as it was signed
    base = f"/bedside/sessions/{session['kernel_id']}"
    ledger, openings = sessions / "copy.ledger", sessions / "copy.openings"
    ledger.write_bytes(api(base + "/ledger", raw=True))
    openings.write_bytes(api(base + "/openings", raw=True))
    report = verify_ledger(
        ledger,
        [session["custodian_key"], session["researcher_key"]],
        openings=openings,
        require_checkpoint=False,
    )
    assert report.intent_signed
    assert report.header is not None and report.header["grant"]["declared"] is True
