"""Fixtures shared by the sentry tests.

`world` is one sentry with a plain, unsandboxed ipykernel behind it (no in-kernel guard: the
sentry alone is under test), started once per module on the module's own `frame` fixture (the
patients table), with the table loaded as `df` in the kernel. Modules that need another chain
(test_sandbox.py, test_sentry_guard.py) define their own `world`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from _sentry_support import Client, RunningSentry, make_hospital, start_sentry


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
            f"import pandas as pd, numpy as np\ndf = pd.read_parquet({str(hospital.data)!r})"
        )
        assert reply["content"]["status"] == "ok"
        yield sentry, client
    finally:
        if client is not None:
            client.close()
        sentry.stop()
