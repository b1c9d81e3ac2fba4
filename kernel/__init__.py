"""bedside.kernel: the guarded hospital kernel, its output guard and data catalog.

Launch with `python -m bedside.kernel -f CONNECTION_FILE --policy FILE`; install the kernelspec
with `python -m bedside.kernel install --sys-prefix|--user`. The Jupyter-dependent classes are
imported lazily so `import bedside.kernel` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BEHIND_SENTRY_ENV", "GuardedKernel", "Hospital", "OutputGuard", "install_kernelspec"]

# Set to "1" by the sentry in the environment of the kernel it launches (gateway/_early.py): the
# kernel runs behind the sentry, which scans every byte that leaves with the same
# `bedside.policy.scan_text`, so the in-kernel guard leaves that scan of long texts to it
# (`guard.SENTRY_SCAN_MIN_CHARS`). Code in the kernel that sets it weakens only the cooperative
# layer, which such code can switch off anyway; the sentry's own checks do not read it.
BEHIND_SENTRY_ENV = "BEDSIDE_BEHIND_SENTRY"


def __getattr__(name: str) -> Any:
    if name in ("GuardedKernel", "Hospital"):
        from bedside.kernel import kernel

        return getattr(kernel, name)
    if name == "OutputGuard":
        from bedside.kernel.guard import OutputGuard

        return OutputGuard
    if name == "install_kernelspec":
        from bedside.kernel.kernelspec import install_kernelspec

        return install_kernelspec
    raise AttributeError(name)
