"""`bedside gateway start` errors a custodian can act on."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bedside.errors import GatewayError
from bedside.gateway._cli import _token_file


def test_gateway_start_missing_token_file_says_how_to_make_one(tmp_path):
    args = argparse.Namespace(token_file=tmp_path / "token", token=None)
    with pytest.raises(GatewayError) as err:
        _token_file(args, Path(tmp_path))
    text = str(err.value)
    assert "no such file" in text and "secrets.token_urlsafe" in text and "umask 077" in text
