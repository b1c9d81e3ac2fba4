"""Fixtures shared by the sentry tests.

`relay` is an in-process sentry (see its docstring). `world` is one sentry with a plain,
unsandboxed ipykernel behind it (no in-kernel guard: the sentry alone is under test), started once
per module on the module's own `frame` fixture (the patients table), with the table loaded as `df`
in the kernel. Modules that need another chain (test_sandbox.py, test_sentry_guard.py) define their
own `world`. `hostile` is `world`'s client with a leak oracle, for the tests that write values in
pieces or encoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from _sentry_support import (
    Client,
    LeakOracle,
    RunningSentry,
    in_process_sentry,
    make_hospital,
    make_patients,
    start_sentry,
)


@pytest.fixture
def relay(tmp_path: Path):
    """An in-process sentry on 300 patients (outputs up to 2 MB), its client socket, its kernel
    socket and the table; the release worker and the ledger are closed afterwards. Modules
    that need another relay define their own."""
    frame = make_patients(300)
    hospital = make_hospital(tmp_path / "h", frame=frame, max_output_bytes=2_000_000)
    sentry, client, kernel = in_process_sentry(hospital, tmp_path)
    yield sentry, client, kernel, frame
    if sentry._preparer is not None:
        sentry._preparer.shutdown(wait=True)
    sentry.ledger.close()


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame
) -> Iterator[tuple[RunningSentry, Client]]:
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    hospital = make_hospital(root / "hospital", frame=frame)
    sentry = start_sentry(hospital, root / "run")
    client = None
    try:
        client = Client.connect(sentry)
        reply, _ = client.execute(
            # (and what hostile cells use to write a value in pieces or encoded)
            "import base64, binascii, codecs, pickle, sys, zlib\n"
            f"import pandas as pd, numpy as np\ndf = pd.read_parquet({str(hospital.data)!r})"
        )
        assert reply["content"]["status"] == "ok"
        yield sentry, client
    finally:
        if client is not None:
            client.close()
        sentry.stop()


@pytest.fixture(scope="module")
def hostile(
    world: tuple[RunningSentry, Client], frame: pd.DataFrame
) -> tuple[Client, LeakOracle, pd.DataFrame]:
    """`world`'s client with a leak oracle for the module's patients: the sentry in front of a
    kernel with no guard, which is what hostile code that switched the in-kernel guard off (or
    wrote to the session itself) amounts to."""
    _, client = world
    return client, LeakOracle(frame), frame
