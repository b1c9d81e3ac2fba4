"""`bedside review …` for custodians and `bedside release verify …` for anyone holding a release.

bedside review list                         requests in the outbox and their state

`--state DIR` is the gateway's `--state-dir` (one directory per session under it; requests are
listed across sessions and found by ID) or one session's directory.
bedside review show ID                      checks, evidence, approvals of one request
bedside review approve ID --as NAME --key K one approval (the two-person rule counts them)
bedside review deny ID --as NAME --key K --reason TEXT
bedside release verify ARTIFACT --attestation FILE --ledger LEDGER [--key VKEY]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from bedside.errors import ReleaseError


def register(subparsers: Any) -> None:
    review = subparsers.add_parser(
        "review",
        help="custodians: list, inspect, approve or deny release requests",
        description="Release requests wait in the hospital outbox (under the sentry's state "
        "directory) until enough distinct custodians approve them (release.<kind>."
        "approvals_required in the policy). The requester cannot approve their own request.",
    )
    review.add_argument(
        "--state",
        default=os.environ.get("BEDSIDE_STATE"),
        help="the gateway's --state-dir, or one session's directory under it "
        "(default: $BEDSIDE_STATE)",
    )
    sub = review.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="every request and its state")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)
    p = sub.add_parser("show", help="one request: its checks, evidence and approvals")
    p.add_argument("id")
    p.set_defaults(handler=_show)
    for name, fn in (("approve", _approve), ("deny", _deny)):
        p = sub.add_parser(name, help=f"{name} a pending request as a named custodian")
        p.add_argument("id")
        p.add_argument(
            "--as",
            dest="who",
            required=True,
            metavar="NAME",
            help="your name as a custodian (recorded in the ledger)",
        )
        p.add_argument(
            "--key",
            metavar="FILE",
            help="your signer key (`bedside keys new NAME`); signs your decision",
        )
        if name == "deny":
            p.add_argument("--reason", required=True, help="why; the researcher reads it")
        p.set_defaults(handler=fn)

    release = subparsers.add_parser("release", help="verify a released artifact")
    rsub = release.add_subparsers(dest="release_command", metavar="ACTION", required=True)
    p = rsub.add_parser(
        "verify",
        help="check an artifact against its attestation and the session ledger",
        description="Checks the artifact's SHA-256 against the attested subject, the DSSE "
        "signature against the custodian key, and that the ledger entries named in the "
        "attestation are in the ledger under the attested checkpoint.",
    )
    p.add_argument("artifact", type=Path)
    p.add_argument(
        "--attestation", type=Path, help="the DSSE envelope (default: ARTIFACT.intoto.json)"
    )
    p.add_argument("--ledger", type=Path, required=True, help="the session ledger file")
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="VKEY",
        help="trusted custodian verifier key (repeatable; default: the key the "
        "ledger's header names as custodian)",
    )
    p.set_defaults(handler=_verify)


def _state(args: argparse.Namespace) -> Path:
    if not args.state:
        raise ReleaseError(
            "no state directory: pass `bedside review --state DIR …` or set "
            "BEDSIDE_STATE to the gateway's --state-dir (or one session's directory under it)"
        )
    return Path(args.state)


def _session(args: argparse.Namespace) -> Path:
    """The session directory holding request `args.id` (the gateway keeps one per session)."""
    from bedside.gateway.airlock import find_session

    return find_session(_state(args), args.id)


def _identity(args: argparse.Namespace) -> tuple[Any, Any]:
    from bedside.gateway.airlock import Identity

    signer = None
    if args.key:
        from bedside.ledger import Signer

        signer = Signer.load(args.key)
    return Identity(args.who), signer


def _requests(session: Path) -> list[Any]:
    from bedside.gateway.airlock import Airlock, owner_alive, read_requests

    # While the sentry owns the session's ledger we read and queue only.
    rows = read_requests(session)
    if owner_alive(session) or all(r.status for r in rows):
        return rows  # nothing to ingest: no need to load the session's policy and datasets
    lock = Airlock.from_state(session)
    if lock.ledger.sealed:
        return rows  # nothing more can be ingested into a sealed ledger
    return list(lock.requests())


def _list(args: argparse.Namespace) -> int:
    from bedside.gateway.airlock import session_dirs

    rows = [
        {"session": d.name, **r.summary()} for d in session_dirs(_state(args)) for r in _requests(d)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("the outbox is empty")
    for r in rows:
        extra = f" refused by {', '.join(r['refusals'])}" if r["refusals"] else ""
        if r["status"] == "pending":
            extra = f" approvals {len(r['approvals'])}/{r['required']}"
        print(
            f"{r['id']}  {r['session']}  {r['status']:<9} {r['kind']:<6} {r['name']} "
            f"({r['size']} bytes){extra}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    from bedside.gateway.airlock import Airlock, owner_alive, read_request

    session = _session(args)
    if owner_alive(session):
        req = read_request(session, args.id)
    else:
        req = Airlock.from_state(session).get(args.id)
    print(
        f"{req.id}: {req.request.get('name')} ({req.request.get('kind')}, "
        f"{req.request.get('format')}, {req.request.get('size')} bytes) — {req.state}"
    )
    print(f"  session {session.name}")
    print(f"  digest {req.status.get('digest')}")
    for c in req.status.get("checks", []):
        print(f"  {'ok' if c['passed'] else 'NO'}  {c['check']:<22} [{c['by']}] {c['evidence']}")
    for a in req.status.get("approvals", []):
        print(f"  approved by {a['name']} (ledger entry {a['entry']})")
    if "denial" in req.status:
        d = req.status["denial"]
        print(f"  denied by {d['name']}: {d['reason']}")
    if "delivered" in req.status:
        print(f"  delivered to {req.status['delivered']['artifact']}")
    for outcome in sorted((req.folder / "decisions").glob("*.outcome")):
        print(f"  queued decision {outcome.stem}: {outcome.read_text()}")
    for queued in sorted((req.folder / "decisions").glob("*.json")):
        print(f"  queued decision {queued.stem}: waiting for the sentry")
    return 0


def _decide(args: argparse.Namespace, decision: str) -> Any:
    from bedside.gateway.airlock import Airlock, owner_alive

    who, signer = _identity(args)
    reason = getattr(args, "reason", "") or ""
    session = _session(args)
    if owner_alive(session):
        Airlock.queue_decision(session, args.id, decision, who, signer, reason)
        print(
            f"{args.id}: {decision} by {who.name} queued; the sentry records it in the ledger "
            "(`bedside review show` reports the outcome)"
        )
        return None
    lock = Airlock.from_state(session)
    if decision == "deny":
        return lock.deny(args.id, who, reason, signer)
    return lock.approve(args.id, who, signer)


def _approve(args: argparse.Namespace) -> int:
    req = _decide(args, "approve")
    if req is None:
        return 0
    if req.state == "delivered":
        print(
            f"{req.id} approved by {', '.join(a['name'] for a in req.status['approvals'])}; "
            f"delivered to {req.status['delivered']['artifact']}"
        )
    else:
        print(
            f"{req.id}: approval {len(req.status['approvals'])} of "
            f"{req.status['approvals_required']} recorded"
        )
    return 0


def _deny(args: argparse.Namespace) -> int:
    req = _decide(args, "deny")
    if req is not None:
        print(f"{req.id} denied by {args.who}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from bedside.ledger.attestation import verify_release

    att = args.attestation or args.artifact.with_name(args.artifact.name + ".intoto.json")
    summary = verify_release(args.artifact, att, args.ledger, keys=args.key or None)
    print(
        f"OK {args.artifact.name}: sha256 {summary['digest']}, signed by {summary['key']}, "
        f"{summary['entries']} ledger entries included at size {summary['size']}; approvers: "
        f"{', '.join(summary['approvers']) or '(auto)'}"
    )
    return 0
