"""The in-kernel guard's decisions in the hospital ledger, from the attacker's side.

A plain ipykernel (no in-kernel guard) behind the sentry plays a hostile kernel that writes its
own `metadata["bedside"]` claims. The ledger must record each claim as the kernel's, beside the
sentry's own verdict: a kernel claiming "released" for patient rows is still blocked by the
sentry, and a kernel claiming "blocked" on a clean output is recorded as its claim only, while
the researcher gets the output the sentry released.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    IDENTIFIERS,
    LeakOracle,
    make_patients,
)

from bedside.ledger import openings_path, verify_ledger  # noqa: E402
from bedside.ledger.verify import iter_entries  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# The kernel's own session sends a display_data whose message metadata makes a bedside claim,
# as the in-kernel guard marks what it touched (a hostile kernel can write anything there).
DISPLAY = (
    "k = get_ipython().kernel\n"
    "k.session.send(k.iopub_socket, 'display_data', "
    "{{'data': {{'text/plain': {text}}}, 'metadata': {{}}}}, parent=k.get_parent(), "
    "metadata={{'bedside': {claim!r}}}, ident=k._topic('display_data'))"
)


@pytest.fixture(scope="module")
def frame():
    return make_patients(500, seed=13)


def _entries_for(sentry, msg_ids: set[str]) -> list[dict]:
    """The hospital ledger's output entries for the messages the client received."""
    return [
        e
        for _, e in iter_entries(sentry.ledger_path())
        if e["kind"] == "output" and e["msg_id"] in msg_ids
    ]


def _displays(outputs: list[dict]) -> list[dict]:
    return [m for m in outputs if m["msg_type"] == "display_data"]


def test_hostile_kernel_claiming_released_for_rows_is_judged_by_the_sentry(world, frame):
    sentry, client = world
    claim = {"decision": "released", "rule": "pass", "layer": "sentry"}
    _, outputs = client.execute(DISPLAY.format(text="df.head().to_string()", claim=claim))
    shown = _displays(outputs)
    assert len(shown) == 1
    # What the researcher receives: the sentry's notice, no patient values.
    text = json.dumps(shown[0]["content"])
    assert not LeakOracle(frame, IDENTIFIERS).leaks(shown[0])
    assert "blocked by the hospital sentry" in text
    assert shown[0]["metadata"]["bedside"]["layer"] == "sentry"
    (entry,) = _entries_for(sentry, {shown[0]["header"]["msg_id"]})
    assert entry["decision"] == "blocked" and entry["layer"] == "sentry"
    assert entry["rule"] != "pass"
    # The kernel's (untrusted) word is kept beside the sentry's verdict, as the kernel's.
    assert entry["kernel_decision"] == "released" and entry["kernel_rule"] == "pass"
    assert entry["sentry_decision"] == "blocked"


def test_kernel_claiming_blocked_on_a_clean_output_is_recorded_as_its_claim(world):
    sentry, client = world
    claim = {"decision": "blocked", "rule": "row-level", "layer": "kernel"}
    _, outputs = client.execute(DISPLAY.format(text="'mean age 57.3'", claim=claim))
    shown = _displays(outputs)
    assert len(shown) == 1
    # released as the kernel sent it (the sentry only adds its no-sandbox warning here)
    assert shown[0]["content"]["data"]["text/plain"].startswith("mean age 57.3")
    (entry,) = _entries_for(sentry, {shown[0]["header"]["msg_id"]})
    assert entry["decision"] == "blocked" and entry["layer"] == "kernel"
    assert entry["rule"] == "row-level"
    assert entry["kernel_decision"] == "blocked" and entry["sentry_decision"] == "released"


def test_outputs_without_a_claim_carry_no_claim_fields(world):
    sentry, client = world
    _, outputs = client.execute("print('plain')")
    streams = [m for m in outputs if m["msg_type"] == "stream"]
    (entry,) = _entries_for(sentry, {streams[0]["header"]["msg_id"]})
    assert entry["decision"] == "released" and entry["layer"] == "sentry"
    assert "kernel_decision" not in entry and "sentry_decision" not in entry


def test_verify_counts_stopped_outputs_by_layer(world):
    """Run last: the verify report names who stopped what, and the sentry-released notice of a
    kernel-only block keeps its public opening."""
    sentry, client = world
    client.execute("1 + 1")
    client.drain()
    path = sentry.ledger_path()
    key = sentry.hospital.signer.verifier_key
    report = verify_ledger(path, keys=[key], openings=openings_path(path), require_checkpoint=False)
    assert report.stopped[("blocked", "sentry")] >= 1
    assert report.stopped[("blocked", "kernel")] >= 1
    assert report.disputed[("released", "blocked")] >= 1
    assert report.disputed[("blocked", "released")] >= 1
    summary = report.summary()
    assert "blocked by kernel" in summary and "blocked by sentry" in summary
    assert report.to_dict()["decisions_by_layer"]["blocked"]["kernel"] >= 1
    assert not report.openings_missing_count
