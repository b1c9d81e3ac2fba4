"""Identifier values spaced out or regrouped, printed by a hostile kernel, from the client's side.

A plain ipykernel (no in-kernel guard) behind the sentry prints one patient's record number,
name and phone with their characters separated or regrouped, and a name a part per line. The
client must receive the sentry's block, and no message it receives may hold the value's
characters in order once separators are dropped; an honest summary still comes through.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import make_patients, notices  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROW = 7
CELLS = {
    "mrn spaced": "print(' '.join(r.mrn))",
    "name spaced": "print('result:', ' '.join(r['name']))",
    "mrn regrouped": "print('id', r.mrn[:5] + '-' + r.mrn[5:])",
    "phone dotted": "d = r.phone.replace(' ', ''); print('.'.join((d[:4], d[4:7], d[7:])))",
    "name over lines": "first, last = r['name'].split(' ', 1); print(f'{first}\\n{last}')",
}


@pytest.fixture(scope="module")
def frame():
    return make_patients(2000, seed=17)


def skeleton(text: str) -> str:
    return re.sub(r"[\W_]", "", text.lower())


def test_separated_values_are_blocked_by_the_sentry(world, frame):
    _, client = world
    reply, _ = client.execute(f"r = df.iloc[{ROW}]")
    assert reply["content"]["status"] == "ok"
    row = frame.iloc[ROW]
    values = {c: skeleton(str(row[c])) for c in ("mrn", "name", "phone")}
    for label, cell in CELLS.items():
        _, outputs = client.execute(cell)
        blocked = [n for n in notices(outputs) if n["decision"] == "blocked"]
        assert blocked and blocked[0]["layer"] == "sentry", (label, outputs)
        for msg in outputs:
            seen = skeleton(json.dumps(msg["content"], ensure_ascii=False))
            assert not [c for c, v in values.items() if v in seen], (label, msg["msg_type"])


def test_honest_summary_comes_through(world):
    _, client = world
    cell = (
        "print(df.describe().to_string()); print(df.ward.value_counts().to_string());"
        "print(np.arange(20) % 3); print('built 2024-01-05 10:30:00, v1.2.3, loss 0.25')"
    )
    reply, outputs = client.execute(cell)
    assert reply["content"]["status"] == "ok"
    assert not [n for n in notices(outputs) if n["decision"] == "blocked"]
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert "count" in text and "2024-01-05" in text
