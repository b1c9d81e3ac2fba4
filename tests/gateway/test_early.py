"""The early kernel start (`bedside.gateway._early`): the sentry remembers a validated policy's
launch view and, on the next start with the same policy file, launches the sandboxed kernel
before its own imports; a kernel launched from a view the policy does not confirm is killed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bedside.gateway import _early
from bedside.policy import load_policy

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import Client, make_hospital, make_patients, start_sentry  # noqa: E402


@pytest.fixture
def hospital(tmp_path):
    return make_hospital(tmp_path / "h", frame=make_patients(300))


def _fake_launched(hospital, view) -> _early.Launched:
    private, _, _ = _early.make_private_dir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return _early.Launched(
        cache_key="k",
        view=view,
        policy_path=hospital.policy,
        state_root=hospital.state,
        kernel="guarded",
        session_id="s" * 32,
        inner_key="0" * 64,
        private_dir=private,
        info={},
        proc=proc,
    )


def test_the_view_is_remembered_per_policy_bytes(hospital):
    policy = load_policy(hospital.policy)
    key = _early.cache_key(hospital.policy, "guarded")
    _early.remember(hospital.state, key, _early.launch_view(policy))
    stored = json.loads((hospital.state / ".launch" / f"{key}.json").read_text())
    assert stored["policy"] == str(policy.path)
    assert stored["limits"].keys() == {"memory_mb", "cpu_seconds", "processes"}
    assert (hospital.state / ".launch").stat().st_mode & 0o077 == 0
    # Another kernel, or the policy file changed by one byte: another key.
    assert _early.cache_key(hospital.policy, "plain") != key
    hospital.policy.write_text(hospital.policy.read_text() + "\n")
    assert _early.cache_key(hospital.policy, "guarded") != key


def test_a_kernel_the_policy_does_not_confirm_is_killed(hospital):
    policy = load_policy(hospital.policy)
    view = _early.launch_view(policy)
    view["limits"]["memory_mb"] = 999_999
    launched = _fake_launched(hospital, view)
    assert not _early.adopt(launched, policy)
    assert launched.proc.poll() is not None
    assert not launched.private_dir.exists()


def test_a_confirmed_kernel_is_adopted(hospital):
    policy = load_policy(hospital.policy)
    launched = _fake_launched(hospital, _early.launch_view(policy))
    try:
        assert _early.adopt(launched, policy)
        assert launched.proc.poll() is None
    finally:
        launched.discard()


def test_prelaunch_without_a_remembered_view_does_nothing(hospital):
    argv = ["-f", "x.json", "--policy", str(hospital.policy), "--state-dir", str(hospital.state)]
    _early.prelaunch(argv)
    assert _early.pending(hospital.policy, hospital.state, "guarded", True) is None


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_the_second_sentry_adopts_its_early_kernel_and_works(hospital, tmp_path):
    for attempt in range(2):
        sentry = start_sentry(hospital, tmp_path / f"run{attempt}", sandbox=True, kernel="plain")
        client = Client.connect(sentry)
        try:
            reply, outputs = client.execute("1 + 1")
            assert reply["content"]["status"] == "ok"
        finally:
            client.close()
            sentry.stop()
        adopted = "adopted the kernel started before the policy was loaded" in sentry.log()
        assert adopted == (attempt == 1), sentry.log()
    assert list((hospital.state / ".launch").glob("*.json"))
    assert not list(Path(hospital.state / ".launch").glob("*.tmp"))
