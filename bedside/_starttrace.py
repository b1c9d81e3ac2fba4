"""Timestamps of a kernel's start, for `bench/start_timeline.py` (off unless asked for).

With `BEDSIDE_START_TRACE=1` in its environment, each process of the chain (the sentry, the
sandboxed kernel) writes one line per step to the stderr it was started with:
`bedside-start-trace <label> <unix time> <pid> <CPU seconds of the process so far>`.
Enterprise Gateway collects its kernels' stderr in its log, where the benchmark reads them.
Stdlib only, and nothing at all happens without the variable: the start path pays one
environment lookup.
"""

from __future__ import annotations

import os
import time

ENV = "BEDSIDE_START_TRACE"

_fd: int | None = None
_on = os.environ.get(ENV) == "1"


def enabled() -> bool:
    return _on


def _stderr() -> int:
    # A copy of the stderr the process started with: the kernel later points fd 2 at a pipe
    # whose text becomes cell output.
    global _fd
    if _fd is None:
        _fd = os.dup(2)
    return _fd


def mark(label: str, when: float | None = None) -> None:
    """Record that this process reached `label` now (or at `when`, a unix time)."""
    if not _on:
        return
    stamp = time.time() if when is None else when
    try:
        line = f"bedside-start-trace {label} {stamp:.6f} {os.getpid()} {time.process_time():.6f}\n"
        os.write(_stderr(), line.encode())
    except OSError:
        pass


def process_started() -> float | None:
    """When this process was created (exec'd or forked), as a unix time (10 ms resolution)."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
        ticks = int(fields[19])
        uptime = float(open("/proc/uptime").read().split()[0])  # noqa: SIM115
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return time.time() - uptime + ticks / hz


def mark_process_start(prefix: str) -> None:
    """`<prefix>.exec` at the process's creation and `<prefix>.main` now."""
    if not _on:
        return
    _stderr()
    started = process_started()
    if started is not None:
        mark(f"{prefix}.exec", started)
    mark(f"{prefix}.main")
