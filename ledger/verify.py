"""Streaming verification of a ledger: what a reviewer runs before trusting anything in it.

One pass over the file, constant memory (the Merkle frontier, a few counters and the handful of
checkpoint notes that anchors refer to). For each entry: the record checksum, canonical JSON, the
schema, its position (`seq`: catches deleted, reordered and duplicated entries), and — for
checkpoints — the signatures against the trusted keys and the signed root against the root
recomputed from the entries (which also proves every checkpoint consistent with the one before
it). With openings, every commitment that has an opening is recomputed; with an RPC URL, every
anchor is checked on chain. The first failure raises `LedgerIntegrityError(index=...)` naming the
entry; success returns a `VerifyReport`.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedside.errors import AnchorError, LedgerError, LedgerIntegrityError, SignatureError

from . import entries as E
from ._records import LEDGER_MAGIC, Record, Tail, iter_records
from .commitment import canonical_json, open_commitment, parse_canonical
from .merkle import Frontier, ProofError, verify_consistency
from .note import Checkpoint, Verifier, open_checkpoint
from .openings import Opening, iter_openings, withheld


def _nest(pairs: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """{(a, b): n} as {a: {b: n}} for JSON."""
    out: dict[str, dict[str, int]] = {}
    for (a, b), n in sorted(pairs.items()):
        out.setdefault(a, {})[b] = n
    return out


@dataclass(frozen=True)
class CheckpointSeen:
    index: int  # entry index of the checkpoint entry (-1 for one given on the command line)
    size: int
    root: bytes
    signers: tuple[str, ...]


@dataclass
class VerifyReport:
    """What a successful verification established (and what it could not)."""

    path: Path
    origin: str = ""
    session: str = ""
    size: int = 0
    root: bytes = b""
    header: dict[str, Any] | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    # (decision, layer) of every output that was not a plain release: who blocked or redacted it
    stopped: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (kernel's claim, sentry's verdict) for outputs whose two decisions differ
    disputed: Counter[tuple[str, str]] = field(default_factory=Counter)
    checkpoints: list[CheckpointSeen] = field(default_factory=list)
    external_checkpoints: list[CheckpointSeen] = field(default_factory=list)
    trusted_keys: list[str] = field(default_factory=list)
    self_asserted_keys: bool = False
    openings_checked: int = 0
    openings_missing: list[int] = field(default_factory=list)  # the first 100 only
    openings_missing_count: int = 0
    openings_withheld: int = 0
    anchors: list[dict[str, Any]] = field(default_factory=list)
    researcher_key: str | None = None  # named by the header; signs every execute request
    researcher_sigs_checked: int = 0
    researcher_unsigned: int = 0
    researcher_unsigned_first: int = -1
    intent_signed: bool = False  # the header's intent carries a researcher signature that verifies
    sealed: bool = False
    last_content_entry: int = -1  # last entry that is not a checkpoint or an anchor
    warnings: list[str] = field(default_factory=list)

    checkpoint_count: int = 0
    signed_size: int = 0  # how many entries the latest verified signature covers

    def summary(self) -> str:
        lines = [
            f"{self.path}: OK — {self.size} entries, root {self.root.hex()}",
            f"  origin {self.origin}, session {self.session}",
            "  kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())),
        ]
        if self.decisions:
            lines.append(
                "  outputs: " + ", ".join(f"{k} {n}" for k, n in sorted(self.decisions.items()))
            )
        if self.stopped:
            lines.append(
                "  outputs stopped, by layer: "
                + ", ".join(f"{d} by {layer} {n}" for (d, layer), n in sorted(self.stopped.items()))
            )
        if self.disputed:
            lines.append(
                "  kernel claims the sentry did not share (untrusted): "
                + ", ".join(
                    f"kernel {k} / sentry {s} {n}" for (k, s), n in sorted(self.disputed.items())
                )
            )
        signers = sorted({s for c in self.checkpoints for s in c.signers})
        lines.append(
            f"  {self.checkpoint_count} signed checkpoint(s), latest covers {self.signed_size} "
            f"entries; signed by {', '.join(signers) or 'nobody'}"
            + (" (keys named by the ledger itself)" if self.self_asserted_keys else "")
        )
        if self.openings_checked or self.openings_missing or self.openings_withheld:
            lines.append(
                f"  openings: {self.openings_checked} match their commitments, "
                f"{self.openings_withheld} withheld (blocked/refused), "
                f"{self.openings_missing_count} missing"
            )
        for a in self.anchors:
            lines.append(
                f"  anchor (entry {a['index']}): checkpoint entry {a['checkpoint_index']} on chain "
                f"{a['chain_id']} tx {a['tx']} — {a['status']}"
            )
        if self.researcher_sigs_checked or self.researcher_unsigned:
            lines.append(
                f"  researcher signatures: {self.researcher_sigs_checked} execute requests "
                f"verified, {self.researcher_unsigned} unsigned"
            )
        if self.intent_signed:
            lines.append("  intent: signed by the researcher, as recorded in the header")
        lines.append(f"  sealed: {'yes' if self.sealed else 'no'}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "path": str(self.path),
            "origin": self.origin,
            "session": self.session,
            "size": self.size,
            "root": self.root.hex(),
            "kinds": dict(self.kinds),
            "decisions": dict(self.decisions),
            "decisions_by_layer": _nest(self.stopped),
            "kernel_disputed": _nest(self.disputed),
            "checkpoints": [
                {"index": c.index, "size": c.size, "root": c.root.hex(), "signers": list(c.signers)}
                for c in self.checkpoints
            ],
            "checkpoint_count": self.checkpoint_count,
            "signed_size": self.signed_size,
            "trusted_keys": self.trusted_keys,
            "self_asserted_keys": self.self_asserted_keys,
            "openings_checked": self.openings_checked,
            "openings_missing": self.openings_missing_count,
            "openings_missing_first": self.openings_missing,
            "openings_withheld": self.openings_withheld,
            "anchors": self.anchors,
            "researcher_key": self.researcher_key,
            "researcher_sigs_checked": self.researcher_sigs_checked,
            "researcher_unsigned": self.researcher_unsigned,
            "intent_signed": self.intent_signed,
            "sealed": self.sealed,
            "warnings": self.warnings,
        }


_KEEP_CHECKPOINTS = 200
_RECENT_NOTES = 1024


class _Notes:
    """Checkpoint notes by entry index, for the anchors that name them, in bounded memory.

    The latest notes are kept; older ones are read back from the file by offset (16 bytes of
    memory per checkpoint instead of the note).
    """

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self._recent: dict[int, str] = {}
        self._index = array("q")
        self._offset = array("q")

    def add(self, index: int, offset: int, note: str) -> None:
        self._index.append(index)
        self._offset.append(offset)
        self._recent[index] = note
        if len(self._recent) > _RECENT_NOTES:
            del self._recent[next(iter(self._recent))]

    def get(self, index: int) -> str | None:
        if index in self._recent:
            return self._recent[index]
        k = bisect.bisect_left(self._index, index)
        if k == len(self._index) or self._index[k] != index:
            return None
        fd, offset = self._fh.fileno(), self._offset[k]
        length = int.from_bytes(os.pread(fd, 4, offset), "big")
        note: str = parse_canonical(os.pread(fd, length, offset + 4))["note"]
        return note


def iter_entries(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Read entries without verifying them (for replay and reports after `verify_ledger`)."""
    from .log import read_meta

    p = Path(path)
    with open(p, "rb") as fh:
        _, start = read_meta(fh, LEDGER_MAGIC, p)
        for i, item in enumerate(iter_records(fh, start)):
            if isinstance(item, Tail):
                return
            yield i, parse_canonical(item.payload)


