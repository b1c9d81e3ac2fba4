"""Checks that catch model artifacts carrying patient records, before they reach the airlock.

Each check returns a `CheckResult` naming the check and its evidence (shapes, counts, AUC), never
the record values themselves. The checks follow the SACRO-ML attacks (AI-SDC/SACRO-ML:
`instance_based_attack.py` for stored training instances, `structural_attack.py` for small
groups in trees) and the GRAIMATTER recommendations (Jefferson et al. 2022, "GRAIMATTER Green
Paper"); the membership-inference check is the loss-threshold attack of Yeom et al. 2018
("Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting", CSF), scored as an
ROC AUC with scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Attribute names of scikit-learn estimators that store training instances verbatim.
_INSTANCE_ATTRS = {
    "_fit_X": "k-nearest neighbours keep every training row",
    "support_vectors_": "a support vector machine keeps its support vectors (training rows)",
    "X_train_": "a Gaussian process keeps its training data",
    "_tree": "a neighbours tree index keeps every training row",
}
# Fitted attributes that hold categorical vocabularies.
_VOCAB_ATTRS = ("categories_", "classes_", "vocabulary_", "vocab", "vocabulary", "itos", "stoi")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one release check. `evidence` is safe to show and to log."""

    name: str
    passed: bool
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "passed": self.passed,
            "evidence": self.evidence,
            "details": self.details,
        }


