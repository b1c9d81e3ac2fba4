"""Identifiers written to *display* unchanged, from the attacker's side, through the real chain.

Hostile code in a kernel with no guard at all (a plain ipykernel behind the sentry and the
sandbox) prints an MRN or a name with extra characters that a reader does not see: ANSI escapes,
backspace and carriage-return overwrites, zero-width and other invisible characters, full-width
forms, HTML tags, comments and character references, Cyrillic look-alike letters. What the
client receives is rendered here the way a reader sees it (`shown`: written for this test,
independently of `bedside.policy._display`: BeautifulSoup for HTML, JupyterLab's own
backspace/carriage-return algorithm for streams), and no identifier value may be readable in
it. Honest output holding the same kinds of characters still goes through.
"""

from __future__ import annotations

import html
import re
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import (  # noqa: E402
    IDENTIFIERS,
    Client,
    LeakOracle,
    make_hospital,
    make_patients,
    notices,
    start_sentry,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: `make system`"),
]

# -- what a reader sees -----------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
# Look-alike letters, by hand (not the transliteration library the guard uses).
_LOOK_ALIKES = str.maketrans("аеорсхуАЕОРСТНКМВ", "aeopcxyAEOPCTHKMB")


def _jupyterlab_stream(text: str) -> str:
    """JupyterLab's `removeOverwrittenChars` (fixBackspace then fixCarriageReturn) and ANSI."""
    text = _ANSI.sub("", text)
    while True:
        shorter = re.sub(r"[^\n]\x08", "", text)
        if len(shorter) == len(text):
            break
        text = shorter
    text = re.sub(r"\r+\n", "\n", text)
    lines = []
    for line in text.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown)
    return "\n".join(lines)


def _browser(markup: str) -> str:
    soup = BeautifulSoup(markup, "html.parser")
    for hidden in soup(["style", "script"]):
        hidden.decompose()
    return " ".join(soup.get_text("").split())


def _folded(text: str) -> str:
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc") or c in "\n\t")
    return unicodedata.normalize("NFKC", text).translate(_LOOK_ALIKES)


def shown(msg: dict[str, Any]) -> dict[str, Any]:
    """The texts of `msg` as a reader sees them in JupyterLab."""
    content = msg.get("content", {})
    texts = []
    if msg.get("msg_type") == "stream":
        texts.append(_jupyterlab_stream(content.get("text", "")))
    for mime, value in (content.get("data") or {}).items():
        value = value if isinstance(value, str) else str(value)
        if mime in ("text/html", "text/markdown"):
            texts.append(_browser(value))
        elif mime.startswith("text/"):
            texts.append(_jupyterlab_stream(value))
    for line in content.get("traceback", []) or []:
        texts.append(_jupyterlab_stream(line))
    return {"shown": [_folded(t) for t in texts]}


