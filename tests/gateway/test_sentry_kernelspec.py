"""The `bedside` kernelspec: installed like ipykernel's, launched by a plain jupyter_client
KernelManager, it runs sentry → sandbox → guarded kernel, interrupts by message and shuts down
cleanly with a ledger that verifies."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import Client, make_hospital, make_patients, notices  # noqa: E402

from bedside.gateway import kernelspec  # noqa: E402
from bedside.ledger import openings_path, verify_ledger  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def hospital(tmp_path):
    return make_hospital(tmp_path / "hospital", frame=make_patients(600, seed=3))


def test_install_writes_the_chain(hospital, tmp_path, capsys):
    code = kernelspec.main(
        [
            "install",
            "--prefix",
            str(tmp_path / "prefix"),
            "--policy",
            str(hospital.policy),
            "--custodian-key",
            str(hospital.key),
            "--state-dir",
            str(hospital.state),
        ]
    )
    assert code == 0
    spec = json.loads((tmp_path / "prefix/share/jupyter/kernels/bedside/kernel.json").read_text())
    argv = spec["argv"]
    assert argv[:3] == [sys.executable, "-m", "bedside.gateway.sentry"]
    assert "--no-sandbox" not in argv
    assert argv[argv.index("--custodian-key") + 1] == str(hospital.key.resolve())
    assert spec["interrupt_mode"] == "message"


def test_kernelspec_argv_is_what_the_sentry_parses(tmp_path):
    """kernelspec_dict writes the sentry's command line by hand: every flag it writes is one
    the sentry's own parser reads, with the value meant."""
    from bedside.gateway.sentry import build_parser

    paths = {name: tmp_path / name for name in ("policy.yaml", "custodian.key", "state")}
    for sandbox, kernel in ((True, "guarded"), (False, "plain")):
        argv = kernelspec.kernelspec_dict(
            policy=paths["policy.yaml"],
            custodian_key=paths["custodian.key"],
            state_dir=paths["state"],
            sandbox=sandbox,
            kernel=kernel,
        )["argv"]
        assert argv[1:3] == ["-m", "bedside.gateway.sentry"]
        args = build_parser().parse_args(argv[3:])
        assert str(args.connection_file) == "{connection_file}"
        assert args.policy == paths["policy.yaml"].resolve()
        assert args.custodian_key == paths["custodian.key"].resolve()
        assert args.state_dir == paths["state"].resolve()
        assert (args.no_sandbox, args.kernel) == (not sandbox, kernel)


def test_install_refuses_a_broken_policy_or_missing_key(hospital, tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: bedside/v1\nid: x\noutputs: 3\n")
    args = ["install", "--prefix", str(tmp_path / "p"), "--custodian-key", str(hospital.key)]
    assert kernelspec.main([*args, "--policy", str(broken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}") and err.count("error: ") == 1, err
    missing = ["install", "--prefix", str(tmp_path / "p"), "--policy", str(hospital.policy)]
    assert kernelspec.main([*missing, "--custodian-key", str(tmp_path / "nope.key")]) == 1
    assert "bedside keys new" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: run `make system`")
def test_jupyter_client_runs_the_guarded_chain(hospital, tmp_path):
    path, _ = kernelspec.install_kernelspec(
        policy=hospital.policy,
        custodian_key=hospital.key,
        state_dir=hospital.state,
        prefix=str(tmp_path / "prefix"),
    )
    ksm = KernelSpecManager(kernel_dirs=[str(Path(path).parent)])
    km = KernelManager(kernel_name="bedside", kernel_spec_manager=ksm)
    km.start_kernel()
    client = None
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        client = Client(kc)
        reply, _ = client.execute('df = hospital.load("patients")')
        assert reply["content"]["status"] == "ok", reply["content"]
        _, outputs = client.execute("print(df.head(3).to_csv())")
        assert notices(outputs)[0]["decision"] == "blocked"
        # Interrupt by message: the sentry relays interrupt_request to the sandboxed kernel.
        msg_id = kc.execute("import time\ntime.sleep(60)")
        import time

        time.sleep(2)
        km.interrupt_kernel()
        reply = client.shell_reply(msg_id, timeout=30)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        if client is not None:
            client.close()
        km.shutdown_kernel(now=False)
    ledgers = list(hospital.state.glob("*/session.ledger"))
    assert len(ledgers) == 1
    report = verify_ledger(
        ledgers[0], keys=[hospital.signer.verifier_key], openings=openings_path(ledgers[0])
    )
    assert report.kinds["execute_request"] == 3
    assert report.checkpoints and report.signed_size >= report.size - 1