def _note_error(exc: LedgerError, index: int, what: str) -> SignatureError:
    message = exc.message if isinstance(exc, LedgerIntegrityError) else str(exc)
    return SignatureError(f"{what}: {message}", index=index)


def verify_ledger(
    path: str | os.PathLike[str],
    keys: Sequence[str | Verifier] = (),
    openings: str | os.PathLike[str] | None = None,
    rpc: str | None = None,
    *,
    confirmations: int | None = None,
    finalized: bool = False,
    contract: str | None = None,
    submitter: str | None = None,
    checkpoints: Sequence[str] = (),
    require_checkpoint: bool = True,
    progress: bool = False,
    on_entry: Callable[[int, dict[str, Any]], None] | None = None,
) -> VerifyReport:
    """Verify the ledger at `path`; raise `LedgerIntegrityError` (index = first bad entry).

    `keys` are the trusted verifier keys; without any, the keys the header names are used and
    the report says the trust is self-asserted. `checkpoints` are signed notes held outside the
    ledger (a researcher's cosigned copy, an anchored note): the ledger must contain and match
    every one of them, which is how a truncation behind a signed checkpoint is caught.

    Every anchor entry is checked against the checkpoint it names (hash, root, size, batch
    inclusion proof); with `rpc` also on chain by `bedside.ledger.anchor.verify_anchor_entry`,
    which gets `confirmations`, `finalized`, `contract` (the expected contract address) and
    `submitter` (the expected submitter address). A failing anchor raises `AnchorError` whose
    `index` is the anchor entry.
    """
    p = Path(path)
    report = VerifyReport(p)
    verifiers = [k if isinstance(k, Verifier) else Verifier(k) for k in keys]
    report.trusted_keys = [v.vkey for v in verifiers]
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise LedgerError(f"{p}: cannot read the ledger: {exc.strerror}") from exc
    bar: Any = None
    try:
        from .log import read_meta

        meta, start = read_meta(fh, LEDGER_MAGIC, p)
        report.origin, report.session = meta["origin"], meta["session"]
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=os.fstat(fh.fileno()).st_size,
                unit="B",
                unit_scale=True,
                desc="verify",
                leave=False,
            )
        chain = None if rpc is None else _Chain(rpc, confirmations, finalized, contract, submitter)
        _verify_stream(fh, start, report, verifiers, openings, chain, checkpoints, bar, on_entry)
    finally:
        fh.close()
        if bar is not None:
            bar.close()
    if require_checkpoint and report.size and not report.checkpoints:
        raise SignatureError(
            "the ledger holds no signed checkpoint, so nothing in it is signed; ask the custodian "
            "for a ledger with checkpoints (the sentry writes one per receipt and at seal)",
            index=None,
        )
    # Checkpoint and anchor entries carry their own proof; any other entry needs a signature.
    if report.checkpoints and report.last_content_entry >= report.signed_size:
        report.warnings.append(
            f"entries {report.signed_size}..{report.last_content_entry} come after the latest "
            "signed checkpoint: nobody has signed them yet"
        )
    if not report.sealed:
        report.warnings.append("the session is not sealed (still running, or cut short)")
    if report.researcher_unsigned:
        report.warnings.append(
            f"{report.researcher_unsigned} execute requests carry no researcher signature although "
            f"the header names the researcher's key (first: entry "
            f"{report.researcher_unsigned_first}): nothing shows the researcher sent that code"
        )
    if report.researcher_key and openings is None and report.kinds[E.EXECUTE_REQUEST]:
        report.warnings.append(
            "the researcher's signatures on execute requests were not checked: they sign the "
            "code, so pass --openings"
        )
    if report.openings_missing:
        report.warnings.append(
            f"{report.openings_missing_count} released entries have no opening "
            f"(first: entry {report.openings_missing[0]})"
        )
    return report