@dataclass
class TrainingData:
    """What the model was trained on and records it never saw, for the checks that need them."""

    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_holdout: np.ndarray | None = None
    y_holdout: np.ndarray | None = None
    n_records: int | None = None  # records behind the training set (when x_train is absent)

    @property
    def n_train(self) -> int | None:
        return len(self.x_train) if self.x_train is not None else self.n_records

    @classmethod
    def from_args(cls, train: Any, holdout: Any, n_records: int | None = None) -> TrainingData:
        def split(pair: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
            if pair is None:
                return None, None
            if isinstance(pair, tuple | list) and len(pair) == 2:
                return _array(pair[0]), _array(pair[1])
            return _array(pair), None

        xt, yt = split(train)
        xh, yh = split(holdout)
        return cls(xt, yt, xh, yh, n_records)


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        return np.asarray(x.detach().cpu().numpy())
    if hasattr(x, "to_numpy"):  # pandas
        return np.asarray(x.to_numpy())
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Records stored in the model


class RowIndex:
    """Training rows as exact float32 byte strings, so stored copies are found by value."""

    def __init__(self, x: np.ndarray) -> None:
        x2 = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        self.width = x2.shape[1]
        # A constant row (all zeros, all ones) also appears in untrained weights: skip it.
        varied = np.ptp(x2, axis=1) > 0 if self.width > 1 else np.ones(len(x2), bool)
        self.rows = {r.tobytes() for r in x2[varied]}
        self.first = np.unique(x2[varied, 0].view(np.int32))

    def count_in(self, values: np.ndarray) -> int:
        """How many training rows appear in `values`, at any offset of its flattened data.

        Not only whole rows of a matrix of the training width: a row copied into the middle of
        a larger weight matrix is found too. The first value's bits are matched vectorised over
        the whole array, then the few candidates are compared row by row, so a 100 MB model is
        scanned in about a second.
        """
        arr = np.asarray(values)
        if not np.issubdtype(arr.dtype, np.number) or arr.size < self.width or not self.rows:
            return 0
        flat = np.ascontiguousarray(arr.astype(np.float32, copy=False).ravel())
        last = flat.size - self.width
        bits = flat[: last + 1].view(np.int32)
        # A binary search per value into the sorted first-column bits: several times faster
        # than np.isin, which sorts the whole array.
        idx = np.searchsorted(self.first, bits)
        idx[idx == len(self.first)] = 0
        candidates = np.flatnonzero(self.first[idx] == bits)
        hits, seen_end = 0, -1
        for p in candidates:
            if p >= seen_end and flat[p : p + self.width].tobytes() in self.rows:
                hits += 1
                seen_end = p + self.width  # rows do not overlap
        return hits


def check_sklearn_instances(est: Any, data: TrainingData) -> CheckResult:
    """Instance-based estimators, and any fitted array with one row per training record."""
    rows = RowIndex(data.x_train) if data.x_train is not None else None
    n = data.n_train
    fitted = list(_walk_estimator(est))
    for path, value in fitted:
        attr = path.rsplit(".", 1)[-1]
        if attr in _INSTANCE_ATTRS and value is not None:
            shape = getattr(value, "shape", None)
            return CheckResult(
                "instance_based",
                False,
                f"{path}: {_INSTANCE_ATTRS[attr]} (shape {shape}); use a parametric model "
                "(logistic regression, a shallow tree with large leaves, a neural network)",
                {"attribute": path, "shape": list(shape) if shape else None},
            )
    for path, value in fitted:
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.size:
            if n is not None and n > 1 and value.shape[0] == n:
                return CheckResult(
                    "record_shaped",
                    False,
                    f"{path} has shape {list(value.shape)}: one row per training record ({n})",
                    {"attribute": path, "shape": list(value.shape), "n_train": n},
                )
            if rows is not None and value.dtype.kind in "fiu":
                hits = rows.count_in(value)
                if hits:
                    return CheckResult(
                        "training_rows",
                        False,
                        f"{path} contains {hits} rows equal to training records",
                        {"attribute": path, "rows": hits},
                    )
    return CheckResult("instance_based", True, "no stored training instances found")


def check_torch_tensors(module: Any, data: TrainingData) -> CheckResult:
    """Parameters or buffers shaped like the training data or holding its rows (by value)."""
    rows = RowIndex(data.x_train) if data.x_train is not None else None
    n = data.n_train
    for name, tensor in module.state_dict().items():
        shape = list(tensor.shape)
        if n is not None and n > 1 and n in shape:
            return CheckResult(
                "record_shaped",
                False,
                f"tensor {name!r} has shape {shape}: a dimension equals the number of training "
                f"records ({n}); store no per-record state in the module (if the width is a "
                "coincidence, change it)",
                {"tensor": name, "shape": shape, "n_train": n},
            )
        if rows is not None and (tensor.is_floating_point() or not tensor.dtype.is_complex):
            hits = rows.count_in(tensor.detach().cpu().float().numpy())
            if hits:
                return CheckResult(
                    "training_rows",
                    False,
                    f"tensor {name!r} (shape {shape}) contains {hits} rows equal to training "
                    "records",
                    {"tensor": name, "shape": shape, "rows": hits},
                )
    return CheckResult(
        "record_shaped", True, "no parameter or buffer is shaped like or holds the training data"
    )


def check_leaf_sizes(est: Any, min_leaf_size: int) -> CheckResult | None:
    """Every leaf of every tree must hold at least `min_leaf_size` training records."""
    trees = [(p, v) for p, v in _walk_estimator(est) if p.endswith("tree_")]
    hist = [(p, v) for p, v in _walk_estimator(est) if p.endswith("_predictors")]
    if not trees and not hist:
        return None
    small, smallest, where = 0, None, ""
    for path, tree in trees:
        leaves = tree.children_left == -1
        sizes = tree.n_node_samples[leaves]
        bad = sizes[sizes < min_leaf_size]
        if bad.size:
            small += int(bad.size)
            if smallest is None or int(bad.min()) < smallest:
                smallest, where = int(bad.min()), path
    for path, predictors in hist:
        for group in predictors:
            for pred in group:
                nodes = pred.nodes
                sizes = nodes["count"][nodes["is_leaf"].astype(bool)]
                bad = sizes[sizes < min_leaf_size]
                if bad.size:
                    small += int(bad.size)
                    if smallest is None or int(bad.min()) < smallest:
                        smallest, where = int(bad.min()), path
    if small:
        return CheckResult(
            "min_leaf_size",
            False,
            f"{small} leaves hold fewer than {min_leaf_size} training records (smallest "
            f"{smallest}, in {where}); set min_samples_leaf={min_leaf_size} or more",
            {"leaves": small, "smallest": smallest, "min_leaf_size": min_leaf_size},
        )
    return CheckResult(
        "min_leaf_size", True, f"every leaf holds at least {min_leaf_size} training records"
    )


def _walk_estimator(obj: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every fitted attribute of an estimator, descending into pipelines and ensembles."""
    if depth > 6:
        return
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        return
    for key, value in attrs.items():
        path = f"{prefix}{key}"
        yield path, value
        if _is_estimator(value):
            yield from _walk_estimator(value, f"{path}.", depth + 1)
        elif _is_object_sequence(value):
            for i, item in enumerate(value):
                if _is_estimator(item):
                    yield from _walk_estimator(item, f"{path}[{i}].", depth + 1)
                elif isinstance(item, tuple) and len(item) >= 2 and _is_estimator(item[1]):
                    yield from _walk_estimator(item[1], f"{path}[{item[0]}].", depth + 1)
                elif _is_object_sequence(item):
                    for j, sub in enumerate(item):
                        if _is_estimator(sub):
                            yield from _walk_estimator(sub, f"{path}[{i}][{j}].", depth + 1)


def _is_object_sequence(value: Any) -> bool:
    """Lists, tuples and object arrays: where pipelines and ensembles keep their estimators."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "O"
    return isinstance(value, list | tuple)


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "get_params") and hasattr(value, "__dict__")


# ---------------------------------------------------------------------------------------------
# Vocabularies


def vocabularies(obj: Any) -> Iterator[tuple[str, list[str]]]:
    """String vocabularies a model carries: encoder categories, classes, token tables."""
    if _is_estimator(obj):
        items: Iterator[tuple[str, Any]] = _walk_estimator(obj)
    else:
        items = _walk_module_attrs(obj)
    for path, value in items:
        if path.rsplit(".", 1)[-1] not in _VOCAB_ATTRS:
            continue
        strings = _strings(value)
        if strings:
            yield path, strings


def _walk_module_attrs(module: Any) -> Iterator[tuple[str, Any]]:
    named = getattr(module, "named_modules", None)
    if named is None:
        return
    for prefix, sub in named():
        for key, value in vars(sub).items():
            if key.startswith("_"):
                continue
            yield (f"{prefix}.{key}" if prefix else key), value


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value if isinstance(k, str)] + [
            str(v) for v in value.values() if isinstance(v, str)
        ]
    if isinstance(value, list | tuple):
        out: list[str] = []
        for v in value:
            out.extend(
                _strings(v)
                if isinstance(v, list | tuple | np.ndarray | dict)
                else ([v] if isinstance(v, str) else [])
            )
        return out
    if isinstance(value, np.ndarray) and value.dtype.kind in "OUS":
        return [str(v) for v in value.ravel() if isinstance(v, str | np.str_)]
    return []


