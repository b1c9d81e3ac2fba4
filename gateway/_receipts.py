"""The hospital copy of the session ledger, written by the sentry, and the receipts it signs.

The sentry is the ledger's author: it appends the header, each execute request, each output
message that leaves (released or blocked), cosigned checkpoints, metering, interruptions and the
seal. Each message that leaves carries a receipt with the entries appended since the previous
receipt, the ledger's size and root, signed with the custodian's Ed25519 key
(docs/dev/contracts.md, "the receipt").
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import rfc8785

from bedside.gateway._wire import RANDOM
from bedside.ledger import Ledger, Signer, Verifier, entries, verify_note
from bedside.ledger.commitment import (
    DOMAIN_OUTPUT,
    SALT_SIZE,
    _fast_ok,
    canonical_json,
    commit,
)
from bedside.ledger.merkle import Frontier, hash_leaf
from bedside.ledger.openings import Opening, PreparedOpening
from bedside.policy.decision import Decision

# The JSON string encoder canonical_json uses (RFC 8785 strings are json's with
# ensure_ascii=False): receipts and committed bytes are spliced from pieces written with it.
_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _jstr(value: str) -> bytes:
    return _str(value).encode("utf-8")


#: The receipt versions: 1 always carries `digest`; 2 leaves it out when the receipt's entries
#: hold this message's own output entry with its salt, whose commitment binds the same bytes
#: (docs/dev/contracts.md, "the receipt"). The sentry writes 2 only to a researcher side that
#: asked for it with its intent (`bedside_intent_request` `"receipts": 2`).
RECEIPTS = 2


def receipt_version(asked: object) -> int:
    """The receipt version for a researcher side that reads up to `asked` (1 when not said)."""
    if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 1:
        return min(asked, RECEIPTS)
    return 1


# How long appended entries may wait before they are made durable (fsync) when messages keep
# flowing; the sentry flushes as soon as the relay is quiet, and a header, seal, checkpoint or
# interruption is durable at once. One fsync per message would double a trivial cell's time.
FLUSH_AFTER = 0.5


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def committed_bytes(
    channel: str, msg_type: str, content: dict[str, Any], buffers: list[bytes]
) -> bytes:
    """The bytes a ledger entry commits to for one message (contract: committed output bytes)."""
    return entries.output_committed_bytes(
        channel=channel, msg_type=msg_type, content=content, buffers=buffers
    )


def canonical_content(content: Any) -> bytes:
    """`canonical_json(content)`, the same bytes, by orjson where that is known to agree.

    On the values `canonical_json` encodes with json's C encoder (str, bool, None, ints of a
    double's exact range, lists and dicts with ASCII keys), orjson with sorted keys writes the
    bytes RFC 8785 asks for: strings escaped alike (checked for every code point by
    tests/gateway/test_wire.py), keys in code-point order, which for ASCII is UTF-16 order. It
    does so about ten times faster, which is milliseconds on a megabyte output. Anything else
    (floats, non-ASCII keys, lone surrogates, deep nesting) takes `canonical_json`.
    """
    if _fast_ok(content):
        try:
            return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return canonical_json(content)


def committed_from_content(
    channel: str,
    msg_type: str,
    raw_content: bytes,
    buffers: list[bytes],
    content: dict[str, Any] | None = None,
) -> bytes:
    """`committed_bytes` around content already in canonical form (`canonical_json(content)`).

    RFC 8785 is compositional (keys sorted at every level), so the wrapper is spliced around the
    content's bytes instead of encoding the content a second time; the sentry sends the same
    bytes as the message's content frame. Release fetch and entries replies commit to their bulk
    fields by digest (`entries.committed_content`), so they take the general path: pass
    `content` for them.
    """
    if msg_type in (entries.FETCH_REPLY, entries.ENTRIES_REPLY):
        if content is None:
            raise ValueError(f"{msg_type} commits to digests of its content: pass the content")
        return committed_bytes(channel, msg_type, content, buffers)
    hashes = b",".join(b'"' + hashlib.sha256(bytes(b)).hexdigest().encode() + b'"' for b in buffers)
    return b"".join(
        (
            b'{"buffers":[',
            hashes,
            b'],"channel":',
            _jstr(channel),
            b',"content":',
            raw_content,
            b',"msg_type":',
            _jstr(msg_type),
            b"}",
        )
    )


@dataclass(frozen=True)
class Prepared:
    """What the release of one large output needs, computed before the guard's verdict (in a
    worker thread, while the guard scans): nothing of it leaves unless the verdict releases the
    content these bytes encode, unchanged. Every part is a function of the content alone."""

    raw_content: bytes  # canonical_content(content): the content frame sent
    committed: bytes  # the committed bytes around it
    commitment: tuple[str, bytes]  # commit(DOMAIN_OUTPUT, committed): (hex, fresh salt)
    digest: str | None  # sha256 hex of the committed bytes, for a version 1 receipt (if asked)
    opening: PreparedOpening  # its index is filled in at the append


@dataclass(frozen=True)
class Ahead:
    """A released output's entry and receipt made before the append (`released_ahead`)."""

    entry: dict[str, Any]
    opening: Opening
    index: int
    payload: bytes  # the entry's bytes as the ledger will write them
    root: bytes  # the tree's root once it is appended
    salt: str  # the opening's salt, in base64, as the receipt carries it
    receipt: bytes


