"""bedside.kernel: the guarded hospital kernel, its output guard and data catalog.

Launch with `python -m bedside.kernel -f CONNECTION_FILE --policy FILE`; install the kernelspec
with `python -m bedside.kernel install --sys-prefix|--user`. The Jupyter-dependent classes are
imported lazily so `import bedside.kernel` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GuardedKernel", "Hospital", "OutputGuard", "install_kernelspec"]


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
