"""Fixtures: one synthetic hospital per session, one guarded kernel per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.kernel._client import Session, running
from tests.kernel._data import write_hospital


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    return write_hospital(tmp_path_factory.mktemp("hospital"))


@pytest.fixture(scope="module")
def guarded(hospital: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    policy, _ = hospital
    with running(tmp_path_factory.mktemp("spec"), "bedside-test", policy) as session:
        yield session
