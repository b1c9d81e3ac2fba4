"""`python -m bedside.kernel -f CONNECTION_FILE [--policy FILE]` and `... install`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bedside import _starttrace
from bedside.errors import Error

_starttrace.mark_process_start("kernel")


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
    _without_debugger()
    from bedside.kernel import kernel

    _starttrace.mark("kernel.imported")
    try:
        policy = kernel.load_kernel_policy(ns.policy)
    except Error as exc:
        print(f"bedside kernel refuses to start: {exc.diagnostics()}", file=sys.stderr)
        return 1
    os.environ[kernel.POLICY_ENV] = str(Path(policy.path).resolve())
    kernel._preloaded_policy = policy
    kernel._stderr_fd = os.dup(2)
    _starttrace.mark("kernel.policy_loaded")
    app = kernel.GuardedKernelApp.instance(kernel_class=kernel.GuardedKernel)
    app.initialize(rest)
    if _starttrace.enabled():
        _trace_first_kernel_info(app)
    _starttrace.mark("kernel.listening")
    app.start()
    return 0


def _without_debugger() -> None:
    """Load ipykernel's debugger module without debugpy.

    The guarded kernel has no debugger (it would read variables past the guard), but ipykernel
    imports debugpy and pydevd whenever they are installed: the largest part of a kernel's start
    after its own imports, and the source of a frozen-modules warning at start-up. With debugpy
    hidden while `ipykernel.debugger` loads, ipykernel finds no debugger and never starts one.
    """
    hidden = "debugpy" not in sys.modules
    if hidden:
        sys.modules["debugpy"] = None  # type: ignore[assignment] - makes `import debugpy` fail
    try:
        import ipykernel.debugger  # noqa: F401
    finally:
        if hidden:
            del sys.modules["debugpy"]


def _trace_first_kernel_info(app: object) -> None:
    """Mark when the kernel answers its first kernel_info_request (BEDSIDE_START_TRACE only)."""
    handlers = app.kernel.shell_handlers  # type: ignore[attr-defined]
    original = handlers["kernel_info_request"]

    async def traced(*args: object, **kwargs: object) -> object:
        result = await original(*args, **kwargs)
        _starttrace.mark("kernel.kernel_info_reply")
        handlers["kernel_info_request"] = original
        return result

    handlers["kernel_info_request"] = traced


if __name__ == "__main__":
    sys.exit(main())
