"""Model fits and statistical tests of protected records: degrees of freedom and per-row outputs.

A regression fitted on a handful of patients (`df.head(8)`, one ward's few cases) discloses
their values through its coefficients, fitted values and residuals; ACRO refuses such a fit when
its residual degrees of freedom are below `safe_dof_threshold` (10). This module follows the
records behind a fit, whichever library made it, at the few points every fit passes:

- statsmodels: every results object (`Results.__init__`: OLS, GLM, Logit, Probit, Poisson,
  MixedLM, ...) and the per-row outputs its model attaches (`ModelData.attach_rows`:
  `fittedvalues`, `resid`, `predict` of a pandas frame), whichever way the model was built
  (a formula on a protected frame, `sm.OLS(y, X)` on protected Series or on their `.values`);
  `SurvfuncRight` (Kaplan-Meier tables);
- scikit-learn: the check every estimator makes of its input (`_check_feature_names`), which
  names the estimator and the records at fit time; the estimator's prediction methods are then
  followed for that estimator class (`predict`, `predict_proba`, ...);
- scipy.stats: every public function (tests, correlations), by the sizes of its protected
  arguments; numpy's `polyfit`, `corrcoef` and `cov`.

A fit whose residual degrees of freedom are below the policy's `min_degrees_of_freedom`, and a
test over a group of fewer than `min_cell_count` records (or a table with such a cell), is
*watched*: its numbers (coefficients, standard errors, t values, confidence bounds, fitted values,
residuals, training-row predictions; a test's statistic and expected frequencies) are withheld
from every later output that shows them, however printed (`summary()`, `print(m.params)`,
`coef_`, an f-string). Per-row outputs of any fit on protected rows (fitted values, residuals,
predictions) are protected rows themselves: tagged like the table's rows, or logged as values
extracted in record order, so the guard's row-level checks apply to them. Cooperative, like the
rest of the in-kernel guard: code that copies the numbers into new objects loses nothing the
text watch needs, but a fit computed by hand with numpy is not followed.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.abc
import importlib.machinery
import re
import sys
import threading
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.generic import NDFrame

from bedside.kernel._provenance import ProvenanceTracker, ReductionEvent, sequence_log, tag_of
from bedside.policy import disclosure as dr
from bedside.policy.decision import Action, Decision

WATCHED_FITS = 32  # the fits and tests whose numbers later outputs are compared with
# A number printed with this many significant digits that equals a watched value to its last
# digit is taken as that value; shorter numbers count only when two watched values appear.
SURE_DIGITS = 5
PAIR_DIGITS = 4
_NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+)(?:\.(\d+))?(?:[eE]([-+]?\d+))?")
# scikit-learn methods whose output has one value per input row.
PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function",
                   "score_samples", "transform", "fit_predict", "fit_transform")  # fmt: skip
# Fitted attributes of an estimator that are not numbers learnt from the records.
_NOT_LEARNT = frozenset({"n_features_in_", "n_iter_", "classes_", "feature_names_in_",
                         "n_outputs_", "n_classes_", "n_samples_seen_"})  # fmt: skip
# The modules whose entry points are wrapped, as soon as they are imported.
MODULES = ("statsmodels.base.model", "statsmodels.base.data", "statsmodels.duration.survfunc",
           "statsmodels.tsa.tsatools", "statsmodels.stats.outliers_influence",
           "statsmodels.regression._prediction", "statsmodels.base._prediction_inference",
           "sklearn.utils.validation", "sklearn.metrics", "scipy.stats")  # fmt: skip


@dataclass(frozen=True)
class Source:
    """The protected records behind an argument: table, records, the labels when known."""

    table: str
    n: int
    index: pd.Index | None = None
    cells: bool = False  # an aggregate: `n` is its smallest cell


@dataclass
class Watched:
    """A fit or test whose numbers may not leave: what it is, why, and its numbers (lazily)."""

    what: str
    table: str
    rule: str
    reason: str
    numbers: Callable[[], Iterable[Any]]
    obj: Any = None  # the result object itself, withheld when displayed
    values: np.ndarray | None = None  # sorted finite values, once computed

    def sorted_values(self) -> np.ndarray:
        if self.values is None:
            parts: list[np.ndarray] = []
            try:
                for part in self.numbers():
                    arr = np.asarray(part, dtype=float).ravel()
                    parts.append(arr[np.isfinite(arr)])
            except Exception:  # noqa: BLE001, S110 - a number it cannot compute is not shown
                pass
            vals = np.unique(np.concatenate(parts)) if parts else np.empty(0)
            # whole numbers (counts, degrees of freedom, a correlation's diagonal) are common
            # in any output and say nothing of the fit
            self.values = vals[vals != np.round(vals)]
            self.numbers = lambda: ()  # drop the references to the fit
        return self.values


class ModelGuard:
    """Follows fits and tests of protected records; judges the text of outputs against them."""

    def __init__(self, tracker: ProvenanceTracker) -> None:
        self.tracker = tracker
        self.rules: dr.DisclosureRules = tracker.rules
        self.log = sequence_log(tracker)
        self.watched: deque[Watched] = deque(maxlen=WATCHED_FITS)
        self._local = threading.local()
        self._installed: set[str] = set()
        # The record labels of the recent fits on protected rows, and their table: a frame of
        # one row per record built from them (influence, prediction intervals) is rows.
        self.fitted_rows: deque[tuple[pd.Index, str]] = deque(maxlen=WATCHED_FITS)
        self._noted: OrderedDict[Any, None] = OrderedDict()  # per-row arrays already logged
        # Confusion matrices of protected labels (their display, and their text when a cell
        # fails), and the decisions on the reports made in this cell (`_patch_metrics`).
        self.eval_tables: deque[EvalTable] = deque(maxlen=WATCHED_FITS)
        self.cell_notes: list[Decision] = []
        self.cell = 0  # the number of the cell running (`begin_cell`)
        self.code = ""

    def begin_cell(self, code: str) -> None:
        if self.eval_tables and self.code:
            self._keep_parts()
        self.cell += 1
        self.code = code
        self.cell_notes.clear()

    # -- provenance ------------------------------------------------------------------------
    def source(self, obj: Any) -> Source | None:
        """The protected records behind `obj`: protected rows, an array or list taken from them
        in record order, or an aggregate (its smallest cell)."""
        if isinstance(obj, NDFrame):
            tag = tag_of(obj)
            if tag is None:
                return None
            if tag[0] == "rows":
                return Source(str(tag[1]), len(obj), obj.index)
            ann = self.tracker.annotation_of(obj)
            if ann is None:
                return Source("?", 0, None, cells=True)
            counts = np.asarray(ann.counts, dtype=float)
            n = int(np.nanmin(counts)) if counts.size else 0
            return Source(ann.table, n, None, cells=True)
        if isinstance(obj, (np.ndarray, list)):
            src = self.log.source_of(obj)
            if src is not None:
                # the records it was taken from (a transposed or sliced view has another length)
                return Source(src[0], len(src[1]), src[1])
        return None

    def sources(self, args: Iterable[Any]) -> list[Source]:
        out = []
        for a in args:
            s = self.source(a)
            if s is None and isinstance(a, (tuple, list)) and len(a) <= 64:
                out.extend(s2 for s2 in map(self.source, a) if s2 is not None)
            elif s is not None:
                out.append(s)
        return out

    @property
    def busy(self) -> bool:
        return self.tracker.busy or getattr(self._local, "inside", 0) > 0

    def _inside(self) -> _Inside:
        return _Inside(self._local)

    # -- what was fitted -------------------------------------------------------------------
    def watch(self, what: str, table: str, rule: str, reason: str,
              numbers: Callable[[], Iterable[Any]], obj: Any = None) -> None:  # fmt: skip
        self.watched.append(Watched(what, table, rule, reason, numbers, obj))

    def note_fit(self, what: str, src: Source, dof: float,
                 numbers: Callable[[], Iterable[Any]], obj: Any = None) -> None:  # fmt: skip
        """A fit on protected records: watched when its residual degrees of freedom are few."""
        need = self.rules.min_degrees_of_freedom
        if dof >= need:
            return
        self.watch(what, src.table, dr.DEGREES_OF_FREEDOM,
                   f"it shows numbers of {what} on protected records with {dof:g} residual "
                   f"degrees of freedom (fewer than {need})", numbers, obj)  # fmt: skip

    def note_rows(self, out: Any, src: Source, key: Any) -> Any:
        """A per-row output of a fit (fitted values, residuals, predictions) on protected rows."""
        if src.index is None or src.cells:
            return out
        if isinstance(out, NDFrame) and len(out) == len(src.index):
            if tag_of(out) is None:
                out.attrs["bedside"] = ("rows", src.table)
        elif isinstance(out, np.ndarray) and out.ndim >= 1 and len(out) == len(src.index):
            key = ("model", key, len(out), id(out))
            if key in self._noted:  # (influence measures are read many times as they compute)
                return out
            self._noted[key] = None
            while len(self._noted) > 256:
                self._noted.popitem(last=False)
            self.log.add_array(out, src.table, src.index, key)
            # now, not when the log settles: a slice printed at once (`print(pred[:30])`)
            # outlives the array it was cut from only until the print returns
            if out.dtype.kind in "biuf" and self.tracker.is_record_axis(src.index, src.table):
                cols = out.reshape(len(out), -1)
                for j in range(min(cols.shape[1], 8)):
                    self.log.add_values((key, j), cols[:, j])
        return out

    # -- outputs ---------------------------------------------------------------------------
    def _decision(self, w: Watched) -> Decision:
        advice = dr.ADVICE[w.rule].format(min=self.rules.min_cell_count,
                                          dof=self.rules.min_degrees_of_freedom)  # fmt: skip
        return Decision.block(w.rule, w.reason, advice, details={"table": w.table, "what": w.what})

    def judge_object(self, obj: Any) -> Decision | None:
        """Blocked when `obj` is a watched fit or test result (or wraps one); the decision on a
        confusion matrix of protected labels (shown as `shown_instead` says)."""
        if self.eval_tables and isinstance(obj, np.ndarray):
            for t in reversed(self.eval_tables):
                if t.ref() is obj:
                    return t.decision
        if not self.watched:
            return None
        inner = getattr(obj, "_results", None) if not isinstance(obj, NDFrame) else None
        for w in reversed(self.watched):
            if w.obj is not None and (w.obj is obj or (inner is not None and w.obj is inner)):
                return self._decision(w)
        return None

    def shown_instead(self, obj: Any) -> Any:
        """What a confusion matrix of protected labels is displayed as (else `obj` itself)."""
        if self.eval_tables and isinstance(obj, np.ndarray):
            for t in reversed(self.eval_tables):
                if t.ref() is obj:
                    return t.shown
        return obj

    def judge_text(self, text: str) -> Decision | None:
        """Blocked when the text shows numbers of a watched fit or test, or the counts of a
        confusion matrix with a failing cell."""
        failing = [t for t in self.eval_tables if t.decision.action is not Action.RELEASED
                   and t.decision.rule != dr.ROUNDING]  # fmt: skip
        if failing and any(c.isdigit() for c in text[:200_000]):
            ints = [int(m) for m in _INTEGER.findall(text[:200_000])]
            for t in reversed(failing):
                if t.rates:
                    if self._taken_apart(t):
                        return Decision.block(t.decision.rule, "it may show the rates or scores "
                                              "of an evaluation table with cells that fail the "
                                              "disclosure rules", t.decision.advice)  # fmt: skip
                    continue
                if t.in_text(ints) or (t.failing.intersection(ints) and self._taken_apart(t)):
                    return Decision.block(t.decision.rule, "it shows the counts of a confusion "
                                          "matrix with cells that fail the disclosure rules",
                                          t.decision.advice)  # fmt: skip
        if not self.watched or not any(c.isdigit() for c in text[:1_000_000]):
            return None
        with self.tracker.quiet(), self._inside():
            numbers = _printed_numbers(text)
            if not numbers[0].size:
                return None
            for w in reversed(self.watched):
                vals = w.sorted_values()
                if vals.size and _shows(numbers, vals):
                    return self._decision(w)
        return None

    def _taken_apart(self, t: EvalTable) -> bool:
        """Whether this cell made the matrix `t` or names a variable holding it, or holding a
        part of it kept by an earlier cell (`tp` of `tn, fp, fn, tp = cm.ravel()`): its counts
        may be printed one by one there (`tn, fp, fn, tp = cm.ravel()`, `cm[1, 1]`)."""
        if t.cell == self.cell:
            return True
        matrix = t.ref()
        if matrix is None and not t.kept:
            return False
        ns = _user_ns()
        names = set(_NAME.findall(self.code))
        if matrix is not None and any(ns.get(name) is matrix for name in names):
            return True
        return any(name in t.kept and ns.get(name) is t.kept[name] for name in names)

    def _keep_parts(self) -> None:
        """When the next cell begins, after a cell that made or took apart a failing evaluation
        table: the numbers and arrays that cell bound to names (`tn, fp, fn, tp = cm.ravel()`,
        `tp = cm[1, 1]`), each a part of the table that a later cell may print by its name.
        Kept while the name holds that very object."""
        failing = [t for t in self.eval_tables if t.decision.action is not Action.RELEASED
                   and t.decision.rule != dr.ROUNDING]  # fmt: skip
        if not failing:
            return
        taken = [t for t in failing if self._taken_apart(t)]
        if not taken:
            return
        from IPython import get_ipython

        shell = get_ipython()
        try:
            code = shell.transform_cell(self.code) if shell is not None else self.code
            tree = ast.parse(code)
        except (SyntaxError, ValueError):  # not Python: its assignments are not followed
            return
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Store)}  # fmt: skip
        ns = _user_ns()
        parts = {name: ns[name] for name in bound if isinstance(
            ns.get(name), (np.ndarray, np.number, int, float)) and not isinstance(
            ns[name], (bool, np.bool_))}  # fmt: skip
        for t in taken:
            matrix = t.ref()
            values = matrix if matrix is not None else np.asarray(t.rows, dtype=float)
            for name, part in parts.items():
                if part is not matrix and _part_of(part, values):
                    t.kept[name] = part
            while len(t.kept) > 64:
                t.kept.pop(next(iter(t.kept)))

    # -- installation ----------------------------------------------------------------------
    def install(self) -> None:
        """Wrap the libraries' entry points now if imported, else as soon as they are."""
        for name in MODULES:
            if name in sys.modules:
                self._patch(name)
        if not all(m in self._installed for m in MODULES):
            sys.meta_path.insert(0, _Finder(self))
        _patch_pandas(self)

    def _patch(self, name: str) -> None:
        if name in self._installed:
            return
        self._installed.add(name)
        module = sys.modules[name]
        patch = {
            "statsmodels.base.model": _patch_statsmodels_results,
            "statsmodels.base.data": _patch_statsmodels_data,
            "statsmodels.duration.survfunc": _patch_survfunc,
            "statsmodels.tsa.tsatools": _patch_tsatools,
            "statsmodels.stats.outliers_influence": _patch_row_frames,
            "statsmodels.regression._prediction": _patch_row_frames,
            "statsmodels.base._prediction_inference": _patch_row_frames,
            "sklearn.utils.validation": _patch_sklearn,
            "sklearn.metrics": _patch_metrics,
            "scipy.stats": _patch_scipy_stats,
        }[name]
        patch(self, module)
        if name == "scipy.stats":
            _patch_numpy(self)


