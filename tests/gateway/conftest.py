"""Fixtures shared by the sentry tests.

`world` is one sentry with a plain, unsandboxed ipykernel behind it (no in-kernel guard: the
sentry alone is under test), started once per module on the module's own `frame` fixture (the
patients table), with the table loaded as `df` in the kernel. Modules that need another chain
(test_sandbox.py, test_sentry_guard.py) define their own `world`. `hostile` is `world`'s client
with a leak oracle, for the tests that write values in pieces or encoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from _sentry_support import Client, LeakOracle, RunningSentry, make_hospital, start_sentry


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