def prepare_release(
    channel: str,
    msg_type: str,
    content: dict[str, Any],
    buffers: list[bytes],
    *,
    digest: bool = True,
) -> Prepared:
    """Encode and commit one output ahead of its verdict (see `Prepared`), and hash it with
    `digest` (for a researcher side that reads version 1 receipts only: `receipt_version`).

    hashlib and hmac let go of the GIL on large inputs, so this runs on the other core while
    the relay's thread scans the same content (the compiled scanner lets go of it too)."""
    raw = canonical_content(content)
    committed = committed_from_content(channel, msg_type, raw, buffers, content)
    salt = RANDOM.take(SALT_SIZE)
    commitment = commit(DOMAIN_OUTPUT, committed, salt=salt)
    hashed = hashlib.sha256(committed).hexdigest() if digest else None
    opening = PreparedOpening(-1, "content", DOMAIN_OUTPUT, salt, committed)
    return Prepared(raw, committed, commitment, hashed, opening)


class HospitalLedger:
    """The sentry's ledger: appends entries and signs receipts and checkpoints."""

    def __init__(self, path: Path, *, session_id: str, origin: str, signer: Signer) -> None:
        self.path = path
        self.session_id = session_id
        self.origin = origin
        self.signer = signer
        self.key = signer.verifier_key
        self.ledger = Ledger.create(path, session_id=session_id, origin=origin)
        # Entries appended since the last receipt: (index, the entry's bytes as written, salt).
        self._pending: list[tuple[int, bytes, str | None]] = []
        # The receipt version the researcher side reads (`receipt_version`), and the output
        # entry appended last with its salt for the receipt: (index, msg_id, committed bytes).
        self.receipts = 1
        self._released: tuple[int, str, bytes] | None = None
        self.last_checkpoint: str | None = None
        # Ledger size right after the latest checkpoint entry (nothing unsigned beyond it).
        self.last_signed_size = 0
        self._dirty_since: float | None = None
        # Entries whose opening went to the researcher with their receipt (execute requests,
        # outputs the sentry let out), one bit per index: an entries reply sends those
        # openings again, and no other (blocked outputs, release artifacts stay here).
        self._public = bytearray()
        # The tree's right edge as far as `released_ahead` has read it (it predicts roots).
        self._frontier = Frontier()
        # The deferred flush running in the background (`flush_if_due`), and its thread.
        self._flushing: Future[None] | None = None
        self._flusher: ThreadPoolExecutor | None = None

    @property
    def size(self) -> int:
        return int(self.ledger.size)

    @property
    def has_header(self) -> bool:
        return self.ledger.size > 0

    @property
    def sealed(self) -> bool:
        return bool(self.ledger.sealed)

    def append(
        self,
        entry: dict[str, Any],
        *,
        opening: dict[str, Any] | Opening | None = None,
        public: bool = False,
        sync: bool = False,
    ) -> int:
        """Append one entry; `public` puts the opening's salt in the next receipt."""
        index = int(self.ledger.append(entry, opening=opening, sync=sync))
        # Send the bytes the ledger wrote (seq, v, ts filled in), so both copies agree.
        salt = None
        if public and opening is not None:
            salt = b64(opening.salt) if isinstance(opening, Opening) else opening["salt"]
        if salt is not None:
            byte = index >> 3
            if byte >= len(self._public):
                self._public.extend(bytes(byte + 1024 - len(self._public)))
            self._public[byte] |= 1 << (index & 7)
        self._pending.append((index, self.ledger.entry_bytes(index), salt))
        if not sync and self._dirty_since is None:
            self._dirty_since = time.monotonic()
        return index

    # -- entries --------------------------------------------------------------------------------

    def header(
        self,
        *,
        intent: dict[str, Any],
        policy_id: str,
        policy_digest: str,
        environment_digest: str,
        researcher_key: str | None,
        grant: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        identities = {"custodian": self.key}
        if researcher_key:
            identities["researcher"] = researcher_key
        entry = entries.header(
            session=self.session_id,
            origin=self.origin,
            intent=intent,
            policy_id=policy_id,
            policy_digest=policy_digest,
            kernel_env=environment_digest,
            identities=identities,
            grant=grant,
        )
        index = self.append(entry, sync=True)
        return index, self.ledger.entry(index)

    def execute_request(
        self, msg_id: str, code: str, researcher_sig: str | None, cell_id: str | None
    ) -> int:
        entry, opening = entries.execute_request(
            session=self.session_id,
            msg_id=msg_id,
            code=code,
            researcher_sig=researcher_sig,
            cell_id=cell_id,
        )
        # The salt goes to the researcher with the entry (the researcher wrote the code, so it
        # reveals nothing to them): their openings file then opens the code commitments too,
        # and a reviewer can check code against the researcher's signature from either copy.
        return self.append(entry, opening=opening, public=True)

    def output(
        self,
        *,
        msg_id: str,
        parent: str,
        channel: str,
        msg_type: str,
        committed: bytes,
        decision: Decision,
        kernel: Decision | None = None,
        prepared: Prepared | None = None,
    ) -> int:
        """An output entry; a blocked output's salt stays in the private openings file only.

        `prepared` holds the commitment and opening computed ahead for these `committed` bytes
        (`prepare_release`); it is used only for them.

        `decision` is the sentry's own verdict; `kernel` the in-kernel guard's claim about the
        same message, if it made one. The entry records the stricter of the two with its rule
        and layer, and beside it both decisions (docs/ledger-format.md, "the kernel's claim").
        The opening's fate follows the sentry's verdict: that is what left the hospital.
        """
        entry, opening = self._output_entry(
            msg_id=msg_id,
            parent=parent,
            channel=channel,
            msg_type=msg_type,
            committed=committed,
            decision=decision,
            kernel=kernel,
            prepared=prepared,
        )
        index = self.append(entry, opening=opening, public=not decision.blocked)
        if not decision.blocked:
            self._released = (index, msg_id, committed)
        return index

    def _output_entry(
        self,
        *,
        msg_id: str,
        parent: str,
        channel: str,
        msg_type: str,
        committed: bytes,
        decision: Decision,
        kernel: Decision | None,
        prepared: Prepared | None,
    ) -> tuple[dict[str, Any], Opening]:
        """The output entry `output` appends (its `seq` still unset) and its opening."""
        recorded = decision if kernel is None else decision.most_severe(kernel)
        if prepared is not None and prepared.committed is not committed:
            prepared = None
        committed_as = (
            prepared.commitment
            if prepared is not None
            else commit(DOMAIN_OUTPUT, committed, salt=RANDOM.take(SALT_SIZE))
        )
        entry, salt = entries.output_with_salt(
            session=self.session_id,
            msg_id=msg_id,
            parent=parent,
            channel=channel,
            msg_type=msg_type,
            committed=committed,
            decision=recorded.action,
            rule=recorded.rule,
            layer=recorded.layer,
            kernel=None if kernel is None else (kernel.action.value, kernel.rule),
            sentry=decision.action.value,
            committed_as=committed_as,
        )
        # The opening as raw salt and bytes: the ledger splices the content's base64 into the
        # record (`Opening.record_parts`), the same bytes as the dict form without a JSON escape
        # pass and copies over a megabyte output. Only the sentry appends to this ledger, so
        # the entry's index is the ledger's size (a mismatch would raise, not write).
        opening: Opening
        if prepared is not None:
            opening = prepared.opening
            opening.index = self.ledger.size
        else:
            opening = Opening(self.ledger.size, "content", DOMAIN_OUTPUT, salt, committed)
        return entry, opening

    def released_ahead(
        self,
        *,
        msg_id: str,
        parent: str,
        channel: str,
        msg_type: str,
        prepared: Prepared,
        decision: Decision,
        kernel: Decision | None = None,
    ) -> Ahead:
        """A released output's entry and the receipt it will carry, before it is appended.

        The entry is complete (its `ts` and `seq` set, so the ledger writes it as it is), and
        the receipt is built from the bytes and tree root the ledger will have once it is
        appended (`append_ahead` checks that it does). The sentry signs the message with this
        receipt while the ledger writes the entry and its megabyte opening.
        """
        entry, opening = self._output_entry(
            msg_id=msg_id,
            parent=parent,
            channel=channel,
            msg_type=msg_type,
            committed=prepared.committed,
            decision=decision,
            kernel=kernel,
            prepared=prepared,
        )
        index = self.ledger.size
        entry["seq"] = index
        payload = canonical_json(entry)
        frontier = self._frontier
        while frontier.size < index:  # catch up with every entry appended since (any path)
            frontier.append(self.ledger.leaf_hash(frontier.size))
        after = frontier.copy()
        after.append(hash_leaf(payload))
        salt = b64(opening.salt)
        pending = [*self._pending, (index, payload, salt)]
        # this message's own salted entry is in it: version 2 needs no digest
        digest = None
        if self.receipts < 2:
            digest = prepared.digest or hashlib.sha256(prepared.committed).hexdigest()
        receipt = self._receipt(pending, msg_id, digest, after.root(), index + 1, None)
        return Ahead(entry, opening, index, payload, after.root(), salt, receipt)

    def append_ahead(self, ahead: Ahead) -> bool:
        """Append the entry of `released_ahead`: True when the ledger wrote exactly the bytes
        and root its receipt names (then that receipt is this message's), else False, and the
        caller asks `receipt_bytes` for the receipt of what was written."""
        pending = list(self._pending)
        index = self.append(ahead.entry, opening=ahead.opening, public=True)
        held = (
            index == ahead.index
            and self._pending[:-1] == pending
            and self._pending[-1] == (ahead.index, ahead.payload, ahead.salt)
            and self.ledger.root() == ahead.root
        )
        if held:
            self._pending = []
        else:
            self._released = (index, str(ahead.entry["msg_id"]), ahead.opening.content)
        return held

    def interrupted(self, reason: str, msg_id: str | None) -> int:
        entry = entries.interrupted(session=self.session_id, reason=reason, msg_id=msg_id)
        return self.append(entry, sync=True)

    def metering(self, counters: dict[str, int | str]) -> int:
        """A metering record signed on its own by the custodian key (the settlement reference).

        `sig` is over rfc8785({"session", "counters"}); `key` is the custodian verifier key.
        """
        entry = entries.metering(session=self.session_id, counters=counters)
        body = {"session": self.session_id, "counters": entry["counters"]}
        entry["key"] = self.key
        entry["sig"] = b64(self.signer.sign(rfc8785.dumps(body)))
        return self.append(entry)

    def seal(self, reason: str) -> int:
        return self.append(entries.seal(session=self.session_id, reason=reason), sync=True)

    def cosigned_checkpoint(self, note: str, researcher_key: str) -> int:
        """Store a checkpoint the researcher cosigned, after checking both signatures."""
        _, signed = verify_note(note, [Verifier(self.key), Verifier(researcher_key)])
        custodian = Verifier(self.key).name
        researcher = Verifier(researcher_key).name
        missing = [n for n in (custodian, researcher) if n not in signed]
        if missing:
            from bedside.errors import SignatureError

            raise SignatureError(f"the checkpoint lacks the signature of {', '.join(missing)}")
        index = int(self.ledger.append_checkpoint(note, sync=True))
        self._pending.append((index, self.ledger.entry_bytes(index), None))
        self.last_signed_size = self.size
        return index

    def awaits_final_cosign(self, note: str) -> bool:
        """Whether `note` is the tree head covering the seal, not yet logged cosigned.

        After the seal the ledger takes one more cosigned checkpoint: the one over every entry
        up to and including the seal, so that the sealed ledger ends on a tree head both sides
        signed (and the researcher can anchor it). The seal is then no longer the last entry.
        """
        if not self.sealed or self.ledger.entry(self.size - 1).get("kind") != "seal":
            return False
        from bedside.errors import Error
        from bedside.ledger.note import Checkpoint, parse_note

        try:
            return Checkpoint.parse(parse_note(note).text).size == self.size
        except (Error, ValueError):  # a malformed note: refused like any other after the seal
            return False

    def custodian_checkpoint(self) -> int | None:
        """Append a checkpoint signed by the custodian alone, covering every entry so far.

        Written at the seal, when the kernel dies and at shutdown, so the hospital ledger
        verifies on its own even when no researcher cosigned.
        """
        if not self.has_header or self.sealed:
            return None
        note = self.sign_checkpoint()
        index = int(self.ledger.append_checkpoint(note, sync=True))
        self._pending.append((index, self.ledger.entry_bytes(index), None))
        self.last_signed_size = self.size
        return index

    def is_public(self, index: int) -> bool:
        """Whether entry `index`'s opening went to the researcher with its receipt."""
        byte = index >> 3
        return byte < len(self._public) and bool(self._public[byte] >> (index & 7) & 1)

    def public_openings(
        self, start: int, end: int, most: int
    ) -> tuple[dict[int, tuple[str, str]], int]:
        """The public openings among entries start..end-1, read back from the openings file:
        ({index: (salt, content)} in base64, the index they cover up to). Stops before an
        opening that would take the content past `most` bytes (never before the first).
        Only for entries fetched after their receipt was lost: rare, so nothing is cached."""
        from bedside.ledger.log import openings_path
        from bedside.ledger.openings import iter_openings

        out: dict[int, tuple[str, str]] = {}
        if not any(self.is_public(i) for i in range(start, end)):
            return out, end
        self.ledger.flush()
        self._dirty_since = None
        total = 0
        for opening in iter_openings(openings_path(self.path)):
            if opening.index >= end:
                break
            if opening.index < start or not self.is_public(opening.index):
                continue
            if out and total + len(opening.content) > most:
                return out, opening.index
            out[opening.index] = (b64(opening.salt), b64(opening.content))
            total += len(opening.content)
        return out, end

    # -- checkpoints and receipts ---------------------------------------------------------------

    def sign_checkpoint(self) -> str:
        self.last_checkpoint = self.ledger.sign_checkpoint(self.signer)
        return self.last_checkpoint

    def receipt(
        self, msg_id: str, committed: bytes, *, checkpoint: str | None = None
    ) -> dict[str, Any]:
        """The receipt as a JSON object (see `receipt_bytes`)."""
        value: dict[str, Any] = json.loads(
            self.receipt_bytes(msg_id, committed, checkpoint=checkpoint)
        )
        return value

    def receipt_bytes(
        self, msg_id: str, committed: bytes, *, checkpoint: str | None = None
    ) -> bytes:
        """The signed receipt for one message leaving, as JSON bytes ready for the wire.

        `committed` are the bytes of the message as it leaves. Version 2 (when the researcher
        side reads it) leaves the digest of them out if the entries it carries hold the output
        entry just appended for this very message and bytes, with its salt: the researcher
        opens that commitment with these bytes, which binds them as the digest would.

        `sig` is over rfc8785 of the receipt without it. That text is spliced here in RFC 8785's
        key order from the entries' own canonical bytes as the ledger wrote them, so no entry is
        parsed or encoded again on a message's path; `sig` is added last (JSON key order does
        not matter to the reader, which drops it and canonicalises the rest).
        """
        pending, self._pending = self._pending, []
        # (taken once: its entry goes with this receipt, and the bytes are not kept beyond it)
        own, self._released = self._released, None
        bound = (
            self.receipts >= 2
            and own is not None
            and own[1] == msg_id
            and (own[2] is committed or own[2] == committed)
            and any(index == own[0] and salt is not None for index, _, salt in pending)
        )
        digest = None if bound else hashlib.sha256(committed).hexdigest()
        return self._receipt(pending, msg_id, digest, self.ledger.root(), self.size, checkpoint)

    def _receipt(
        self,
        pending: list[tuple[int, bytes, str | None]],
        msg_id: str,
        digest: str | None,
        root: bytes,
        size: int,
        checkpoint: str | None,
    ) -> bytes:
        """The receipt's bytes: version 1 with `digest`, version 2 without (`receipt_bytes`)."""
        entries_json = b",".join(
            b'{"entry":'
            + raw
            + b',"index":'
            + str(index).encode()
            + (b',"salt":' + _jstr(salt) if salt is not None else b"")
            + b"}"
            for index, raw, salt in pending
        )
        parts = [
            b'"entries":[' + entries_json + b"]",
            b'"key":' + _jstr(self.key),
            b'"msg_id":' + _jstr(msg_id),
            b'"root":"' + root.hex().encode() + b'"',
            b'"size":' + str(size).encode(),
            b'"v":1' if digest is not None else b'"v":2',
        ]
        if digest is not None:
            parts.insert(0, b'"digest":"sha256:' + digest.encode() + b'"')
        if checkpoint is not None:
            parts.insert(0, b'"checkpoint":' + _jstr(checkpoint))
        body = b"{" + b",".join(parts) + b"}"
        return body[:-1] + b',"sig":"' + b64(self.signer.sign(body)).encode() + b'"}'

    @property
    def dirty(self) -> bool:
        return self._dirty_since is not None

    def flush_if_due(self, *, force: bool = False) -> None:
        """Make appended entries durable when the relay is quiet (`force`) or at the latest
        `FLUSH_AFTER` seconds after the first of them.

        The flush (two fsyncs: milliseconds, tens of them when the disk is busy) runs in a
        thread of its own, so a message that arrives meanwhile is relayed without waiting: the
        ledger holds its lock only while the flush hands the buffered records to the OS, not
        during the fsyncs (`Ledger.flush`), so an append waits for a write, not for the disk.
        A flush that failed fails the next call, as it did inline.
        """
        self._flushed()
        if self._dirty_since is None:
            return
        if force or time.monotonic() - self._dirty_since >= FLUSH_AFTER:
            if self._flushing is not None:
                return  # one flush at a time: what came since is flushed by the next call
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="bedside-flush")
            self._dirty_since = None
            self._flushing = self._flusher.submit(self.ledger.flush)

    def _flushed(self, *, wait: bool = False) -> None:
        """Collect the flush in the background once it is done (or at once, with `wait`)."""
        flushing = self._flushing
        if flushing is not None and (wait or flushing.done()):
            self._flushing = None
            flushing.result()

    def close(self) -> None:
        try:
            self._flushed(wait=True)
        finally:
            if self._flusher is not None:
                self._flusher.shutdown(wait=True)
            self.ledger.close()
