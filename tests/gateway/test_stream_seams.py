"""A value written in pieces, from the attacker's side: the sentry in front of a kernel with no
guard at all (a plain ipykernel: what hostile code that switched the in-kernel guard off, or
wrote to the session itself, amounts to).

A client shows consecutive stream messages of a cell as one text (JupyterLab merges them into
one output, a terminal prints them in a row), so the oracle (`LeakOracle.leaks_shown`) judges
the text each stream shows once joined, not each message alone. Honest output written a line
at a time still passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import make_patients, notices  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def frame():
    return make_patients(400, seed=29)


PIECES = {
    "halves": (
        "v = str(df.mrn.iloc[7])\n"
        "sys.stdout.write(v[:4]); sys.stdout.flush(); sys.stdout.write(v[4:] + '\\n')"
    ),
    "one character a message": (
        "for ch in str(df.name.iloc[9]):\n    sys.stdout.write(ch); sys.stdout.flush()\nprint()"
    ),
    "stdout and stderr interleaved": (
        "v = str(df.phone.iloc[11])\n"
        "sys.stdout.write(v[:5]); sys.stdout.flush()\n"
        "sys.stderr.write('.'); sys.stderr.flush()\n"
        "sys.stdout.write(v[5:]); sys.stdout.flush()"
    ),
    "raw session sends": (
        "k = get_ipython().kernel\nv = str(df.mrn.iloc[13])\n"
        "for part in (v[:3], v[3:7], v[7:]):\n"
        "    k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': part},"
        " parent=k.get_parent('shell'))"
    ),
    "base64 in pieces": (
        "b = base64.b64encode(str(df.name.iloc[15]).encode()).decode()\n"
        "sys.stdout.write('data: ' + b[:6]); sys.stdout.flush(); sys.stdout.write(b[6:] + '\\n')"
    ),
    "a value after a long first message": (
        "v = str(df.mrn.iloc[17])\n"
        "sys.stdout.write('x' * 5000 + ' ' + v[:6]); sys.stdout.flush()\n"
        "sys.stdout.write(v[6:] + ' ' + 'y' * 5000)"
    ),
}


@pytest.mark.parametrize("case", list(PIECES))
def test_a_value_written_in_pieces_is_not_shown_whole(hostile, case):
    client, oracle, _ = hostile
    _, outputs = client.execute(PIECES[case])
    leaked = oracle.leaks_shown(outputs)
    assert not leaked, f"{case}: {leaked}"
    said = [n for n in notices(outputs) if n["layer"] == "sentry"]
    assert said, f"{case}: nothing was blocked"
    assert said[0]["decision"] == "blocked"
    assert said[0]["rule"] in ("identifier", "phi")


def test_the_notice_says_the_pieces_were_joined(hostile):
    client, _, _ = hostile
    _, outputs = client.execute(PIECES["halves"])
    (said,) = notices(outputs)
    assert said["rule"] == "identifier"
    assert "joined to the stream output before it" in said["reason"]


def test_honest_output_written_in_pieces_passes(hostile):
    """Progress lines, counts and a table printed a row at a time, each flushed: numbers side by
    side across messages, none of them an identifier."""
    client, _, frame = hostile
    code = (
        "for i in range(0, 101, 10):\n"
        "    sys.stdout.write(f'\\rprogress {i}%'); sys.stdout.flush()\n"
        "print()\n"
        "counts = df.ward.value_counts()\n"
        "for ward, n in counts.items():\n"
        "    sys.stdout.write(f'{ward}: '); sys.stdout.flush(); print(n); sys.stdout.flush()\n"
        "for part in str(round(df.age.mean(), 1)):\n"
        "    sys.stdout.write(part); sys.stdout.flush()\n"
    )
    _, outputs = client.execute(code)
    assert not notices(outputs), notices(outputs)
    text = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
    assert "progress 100%" in text
    assert all(f"{ward}: {n}" in text for ward, n in frame.ward.value_counts().items())


def test_each_cell_joins_only_its_own_streams(hostile):
    """The join is per cell: the end of one cell's output and the start of the next are shown
    in different cells. (A value spread over cells is a covert channel: see "What the sentry
    does not stop" in docs/custodian/sentry.md.)"""
    client, _, _ = hostile
    client.execute("sys.stdout.write('MRN'); sys.stdout.flush()")
    _, outputs = client.execute("print(12345678)")
    assert not notices(outputs)
