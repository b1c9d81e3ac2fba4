"""A stand-in for the hospital side that speaks only the receipt protocol (docs/dev/contracts.md).

It exists so the researcher-side mirror can be tested in isolation, message by message, with
tampering the real sentry never does. The integration tests run the real sentry; this one writes
its ledger with `bedside.ledger` and signs receipts exactly as the contract says.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from bedside.ledger import Ledger, Signer, canonical_json, entries


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class StandInHospital:
    def __init__(self, directory: Path, *, signer: Signer | None = None) -> None:
        self.signer = signer or Signer.generate("hospital")
        self.session = uuid.uuid4().hex
        self.origin = f"test.invalid/bedside/{self.session}"
        self.ledger = Ledger.create(
            directory / "hospital.ledger", session_id=self.session, origin=self.origin
        )
        self.pending: list[dict[str, Any]] = []
        self.researcher_key = ""
        self._header: dict[str, Any] = {}
        # {index: (salt, content)} of the openings a receipt made public, as the sentry keeps
        self.public: dict[int, tuple[str, str]] = {}
        # the receipt version the researcher asked for with its intent (1 until it asks)
        self.receipts = 1

    def _append(self, entry: dict[str, Any], opening: dict[str, Any] | None, salt: str | None):
        index = self.ledger.append(entry, opening=opening)
        item: dict[str, Any] = {"index": index, "entry": self.ledger.entry(index)}
        if salt is not None:
            item["salt"] = salt
            assert opening is not None
            self.public[index] = (salt, opening["content"])
        self.pending.append(item)

    def message(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any],
        *,
        checkpoint: bool = False,
        record: bool = True,
    ) -> dict[str, Any]:
        msg_id = uuid.uuid4().hex
        committed = entries.output_committed_bytes(
            channel=channel, msg_type=msg_type, content=content
        )
        if record:
            entry, opening = entries.output_from_bytes(
                session=self.session,
                msg_id=msg_id,
                parent=parent.get("msg_id", ""),
                channel=channel,
                msg_type=msg_type,
                committed=committed,
                decision="released",
                rule="",
                layer="sentry",
            )
            self._append(entry, opening, opening["salt"])
        receipt: dict[str, Any] = {
            "v": 1,
            "msg_id": msg_id,
            "digest": "sha256:" + hashlib.sha256(committed).hexdigest(),
            "entries": self.pending,
            "size": self.ledger.size,
            "root": self.ledger.root().hex(),
            "key": self.signer.verifier_key,
        }
        if record and self.receipts >= 2:
            # as the sentry: this message's own salted entry binds the bytes, no digest
            receipt["v"] = 2
            del receipt["digest"]
        if checkpoint:
            receipt["checkpoint"] = self.ledger.sign_checkpoint(self.signer)
        self.pending = []
        receipt["sig"] = b64(self.signer.sign(canonical_json(receipt)))
        return {
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session},
            "parent_header": parent,
            "metadata": {"bedside": {"receipt": receipt}},
            "content": content,
            "channel": channel,
            "buffers": [],
        }

    def intent(self, request: dict[str, Any], *, refuse: str = "") -> dict[str, Any]:
        """As the sentry answers: the same intent sent again gets the same answer (the header
        in its content; its receipt carries only entries appended since the last one)."""
        intent = request["content"]["intent"]
        if self.ledger.size and intent == self.ledger.entry(0)["intent"]:
            content = {"status": "ok", "session": self.session, "header": self._header}
            return self.message(
                "shell", "bedside_intent_reply", content, request["header"], record=False
            )
        if refuse:
            content = {"status": "error", "ename": "IntentRefused", "evalue": refuse}
            return self.message(
                "shell", "bedside_intent_reply", content, request["header"], record=False
            )
        self.researcher_key = intent["researcher_key"]
        self.receipts = min(int(request["content"].get("receipts", 1)), 2)
        header = entries.header(
            session=self.session,
            origin=self.origin,
            intent=intent,
            policy_id=intent.get("policy_id", "demo"),
            policy_digest="sha256:" + "0" * 64,
            kernel_env="sha256:" + "1" * 64,
            identities={"custodian": self.signer.verifier_key, "researcher": self.researcher_key},
            grant={"declared": True},
        )
        self._append(header, None, None)
        self._header = {"index": 0, "entry": self.ledger.entry(0)}
        content = {"status": "ok", "session": self.session, "header": self._header}
        return self.message(
            "shell", "bedside_intent_reply", content, request["header"], record=False
        )

    def execute(self, request: dict[str, Any], text: str) -> list[dict[str, Any]]:
        """The messages a kernel sends for one cell that prints `text`."""
        sig = request["metadata"]["bedside"]["researcher_sig"]
        entry, opening = entries.execute_request(
            session=self.session,
            msg_id=request["header"]["msg_id"],
            code=request["content"]["code"],
            researcher_sig=sig,
        )
        self._append(entry, opening, opening["salt"])  # as the sentry: the salt goes along
        parent = request["header"]
        return [
            self.message("iopub", "status", {"execution_state": "busy"}, parent),
            self.message("iopub", "stream", {"name": "stdout", "text": text}, parent),
            self.message("shell", "execute_reply", {"status": "ok", "execution_count": 1}, parent),
            self.message("iopub", "status", {"execution_state": "idle"}, parent, checkpoint=True),
        ]

    def cosign(self, request: dict[str, Any]) -> dict[str, Any]:
        self.ledger.append_checkpoint(request["content"]["checkpoint"])
        item_index = self.ledger.size - 1
        self.pending.append({"index": item_index, "entry": self.ledger.entry(item_index)})
        return self.message(
            "shell", "bedside_cosign_reply", {"status": "ok"}, request["header"], record=False
        )

    def seal(self, request: dict[str, Any]) -> dict[str, Any]:
        """As the sentry seals: a checkpoint signed by the custodian alone, then the seal."""
        note = self.ledger.sign_checkpoint(self.signer)
        index = self.ledger.append_checkpoint(note)
        self.pending.append({"index": index, "entry": self.ledger.entry(index)})
        self._append(entries.seal(session=self.session, reason="researcher"), None, None)
        content = {"status": "ok", "seal": self.ledger.size - 1}
        return self.message("shell", "bedside_seal_reply", content, request["header"], record=False)

    def entries(self, request: dict[str, Any]) -> dict[str, Any]:
        """The sentry's answer to `bedside_entries_request`: public openings go along."""
        start, end = request["content"]["from"], request["content"]["to"]
        items: list[dict[str, Any]] = []
        for i in range(start, end):
            item: dict[str, Any] = {"index": i, "entry": self.ledger.entry(i)}
            if i in self.public:
                item["salt"], item["content"] = self.public[i]
            items.append(item)
        return self.message(
            "shell",
            "bedside_entries_reply",
            {"status": "ok", "entries": items, "size": self.ledger.size},
            request["header"],
            record=False,
        )


@pytest.fixture
def standin() -> type[StandInHospital]:
    return StandInHospital
