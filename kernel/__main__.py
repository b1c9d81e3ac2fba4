"""`python -m bedside.kernel -f CONNECTION_FILE [--policy FILE]` and `... install`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bedside.errors import Error


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "install":
        from bedside.kernel.kernelspec import add_install_arguments, run_install

        parser = argparse.ArgumentParser(prog="python -m bedside.kernel install")
        add_install_arguments(parser)
        try:
            return run_install(parser.parse_args(args[1:]))
        except Error as exc:
            print(f"error: {exc.diagnostics()}", file=sys.stderr)
            return 1
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--policy")
    ns, rest = pre.parse_known_args(args)
    from bedside.kernel import kernel

    try:
        policy = kernel.load_kernel_policy(ns.policy)
    except Error as exc:
        print(f"bedside kernel refuses to start: {exc.diagnostics()}", file=sys.stderr)
        return 1
    os.environ[kernel.POLICY_ENV] = str(Path(policy.path).resolve())
    kernel._preloaded_policy = policy
    kernel.GuardedKernelApp.launch_instance(argv=rest, kernel_class=kernel.GuardedKernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