class _Inside:
    def __init__(self, local: threading.local) -> None:
        self.local = local

    def __enter__(self) -> None:
        self.local.inside = getattr(self.local, "inside", 0) + 1

    def __exit__(self, *exc: object) -> None:
        self.local.inside -= 1


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a watched module right after it is first executed."""

    def __init__(self, guard: ModelGuard) -> None:
        self.guard = guard

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MODULES or fullname in self.guard._installed:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader, guard = spec.loader, self.guard
        orig_exec = loader.exec_module  # type: ignore[attr-defined]

        def exec_module(module: types.ModuleType) -> None:
            orig_exec(module)
            try:
                guard._patch(fullname)
            except Exception:  # noqa: BLE001, S110 - an unpatched library is only unfollowed
                pass

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "AEIOU" else "a ") + noun


# -- numbers in text -------------------------------------------------------------------------


def _printed_numbers(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each decimal number of at least `PAIR_DIGITS` significant digits in the text: its value,
    half of its last printed digit (how far the value it was printed from can be) and its
    significant digits."""
    values, halves, sig = [], [], []
    for m in _NUMBER.finditer(text[:2_000_000]):
        whole, frac, exp = m.group(1), m.group(2) or "", m.group(3)
        # trailing zeros of a fraction are padding (`1.000000`), not digits that identify
        digits = (whole + frac.rstrip("0")).strip("0") if frac else whole.lstrip("0")
        if len(digits) < PAIR_DIGITS:
            continue
        e = int(exp) if exp else 0
        if abs(e) > 300:
            continue
        values.append(float(m.group(0)))
        halves.append(0.5 * 10.0 ** (e - len(frac)))
        sig.append(len(digits))
    return np.array(values), np.array(halves), np.array(sig, dtype=int)


