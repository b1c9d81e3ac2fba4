"""The sentry writes receipts, committed bytes and metadata by splicing canonical pieces instead
of encoding whole objects again: the bytes must be exactly what the contract's objects encode to
(docs/dev/contracts.md, "the receipt"), whatever the content holds."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import rfc8785

from bedside.gateway._receipts import (
    HospitalLedger,
    canonical_content,
    committed_bytes,
    committed_from_content,
)
from bedside.gateway.sentry import _metadata_with_receipt
from bedside.ledger import Ledger, Signer, Verifier, canonical_json, entries
from bedside.ledger.merkle import MerkleTree, hash_leaf
from bedside.policy.decision import Decision, Layer

CONTENTS = [
    {},
    {"execution_state": "idle"},
    {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 3},
    {"name": "stdout", "text": 'quotes " and \\ backslash\n\t\x01\x1f\x7f'},
    {"text": "ünïcödé — \u2028 \U0001f600", "ключ": "значение", "é": 1, "e": 2},
    {"float": 1.5, "neg": -0.0, "big": 1e21, "small": 5e-324, "n": [1, 2.25, None, True]},
    {"int": 2**53 - 1, "neg": -(2**53) + 1, "nested": {"z": [{"b": 1, "a": [2, {"y": "x"}]}]}},
]


@pytest.mark.parametrize("content", [{"n": 2**60}, {"x": float("nan")}, {"b": b"bytes"}])
def test_content_that_cannot_be_canonical_fails_as_before(content):
    # The sentry then sends a notice in its place (as it did when it encoded the content twice).
    with pytest.raises(Exception) as spliced:
        canonical_json(content)
    with pytest.raises(Exception) as whole:
        committed_bytes("iopub", "stream", content, [])
    assert type(spliced.value) is type(whole.value)


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("buffers", [[], [b"abc", b"\x00\xff" * 10]])
def test_committed_bytes_spliced_from_canonical_content_are_the_contract_bytes(content, buffers):
    raw = canonical_json(content)
    assert json.loads(raw) == content  # the content frame the sentry sends reads back the same
    spliced = committed_from_content("iopub", "display_data", raw, buffers)
    assert spliced == committed_bytes("iopub", "display_data", content, buffers)
    assert spliced == rfc8785.dumps(
        {
            "channel": "iopub",
            "msg_type": "display_data",
            "content": content,
            "buffers": [hashlib.sha256(b).hexdigest() for b in buffers],
        }
    )


@pytest.mark.parametrize(
    ("msg_type", "content"),
    [
        (
            entries.FETCH_REPLY,
            {"request": "r1", "piece": 0, "data": base64.b64encode(b"w" * 99).decode()},
        ),
        (
            entries.ENTRIES_REPLY,
            {"entries": [{"index": 3, "salt": "c2FsdA==", "content": "eyJ4IjoxfQ=="}]},
        ),
    ],
)
def test_bulk_replies_commit_to_digests_not_to_the_bytes(msg_type, content):
    # A release piece or a resent opening is committed by digest (the artifact is stored once):
    # the sentry's spliced path must give the contract's bytes, not the spliced content.
    raw = canonical_json(content)
    spliced = committed_from_content("shell", msg_type, raw, [], content)
    assert spliced == entries.output_committed_bytes(
        channel="shell", msg_type=msg_type, content=content
    )
    assert raw not in spliced
    with pytest.raises(ValueError, match="pass the content"):
        committed_from_content("shell", msg_type, raw, [])


@pytest.fixture
def ledger(tmp_path):
    signer = Signer.generate("st-elsewhere")
    book = HospitalLedger(
        tmp_path / "session.ledger", session_id="s1", origin="h.example/bedside/s1", signer=signer
    )
    yield book, signer
    book.close()


def _check(receipt: bytes, signer: Signer) -> dict:
    value = json.loads(receipt)
    body = {k: v for k, v in value.items() if k != "sig"}
    # What the extension does: rfc8785 of the receipt without sig, checked with the key.
    Verifier(signer.verifier_key).verify(rfc8785.dumps(body), base64.b64decode(value["sig"]))
    return value


def test_receipt_bytes_verify_and_carry_the_entries_as_written(ledger):
    book, signer = ledger
    empty = _check(book.receipt_bytes("m0", b"{}"), signer)
    assert empty["entries"] == [] and empty["size"] == 0 and empty["v"] == 1
    book.header(
        intent={"purpose": "ünïcode — test\n"},
        policy_id="p",
        policy_digest="sha256:" + "0" * 64,
        environment_digest="sha256:" + "1" * 64,
        researcher_key=None,
    )
    book.execute_request("req-1", "print('é')\n", None, "cell-1")
    committed = committed_bytes("iopub", "stream", {"name": "stdout", "text": "é"}, [])
    book.output(
        msg_id="out-1",
        parent="req-1",
        channel="iopub",
        msg_type="stream",
        committed=committed,
        decision=Decision.release(layer=Layer.SENTRY),
    )
    blocked = committed_bytes("iopub", "stream", {"name": "stdout", "text": "MRN"}, [])
    book.output(
        msg_id="out-2",
        parent="req-1",
        channel="iopub",
        msg_type="stream",
        committed=blocked,
        decision=Decision.block("identifier", "x", layer=Layer.SENTRY),
    )
    note = book.sign_checkpoint()
    receipt = _check(book.receipt_bytes("out-2", committed, checkpoint=note), signer)
    assert receipt["checkpoint"] == note
    assert receipt["size"] == book.size == 4
    assert receipt["root"] == book.ledger.root().hex()
    assert receipt["key"] == signer.verifier_key
    assert receipt["msg_id"] == "out-2"
    assert receipt["digest"] == "sha256:" + hashlib.sha256(committed).hexdigest()
    assert [item["index"] for item in receipt["entries"]] == [0, 1, 2, 3]
    for item in receipt["entries"]:
        assert item["entry"] == book.ledger.entry(item["index"])
    # Salts travel for the execute request and the released output, not the header or a block.
    assert ["salt" in item for item in receipt["entries"]] == [False, True, True, False]
    # The same entries never ride twice; the dict form is the same receipt.
    again = book.receipt("out-3", b"{}")
    assert again["entries"] == [] and again["size"] == 4
    _check(json.dumps(again).encode(), signer)


def test_the_file_holds_an_entry_once_its_receipt_is_asked_for(ledger, tmp_path):
    book, signer = ledger
    book.header(
        intent={},
        policy_id="p",
        policy_digest="sha256:" + "0" * 64,
        environment_digest="sha256:" + "1" * 64,
        researcher_key=None,
    )
    book.execute_request("req-1", "1 + 1", None, None)
    book.receipt_bytes("m", b"{}")
    reader = Ledger.open(tmp_path / "session.ledger")
    try:
        assert reader.size == 2
        assert reader.entry(1)["kind"] == entries.EXECUTE_REQUEST
    finally:
        reader.close()


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"started": "2026-01-01T00:00:00Z", "status": "ok"},
        {"bedside": {"decision": "redacted", "rule": "mime_allow", "receipt": "forged"}},
        {"bedside": "not a dict", "x": [1, "é"]},
        {"bedside": {}, "other": {"bedside": 1}},
    ],
)
def test_metadata_with_receipt_sets_the_receipt_and_keeps_the_rest(metadata):
    receipt = {"v": 1, "sig": "c2ln", "entries": [{"entry": {"a": "é"}, "index": 0}]}
    raw = _metadata_with_receipt(metadata, json.dumps(receipt, ensure_ascii=False).encode())
    expected = dict(metadata)
    bedside = metadata.get("bedside")
    expected["bedside"] = {**(bedside if isinstance(bedside, dict) else {}), "receipt": receipt}
    assert json.loads(raw) == expected


def test_merkle_root_folds_the_stored_subtrees_as_rfc6962_splits_them():
    tree = MerkleTree()
    for i in range(300):
        tree.append(hash_leaf(i.to_bytes(4, "big")))
        size = len(tree)
        for prefix in {1, size // 3 or 1, size - 1 or 1, size}:
            assert tree.root(prefix) == tree.subtree_root(0, prefix)


def _every_code_point() -> str:
    # Every code point a Python str can hold and UTF-8 can carry (no lone surrogates).
    return "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@pytest.mark.parametrize("content", CONTENTS)
def test_canonical_content_is_canonical_json(content):
    assert canonical_content(content) == canonical_json(content)


def test_canonical_content_escapes_every_code_point_as_rfc8785():
    text = _every_code_point()
    content = {"name": "stdout", "text": text, "chunks": [text[i : i + 7] for i in range(0, 512)]}
    assert canonical_content(content) == canonical_json(content) == rfc8785.dumps(content)


@pytest.mark.parametrize(
    "content",
    [
        {"n": 2**60},
        {"x": float("nan")},
        {"b": b"bytes"},
        {"lone": "\ud800"},
        {1: "non-string key"},
    ],
)
def test_canonical_content_fails_as_canonical_json_does(content):
    with pytest.raises(Exception) as fast:
        canonical_content(content)
    with pytest.raises(Exception) as reference:
        canonical_json(content)
    assert type(fast.value) is type(reference.value)


def test_output_openings_written_raw_are_the_bytes_of_the_dict_form(tmp_path):
    """The sentry writes each output's opening from its raw salt and bytes; the openings file
    must hold what the dict form (`entries.output_from_bytes`) would have written."""
    from bedside.ledger.commitment import DOMAIN_OUTPUT, open_commitment
    from bedside.ledger.log import openings_path
    from bedside.ledger.openings import iter_openings

    signer = Signer.generate("custodian")
    book = HospitalLedger(tmp_path / "session.ledger", session_id="s", origin="o", signer=signer)
    book.header(
        intent={},
        policy_id="p",
        policy_digest="sha256:" + "0" * 64,
        environment_digest="sha256:" + "1" * 64,
        researcher_key=None,
    )
    outputs = [
        committed_bytes("iopub", "stream", {"name": "stdout", "text": "é\n" * 70_000}, []),
        committed_bytes("iopub", "stream", {"name": "stdout", "text": "MRN"}, []),
    ]
    book.output(msg_id="a", parent="p", channel="iopub", msg_type="stream",
                committed=outputs[0], decision=Decision.release(layer=Layer.SENTRY))  # fmt: skip
    book.output(msg_id="b", parent="p", channel="iopub", msg_type="stream",
                committed=outputs[1], decision=Decision.block("identifier", "x",
                                                               layer=Layer.SENTRY))  # fmt: skip
    receipt = json.loads(book.receipt_bytes("a", outputs[0]))
    book.close()
    opened = list(iter_openings(openings_path(tmp_path / "session.ledger")))
    assert [o.index for o in opened] == [1, 2]
    reference = Ledger.create(tmp_path / "ref.ledger", session_id="s", origin="o")
    written = Ledger.open(tmp_path / "session.ledger")
    for opening, committed in zip(opened, outputs, strict=True):
        assert opening.content == committed
        entry = written.entry(opening.index)
        # The commitment opens with the salt and bytes written.
        open_commitment(DOMAIN_OUTPUT, committed, opening.salt, entry["content"])
        as_dict = {
            "field": "content",
            "domain": DOMAIN_OUTPUT,
            "salt": base64.b64encode(opening.salt).decode(),
            "content": base64.b64encode(committed).decode(),
        }
        reference._write_opening(opening.index, entries.OUTPUT, as_dict)
    reference.flush()
    reference.close()
    written.close()
    raw = openings_path(tmp_path / "session.ledger").read_bytes()
    ref = openings_path(tmp_path / "ref.ledger").read_bytes()
    # Same file header (session and origin) and the same records, byte for byte.
    assert raw == ref
    # The released output's salt rides on the receipt; the blocked one's does not.
    salts = {item["index"]: item.get("salt") for item in receipt["entries"]}
    assert salts[1] == base64.b64encode(opened[0].salt).decode() and salts[2] is None


def test_the_deferred_flush_runs_beside_the_relay_and_fails_loudly(ledger, monkeypatch):
    """`flush_if_due` hands the two fsyncs to a thread of their own: the entries are durable
    once it is collected (at the latest at close), one flush runs at a time, and a flush that
    failed raises at the next call, as it did when it ran in the relay's thread."""
    import threading

    book, _ = ledger
    book.header(intent={}, policy_id="p", policy_digest="sha256:" + "0" * 64,
                environment_digest="sha256:" + "1" * 64, researcher_key=None)  # fmt: skip
    book.execute_request("m1", "1 + 1", None, None)
    gate, threads = threading.Event(), []
    flush = book.ledger.flush

    def slow_flush():
        threads.append(threading.current_thread().name)
        gate.wait(10)
        flush()

    monkeypatch.setattr(book.ledger, "flush", slow_flush)
    book.flush_if_due(force=True)
    assert not book.dirty and threads and threads[0].startswith("bedside-flush")
    book.execute_request("m2", "2 + 2", None, None)  # the relay goes on meanwhile
    book.flush_if_due(force=True)  # the first one still runs: this one waits its turn
    assert book.dirty and len(threads) == 1
    gate.set()
    book._flushing.result(10)
    book.flush_if_due(force=True)
    book._flushing.result(10)
    assert len(threads) == 2 and not book.ledger._dirty

    def failing_flush():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(book.ledger, "flush", failing_flush)
    book.execute_request("m3", "3 + 3", None, None)
    book.flush_if_due(force=True)
    book._flushing.exception(10)
    with pytest.raises(OSError, match="No space"):
        book.flush_if_due()


