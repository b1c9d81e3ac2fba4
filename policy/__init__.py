"""bedside.policy: the custodian's policy and the pure rules both guard layers apply.

No Jupyter imports here: the kernel, the sentry, the extension and the reviewer CLI all use it.
"""

from __future__ import annotations

from bedside.policy.decision import Action, Decision, Layer

__all__ = ["Action", "Decision", "Layer"]