def _verify_stream(
    fh: Any,
    start: int,
    report: VerifyReport,
    verifiers: list[Verifier],
    openings_file: str | os.PathLike[str] | None,
    chain: _Chain | None,
    external: Sequence[str],
    bar: Any,
    on_entry: Callable[[int, dict[str, Any]], None] | None,
) -> None:
    frontier = Frontier()
    session = report.session
    kinds = report.kinds
    decisions = report.decisions
    notes = _Notes(fh)  # checkpoint entry index -> note, for anchors
    pending_external: dict[int, list[CheckpointSeen]] = {}
    openings: Iterator[Opening] | None = (
        iter_openings(openings_file) if openings_file is not None else None
    )
    next_opening = next(openings, None) if openings is not None else None
    committed = E.COMMITTED_FIELD
    sealed = False
    progress_bytes = 0
    i = 0
    item: Record | Tail
    stack = frontier._stack
    stack_pop, stack_push = stack.pop, stack.append
    sha256 = hashlib.sha256
    check_entry = E.check_entry
    after_seal = E.AFTER_SEAL
    bulk = (E.EXECUTE_REQUEST, E.OUTPUT)
    output_kind = E.OUTPUT
    execute_kind = E.EXECUTE_REQUEST
    researcher: Verifier | None = None
    last_content = -1
    for i, item in enumerate(iter_records(fh, start)):
        if isinstance(item, Tail):
            if item.nbytes:
                raise LedgerIntegrityError(
                    f"record is incomplete or damaged: {item.reason} (a torn write or a "
                    "truncated copy; the writer's `Ledger.open` recovers a torn tail)",
                    index=i,
                )
            break
        if not item.valid:
            raise LedgerIntegrityError(
                "record checksum mismatch: the entry's bytes were altered after it was written",
                index=i,
            )
        try:
            entry = parse_canonical(item.payload)
        except ValueError as exc:
            raise LedgerIntegrityError(f"entry is not canonical JSON: {exc}", index=i) from exc
        check_entry(entry, i)
        if entry["seq"] != i:
            raise LedgerIntegrityError(
                f"entry says it is entry {entry['seq']}: an entry was deleted, reordered or "
                "duplicated here",
                index=i,
            )
        if entry["session"] != session:
            raise LedgerIntegrityError(
                f"entry belongs to session {entry['session']!r}, not {session!r}", index=i
            )
        kind = entry["kind"]
        kinds[kind] += 1
        if kind in bulk:
            # Execute requests and outputs are nearly every entry: keep their path short.
            if sealed:
                raise LedgerIntegrityError(
                    f"a {kind} entry after the seal: the session was already closed", index=i
                )
            last_content = i
            if kind == output_kind:
                decision = entry["decision"]
                decisions[decision] += 1
                if decision != "released":
                    report.stopped[(decision, str(entry["layer"]))] += 1
                if "kernel_decision" in entry and (
                    entry["kernel_decision"] != entry["sentry_decision"]
                ):
                    report.disputed[(entry["kernel_decision"], entry["sentry_decision"])] += 1
        else:
            if sealed and kind not in after_seal:
                raise LedgerIntegrityError(
                    f"a {kind} entry after the seal: the session was already closed", index=i
                )
            if kind not in after_seal:
                last_content = i
            if i == 0:
                if kind != E.HEADER:
                    raise LedgerIntegrityError("entry 0 must be the session header", index=0)
                researcher = _read_header(entry, report, verifiers)
                for note in external:
                    seen = _open_external(note, verifiers, report.origin)
                    report.external_checkpoints.append(seen)
                    report.signed_size = max(report.signed_size, seen.size)
                    pending_external.setdefault(seen.size, []).append(seen)
            elif kind == E.HEADER:
                raise LedgerIntegrityError("a second session header", index=i)
            if kind == E.CHECKPOINT:
                frontier.size = i
                _check_checkpoint(entry, i, frontier, verifiers, report)
                notes.add(i, item.offset, entry["note"])
            elif kind == E.ANCHOR:
                _check_anchor(entry, i, notes, chain, report)
            elif kind == E.SEAL:
                sealed = True
        if openings is not None and kind in committed:
            if next_opening is not None and next_opening.index < i:
                raise LedgerIntegrityError(
                    f"an opening names entry {next_opening.index}, which commits to nothing",
                    index=next_opening.index,
                )
            field_name, domain = committed[kind]
            if next_opening is not None and next_opening.index == i:
                if (next_opening.field, next_opening.domain) != (field_name, domain):
                    raise LedgerIntegrityError(
                        f"opening is for {next_opening.field}/{next_opening.domain}, "
                        f"but a {kind} entry commits {field_name}/{domain}",
                        index=i,
                    )
                open_commitment(
                    domain, next_opening.content, next_opening.salt, entry[field_name], index=i
                )
                report.openings_checked += 1
                if researcher is not None and kind == execute_kind:
                    _check_researcher_sig(entry, next_opening.content, researcher, i, report)
                next_opening = next(openings, None)
            elif withheld(entry):
                report.openings_withheld += 1
            else:
                report.openings_missing_count += 1
                if len(report.openings_missing) < 100:
                    report.openings_missing.append(i)
        # Frontier.append, inlined: this loop runs a million times for a long session.
        node = item[2]
        n = i
        while n & 1:
            node = sha256(b"\x01" + stack_pop() + node).digest()
            n >>= 1
        stack_push(node)
        if pending_external and i + 1 in pending_external:
            frontier.size = i + 1
            for seen in pending_external.pop(i + 1):
                if seen.root != frontier.root():
                    raise LedgerIntegrityError(
                        f"the checkpoint signed by {', '.join(seen.signers)} for {seen.size} "
                        f"entries has a different root: some entry in 0..{i} was altered",
                        index=i,
                    )
        if on_entry is not None:
            on_entry(i, entry)
        if bar is not None:
            progress_bytes += len(item.payload) + 36
            if not i & 0xFFF:
                bar.update(progress_bytes)
                progress_bytes = 0
    # iter_records always ends with a Tail, where the loop breaks: i entries were read.
    frontier.size = i
    report.last_content_entry = last_content
    if bar is not None:
        bar.update(progress_bytes)
    if external and frontier.size == 0:
        raise LedgerIntegrityError(
            "the ledger is empty, but the checkpoint given with --checkpoint covers entries: "
            "all of them were cut off",
            index=0,
        )
    if pending_external:
        size = min(pending_external)
        seen = pending_external[size][0]
        raise LedgerIntegrityError(
            f"the ledger ends after {frontier.size} entries, but a checkpoint signed by "
            f"{', '.join(seen.signers)} covers {size}: entries {frontier.size}..{size - 1} "
            "were cut off",
            index=frontier.size,
        )
    if openings is not None and next_opening is not None:
        raise LedgerIntegrityError(
            f"an opening names entry {next_opening.index}, which the ledger does not have "
            "(or which commits to nothing)",
            index=next_opening.index,
        )
    report.size = frontier.size
    report.root = frontier.root()
    report.sealed = sealed


