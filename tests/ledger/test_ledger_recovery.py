"""Crash safety: a torn tail is cut on open without losing a committed entry; corruption in the
middle of the file is refused, never "repaired"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ledger_session import ORIGIN, SESSION, build_session

from bedside.errors import LedgerIntegrityError
from bedside.ledger import Ledger, Signer, openings_path, read_openings, verify_ledger
from bedside.ledger import entries as E
from bedside.ledger._records import LEDGER_MAGIC, Tail, iter_records
from bedside.ledger.log import read_meta


def _offsets(path: Path) -> list[int]:
    with open(path, "rb") as fh:
        _, start = read_meta(fh, LEDGER_MAGIC, path)
        return [r.offset for r in iter_records(fh, start) if not isinstance(r, Tail)]


def _unsealed(tmp_path: Path, custodian: Signer, researcher: Signer) -> tuple[Path, int, bytes]:
    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher, cells=2, seal=False)
    entry, opening = E.execute_request(
        session=SESSION, msg_id="last", code="x = 1", researcher_sig=None
    )
    ledger.append(entry, opening=opening, sync=True)
    size, prefix_root = ledger.size, ledger.root_at(ledger.size - 1)
    ledger.close()
    return path, size, prefix_root


def test_truncating_at_every_byte_of_the_last_record_recovers(
    tmp_path: Path, custodian: Signer, researcher: Signer
) -> None:
    path, size, prefix_root = _unsealed(tmp_path, custodian, researcher)
    original = path.read_bytes()
    original_openings = openings_path(path).read_bytes()
    last = _offsets(path)[-1]
    for cut in range(last, len(original)):
        path.write_bytes(original[:cut])
        openings_path(path).write_bytes(original_openings)
        ledger = Ledger.open(path)
        try:
            assert ledger.size == size - 1
            assert ledger.root() == prefix_root
            if cut == last:
                assert ledger.recovered[:1] == [] or ledger.recovered[0].file != path
            else:
                assert ledger.recovered[0].file == path
                assert ledger.recovered[0].nbytes == cut - last
            # The orphaned opening of the lost entry was dropped too.
            assert max(read_openings(openings_path(path))) < size - 1
            # The ledger keeps working and verifies.
            ledger.append(E.metering(session=SESSION, counters={"cells": 2}))
            ledger.append_checkpoint(ledger.sign_checkpoint(custodian))
        finally:
            ledger.close()
        verify_ledger(path, keys=[custodian.verifier_key], openings=openings_path(path))
    assert path.with_name(path.name + ".torn").exists()


def test_a_last_record_failing_its_checksum_is_cut(
    tmp_path: Path, custodian: Signer, researcher: Signer
) -> None:
    path, size, prefix_root = _unsealed(tmp_path, custodian, researcher)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with Ledger.open(path) as ledger:
        assert (ledger.size, ledger.root()) == (size - 1, prefix_root)
        assert "checksum" in ledger.recovered[0].reason


def test_corruption_in_the_middle_is_refused_not_cut(
    tmp_path: Path, custodian: Signer, researcher: Signer
) -> None:
    path, size, _ = _unsealed(tmp_path, custodian, researcher)
    offsets = _offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[3] + 10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerIntegrityError) as info:
        Ledger.open(path)
    assert info.value.index == 3
    assert path.read_bytes() == bytes(data)  # nothing was cut
    # A length prefix pointing past the end, with intact records after it, is corruption too.
    data = bytearray(path.read_bytes())
    data[offsets[3] + 10] ^= 0x01
    data[offsets[3]] = 0x7F
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerIntegrityError):
        Ledger.open(path)
    assert path.read_bytes() == bytes(data)


def test_a_torn_openings_record_is_cut(
    tmp_path: Path, custodian: Signer, researcher: Signer
) -> None:
    path, size, _ = _unsealed(tmp_path, custodian, researcher)
    op = openings_path(path)
    op.write_bytes(op.read_bytes()[:-7])
    with Ledger.open(path) as ledger:
        assert ledger.size == size
        assert [r.file for r in ledger.recovered] == [op]


CHILD = textwrap.dedent(
    """
    import os, sys
    from bedside.ledger import Ledger
    from bedside.ledger import entries as E
    ledger = Ledger.create(sys.argv[1], session_id="s", origin="o/s")
    ledger.append(E.header(session="s", origin="o/s", intent={}, policy_id="p",
                           policy_digest="sha256:00", kernel_env="e", identities={}))
    for i in range(50):
        entry, opening = E.execute_request(session="s", msg_id=str(i), code="x" * 300,
                                           researcher_sig=None)
        ledger.append(entry, opening=opening)
    ledger.flush()                      # 51 entries durable
    for i in range(50, 200):            # not flushed: some reach the OS, the last one torn
        entry, opening = E.execute_request(session="s", msg_id=str(i), code="x" * 300,
                                           researcher_sig=None)
        ledger.append(entry, opening=opening)
    os._exit(0)                         # the process dies without closing the ledger
    """
)


def test_a_process_killed_mid_session_loses_only_unflushed_entries(tmp_path: Path) -> None:
    path = tmp_path / "killed.ledger"
    subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True, timeout=60)
    with Ledger.open(path) as ledger:
        assert 51 <= ledger.size <= 201
        for i in range(1, ledger.size):
            assert ledger.entry(i)["msg_id"] == str(i - 1)
        openings = read_openings(openings_path(path))
        assert set(openings) <= set(range(ledger.size))


READ_THEN_KILLED = textwrap.dedent(
    """
    import os, sys
    from bedside.ledger import Ledger
    from bedside.ledger.openings import Opening
    from bedside.ledger import entries as E
    from bedside.ledger.commitment import DOMAIN_OUTPUT
    ledger = Ledger.create(sys.argv[1], session_id="s", origin="o/s")
    ledger.append(E.header(session="s", origin="o/s", intent={}, policy_id="p",
                           policy_digest="sha256:00", kernel_env="e", identities={}))
    for i in range(6):
        content = (b"%d" % i) * (300_000 if i % 2 else 300)
        entry, opening = E.output_from_bytes(
            session="s", msg_id=str(i), parent="p", channel="iopub", msg_type="stream",
            committed=content, decision="released", rule="", layer="sentry")
        if i % 3 == 0:
            ledger.append(entry, opening=opening)
        else:  # the raw form the researcher's mirror writes (several parts, one write call)
            import base64
            ledger.append(entry, opening=Opening(ledger.size, "content", DOMAIN_OUTPUT,
                                                 base64.b64decode(opening["salt"]), content))
        ledger.entry_bytes(ledger.size - 1)  # a receipt asked for it: it reaches the file
    os._exit(0)                              # killed before any flush
    """
)


def test_an_entry_never_reaches_the_file_before_its_opening(tmp_path: Path) -> None:
    """Entries reach the file (for other readers) when their bytes are asked for, before any
    flush; a process killed then must not leave an entry whose opening is torn or missing
    (the opening's last bytes waiting in its file's buffer)."""
    path = tmp_path / "read.ledger"
    subprocess.run([sys.executable, "-c", READ_THEN_KILLED, str(path)], check=True, timeout=60)
    with Ledger.open(path) as ledger:
        assert ledger.size == 7
        assert not ledger.recovered
        openings = read_openings(openings_path(path))
        assert set(openings) == set(range(1, 7))


def test_create_refuses_an_existing_file_and_origin_must_be_one_line(tmp_path: Path) -> None:
    from bedside.errors import LedgerError

    Ledger.create(tmp_path / "a.ledger", session_id=SESSION, origin=ORIGIN).close()
    with pytest.raises(LedgerError):
        Ledger.create(tmp_path / "a.ledger", session_id=SESSION, origin=ORIGIN)
    with pytest.raises(LedgerError, match="one non-empty line"):
        Ledger.create(tmp_path / "b.ledger", session_id=SESSION, origin="a\nb")


def _entry(i: int) -> tuple[dict, dict]:
    return E.execute_request(session=SESSION, msg_id=f"c{i}", code=f"x = {i}", researcher_sig=None)


def test_an_append_does_not_wait_for_a_flushs_fsync(
    tmp_path: Path, custodian: Signer, researcher: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sentry flushes in a thread of its own while the relay appends: the relay's append
    waits for the flush's write-out, not for its fsyncs (the disk)."""
    import os
    import threading

    ledger = build_session(tmp_path / "f.ledger", custodian, researcher, cells=1, seal=False)
    entry, opening = _entry(0)
    ledger.append(entry, opening=opening)
    in_fsync, appended = threading.Event(), threading.Event()
    order: list[str] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        if not in_fsync.is_set():
            in_fsync.set()
            # The append below runs now; 30 s only keeps a broken lock from hanging the suite.
            order.append("appended during fsync" if appended.wait(30) else "fsync first")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    flusher = threading.Thread(target=ledger.flush)
    flusher.start()
    assert in_fsync.wait(30)
    entry, opening = _entry(1)
    index = ledger.append(entry, opening=opening)
    appended.set()
    flusher.join(60)
    assert order == ["appended during fsync"]
    ledger.flush()
    size = ledger.size
    ledger.close()
    with Ledger.open(tmp_path / "f.ledger") as reopened:
        assert reopened.size == size and not reopened.recovered
        assert reopened.entry(index)["msg_id"] == "c1"