def test_version_2_leaves_the_digest_out_only_where_an_own_salted_entry_binds(ledger):
    """`receipts = 2` (the researcher asked for it): no digest exactly when the receipt carries
    the output entry just appended for this message and these bytes, with its salt. A blocked
    output (no salt), another message's entry, other bytes, or no entry keep the digest."""
    book, signer = ledger
    book.receipts = 2
    book.header(
        intent={},
        policy_id="p",
        policy_digest="sha256:" + "0" * 64,
        environment_digest="sha256:" + "1" * 64,
        researcher_key=None,
    )
    before = _check(book.receipt_bytes("m0", b"{}"), signer)  # entries, but no output
    assert before["v"] == 1 and "digest" in before

    def out(msg_id: str, text: str, decision: Decision) -> bytes:
        committed = committed_bytes("iopub", "stream", {"name": "stdout", "text": text}, [])
        book.output(
            msg_id=msg_id,
            parent="req",
            channel="iopub",
            msg_type="stream",
            committed=committed,
            decision=decision,
        )
        return committed

    released = Decision.release(layer=Layer.SENTRY)
    sent = out("out-1", "2\n", released)
    receipt = _check(book.receipt_bytes("out-1", sent), signer)
    assert receipt["v"] == 2 and "digest" not in receipt
    (item,) = receipt["entries"]
    assert item["entry"]["msg_id"] == "out-1" and "salt" in item
    # the entry of out-2, and a receipt for another message: the digest stays
    sent = out("out-2", "3\n", released)
    assert "digest" in _check(book.receipt_bytes("out-9", sent), signer)
    # bytes other than the entry's: the digest stays (and is of the bytes that leave)
    sent = out("out-3", "4\n", released)
    other = committed_bytes("iopub", "stream", {"name": "stdout", "text": "5\n"}, [])
    receipt = _check(book.receipt_bytes("out-3", other), signer)
    assert receipt["digest"] == "sha256:" + hashlib.sha256(other).hexdigest()
    # a blocked output: its salt stays at the hospital, the notice's receipt has a digest
    out("out-4", "MRN", Decision.block("identifier", "x", layer=Layer.SENTRY))
    notice = committed_bytes("iopub", "stream", {"name": "stderr", "text": "blocked"}, [])
    receipt = _check(book.receipt_bytes("out-4", notice), signer)
    assert receipt["v"] == 1 and "salt" not in receipt["entries"][0]
    # the entry already went with an earlier receipt: none to bind with, the digest stays
    sent = out("out-5", "6\n", released)
    _check(book.receipt_bytes("other", b"{}"), signer)
    assert "digest" in _check(book.receipt_bytes("out-5", sent), signer)
    # a researcher side that did not ask: always version 1
    book.receipts = 1
    sent = out("out-6", "7\n", released)
    assert _check(book.receipt_bytes("out-6", sent), signer)["v"] == 1
