"""The submitter key file: a hex secp256k1 private key that only its owner can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from bedside.errors import AnchorError
from bedside.ledger.anchor import load_key

KEY = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"
ADDRESS = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "anchor.key"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("text", [KEY, "0x" + KEY, KEY + "\n", "0x" + KEY.upper() + "\n"])
def test_hex_key_loads(tmp_path: Path, text: str) -> None:
    assert load_key(write(tmp_path, text)).address == ADDRESS


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, KEY, mode)
    expected = rf"readable by other users \(mode {mode:04o}\).*chmod 600"
    with pytest.raises(AnchorError, match=expected):
        load_key(path)


@pytest.mark.parametrize("text", ["", "abc", KEY + "00", "zz" * 32, KEY + "\n" + KEY])
def test_malformed_key_names_the_file_and_format(tmp_path: Path, text: str) -> None:
    with pytest.raises(AnchorError, match=r"anchor\.key: not a secp256k1 private key: .*64 hex"):
        load_key(write(tmp_path, text))


def test_out_of_range_key(tmp_path: Path) -> None:
    with pytest.raises(AnchorError, match="not a valid secp256k1 private key"):
        load_key(write(tmp_path, "00" * 32))


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(AnchorError, match="cannot read the key file"):
        load_key(tmp_path / "nope.key")


def test_unreachable_endpoint_is_named_without_its_api_key() -> None:
    from bedside.ledger.anchor import connect

    # Port 9 on loopback (discard) is closed here: the connection is refused at once.
    url = "http://127.0.0.1:9/v2/SECRET-API-KEY?token=SECRET"
    with pytest.raises(AnchorError, match=r"cannot reach the JSON-RPC endpoint") as info:
        connect(url, timeout=5)
    assert "SECRET" not in str(info.value)
    assert "http://127.0.0.1:9/…" in str(info.value)
    with pytest.raises(AnchorError, match="must start with http"):
        connect("ws://127.0.0.1:8546")
