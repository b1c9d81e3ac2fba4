"""Openings written from raw bytes (`Opening`, the mirror's path) are byte-identical to the
generic path's records: canonical JSON of the base64 dict, checksummed. Plus the incremental MAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.errors import LedgerError
from bedside.ledger import Ledger, canonical_json, read_openings
from bedside.ledger import entries as E
from bedside.ledger._records import encode_record, record_parts
from bedside.ledger.commitment import DOMAIN_OUTPUT, DOMAINS, commit
from bedside.ledger.openings import Opening, PreparedOpening, opening_payload_parts


def _generic(index: int, field: str, domain: str, salt: bytes, content: bytes) -> bytes:
    return encode_record(
        canonical_json(
            {
                "index": index,
                "field": field,
                "domain": domain,
                "salt": base64.b64encode(salt).decode(),
                "content": base64.b64encode(content).decode(),
            }
        )
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    index=st.integers(0, 2**53 - 1),
    field=st.text(max_size=12),
    domain=st.sampled_from(DOMAINS) | st.text(max_size=12),
    salt=st.binary(max_size=40),
    content=st.binary(max_size=300),
)
def test_raw_record_equals_generic_encoder(
    index: int, field: str, domain: str, salt: bytes, content: bytes
) -> None:
    # Any field/domain text (quotes, control characters, non-ASCII) included: the splice only
    # leaves the base64 unescaped, and base64 never needs escaping.
    parts = opening_payload_parts(index, field, domain, salt, content)
    assert b"".join(record_parts(parts)) == _generic(index, field, domain, salt, content)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(pieces=st.lists(st.binary(max_size=64), max_size=6))
def test_record_parts_equal_encode_record(pieces: list[bytes]) -> None:
    assert b"".join(record_parts(pieces)) == encode_record(b"".join(pieces))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    domain=st.sampled_from(DOMAINS),
    content=st.binary(max_size=500),
    salt=st.binary(min_size=32, max_size=32),
)
def test_mac_is_hmac_of_domain_and_content(domain: str, content: bytes, salt: bytes) -> None:
    expected = hmac.new(salt, domain.encode() + content, hashlib.sha256).hexdigest()
    assert commit(domain, content, salt=salt)[0] == expected


def _ledger(path: Path) -> Ledger:
    ledger = Ledger.create(path, session_id="s", origin="o")
    header = E.header(
        session="s",
        origin="o",
        intent={},
        policy_id="p",
        policy_digest="sha256:" + "0" * 64,
        kernel_env="sha256:" + "1" * 64,
        identities={},
    )
    ledger.append({**header, "ts": "2026-01-01T00:00:00Z"})
    return ledger


def test_ledger_files_identical_for_raw_and_dict_openings(tmp_path: Path) -> None:
    contents = [b"", b"2\n", bytes(range(256)) * 40, 'é"\\\n'.encode() * 1000]
    made = []
    for i, content in enumerate(contents):
        entry, opening = E.output_from_bytes(
            session="s",
            msg_id=f"m{i}",
            parent="p",
            channel="iopub",
            msg_type="stream",
            committed=content,
            decision="released",
            rule="pass",
            layer="kernel",
            ts="2026-01-01T00:00:00Z",
        )
        made.append((entry, opening, content))
    dict_ledger, raw_ledger = _ledger(tmp_path / "a.ledger"), _ledger(tmp_path / "b.ledger")
    for entry, opening, content in made:
        dict_ledger.append(entry, opening=opening)
        index = raw_ledger.size
        salt = base64.b64decode(opening["salt"])
        raw_ledger.append(entry, opening=Opening(index, "content", DOMAIN_OUTPUT, salt, content))
    dict_ledger.close()
    raw_ledger.close()
    for suffix in (".ledger", ".openings"):
        a = (tmp_path / "a").with_suffix(suffix).read_bytes()
        b = (tmp_path / "b").with_suffix(suffix).read_bytes()
        assert a == b, suffix
    opened = read_openings(tmp_path / "b.openings")
    assert [opened[i + 1].content for i in range(len(contents))] == contents
    # and the reopened ledger (which scans the openings file) takes more raw openings
    again = Ledger.open(tmp_path / "b.ledger")
    entry, opening, content = made[1]
    entry = {**entry, "msg_id": "again"}
    index = again.size
    salt = base64.b64decode(opening["salt"])
    again.append(entry, opening=Opening(index, "content", DOMAIN_OUTPUT, salt, content))
    again.close()
    assert read_openings(tmp_path / "b.openings")[index].content == content


def test_raw_opening_must_match_entry(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "c.ledger")
    entry, opening = E.output_from_bytes(
        session="s",
        msg_id="m",
        parent="p",
        channel="iopub",
        msg_type="stream",
        committed=b"x",
        decision="released",
        rule="pass",
        layer="kernel",
    )
    salt = base64.b64decode(opening["salt"])
    with pytest.raises(LedgerError, match="passed with entry 1"):
        ledger.append(entry, opening=Opening(5, "content", DOMAIN_OUTPUT, salt, b"x"))
    with pytest.raises(LedgerError, match="field/domain"):
        ledger.append(entry, opening=Opening(1, "code", DOMAIN_OUTPUT, salt, b"x"))
    ledger.close()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    index=st.integers(0, 2**53 - 1),
    field=st.text(max_size=12),
    domain=st.sampled_from(DOMAINS) | st.text(max_size=12),
    salt=st.binary(max_size=40),
    content=st.binary(max_size=300),
)
def test_prepared_opening_record_equals_generic_encoder(
    index: int, field: str, domain: str, salt: bytes, content: bytes
) -> None:
    # Prepared before its index is known (the sentry prepares while its guard scans).
    prepared = PreparedOpening(-1, field, domain, salt, content)
    prepared.index = index
    parts = prepared.record_parts(index, (field, domain))
    assert b"".join(parts) == _generic(index, field, domain, salt, content)


def test_prepared_opening_checks_its_index_and_kind() -> None:
    prepared = PreparedOpening(3, "content", DOMAIN_OUTPUT, b"s" * 32, b"x" * 100)
    with pytest.raises(LedgerError, match="passed with entry 4"):
        prepared.record_parts(4, ("content", DOMAIN_OUTPUT))
    with pytest.raises(LedgerError, match="field/domain"):
        prepared.record_parts(3, ("code", DOMAIN_OUTPUT))