def _shows(numbers: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray) -> bool:
    """True when a number printed with `SURE_DIGITS` digits, or two distinct ones with
    `PAIR_DIGITS`, equal watched values to their last printed digit."""
    x, half, sig = numbers
    tol = half * (1 + 1e-9) + 1e-12 * np.abs(x)
    lo = np.searchsorted(values, x - tol, side="left")
    hi = np.searchsorted(values, x + tol, side="right")
    hit = hi > lo
    if not hit.any():
        return False
    if (sig[hit] >= SURE_DIGITS).any():
        return True
    return np.unique(lo[hit]).size >= 2


# -- statsmodels -----------------------------------------------------------------------------


def _model_source(guard: ModelGuard, model: Any) -> Source | None:
    data = getattr(model, "data", None)
    if data is None:
        return None
    for part in (getattr(data, "frame", None), getattr(data, "orig_endog", None),
                 getattr(data, "orig_exog", None)):  # fmt: skip
        src = guard.source(part)
        if src is not None and not src.cells:
            if src.index is None or len(src.index) != getattr(model, "nobs", len(src.index)):
                # a formula on a frame: the rows the model used (missing values dropped)
                rows = getattr(data, "row_labels", None)
                if isinstance(rows, pd.Index):
                    src = Source(src.table, len(rows), rows)
            return src
    return None


def _fit_numbers(res: Any) -> Iterable[Any]:
    for name in ("params", "bse", "tvalues", "fittedvalues", "resid", "resid_response",
                 "resid_pearson", "random_effects"):  # fmt: skip
        try:
            value = getattr(res, name)
        except Exception:  # noqa: BLE001, S112 - not every model has every attribute
            continue
        if isinstance(value, dict):
            for v in value.values():
                yield np.asarray(v, dtype=float)
        elif value is not None:
            yield np.asarray(value, dtype=float)
    try:
        yield np.asarray(res.conf_int(), dtype=float)
    except Exception:  # noqa: BLE001, S110
        pass


