"""A research session as the hospital sees it: the declared intent, its budget, and the meter.

The researcher declares an intent (purpose, cohort, model job, policy id, budget, the kernel
environment they expect, their verifier key); the sentry checks it against the policy before any
cell runs, counts cells, kernel CPU seconds and egress bytes against it, and stops the session
when a budget runs out.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

INTENT_FIELDS = (
    "purpose",
    "cohort",
    "model_job",
    "policy_id",
    "budget",
    "environment_digest",
    "researcher_key",
)

_environment_digest: str | None = None
_environment_lock = threading.Lock()


def environment_digest() -> str:
    """Digest of the kernel environment: Python version and the sorted installed distributions.

    The sentry runs in the kernel's environment (the kernelspec's interpreter), so this is the
    environment the researcher's code runs in. Computed once per process; the sentry warms it
    in its start-up thread, and the lock keeps the relay from computing it a second time.
    """
    global _environment_digest
    with _environment_lock:
        if _environment_digest is None:
            names = set()
            for dist in importlib.metadata.distributions():
                name = dist.metadata["Name"]
                if name:
                    names.add(f"{name.lower().replace('_', '-')}=={dist.version}")
            body = {
                "python": platform.python_version(),
                "implementation": sys.implementation.name,
                "distributions": sorted(names),
            }
            _environment_digest = "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    return _environment_digest


@dataclass(frozen=True)
class Budget:
    """Limits of one session; None means the policy sets no limit."""

    cells: int | None = None
    cpu_seconds: float | None = None
    egress_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "cpu_seconds": self.cpu_seconds,
            "egress_bytes": self.egress_bytes,
        }


def _limit(value: Any) -> Any:
    return None if value in (None, 0) else value


def policy_ceiling(policy: Any) -> Budget:
    """The largest budget the policy allows (policy.session maxima, output egress limit)."""
    session = getattr(policy, "session", None)
    outputs = getattr(policy, "outputs", None)
    cells = _limit(getattr(session, "max_cells", None))
    cpu = _limit(getattr(session, "max_cpu_seconds", None))
    egress = _limit(getattr(session, "max_egress_bytes", None))
    session_egress = _limit(getattr(outputs, "session_egress_bytes", None))
    if session_egress is not None:
        egress = session_egress if egress is None else min(egress, session_egress)
    return Budget(cells=cells, cpu_seconds=cpu, egress_bytes=egress)


class IntentRefused(Exception):
    """The declared intent is out of policy; `reason` says why and `fix` what to change."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix

    def text(self) -> str:
        return f"{self.reason} ({self.fix})" if self.fix else self.reason


@dataclass(frozen=True)
class Intent:
    purpose: str
    cohort: str
    model_job: str
    policy_id: str
    budget: Budget
    environment_digest: str | None
    researcher_key: str | None
    raw: dict[str, Any] = field(default_factory=dict)


