"""`bedside kernel install`: the kernelspec command for custodians."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from bedside.kernel.kernelspec import add_install_arguments, run_install

    kernel = subparsers.add_parser("kernel", help="the guarded hospital kernel")
    sub = kernel.add_subparsers(dest="kernel_command", metavar="COMMAND")
    install = sub.add_parser(
        "install", help="install the guarded kernel as a Jupyter kernelspec",
        description="Install the guarded kernel (same as python -m bedside.kernel install).",
    )  # fmt: skip
    add_install_arguments(install)
    install.set_defaults(handler=run_install)

    def _help(args: argparse.Namespace) -> int:
        kernel.print_help()
        return 2

    kernel.set_defaults(handler=_help)