def _patch_statsmodels_results(guard: ModelGuard, module: types.ModuleType) -> None:
    model_init = module.Model.__init__

    @functools.wraps(model_init)
    def model__init__(self: Any, *a: Any, **kw: Any) -> None:
        # statsmodels checks its data as it builds a model (the range of a 0/1 outcome, a
        # constant column): reductions of the library's own, not outputs of the researcher,
        # which would otherwise count as statistics shown (differencing between two subsets)
        with guard.tracker.quiet():
            model_init(self, *a, **kw)

    module.Model.__init__ = model__init__
    cls = module.Results
    orig = cls.__init__

    @functools.wraps(orig)
    def __init__(self: Any, model: Any, params: Any, *a: Any, **kw: Any) -> None:
        orig(self, model, params, *a, **kw)
        if guard.busy:
            return
        with guard._inside():
            src = _model_source(guard, model)
            if src is None:
                return
            if src.index is not None:
                guard.fitted_rows.append((src.index, src.table))
            nobs = float(getattr(model, "nobs", src.n) or src.n)
            dof = getattr(self, "df_resid", None)
            if dof is None:
                dof = getattr(model, "df_resid", None)
            if dof is None:
                dof = nobs - np.size(params)
            ref = self
            guard.note_fit(_a(f"{type(model).__name__} fit"), src, float(dof),
                           lambda: _fit_numbers(ref), self)  # fmt: skip

    cls.__init__ = __init__
    predict_orig = cls.predict

    @functools.wraps(predict_orig)
    def predict(self: Any, exog: Any = None, *a: Any, **kw: Any) -> Any:
        out = predict_orig(self, exog, *a, **kw)
        if guard.busy:
            return out
        with guard._inside():
            # predictions for protected rows (the training rows, or others of the table) are
            # one value per record; for a grid you made up, they are not
            src = guard.source(exog) if exog is not None else None
            if exog is None:
                src = _model_source(guard, self.model)
            if src is not None and not src.cells:
                index = getattr(out, "index", None)
                if isinstance(index, pd.Index) and len(index) == len(out):
                    src = Source(src.table, len(out), index)
                guard.note_rows(out, src, ("statsmodels.predict", id(self)))
        return out

    cls.predict = predict