def _read_header(
    entry: dict[str, Any], report: VerifyReport, verifiers: list[Verifier]
) -> Verifier | None:
    """Read the header into the report; return the researcher's key when the header names one."""
    report.header = entry
    researcher: Verifier | None = None
    vkey = entry["identities"].get("researcher")
    if vkey is not None:
        try:
            researcher = Verifier(str(vkey))
        except LedgerError as exc:
            raise LedgerIntegrityError(f"identity 'researcher': {exc}", index=0) from exc
        report.researcher_key = researcher.vkey
    _check_intent(entry, researcher, report)
    if entry["origin"] != report.origin:
        raise LedgerIntegrityError(
            f"header origin {entry['origin']!r} differs from the file's {report.origin!r}",
            index=0,
        )
    if not verifiers:
        for role, vkey in sorted(entry["identities"].items()):
            try:
                verifiers.append(Verifier(vkey))
            except LedgerError as exc:
                raise LedgerIntegrityError(f"identity {role!r}: {exc}", index=0) from exc
        report.self_asserted_keys = True
        report.trusted_keys = [v.vkey for v in verifiers]
        report.warnings.append(
            "no --key given: signatures were checked against the keys the header names, which "
            "proves consistency, not who signed; pass the custodian's key with --key"
        )
    return researcher


