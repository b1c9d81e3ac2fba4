"""Attacks on a finished ledger, from the reviewer's side: each is detected and names the entry.

The reviewer holds the custodian's verifier key and the final cosigned checkpoint (the
researcher's copy), and runs `verify_ledger` on whatever file they were handed.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ledger_session import build_session

from bedside.errors import LedgerIntegrityError, SignatureError
from bedside.ledger import Signer, canonical_json, commit, openings_path, verify_ledger
from bedside.ledger._records import (
    LEDGER_MAGIC,
    OPENINGS_MAGIC,
    Record,
    Tail,
    encode_record,
    iter_records,
)
from bedside.ledger.commitment import parse_canonical

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class Session:
    """A finished ledger and what the reviewer holds."""

    def __init__(self, root: Path, custodian: Signer, researcher: Signer) -> None:
        self.path = root / "original.ledger"
        ledger = build_session(self.path, custodian, researcher)
        self.size = ledger.size
        self.final_note = ledger.entry(ledger.size - 1)["note"]
        ledger.close()
        self.key = custodian.verifier_key
        self.raw = self.path.read_bytes()
        self.records, self.start = _records(self.path, LEDGER_MAGIC)
        self.work = root / "work"
        self.work.mkdir()

    def verify(self, data: bytes, openings: bytes | None = None) -> None:
        target = self.work / "handed.ledger"
        target.write_bytes(data)
        op = openings_path(target)
        if openings is None:
            shutil.copy(openings_path(self.path), op)
        else:
            op.write_bytes(openings)
        verify_ledger(target, keys=[self.key], openings=op, checkpoints=[self.final_note])

    def rebuild(self, payloads: list[bytes]) -> bytes:
        return self.raw[: self.start] + b"".join(encode_record(p) for p in payloads)

    @property
    def payloads(self) -> list[bytes]:
        return [r.payload for r in self.records]


def _records(path: Path, magic: bytes) -> tuple[list[Record], int]:
    from bedside.ledger.log import read_meta

    with open(path, "rb") as fh:
        _, start = read_meta(fh, magic, path)
        records = [r for r in iter_records(fh, start) if not isinstance(r, Tail)]
    return records, start


@pytest.fixture()
def session(tmp_path: Path, custodian: Signer, researcher: Signer) -> Session:
    return Session(tmp_path, custodian, researcher)


def _failure(session: Session, data: bytes, openings: bytes | None = None) -> LedgerIntegrityError:
    with pytest.raises(LedgerIntegrityError) as info:
        session.verify(data, openings)
    return info.value


def test_the_untouched_copy_verifies(session: Session) -> None:
    session.verify(session.raw)


@SETTINGS
@given(data=st.data())
def test_any_flipped_byte_is_detected_and_named(session: Session, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, len(session.raw) - 1), label="offset")
    bit = data.draw(st.integers(0, 7), label="bit")
    tampered = bytearray(session.raw)
    tampered[offset] ^= 1 << bit
    error = _failure(session, bytes(tampered))
    if offset < session.start:
        assert error.index is None and "header" in error.message or "magic" in error.message
    else:
        # The entry whose record holds the flipped byte is the one named.
        expected = max(i for i, r in enumerate(session.records) if r.offset <= offset)
        assert error.index == expected, error.diagnostics()


@SETTINGS
@given(data=st.data())
def test_a_deleted_entry_is_named(session: Session, data: st.DataObject) -> None:
    # The last entry is the final checkpoint, whose note the reviewer already holds: dropping it
    # from the file loses nothing that was signed, so it is not drawn here.
    k = data.draw(st.integers(0, session.size - 2))
    payloads = session.payloads
    del payloads[k]
    error = _failure(session, session.rebuild(payloads))
    assert error.index == k, error.diagnostics()


@SETTINGS
@given(data=st.data())
def test_reordered_entries_are_named(session: Session, data: st.DataObject) -> None:
    j = data.draw(st.integers(0, session.size - 2))
    k = data.draw(st.integers(j + 1, session.size - 1))
    payloads = session.payloads
    payloads[j], payloads[k] = payloads[k], payloads[j]
    error = _failure(session, session.rebuild(payloads))
    assert error.index == j, error.diagnostics()


@SETTINGS
@given(data=st.data())
def test_a_duplicated_entry_is_named(session: Session, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, session.size - 1))
    payloads = session.payloads
    payloads.insert(k + 1, payloads[k])
    error = _failure(session, session.rebuild(payloads))
    assert error.index == k + 1, error.diagnostics()


def test_truncation_behind_a_signed_checkpoint_is_named(session: Session) -> None:
    payloads = session.payloads
    for keep in range(0, session.size - 1):  # (the last entry is the held note itself)
        error = _failure(session, session.rebuild(payloads[:keep]))
        assert error.index == keep, error.diagnostics()
        assert "cut off" in error.message
    # Cut inside a record: the torn record is named.
    error = _failure(session, session.raw[:-5])
    assert error.index == session.size - 1


def test_rewritten_entry_with_fresh_checksums_is_caught_by_the_next_checkpoint(
    session: Session,
) -> None:
    payloads = session.payloads
    k = next(
        i
        for i, p in enumerate(payloads)
        if parse_canonical(p)["kind"] == "output" and parse_canonical(p)["decision"] == "blocked"
    )
    entry = parse_canonical(payloads[k])
    entry["decision"] = "released"  # pretend a blocked output had been released
    payloads[k] = canonical_json(entry)
    error = _failure(session, session.rebuild(payloads))
    next_checkpoint = next(
        i
        for i in range(k + 1, session.size)
        if parse_canonical(payloads[i])["kind"] == "checkpoint"
    )
    assert error.index == next_checkpoint and "altered" in error.message


@SETTINGS
@given(data=st.data())
def test_a_forged_checkpoint_signature_is_named(session: Session, data: st.DataObject) -> None:
    payloads = session.payloads
    checkpoints = [i for i, p in enumerate(payloads) if parse_canonical(p)["kind"] == "checkpoint"]
    k = data.draw(st.sampled_from(checkpoints))
    entry = parse_canonical(payloads[k])
    text, sigs = entry["note"].split("\n\n")
    forged_lines = []
    for line in sigs.strip("\n").split("\n"):
        prefix, sig = line.rsplit(" ", 1)
        raw = bytearray(base64.b64decode(sig))
        raw[4 + data.draw(st.integers(0, 63))] ^= 1 << data.draw(st.integers(0, 7))
        forged_lines.append(f"{prefix} {base64.b64encode(bytes(raw)).decode()}")
    entry["note"] = text + "\n\n" + "\n".join(forged_lines) + "\n"
    payloads[k] = canonical_json(entry)
    with pytest.raises(SignatureError) as info:
        session.verify(session.rebuild(payloads))
    assert info.value.index == k


def test_a_checkpoint_signed_by_an_untrusted_key_is_named(session: Session) -> None:
    payloads = session.payloads
    mallory = Signer.generate("custodian")  # same name, different key
    for k, p in enumerate(payloads):
        entry = parse_canonical(p)
        if entry["kind"] == "checkpoint":
            text = entry["note"].split("\n\n")[0] + "\n"
            from bedside.ledger import sign_note

            entry["note"] = sign_note(text, mallory)
            payloads[k] = canonical_json(entry)
            break
    with pytest.raises(SignatureError, match="no trusted key") as info:
        session.verify(session.rebuild(payloads))
    assert info.value.index == k


@SETTINGS
@given(data=st.data())
def test_a_swapped_opening_is_named(session: Session, data: st.DataObject) -> None:
    records, start = _records(openings_path(session.path), OPENINGS_MAGIC)
    openings = [parse_canonical(r.payload) for r in records]
    by_domain: dict[str, list[int]] = {}
    for n, o in enumerate(openings):
        by_domain.setdefault(o["domain"], []).append(n)
    domain = data.draw(st.sampled_from(sorted(d for d, ns in by_domain.items() if len(ns) > 1)))
    a, b = data.draw(
        st.lists(st.sampled_from(by_domain[domain]), min_size=2, max_size=2, unique=True)
    )
    swap = data.draw(st.sampled_from(["content", "salt", "both"]))
    fields = ["content", "salt"] if swap == "both" else [swap]
    # Two blocked outputs may hold the same text; swapping equal contents changes nothing.
    assume(any(openings[a][f] != openings[b][f] for f in fields))
    for f in fields:
        openings[a][f], openings[b][f] = openings[b][f], openings[a][f]
    raw = openings_path(session.path).read_bytes()[:start] + b"".join(
        encode_record(canonical_json(o)) for o in openings
    )
    error = _failure(session, session.raw, raw)
    assert error.index == min(openings[a]["index"], openings[b]["index"]), error.diagnostics()


@settings(max_examples=50, deadline=None, derandomize=True)
@given(content=st.binary(max_size=200))
def test_equal_contents_give_different_commitments(content: bytes) -> None:
    first, salt1 = commit("bedside/output/v1", content)
    second, salt2 = commit("bedside/output/v1", content)
    assert first != second and salt1 != salt2
    # ... and the same salt gives the same commitment (it is a function of salt and content).
    assert commit("bedside/output/v1", content, salt=salt1)[0] == first