def _patch_row_frames(guard: ModelGuard, module: types.ModuleType) -> None:
    """`summary_frame()` of influence measures and predictions: one row per record."""
    for cls in list(vars(module).values()):
        if not isinstance(cls, type) or "summary_frame" not in vars(cls):
            continue
        orig = vars(cls)["summary_frame"]

        def summary_frame(self: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
            out = _orig(self, *a, **kw)
            if guard.busy or not isinstance(out, pd.DataFrame) or tag_of(out) is not None:
                return out
            with guard._inside():
                for index, table in reversed(guard.fitted_rows):
                    if out.index is index or guard.tracker.is_record_axis(out.index, table):
                        guard.note_rows(out, Source(table, len(out), out.index),
                                        ("summary_frame", id(self)))  # fmt: skip
                        break
            return out

        cls.summary_frame = functools.wraps(orig)(summary_frame)
    base = getattr(module, "_BaseInfluenceMixin", None)
    if isinstance(base, type):
        _follow_influence(guard, base)


def _follow_influence(guard: ModelGuard, cls: type) -> None:
    """Influence measures (`hat_matrix_diag`, `cooks_distance`, `resid_studentized`, ...): an
    array with one value per record of a fit on protected rows is rows."""
    orig = cls.__getattribute__

    def __getattribute__(self: Any, name: str) -> Any:
        value = orig(self, name)
        if name.startswith("_") or guard.busy:
            return value
        first = value[0] if isinstance(value, tuple) and value else value
        if isinstance(first, np.ndarray) and first.ndim >= 1:
            with guard._inside():
                results = orig(self, "results")
                src = _model_source(guard, getattr(results, "model", None))
                if src is not None and src.index is not None:
                    for arr in value if isinstance(value, tuple) else (value,):
                        if isinstance(arr, np.ndarray) and len(arr) == len(src.index):
                            guard.note_rows(arr, src, ("influence", name, id(self)))
        return value

    cls.__getattribute__ = __getattribute__  # type: ignore[method-assign]


def _patch_tsatools(guard: ModelGuard, module: types.ModuleType) -> None:
    orig = module.add_trend

    @functools.wraps(orig)
    def add_trend(*a: Any, **kw: Any) -> Any:
        # `sm.add_constant` looks for a constant column by each column's range: the library's
        # own reductions, not statistics the researcher shows (see `model__init__`)
        with guard.tracker.quiet():
            return orig(*a, **kw)

    module.add_trend = add_trend


def _patch_statsmodels_data(guard: ModelGuard, module: types.ModuleType) -> None:
    cls = module.ModelData
    for name in ("attach_rows",):
        for klass in (cls, module.PandasData):
            orig = klass.__dict__.get(name)
            if orig is None:
                continue

            def attach(self: Any, result: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
                out = _orig(self, result, *a, **kw)
                if guard.busy:
                    return out
                with guard._inside():
                    model = types.SimpleNamespace(data=self)
                    src = _model_source(guard, model)
                    if src is not None:
                        rows = getattr(self, "row_labels", None)
                        if isinstance(rows, pd.Index) and len(rows) == len(out):
                            src = Source(src.table, len(rows), rows)
                        guard.note_rows(out, src, ("statsmodels", id(self)))
                return out

            setattr(klass, name, attach)


def _patch_survfunc(guard: ModelGuard, module: types.ModuleType) -> None:
    cls = module.SurvfuncRight
    orig_init, orig_summary = cls.__init__, cls.summary

    @functools.wraps(orig_init)
    def __init__(self: Any, time: Any, status: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, time, status, *a, **kw)
        srcs = guard.sources([time, status])
        self._bedside_source = srcs[0] if srcs else None

    @functools.wraps(orig_summary)
    def summary(self: Any, *a: Any, **kw: Any) -> Any:
        out = orig_summary(self, *a, **kw)
        src = getattr(self, "_bedside_source", None)
        if src is None or guard.busy or not isinstance(out, pd.DataFrame):
            return out
        with guard._inside():
            # each step of the table rests on the patients still at risk at its time: a step
            # with fewer than `min_cell_count` at risk is one of those patients' event
            at_risk = pd.Series(np.asarray(out["num at risk"], dtype=float), index=out.index)
            guard.tracker.annotate_summary(src.table, out, at_risk.astype(int))
        return out

    cls.__init__ = __init__
    cls.summary = summary


# -- scikit-learn ----------------------------------------------------------------------------


def _estimator_numbers(est: Any, x: Any) -> Iterable[Any]:
    for name, value in list(vars(est).items()):
        if name.endswith("_") and not name.startswith("_") and name not in _NOT_LEARNT:
            arr = np.asarray(value) if not np.isscalar(value) else np.asarray([value])
            if arr.dtype.kind in "fc":
                yield arr.real
    if x is not None:
        for method in ("predict", "predict_proba", "decision_function"):
            fn = getattr(est, method, None)
            if fn is not None:
                try:
                    yield np.asarray(fn(x), dtype=float)
                except Exception:  # noqa: BLE001, S112
                    continue


def _patch_sklearn(guard: ModelGuard, module: types.ModuleType) -> None:
    orig = module._check_feature_names
    wrapped: set[type] = set()

    def follow_predictions(cls: type) -> None:
        if cls in wrapped:
            return
        wrapped.add(cls)
        for method in PREDICT_METHODS:
            fn = getattr(cls, method, None)
            if fn is None or not callable(fn) or getattr(fn, "_bedside", False):
                continue

            def predict(self: Any, X: Any = None, *a: Any, _fn: Any = fn,
                        _m: str = method, **kw: Any) -> Any:  # fmt: skip
                out = _fn(self, X, *a, **kw) if X is not None else _fn(self, *a, **kw)
                if not guard.busy:
                    src = guard.source(X)
                    if src is not None:
                        with guard._inside():
                            guard.note_rows(out, src, ("sklearn", _m, id(self)))
                return out

            predict._bedside = True  # type: ignore[attr-defined]
            functools.update_wrapper(predict, fn)
            try:
                setattr(cls, method, predict)
            except (AttributeError, TypeError):
                continue

    # `validate_data` names the estimator and the caller's own X (a protected frame, before it
    # is converted) to this check first, at fit time with reset=True
    @functools.wraps(orig)
    def _check_feature_names(estimator: Any, X: Any, *, reset: bool) -> Any:
        out = orig(estimator, X, reset=reset)
        if reset and not guard.busy:
            src = guard.source(X)
            if src is not None:
                with guard._inside():
                    follow_predictions(type(estimator))
                    n_params = max(1, int(np.prod(np.shape(X)[1:] or (1,))) + 1)
                    dof = src.n - n_params
                    small_x = X if src.n < 1000 else None
                    ref = weakref.ref(estimator)

                    def numbers() -> Iterable[Any]:
                        est = ref()
                        return _estimator_numbers(est, small_x) if est is not None else ()

                    guard.note_fit(
                        _a(f"{type(estimator).__name__} fit"), src, dof, numbers, estimator
                    )
        return out

    module._check_feature_names = _check_feature_names


# -- scipy.stats and numpy -------------------------------------------------------------------


def _result_numbers(result: Any) -> Iterable[Any]:
    parts = list(result) if isinstance(result, tuple) else [result]
    for name in ("statistic", "pvalue", "df", "expected_freq", "correlation"):
        v = getattr(result, name, None)
        if v is not None:
            parts.append(v)
    for p in parts:
        try:
            arr = np.asarray(p, dtype=float)
        except (TypeError, ValueError):
            continue
        yield arr


def _statistic(
    guard: ModelGuard,
    name: str,
    fn: Callable[..., Any],
    dof: Callable[[int, tuple[Any, ...]], int] | None = None,
) -> Callable[..., Any]:
    """`fn` judged by the sizes of its protected arguments: a group of fewer than
    `min_cell_count` records (a table with such a cell), or with `dof`, too few residual
    degrees of freedom, and its result is watched."""

    @functools.wraps(fn)
    def statistic(*a: Any, **kw: Any) -> Any:
        if guard.busy:
            return fn(*a, **kw)
        with guard._inside():
            # (inside: the functions it calls, `np.cov` under `DataFrame.cov`, are not judged
            # again on their intermediate arrays)
            out = fn(*a, **kw)
            srcs = guard.sources([*a, *kw.values()])
            if not srcs:
                return out
            small = min(srcs, key=lambda s: s.n)
            least = guard.rules.min_cell_count
            rows = next((s for s in srcs if s.index is not None and not s.cells), None)
            minmax = getattr(out, "minmax", None)
            if (
                rows is not None
                and isinstance(minmax, tuple)
                and guard.rules.extremes == "suppress"
            ):
                # `scipy.stats.describe`: the minimum and maximum are single patients' values,
                # withheld from the cell's outputs as `df.age.max()` is
                for stat, value in zip(("min", "max"), minmax, strict=False):
                    with contextlib.suppress(TypeError, ValueError):
                        guard.tracker.cell_events.append(ReductionEvent(
                            rows.table, name, stat, np.empty(0, np.uint64), 0,
                            float(np.min(value) if stat == "min" else np.max(value)),
                            (dr.EXTREMES,)))  # fmt: skip
            if rows is not None and dof is None:
                # one value per record (`zscore`, `rankdata`, `boxcox`): rows themselves
                for part in out if isinstance(out, tuple) else (out,):
                    guard.note_rows(part, rows, (name, id(part)))

            def numbers() -> Iterable[Any]:
                return _result_numbers(out)

            if small.cells and small.n < least:
                why = f"{name} of a table with a cell of fewer than {least} records"
                guard.watch(name, small.table, dr.THRESHOLD, why, numbers, out)
            elif dof is not None and not small.cells:
                guard.note_fit(name, small, dof(small.n, a), numbers, out)
            elif not small.cells and small.n < least:
                why = f"{name} over a group of {small.n} records (fewer than {least})"
                guard.watch(name, small.table, dr.THRESHOLD, why, numbers, out)
        return out

    statistic._bedside = True  # type: ignore[attr-defined]
    return statistic


def _patch_scipy_stats(guard: ModelGuard, module: types.ModuleType) -> None:
    for name in getattr(module, "__all__", ()):
        fn = getattr(module, name, None)
        if isinstance(fn, types.FunctionType) and not getattr(fn, "_bedside", False):
            setattr(module, name, _statistic(guard, f"scipy.stats.{name}", fn))


def _patch_pandas(guard: ModelGuard) -> None:
    """`corr`, `cov` of protected rows: a correlation over a few records, like `np.corrcoef`."""
    for cls, name, dof in ((pd.DataFrame, "corr", 2), (pd.DataFrame, "cov", 1),
                           (pd.DataFrame, "corrwith", 2), (pd.Series, "corr", 2),
                           (pd.Series, "cov", 1)):  # fmt: skip
        fn = getattr(cls, name)
        if not getattr(fn, "_bedside", False):
            lost = dof
            setattr(cls, name, _statistic(guard, f"{cls.__name__}.{name}", fn,
                                          lambda n, a, lost=lost: n - lost))  # fmt: skip


def _patch_numpy(guard: ModelGuard) -> None:
    def polyfit_dof(n: int, a: tuple[Any, ...]) -> int:
        deg = int(a[2]) if len(a) > 2 and np.isscalar(a[2]) else 1
        return n - deg - 1

    def lstsq_dof(n: int, a: tuple[Any, ...]) -> int:
        # a fit by hand: its coefficients are as disclosive as `sm.OLS`'s on the same rows
        shape: tuple[int, ...] = np.shape(a[0]) if a else ()
        return n - (shape[1] if len(shape) == 2 else 1)

    for owner, name, dof in ((np, "polyfit", polyfit_dof), (np, "corrcoef", lambda n, a: n - 2),
                             (np, "cov", lambda n, a: n - 1),
                             (np.linalg, "lstsq", lstsq_dof)):  # fmt: skip
        fn = getattr(owner, name)
        if not getattr(fn, "_bedside", False):
            prefix = "np.linalg" if owner is np.linalg else "np"
            setattr(owner, name, _statistic(guard, f"{prefix}.{name}", fn, dof))


# -- scikit-learn's evaluation tables --------------------------------------------------------

# The functions of `sklearn.metrics` whose results are frequency tables of patients.
EVAL_TABLES = ("confusion_matrix", "multilabel_confusion_matrix", "classification_report",
               "precision_recall_fscore_support", "precision_score", "recall_score", "f1_score",
               "fbeta_score")  # fmt: skip
EVAL_ADVICE = (
    "Evaluate on a larger held-out set, so that every class has at least {min} patients in "
    "each cell, or merge rare classes; single scores over the whole set (accuracy, AUC, F1) "
    "are released. `display(cm)` shows a confusion matrix with its small cells suppressed."
)
_INTEGER = re.compile(r"(?<![\w.])\d+(?![\w]|\.\d)")
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*+(?![\w'\"])")  # a name, not a string's prefix


@dataclass
class EvalTable:
    """A confusion matrix of protected labels with cells that fail the rules."""

    ref: weakref.ref[Any]
    decision: Decision
    shown: np.ndarray  # as displayed: failing cells `suppressed`, passing counts rounded
    rows: list[list[int]]  # the counts, row by row, as a printed matrix shows them
    failing: frozenset[int] = frozenset()  # the counts of the cells that fail
    cell: int = 0  # the cell that made it
    # rates or scores (a normalised matrix, `precision_recall_fscore_support`), too few digits
    # to be told in text: withheld from any output with a number in a cell that names it
    rates: bool = False
    # names bound by a cell that took it apart, and the part each held (`_keep_parts`)
    kept: dict[str, Any] = field(default_factory=dict)

    def in_text(self, ints: list[int]) -> bool:
        """True when the text's whole numbers hold the matrix's rows in order (with at most two
        labels between them: a frame's row labels)."""
        k = len(self.rows[0]) if self.rows else 0
        if k == 0 or len(self.rows) * k < 4:
            return False
        first = self.rows[0]
        for start in range(len(ints) - k + 1):
            if ints[start : start + k] != first:
                continue
            pos, ok = start + k, True
            for row in self.rows[1:]:
                at = next((pos + g for g in range(3) if ints[pos + g : pos + g + k] == row), None)
                if at is None:
                    ok = False
                    break
                pos = at + k
            if ok:
                return True
        return False


def _part_of(part: Any, values: Any) -> bool:
    """Whether `part` is a number of `values` (an evaluation table), or an array of at most as
    many numbers, each one of them: a count or score taken out of it, not a new result."""
    try:
        vals = np.unique(np.asarray(values, dtype=float).ravel())
        arr = np.asarray(part, dtype=float).ravel()
    except (TypeError, ValueError):
        return False
    if not arr.size or not vals.size or arr.size > max(vals.size, 64):
        return False
    return bool(np.isclose(arr[:, None], vals[None, :], rtol=1e-12, atol=0).any(axis=1).all())


def _user_ns() -> dict[str, Any]:
    from IPython import get_ipython

    return getattr(get_ipython(), "user_ns", None) or {}


def _label_source(guard: ModelGuard, a: tuple[Any, ...], kw: dict[str, Any]) -> Source | None:
    """The protected records behind a metric's labels (`y_true`, `y_pred`): a Series of the
    table's rows, or an array taken from them or predicted for them."""
    args = [*a[:2], kw.get("y_true"), kw.get("y_pred")]
    srcs = [s for s in map(guard.source, (x for x in args if x is not None)) if s is not None]
    rows = [s for s in srcs if not s.cells]
    return rows[0] if rows else None


def _eval_decision(guard: ModelGuard, mask: list[tuple[str, ...]], what: str) -> Decision:
    rules = guard.rules
    failing = [m for m in mask if m]
    fired = sorted({r for m in failing for r in m})
    advice = EVAL_ADVICE.format(min=rules.min_cell_count)
    if failing and len(failing) == len(mask):
        why = f"every cell of this {what} fails the disclosure rules ({', '.join(fired)})"
        return Decision.block(fired[0], why, advice, details={"rules": fired})
    if failing:
        return Decision.redact(fired[0], f"{len(failing)} of {len(mask)} cells of this {what} "
                               f"suppressed ({', '.join(fired)})", advice,
                               details={"rules": fired})  # fmt: skip
    return Decision.release("disclosure")


def _cell_mask(counts: Iterable[int], rules: dr.DisclosureRules) -> list[tuple[str, ...]]:
    return dr.check_cells([int(c) for c in counts], rules=rules, statistic="count").mask


def _report_mask(cm: np.ndarray, keys: list[str], n: int,
                 rules: dr.DisclosureRules) -> dict[str, dict[str, tuple[str, ...]]]:  # fmt: skip
    """Per row of a classification report and per column, the rules the cell fails.

    Each class's support is a count of patients; its recall is `tp` of `support` patients and
    its precision `tp` of the patients predicted as it, so both are 0/1 rates judged like any
    (`binary_class_fails`: the patients with and without must each meet the threshold); its
    F1 score combines them. The averages and the accuracy could give back a class's suppressed
    score from the others, so a column failing for any class fails in them too.
    """
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for i, key in enumerate(keys):
        s = _cell_mask([support[i]], rules)[0]
        recall = tuple(
            dict.fromkeys((*s, *dr.binary_class_fails(int(tp[i]), int(support[i]), rules)))
        )
        p = _cell_mask([predicted[i]], rules)[0] if predicted[i] else ()
        precision = tuple(
            dict.fromkeys((*p, *dr.binary_class_fails(int(tp[i]), int(predicted[i]), rules)))
        )
        out[key] = {
            "precision": precision,
            "recall": recall,
            "f1-score": tuple(dict.fromkeys((*precision, *recall))),
            "support": s,
        }
    column_fails = {c: tuple(dict.fromkeys(r for row in out.values() for r in row[c]))
                    for c in ("precision", "recall", "f1-score")}  # fmt: skip
    total = _cell_mask([n], rules)[0]
    for avg in ("macro avg", "weighted avg", "micro avg", "samples avg"):
        out[avg] = {**column_fails, "support": total}
    acc = dr.binary_class_fails(int(tp.sum()), n, rules)
    out["accuracy"] = {"f1-score": tuple(dict.fromkeys((*acc, *column_fails["recall"]))),
                       "support": total}  # fmt: skip
    return out


def _redact_report_text(text: str, order: list[str],
                        fails: dict[str, dict[str, tuple[str, ...]]]) -> str | None:  # fmt: skip
    """The report as sklearn writes it, with failing cells `suppressed` (its rows end in four
    fields of ten characters: a space and nine right-aligned). None if the layout differs."""
    columns = ("precision", "recall", "f1-score", "support")
    lines = text.split("\n")
    body = [i for i, line in enumerate(lines[1:], 1) if line.strip()]
    if len(body) != len(order):
        return None
    for i, key in zip(body, order, strict=True):
        line = lines[i]
        if len(line) < 40:
            return None
        head, fields = line[:-40], [line[-40 + 10 * j : -30 + 10 * j or None] for j in range(4)]
        row = fails.get(key, {})
        for j, col in enumerate(columns):
            if row.get(col) and fields[j].strip():
                fields[j] = f" {'suppr.':>9}"
        lines[i] = head + "".join(fields)
    return "\n".join(lines)


def _patch_metrics(guard: ModelGuard, module: types.ModuleType) -> None:
    """`confusion_matrix` and `classification_report` of protected labels: frequency tables of
    patients, judged cell by cell like a crosstab."""
    rules = guard.rules

    def confusion_matrix(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            out = fn(*a, **kw)
            if guard.busy:
                return out
            with guard._inside(), guard.tracker.quiet():
                src = _label_source(guard, a, kw)
                # a matrix, or `multilabel_confusion_matrix`'s 2x2 matrix per class
                if src is None or not isinstance(out, np.ndarray) or out.ndim not in (2, 3):
                    return out
                counts = out
                weighted = kw.get("normalize") is not None or kw.get("sample_weight") is not None
                if weighted:
                    # rates or weighted counts: judged by the patients behind each cell (with a
                    # cell's row or column total, its count is a division away)
                    plain = {k: v for k, v in kw.items() if k not in ("normalize", "sample_weight")}
                    counts = np.asarray(fn(*a, **plain))
                    if counts.shape != out.shape:
                        return out
                mask = _cell_mask(counts.ravel(), rules)
                decision = _eval_decision(guard, mask, "confusion matrix")
                if weighted:
                    if decision.action is not Action.RELEASED:
                        shown = np.array([v if not m else "suppressed" for v, m in
                                          zip(out.ravel(), mask, strict=True)],
                                         dtype=object).reshape(out.shape)  # fmt: skip
                        failing = frozenset(int(c) for c, m in zip(counts.ravel(), mask,
                                                                   strict=True) if m)  # fmt: skip
                        guard.eval_tables.append(EvalTable(
                            weakref.ref(out), decision, shown, _rows(counts), failing,
                            guard.cell, rates=True))  # fmt: skip
                        why = (
                            f"a {kw.get('normalize') and 'normalised' or 'weighted'} "
                            "confusion matrix with cells that fail the disclosure rules"
                        )
                        guard.watch("confusion matrix", src.table, decision.rule, why,
                                    lambda: [out], None)  # fmt: skip
                        # its rates have too few digits to be told in text: the cell's outputs
                        # are withheld (`display(cm)` in a later cell shows it suppressed)
                        guard.cell_notes.append(Decision.block(
                            decision.rule, f"it shows {why}", decision.advice,
                            details=decision.details))  # fmt: skip
                    return out
                if decision.action is Action.RELEASED and rules.round_counts_to > 1:
                    decision = Decision.redact(dr.ROUNDING, "counts rounded to the nearest "
                                               f"{rules.round_counts_to}",
                                               details={"base": rules.round_counts_to})  # fmt: skip
                shown = np.array([dr.round_count(int(v), rules.round_counts_to) if not m
                                  else "suppressed" for v, m in zip(out.ravel(), mask,
                                                                    strict=True)],
                                 dtype=object).reshape(out.shape)  # fmt: skip
                if decision.action is not Action.RELEASED:
                    failing = frozenset(int(c) for c, m in zip(out.ravel(), mask, strict=True)
                                        if m)  # fmt: skip
                    guard.eval_tables.append(EvalTable(weakref.ref(out), decision, shown,
                                                       _rows(out), failing,
                                                       guard.cell))  # fmt: skip
            return out

        wrapper._bedside = True  # type: ignore[attr-defined]
        return wrapper

    def classification_report(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            out = fn(*a, **kw)
            if guard.busy or kw.get("sample_weight") is not None:
                return out
            with guard._inside(), guard.tracker.quiet():
                src = _label_source(guard, a, kw)
                if src is None:
                    return out
                try:
                    return _judged_report(guard, fn, a, kw, out)
                except (TypeError, ValueError):  # multilabel indicators: not followed (docs)
                    return out

        wrapper._bedside = True  # type: ignore[attr-defined]
        return wrapper

    def scores(fn: Callable[..., Any]) -> Callable[..., Any]:
        # `precision_score`, `recall_score`, `f1_score`, `fbeta_score` are judged only with
        # `average=None` (their per-class arrays); their single numbers are released
        per_class_only = fn.__name__ != "precision_recall_fscore_support"

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            out = fn(*a, **kw)
            averaged = "average" not in kw or kw["average"] is not None
            if guard.busy or (per_class_only and averaged):
                return out
            with guard._inside(), guard.tracker.quiet():
                src = _label_source(guard, a, kw)
                if src is None:
                    return out
                try:
                    _judge_scores(guard, src, a, kw, out, fn.__name__)
                except (TypeError, ValueError):  # multilabel indicators: not followed (docs)
                    pass
            return out

        wrapper._bedside = True  # type: ignore[attr-defined]
        return wrapper

    wrappers = {"confusion_matrix": confusion_matrix,
                "multilabel_confusion_matrix": confusion_matrix,
                "classification_report": classification_report}  # fmt: skip
    for name in EVAL_TABLES:
        wrap = wrappers.get(name, scores)
        fn = getattr(module, name, None)
        if callable(fn) and not getattr(fn, "_bedside", False):
            setattr(module, name, wrap(fn))


def _judged_report(guard: ModelGuard, fn: Callable[..., Any], a: tuple[Any, ...],
                   kw: dict[str, Any], out: Any) -> Any:  # fmt: skip
    """The report with the cells that fail suppressed (the text, or the dict's values), and
    the cell's outputs marked (or blocked, when every cell fails)."""
    import warnings

    from sklearn.metrics import _classification as cls_mod
    from sklearn.utils.multiclass import unique_labels

    rules = guard.rules
    y_true = a[0] if a else kw.get("y_true")
    y_pred = a[1] if len(a) > 1 else kw.get("y_pred")
    labels = kw.get("labels", a[2] if len(a) > 2 else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        as_dict = fn(*a, **{**kw, "output_dict": True}) if not isinstance(out, dict) else out
        labels = unique_labels(y_true, y_pred) if labels is None else np.asarray(labels)
        cm = np.asarray(cls_mod.confusion_matrix(y_true, y_pred, labels=labels))
    order = list(as_dict)
    keys = order[: len(labels)]
    n = int(cm.sum())
    fails = _report_mask(cm, keys, n, rules)
    mask = [f for key in order for col, f in fails.get(key, {}).items()
            if not (isinstance(as_dict[key], dict) and col not in as_dict[key])]  # fmt: skip
    decision = _eval_decision(guard, mask, "classification report")
    if not decision.blocked and all(all(fails[k].values()) for k in keys):
        # every class's cells fail: what is left (the total, `len(y_true)`) is no report
        decision = Decision.block(decision.rule, "every class's cells of this classification "
                                  f"report fail the disclosure rules ({decision.rule})",
                                  decision.advice, details=decision.details)  # fmt: skip
    if decision.action is Action.RELEASED:
        return out
    guard.cell_notes.append(decision)
    if isinstance(out, dict):
        red: dict[str, Any] = {}
        for key, value in out.items():
            row = fails.get(key, {})
            if isinstance(value, dict):
                red[key] = {c: ("suppressed" if row.get(c) else v) for c, v in value.items()}
            else:
                red[key] = "suppressed" if row.get("f1-score") else value
        return red
    text = _redact_report_text(str(out), order, fails)
    if text is None or decision.blocked:
        # a layout it cannot rewrite, or nothing to show: no report at all
        guard.cell_notes[-1] = Decision.block(decision.rule, decision.reason, decision.advice,
                                              details=decision.details)  # fmt: skip
        return "classification report suppressed: " + decision.reason
    return text


def _rows(counts: np.ndarray) -> list[list[int]]:
    """A matrix's counts row by row as printed (a stack of matrices: each one's rows in turn)."""
    return counts.reshape(-1, counts.shape[-1]).astype(int).tolist()


def _judge_scores(guard: ModelGuard, src: Source, a: tuple[Any, ...], kw: dict[str, Any],
                  out: Any, what: str = "precision_recall_fscore_support") -> None:  # fmt: skip
    """`precision_recall_fscore_support` (and the per-class arrays of `precision_score`,
    `recall_score`, `f1_score`, `fbeta_score`): the numbers of a classification report without
    its layout. When a class's cells fail as they would in the report, the cell's outputs are
    withheld and the scores are watched in later outputs (arrays cannot show `suppressed`)."""
    from sklearn.metrics import _classification as cls_mod
    from sklearn.utils.multiclass import unique_labels

    y_true = a[0] if a else kw.get("y_true")
    y_pred = a[1] if len(a) > 1 else kw.get("y_pred")
    labels = kw.get("labels")
    labels = unique_labels(y_true, y_pred) if labels is None else np.asarray(labels)
    cm = np.asarray(cls_mod.confusion_matrix(y_true, y_pred, labels=labels))
    keys = [str(k) for k in labels]
    fails = _report_mask(cm, keys, int(cm.sum()), guard.rules)
    fired = sorted({r for k in keys for cell in fails[k].values() for r in cell})
    if not fired:
        return
    why = (f"per-class scores or supports of {len(cm)} classes with cells that fail the "
           f"disclosure rules ({', '.join(fired)})")  # fmt: skip
    advice = EVAL_ADVICE.format(min=guard.rules.min_cell_count)
    guard.cell_notes.append(Decision.block(fired[0], f"it shows {why}", advice,
                                           details={"rules": fired}))  # fmt: skip
    parts = [p for p in (out if isinstance(out, tuple) else (out,)) if p is not None]
    guard.watch(
        what,
        src.table,
        fired[0],
        f"it shows {why}",
        lambda: parts,
        out,
    )
    decision = guard.cell_notes[-1]
    for part in parts:
        if isinstance(part, np.ndarray):
            guard.eval_tables.append(EvalTable(weakref.ref(part), decision, part, [],
                                               cell=guard.cell, rates=True))  # fmt: skip
