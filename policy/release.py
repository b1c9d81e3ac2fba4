"""The `release:` section of a policy: what may leave the hospital as an artifact, and how.

Per kind (`model`, `table`, `figure`) the custodian chooses a mode (`auto` releases after the
checks pass, `review` waits in the airlock for custodians, `deny` refuses every request), a size
cap, how many distinct custodians must approve (the two-person rule), and for models the
thresholds of the checks that catch artifacts carrying records.

    release:
      approvals_required: 2          # default for every kind
      model:
        mode: review
        max_bytes: 200 MB
        min_leaf_size: 10            # trees: every leaf must hold at least this many records
        mia_auc_max: 0.6             # loss-threshold membership inference (Yeom et al. 2018)
      table:  {mode: auto, max_bytes: 1 MB}
      figure: {mode: review}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bedside.errors import PolicyError

KINDS: tuple[str, ...] = ("model", "table", "figure")
MODES: tuple[str, ...] = ("auto", "review", "deny")

LineOf = Callable[[tuple[str, ...]], "int | None"]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)

_DEFAULT_MAX_BYTES = {"model": 200 * 10**6, "table": 10**6, "figure": 5 * 10**6}
_KIND_KEYS = {"mode", "max_bytes", "approvals_required", "min_leaf_size", "mia_auc_max"}
_MODEL_ONLY = {"min_leaf_size", "mia_auc_max"}


@dataclass(frozen=True)
class KindRules:
    """How one kind of artifact (`model`, `table`, `figure`) is released."""

    kind: str
    mode: str = "review"
    max_bytes: int = 200 * 10**6
    approvals_required: int = 2
    # Model checks. `min_leaf_size` follows the output-checking minimum cell count; an attack AUC
    # of 0.5 is chance, so `mia_auc_max` is how much better than chance an attacker may do.
    min_leaf_size: int = 10
    mia_auc_max: float | None = 0.6


@dataclass(frozen=True)
class ReleaseRules:
    """The whole `release:` section, one `KindRules` per kind."""

    kinds: dict[str, KindRules] = field(default_factory=lambda: {k: _default(k) for k in KINDS})

    def for_kind(self, kind: str) -> KindRules:
        try:
            return self.kinds[kind]
        except KeyError:
            raise PolicyError(
                f"unknown release kind {kind!r}", fix=f"use one of {', '.join(KINDS)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, rules in self.kinds.items():
            d = asdict(rules)
            d.pop("kind")
            if kind != "model":
                for key in _MODEL_ONLY:
                    d.pop(key)
            out[kind] = d
        return out

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any] | None,
        *,
        path: str | None = None,
        line_of: LineOf | None = None,
    ) -> ReleaseRules:
        """Validate a parsed `release:` mapping; every mistake names file, line and the fix."""

        def fail(keys: tuple[str, ...], message: str, fix: str) -> PolicyError:
            line = line_of(("release", *keys)) if line_of is not None else None
            return PolicyError(message, path=path, line=line, fix=fix)

        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise fail(
                (),
                "`release:` must be a mapping of kinds",
                "write `release: {model: {mode: review}}` or remove the section for the defaults",
            )
        known = {*KINDS, "approvals_required"}
        for key in d:
            if key not in known:
                raise fail(
                    (str(key),),
                    f"unknown key `release.{key}`",
                    f"use one of {', '.join(sorted(known))}",
                )
        default_approvals = _approvals(
            d.get("approvals_required", 2), ("approvals_required",), fail
        )
        kinds: dict[str, KindRules] = {}
        for kind in KINDS:
            raw = d.get(kind, {}) or {}
            if not isinstance(raw, Mapping):
                raise fail(
                    (kind,),
                    f"`release.{kind}` must be a mapping",
                    f"write `{kind}: {{mode: review}}`",
                )
            allowed = _KIND_KEYS if kind == "model" else _KIND_KEYS - _MODEL_ONLY
            for key in raw:
                if key not in allowed:
                    raise fail(
                        (kind, str(key)),
                        f"unknown key `release.{kind}.{key}`",
                        f"use one of {', '.join(sorted(allowed))}",
                    )
            base = _default(kind)
            mode = raw.get("mode", base.mode)
            if mode not in MODES:
                raise fail(
                    (kind, "mode"),
                    f"`release.{kind}.mode` is {mode!r}",
                    f"use one of {', '.join(MODES)}",
                )
            max_bytes = _size(raw.get("max_bytes", base.max_bytes), (kind, "max_bytes"), fail)
            approvals = _approvals(
                raw.get("approvals_required", default_approvals), (kind, "approvals_required"), fail
            )
            min_leaf = raw.get("min_leaf_size", base.min_leaf_size)
            if isinstance(min_leaf, bool) or not isinstance(min_leaf, int) or min_leaf < 1:
                raise fail(
                    (kind, "min_leaf_size"),
                    f"`release.{kind}.min_leaf_size` is {min_leaf!r}",
                    "write a whole number of records, at least 1 (10 is usual)",
                )
            auc = raw.get("mia_auc_max", base.mia_auc_max)
            if auc is not None and (
                isinstance(auc, bool) or not isinstance(auc, int | float) or not 0.5 <= auc <= 1
            ):
                raise fail(
                    (kind, "mia_auc_max"),
                    f"`release.{kind}.mia_auc_max` is {auc!r}",
                    "write an attack AUC between 0.5 (chance) and 1.0, e.g. 0.6; "
                    "`null` turns the membership-inference check off",
                )
            kinds[kind] = KindRules(
                kind=kind,
                mode=mode,
                max_bytes=max_bytes,
                approvals_required=approvals,
                min_leaf_size=min_leaf,
                mia_auc_max=None if auc is None else float(auc),
            )
        return cls(kinds=kinds)


def _default(kind: str) -> KindRules:
    return KindRules(kind=kind, max_bytes=_DEFAULT_MAX_BYTES[kind])


def _approvals(value: Any, keys: tuple[str, ...], fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(
            keys,
            f"`release.{'.'.join(keys)}` is {value!r}",
            "write the number of distinct custodians who must approve (1 or more; "
            "2 is the two-person rule)",
        )
    return value


def _size(value: Any, keys: tuple[str, ...], fail: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            n = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
            if n > 0:
                return n
    raise fail(
        keys,
        f"`release.{'.'.join(keys)}` is {value!r}",
        "write a positive size in bytes or with a unit, e.g. `200 MB` or `512 KiB`",
    )


def parse_size(value: str | int) -> int:
    """`"200 MB"` → 200000000 (for the CLI and tests)."""
    return _size(value, ("max_bytes",), lambda k, m, f: PolicyError(m, fix=f))
