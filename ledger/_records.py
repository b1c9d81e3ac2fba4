"""The append-only record file under a ledger and its openings (see docs/ledger-format.md).

    file    := MAGIC meta-record record*
    record  := length:u32 big-endian  payload[length]  check[32]
    check   := SHA-256(0x00 || payload)      (the RFC 6962 leaf hash of the payload)

The check of a ledger record is the entry's Merkle leaf hash, so checking a record costs nothing
beyond what verifying the tree costs anyway. A crash mid-write leaves a torn last record (short,
or failing its check); `scan` reports where the intact prefix ends so the writer can cut the torn
bytes off without losing any committed record.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

LEDGER_MAGIC = b"bedside-ledger\x00\x01"
OPENINGS_MAGIC = b"bedside-opening\x01"
_LEN = struct.Struct(">I")
CHECK_SIZE = 32
MAX_RECORD = 1 << 30  # a sanity bound: longer lengths are corruption, not data
_CHUNK = 1 << 20


def record_check(payload: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + payload).digest()


def encode_record(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload + record_check(payload)


def record_parts(pieces: Sequence[bytes]) -> list[bytes]:
    """The record of the payload `b"".join(pieces)`, as buffers to write in order.

    Same bytes as `encode_record(b"".join(pieces))`, without joining: a megabyte payload is
    hashed piece by piece and written as it is, never copied.
    """
    check = hashlib.sha256(b"\x00")
    length = 0
    for piece in pieces:
        check.update(piece)
        length += len(piece)
    return [_LEN.pack(length), *pieces, check.digest()]


class Record(NamedTuple):
    """One record as read (a NamedTuple: millions are made during a verify)."""

    offset: int  # file offset of the length prefix
    payload: bytes
    check: bytes  # as stored
    valid: bool  # stored check equals the recomputed one


@dataclass(frozen=True)
class Tail:
    """What follows the last complete record: nothing, or a torn/corrupt remainder."""

    offset: int  # where the intact prefix ends
    nbytes: int  # bytes after it (0 = clean end of file, -1 = unknown: bad length prefix)
    reason: str


def iter_records(fh: BinaryIO, start: int) -> Iterator[Record | Tail]:
    """Yield every record from `start`, then one `Tail` describing the end of the file.

    Reads in 1 MiB chunks so memory stays flat however long the file is. A record whose check
    fails is yielded with `valid=False`; the caller decides whether that is a torn tail (it is the
    last thing in the file) or corruption in the middle.
    """
    fh.seek(start)
    buf = b""
    pos = 0  # position in buf
    base = start  # file offset of buf[0]
    sha = hashlib.sha256
    unpack = _LEN.unpack_from
    eof = False
    new_record = tuple.__new__  # skips NamedTuple.__new__'s Python frame: this runs per record
    while True:
        avail = len(buf) - pos
        need = 4
        if avail >= 4:
            (length,) = unpack(buf, pos)
            if length > MAX_RECORD:
                yield Tail(base + pos, -1, f"a record length of {length} bytes is implausible")
                return
            need = 4 + length + CHECK_SIZE
        if avail < need:
            if not eof:
                more = fh.read(max(_CHUNK, need - avail))
                if more:
                    buf = buf[pos:] + more
                    base += pos
                    pos = 0
                    continue
                eof = True
            if avail == 0:
                yield Tail(base + pos, 0, "")
            elif avail < 4:
                yield Tail(base + pos, avail, "the last record's length prefix is cut short")
            else:
                yield Tail(
                    base + pos, avail, f"the last record is cut short ({avail} of {need} bytes)"
                )
            return
        end = pos + 4 + length
        payload = buf[pos + 4 : end]
        check = buf[end : end + CHECK_SIZE]
        yield new_record(
            Record, (base + pos, payload, check, sha(b"\x00" + payload).digest() == check)
        )
        pos = end + CHECK_SIZE
