"""The writer API (docs/dev/contracts.md) and the reviewer's verify on an intact ledger."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest
from ledger_session import ORIGIN, SESSION, build_session, new_session, researcher_sig

from bedside.errors import LedgerError, LedgerIntegrityError, SignatureError
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


def test_signer_signs_as_openssl_does() -> None:
    # Signer.sign runs on libsodium (faster); Ed25519 is deterministic, so its signatures are
    # byte for byte OpenSSL's, over empty, short, long and binary messages alike.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rng = random.Random(8785)
    for n in range(40):
        seed = rng.randbytes(32)
        signer = Signer("k", seed)
        reference = Ed25519PrivateKey.from_private_bytes(seed)
        for size in (0, 1, 63, 64, 1000, 70_000) if n < 3 else (rng.randrange(0, 2000),):
            msg = rng.randbytes(size)
            assert signer.sign(msg) == reference.sign(msg)
            signer.verifier.verify(msg, signer.sign(msg))
        assert signer.sign(bytearray(b"abc")) == reference.sign(b"abc")


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
    ledger = new_session(tmp_path / "s.ledger", {"custodian": custodian.verifier_key})
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


def anchor_entry(ledger: Ledger, cp_index: int, **fields: Any) -> dict[str, Any]:
    """A single-checkpoint anchor entry for the checkpoint at `cp_index` (chain fields made up)."""
    checkpoint = ledger.entry(cp_index)
    digest = hashlib.sha256(checkpoint["note"].encode()).hexdigest()
    values: dict[str, Any] = {
        "checkpoint_index": cp_index,
        "checkpoint_hash": digest,
        "chain_id": 31337,
        "contract": "0x" + "11" * 20,
        "tx": "0x" + "22" * 32,
        "block": 7,
        "submitter": "0x" + "33" * 20,
        "root": "0x" + digest,
        "size": checkpoint["size"],
    }
    values.update(fields)
    return E.anchor(session=SESSION, **values)


def test_anchor_entries_are_listed_and_checked_on_request(
    tmp_path: Path, custodian: Signer, researcher: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain check itself is bedside.ledger.anchor's (tested against real chains in
    test_anchor.py and tests/integration); here its entry point is replaced by a recorder so the
    hand-over (entry, note bytes, rpc and every chain option) is tested."""
    from bedside.errors import AnchorError
    from bedside.ledger import anchor as anchor_module

    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher, cells=1)
    cp_index = ledger.size - 1
    note = ledger.entry(cp_index)["note"]
    ledger.append(anchor_entry(ledger, cp_index))
    ledger.close()
    report = verify_ledger(path, keys=[custodian.verifier_key])
    assert report.anchors[0]["status"].startswith("not checked")

    calls: list[tuple[object, ...]] = []

    def verify_anchor_entry(
        entry: dict[str, object], checkpoint_note: bytes, rpc_url: str, **options: object
    ) -> None:
        calls.append((entry["tx"], checkpoint_note, rpc_url, options))
        if rpc_url.endswith("bad"):
            raise AnchorError("root not found in the transaction's logs")

    monkeypatch.setattr(anchor_module, "verify_anchor_entry", verify_anchor_entry)
    report = verify_ledger(
        path,
        keys=[custodian.verifier_key],
        rpc="http://127.0.0.1:8545",
        confirmations=3,
        finalized=True,
        contract="0xC0",
        submitter="0x5B",
    )
    assert report.anchors[0]["status"] == "verified on chain"
    options = {
        "confirmations": 3,
        "finalized": True,
        "expected_contract": "0xC0",
        "expected_submitter": "0x5B",
    }
    assert calls == [("0x" + "22" * 32, note.encode(), "http://127.0.0.1:8545", options)]
    with pytest.raises(AnchorError, match=f"^entry {cp_index + 1}: anchor of checkpoint") as info:
        verify_ledger(path, keys=[custodian.verifier_key], rpc="http://x/bad")
    assert info.value.index == cp_index + 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"checkpoint_hash": "ab" * 32}, "is not SHA-256 of the checkpoint note"),
        ({"root": "0x" + "44" * 32}, "wrong root: the entry anchors 0x4444"),
        ({"size": 1}, "wrong size: the entry anchors tree size 1"),
        ({"root": "0x44"}, "field 'root' is not 32 bytes of hex"),
        (
            {"batch_index": 0, "batch_size": 2, "size": 2, "proof": ["55" * 32]},
            "does not lead to the anchored root",
        ),
    ],
)
def test_anchor_entries_must_anchor_the_checkpoint_they_name(
    tmp_path: Path, custodian: Signer, researcher: Signer, fields: dict[str, Any], message: str
) -> None:
    """Without any chain: an anchor entry whose hash, root, size or batch proof does not fit its
    checkpoint fails verification, naming the anchor entry."""
    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher, cells=1)
    cp_index = ledger.size - 1
    at = ledger.append(anchor_entry(ledger, cp_index, **fields))
    ledger.close()
    with pytest.raises(LedgerIntegrityError, match=message) as info:
        verify_ledger(path, keys=[custodian.verifier_key])
    assert info.value.index == at


