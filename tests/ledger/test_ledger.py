"""The writer API (docs/dev/contracts.md) and the reviewer's verify on an intact ledger."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from bedside.ledger import (
    Ledger,
    Signer,
    Verifier,
    commit,
    open_commitment,
    openings_path,
    publishable_openings,
    read_openings,
    verify_ledger,
)
from bedside.ledger import entries as E
from bedside.ledger.note import Checkpoint, open_checkpoint
from ledger_session import ORIGIN, SESSION, build_session

from bedside.errors import LedgerError, LedgerIntegrityError, SignatureError


def test_signer_roundtrip_and_file_mode(tmp_path: Path) -> None:
    signer = Signer.generate("custodian")
    key = tmp_path / "custodian.key"
    signer.save(key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again = Signer.load(key)
    assert again.verifier_key == signer.verifier_key
    sig = again.sign(b"msg")
    Verifier(signer.verifier_key).verify(b"msg", sig)
    with pytest.raises(SignatureError):
        Verifier(signer.verifier_key).verify(b"other", sig)
    with pytest.raises(LedgerError, match="already exists"):
        signer.save(key)


def test_commitments_hide_and_bind() -> None:
    c1, s1 = commit(E.DOMAIN_CODE if hasattr(E, "DOMAIN_CODE") else "bedside/code/v1", b"x = 1")
    c2, s2 = commit("bedside/code/v1", b"x = 1")
    assert c1 != c2 and s1 != s2 and len(s1) == 32
    open_commitment("bedside/code/v1", b"x = 1", s1, c1)
    with pytest.raises(LedgerIntegrityError):
        open_commitment("bedside/code/v1", b"x = 2", s1, c1)
    with pytest.raises(LedgerIntegrityError):
        open_commitment("bedside/output/v1", b"x = 1", s1, c1)


def test_append_reopen_same_root(tmp_path: Path, custodian: Signer, researcher: Signer) -> None:
    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher)
    size, root = ledger.size, ledger.root()
    first = ledger.entry(1)
    ledger.close()
    again = Ledger.open(path)
    assert (again.size, again.root(), again.recovered) == (size, root, [])
    assert again.entry(1) == first and again.sealed
    with pytest.raises(LedgerError, match="sealed"):
        again.append(E.metering(session=SESSION, counters={}))
    again.append_checkpoint(again.sign_checkpoint(custodian))  # checkpoints may follow the seal
    again.close()


def test_checkpoint_body_and_signature(tmp_path: Path, custodian: Signer) -> None:
    ledger = Ledger.create(tmp_path / "s.ledger", session_id=SESSION, origin=ORIGIN)
    ledger.append(
        E.header(
            session=SESSION,
            origin=ORIGIN,
            intent={},
            policy_id="p",
            policy_digest="sha256:00",
            kernel_env="sha256:00",
            identities={"custodian": custodian.verifier_key},
        )
    )
    body = ledger.checkpoint_body()
    assert body == Checkpoint(ORIGIN, 1, ledger.root()).body()
    cp, signers = open_checkpoint(ledger.sign_checkpoint(custodian), [custodian.verifier])
    assert (cp.size, cp.root, signers) == (1, ledger.root(), ["custodian"])
    ledger.close()


def test_append_rules(tmp_path: Path, custodian: Signer) -> None:
    ledger = Ledger.create(tmp_path / "s.ledger", session_id=SESSION, origin=ORIGIN)
    with pytest.raises(LedgerError, match="header must be entry 0"):
        ledger.append(E.metering(session=SESSION, counters={}))
    ledger.append(
        E.header(
            session=SESSION,
            origin=ORIGIN,
            intent={},
            policy_id="p",
            policy_digest="sha256:00",
            kernel_env="sha256:00",
            identities={},
        )
    )
    with pytest.raises(LedgerError, match="diverged"):
        ledger.append({**E.metering(session=SESSION, counters={}), "seq": 5})
    with pytest.raises(LedgerError, match="session"):
        ledger.append(E.metering(session="other", counters={}))
    with pytest.raises(LedgerIntegrityError, match="mistyped"):
        ledger.append({"kind": "output", "msg_id": "m"})
    entry, opening = E.execute_request(session=SESSION, msg_id="m", code="1", researcher_sig=None)
    with pytest.raises(LedgerError, match="takes no opening"):
        ledger.append(E.metering(session=SESSION, counters={}), opening=opening)
    # The mirror appends the stored form and gets the same bytes.
    idx = ledger.append(entry, opening=opening, sync=True)
    stored = ledger.entry(idx)
    assert stored["seq"] == idx and stored["ts"] == entry["ts"]
    ledger.close()
    with pytest.raises(LedgerError, match="already exists"):
        Ledger.create(tmp_path / "s.ledger", session_id=SESSION, origin=ORIGIN)


def test_mirror_copy_has_the_same_root(
    tmp_path: Path, custodian: Signer, researcher: Signer
) -> None:
    hospital = build_session(tmp_path / "h.ledger", custodian, researcher)
    mirror = Ledger.create(tmp_path / "r.ledger", session_id=SESSION, origin=ORIGIN)
    for i in range(hospital.size):
        mirror.append(hospital.entry(i))
    assert mirror.root() == hospital.root()
    hospital.close()
    mirror.close()


def test_verify_intact_ledger(session_ledger: Path, custodian: Signer, researcher: Signer) -> None:
    report = verify_ledger(
        session_ledger, keys=[custodian.verifier_key], openings=openings_path(session_ledger)
    )
    assert report.sealed and report.size == 17
    assert report.openings_checked == 9 and not report.openings_missing
    assert report.decisions == {"released": 3, "blocked": 3}
    assert report.signed_size == 16 and not report.warnings
    # The researcher's key alone verifies the cosigned checkpoints but not the last one.
    with pytest.raises(SignatureError) as info:
        verify_ledger(session_ledger, keys=[researcher.verifier_key])
    assert info.value.index == 14


def test_publishable_openings_drop_blocked(
    session_ledger: Path, tmp_path: Path, custodian: Signer
) -> None:
    out = tmp_path / "public.openings"
    kept, dropped = publishable_openings(session_ledger, out)
    assert (kept, dropped) == (6, 3)
    public = read_openings(out)
    assert all(b"MRN" not in o.content for o in public.values())
    report = verify_ledger(session_ledger, keys=[custodian.verifier_key], openings=out)
    assert report.openings_checked == 6 and report.openings_withheld == 3
    assert not report.openings_missing


def test_anchor_entries_are_listed_and_checked_on_request(
    tmp_path: Path, custodian: Signer, researcher: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain check itself lives in bedside.ledger.anchor (anchor branch); here a stand-in
    module records the call so the hand-over (entry, note bytes, rpc, confirmations) is tested."""
    import sys
    import types

    from bedside.errors import AnchorError

    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher, cells=1)
    cp_index = ledger.size - 1
    note = ledger.entry(cp_index)["note"]
    ledger.append(
        E.anchor(
            session=SESSION,
            checkpoint_index=cp_index,
            chain_id=31337,
            contract="0x" + "11" * 20,
            tx="0x" + "22" * 32,
            block=7,
            submitter="0x" + "33" * 20,
            root="0x" + "44" * 32,
        )
    )
    ledger.close()
    report = verify_ledger(path, keys=[custodian.verifier_key])
    assert report.anchors[0]["status"].startswith("not checked")

    calls: list[tuple[object, ...]] = []
    fake = types.ModuleType("bedside.ledger.anchor")

    def verify_anchor_entry(
        entry: dict[str, object], checkpoint_note: bytes, rpc_url: str, *, confirmations: int | None
    ) -> None:
        calls.append((entry["tx"], checkpoint_note, rpc_url, confirmations))
        if rpc_url.endswith("bad"):
            raise AnchorError("root not found in the transaction's logs")

    fake.verify_anchor_entry = verify_anchor_entry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bedside.ledger.anchor", fake)
    report = verify_ledger(
        path, keys=[custodian.verifier_key], rpc="http://127.0.0.1:8545", confirmations=3
    )
    assert report.anchors[0]["status"] == "verified on chain"
    assert calls == [("0x" + "22" * 32, note.encode(), "http://127.0.0.1:8545", 3)]
    with pytest.raises(AnchorError, match=f"entry {cp_index + 1}"):
        verify_ledger(path, keys=[custodian.verifier_key], rpc="http://x/bad")


