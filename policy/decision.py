"""Typed guard decisions shared by the in-kernel guard and the sentry.

A security decision is never a bare boolean: it names the action, the rule that fired, why, and
what the researcher can do instead. `to_metadata()` is the `metadata["bedside"]` payload that
travels with every message a guard touched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Action(str, enum.Enum):  # noqa: UP042 (str() must stay "Action.X" for callers)
    RELEASED = "released"
    REDACTED = "redacted"
    BLOCKED = "blocked"

    def __str__(self) -> str:
        return self.value


class Layer(str, enum.Enum):  # noqa: UP042
    KERNEL = "kernel"
    SENTRY = "sentry"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Decision:
    """What a guard did with one output, and why."""

    action: Action
    rule: str
    reason: str = ""
    advice: str = ""
    layer: Layer = Layer.KERNEL
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def release(cls, rule: str = "pass", reason: str = "", **kw: Any) -> Decision:
        return cls(Action.RELEASED, rule, reason, **kw)

    @classmethod
    def redact(cls, rule: str, reason: str, advice: str = "", **kw: Any) -> Decision:
        return cls(Action.REDACTED, rule, reason, advice, **kw)

    @classmethod
    def block(cls, rule: str, reason: str, advice: str = "", **kw: Any) -> Decision:
        return cls(Action.BLOCKED, rule, reason, advice, **kw)

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCKED

    def to_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "decision": self.action.value,
            "rule": self.rule,
            "layer": self.layer.value,
        }
        if self.reason:
            meta["reason"] = self.reason
        if self.advice:
            meta["advice"] = self.advice
        if self.details:
            meta["details"] = self.details
        return meta

    def most_severe(self, other: Decision) -> Decision:
        """The stricter of two decisions (blocked > redacted > released)."""
        order = {Action.RELEASED: 0, Action.REDACTED: 1, Action.BLOCKED: 2}
        return other if order[other.action] > order[self.action] else self