# -- the chain --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    frame = make_patients(500, seed=13)
    root = tmp_path_factory.mktemp("display")
    hospital = make_hospital(root / "hospital", frame=frame)
    sentry = start_sentry(hospital, root / "run", sandbox=True, kernel="plain")
    client = None
    try:
        client = Client.connect(sentry)
        reply, _ = client.execute(
            "import pandas as pd\n"
            "from IPython.display import HTML, Markdown, display\n"
            f"df = pd.read_parquet({str(hospital.data)!r})"
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        yield client, LeakOracle(frame, IDENTIFIERS)
    finally:
        if client is not None:
            client.close()
        sentry.stop()


# Each cell writes one value (v) so that it displays unchanged.
HIDDEN = {
    "ansi": "v = df.mrn.iloc[15]; print(v[:5] + '\\x1b[0m' + v[5:])",
    "ansi-name": "v = df.name.iloc[15]; print(v[:3] + '\\x1b[1m' + v[3:])",
    "backspace": "v = df.mrn.iloc[17]; print(v[:5] + 'Q\\b' + v[5:])",
    "carriage-return": "v = df.mrn.iloc[19]; print('xxxxx' + v[5:] + '\\r' + v[:5])",
    "zero-width": "v = df.mrn.iloc[21]; print(v[:5] + '\\u200b' + v[5:])",
    "soft-hyphen": "v = df.name.iloc[23]; print(v[:3] + '\\u00ad' + v[3:])",
    "word-joiner": "v = df.name.iloc[25]; print('\\u2060'.join(v))",
    "fullwidth": (
        "v = df.mrn.iloc[27]\n"
        "print(''.join(chr(ord(c) + 0xFEE0) if '!' <= c <= '~' else c for c in v))"
    ),
    "html-tag": "v = df.name.iloc[29]; display(HTML(v[:3] + '<b></b>' + v[3:]))",
    "html-references": "v = df.name.iloc[31]; display(HTML(''.join('&#%d;' % ord(c) for c in v)))",
    "html-comment": "v = df.mrn.iloc[33]; display(HTML(v[:4] + '<!-- -->' + v[4:]))",
    "markdown": "v = df.name.iloc[35]; display(Markdown(v[:2] + '<span></span>' + v[2:]))",
    "look-alikes": (
        "v = df.name.iloc[37]\n"
        "print(v.translate(str.maketrans('aeopcxyAEOPCTHKMB', 'аеорсхуАЕОРСТНКМВ')))"
    ),
    "traceback": "v = df.name.iloc[39]; raise ValueError(v[:3] + '\\u200b' + v[3:])",
}


@pytest.mark.parametrize("name", list(HIDDEN))
def test_a_value_written_to_display_unchanged_does_not_reach_the_reader(chain, name):
    client, oracle = chain
    _, outputs = client.execute(HIDDEN[name], timeout=60)
    for msg in outputs:
        assert not oracle.leaks(shown(msg)), f"{name}: {msg['msg_type']} shows an identifier"
    # The cell did write its value: the sentry stopped it (not an empty or failed cell).
    assert any(n["layer"] == "sentry" for n in notices(outputs)), name


HONEST = {
    "colours": "print('\\x1b[1;32mOK\\x1b[0m model fitted, AUC \\x1b[33m0.81\\x1b[0m')",
    "progress": (
        "import sys, time\n"
        "for i in range(0, 101, 20):\n"
        "    sys.stdout.write(f'\\r{i:3d}%|' + '█' * (i // 10) + ' ' * (10 - i // 10) + '|')\n"
        "    sys.stdout.flush()\n"
        "print()"
    ),
    "html-table": "display(df.groupby('sex')[['age']].mean().round(1))",
    "html-text": "display(HTML('<p>Mean age <b>54</b> &amp; median stay <i>3</i> days</p>'))",
}


def test_honest_output_with_such_characters_goes_through(chain):
    client, oracle = chain
    for name, code in HONEST.items():
        reply, outputs = client.execute(code, timeout=60)
        assert reply["content"]["status"] == "ok", (name, reply["content"])
        assert not notices(outputs), (name, notices(outputs))
        assert any(m["msg_type"] in ("stream", "display_data") for m in outputs), name
        for msg in outputs:
            assert not oracle.leaks(shown(msg))


def test_the_reader_rendering_sees_what_the_probes_hide():
    # The test's own rendering reads each trick (else the leak checks above prove nothing).
    value = "MRN00012345"
    assert _folded(_jupyterlab_stream(value[:5] + "\x1b[0m" + value[5:])) == value
    assert _folded(_jupyterlab_stream(value[:5] + "Q\b" + value[5:])) == value
    assert _folded(_jupyterlab_stream("xxxxx" + value[5:] + "\r" + value[:5])) == value
    assert _folded(_browser("".join(f"&#{ord(c)};" for c in value))) == value
    assert _folded(_browser(value[:4] + "<!-- -->" + value[4:])) == value
    assert _folded("Mоntеnеgrо") == "Montenegro"
    assert html.unescape("&amp;") == "&"
