"""bedside.policy: the custodian's policy and the pure rules both guard layers apply.

No Jupyter imports here: the kernel, the sentry, the extension and the reviewer CLI all use it.
`load_policy` reads and validates a policy file, `load_dataset` reads a protected table,
`IdentifierIndex` finds identifier values in text, `scan_phi` finds PHI-shaped text and
`scan_text` runs both, also inside encoded text.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Where each public name lives. Imported on first use (PEP 562): reading a policy needs only
# `model` (YAML), while the identifier index and the scanners pull in numpy and pyarrow, which
# the sentry and the kernel load later, off their start path.
_WHERE = {
    "load_dataset": "datasets",
    "Action": "decision",
    "Decision": "decision",
    "Layer": "decision",
    "explain": "explain",
    "IdentifierIndex": "identifiers",
    "IdentifierMatch": "identifiers",
    "Dataset": "model",
    "DisclosureRules": "model",
    "Limits": "model",
    "OutputRules": "model",
    "Policy": "model",
    "ReleaseRules": "model",
    "SessionLimits": "model",
    "load_policy": "model",
    "PHIMatch": "phi",
    "scan_phi": "phi",
    "Finding": "scan",
    "scan_text": "scan",
    "write_demo_hospital": "synthetic",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bedside.policy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bedside.policy.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


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
