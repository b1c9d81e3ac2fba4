"""The `bedside` command: one entry point, one sub-command group per user.

Each subsystem contributes its commands through a `register(subparsers)` function in its own
`_cli` module; this module only wires them together and catches `bedside.Error` exactly once,
printing its diagnostics. Sub-command modules are imported lazily so that `bedside --help` stays
fast and a reviewer's machine does not need Jupyter to verify a ledger.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence

from bedside import __version__
from bedside.errors import Error

# (module, help) for every command group; each module defines register(subparsers).
_GROUPS: tuple[str, ...] = (
    "bedside.policy._cli",
    "bedside.ledger._cli",
    "bedside.kernel._cli",
    "bedside.gateway._cli",
    "bedside.gateway._review_cli",
    "bedside.extension._cli",
)


Command = Callable[[argparse.Namespace], int]


def report_error(exc: Error, *, prefix: str = "error", status: int = 1) -> int:
    """Print a `bedside.Error` for the user, once, as `PREFIX: diagnostics` on stderr (the
    message with its fix); return the exit status to end with. Every bedside command line ends
    an error this way: `bedside` itself, the `ledger` verdicts (`FAILED`), and the programs the
    kernelspecs launch (`bedside pod`)."""
    print(f"{prefix}: {exc.diagnostics()}", file=sys.stderr)
    return status


def reports_errors(prefix: str, status: Callable[[Error], int]) -> Callable[[Command], Command]:
    """Decorate a command whose errors are reported its own way (`report_error` with `prefix`,
    exit status `status(exc)`) rather than as `error: …` with status 1."""

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            try:
                return command(args)
            except Error as exc:
                return report_error(exc, prefix=prefix, status=status(exc))

        return run

    return decorate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bedside",
        description=(
            "Compute-to-data for clinical AI. Custodians: `bedside policy`, `bedside gateway`, "
            "`bedside review`. Data scientists: `bedside run`. Reviewers: `bedside ledger`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bedside {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A subsystem whose optional dependencies are missing simply offers no commands.
            if exc.name is not None and exc.name.startswith("bedside"):
                continue
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result = handler(args)
    except Error as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