KILLED_DURING_FSYNC = textwrap.dedent(
    """
    import os, sys, threading
    from bedside.ledger import Ledger
    from bedside.ledger import entries as E
    ledger = Ledger.create(sys.argv[1], session_id="s", origin="o/s")
    ledger.append(E.header(session="s", origin="o/s", intent={}, policy_id="p",
                           policy_digest="sha256:00", kernel_env="e", identities={}))
    def cell(i):
        entry, opening = E.execute_request(session="s", msg_id=str(i), code="x = %d" % i,
                                           researcher_sig=None)
        ledger.append(entry, opening=opening)
        ledger.entry_bytes(ledger.size - 1)   # its receipt: the record reaches the file
    for i in range(5):
        cell(i)
    stuck = threading.Event()
    real_fsync = os.fsync
    def fsync(fd):
        stuck.set()
        threading.Event().wait()              # the disk never answers
    os.fsync = fsync
    threading.Thread(target=ledger.flush, daemon=True).start()
    stuck.wait()
    for i in range(5, 10):                    # appended while the flush waits for the disk
        cell(i)
    os._exit(0)                               # killed mid-fsync
    """
)


def test_a_process_killed_during_a_flushs_fsync_leaves_a_valid_ledger(tmp_path: Path) -> None:
    path = tmp_path / "fsync.ledger"
    subprocess.run([sys.executable, "-c", KILLED_DURING_FSYNC, str(path)], check=True, timeout=60)
    with Ledger.open(path) as ledger:
        assert ledger.size == 11
        assert not ledger.recovered
        assert [ledger.entry(i)["msg_id"] for i in range(1, 11)] == [str(i) for i in range(10)]
        assert set(read_openings(openings_path(path))) == set(range(1, 11))


def test_close_waits_for_a_flush_in_progress(
    tmp_path: Path, custodian: Signer, researcher: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush syncs after letting go of the ledger's lock: `close` must not close the files
    under it."""
    import os
    import threading

    ledger = build_session(tmp_path / "c.ledger", custodian, researcher, cells=1, seal=False)
    entry, opening = _entry(0)
    ledger.append(entry, opening=opening)
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync
    errors: list[BaseException] = []

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        release.wait(30)
        real_fsync(fd)

    def flush() -> None:
        try:
            ledger.flush()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    flusher = threading.Thread(target=flush)
    flusher.start()
    assert in_fsync.wait(30)
    closer = threading.Thread(target=ledger.close)
    closer.start()
    release.set()
    flusher.join(60)
    closer.join(60)
    assert errors == []
    with Ledger.open(tmp_path / "c.ledger") as reopened:
        assert reopened.entry(reopened.size - 1)["msg_id"] == "c0"