def test_anchor_entry_schema_one_definition() -> None:
    """`entries.anchor` is the definition: what `check_entry` requires, batch fields together."""
    common = {
        "checkpoint_index": 3,
        "checkpoint_hash": "ab" * 32,
        "chain_id": 1,
        "contract": "0x" + "11" * 20,
        "tx": "0x" + "22" * 32,
        "block": 1,
        "submitter": "0x" + "33" * 20,
        "root": "0x" + "44" * 32,
        "size": 2,
    }
    single = E.anchor(session=SESSION, **common)
    E.check_entry(single | {"seq": 4})
    assert "proof" not in single and "batch_index" not in single
    batch = E.anchor(session=SESSION, **common, batch_index=1, batch_size=2, proof=["55" * 32])
    E.check_entry(batch | {"seq": 4})
    assert batch["proof"] == ["55" * 32]
    for name in ("checkpoint_hash", "size"):
        with pytest.raises(LedgerIntegrityError, match=f"field {name!r} is missing"):
            E.check_entry({k: v for k, v in single.items() if k != name} | {"seq": 4})
    with pytest.raises(LedgerIntegrityError, match="'batch_size' is missing or mistyped"):
        E.check_entry({k: v for k, v in batch.items() if k != "batch_size"} | {"seq": 4})
    with pytest.raises(LedgerIntegrityError, match="'proof' must be a list of hex strings"):
        E.check_entry(batch | {"seq": 4, "proof": [{"path": "x"}]})
    with pytest.raises(ValueError, match="needs both batch_index and batch_size"):
        E.anchor(session=SESSION, **common, batch_index=1)


def test_old_checkpoint_notes_are_read_back_for_anchors(
    tmp_path: Path, custodian: Signer, researcher: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify keeps only recent notes in memory; an anchor naming an old one still gets it."""
    from bedside.ledger import anchor as anchor_module
    from bedside.ledger import verify as verify_module

    monkeypatch.setattr(verify_module, "_RECENT_NOTES", 1)
    monkeypatch.setattr(verify_module, "_KEEP_CHECKPOINTS", 2)
    path = tmp_path / "s.ledger"
    ledger = build_session(path, custodian, researcher, cells=3)
    first = ledger.entry(4)
    assert first["kind"] == "checkpoint"
    ledger.append(anchor_entry(ledger, 4))
    ledger.close()
    seen: list[bytes] = []
    monkeypatch.setattr(
        anchor_module, "verify_anchor_entry", lambda entry, note, rpc, **_: seen.append(note)
    )
    report = verify_ledger(path, keys=[custodian.verifier_key], rpc="http://127.0.0.1:1")
    assert seen == [first["note"].encode()]
    assert report.checkpoint_count == 5 and len(report.checkpoints) <= 2
    assert report.signed_size == 16


# --- the researcher's signature on each execute request -----------------------------------


def session_with_requests(path: Path, custodian: Signer, sigs: list[str | None]) -> Ledger:
    """Header naming the researcher, one execute request per signature given, a checkpoint."""
    ledger = new_session(
        path,
        {"custodian": custodian.verifier_key, "researcher": RESEARCHER.verifier_key},
        intent={"purpose": "signatures"},
        policy_digest="sha256:" + "ab" * 32,
        kernel_env="sha256:" + "cd" * 32,
    )
    for i, sig in enumerate(sigs):
        entry, opening = E.execute_request(
            session=SESSION, msg_id=f"m{i}", code=f"x = {i}", researcher_sig=sig
        )
        ledger.append(entry, opening=opening)
    ledger.append_checkpoint(ledger.sign_checkpoint(custodian))
    ledger.close()
    return ledger


RESEARCHER = Signer.generate("researcher")


def test_researcher_signatures_are_verified_with_openings(
    tmp_path: Path, custodian: Signer, researcher: Signer
) -> None:
    path = tmp_path / "s.ledger"
    build_session(path, custodian, researcher, cells=3).close()
    report = verify_ledger(path, keys=[custodian.verifier_key], openings=openings_path(path))
    assert report.researcher_key == researcher.verifier_key
    assert report.researcher_sigs_checked == 3 and report.researcher_unsigned == 0
    assert "3 execute requests verified" in report.summary()
    # Without the openings the code is unknown, so nothing can be checked: said, not hidden.
    report = verify_ledger(path, keys=[custodian.verifier_key])
    assert report.researcher_sigs_checked == 0
    assert any("pass --openings" in w for w in report.warnings)


@pytest.mark.parametrize(
    "bad",
    [
        researcher_sig(RESEARCHER, "m1", "x = 99"),  # signed other code
        researcher_sig(RESEARCHER, "m7", "x = 1"),  # signed another request
        researcher_sig(Signer.generate("researcher"), "m1", "x = 1"),  # another key
    ],
)
def test_a_bad_researcher_signature_names_the_entry(
    tmp_path: Path, custodian: Signer, bad: str
) -> None:
    path = tmp_path / "s.ledger"
    good = researcher_sig(RESEARCHER, "m0", "x = 0")
    session_with_requests(path, custodian, [good, bad, researcher_sig(RESEARCHER, "m2", "x = 2")])
    with pytest.raises(SignatureError, match="researcher's signature on execute request 'm1'") as e:
        verify_ledger(path, keys=[custodian.verifier_key], openings=openings_path(path))
    assert e.value.index == 2


def test_unsigned_requests_are_reported(tmp_path: Path, custodian: Signer) -> None:
    path = tmp_path / "s.ledger"
    session_with_requests(path, custodian, [researcher_sig(RESEARCHER, "m0", "x = 0"), None, None])
    report = verify_ledger(path, keys=[custodian.verifier_key], openings=openings_path(path))
    assert report.researcher_sigs_checked == 1 and report.researcher_unsigned == 2
    assert any("2 execute requests carry no researcher signature" in w and "entry 2" in w
               for w in report.warnings)  # fmt: skip
    path2 = tmp_path / "t.ledger"
    session_with_requests(path2, custodian, ["not base64!"])
    with pytest.raises(SignatureError, match="researcher_sig is not base64") as e:
        verify_ledger(path2, keys=[custodian.verifier_key], openings=openings_path(path2))
    assert e.value.index == 1
