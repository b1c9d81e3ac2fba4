"""bedside.policy: the custodian's policy and the pure rules both guard layers apply.

No Jupyter imports here: the kernel, the sentry, the extension and the reviewer CLI all use it.
`load_policy` reads and validates a policy file, `load_dataset` reads a protected table,
`IdentifierIndex` finds identifier values in text, `scan_phi` finds PHI-shaped text and
`scan_text` runs both, also inside encoded text.
"""

from __future__ import annotations

from bedside.policy.datasets import load_dataset
from bedside.policy.decision import Action, Decision, Layer
from bedside.policy.explain import explain
from bedside.policy.identifiers import IdentifierIndex, IdentifierMatch
from bedside.policy.model import (
    Dataset,
    DisclosureRules,
    Limits,
    OutputRules,
    Policy,
    ReleaseRules,
    SessionLimits,
    load_policy,
)
from bedside.policy.phi import PHIMatch, scan_phi
from bedside.policy.scan import Finding, scan_text
from bedside.policy.synthetic import write_demo_hospital

__all__ = [
    "Action",
    "Dataset",
    "explain",
    "Decision",
    "DisclosureRules",
    "Finding",
    "IdentifierIndex",
    "IdentifierMatch",
    "Layer",
    "Limits",
    "OutputRules",
    "PHIMatch",
    "Policy",
    "ReleaseRules",
    "SessionLimits",
    "load_dataset",
    "load_policy",
    "scan_phi",
    "scan_text",
    "write_demo_hospital",
]
