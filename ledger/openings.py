"""Reading openings files and producing the publishable copy.

The hospital's openings file holds the salt and content of every commitment in the ledger. What
may leave the hospital is a copy without the openings of blocked outputs and refused artifacts:
`publishable_openings` writes that copy, so a reviewer can check every released output against
its commitment while a blocked output stays a commitment only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The base64 of an output's opening is the mirror's and the sentry's largest single cost per
# megabyte with binascii (about 1 ms); pybase64's SIMD encoder writes the same bytes in a
# twentieth of that.
from pybase64 import b64encode

from bedside.errors import LedgerError, LedgerIntegrityError

from . import entries as E
from ._records import (
    _LEN,
    LEDGER_MAGIC,
    OPENINGS_MAGIC,
    Tail,
    encode_record,
    iter_records,
    record_parts,
)
from .commitment import canonical_json, parse_canonical


@dataclass(slots=True)
class Opening:
    """The salt and content that open the commitment of entry `index`."""

    index: int
    field: str
    domain: str
    salt: bytes
    content: bytes

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str) -> Opening:
        try:
            return cls(
                int(d["index"]),
                str(d["field"]),
                str(d["domain"]),
                base64.b64decode(d["salt"], validate=True),
                base64.b64decode(d["content"], validate=True),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise LedgerIntegrityError(f"{where}: malformed opening ({exc})") from exc

    def _check(self, index: int, expected: tuple[str, str]) -> None:
        """Refuse to write this opening for an entry it does not belong to."""
        if (self.field, self.domain) != expected:
            raise LedgerError(
                f"opening for entry {index} must be field/domain {expected}, "
                f"got {self.field}/{self.domain}"
            )
        if self.index != index or type(index) is not int:
            raise LedgerError(f"an opening for entry {self.index} passed with entry {index}")

    def record_parts(self, index: int, expected: tuple[str, str]) -> list[bytes]:
        """This opening's record in the openings file, as buffers to write in order.

        What `Ledger.append(entry, opening=Opening(...))` writes for entry `index`, whose kind
        commits (field, domain) `expected`. The bytes are those of the generic path, the record
        of `canonical_json({"index", "field", "domain", "salt": b64, "content": b64})`, but the
        content's base64 is made once, as bytes, and spliced in: base64 needs no JSON escaping,
        so there is no escape pass, no text copy and no join over a megabyte message.
        """
        self._check(index, expected)
        return record_parts(
            opening_payload_parts(index, self.field, self.domain, self.salt, self.content)
        )


_json_str: Callable[[str], str] = json.encoder.encode_basestring


_HEAD = b'{"content":"'


class PreparedOpening(Opening):
    """An `Opening` whose content's base64 and the hash of its record up to the end of that
    base64 were computed ahead (the sentry does it in a worker thread while the guard scans a
    large output). `record_parts` then finishes the record with the index and the salt, which
    come after the content in the record: the same bytes as `Opening.record_parts`.
    """

    __slots__ = ("_b64", "_hashed")

    def __init__(self, index: int, field: str, domain: str, salt: bytes, content: bytes) -> None:
        super().__init__(index, field, domain, salt, content)
        self._b64 = b64encode(content)
        # The record check is SHA-256(0x00 || payload); the payload starts with the content.
        self._hashed = hashlib.sha256(b"\x00" + _HEAD)
        self._hashed.update(self._b64)

    def record_parts(self, index: int, expected: tuple[str, str]) -> list[bytes]:
        self._check(index, expected)
        head, b64, tail = _HEAD, self._b64, _opening_tail(index, self.field, self.domain, self.salt)
        check = self._hashed.copy()
        check.update(tail)
        return [_LEN.pack(len(head) + len(b64) + len(tail)), head, b64, tail, check.digest()]


def opening_payload_parts(
    index: int, field: str, domain: str, salt: bytes, content: bytes
) -> tuple[bytes, bytes, bytes]:
    """The canonical JSON of an opening record, in three pieces (the middle one the content).

    Keys in RFC 8785 order (content, domain, field, index, salt). Base64 text is ASCII letters,
    digits, `+`, `/` and `=`, none of which JSON escapes, so it goes between the quotes as is;
    field and domain are escaped as `canonical_json` escapes strings.
    """
    return (
        _HEAD,
        b64encode(content),
        _opening_tail(index, field, domain, salt),
    )


def _opening_tail(index: int, field: str, domain: str, salt: bytes) -> bytes:
    """What follows the content's base64 in an opening record (see `opening_payload_parts`)."""
    tail = (
        f'","domain":{_json_str(domain)},"field":{_json_str(field)},"index":{index},'
        f'"salt":"{binascii.b2a_base64(salt, newline=False).decode("ascii")}"}}'
    )
    return tail.encode("utf-8")