def _check_intent(entry: dict[str, Any], researcher: Verifier | None, report: VerifyReport) -> None:
    """The header's intent is exactly what the researcher signed (extension/mirror.py signs
    rfc8785 of the intent without `researcher_sig`); the hospital's additions are in `grant`."""
    intent = entry["intent"]
    sig = intent.get("researcher_sig")
    if sig is None:
        return  # an intent the hospital recorded alone (report.intent_signed stays False)
    if researcher is None:
        report.warnings.append(
            "the header's intent is signed, but the header names no researcher key to check it"
        )
        return
    if intent.get("researcher_key") not in (None, researcher.vkey):
        raise SignatureError(
            "the header's intent names another researcher key than the header's identities",
            index=0,
        )
    try:
        raw = base64.b64decode(str(sig), validate=True)
        body = {k: v for k, v in intent.items() if k != "researcher_sig"}
        researcher.verify(canonical_json(body), raw)
    except (binascii.Error, ValueError, SignatureError) as exc:
        raise SignatureError(
            "the header's intent is not what the researcher signed (a field was added, removed "
            f"or changed after signing; the hospital's additions belong in 'grant'): {exc}",
            index=0,
        ) from exc
    report.intent_signed = True


def researcher_signed_bytes(msg_id: str, code: bytes) -> bytes:
    """What the researcher's extension signs for an execute request (extension/mirror.py):
    RFC 8785 JSON of {"msg_id", "code_digest": "sha256:<hex of the code's UTF-8 bytes>"}."""
    digest = "sha256:" + hashlib.sha256(code).hexdigest()
    return canonical_json({"msg_id": msg_id, "code_digest": digest})


