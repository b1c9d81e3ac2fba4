"""The kernel side of a release: `hospital.release(obj, name=..., kind=...)`.

A data scientist asks to take a trained model (or a table, or a figure) home. This module
serialises it without pickle (torch → safetensors, scikit-learn → skops, tables → CSV, figures →
PNG), runs the policy's release checks while the training data is still at hand, and hands the
request to the hospital's outbox, where the airlock (`bedside.gateway.airlock`, trusted, outside
the sandbox) re-checks it, records every step in the ledger and waits for the custodians.

The checks here run in the same process as the researcher's code, so they stop honest mistakes
(a k-NN model, a forgotten buffer, an overfit network), not a determined attacker: the airlock
repeats what can be checked from the artifact bytes alone, and `review` mode puts a person in
the loop.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bedside.errors import ReleaseError
from bedside.kernel._model_checks import (
    CheckResult,
    TrainingData,
    check_leaf_sizes,
    check_membership_inference,
    check_sklearn_instances,
    check_torch_tensors,
    check_vocabularies,
    vocabularies,
)
from bedside.policy.release import KINDS, KindRules, ReleaseRules

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ARCHITECTURE_KEY = "bedside.architecture"


@dataclass(frozen=True)
class Artifact:
    """The bytes that would leave, and how to name them."""

    name: str
    kind: str
    format: str  # "safetensors" | "skops" | "csv" | "png"
    filename: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class ReleaseTicket:
    """What the researcher gets back: the request's id, status and every check's result."""

    id: str
    name: str
    kind: str
    filename: str
    digest: str
    size: int
    status: str  # "submitted" (waits for the airlock) | "refused"
    checks: list[CheckResult] = field(default_factory=list)
    producing_cells: list[Any] = field(default_factory=list)

    @property
    def refusals(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "filename": self.filename,
            "digest": f"sha256:{self.digest}",
            "size": self.size,
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "producing_cells": list(self.producing_cells),
        }

    def __repr__(self) -> str:
        lines = [f"release {self.id}: {self.name} ({self.kind}, {self.size} bytes) — {self.status}"]
        for c in self.checks:
            lines.append(f"  {'ok ' if c.passed else 'NO '} {c.name}: {c.evidence}")
        if self.status == "submitted":
            lines.append("  waiting in the hospital outbox: a custodian runs `bedside review`")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Serialisation (never pickle)


def serialise(obj: Any, *, name: str, kind: str) -> Artifact:
    """Turn a model, table or figure into release bytes, refusing anything else."""
    if kind == "model":
        if _is_torch_module(obj):
            return Artifact(name, kind, "safetensors", f"{name}.safetensors", _torch_bytes(obj))
        if _is_sklearn(obj):
            import skops.io

            return Artifact(name, kind, "skops", f"{name}.skops", skops.io.dumps(obj))
        raise ReleaseError(
            f"cannot release a {type(obj).__name__} as a model: bedside releases torch modules "
            "(safetensors) and scikit-learn estimators (skops), never pickles"
        )
    if kind == "table":
        if not hasattr(obj, "to_csv"):
            raise ReleaseError(
                f"cannot release a {type(obj).__name__} as a table: pass a pandas DataFrame"
            )
        return Artifact(name, kind, "csv", f"{name}.csv", obj.to_csv().encode())
    if kind == "figure":
        fig = getattr(obj, "figure", obj)
        if not hasattr(fig, "savefig"):
            raise ReleaseError(
                f"cannot release a {type(obj).__name__} as a figure: pass a matplotlib Figure"
            )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": "bedside"})
        return Artifact(name, kind, "png", f"{name}.png", buf.getvalue())
    raise ReleaseError(f"unknown release kind {kind!r}: use one of {', '.join(KINDS)}")


def _is_torch_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is in the kernel environment
        return False
    return isinstance(obj, torch.nn.Module)


def _is_sklearn(obj: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, BaseEstimator)


def architecture(module: Any) -> dict[str, Any]:
    """A JSON description of a torch module: classes, `extra_repr`, vocabularies. Never code."""
    cls = type(module)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "modules": [
            {"name": n, "type": type(m).__name__, "repr": m.extra_repr()}
            for n, m in module.named_modules()
        ],
        "vocabularies": dict(vocabularies(module)),
    }


def _torch_bytes(module: Any) -> bytes:
    from safetensors.torch import save

    # Clone: tied weights share storage, which safetensors refuses; the copy is the release.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    meta = {ARCHITECTURE_KEY: json.dumps(architecture(module), sort_keys=True, default=str)}
    return save(tensors, metadata=meta)


# ---------------------------------------------------------------------------------------------
# Checks


def run_checks(
    obj: Any,
    artifact: Artifact,
    rules: KindRules,
    data: TrainingData,
    *,
    find_identifier: Callable[[str], Any] | None = None,
    table_check: Callable[[Any], CheckResult] | None = None,
    figure_check: Callable[[Any], CheckResult] | None = None,
) -> list[CheckResult]:
    """Every check the policy asks for, in a fixed order; all run so the evidence is complete."""
    results: list[CheckResult] = []
    if rules.mode == "deny":
        results.append(
            CheckResult(
                "mode",
                False,
                f"the policy denies every {artifact.kind} "
                f"release (release.{artifact.kind}.mode: deny)",
            )
        )
    results.append(size_check(artifact, rules))
    if artifact.kind == "model":
        if artifact.format == "skops":
            results.append(check_sklearn_instances(obj, data))
            leaf = check_leaf_sizes(obj, rules.min_leaf_size)
            if leaf is not None:
                results.append(leaf)
        else:
            results.append(check_torch_tensors(obj, data))
        results.append(check_vocabularies(obj, find_identifier))
        if rules.mia_auc_max is not None:
            results.append(check_membership_inference(obj, data, rules.mia_auc_max))
    elif artifact.kind == "table" and table_check is not None:
        results.append(table_check(obj))
    elif artifact.kind == "figure" and figure_check is not None:
        results.append(figure_check(obj))
    if artifact.kind in ("table", "figure") and find_identifier is not None:
        results.append(_text_identifiers(obj, artifact, find_identifier))
    return results


def size_check(artifact: Artifact, rules: KindRules) -> CheckResult:
    if artifact.size > rules.max_bytes:
        return CheckResult(
            "max_bytes",
            False,
            f"{artifact.filename} is {artifact.size} bytes, over the policy cap of "
            f"{rules.max_bytes} (release.{artifact.kind}.max_bytes)",
            {"size": artifact.size, "max_bytes": rules.max_bytes},
        )
    return CheckResult(
        "max_bytes",
        True,
        f"{artifact.size} ≤ {rules.max_bytes} bytes",
        {"size": artifact.size, "max_bytes": rules.max_bytes},
    )


def _text_identifiers(obj: Any, artifact: Artifact, find: Callable[[str], Any]) -> CheckResult:
    if artifact.format == "csv":
        texts: Iterable[str] = artifact.data.decode("utf-8", "replace").splitlines()
    else:
        fig = getattr(obj, "figure", obj)
        from matplotlib.text import Text

        texts = [t.get_text() for t in fig.findobj(Text)]
    hits = sum(1 for t in texts if t and find(t) is not None)
    if hits:
        return CheckResult(
            "identifiers",
            False,
            f"{hits} text lines of the {artifact.kind} hold "
            "identifier values of the loaded datasets",
            {"lines": hits},
        )
    return CheckResult("identifiers", True, "no identifier values in the text")


# ---------------------------------------------------------------------------------------------
# The request


def request_release(
    catalog: Any,
    obj: Any,
    *,
    name: str,
    kind: str,
    producing_cells: Iterable[Any] = (),
    train: Any = None,
    holdout: Any = None,
    outbox: str | os.PathLike[str] | None = None,
) -> ReleaseTicket:
    """Serialise `obj`, check it against the policy and leave it in the hospital outbox.

    `catalog` is the kernel's `hospital` object (or anything with `policy`, and optionally
    `identifier_index`, `outbox`, `n_records`); `train`/`holdout` are `(X, y)` pairs for the
    checks that compare the model with its training records.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ReleaseError(
            f"release name {name!r} is not a plain file name: use letters, "
            "digits, '.', '_' or '-' (at most 64)"
        )
    if kind not in KINDS:
        raise ReleaseError(f"unknown release kind {kind!r}: use one of {', '.join(KINDS)}")
    policy = getattr(catalog, "policy", None)
    rules_all = getattr(policy, "release", None)
    if not isinstance(rules_all, ReleaseRules):
        rules_all = ReleaseRules.from_dict(rules_all if isinstance(rules_all, dict) else None)
    rules = rules_all.for_kind(kind)
    data = TrainingData.from_args(train, holdout, n_records=getattr(catalog, "n_records", None))
    index = getattr(catalog, "identifier_index", None)
    find = index.first if index is not None and hasattr(index, "first") else None

    artifact = serialise(obj, name=name, kind=kind)
    checks = run_checks(
        obj,
        artifact,
        rules,
        data,
        find_identifier=find,
        table_check=getattr(catalog, "release_table_check", None),
        figure_check=getattr(catalog, "release_figure_check", None),
    )
    refused = any(not c.passed for c in checks)
    ticket = ReleaseTicket(
        id=f"r-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}",
        name=name,
        kind=kind,
        filename=artifact.filename,
        digest=artifact.digest,
        size=artifact.size,
        status="refused" if refused else "submitted",
        checks=checks,
        producing_cells=list(producing_cells),
    )
    box = (
        outbox
        if outbox is not None
        else getattr(catalog, "outbox", None) or os.environ.get("BEDSIDE_OUTBOX")
    )
    if box is None:
        raise ReleaseError(
            "no hospital outbox is configured for this kernel: the custodian "
            "sets BEDSIDE_OUTBOX (the sentry does this for its kernels)"
        )
    write_request(Path(box), ticket, artifact)
    return ticket