def iter_openings(path: str | os.PathLike[str]) -> Iterator[Opening]:
    """Stream the openings in a file, in index order; raises on damage or disorder."""
    from .log import read_meta

    p = Path(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise LedgerError(f"{p}: cannot read openings: {exc.strerror}") from exc
    try:
        _, start = read_meta(fh, OPENINGS_MAGIC, p)
        last = -1
        for n, item in enumerate(iter_records(fh, start)):
            if isinstance(item, Tail):
                if item.nbytes:
                    raise LedgerIntegrityError(f"{p}: opening record {n}: {item.reason}")
                return
            if not item.valid:
                raise LedgerIntegrityError(f"{p}: opening record {n} fails its checksum")
            try:
                d = parse_canonical(item.payload)
            except ValueError as exc:
                raise LedgerIntegrityError(f"{p}: opening record {n}: {exc}") from exc
            opening = Opening.from_dict(d, where=f"{p}: opening record {n}")
            if opening.index <= last:
                raise LedgerIntegrityError(
                    f"{p}: openings out of order (entry {opening.index} after {last})",
                    index=opening.index,
                )
            last = opening.index
            yield opening
    finally:
        fh.close()


def read_openings(path: str | os.PathLike[str]) -> dict[int, Opening]:
    """All openings of a file by entry index (small ledgers; use `iter_openings` to stream)."""
    return {o.index: o for o in iter_openings(path)}


def withheld(entry: dict[str, Any]) -> bool:
    """True for entries whose opening must stay in the hospital (blocked, refused)."""
    kind = entry.get("kind")
    if kind == E.OUTPUT:
        # What the sentry let out is what the researcher saw: a block only the kernel claimed
        # leaves the sentry-released notice public.
        return entry.get("sentry_decision", entry.get("decision")) == "blocked"
    if kind == E.RELEASE:
        return entry.get("decision") != "released"
    return False


def publishable_openings(
    ledger_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    openings: str | os.PathLike[str] | None = None,
) -> tuple[int, int]:
    """Write the openings that may leave the hospital to `out_path`.

    Drops the opening of every blocked output and every artifact not released. Returns (kept,
    withheld) counts. `openings` defaults to the ledger's own openings file.
    """
    from .log import openings_path, read_meta

    lp = Path(ledger_path)
    src = Path(openings) if openings is not None else openings_path(lp)
    out = Path(out_path)
    kept = dropped = 0
    with open(lp, "rb") as lfh:
        meta, start = read_meta(lfh, LEDGER_MAGIC, lp)
        records = iter_records(lfh, start)
        index = -1
        current: dict[str, Any] = {}
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as ofh:
            ofh.write(OPENINGS_MAGIC + encode_record(canonical_json(meta)))
            for opening in iter_openings(src):
                while index < opening.index:
                    item = next(records)
                    if isinstance(item, Tail):
                        raise LedgerIntegrityError(
                            f"{src}: opening for entry {opening.index}, which {lp} does not have",
                            index=opening.index,
                        )
                    index += 1
                    current = parse_canonical(item.payload)
                if withheld(current):
                    dropped += 1
                    continue
                kept += 1
                ofh.write(
                    encode_record(
                        canonical_json(
                            {
                                "index": opening.index,
                                "field": opening.field,
                                "domain": opening.domain,
                                "salt": base64.b64encode(opening.salt).decode(),
                                "content": base64.b64encode(opening.content).decode(),
                            }
                        )
                    )
                )
            ofh.flush()
            os.fsync(ofh.fileno())
    return kept, dropped
