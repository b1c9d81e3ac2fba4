"""Builders shared by the ledger tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from bedside.ledger import Ledger, Signer, canonical_json, cosign
from bedside.ledger import entries as E

SESSION = "sess-0001"
ORIGIN = "hospital.example/bedside/sess-0001"


def new_session(
    path: Path,
    identities: dict[str, str],
    *,
    intent: dict | None = None,
    policy_id: str = "p",
    policy_digest: str = "sha256:00",
    kernel_env: str = "sha256:00",
    session: str = SESSION,
    origin: str = ORIGIN,
) -> Ledger:
    """A new session ledger holding its header only."""
    ledger = Ledger.create(path, session_id=session, origin=origin)
    ledger.append(
        E.header(
            session=session,
            origin=origin,
            intent={} if intent is None else intent,
            policy_id=policy_id,
            policy_digest=policy_digest,
            kernel_env=kernel_env,
            identities=identities,
        )
    )
    return ledger


def researcher_sig(researcher: Signer, msg_id: str, code: str) -> str:
    """What the researcher's extension puts in metadata.bedside.researcher_sig, byte for byte
    as extension/mirror.py (`SessionMirror.observe_request`) computes it."""
    digest = "sha256:" + hashlib.sha256(code.encode("utf-8")).hexdigest()
    body = canonical_json({"msg_id": msg_id, "code_digest": digest})
    return base64.b64encode(researcher.sign(body)).decode("ascii")


def build_session(
    path: Path,
    custodian: Signer,
    researcher: Signer,
    *,
    cells: int = 3,
    seal: bool = True,
    sign_requests: bool = True,
) -> Ledger:
    """A session: header, per cell an execute request, a released and a blocked output, a
    cosigned checkpoint after each cell, metering, a checkpoint, the seal and a final cosigned
    checkpoint (17 entries for 3 cells)."""
    ledger = new_session(
        path,
        {"custodian": custodian.verifier_key, "researcher": researcher.verifier_key},
        intent={"purpose": "readmission model", "cohort": "adults"},
        policy_id="st-marys-v1",
        policy_digest="sha256:" + "ab" * 32,
        kernel_env="sha256:" + "cd" * 32,
    )
    for c in range(cells):
        msg = f"exec-{c}"
        code = f"print({c} * 2)"
        sig = researcher_sig(researcher, msg, code) if sign_requests else None
        entry, opening = E.execute_request(
            session=SESSION, msg_id=msg, code=code, researcher_sig=sig
        )
        ledger.append(entry, opening=opening)
        entry, opening = E.output(
            session=SESSION,
            msg_id=f"out-{c}",
            parent=msg,
            channel="iopub",
            msg_type="stream",
            content={"name": "stdout", "text": f"{c * 2}\n"},
            decision="released",
            rule="pass",
            layer="sentry",
        )
        ledger.append(entry, opening=opening)
        entry, opening = E.output(
            session=SESSION,
            msg_id=f"blk-{c}",
            parent=msg,
            channel="iopub",
            msg_type="stream",
            content={"name": "stdout", "text": "MRN 12345678\n"},
            decision="blocked",
            rule="identifier",
            layer="sentry",
        )
        ledger.append(entry, opening=opening)
        ledger.append_checkpoint(cosign(ledger.sign_checkpoint(custodian), researcher))
    ledger.append(E.metering(session=SESSION, counters={"cells": cells, "egress_bytes": 42}))
    if seal:
        ledger.append_checkpoint(ledger.sign_checkpoint(custodian))
        ledger.append(E.seal(session=SESSION))
        # The final checkpoint covers the seal; the researcher keeps a copy of it.
        ledger.append_checkpoint(cosign(ledger.sign_checkpoint(custodian), researcher))
    ledger.flush()
    return ledger
