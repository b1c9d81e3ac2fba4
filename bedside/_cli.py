"""The `bedside` command: one entry point, one sub-command group per user.

Each subsystem contributes its commands through a `register(subparsers)` function in its own
`_cli` module; this module only wires them together and catches `bedside.Error` exactly once,
printing its diagnostics. Sub-command modules are imported lazily so that `bedside --help` stays
fast and a reviewer's machine does not need Jupyter to verify a ledger.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
