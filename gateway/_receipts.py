"""The hospital copy of the session ledger, written by the sentry, and the receipts it signs.

The sentry is the ledger's author: it appends the header, each execute request, each output
message that leaves (released or blocked), cosigned checkpoints, metering and the seal. Each
message that leaves carries a receipt with the entries appended since the previous receipt, the
ledger's size and root, signed with the custodian's Ed25519 key (see docs/dev/contracts.md).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785

from bedside.ledger import Ledger, Signer, commit
from bedside.policy.decision import Decision

CODE_DOMAIN = "bedside/code/v1"
OUTPUT_DOMAIN = "bedside/output/v1"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def committed_bytes(
    channel: str, msg_type: str, content: dict[str, Any], buffers: list[bytes]
) -> bytes:
    """The bytes a ledger entry commits to for one message (contract: committed output bytes)."""
    return rfc8785.dumps(
        {
            "channel": channel,
            "msg_type": msg_type,
            "content": content,
            "buffers": [hashlib.sha256(bytes(b)).hexdigest() for b in buffers],
        }
    )


class HospitalLedger:
    """The sentry's ledger: appends entries and signs receipts and checkpoints."""

    def __init__(self, path: Path, *, session_id: str, origin: str, signer: Signer) -> None:
        self.path = path
        self.session_id = session_id
        self.signer = signer
        self.key = signer.verifier_key
        self.ledger = Ledger.create(path, session_id=session_id, origin=origin)
        # Entries appended since the last receipt: (index, entry, public salt or None).
        self._pending: list[dict[str, Any]] = []
        self.has_header = False
        self.last_checkpoint: str | None = None

    @property
    def size(self) -> int:
        return int(self.ledger.size)

    def _entry(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"v": 1, "kind": kind, "ts": now(), "session": self.session_id, **fields}

    def append(
        self,
        entry: dict[str, Any],
        *,
        opening: dict[str, Any] | None = None,
        public_salt: bytes | None = None,
    ) -> int:
        index = self.ledger.append(entry, opening=opening)
        item: dict[str, Any] = {"index": index, "entry": entry}
        if public_salt is not None:
            item["salt"] = b64(public_salt)
        self._pending.append(item)
        return int(index)

    # -- entries --------------------------------------------------------------------------------

    def header(
        self,
        *,
        intent: dict[str, Any] | None,
        policy_id: str,
        policy_digest: str,
        environment_digest: str,
        researcher_key: str | None,
        budget: dict[str, Any],
        sandbox: bool,
    ) -> tuple[int, dict[str, Any]]:
        entry = self._entry(
            "header",
            intent=intent,
            policy={"id": policy_id, "digest": policy_digest},
            environment_digest=environment_digest,
            identities={"custodian": self.key, "researcher": researcher_key},
            budget=budget,
            sandbox=sandbox,
        )
        index = self.append(entry)
        self.has_header = True
        return index, entry

    def execute_request(self, msg_id: str, code: str, researcher_sig: str | None) -> int:
        commitment, salt = commit(CODE_DOMAIN, code.encode())
        entry = self._entry(
            "execute_request", msg_id=msg_id, code=commitment, researcher_sig=researcher_sig
        )
        opening = {"domain": CODE_DOMAIN, "salt": b64(salt), "content": code}
        return self.append(entry, opening=opening)

    def output(
        self,
        *,
        msg_id: str,
        parent: str,
        channel: str,
        msg_type: str,
        committed: bytes,
        decision: Decision,
        size: int,
    ) -> int:
        """An output entry; a blocked output's salt stays in the private openings file only."""
        commitment, salt = commit(OUTPUT_DOMAIN, committed)
        entry = self._entry(
            "output",
            msg_id=msg_id,
            parent=parent,
            channel=channel,
            msg_type=msg_type,
            content=commitment,
            decision=decision.action.value,
            rule=decision.rule,
            layer=decision.layer.value,
            bytes=size,
        )
        opening = {
            "domain": OUTPUT_DOMAIN,
            "salt": b64(salt),
            "content": committed.decode("utf-8", errors="replace"),
        }
        return self.append(entry, opening=opening, public_salt=None if decision.blocked else salt)

    def simple(self, kind: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        entry = self._entry(kind, **fields)
        return self.append(entry), entry

    def metering(self, record: dict[str, Any]) -> int:
        """A metering record signed on its own by the custodian key (the settlement reference)."""
        body = {"session": self.session_id, **record}
        sig = b64(self.signer.sign(rfc8785.dumps(body)))
        index, _ = self.simple("metering", record=body, key=self.key, sig=sig)
        return index

    # -- checkpoints and receipts ---------------------------------------------------------------

    def sign_checkpoint(self) -> str:
        note = self.ledger.sign_checkpoint(self.signer)
        self.last_checkpoint = str(note)
        return self.last_checkpoint

    def receipt(self, msg_id: str, committed: bytes, *, checkpoint: str | None = None) -> dict:
        body: dict[str, Any] = {
            "v": 1,
            "msg_id": msg_id,
            "digest": "sha256:" + hashlib.sha256(committed).hexdigest(),
            "entries": self._pending,
            "size": self.size,
            "root": self.ledger.root().hex(),
            "key": self.key,
        }
        if checkpoint is not None:
            body["checkpoint"] = checkpoint
        self._pending = []
        body["sig"] = b64(self.signer.sign(rfc8785.dumps(body)))
        return body

    def close(self) -> None:
        close = getattr(self.ledger, "close", None)
        if close is not None:
            close()
