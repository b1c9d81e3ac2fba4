"""Fixtures for the ledger tests: keys and a small, realistic session ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_session import build_session

from bedside.ledger import Signer


@pytest.fixture(scope="session")
def custodian() -> Signer:
    return Signer.generate("custodian")


@pytest.fixture(scope="session")
def researcher() -> Signer:
    return Signer.generate("researcher")


@pytest.fixture()
def session_ledger(tmp_path: Path, custodian: Signer, researcher: Signer) -> Path:
    path = tmp_path / "session.ledger"
    build_session(path, custodian, researcher).close()
    return path
