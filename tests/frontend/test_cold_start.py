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

import pytest

from bedside.ledger import verify_ledger

from .conftest import CHROMIUM, lab_notebook, lab_server
from .test_lab import START

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cold_lab(tmp_path_factory: pytest.TempPathFactory, eg_gateway) -> Iterator[tuple[Any, Path]]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make system` installs it")
    tmp = tmp_path_factory.mktemp("cold-lab")
    nb = lab_notebook(eg_gateway, ["6 * 7"])
    with lab_server(tmp, eg_gateway, {"cold.ipynb": nb}) as server:
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
