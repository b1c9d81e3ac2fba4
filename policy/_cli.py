"""`bedside policy check|explain|hash FILE` and `bedside demo-data` for custodians."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_POLICY_HELP = """\
Check and read a custodian policy (YAML, `version: bedside/v1`).

  bedside policy check policy.yaml     validate it, including the dataset files and columns
  bedside policy explain policy.yaml   what it allows, in plain language
  bedside policy hash policy.yaml      the digest a session ledger records

The full reference is docs/custodian/policy.md.
"""


def register(subparsers: Any) -> None:
    policy = subparsers.add_parser(
        "policy",
        help="check, explain or hash a custodian policy",
        description=_POLICY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy.set_defaults(handler=lambda args: (policy.print_help(), 2)[1])
    sub = policy.add_subparsers(dest="policy_command", metavar="ACTION")

    check = sub.add_parser(
        "check",
        help="validate a policy; exit 0 with its digest, 1 with what to fix",
        description="Validate a policy file, its dataset files and their columns.",
    )
    check.add_argument("file", type=Path, help="the policy YAML file")
    check.add_argument(
        "--no-files",
        action="store_true",
        help="do not require the dataset files (e.g. checking a policy away from the data)",
    )
    check.set_defaults(handler=_check)

    explain = sub.add_parser(
        "explain",
        help="print what the policy allows, in plain language",
        description="Print a plain-language summary of a policy for the custodian.",
    )
    explain.add_argument("file", type=Path, help="the policy YAML file")
    explain.set_defaults(handler=_explain)

    digest = sub.add_parser(
        "hash",
        help="print the policy digest (sha256 of its canonical JSON)",
        description=(
            "Print sha256:<hex> of the RFC 8785 JSON of the normalised policy. Comments, key "
            "order and formatting do not change it; any setting does. Dataset files are not "
            "needed."
        ),
    )
    digest.add_argument("file", type=Path, help="the policy YAML file")
    digest.add_argument(
        "--json", action="store_true", help="print the canonical JSON instead of the digest"
    )
    digest.set_defaults(handler=_hash)

    demo = subparsers.add_parser(
        "demo-data",
        help="write a synthetic hospital (patients, admissions, lab results) and its policy",
        description=(
            "Write deterministic synthetic tables (Parquet and CSV) under OUT/data and a "
            "matching OUT/policy.yaml. All data is made up (Faker and numpy, seeded)."
        ),
    )
    demo.add_argument("--out", type=Path, required=True, help="output directory")
    demo.add_argument("--patients", type=int, default=5000, help="number of patients")
    demo.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    demo.add_argument(
        "--format",
        default="parquet,csv",
        help="comma-separated formats to write: parquet, csv (the policy uses the first)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(handler=_demo_data)


def _check(args: argparse.Namespace) -> int:
    from bedside.policy.model import load_policy

    policy = load_policy(args.file, check_files=not args.no_files)
    n = len(policy.datasets)
    print(
        f"OK {args.file}: policy '{policy.id}' ({policy.version}), "
        f"{n} dataset{'s' if n != 1 else ''}, {policy.digest}"
    )
    return 0


def _explain(args: argparse.Namespace) -> int:
    from bedside.policy.explain import explain
    from bedside.policy.model import load_policy

    print(explain(load_policy(args.file, check_files=False)), end="")
    return 0


def _hash(args: argparse.Namespace) -> int:
    from bedside.policy.model import load_policy

    policy = load_policy(args.file, check_files=False)
    print(policy.canonical_json().decode() if args.json else policy.digest)
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from bedside.errors import PolicyError
    from bedside.policy.synthetic import write_demo_hospital

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if args.patients < 1:
        raise PolicyError("--patients must be at least 1", fix="e.g. --patients 5000")
    if not formats or any(f not in ("parquet", "csv") for f in formats):
        raise PolicyError(
            f"unknown --format {args.format!r}", fix="use parquet, csv or parquet,csv"
        )
    paths = write_demo_hospital(
        args.out,
        patients=args.patients,
        seed=args.seed,
        formats=formats,
        progress=not args.quiet,
    )
    print(f"wrote {args.patients:,} patients to {args.out} (policy: {paths['policy']})")
    return 0