def test_old_checkpoint_notes_are_read_back_for_anchors(
    tmp_path: Path, custodian: Signer, researcher: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify keeps only recent notes in memory; an anchor naming an old one still gets it."""
    import sys
    import types

    from bedside.ledger import verify as verify_module

    monkeypatch.setattr(verify_module, "_RECENT_NOTES", 1)
    monkeypatch.setattr(verify_module, "_KEEP_CHECKPOINTS", 2)
    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher, cells=3)
    first = ledger.entry(4)
    assert first["kind"] == "checkpoint"
    ledger.append(
        E.anchor(
            session=SESSION,
            checkpoint_index=4,
            chain_id=1,
            contract="0x00",
            tx="0x01",
            block=1,
            submitter="0x02",
            root="0x03",
        )
    )
    ledger.close()
    seen: list[bytes] = []
    fake = types.ModuleType("bedside.ledger.anchor")
    fake.verify_anchor_entry = (  # type: ignore[attr-defined]
        lambda entry, note, rpc, *, confirmations: seen.append(note)
    )
    monkeypatch.setitem(sys.modules, "bedside.ledger.anchor", fake)
    report = verify_ledger(path, keys=[custodian.verifier_key], rpc="http://127.0.0.1:1")
    assert seen == [first["note"].encode()]
    assert report.checkpoint_count == 5 and len(report.checkpoints) <= 2
    assert report.signed_size == 16
