"""The published vectors in /work/shared/vectors (see its README): byte for byte."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from bedside.errors import SignatureError
from bedside.ledger import Signer, Verifier, canonical_json, sign_note, verify_note
from bedside.ledger.merkle import (
    Frontier,
    MerkleTree,
    ProofError,
    hash_children,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)
from bedside.ledger.note import Checkpoint

# A copy of ../shared/vectors lives beside the tests so CI needs nothing outside the repository.
VECTORS = Path(os.environ.get("BEDSIDE_VECTORS", Path(__file__).parent / "vectors"))
RFC6962 = VECTORS / "rfc6962"


def _probes(kind: str) -> list[Path]:
    return sorted((RFC6962 / kind).rglob("*.json"))


def _b(x: str | None) -> bytes:
    return base64.b64decode(x) if x else b""


def test_vectors_present() -> None:
    assert len(_probes("inclusion")) > 80 and len(_probes("consistency")) > 80


@pytest.mark.parametrize("probe", _probes("inclusion"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_inclusion_probe(probe: Path) -> None:
    d = json.loads(probe.read_text())
    args = (_b(d["leafHash"]), d["leafIdx"], d["treeSize"], [_b(h) for h in d["proof"] or []])
    if d["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args, _b(d["root"]))
    else:
        verify_inclusion(*args, _b(d["root"]))


@pytest.mark.parametrize("probe", _probes("consistency"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_consistency_probe(probe: Path) -> None:
    d = json.loads(probe.read_text())
    args = (d["size1"], d["size2"], [_b(h) for h in d["proof"] or []], _b(d["root1"]))
    if d["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args, _b(d["root2"]))
    else:
        verify_consistency(*args, _b(d["root2"]))


ROOTS = """
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d
fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125
aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77
d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7
4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4
76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef
ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c
5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328
""".split()
LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]


def test_roots_and_node_hashes() -> None:
    leaves = MerkleTree()
    for x in LEAVES:
        leaves.append(hash_leaf(bytes.fromhex(x)))
    assert [leaves.root(n).hex() for n in range(9)] == ROOTS
    assert hash_leaf(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert hash_children(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_tree_roots_agree_with_the_frontier_at_every_size() -> None:
    # The tree folds its stored subtrees for a prefix's root; the frontier folds its own stack.
    # Two independent folds, every size from 1 to 1,100 (sizes of every bit pattern up to 2^10,
    # asked as a prefix of a larger tree and as the whole tree, which caches its root).
    tree, frontier, roots = MerkleTree(), Frontier(), []
    for i in range(1100):
        leaf = hash_leaf(i.to_bytes(4, "big"))
        tree.append(leaf)
        frontier.append(leaf)
        roots.append(frontier.root())
        assert tree.root() == roots[-1]
    assert [tree.root(n) for n in range(1, 1101)] == roots


def test_generated_proofs_match_the_happy_path_vectors() -> None:
    leaves = MerkleTree()
    for x in LEAVES:
        leaves.append(hash_leaf(bytes.fromhex(x)))
    for probe in _probes("inclusion"):
        d = json.loads(probe.read_text())
        if probe.name == "happy-path.json" and d["treeSize"] <= 8:
            assert leaves.inclusion_proof(d["leafIdx"], d["treeSize"]) == [
                _b(h) for h in d["proof"] or []
            ]
    for probe in _probes("consistency"):
        d = json.loads(probe.read_text())
        if probe.name == "happy-path.json" and 0 < d["size1"] and d["size2"] <= 8:
            assert leaves.consistency_proof(d["size1"], d["size2"]) == [
                _b(h) for h in d["proof"] or []
            ]


def test_generated_proofs_verify_for_every_size() -> None:
    leaves = MerkleTree()
    for i in range(40):
        leaves.append(hash_leaf(i.to_bytes(2, "big")))
    for n in range(1, 41):
        root = leaves.root(n)
        for m in range(n):
            verify_inclusion(leaves[m], m, n, leaves.inclusion_proof(m, n), root)
            verify_consistency(
                m + 1, n, leaves.consistency_proof(m + 1, n), leaves.root(m + 1), root
            )


# --- C2SP signed-note and tlog-checkpoint -------------------------------------------------------

EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
EXAMPLE_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
    "otpRZb6KE6RyyBwJnAM=\n"
)


def test_signed_note_example_verifies() -> None:
    text, signers = verify_note(EXAMPLE_NOTE, [Verifier(EXAMPLE_VKEY)])
    assert text == "This is an example message.\n" and signers == ["example.com/foo"]
    assert Verifier(EXAMPLE_VKEY).vkey == EXAMPLE_VKEY


def test_signed_note_example_tampered_fails() -> None:
    with pytest.raises(SignatureError):
        verify_note(
            EXAMPLE_NOTE.replace("example message", "example massage"), [Verifier(EXAMPLE_VKEY)]
        )


def test_golang_note_sign_is_byte_for_byte() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    assert signer.skey == PETER_SKEY
    assert signer.verifier_key == PETER_VKEY
    assert sign_note(PETER_TEXT, signer) == PETER_TEXT + "\n" + PETER_SIG
    verify_note(PETER_TEXT + "\n" + PETER_SIG, [Verifier(PETER_VKEY)])


def test_unknown_keys_are_ignored_and_no_trusted_key_fails() -> None:
    note = PETER_TEXT + "\n" + PETER_SIG
    other = Signer.generate("someone-else")
    with pytest.raises(SignatureError, match="no trusted key"):
        verify_note(note, [other.verifier])
    # An extra signature by an unknown key does not disturb a trusted one.
    from bedside.ledger import cosign

    both = cosign(note, other)
    assert verify_note(both, [Verifier(PETER_VKEY)])[1] == ["PeterNeumann"]
    assert sorted(verify_note(both, [Verifier(PETER_VKEY), other.verifier])[1]) == [
        "PeterNeumann",
        "someone-else",
    ]


def test_tlog_checkpoint_body_format_tree() -> None:
    root = hashlib.sha256(b"\x00hello world").digest()
    body = Checkpoint("go.sum database tree", 123456789012, root).body()
    assert (
        body
        == b"go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
    )
    assert Checkpoint.parse(body) == Checkpoint("go.sum database tree", 123456789012, root)


# --- DSSE PAE and RFC 8785 ---------------------------------------------------------------------


def test_dsse_pae() -> None:
    """The DSSE spec's PAE vector, through the DSSE implementation attestations use
    (securesystemslib's Envelope); lengths are byte lengths, also for a non-ASCII type."""
    from securesystemslib.dsse import Envelope

    assert Envelope(b"hello world", "http://example.com/HelloWorld", {}).pae() == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert Envelope(b"x", "t\u00e9", {}).pae() == b"DSSEv1 3 t\xc3\xa9 1 x"


def test_jcs_vector() -> None:
    text = (
        '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        '"literals":[null,true,false]}'
    )
    want = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(text)).decode("utf-8") == want