def write_request(outbox: Path, ticket: ReleaseTicket, artifact: Artifact) -> Path:
    """`<outbox>/<id>/{artifact file, request.json}`; request.json is written last, atomically,
    so the airlock never ingests a half-written request."""
    folder = outbox / ticket.id
    folder.mkdir(parents=True, exist_ok=False)
    (folder / artifact.filename).write_bytes(artifact.data)
    body = {
        **ticket.to_dict(),
        "format": artifact.format,
        "requested": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    tmp = folder / "request.json.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str))
    tmp.replace(folder / "request.json")
    return folder


OUTBOX_ENV = "BEDSIDE_OUTBOX"


@dataclass
class _KernelContext:
    """What `request_release` reads from a running guarded kernel."""

    policy: Any
    identifier_index: Any
    outbox: str | None
    n_records: int | None
    release_table_check: Callable[[Any], CheckResult] | None
    release_figure_check: Callable[[Any], CheckResult] | None


def release_from_kernel(
    kernel: Any, obj: Any, *, name: str, kind: str, train: Any = None, holdout: Any = None
) -> ReleaseTicket:
    """`hospital.release(...)` in the guarded kernel: the kernel's policy, identifier index and
    output guard (disclosure rules for tables, the figure check for figures) feed the checks;
    every cell executed so far is named as a producer (the airlock maps the message ids to the
    ledger's execute-request entries)."""
    frames = getattr(kernel.scanner, "_frames", [])

    def judged(check: str) -> Callable[[Any], CheckResult]:
        def run(obj: Any) -> CheckResult:
            decision, _ = kernel.guard.judge_object(obj)
            if decision is not None and decision.action.value != "released":
                return CheckResult(
                    check,
                    False,
                    f"the output guard {decision.action.value} it: "
                    f"{decision.rule} — {decision.reason}",
                    {"rule": decision.rule},
                )
            return CheckResult(check, True, "passes the output guard's rules")

        return run

    if kind == "table":
        # Release what the guard would show: counts rounded, failing cells suppressed.
        decision, shown = kernel.guard.judge_object(obj)
        if decision is not None and decision.action.value == "redacted":
            obj = shown
    ctx = _KernelContext(
        policy=kernel.policy,
        identifier_index=kernel.scanner.index,
        outbox=os.environ.get(OUTBOX_ENV),
        n_records=max((len(f) for f, _ in frames), default=None),
        release_table_check=judged("disclosure"),
        release_figure_check=judged("figure"),
    )
    return request_release(
        ctx,
        obj,
        name=name,
        kind=kind,
        producing_cells=list(getattr(kernel, "executed_cells", [])),
        train=train,
        holdout=holdout,
    )
