"""bedside.ledger: the signed, append-only session ledger and the reviewer's tools.

Public API (docs/dev/contracts.md): `Signer`, `Verifier`, `commit`, `open_commitment`, `Ledger`,
`cosign`, `verify_ledger`, and the typed entry constructors in `bedside.ledger.entries`. Nothing
here imports Jupyter; replay and report import nbclient/nbconvert only when they run.
"""

from __future__ import annotations

from . import entries
from .commitment import (
    DOMAIN_ARTIFACT,
    DOMAIN_CODE,
    DOMAIN_OUTPUT,
    canonical_json,
    commit,
    open_commitment,
)
from .log import Ledger, Recovery, openings_path
from .merkle import (
    hash_children,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)
from .note import (
    Checkpoint,
    Signer,
    Verifier,
    cosign,
    open_checkpoint,
    sign_note,
    verify_note,
)
from .openings import publishable_openings, read_openings
from .verify import VerifyReport, verify_ledger

__all__ = [
    "DOMAIN_ARTIFACT",
    "DOMAIN_CODE",
    "DOMAIN_OUTPUT",
    "Checkpoint",
    "Ledger",
    "Recovery",
    "Signer",
    "Verifier",
    "VerifyReport",
    "canonical_json",
    "commit",
    "cosign",
    "entries",
    "hash_children",
    "hash_leaf",
    "open_checkpoint",
    "open_commitment",
    "openings_path",
    "publishable_openings",
    "read_openings",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
    "verify_ledger",
    "verify_note",
]
