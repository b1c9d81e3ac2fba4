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
