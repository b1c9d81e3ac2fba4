"""The `bedside` kernelspec: sentry → sandbox → guarded kernel, for any Jupyter client.

Installed with the absolute path of this environment's interpreter, so jupyter_client,
JupyterLab or Enterprise Gateway launch the whole chain in the kernel environment whatever their
own PATH is. The kernel's own (sentry-less) spec is installed by `python -m bedside.kernel
install --name bedside-kernel`, for tests of the kernel alone.

    python -m bedside.gateway.kernelspec install --sys-prefix --policy FILE --custodian-key KEY
    python -m bedside.gateway.kernelspec environment-digest
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from bedside._cli import report_error
from bedside.errors import Error, GatewayError

DEFAULT_NAME = "bedside"
DEFAULT_DISPLAY_NAME = "Hospital (bedside: sentry + sandbox + guarded kernel)"


def default_state_dir() -> Path:
    """Where ledgers go unless the custodian says otherwise ($XDG_STATE_HOME/bedside)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bedside" / "sessions"


def kernelspec_dict(
    *,
    policy: Path,
    custodian_key: Path,
    state_dir: Path,
    sandbox: bool = True,
    kernel: str = "guarded",
    display_name: str = DEFAULT_DISPLAY_NAME,
    python: str = sys.executable,
) -> dict[str, Any]:
    """The kernel.json of the chain; paths are made absolute."""
    argv = [
        python,
        "-m",
        "bedside.gateway.sentry",
        "-f",
        "{connection_file}",
        "--policy",
        str(policy.resolve()),
        "--custodian-key",
        str(custodian_key.resolve()),
        "--state-dir",
        str(state_dir.resolve()),
    ]
    if kernel != "guarded":
        argv += ["--kernel", kernel]
    if not sandbox:
        argv.append("--no-sandbox")
        display_name += " [NO SANDBOX]"
    return {
        "argv": argv,
        "display_name": display_name,
        "language": "python",
        # jupyter_client's SIGINT would reach the sentry, not the sandboxed kernel: interrupt by
        # message, which the sentry relays on the control channel.
        "interrupt_mode": "message",
        "metadata": {
            "debugger": False,
            "bedside": {
                "chain": ["sentry", "sandbox" if sandbox else "no-sandbox", f"{kernel} kernel"],
                "policy": str(policy.resolve()),
            },
        },
    }


def _check_inputs(policy: Path, custodian_key: Path) -> list[str]:
    """Fail at install time, not at the first launch; return warnings for the custodian."""
    from bedside.ledger import Signer
    from bedside.policy import load_policy

    load_policy(policy)
    if not custodian_key.is_file():
        raise GatewayError(
            f"custodian key {custodian_key} does not exist; create one with "
            "`bedside keys new NAME` and pass its path"
        )
    Signer.load(custodian_key)
    warnings = []
    mode = custodian_key.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(
            f"the custodian key {custodian_key} is readable by other users; "
            f"chmod 600 {custodian_key}"
        )
    return warnings


def install_kernelspec(
    *,
    policy: Path,
    custodian_key: Path,
    state_dir: Path | None = None,
    name: str = DEFAULT_NAME,
    display_name: str = DEFAULT_DISPLAY_NAME,
    user: bool = False,
    prefix: str | None = None,
    sandbox: bool = True,
    kernel: str = "guarded",
) -> tuple[str, list[str]]:
    """Install the chain's kernelspec; (the directory written, warnings for the custodian)."""
    warnings = _check_inputs(policy, custodian_key)
    state = state_dir or default_state_dir()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    spec = kernelspec_dict(
        policy=policy,
        custodian_key=custodian_key,
        state_dir=state,
        sandbox=sandbox,
        kernel=kernel,
        display_name=display_name,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
        path = KernelSpecManager().install_kernel_spec(tmp, name, user=user, prefix=prefix)
    return str(path), warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bedside.gateway.kernelspec",
        description="Install the `bedside` kernelspec (sentry → sandbox → guarded kernel).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="install the kernelspec")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument(
        "--sys-prefix", action="store_true", help=f"install into this environment ({sys.prefix})"
    )
    where.add_argument("--prefix", help="install under this prefix")
    install.add_argument("--name", default=DEFAULT_NAME, help=f"kernelspec name ({DEFAULT_NAME})")
    install.add_argument("--display-name", default=DEFAULT_DISPLAY_NAME)
    install.add_argument("--policy", type=Path, required=True, help="the custodian's policy")
    install.add_argument(
        "--custodian-key",
        type=Path,
        required=True,
        help="the custodian's signing key (the sandboxed kernel never sees it)",
    )
    install.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where the hospital ledgers go (default {default_state_dir()})",
    )
    install.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run kernels WITHOUT the sandbox (development only; every notice says so)",
    )
    install.add_argument(
        "--kernel",
        choices=("guarded", "plain"),
        default="guarded",
        help="the kernel behind the sentry (plain: a bare ipykernel, for tests of the sentry)",
    )
    sub.add_parser(
        "environment-digest",
        help="print the kernel environment digest researchers declare in their intent",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "environment-digest":
            from bedside.gateway._session import environment_digest

            print(environment_digest())
            return 0
        path, warnings = install_kernelspec(
            policy=args.policy,
            custodian_key=args.custodian_key,
            state_dir=args.state_dir,
            name=args.name,
            display_name=args.display_name,
            user=args.user,
            prefix=sys.prefix if args.sys_prefix else args.prefix,
            sandbox=not args.no_sandbox,
            kernel=args.kernel,
        )
    except Error as exc:
        return report_error(exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"installed kernelspec {args.name} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
