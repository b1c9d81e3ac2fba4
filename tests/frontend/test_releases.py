"""The release panel in JupyterLab, in headless chromium, on the real hospital stack.

A notebook trains a small torch model at the hospital (jupyter_server + bedside extension →
Enterprise Gateway → sentry → sandboxed guarded kernel) and asks to release it. The session
panel shows the request pending review; two custodians approve it with `bedside review` (the
CLI, as at the hospital); the panel shows it approved, fetches it into `releases/` and shows the
verification result; a second request, denied, shows the custodian's reason and no fetch
button. Screenshots go to test-artifacts/frontend/ (the docs' images).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.conftest import Hospital, make_release_hospital

from tests._release_support import custodian_keys, review, train_and_release

from .conftest import LabServer, lab_notebook, lab_server
from .test_lab import START, shot

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

TRAIN = train_and_release("mortality", "mortality-draft")

INTENT = {
    "purpose": "30-day mortality model",
    "cohort": "all admissions",
    "model_job": "train and release a mortality classifier",
    "policy_id": "st-elsewhere",
    "budget": {"cells": 50},
}


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return make_release_hospital(tmp_path_factory.mktemp("hospital"))


@pytest.fixture(scope="module")
def release_lab(tmp_path_factory: pytest.TempPathFactory, eg_gateway) -> Iterator[LabServer]:
    nb = lab_notebook(eg_gateway, [TRAIN], INTENT)
    with lab_server(
        tmp_path_factory.mktemp("release-lab"), eg_gateway, {"mortality.ipynb": nb}
    ) as server:
        yield server


def approve_or_deny(state: Path, *args: str) -> None:
    done = review(state, *args)
    assert done.returncode == 0, done.stderr


def refresh_until(page: Any, row: Any, state: str, tries: int = 60) -> None:
    """Click the release list's Refresh until the row reaches `state` (each click asks the
    hospital once; the panel also asks every 10 s by itself while a request is pending)."""
    button = page.locator('#bedside-session-panel button[data-bedside-action="releases-refresh"]')
    for _ in range(tries):
        if row.count() and row.get_attribute("data-state") == state:
            return
        button.click()
        page.wait_for_timeout(500)
    raise AssertionError(f"the release never showed {state}: {row.inner_text()}")


def test_release_panel_follows_review_and_fetches(release_lab, browser, hospital, tmp_path):
    from playwright.sync_api import expect

    keys = custodian_keys(tmp_path, "carol", "dave")
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    try:
        url = f"{release_lab.url}/lab/tree/mortality.ipynb?token={release_lab.token}&reset"
        page.goto(url)
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=START)
        tab = page.locator('.jp-SideBar li[data-id="bedside-session-panel"]')
        expect(tab).to_have_count(1, timeout=30_000)
        tab.click()
        panel = page.locator("#bedside-session-panel")
        expect(panel.locator('dd[data-field="state"]')).to_have_text("active", timeout=START)

        # Train and ask for the release; the panel lists it, pending review.
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        expect(
            page.locator(".jp-OutputArea-output", has_text="mortality-draft submitted")
        ).to_be_visible(timeout=150_000)
        row = panel.locator(".bedside-release", has=page.get_by_text("mortality", exact=True))
        draft = panel.locator(".bedside-release", has=page.get_by_text("mortality-draft"))
        refresh_until(page, draft, "pending")
        refresh_until(page, row, "pending")
        expect(row.locator(".bedside-release-label")).to_have_text(
            "pending review (0 of 2 approvals)"
        )
        expect(row.locator('button[data-bedside-action="fetch"]')).to_have_count(0)
        shot(page, "release-pending", panel)
        request_id = row.get_attribute("data-release-id")

        # Two custodians approve at the hospital.
        (state,) = [p.parent for p in hospital.state.glob("*/airlock.json")]
        approve_or_deny(state, "approve", request_id, "--as", "carol", "--key", str(keys["carol"]))
        approve_or_deny(state, "approve", request_id, "--as", "dave", "--key", str(keys["dave"]))
        approve_or_deny(
            state,
            "deny",
            str(draft.get_attribute("data-release-id")),
            "--as",
            "carol",
            "--key",
            str(keys["carol"]),
            "--reason",
            "a draft: release the final model only",
        )
        refresh_until(page, draft, "denied")
        refresh_until(page, row, "approved")
        expect(draft.locator(".bedside-release-label")).to_have_text(
            "denied: a draft: release the final model only"
        )
        expect(draft.locator('button[data-bedside-action="fetch"]')).to_have_count(0)
        expect(row.locator(".bedside-release-label")).to_have_text(
            "approved 2 of 2: ready to fetch"
        )
        shot(page, "release-approved", panel)

        # Fetch: the server verifies it in releases/ and the panel says so.
        row.locator('button[data-bedside-action="fetch"]').click()
        expect(row).to_have_attribute("data-state", "delivered", timeout=60_000)
        result = row.locator(".bedside-release-result")
        expect(result).to_contain_text("Verified: digest, custodian signature, ledger inclusion")
        expect(result).to_contain_text("approved by carol and dave")
        expect(row.locator(".bedside-release-label")).to_have_text(
            "delivered to releases/mortality/ (verified)"
        )
        shot(page, "release-delivered", panel)
        folder = release_lab.root_dir / "releases" / "mortality"
        assert (folder / "mortality.safetensors").is_file()
        assert (folder / "mortality.safetensors.intoto.json").is_file()
        record = json.loads((folder / "verification.json").read_text())
        assert record["verified"] is True and record["request"] == request_id
    except Exception:
        shot(page, "release-failure")
        raise
    finally:
        context.close()
