"""`bedside keys …` and `bedside ledger …`: the reviewer's and the key holder's commands.

Exit statuses (all `ledger` commands): 0 the check passed; 1 the ledger, proof or anchor failed
verification (the message names the first bad entry); 2 the input could not be used at all
(missing file, malformed key, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bedside._cli import reports_errors
from bedside.errors import AnchorError, Error, LedgerError, LedgerIntegrityError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2


def _key_arg(value: str) -> str:
    """A verifier key given inline (name+hexid+base64) or as a file holding one."""
    p = Path(value)
    if p.is_file():
        return p.read_text(encoding="utf-8").strip()
    return value


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="make signing keys for checkpoints and receipts")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    new = keys_sub.add_parser(
        "new",
        help="make an Ed25519 key pair: NAME.key (secret, mode 0600) and NAME.pub (share this)",
        description=(
            "Write NAME.key (C2SP signer key, PRIVATE+KEY+NAME+id+..., readable only by you) and "
            "NAME.pub (the verifier key reviewers pass to `bedside ledger verify --key`)."
        ),
    )
    new.add_argument("name", metavar="NAME", help="key name, e.g. st-marys-custodian")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write (default: .)")
    new.set_defaults(handler=_keys_new)

    ledger = subparsers.add_parser(
        "ledger", help="verify, prove, replay and report on a session ledger (reviewers)"
    )
    sub = ledger.add_subparsers(dest="ledger_command", metavar="COMMAND", required=True)

    verify = sub.add_parser(
        "verify",
        help="check a ledger: records, Merkle root, signatures, openings, anchors",
        description=(
            "Check every entry of LEDGER in one streaming pass: record checksums, canonical "
            "JSON, order, the signed checkpoints against trusted keys, openings against "
            "commitments (--openings) and on-chain anchors (--rpc). Exit 0 when everything "
            "holds, 1 naming the first bad entry, 2 when the input cannot be read."
        ),
    )
    verify.add_argument("ledger", type=Path, metavar="LEDGER")
    verify.add_argument(
        "--key",
        action="append",
        default=[],
        type=_key_arg,
        metavar="VKEY",
        help="trusted verifier key (inline or a .pub file); repeat for several",
    )
    verify.add_argument("--openings", type=Path, metavar="FILE", help="openings file to check")
    verify.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=Path,
        metavar="NOTE",
        help="a signed checkpoint held outside the ledger that it must contain (catches "
        "truncation); repeatable",
    )
    verify.add_argument("--rpc", metavar="URL", help="EVM JSON-RPC URL: check anchors on chain")
    verify.add_argument(
        "--confirmations",
        type=int,
        metavar="N",
        help="with --rpc: each anchor block needs N confirmations (default 1: mined)",
    )
    verify.add_argument(
        "--finalized",
        action="store_true",
        help="with --rpc: each anchor block must be at or before the chain's finalized block",
    )
    verify.add_argument(
        "--contract",
        metavar="ADDR",
        help="with --rpc: the BedsideAnchor contract you trust; anchors through any other fail",
    )
    verify.add_argument(
        "--submitter",
        metavar="ADDR",
        help="with --rpc: the address that must have sent every anchor (the custodian's)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    verify.set_defaults(handler=_verify)

    prove = sub.add_parser(
        "prove",
        help="print an inclusion proof of one entry against the latest signed checkpoint",
    )
    prove.add_argument("ledger", type=Path, metavar="LEDGER")
    prove.add_argument("--entry", type=int, required=True, metavar="N")
    prove.add_argument("--checkpoint", type=Path, metavar="NOTE", help="prove against this note")
    prove.add_argument("--openings", type=Path, metavar="FILE", help="include the entry's opening")
    prove.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    prove.set_defaults(handler=_prove)

    check = sub.add_parser("check-proof", help="verify a proof made by `bedside ledger prove`")
    check.add_argument("proof", type=Path, metavar="PROOF")
    check.add_argument("--key", action="append", required=True, type=_key_arg, metavar="VKEY")
    check.set_defaults(handler=_check_proof)

    publish = sub.add_parser(
        "publish-openings",
        help="write the openings that may leave the hospital (blocked outputs removed)",
    )
    publish.add_argument("ledger", type=Path, metavar="LEDGER")
    publish.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    publish.add_argument("--openings", type=Path, metavar="FILE", help="default: beside LEDGER")
    publish.set_defaults(handler=_publish)

    replay = sub.add_parser(
        "replay",
        help="rebuild the session notebook from the ledger (and re-run it with --execute)",
    )
    replay.add_argument("ledger", type=Path, metavar="LEDGER")
    replay.add_argument("--openings", type=Path, required=True, metavar="FILE")
    replay.add_argument("-o", "--output", type=Path, required=True, metavar="NOTEBOOK.ipynb")
    replay.add_argument("--execute", action="store_true", help="run it again and compare outputs")
    replay.add_argument("--kernel", default="python3", metavar="NAME", help="kernelspec to run")
    replay.add_argument("--timeout", type=int, default=600, metavar="S", help="per cell")
    replay.add_argument("--json", action="store_true", help="print the comparison as JSON")
    replay.set_defaults(handler=_replay)

    report = sub.add_parser("report", help="write an HTML report: verdict, timeline, decisions")
    report.add_argument("ledger", type=Path, metavar="LEDGER")
    report.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT.html")
    report.add_argument("--key", action="append", default=[], type=_key_arg, metavar="VKEY")
    report.add_argument("--openings", type=Path, metavar="FILE")
    report.add_argument("--rpc", metavar="URL")
    report.add_argument("--confirmations", type=int, metavar="N")
    report.set_defaults(handler=_report)

    try:
        from bedside.ledger._anchor_cli import register as _register_anchor
    except ImportError:
        _register_anchor = None
    if _register_anchor is not None:
        _register_anchor(sub)


def _exit_status(exc: Error) -> int:
    return EXIT_FAILED if isinstance(exc, LedgerIntegrityError | AnchorError) else EXIT_UNUSABLE


# The reviewer's checks: an error is the verdict, `FAILED: …` with exit 1 when the ledger, proof
# or anchor does not hold and 2 when the input cannot be used.
_verdict = reports_errors("FAILED", _exit_status)


def _readable(ledger: Path, openings: Path | None = None) -> None:
    """Refuse a ledger (or openings file) that cannot be opened, as `verify` does, before a
    command that reads it deep inside (proofs, openings, report) meets the OSError there."""
    for path, what in ((ledger, "the ledger"), (openings, "the openings")):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise LedgerError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def _keys_new(args: argparse.Namespace) -> int:
    from .note import Signer

    signer = Signer.generate(args.name)
    args.dir.mkdir(parents=True, exist_ok=True)
    key_path = args.dir / f"{args.name}.key"
    pub_path = args.dir / f"{args.name}.pub"
    if pub_path.exists():
        raise LedgerError(f"{pub_path}: already exists; choose another name or --dir")
    signer.save(key_path)
    pub_path.write_text(signer.verifier_key + "\n", encoding="utf-8")
    print(f"signer key:   {key_path} (secret, mode 0600)")
    print(f"verifier key: {pub_path}")
    print(signer.verifier_key)
    return EXIT_OK


@_verdict
def _verify(args: argparse.Namespace) -> int:
    from .verify import read_checkpoint, verify_ledger

    chain_only = [
        f"--{name}"
        for name, value in (
            ("confirmations", args.confirmations),
            ("finalized", args.finalized),
            ("contract", args.contract),
            ("submitter", args.submitter),
        )
        if value not in (None, False)
    ]
    if chain_only and args.rpc is None:
        raise LedgerError(
            f"{', '.join(chain_only)} only apply to the on-chain check; add --rpc URL"
        )
    try:
        report = verify_ledger(
            args.ledger,
            keys=args.key,
            openings=args.openings,
            rpc=args.rpc,
            confirmations=args.confirmations,
            finalized=args.finalized,
            contract=args.contract,
            submitter=args.submitter,
            checkpoints=[read_checkpoint(c) for c in args.checkpoint],
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except Error as exc:
        if args.json:
            index = getattr(exc, "index", None)
            print(json.dumps({"ok": False, "index": index, "error": exc.diagnostics()}))
        raise
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return EXIT_OK


@_verdict
def _prove(args: argparse.Namespace) -> int:
    from .proofs import make_inclusion_proof
    from .verify import read_checkpoint

    _readable(args.ledger, args.openings)
    proof = make_inclusion_proof(
        args.ledger,
        args.entry,
        checkpoint=read_checkpoint(args.checkpoint) if args.checkpoint else None,
        openings=args.openings,
    )
    text = json.dumps(proof, indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


@_verdict
def _check_proof(args: argparse.Namespace) -> int:
    from .proofs import check_inclusion_proof

    try:
        proof = json.loads(args.proof.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LedgerError(f"{args.proof}: cannot read the proof: {exc}") from exc
    signers = check_inclusion_proof(proof, args.key)
    print(
        f"OK: entry {proof['index']} ({proof['entry'].get('kind')}) is in the tree of "
        f"{proof['tree_size']} entries signed by {', '.join(signers)}"
    )
    return EXIT_OK


@_verdict
def _publish(args: argparse.Namespace) -> int:
    from .openings import publishable_openings

    _readable(args.ledger, args.openings)
    kept, dropped = publishable_openings(args.ledger, args.output, openings=args.openings)
    os.chmod(args.output, 0o644)
    print(f"{args.output}: {kept} openings; {dropped} withheld (blocked outputs, refused releases)")
    return EXIT_OK


@_verdict
def _replay(args: argparse.Namespace) -> int:
    from .replay import replay

    result = replay(
        args.ledger,
        args.openings,
        args.output,
        execute=args.execute,
        kernel=args.kernel,
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return EXIT_OK if result.ok else EXIT_FAILED


@_verdict
def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    _readable(args.ledger, args.openings)
    ok = write_report(
        args.ledger,
        args.output,
        keys=args.key,
        openings=args.openings,
        rpc=args.rpc,
        confirmations=args.confirmations,
        progress=sys.stderr.isatty(),
    )
    print(f"{args.output}: report written ({'verified' if ok else 'VERIFICATION FAILED'})")
    return EXIT_OK if ok else EXIT_FAILED