def _check_researcher_sig(
    entry: dict[str, Any], code: bytes, researcher: Verifier, i: int, report: VerifyReport
) -> None:
    """The execute request's `researcher_sig` (base64 Ed25519) over its msg_id and opened code."""
    sig = entry["researcher_sig"]
    if sig is None:
        report.researcher_unsigned += 1
        if report.researcher_unsigned_first < 0:
            report.researcher_unsigned_first = i
        return
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("execute request's researcher_sig is not base64", index=i) from exc
    try:
        researcher.verify(researcher_signed_bytes(entry["msg_id"], code), raw)
    except SignatureError as exc:
        raise SignatureError(
            f"the researcher's signature on execute request {entry['msg_id']!r} does not verify "
            f"with the researcher key the header names ({researcher.name}): the code or msg_id "
            "differs from what the researcher sent",
            index=i,
        ) from exc
    report.researcher_sigs_checked += 1


def _open_external(note: str, verifiers: list[Verifier], origin: str) -> CheckpointSeen:
    try:
        cp, signers = open_checkpoint(note, verifiers)
    except LedgerError as exc:
        raise _note_error(exc, -1, "checkpoint given with --checkpoint") from exc
    if cp.origin != origin:
        raise SignatureError(
            f"checkpoint given with --checkpoint is for {cp.origin!r}, not {origin!r}"
        )
    return CheckpointSeen(-1, cp.size, cp.root, tuple(signers))