def _number(value: Any, name: str, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IntentRefused(f"budget.{name} must be a number", f"write budget.{name}: 100")
    if value < 0:
        raise IntentRefused(f"budget.{name} must not be negative")
    return kind(value)


def parse_intent(content: dict[str, Any]) -> Intent:
    """The intent carried by a `bedside_intent_request` (`content["intent"]` or the content)."""
    raw = content.get("intent", content)
    if not isinstance(raw, dict):
        raise IntentRefused("the intent must be a JSON object", "send {'intent': {...}}")
    for name in ("purpose", "policy_id"):
        if not isinstance(raw.get(name), str) or not raw.get(name):
            raise IntentRefused(f"the intent lacks {name!r}", f"declare {name} in the intent")
    budget_raw = raw.get("budget") or {}
    if not isinstance(budget_raw, dict):
        raise IntentRefused("budget must be an object", "write budget: {cells: 100, ...}")
    unknown = set(budget_raw) - {"cells", "cpu_seconds", "egress_bytes"}
    if unknown:
        raise IntentRefused(
            f"unknown budget fields: {', '.join(sorted(unknown))}",
            "use cells, cpu_seconds and egress_bytes",
        )
    budget = Budget(
        cells=_number(budget_raw.get("cells"), "cells", int),
        cpu_seconds=_number(budget_raw.get("cpu_seconds"), "cpu_seconds", float),
        egress_bytes=_number(budget_raw.get("egress_bytes"), "egress_bytes", int),
    )
    env = raw.get("environment_digest")
    key = raw.get("researcher_key")
    return Intent(
        purpose=str(raw["purpose"]),
        cohort=str(raw.get("cohort", "")),
        model_job=str(raw.get("model_job", "")),
        policy_id=str(raw["policy_id"]),
        budget=budget,
        environment_digest=env if isinstance(env, str) and env else None,
        researcher_key=key if isinstance(key, str) and key else None,
        raw=raw,
    )


def check_intent(intent: Intent, policy: Any, env_digest: str) -> Budget:
    """The session budget of an intent that fits the policy; raise `IntentRefused` otherwise."""
    if intent.policy_id != policy.id:
        raise IntentRefused(
            f"unknown policy id {intent.policy_id!r}: this kernel runs policy {policy.id!r}",
            f"declare policy_id: {policy.id}",
        )
    if intent.environment_digest is not None and intent.environment_digest != env_digest:
        raise IntentRefused(
            f"wrong kernel environment digest {intent.environment_digest}: "
            f"the hospital kernel environment is {env_digest}",
            "update the expected environment digest or ask the custodian what changed",
        )
    ceiling = policy_ceiling(policy)
    chosen: dict[str, Any] = {}
    for name in ("cells", "cpu_seconds", "egress_bytes"):
        asked = getattr(intent.budget, name)
        most = getattr(ceiling, name)
        if asked is not None and most is not None and asked > most:
            raise IntentRefused(
                f"budget.{name} = {asked} is above the policy's maximum of {most}",
                f"ask for at most {most}",
            )
        chosen[name] = asked if asked is not None else most
    return Budget(**chosen)


@dataclass
class Meter:
    """What a session has used so far."""

    cells: int = 0
    cpu_seconds: float = 0.0
    egress_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "egress_bytes": self.egress_bytes,
        }

    def exhausted(self, budget: Budget) -> str | None:
        """Which budget is used up (a sentence for the notice), or None."""
        if budget.cells is not None and self.cells >= budget.cells:
            return f"the session's cell budget ({budget.cells} cells) is used up"
        if budget.cpu_seconds is not None and self.cpu_seconds >= budget.cpu_seconds:
            return (
                f"the session's CPU budget ({budget.cpu_seconds:g} s) is used up "
                f"({self.cpu_seconds:.1f} s)"
            )
        if budget.egress_bytes is not None and self.egress_bytes >= budget.egress_bytes:
            return f"the session's egress budget ({budget.egress_bytes} bytes) is used up"
        return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcessTreeCPU:
    """CPU seconds of a process and all its descendants, read from /proc.

    For each live process in the tree, utime+stime+cutime+cstime counts the process itself and
    every descendant it has already waited for; summing over the live tree counts each CPU
    second once. A process that exited and was not yet reaped is missed until it is reaped.
    """

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.last = 0.0

    @staticmethod
    def _stat(pid: int) -> tuple[float, list[int]] | None:
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return None
        fields = raw[raw.rindex(b")") + 2 :].split()
        # fields[0] is the state (field 3); utime is field 14 -> index 11.
        ticks = sum(int(x) for x in fields[11:15])
        children: list[int] = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                children.extend(int(c) for c in text.split())
        except OSError:
            pass
        return ticks / _CLOCK_TICKS, children

    def read(self) -> float:
        total = 0.0
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            stat = self._stat(pid)
            if stat is None:
                continue
            total += stat[0]
            stack.extend(stat[1])
        # A tree that has exited reads as zero: keep the last figure.
        self.last = max(self.last, total)
        return self.last
