"""The researcher's copy of a session ledger, kept in step with the hospital's through receipts.

`SessionMirror` sees every message of one kernel as parsed JSON, in both directions. Requests
going to the hospital are signed with the researcher's key; every message coming back must carry
a receipt signed by the custodian (docs/dev/contracts.md, "Sentry ↔ extension"): the mirror checks
the signature, opens each released output's commitment with its salt, appends the entries the
sentry wrote and compares size and root. Nothing here imports Jupyter, so the websocket
connection, the headless runner and the tests share one implementation.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from bedside.errors import Error, LedgerError, LedgerIntegrityError, SignatureError
from bedside.ledger import (
    DOMAIN_CODE,
    DOMAIN_OUTPUT,
    Checkpoint,
    Ledger,
    Signer,
    Verifier,
    canonical_json,
    cosign,
    open_checkpoint,
    open_commitment,
)
from bedside.ledger import entries as E
from bedside.ledger.entries import output_committed_bytes
from bedside.ledger.merkle import Frontier, hash_leaf
from bedside.ledger.note import parse_note
from bedside.ledger.openings import Opening, PreparedOpening

log = logging.getLogger("bedside.extension")

#: Researcher -> hospital control requests; the sentry consumes them and never forwards them.
CONTROL_REPLIES = {
    "bedside_intent_reply",
    "bedside_cosign_reply",
    "bedside_seal_reply",
    "bedside_status_reply",
    "bedside_entries_reply",
    "bedside_release_status_reply",
    "bedside_release_fetch_reply",
}

#: How long the server waits before cosigning a cell's checkpoint (`SessionMirror.cosign_delay`):
#: cells run back to back then share one cosign round trip, which would otherwise cost the
#: server, the gateway and the sentry about as much CPU per cell as the cell's own messages.
COSIGN_DELAY = 0.5

#: Outputs at least this long have their opening's base64 and record hash made in a worker
#: thread (`_OPENINGS`) while this one checks the receipt's digest (version 1) and the
#: commitment (hashlib lets go of the GIL on large buffers), and their ledger entry, with that
#: opening, written just after the message has gone on to the browser (`SessionMirror.settle`),
#: its place in the tree checked before (`SessionMirror._defer`).
PREPARE_MIN_BYTES = 256 * 1024

#: One worker: a message's opening is prepared while the event loop thread checks that message.
_OPENINGS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bedside-opening")

#: The highest receipt version this side reads, asked for with the intent. Version 2 leaves out
#: the digest of the message's committed bytes when the receipt carries the message's own output
#: entry with its salt: opening that commitment with the same bytes binds them (`_check_receipt`).
RECEIPTS = 2

#: How long a gap in our copy may last before we ask the sentry for the missing entries.
#: Receipts on iopub and shell overtake each other by milliseconds; a gap that outlives this
#: is an entry whose receipt went to a connection we do not hold (Enterprise Gateway's own
#: kernel_info "nudge" channels), and it would otherwise stall our copy for good.
GAP_GRACE = 0.5


def ask_delay(asks: int) -> float:
    """How long to wait before asking the hospital for missing entries after `asks` asks (a
    reply may be lost too): 0.5 s, 1 s, 2 s, ... at most 8 s."""
    return GAP_GRACE * 2 ** min(asks, 4)


# Session states, as the REST API and the headless runner report them.
PENDING = "pending-intent"
ACTIVE = "active"
REFUSED = "refused"
UNMONITORED = "unmonitored"
INTERRUPTED = "interrupted"
EXHAUSTED = "budget-exhausted"
SEALED = "sealed"


def code_digest(code: str) -> str:
    return "sha256:" + hashlib.sha256(code.encode("utf-8")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def new_message(msg_type: str, content: dict[str, Any], *, session: str) -> dict[str, Any]:
    """A Jupyter shell message in the websocket JSON form."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "bedside",
            "session": session,
            "date": _now(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


class _ReceiptKey:
    """The custodian's key as every receipt is checked against it: its verifier key text made
    once, and Ed25519 verification by libsodium (PyNaCl), in about half the time of OpenSSL's
    through `Verifier.verify`. libsodium accepts no signature OpenSSL rejects (both check the
    same cofactorless equation against R's encoding and refuse S >= L; libsodium also refuses
    small-order keys and R), so nothing passes here that the ledger's verifier would refuse."""

    __slots__ = ("custodian", "vkey", "_key")

    def __init__(self, custodian: Verifier) -> None:
        self.custodian = custodian
        self.vkey = custodian.vkey
        self._key = VerifyKey(custodian.public)

    def verify(self, msg: bytes, sig: bytes) -> None:
        try:
            self._key.verify(msg, sig)
        except (CryptoError, ValueError, TypeError) as exc:
            raise SignatureError(f"signature by {self.custodian.name!r} does not verify") from exc


class _PendingOpening:
    """A large output's opening while a worker makes its base64 and record hash: what is
    staged, resolved when the entry is appended (`SessionMirror._append`), so that waiting for
    the worker is never on the path of the message to the browser."""

    __slots__ = ("index", "salt", "committed", "future")

    def __init__(
        self, index: int, salt: bytes, committed: bytes, future: Future[PreparedOpening]
    ) -> None:
        self.index, self.salt, self.committed, self.future = index, salt, committed, future

    def resolve(self) -> Opening:
        if self.future.cancel():
            # The worker has not even started on it (on a loaded machine it may wait for a core
            # longer than this thread took to check the message and send it on): waiting would
            # add that wait to the path of the cell's next messages, so the ledger writes the
            # record from the raw bytes here instead, the same bytes as the worker's.
            return Opening(self.index, "content", DOMAIN_OUTPUT, self.salt, self.committed)
        try:
            prepared = self.future.result()
        except Exception:  # noqa: BLE001 - (memory) made here instead, the same bytes
            return Opening(self.index, "content", DOMAIN_OUTPUT, self.salt, self.committed)
        prepared.index, prepared.salt = self.index, self.salt
        return prepared


@dataclass
class _Deferred:
    """An output checked and shown verified whose entry is written just after (`settle`)."""

    index: int
    entry: dict[str, Any]
    opening: _PendingOpening
    leaf: bytes  # the leaf hash `_defer` checked the hospital's root with
    msg: dict[str, Any]  # header and channel, to name the message if writing it fails


def _own_output(items: list[Any], msg_id: object) -> bool:
    """Whether a receipt's entries hold the output entry of message `msg_id` with its salt
    (whose commitment `SessionMirror._opening` then opens with the message's bytes)."""
    for item in items:
        entry = item.get("entry") if type(item) is dict else None
        if (
            type(entry) is dict
            and isinstance(item.get("salt"), str)
            and item["salt"]
            and entry.get("kind") == E.OUTPUT
            and entry.get("msg_id") == msg_id
        ):
            return True
    return False


class _NotYet(Exception):
    """A checkpoint for entries that are still on their way."""


@dataclass
class Verdict:
    """What the mirror concluded about one message from the hospital."""

    verified: bool
    reason: str = ""
    consumed: bool = False  # a control reply: not for the browser


class SessionMirror:
    """One kernel's session as the researcher sees it: intent, ledger copy, checkpoints.

    `send` is set by whoever holds the websocket to the gateway (the server connection or the
    headless runner) so that control requests (cosign, seal) can be sent from anywhere.
    """

    def __init__(
        self,
        *,
        kernel_id: str,
        directory: Path,
        signer: Signer,
        intent: dict[str, Any] | None,
        custodian_key: str = "",
    ) -> None:
        self.kernel_id = kernel_id
        self.directory = directory
        self.signer = signer
        self.intent = intent
        self.custodian: Verifier | None = Verifier(custodian_key) if custodian_key else None
        self.client_session = uuid.uuid4().hex
        self.state = PENDING
        self.reason = ""
        self.session_id = ""
        self._ledger: Ledger | None = None
        # the right edge of our copy's tree, to check a deferred entry's place (`_defer`)
        self._frontier = Frontier()
        self._deferred: _Deferred | None = None
        self.unverified = 0
        self.verified = 0
        self.last_checkpoint: str | None = None
        self.anchor: dict[str, Any] | None = None
        self.metering: dict[str, Any] | None = None
        self.policy: dict[str, Any] | None = None  # {id, digest} from the ledger header
        self.cells_run = 0  # execute requests in the ledger: the cells budget used
        # outputs not plainly released, {decision: {layer: n}}: who blocked or redacted what
        self.outputs_stopped: dict[str, dict[str, int]] = {}
        self.send: Callable[[dict[str, Any]], None] | None = None
        # set with `send`: runs a callback after a delay on the connection's event loop
        self.schedule: Callable[[float, Callable[[], None]], object] | None = None
        # > 0 (with `schedule`): cosign checkpoints after this many seconds, the newest only
        self.cosign_delay = 0.0
        self._due: str | None = None  # the newest checked checkpoint not yet cosigned
        self._cosign_armed = False  # a timer will call cosign_due
        self._receipt_keys: _ReceiptKey | None = None
        # (committed bytes, their opening being prepared): see PREPARE_MIN_BYTES
        self._preparing: tuple[bytes, Future[PreparedOpening]] | None = None
        self._gap_watch: int | None = None
        self._gap_asks = 0
        # Our execute requests' code and signature, by msg_id, kept until the receipt (or
        # entries reply) that carries the request's entry has been checked against them and
        # its code opening made (`_opening`): not dropped with the cell's reply, which can
        # overtake that receipt (shell and iopub take different sockets through the gateway).
        self._code: dict[str, str] = {}
        self._sigs: dict[str, str] = {}
        self._pending_cells: set[str] = set()
        self._waiters: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._staged: dict[int, tuple[dict[str, Any], Opening | _PendingOpening | None]] = {}
        self._heads: list[tuple[int, str]] = []
        self._notes: list[str] = []
        self._saved_at = 0.0
        self._signed_intent: dict[str, Any] = {}
        self._intent_request: dict[str, Any] | None = None
        self.intent_msg_id = ""
        # the connection's timer for the hospital's answer to the intent (one per session)
        self.intent_timer: object | None = None
        self._late_intent = False  # unmonitored only because the answer is late
        directory.mkdir(parents=True, exist_ok=True)
        self._save()

    # -- the ledger copy -------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger | None:
        """Our copy of the session ledger, with every checked entry in it: an output that went
        on to the browser before its entry was written (`_defer`) is written first."""
        if self._deferred is not None:
            self.settle()
        return self._ledger

    @ledger.setter
    def ledger(self, ledger: Ledger | None) -> None:
        self._ledger = ledger

    def settle(self) -> None:
        """Write the entry and opening of the large output checked last, if it is still to be
        written (`_defer`); the connection calls this as soon as the message has gone on to
        the browser, and every other use of the ledger copy does it first."""
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return
        try:
            self._append(deferred.index, deferred.entry, deferred.opening)
            ledger = self._ledger
            if ledger is None or ledger.leaf_hash(deferred.index) != deferred.leaf:
                # Only if the ledger wrote other bytes than `_defer` hashed (a bug, not the
                # hospital): later receipts' roots will not match either, so say so now.
                raise LedgerIntegrityError(
                    "the entry was written with other bytes than its receipt was checked with",
                    index=deferred.index,
                )
            self._drain()
        except Error as exc:
            log.error("bedside: kernel %s: a message shown verified: %s", self.kernel_id, exc)
            self._record_unverified(deferred.msg, exc.diagnostics())

    # -- paths and persistence -------------------------------------------------------------

    @property
    def ledger_path(self) -> Path:
        return self.directory / "session.ledger"

    @property
    def openings_path(self) -> Path:
        return self.directory / "session.openings"

    @property
    def unverified_log(self) -> Path:
        return self.directory / "unverified.jsonl"

    def status(self) -> dict[str, Any]:
        ledger = self.ledger
        return {
            "kernel_id": self.kernel_id,
            "session": self.session_id,
            "state": self.state,
            "reason": self.reason,
            "intent": self.intent,
            "custodian_key": self.custodian.vkey if self.custodian else None,
            "researcher_key": self.signer.verifier_key,
            "entries": ledger.size if ledger else 0,
            "root": ledger.root().hex() if ledger and ledger.size else None,
            "last_checkpoint": self.last_checkpoint,
            "anchor": self.anchor,
            "metering": self.metering,
            "policy": self.policy,
            "cells_run": self.cells_run,
            "outputs_stopped": self.outputs_stopped,
            "verified_messages": self.verified,
            "unverified_messages": self.unverified,
            "cells_in_flight": sorted(self._pending_cells),
            "entries_in_flight": len(self._staged),
        }

    def _save(self) -> None:
        tmp = self.directory / "status.json.tmp"
        tmp.write_text(json.dumps(self.status(), indent=1, sort_keys=True))
        tmp.replace(self.directory / "status.json")

    def save_status(self) -> None:
        """Write status.json now (after a change made from outside, such as an anchor)."""
        self._save()

    def close(self) -> None:
        if self.ledger is not None:
            try:
                self.ledger.flush()
            except LedgerError:
                pass
            self.ledger.close()
            self.ledger = None
        self._save()

    # -- researcher -> hospital ------------------------------------------------------------

    @property
    def intent_sent(self) -> bool:
        return self._intent_request is not None

    def intent_request(self) -> dict[str, Any]:
        """The first message of a session: the declared intent, with the researcher's key.

        The same message every time it is asked for: it is sent again on each new connection
        until the hospital answers, and the sentry answers the same intent the same way.
        """
        if self._intent_request is not None:
            return self._intent_request
        intent = {k: v for k, v in (self.intent or {}).items() if k != "researcher_sig"}
        intent["researcher_key"] = self.signer.verifier_key
        # Signed inside the intent, so the ledger header (entry 0) carries the signature.
        intent["researcher_sig"] = _b64(self.signer.sign(canonical_json(intent)))
        self._signed_intent = intent
        # `receipts` beside the intent, not in it: the header records the intent as signed.
        content = {"intent": intent, "receipts": RECEIPTS}
        msg = new_message("bedside_intent_request", content, session=self.client_session)
        self.intent_msg_id = msg["header"]["msg_id"]
        self._intent_request = msg
        return msg

    def control_request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        return new_message(msg_type, content, session=self.client_session)

    def observe_request(self, msg: dict[str, Any]) -> None:
        """Sign an execute request in place (metadata.bedside.researcher_sig)."""
        header = msg.get("header") or {}
        if header.get("msg_type") != "execute_request":
            return
        msg_id = str(header.get("msg_id", ""))
        code = str((msg.get("content") or {}).get("code", ""))
        digest = code_digest(code)
        sig = _b64(self.signer.sign(canonical_json({"msg_id": msg_id, "code_digest": digest})))
        meta = msg.setdefault("metadata", {})
        meta.setdefault("bedside", {}).update({"researcher_sig": sig, "code_digest": digest})
        self._code[msg_id] = code
        self._sigs[msg_id] = sig
        self._pending_cells.add(msg_id)

    # -- hospital -> researcher ------------------------------------------------------------

    def observe_reply(self, msg: dict[str, Any]) -> Verdict:
        """Check one message from the hospital; mark it and record what it carries.

        A large output may leave its entry to be written by `settle` (the connection calls it
        once the message has gone on); everything else is recorded before this returns.
        """
        self.settle()
        header = msg.get("header") or {}
        msg_type = str(header.get("msg_type", ""))
        parent = str((msg.get("parent_header") or {}).get("msg_id", ""))
        state_before = self.state
        is_intent_reply = msg_type == "bedside_intent_reply" or (
            bool(parent) and parent == self.intent_msg_id
        )
        if is_intent_reply and self.awaiting_intent:
            self._late_intent = False
            self._on_intent_reply(msg)
        try:
            self._check_receipt(msg)
            if is_intent_reply:
                self._stage_header(msg)
        except Error as exc:
            verdict = Verdict(False, exc.diagnostics())
            self._record_unverified(msg, verdict.reason)
            state = (msg.get("content") or {}).get("execution_state")
            if msg_type == "status" and state in ("restarting", "dead"):
                # The gateway itself reports the kernel restarting or dead (no receipt: it is
                # not the sentry's message); the hospital's session ends here.
                self.mark_interrupted(f"the gateway reports the kernel {state}")
        else:
            verdict = Verdict(True)
            self.verified += 1
        if msg_type in CONTROL_REPLIES:
            verdict.consumed = True
            self._on_control_reply(msg_type, msg)
        elif msg_type == "execute_reply" and parent in self._pending_cells:
            self._pending_cells.discard(parent)
            if self.state == UNMONITORED and not self._late_intent:
                # no receipt will bring the request's entry to this copy
                self._code.pop(parent, None)
                self._sigs.pop(parent, None)
            content = msg.get("content") or {}
            rule = ((msg.get("metadata") or {}).get("bedside") or {}).get("rule")
            if content.get("status") == "error" and rule == "session_budget":
                self.state, self.reason = EXHAUSTED, str(content.get("evalue", ""))
        waiter = self._waiters.pop(parent, None)
        if waiter is not None:
            waiter(msg)
        meta = msg.setdefault("metadata", {})
        if not isinstance(meta.get("bedside"), dict):
            meta["bedside"] = {}
        meta["bedside"]["verified"] = verdict.verified
        if not verdict.verified:
            meta["bedside"]["unverified_reason"] = verdict.reason
        # status.json is for sessions no longer in memory (the live status is in memory):
        # write it on every change of state, and after cells at most once a second.
        now = time.monotonic()
        if (
            state_before != self.state
            or not verdict.verified
            or (msg_type == "execute_reply" and now - self._saved_at > 1.0)
        ):
            self._save()
            self._saved_at = now
        return verdict

    def expect_reply(self, msg_id: str, callback: Callable[[dict[str, Any]], None]) -> None:
        self._waiters[msg_id] = callback

    def mark_interrupted(self, reason: str) -> None:
        """The gateway went away; the ledger stays valid up to the last receipt."""
        if self.state in (SEALED, REFUSED, PENDING):
            return  # nothing ran yet (or nothing can): a retry may still open the session
        if self.state != INTERRUPTED:
            self.state, self.reason = INTERRUPTED, reason
            log.warning("bedside session %s interrupted: %s", self.kernel_id, reason)
        if self.ledger is not None:
            self.ledger.flush()
        self._save()

    @property
    def awaiting_intent(self) -> bool:
        """No answer to the intent yet: pending, or given up on by a timer but still asked."""
        return self.state == PENDING or (self.state == UNMONITORED and self._late_intent)

    def mark_unmonitored(self, reason: str, *, waiting: bool = False) -> None:
        """Let the session run unverified. `waiting`: the intent was sent and the hospital is
        slow (a kernel starting on a loaded machine), so its answer, when it comes, still makes
        the session active."""
        if self.state == PENDING:
            self._late_intent = waiting
            self.state, self.reason = UNMONITORED, reason
            log.warning("bedside session %s is not monitored: %s", self.kernel_id, reason)
            self._save()

    def _on_intent_reply(self, msg: dict[str, Any]) -> None:
        content = msg.get("content") or {}
        if content.get("status") != "ok":
            self.state = REFUSED
            self.reason = str(
                content.get("reason") or content.get("evalue") or content.get("message") or content
            )
            log.error("bedside: the hospital refused the session intent: %s", self.reason)
            return
        self.session_id = str(content.get("session", self.session_id))
        receipt = ((msg.get("metadata") or {}).get("bedside") or {}).get("receipt") or {}
        key = str(content.get("custodian_key") or receipt.get("key") or "")
        if self.custodian is None and key:
            self.custodian = Verifier(key)  # pinned for the rest of the session
        elif self.custodian is not None and key and key != self.custodian.vkey:
            self.state = REFUSED
            self.reason = (
                f"the hospital signs with custodian key {key}, but this server trusts "
                f"{self.custodian.vkey} (Bedside.custodian_key)"
            )
            return
        self.state, self.reason = ACTIVE, ""

    def _stage_header(self, msg: dict[str, Any]) -> None:
        """The header from an (authenticated) intent reply, when its receipt lacks it.

        The sentry sends the header entry with the receipt of its first answer; an answer given
        again (that first one went to a connection the browser dropped) carries it only in its
        content, which the receipt binds (its digest, or its own output entry's commitment).
        """
        header = (msg.get("content") or {}).get("header")
        if self.ledger is not None or 0 in self._staged or not isinstance(header, dict):
            return
        if header.get("index") == 0 and isinstance(header.get("entry"), dict):
            self._stage({"index": 0, "entry": header["entry"]}, msg, b"")
            self._drain()

    def _on_control_reply(self, msg_type: str, msg: dict[str, Any]) -> None:
        content = msg.get("content") or {}
        if content.get("status") != "ok":
            log.warning("bedside: %s failed: %s", msg_type, content.get("evalue", content))
            return
        if msg_type == "bedside_seal_reply":
            self.state = SEALED
            if isinstance(content.get("used"), dict):
                self.metering = {"used": content["used"]}
            if self.ledger is not None:
                self.ledger.flush()
        elif msg_type == "bedside_status_reply" and isinstance(content.get("used"), dict):
            self.metering = {"used": content["used"], "budget": content.get("budget")}
        elif msg_type == "bedside_entries_reply":
            self._fill(msg, content.get("entries") or [])

    # -- gaps ------------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """No entries waiting to be appended and no checkpoint waiting to be cosigned."""
        self.settle()
        return not self._staged and not self._notes and self._due is None

    def gap(self) -> tuple[int, int] | None:
        """The first run of indexes we lack while later entries wait: (from, to)."""
        size = 0 if self.ledger is None else self.ledger.size
        if not self._staged or size in self._staged:
            return None
        return size, min(i for i in self._staged if i > size)

    def _watch_gap(self) -> None:
        if self._gap_watch is not None or self.schedule is None:
            return
        if self.state in (REFUSED, INTERRUPTED):
            return  # nobody left to answer
        gap = self.gap()
        if gap is None:
            self._gap_asks = 0
            return
        self._gap_watch = gap[0]
        self.schedule(ask_delay(self._gap_asks), self._check_gap)

    def _check_gap(self) -> None:
        start, self._gap_watch = self._gap_watch, None
        gap = self.gap()
        if gap is None or gap[0] != start or self.send is None:
            self._watch_gap()
            return
        self._gap_asks += 1
        if self.ask_entries(*gap):
            self._watch_gap()  # asks again if the reply is lost too

    def ask_entries(self, start: int, to: int) -> bool:
        """Ask the hospital for entries `start` up to (not including) `to`: a gap, or entries
        written at the hospital that no message has carried to us yet. The reply is staged
        like receipts (`_fill`). False when there is no connection to ask on."""
        if self.send is None:
            return False
        log.info("bedside: asking the hospital for entries %d..%d of %s", start, to, self.kernel_id)
        try:
            self.send(self.control_request("bedside_entries_request", {"from": start, "to": to}))
        except Exception as exc:  # noqa: BLE001 - the connection is gone; nothing to ask
            log.warning("bedside: cannot ask for missing entries: %s", exc)
            return False
        return True

    def _fill(self, msg: dict[str, Any], items: list[Any]) -> None:
        """Entries the sentry sent on request: staged like a receipt's, then proven by the
        signed roots and checkpoints that follow. An entry whose receipt carried a salt comes
        with its opening (`salt`, `content`), checked against its commitment here, so that
        our openings open it as if its message had reached us."""
        try:
            for item in items:
                if not isinstance(item, dict):
                    raise LedgerIntegrityError("an entries reply item is not an object")
                index = item.get("index")
                size = 0 if self.ledger is None else self.ledger.size
                if not isinstance(index, int) or index < size:
                    continue
                staged = self._staged.get(index)
                if staged is not None and (staged[1] is not None or "salt" not in item):
                    continue
                content = item.get("content")
                if "salt" in item and isinstance(content, str):
                    try:
                        committed = base64.b64decode(content, validate=True)
                    except ValueError as exc:
                        raise LedgerIntegrityError(
                            "an entries reply opening is not base64", index=index
                        ) from exc
                    fill = {"index": index, "entry": item.get("entry"), "salt": item["salt"]}
                    self._stage(fill, msg, committed, fetched=True)
                else:
                    self._stage({"index": index, "entry": item.get("entry")}, msg, b"")
            self._drain()
        except Error as exc:
            self._record_unverified(msg, exc.diagnostics())

    def _cosign_checkpoint(self, note: str) -> None:
        """The hospital signed a tree head: check it against our copy, then cosign it and hand
        it back, at once or (`cosign_delay`) as the newest of the cells run meanwhile."""
        if self.custodian is None:
            return
        if self.ledger is None:
            raise _NotYet
        delay = self.cosign_delay > 0 and self.schedule is not None and self.state != SEALED
        if delay:
            # The note came in a receipt whose custodian signature covers it; its own signature
            # is checked when it is cosigned (`cosign_due`), off the path of the cell's last
            # message and only for the newest note of a burst.
            checkpoint = Checkpoint.parse(parse_note(note).text)
        else:
            checkpoint, _ = open_checkpoint(note, [self.custodian])
        if checkpoint.size > self.ledger.size:
            raise _NotYet
        size = self.ledger.size
        ours = (
            self.ledger.root() if checkpoint.size == size else self.ledger.root_at(checkpoint.size)
        )
        if ours != checkpoint.root:
            raise LedgerIntegrityError(
                f"the hospital's checkpoint (size {checkpoint.size}) does not match our copy",
                index=checkpoint.size,
            )
        if delay:
            assert self.schedule is not None
            # Checked against our copy now (a mismatch marks this message unverified);
            # cosigned later, and only the newest: it covers the tree heads before it (the
            # sentry logs each cosigned note as a checkpoint entry), so cells run back to back
            # cost one round trip through the gateway and the sentry instead of one each.
            self._due = note
            if not self._cosign_armed:
                self._cosign_armed = True
                self.schedule(self.cosign_delay, self._cosign_timed)
            return
        # After the seal only the tree head covering the seal is cosigned: the sealed ledger
        # ends on it, and it is the checkpoint the researcher anchors.
        final = checkpoint.size == size and self.ledger.entry(size - 1).get("kind") == "seal"
        self._cosign(note, send=self.state != SEALED or final)

    def _cosign(self, note: str, *, send: bool) -> None:
        cosigned = cosign(note, self.signer)
        self.last_checkpoint = cosigned
        if send and self.send is not None:
            self.send(self.control_request("bedside_cosign_request", {"checkpoint": cosigned}))

    def _cosign_timed(self) -> None:
        self._cosign_armed = False
        self.cosign_due()

    def cosign_due(self) -> None:
        """Cosign the checked checkpoint still waiting for `cosign_delay` now, if any (before a
        seal, so that the request reaches the hospital first)."""
        note, self._due = self._due, None
        if note is None or self.state in (SEALED, REFUSED):
            return  # after the seal only the note over it (cosigned at once) is taken
        try:
            if self.custodian is None:
                return
            open_checkpoint(note, [self.custodian])
        except Error as exc:
            self.unverified += 1
            log.warning("bedside: the hospital's checkpoint of kernel %s: %s", self.kernel_id, exc)
            return
        try:
            self._cosign(note, send=True)
        except Exception as exc:  # noqa: BLE001 - the connection is gone; a later note covers it
            log.warning("bedside: cannot send the cosigned checkpoint: %s", exc)

    def _logged_checkpoint(self, note: str, index: int) -> None:
        """A checkpoint entry: the custodian's signature over a tree head of our copy.

        Checkpoints we cosigned carry both signatures and become `last_checkpoint`. The sentry
        also logs checkpoints signed by the custodian alone (at the seal, when the kernel dies,
        at shutdown: docs/dev/contracts.md) so that its ledger verifies on its own; those are
        checked against our copy but do not replace the last cosigned one.
        """
        if self.custodian is None:
            raise SignatureError("a logged checkpoint, but no custodian key", index=index)
        if note == self.last_checkpoint:
            # the very note we cosigned: its custodian signature and its root against our copy
            # were checked before we signed it (three Ed25519 verifications a cell saved)
            return
        verifiers = [self.custodian, self.signer.verifier]
        checkpoint, names = open_checkpoint(note, verifiers)
        if self.custodian.name not in names:
            raise SignatureError("a logged checkpoint lacks the custodian's signature", index=index)
        if self.ledger is not None and 0 < checkpoint.size <= self.ledger.size:
            at = (
                self.ledger.root()
                if checkpoint.size == self.ledger.size
                else self.ledger.root_at(checkpoint.size)
            )
            if at != checkpoint.root:
                raise LedgerIntegrityError(
                    f"a logged checkpoint (size {checkpoint.size}) does not match our copy",
                    index=index,
                )
        if len(names) >= 2:
            self.last_checkpoint = note

    def _record_unverified(self, msg: dict[str, Any], reason: str) -> None:
        self.unverified += 1
        header = msg.get("header") or {}
        log.warning(
            "bedside: unverified %s %s from kernel %s: %s",
            header.get("msg_type"),
            header.get("msg_id"),
            self.kernel_id,
            reason,
        )
        line = {
            "ts": _now(),
            "msg_id": header.get("msg_id"),
            "msg_type": header.get("msg_type"),
            "channel": msg.get("channel"),
            "reason": reason,
        }
        with self.unverified_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def _check_receipt(self, msg: dict[str, Any]) -> None:
        meta = msg.get("metadata") or {}
        receipt = (meta.get("bedside") or {}).get("receipt") if isinstance(meta, dict) else None
        if not isinstance(receipt, dict):
            raise SignatureError("the message carries no bedside receipt")
        if self.custodian is None and self.awaiting_intent and receipt.get("key"):
            # Trust on first use: the first receipt of the session names the custodian key;
            # the intent reply and the ledger header must then name the same key.
            self.custodian = Verifier(str(receipt["key"]))
        if self.custodian is None:
            raise SignatureError("no custodian key is configured or pinned yet")
        key = self._receipt_key(self.custodian)
        if receipt.get("key") != key.vkey:
            raise SignatureError(f"receipt signed by {receipt.get('key')}, not the custodian")
        body = {k: v for k, v in receipt.items() if k != "sig"}
        try:
            sig = base64.b64decode(str(receipt.get("sig", "")), validate=True)
        except ValueError as exc:
            raise SignatureError("receipt signature is not base64") from exc
        key.verify(canonical_json(body), sig)
        header = msg.get("header") or {}
        if receipt.get("msg_id") != header.get("msg_id"):
            raise LedgerIntegrityError("the receipt names another message")
        channel = str(msg.get("channel", ""))
        msg_type = str(header.get("msg_type", ""))
        content = msg.get("content") or {}
        items = receipt.get("entries") or []
        if not isinstance(items, list):
            raise LedgerIntegrityError("the receipt's entries are not a list")
        digest = receipt.get("digest")
        # What binds the message's content to the signed receipt: its `digest` (version 1, and
        # version 2 when it has one), or in version 2 without it, this message's own output
        # entry with its salt, whose commitment `_opening` opens with the same committed bytes
        # (or the receipt is refused). A receipt with neither binds nothing and is refused.
        version = receipt.get("v")
        if version not in (1, 2) or type(version) is not int:
            raise SignatureError(f"receipt version {version!r} is not one this extension reads")
        if digest is None and (version == 1 or not _own_output(items, header.get("msg_id"))):
            raise LedgerIntegrityError(
                "the receipt binds no content: it has no digest and no salted output entry "
                "of this message"
            )
        committed = output_committed_bytes(channel=channel, msg_type=msg_type, content=content)
        salted = any("salt" in item for item in items if type(item) is dict)
        if salted and len(committed) >= PREPARE_MIN_BYTES:
            # Only the bytes: the index and salt are set (and checked) when the entry is staged.
            prepare = PreparedOpening, -1, "content", DOMAIN_OUTPUT, b"", committed
            self._preparing = committed, _OPENINGS.submit(*prepare)
        if digest is not None and digest != "sha256:" + hashlib.sha256(committed).hexdigest():
            self._preparing = None
            raise LedgerIntegrityError("the message content does not match its receipt digest")
        # Iopub and shell travel on different sockets through the gateway, so receipts can
        # arrive out of the order the sentry wrote them: stage entries by index and tree heads
        # by size, and check each as soon as our copy reaches it.
        try:
            for item in items:
                self._stage(item, msg, committed)
        finally:
            self._preparing = None
        head = (int(receipt.get("size", -1)), str(receipt.get("root", "")))
        checkpoint = receipt.get("checkpoint")
        if checkpoint is None and self._defer(head, msg):
            return
        self._heads.append(head)
        if isinstance(checkpoint, str):
            self._notes.append(checkpoint)
        self._drain()

    def _defer(self, head: tuple[int, str], msg: dict[str, Any]) -> bool:
        """Leave the writing of this message's entry, a large output the receipt's root has
        just been checked against, until the message has gone on to the browser (`settle`).

        Only in the common case: the receipt brings the next entry of our copy, an output
        whose opening a worker is making, and no checkpoint, and writing it would let nothing
        else that waits through. The entry is completed and checked as `Ledger.append` would
        (the same bytes), its leaf hashed into a copy of our tree's right edge, and the root
        of that tree compared with the receipt's, as `_drain` would after writing it. Anything
        else, including a root that does not match, takes the path that writes first and
        reports what is wrong. Ledger order is kept: the entry and its opening are written
        together, opening first, by `Ledger.append`, before any other use of the copy.
        """
        ledger = self._ledger
        if ledger is None or ledger.sealed or self._notes:
            return False
        index = ledger.size
        staged = self._staged.get(index)
        if (
            staged is None
            or not isinstance(staged[1], _PendingOpening)
            or head[0] != index + 1
            or self._frontier.size != index
            # Entries and tree heads that wait for others (a shell message that overtook this
            # one) may stay waiting, but none that writing this entry would let through: their
            # checks belong to the message that brought them.
            or index + 1 in self._staged
            or any(size <= index + 1 for size, _ in self._heads)
        ):
            return False
        entry = staged[0]
        e = {"v": E.VERSION, "session": ledger.session_id, **entry}
        if (
            e.get("kind") != E.OUTPUT
            or "ts" not in e
            or e.get("seq") != index
            or e["session"] != ledger.session_id
        ):
            return False
        try:
            E.check_entry(e, index)
        except Error:
            return False
        leaf = hash_leaf(canonical_json(e))
        tree = self._frontier.copy()
        tree.append(leaf)
        if tree.root().hex() != head[1]:
            return False
        del self._staged[index]
        msg_ref = {"header": msg.get("header") or {}, "channel": msg.get("channel")}
        self._deferred = _Deferred(index, entry, staged[1], leaf, msg_ref)
        return True

    def _receipt_key(self, custodian: Verifier) -> _ReceiptKey:
        key = self._receipt_keys
        if key is None or key.custodian is not custodian:
            key = self._receipt_keys = _ReceiptKey(custodian)
        return key

    def _stage(
        self, item: dict[str, Any], msg: dict[str, Any], committed: bytes, *, fetched: bool = False
    ) -> None:
        entry = item.get("entry")
        index = item.get("index")
        if not isinstance(entry, dict) or not isinstance(index, int) or index < 0:
            raise LedgerIntegrityError("receipt entry without index or entry")
        entry = {**entry}
        entry.setdefault("seq", index)
        opening = self._opening(item, entry, msg, committed, fetched=fetched)
        if self.ledger is not None and index < self.ledger.size:
            if canonical_json(self.ledger.entry(index)) != canonical_json(
                {"v": 1, "session": self.session_id, **entry}
            ):
                raise LedgerIntegrityError("the hospital rewrote an entry", index=index)
            return  # already appended (a receipt resent after reconnecting)
        staged = self._staged.get(index)
        if staged is not None and staged[1] is not None and opening is None:
            # staged twice before it is appended: keep the opening the first one made (an
            # execute request's code is let go of once its opening is made)
            if canonical_json(staged[0]) != canonical_json(entry):
                raise LedgerIntegrityError("the hospital rewrote an entry", index=index)
            return
        self._staged[index] = (entry, opening)

    def _drain(self) -> None:
        """Append staged entries in order; check tree heads and checkpoints we have reached."""
        while True:
            next_index = 0 if self.ledger is None else self.ledger.size
            staged = self._staged.pop(next_index, None)
            if staged is None:
                break
            self._append(next_index, *staged)
        size = 0 if self.ledger is None else self.ledger.size
        waiting = []
        for head_size, root in self._heads:
            if head_size > size:
                waiting.append((head_size, root))
                continue
            ours = None
            if self.ledger is not None and head_size:
                # root() is kept incrementally; root_at() recomputes: use it only when behind.
                at = self.ledger.root() if head_size == size else self.ledger.root_at(head_size)
                ours = at.hex()
            if head_size and ours != root:
                self._heads = waiting
                raise LedgerIntegrityError(
                    f"ledger copies disagree at size {head_size}: our root {str(ours)[:16]}…, "
                    f"the hospital's {root[:16]}…",
                    index=head_size,
                )
        self._heads = waiting
        notes, self._notes = self._notes, []
        for note in notes:
            try:
                self._cosign_checkpoint(note)
            except _NotYet:
                self._notes.append(note)
        self._watch_gap()

    def _append(
        self, index: int, entry: dict[str, Any], opening: Opening | _PendingOpening | None
    ) -> None:
        if self.ledger is None:
            if index != 0 or entry.get("kind") != "header":
                raise LedgerIntegrityError("the first entry must be the header", index=index)
            self.session_id = str(entry.get("session", self.session_id))
            origin = str(entry.get("origin") or f"bedside/{self.session_id}")
            if self.ledger_path.exists():
                self.ledger = Ledger.open(self.ledger_path)
            else:
                self.ledger = Ledger.create(
                    self.ledger_path, session_id=self.session_id, origin=origin
                )
            self._frontier = Frontier()
            for i in range(self.ledger.size):
                self._frontier.append(self.ledger.leaf_hash(i))
            self._check_header(entry)
        if isinstance(opening, _PendingOpening):
            opening = opening.resolve()
        self.ledger.append(entry, opening=opening)
        self._frontier.append(self.ledger.leaf_hash(index))
        kind = entry.get("kind")
        if kind == "output" and entry.get("decision") != "released":
            by_layer = self.outputs_stopped.setdefault(str(entry.get("decision")), {})
            by_layer[str(entry.get("layer"))] = by_layer.get(str(entry.get("layer")), 0) + 1
        if kind == "header" and isinstance(entry.get("policy"), dict):
            self.policy = dict(entry["policy"])
        elif kind == "execute_request":
            self.cells_run += 1
        if kind == "checkpoint":
            self._logged_checkpoint(str(entry.get("note", "")), index)
        elif kind == "anchor":
            self.anchor = {k: v for k, v in entry.items() if k not in ("v", "session")}
        elif kind == "metering":
            self.metering = entry.get("counters") or entry.get("record")
        elif kind == "seal":
            self.state = SEALED
            self.ledger.flush()
        elif kind == "interrupted":
            self.reason = str(entry.get("reason", ""))

    def _check_header(self, entry: dict[str, Any]) -> None:
        identities = entry.get("identities") or {}
        mine = self.signer.verifier_key
        if identities.get("researcher") not in (None, mine):
            raise SignatureError("the session header names another researcher key", index=0)
        key = identities.get("custodian")
        if self.custodian is not None and key not in (None, self.custodian.vkey):
            raise SignatureError("the session header names another custodian key", index=0)
        intent = entry.get("intent")
        if self._signed_intent and isinstance(intent, dict):
            # The hospital records the intent exactly as we signed it (its own additions, such
            # as the budget it granted, go in the header's `grant`), so anyone can check it.
            keys = set(self._signed_intent) | set(intent)
            changed = [k for k in keys if intent.get(k) != self._signed_intent.get(k)]
            if changed:
                raise SignatureError(
                    "the session header does not hold the intent we signed "
                    f"(differs in {', '.join(sorted(changed))})",
                    index=0,
                )

    def _opening(
        self,
        item: dict[str, Any],
        entry: dict[str, Any],
        msg: dict[str, Any],
        committed: bytes,
        *,
        fetched: bool = False,
    ) -> Opening | _PendingOpening | None:
        """The opening of a staged entry, checked against its commitment. `fetched`: the
        content came with the entry in an entries reply (checked the same way), not as the
        message the receipt rode on."""
        salt_b64 = item.get("salt")
        kind = entry.get("kind")
        index = int(item["index"])
        if kind == "execute_request":
            msg_id = str(entry.get("msg_id", ""))
            sig = self._sigs.get(msg_id)
            if sig is not None and entry.get("researcher_sig") != sig:
                raise SignatureError("the execute request carries another signature", index=index)
            code = committed.decode("utf-8", errors="replace") if fetched else None
            code = self._code.get(msg_id, code)
            if fetched and code is not None and code.encode("utf-8") != committed:
                raise LedgerIntegrityError(
                    "the hospital sent other code than the researcher's request", index=index
                )
            if salt_b64 and code is not None:
                salt = base64.b64decode(str(salt_b64))
                raw = code.encode("utf-8")
                open_commitment(DOMAIN_CODE, raw, salt, str(entry["code"]), index=index)
                # the request's entry is checked and opened: its code and signature are done
                self._code.pop(msg_id, None)
                self._sigs.pop(msg_id, None)
                return Opening(index, "code", DOMAIN_CODE, salt, raw)
            return None
        if kind == "output" and salt_b64:
            own = fetched or entry.get("msg_id") == (msg.get("header") or {}).get("msg_id")
            if not own:
                raise LedgerIntegrityError("a salt for another message's output", index=index)
            salt = base64.b64decode(str(salt_b64))
            open_commitment(DOMAIN_OUTPUT, committed, salt, str(entry["content"]), index=index)
            preparing = self._preparing
            if preparing is not None and preparing[0] is committed:
                self._preparing = None  # taken once: a receipt names one output's salt
                return _PendingOpening(index, salt, committed, preparing[1])
            # Raw bytes: the ledger writes the base64 record itself, without a text copy or a
            # JSON escape pass over a message that may be megabytes long.
            return Opening(index, "content", DOMAIN_OUTPUT, salt, committed)
        return None