def _check_checkpoint(
    entry: dict[str, Any],
    i: int,
    frontier: Frontier,
    verifiers: list[Verifier],
    report: VerifyReport,
) -> None:
    try:
        cp, signers = open_checkpoint(entry["note"], verifiers)
    except LedgerError as exc:
        raise _note_error(exc, i, "checkpoint") from exc
    if cp.origin != report.origin:
        raise LedgerIntegrityError(
            f"checkpoint origin {cp.origin!r} is not the ledger's {report.origin!r}", index=i
        )
    if cp.size != entry["size"] or not 0 < cp.size <= i:
        raise LedgerIntegrityError(
            f"checkpoint size {cp.size} does not fit entry {i} (size field {entry['size']})",
            index=i,
        )
    current = frontier.root()
    if cp.size == i:
        if entry["proof"]:
            raise LedgerIntegrityError("checkpoint at its own size carries a proof", index=i)
        if cp.root != current:
            raise LedgerIntegrityError(
                f"signed root {cp.root.hex()[:16]}… is not the root of entries 0..{i - 1} "
                f"({current.hex()[:16]}…): an earlier entry was altered",
                index=i,
            )
    else:
        try:
            proof = [base64.b64decode(h, validate=True) for h in entry["proof"]]
            verify_consistency(cp.size, i, proof, cp.root, current)
        except (binascii.Error, ValueError, ProofError) as exc:
            raise LedgerIntegrityError(
                f"signed root for {cp.size} entries is not consistent with entries 0..{i - 1} "
                f"({exc}): an earlier entry was altered",
                index=i,
            ) from exc
    # Bounded: a sentry may checkpoint very often; the first and the latest are what a report shows.
    if len(report.checkpoints) >= _KEEP_CHECKPOINTS:
        del report.checkpoints[_KEEP_CHECKPOINTS // 2]
    report.checkpoints.append(CheckpointSeen(i, cp.size, cp.root, tuple(signers)))
    report.checkpoint_count += 1
    report.signed_size = max(report.signed_size, cp.size)


@dataclass(frozen=True)
class _Chain:
    """Where and how strictly to check anchors on chain (`ledger verify --rpc ...`)."""

    rpc: str
    confirmations: int | None
    finalized: bool
    contract: str | None
    submitter: str | None


def _check_anchor(
    entry: dict[str, Any],
    i: int,
    notes: _Notes,
    chain: _Chain | None,
    report: VerifyReport,
) -> None:
    from . import anchor as _anchor  # web3 itself is imported only for the on-chain check

    ci = entry["checkpoint_index"]
    note = notes.get(ci)
    if note is None:
        raise LedgerIntegrityError(
            f"anchor names entry {ci} as its checkpoint, which is not an earlier checkpoint",
            index=i,
        )
    raw = note.encode("utf-8")
    try:
        _anchor.check_anchor_entry(entry, raw)
    except AnchorError as exc:
        raise LedgerIntegrityError(
            f"anchor of checkpoint entry {ci}: {exc.diagnostics()}", index=i
        ) from exc
    status = "not checked on chain (pass --rpc URL)"
    if chain is not None:
        try:
            _anchor.verify_anchor_entry(
                entry,
                raw,
                chain.rpc,
                confirmations=chain.confirmations,
                finalized=chain.finalized,
                expected_contract=chain.contract,
                expected_submitter=chain.submitter,
            )
        except AnchorError as exc:
            raise AnchorError(
                f"anchor of checkpoint entry {ci}: {exc.diagnostics()}", index=i
            ) from exc
        except ImportError as exc:
            raise LedgerError(
                f"checking anchors on chain needs web3 ({exc}); install bedside with its "
                "default dependencies or drop --rpc"
            ) from exc
        status = "verified on chain"
    report.anchors.append(
        {
            "index": i,
            "checkpoint_index": ci,
            "chain_id": entry["chain_id"],
            "contract": entry["contract"],
            "tx": entry["tx"],
            "block": entry["block"],
            "root": entry["root"],
            "status": status,
        }
    )


def read_checkpoint(note_file: str | os.PathLike[str]) -> str:
    try:
        return Path(note_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"{note_file}: cannot read checkpoint: {exc.strerror}") from exc


__all__ = ["CheckpointSeen", "Checkpoint", "VerifyReport", "iter_entries", "verify_ledger"]