def check_vocabularies(obj: Any, find_identifier: Callable[[str], Any] | None) -> CheckResult:
    """Categorical vocabularies must not hold identifier values of the loaded datasets."""
    if find_identifier is None:
        return CheckResult(
            "vocabulary",
            True,
            "no identifier index loaded; vocabularies not scanned",
            {"scanned": False},
        )
    for path, strings in vocabularies(obj):
        hits = sum(1 for s in strings if find_identifier(s) is not None)
        if hits:
            # Count only: the values themselves must not reach a log or an error message.
            return CheckResult(
                "vocabulary",
                False,
                f"{path} holds {hits} of {len(strings)} values that are identifier values of "
                "the loaded datasets; drop identifier columns before encoding",
                {"attribute": path, "identifier_values": hits, "size": len(strings)},
            )
    return CheckResult("vocabulary", True, "no vocabulary holds identifier values")


# ---------------------------------------------------------------------------------------------
# Membership inference


def per_record_loss(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each record's loss under the model: cross-entropy for classifiers, squared error else."""
    eps = 1e-12
    if _is_estimator(model):
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(x), dtype=float)
            classes = list(model.classes_)
            idx = np.array([classes.index(v) for v in y])
            return -np.log(np.clip(proba[np.arange(len(y)), idx], eps, 1.0))
        pred = np.asarray(model.predict(x), dtype=float)
        return np.asarray((pred - y.astype(float)) ** 2).reshape(len(y), -1).mean(axis=1)
    torch = _torch()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(np.asarray(x, dtype=np.float32)))
    finally:
        model.train(was_training)
    target = torch.as_tensor(np.asarray(y))
    fn = torch.nn.functional
    if out.ndim == 2 and out.shape[1] > 1:
        return fn.cross_entropy(out, target.long().reshape(-1), reduction="none").numpy()
    flat = out.reshape(len(y), -1)
    tgt = target.float().reshape(len(y), -1)
    if flat.shape[1] == 1 and bool(((tgt == 0) | (tgt == 1)).all()):
        return fn.binary_cross_entropy_with_logits(flat, tgt, reduction="none").mean(1).numpy()
    return ((flat - tgt) ** 2).mean(1).numpy()


def check_membership_inference(
    model: Any, data: TrainingData, auc_max: float, *, seed: int = 0
) -> CheckResult:
    """The loss-threshold attack (Yeom et al. 2018): members have lower loss than non-members.

    The attack AUC over a balanced sample of training and held-out records is threshold-free;
    0.5 is chance. SACRO-ML's worst-case attack reports the same metric.
    """
    from sklearn.metrics import roc_auc_score

    if (
        data.x_train is None
        or data.y_train is None
        or data.x_holdout is None
        or data.y_holdout is None
    ):
        return CheckResult(
            "membership_inference",
            False,
            "the policy sets mia_auc_max but no training and held-out records were given; call "
            "hospital.release(..., train=(X_train, y_train), holdout=(X_test, y_test))",
            {"auc_max": auc_max},
        )
    rng = np.random.default_rng(seed)
    m = min(len(data.x_train), len(data.x_holdout), 5000)
    tr = rng.choice(len(data.x_train), m, replace=False)
    ho = rng.choice(len(data.x_holdout), m, replace=False)
    loss_in = per_record_loss(model, data.x_train[tr], data.y_train[tr])
    loss_out = per_record_loss(model, data.x_holdout[ho], data.y_holdout[ho])
    labels = np.r_[np.ones(m), np.zeros(m)]
    auc = float(roc_auc_score(labels, -np.r_[loss_in, loss_out]))
    details = {
        "auc": round(auc, 4),
        "auc_max": auc_max,
        "records": m,
        "mean_loss_train": round(float(loss_in.mean()), 4),
        "mean_loss_holdout": round(float(loss_out.mean()), 4),
    }
    if auc > auc_max:
        return CheckResult(
            "membership_inference",
            False,
            f"loss-threshold attack AUC {auc:.3f} > {auc_max} on {m} training vs {m} held-out "
            f"records (mean loss {loss_in.mean():.3f} vs {loss_out.mean():.3f}): the model "
            "remembers its training records; regularise, stop earlier or train on more records",
            details,
        )
    return CheckResult(
        "membership_inference",
        True,
        f"loss-threshold attack AUC {auc:.3f} ≤ {auc_max} on {m}+{m} records",
        details,
    )


def _torch() -> Any:
    import torch

    return torch
