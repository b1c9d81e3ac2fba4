"""The session ledger: an append-only, crash-safe file of entries under an RFC 6962 tree.

`Ledger` is what the sentry (the log's author) and the researcher's extension (its mirror) write
through. Each entry is checked against the schema, written as RFC 8785 bytes in a checksummed
record, and hashed into the Merkle frontier; its opening (salt and content), if any, goes to the
private `.openings` file beside it. Durability is explicit: `append(..., sync=True)` makes that
entry durable before returning; otherwise entries are durable after the next `flush()` (group
commit). A crash can only lose entries appended since the last sync, and `Ledger.open` cuts off a
torn last record and says so.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bedside.errors import LedgerError, LedgerIntegrityError

from . import entries as E
from ._records import (
    LEDGER_MAGIC,
    OPENINGS_MAGIC,
    Record,
    Tail,
    encode_record,
    iter_records,
    record_check,
)
from .commitment import canonical_json, parse_canonical
from .merkle import MerkleTree
from .note import Checkpoint, Signer, sign_note
from .openings import Opening

log = logging.getLogger(__name__)

FORMAT = "bedside-ledger/v1"
_OPENING_KEYS = {"field", "domain", "salt", "content"}
_json_str: Callable[[str], str] = json.encoder.encode_basestring


def openings_path(path: str | os.PathLike[str]) -> Path:
    """`.../session.ledger` -> `.../session.openings`."""
    p = Path(path)
    return p.with_suffix(".openings")


@dataclass(frozen=True)
class Recovery:
    """A torn tail that `Ledger.open` cut off: where, how many bytes, and why."""

    file: Path
    offset: int
    nbytes: int
    reason: str
    saved_to: Path | None

    def __str__(self) -> str:
        saved = f"; the bytes were saved to {self.saved_to}" if self.saved_to else ""
        return (
            f"{self.file}: cut a torn tail of {self.nbytes} bytes at offset {self.offset} "
            f"({self.reason}){saved}"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, magic: bytes, meta: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise LedgerError(f"{path}: already exists; open it with Ledger.open") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(magic + encode_record(meta))
        fh.flush()
        os.fsync(fh.fileno())


def read_meta(fh: BinaryIO, magic: bytes, path: Path) -> tuple[dict[str, Any], int]:
    """Read the magic and the meta record; returns (meta, offset of the first entry record)."""
    head = fh.read(len(magic))
    if head != magic:
        raise LedgerIntegrityError(
            f"{path}: not a bedside {'ledger' if magic == LEDGER_MAGIC else 'openings'} file "
            "(bad magic bytes at offset 0)"
        )
    for item in iter_records(fh, len(magic)):
        if isinstance(item, Tail) or not item.valid:
            raise LedgerIntegrityError(f"{path}: the file header (meta record) is damaged")
        try:
            meta = parse_canonical(item.payload)
        except ValueError as exc:
            raise LedgerIntegrityError(f"{path}: the file header is not canonical JSON") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise LedgerIntegrityError(f"{path}: unknown ledger format in the file header")
        return meta, item.offset + 4 + len(item.payload) + 32
    raise AssertionError("unreachable")  # pragma: no cover


def _later_record_exists(fh: BinaryIO, start: int, end: int) -> int | None:
    """Offset of an intact record starting anywhere in (start, end), if there is one.

    A torn write can only damage the last record; if an intact record follows the damage, the
    damage is corruption in the middle of the file and must not be cut off.
    """
    if end - start > 64 << 20:
        return start + 1  # too much to search; refuse to guess
    fh.seek(start)
    data = fh.read(end - start)
    for o in range(1, len(data) - 4 - 32 + 1):
        length = int.from_bytes(data[o : o + 4], "big")
        stop = o + 4 + length + 32
        if (
            stop <= len(data)
            and record_check(data[o + 4 : o + 4 + length]) == data[o + 4 + length : stop]
        ):
            return start + o
    return None


class _RecordFile:
    """One append-only record file (the ledger or its openings) with torn-tail recovery."""

    def __init__(self, path: Path, magic: bytes) -> None:
        self.path = path
        self.magic = magic
        self.fh: BinaryIO = open(path, "r+b")  # noqa: SIM115 - owned by the Ledger
        self.meta, self.data_start = read_meta(self.fh, magic, path)
        self.recovery: Recovery | None = None

    def scan(self, on_record: Callable[[Record], None], *, recover: bool) -> None:
        """Stream every intact record to `on_record`; cut a torn tail when `recover`.

        Holds one record at a time: a record failing its check is torn only if nothing but the
        end of the file follows it, which is known only when the next item arrives.
        """
        pending: Record | None = None
        count = 0
        tail: Tail | None = None
        for item in iter_records(self.fh, self.data_start):
            if isinstance(item, Tail):
                tail = item
                break
            if pending is not None:
                if not pending.valid:
                    raise LedgerIntegrityError(
                        f"{self.path}: record {count - 1} fails its checksum and intact records "
                        "follow it (corruption, not a torn write); restore the file from a copy",
                        index=count - 1,
                    )
                on_record(pending)
            pending = item
            count += 1
        assert tail is not None
        cut: int | None = None
        reason = ""
        if pending is not None:
            if pending.valid:
                on_record(pending)
            elif tail.nbytes == 0:
                count -= 1
                cut, reason = pending.offset, "the last record fails its checksum"
            else:
                raise LedgerIntegrityError(
                    f"{self.path}: record {count - 1} fails its checksum and more damaged data "
                    "follows it; restore the file from a copy",
                    index=count - 1,
                )
        if cut is None and tail.nbytes != 0:
            cut, reason = tail.offset, tail.reason
        if cut is None:
            return
        size = self.fh.seek(0, os.SEEK_END)
        later = _later_record_exists(self.fh, cut, size)
        if later is not None:
            raise LedgerIntegrityError(
                f"{self.path}: damaged record at offset {cut} is followed by intact data at "
                f"offset {later} (corruption, not a torn write); restore the file from a copy",
                index=count,
            )
        if not recover:
            raise LedgerIntegrityError(f"{self.path}: torn tail: {reason}", index=count)
        self.fh.seek(cut)
        torn = self.fh.read()
        saved: Path | None = self.path.with_name(self.path.name + ".torn")
        try:
            assert saved is not None
            with open(saved, "ab") as out:
                out.write(torn)
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            saved = None
        self.fh.truncate(cut)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.recovery = Recovery(self.path, cut, len(torn), reason, saved)
        log.warning("%s", self.recovery)

    def close(self) -> None:
        self.fh.close()


class Ledger:
    """An open session ledger (writer side).

    One process writes a ledger file; within it, appends from several threads (the sentry
    relays five channels) are serialised by a lock, so indices and bytes never interleave.
    """

    def __init__(self, path: Path, records: _RecordFile, openings: _RecordFile) -> None:
        self.path = path
        self._file = records
        self._openings = openings
        meta = records.meta
        self.session_id: str = meta["session"]
        self.origin: str = meta["origin"]
        self._tree = MerkleTree()
        self._offsets = array("Q")
        self._end = records.data_start
        self._sealed = False
        self._dirty = False
        self._fh = records.fh
        self._fh.seek(0, os.SEEK_END)
        self.recovered: list[Recovery] = []
        self._closed = False
        self._lock = threading.RLock()
        # Held from a flush's write-out until its fsyncs are done (see `flush`): fsyncs stay in
        # the order of their write-outs, and `close` does not close a file being synced.
        self._sync_lock = threading.Lock()
        # The bytes of the entry appended last: the writer (the sentry's receipts) reads it back
        # at once, and from here that costs no read of the file.
        self._last: tuple[int, bytes] = (-1, b"")

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, session_id: str, origin: str) -> Ledger:
        """Create a new, empty ledger and its openings file (both mode 0600).

        `origin` is the C2SP checkpoint origin line, e.g. "bedside.st-marys.nhs.uk/session/<id>".
        """
        p = Path(path)
        if not origin or "\n" in origin:
            raise LedgerError("origin must be one non-empty line (e.g. hospital.example/bedside)")
        meta = canonical_json({"format": FORMAT, "session": session_id, "origin": origin})
        _write_new(p, LEDGER_MAGIC, meta)
        try:
            _write_new(openings_path(p), OPENINGS_MAGIC, meta)
        except LedgerError:
            p.unlink()
            raise
        _fsync_dir(p)
        return cls.open(p)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Ledger:
        """Open an existing ledger for appending, recovering a torn tail if a crash left one.

        `ledger.recovered` lists what was cut (empty after a clean shutdown). Entries that were
        durable (synced) are never cut: only the record a crash interrupted.
        """
        p = Path(path)
        if not p.exists():
            raise LedgerError(f"{p}: no such ledger")
        records = _RecordFile(p, LEDGER_MAGIC)
        op = openings_path(p)
        if not op.exists():
            records.close()
            raise LedgerError(f"{op}: the ledger's openings file is missing")
        openings = _RecordFile(op, OPENINGS_MAGIC)
        self = cls(p, records, openings)
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def _load(self) -> None:
        def on_entry(rec: Record) -> None:
            index = len(self._offsets)
            entry = parse_canonical(rec.payload)
            if entry.get("seq") != index:
                raise LedgerIntegrityError(
                    f"{self.path}: entry at position {index} says seq {entry.get('seq')}",
                    index=index,
                )
            self._offsets.append(rec.offset)
            self._tree.append(rec.check)
            if entry.get("kind") == E.SEAL:
                self._sealed = True
            self._end = rec.offset + 4 + len(rec.payload) + 32

        self._file.scan(on_entry, recover=True)
        if self._file.recovery:
            self.recovered.append(self._file.recovery)
        # Openings are written before their entry: an opening past the end belongs to an entry
        # the crash lost, so it goes too.
        keep_end = self._openings.data_start
        orphaned = False

        def on_opening(rec: Record) -> None:
            nonlocal keep_end, orphaned
            index = parse_canonical(rec.payload).get("index")
            if orphaned or not isinstance(index, int) or index >= self.size:
                orphaned = True
                return
            keep_end = rec.offset + 4 + len(rec.payload) + 32

        self._openings.scan(on_opening, recover=True)
        if self._openings.recovery:
            self.recovered.append(self._openings.recovery)
        ofh = self._openings.fh
        if ofh.seek(0, os.SEEK_END) != keep_end:
            ofh.truncate(keep_end)
            ofh.flush()
            os.fsync(ofh.fileno())
        ofh.seek(0, os.SEEK_END)
        self._fh.seek(0, os.SEEK_END)

    def _close_unlocked(self) -> None:
        """Flush (durably) and close both files."""
        if self._closed:
            return
        try:
            if self._dirty:
                self.flush()
        finally:
            with self._sync_lock:
                self._closed = True
                self._file.close()
                self._openings.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def _append_unlocked(
        self,
        entry: Mapping[str, Any],
        *,
        opening: Mapping[str, Any] | Opening | None = None,
        sync: bool = False,
    ) -> int:
        """Append one entry (and its opening); returns its index.

        Missing `v`, `session`, `ts` and `seq` are filled in; present ones must agree with this
        ledger. Send `ledger.entry(index)` (not the dict passed here) to the other copy so both
        append identical bytes. With `sync=True` the entry is durable when this returns;
        otherwise it is durable after the next `flush()`.
        """
        if self._closed:
            raise LedgerError(f"{self.path}: the ledger is closed")
        if self._sealed and entry.get("kind") not in E.AFTER_SEAL:
            raise LedgerError(
                f"{self.path}: the session is sealed; only checkpoints and anchors can follow"
            )
        index = self.size
        e = dict(entry)
        if "v" not in e:
            e["v"] = E.VERSION
        if "session" not in e:
            e["session"] = self.session_id
        if "ts" not in e:
            e["ts"] = E.now()
        if "seq" not in e:
            e["seq"] = index
        if e["seq"] != index:
            raise LedgerError(
                f"{self.path}: entry carries seq {e['seq']} but would be entry {index}; "
                "the two copies of the ledger have diverged"
            )
        if e["session"] != self.session_id:
            raise LedgerError(
                f"{self.path}: entry is for session {e['session']!r}, "
                f"this ledger is {self.session_id!r}"
            )
        E.check_entry(e, index)
        kind = e["kind"]
        if (index == 0) != (kind == E.HEADER):
            raise LedgerError(
                f"{self.path}: the header must be entry 0 and only entry 0 (got {kind} at {index})"
            )
        payload = canonical_json(e)
        if opening is not None:
            self._write_opening(index, kind, opening)
            # The opening reaches the file before its entry can: the entry's record goes out
            # whenever its bytes are asked for (`entry_bytes`) or the buffer fills, and a process
            # killed then must not leave an entry whose opening's tail was still buffered (one
            # write call per opening; the fsyncs keep their order in `flush`).
            self._openings.fh.flush()
        record = encode_record(payload)
        self._fh.write(record)
        self._last = (index, payload)
        leaf = record[-32:]
        self._offsets.append(self._end)
        self._end += len(record)
        self._tree.append(leaf)
        self._dirty = True
        if kind == E.SEAL:
            self._sealed = True
            sync = True
        if sync:
            self.flush()
        return index

    def _write_opening(self, index: int, kind: str, opening: Mapping[str, Any] | Opening) -> None:
        expected = E.COMMITTED_FIELD.get(kind)
        if expected is None:
            raise LedgerError(f"a {kind} entry commits to nothing; it takes no opening")
        if isinstance(opening, Opening):
            # Raw salt and content (the mirror's path): same record, no base64 text or escaping.
            self._openings.fh.writelines(opening.record_parts(index, expected))
            return
        if (opening.get("field"), opening.get("domain")) != expected:
            raise LedgerError(
                f"opening for a {kind} entry must be field/domain {expected}, "
                f"got {opening.get('field')}/{opening.get('domain')}"
            )
        salt, content = opening.get("salt"), opening.get("content")
        if set(opening) == _OPENING_KEYS and type(salt) is str and type(content) is str:
            # The common case, written directly: sorted keys, base64 values need no escaping
            # beyond what the C string encoder does. Same bytes as canonical_json.
            payload = (
                f'{{"content":{_json_str(content)},"domain":{_json_str(expected[1])},'
                f'"field":{_json_str(expected[0])},"index":{index},"salt":{_json_str(salt)}}}'
            ).encode()
        else:
            payload = canonical_json({"index": index, **opening})
        self._openings.fh.write(encode_record(payload))

    def _append_checkpoint_unlocked(self, note: str, *, sync: bool = True) -> int:
        """Append a checkpoint entry for a signed note of size <= the current size.

        Adds the consistency proof from the note's size to the entry's position so a streaming
        verifier can check a note signed a few entries ago (while a cosignature travelled).
        """
        from .note import parse_note

        cp = Checkpoint.parse(parse_note(note).text)
        if cp.origin != self.origin:
            raise LedgerError(
                f"checkpoint origin {cp.origin!r} is not this ledger's {self.origin!r}"
            )
        if cp.size > self.size or cp.size == 0:
            raise LedgerError(f"checkpoint size {cp.size} is outside 1..{self.size}")
        if self._tree.root(cp.size) != cp.root:
            raise LedgerError("checkpoint root does not match this ledger at its size")
        proof = self._tree.consistency_proof(cp.size, self.size)
        return self.append(
            E.checkpoint(session=self.session_id, note=note, size=cp.size, proof=proof), sync=sync
        )

    def _write_out_unlocked(self) -> tuple[int, int]:
        """Hand every appended record to the OS (openings first) and take the sync lock;
        returns the descriptors to fsync, openings first. The caller holds `_lock`."""
        if self._closed:
            raise LedgerError(f"{self.path}: the ledger is closed")
        ofh = self._openings.fh
        ofh.flush()
        self._fh.flush()
        self._dirty = False
        self._sync_lock.acquire()
        return ofh.fileno(), self._fh.fileno()

    # -- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._tree)

    @property
    def sealed(self) -> bool:
        return self._sealed

    def root(self) -> bytes:
        return self._tree.root()

    def root_at(self, size: int) -> bytes:
        return self._tree.root(size)

    def leaf_hash(self, index: int) -> bytes:
        return self._tree[index]

    def _entry_bytes_unlocked(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise LedgerError(f"{self.path}: no entry {index} (size {self.size})")
        # Buffered appends reach the file (not the disk) here: other readers of the file (the
        # tests, `bedside review`) see an entry once its receipt has been asked for.
        self._fh.flush()
        if index == self._last[0]:
            return self._last[1]
        offset = self._offsets[index]
        length = int.from_bytes(os.pread(self._fh.fileno(), 4, offset), "big")
        return os.pread(self._fh.fileno(), length, offset + 4)

    def entry(self, index: int) -> dict[str, Any]:
        obj: dict[str, Any] = parse_canonical(self.entry_bytes(index))
        return obj

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.origin, self.size, self.root())

    def checkpoint_body(self) -> bytes:
        """C2SP tlog-checkpoint body for the current size and root."""
        return self.checkpoint().body()

    def sign_checkpoint(self, signer: Signer) -> str:
        """A signed note over the current checkpoint (add cosignatures with `note.cosign`)."""
        return sign_note(self.checkpoint_body().decode("utf-8"), signer)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self._tree.inclusion_proof(index, self.size if size is None else size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return self._tree.consistency_proof(size1, self.size if size2 is None else size2)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, size={self.size})"

    # -- locking wrappers ----------------------------------------------------------------------

    def append(
        self,
        entry: Mapping[str, Any],
        *,
        opening: Mapping[str, Any] | Opening | None = None,
        sync: bool = False,
    ) -> int:
        with self._lock:
            return self._append_unlocked(entry, opening=opening, sync=sync)

    append.__doc__ = _append_unlocked.__doc__

    def append_checkpoint(self, note: str, *, sync: bool = True) -> int:
        with self._lock:
            return self._append_checkpoint_unlocked(note, sync=sync)

    append_checkpoint.__doc__ = _append_checkpoint_unlocked.__doc__

    def flush(self) -> None:
        """Make every entry appended before this call durable: write out, fsync the openings,
        then the ledger.

        The fsyncs (milliseconds, tens of them on a busy disk) run after `_lock` is released:
        an append from another thread (the sentry's relay, while its flusher thread syncs) waits
        only for the write-out, not for the disk. What it appends meanwhile is not promised by
        this flush (it is by the next); what was appended before is on disk when this returns,
        its openings before its records, as when the lock was held throughout. A second flush
        waits for the first's fsyncs (`_sync_lock`), so syncs keep the order of their writes.
        """
        with self._lock:
            openings_fd, ledger_fd = self._write_out_unlocked()
        try:
            os.fsync(openings_fd)
            os.fsync(ledger_fd)
        finally:
            self._sync_lock.release()

    def entry_bytes(self, index: int) -> bytes:
        with self._lock:
            return self._entry_bytes_unlocked(index)

    def close(self) -> None:
        with self._lock:
            self._close_unlocked()

    close.__doc__ = _close_unlocked.__doc__


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
