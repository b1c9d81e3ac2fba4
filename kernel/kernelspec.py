"""Install the guarded kernel as a Jupyter kernelspec, in ipykernel's style.

The kernelspec's argv uses the absolute path of the current interpreter, so Jupyter (or
Enterprise Gateway) launches the kernel in this environment whatever its own PATH is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from bedside.errors import PolicyError

DEFAULT_NAME = "bedside"
DEFAULT_DISPLAY_NAME = "Hospital (bedside guarded)"


def kernelspec_dict(
    *, policy: Path | None = None, display_name: str = DEFAULT_DISPLAY_NAME,
    env: dict[str, str] | None = None,
) -> dict[str, object]:  # fmt: skip
    argv = [sys.executable, "-m", "bedside.kernel", "-f", "{connection_file}"]
    if policy is not None:
        argv += ["--policy", str(policy)]
    return {
        "argv": argv,
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "env": dict(env or {}),
        "metadata": {"debugger": False, "bedside": {"layer": "kernel"}},
    }


def install_kernelspec(
    *, name: str = DEFAULT_NAME, display_name: str = DEFAULT_DISPLAY_NAME, user: bool = False,
    prefix: str | None = None, policy: Path | None = None, env: dict[str, str] | None = None,
) -> str:  # fmt: skip
    """Install the kernelspec and return the directory it was written to."""
    if policy is not None:
        policy = policy.resolve()
        if not policy.is_file():
            raise PolicyError(f"policy file {policy} does not exist", path=str(policy),
                              fix="pass the path of an existing policy YAML file")  # fmt: skip
    spec = kernelspec_dict(policy=policy, display_name=display_name, env=env)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
        return str(KernelSpecManager().install_kernel_spec(
            tmp, name, user=user, prefix=prefix))  # fmt: skip


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true",
                       help=f"install into this environment ({sys.prefix})")  # fmt: skip
    where.add_argument("--prefix", help="install under this prefix")
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help=f"kernelspec name (default {DEFAULT_NAME}; the sentry's spec may "
        "take that name, so use e.g. bedside-local for the bare kernel)",
    )
    parser.add_argument("--display-name", default=DEFAULT_DISPLAY_NAME)
    parser.add_argument(
        "--policy", type=Path, help="policy YAML baked into argv (else BEDSIDE_POLICY at launch)"
    )
    parser.add_argument(
        "--env",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        default=[],
        help="environment variable for the kernel (repeatable)",
    )


def run_install(args: argparse.Namespace) -> int:
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = install_kernelspec(
        name=args.name, display_name=args.display_name, user=args.user, prefix=prefix,
        policy=args.policy, env=dict(args.env or []),
    )  # fmt: skip
    print(f"installed kernelspec {args.name} in {path}")
    return 0
