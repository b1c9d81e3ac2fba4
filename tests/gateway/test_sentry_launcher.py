"""The sentry ends its session when whatever launched it dies without shutting it down.

Enterprise Gateway (or a KernelManager) that is killed leaves nobody able to reach the kernel;
a sentry that lived on would keep the kernel, the data and the custodian key loaded for ever.
The sentry polls its parent as ipykernel does, records the interruption and stops the kernel.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from bedside.ledger import Ledger

sys.path.insert(0, str(Path(__file__).parent))
from _sentry_support import Client, make_hospital, make_patients, start_sentry  # noqa: E402

# A launcher that starts the sentry, says its pid, and waits to be killed.
LAUNCHER = (
    "import pathlib, subprocess, sys, time\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "pathlib.Path(sys.argv[1]).write_text(str(p.pid))\n"
    "time.sleep(3600)\n"
)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (an exited one waiting to be reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def hospital(tmp_path):
    return make_hospital(tmp_path / "hospital", frame=make_patients(300, seed=11))


def test_sentry_stops_and_records_the_interruption_when_its_launcher_dies(hospital, tmp_path):
    pidfile = tmp_path / "sentry.pid"
    sentry = start_sentry(
        hospital, tmp_path / "run", wrap=[sys.executable, "-c", LAUNCHER, str(pidfile)]
    )
    client = Client.connect(sentry)
    try:
        client.kc.execute("1 + 1")
        reply = client.kc.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok"
        pid = int(pidfile.read_text())
        assert _running(pid)

        sentry.proc.kill()  # the launcher dies without a shutdown_request
        sentry.proc.wait()
        deadline = time.monotonic() + 60
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(pid), f"the sentry outlived its launcher:\n{sentry.log()}"
    finally:
        client.close()
        sentry.stop()

    assert "launched this kernel" in sentry.log()
    ledger = Ledger.open(sentry.ledger_path())
    kinds = [ledger.entry(i)["kind"] for i in range(ledger.size)]
    assert "interrupted" in kinds
    assert kinds[-1] == "checkpoint"