def test_proofs_of_the_wrong_length_say_which_way() -> None:
    """A proof one hash too long or too short for the tree is refused with what is wrong."""
    tree = MerkleTree()
    for i in range(7):
        tree.append(hash_leaf(bytes([i])))
    extra = hashlib.sha256(b"extra").digest()
    inclusion = tree.inclusion_proof(2, 7)
    verify_inclusion(tree[2], 2, 7, inclusion, tree.root(7))
    with pytest.raises(ProofError, match="^inclusion proof is longer than the tree is deep$"):
        verify_inclusion(tree[2], 2, 7, [*inclusion, extra], tree.root(7))
    with pytest.raises(ProofError, match="^inclusion proof is shorter than the tree is deep$"):
        verify_inclusion(tree[2], 2, 7, inclusion[:-1], tree.root(7))
    consistency = tree.consistency_proof(3, 7)
    verify_consistency(3, 7, consistency, tree.root(3), tree.root(7))
    with pytest.raises(ProofError, match="^consistency proof is longer than needed$"):
        verify_consistency(3, 7, [*consistency, extra], tree.root(3), tree.root(7))
    with pytest.raises(ProofError, match="^consistency proof is shorter than needed$"):
        verify_consistency(3, 7, consistency[:-1], tree.root(3), tree.root(7))
