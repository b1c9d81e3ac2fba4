"""The policy API the kernel uses (`docs/dev/contracts.md`), from bedside.policy."""

from __future__ import annotations

try:
    from bedside.policy import IdentifierIndex, load_dataset, load_policy, scan_phi
except ImportError:  # TEMPORARY until the policy branch is merged
    from bedside.kernel._policy_shim import IdentifierIndex, load_dataset, load_policy, scan_phi

__all__ = ["IdentifierIndex", "load_dataset", "load_policy", "scan_phi"]
