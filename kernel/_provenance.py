"""Provenance of pandas objects derived from protected tables, and the records behind aggregates.

`hospital.load()` tags a frame with `attrs["bedside"] = ("rows", table)`; pandas carries attrs
through most operations. The aggregation entry points (groupby methods, `value_counts`,
`crosstab`, `pivot_table`, `describe`, frame reductions) are wrapped so that a result computed
from protected data is re-tagged `("agg", key)`, where `key` names an `Annotation` holding the
number of records behind each cell (recomputed from the source frame's grouping keys, so it works
for any table and column names), the largest contributions per cell (dominance, p-ratio) and the
positives of 0/1 columns (class disclosure). Scalar reductions of protected Series (`.sum()`,
`.mean()`, `.max()`, ...) are logged as `ReductionEvent`s with their record sets, for the
threshold, extremes and differencing rules. Everything here is cooperative: code that strips
attrs or rebuilds frames from `.values` loses the tag and falls back on the text scans.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.generic import NDFrame
from pandas.core.groupby.generic import DataFrameGroupBy, SeriesGroupBy

from bedside.policy import disclosure as dr

TAG = "bedside"

# Statistics whose scalar results the event log judges; any/all and friends are pandas plumbing.
EVENT_STATS = frozenset({"sum", "mean", "median", "min", "max", "std", "var", "sem", "prod"})
GROUPBY_METHODS = (
    "mean", "sum", "size", "count", "median", "std", "var", "sem", "prod", "min", "max",
    "first", "last", "quantile", "describe", "nunique", "agg", "aggregate", "value_counts",
)  # fmt: skip


@dataclass
class Annotation:
    """What the guard knows about an aggregate: records, statistic and contributions per cell."""

    table: str
    kind: str  # "frequency" (values are counts) | "magnitude" | "summary"
    counts: pd.Series | pd.DataFrame  # records behind each row (Series) or each cell (DataFrame)
    statistic: str = "count"
    column_stats: dict[Any, str] = field(default_factory=dict)  # column label -> statistic
    positives: pd.Series | pd.DataFrame | None = None  # ones of a 0/1 column per row
    top: pd.DataFrame | None = None  # columns top1, top2, total per row (one value column)
    suppress_rows: tuple[Any, ...] = ()  # describe(): rows that are extremes


@dataclass
class ReductionEvent:
    """One scalar reduction of protected data, as the differencing log remembers it."""

    table: str
    column: str
    statistic: str
    records: np.ndarray  # sorted uint64 hashes of the record labels
    n: int
    value: float | None
    fails: tuple[str, ...] = ()


def tag_of(obj: object) -> tuple[str, Any] | None:
    if isinstance(obj, NDFrame):
        attrs = obj.__dict__.get("_attrs") or {}
        tag = attrs.get(TAG)
        if isinstance(tag, tuple) and len(tag) == 2:
            return tag
    return None


def table_of(obj: object, tracker: ProvenanceTracker) -> str | None:
    tag = tag_of(obj)
    if tag is None:
        return None
    if tag[0] == "rows":
        return str(tag[1])
    ann = tracker.annotations.get(tag[1])
    return ann.table if ann else "?"


def _label_hashes(index: pd.Index) -> np.ndarray:
    return np.sort(pd.util.hash_array(np.asarray(index, dtype=object)))


def _is_binary(values: np.ndarray) -> bool:
    if values.dtype == bool:
        return True
    if not np.issubdtype(values.dtype, np.number):
        return False
    v = values[~np.isnan(values)] if np.issubdtype(values.dtype, np.floating) else values
    return v.size > 0 and bool(np.isin(v, (0, 1)).all())


class ProvenanceTracker:
    """Per-kernel state: protected tables, aggregate annotations, the cell's reduction events."""

    def __init__(self, rules: dr.DisclosureRules) -> None:
        self.rules = rules
        self.tables: dict[str, pd.Index] = {}
        self.annotations: OrderedDict[int, Annotation] = OrderedDict()
        self.cell_events: list[ReductionEvent] = []
        self.history: list[ReductionEvent] = []
        self.touched = False
        self._local = threading.local()
        self._keys = itertools.count(1)
        self._patched = False

    # -- state ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return getattr(self._local, "busy", 0) > 0

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Run pandas on the guard's behalf: no annotations, no events."""
        self._local.busy = getattr(self._local, "busy", 0) + 1
        try:
            yield
        finally:
            self._local.busy -= 1

    def begin_cell(self) -> None:
        self.history.extend(self.cell_events)
        del self.history[:-64]  # the differencing log keeps the recent record sets
        self.cell_events = []
        self.touched = False

    def protect(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        frame.attrs[TAG] = ("rows", name)
        self.tables[name] = frame.index
        return frame

    def annotate(self, obj: Any, ann: Annotation) -> Any:
        if isinstance(obj, NDFrame):
            key = next(self._keys)
            self.annotations[key] = ann
            while len(self.annotations) > 512:
                self.annotations.popitem(last=False)
            obj.attrs[TAG] = ("agg", key)
        return obj

    def annotation_of(self, obj: object) -> Annotation | None:
        tag = tag_of(obj)
        if tag and tag[0] == "agg":
            return self.annotations.get(tag[1])
        return None

    def is_record_axis(self, labels: pd.Index, table: str) -> bool:
        """True when the labels are record labels of the table (rows, not column names)."""
        base = self.tables.get(table)
        if base is None or len(labels) == 0:
            return False
        with self.quiet():
            return bool(pd.Index(labels).isin(base).all())

    # -- events ----------------------------------------------------------------------------
    def record_reduction(self, series: pd.Series, name: str, result: Any) -> None:
        table = table_of(series, self)
        if table is None or name not in EVENT_STATS or self.annotation_of(series) is not None:
            return
        self.touched = True
        with self.quiet():
            values = series.to_numpy()
            notna = ~pd.isna(values)
            n = int(notna.sum())
            records = _label_hashes(series.index[notna])
            value = float(result) if isinstance(result, (int, float, np.number)) else None
            fails: list[str] = []
            rules = self.rules
            binary = _is_binary(values[notna]) if n else False
            if name in ("sum", "mean") and binary:
                fails.extend(dr.binary_class_fails(int(values[notna].sum()), n, rules))
            elif n < rules.min_cell_count:
                fails.append(dr.THRESHOLD)
            if name in ("min", "max") and rules.extremes == "suppress":
                fails.append(dr.EXTREMES)
            if (
                name in ("sum", "mean")
                and not binary
                and n
                and np.issubdtype(values.dtype, np.number)
            ):
                v = np.abs(values[notna].astype(float))
                top = np.sort(v)[-2:][::-1] if v.size > 1 else v
                fails.extend(dr.top_summary_fails(list(top), float(v.sum()), n, rules))
            event = ReductionEvent(
                table, str(series.name), name, records, n, value, tuple(dict.fromkeys(fails))
            )
            family = {"mean": "sum"}.get(name, name)
            for prev in itertools.chain(self.history, self.cell_events):
                if (
                    prev.column != event.column
                    or {"mean": "sum"}.get(prev.statistic, prev.statistic) != family
                ):
                    continue
                if abs(prev.n - n) >= rules.min_cell_count:
                    continue
                d = np.setxor1d(prev.records, records, assume_unique=False).size
                if 0 < d < rules.min_cell_count:
                    event.fails = (*event.fails, dr.DIFFERENCING)
                    break
            self.cell_events.append(event)

    # -- annotations of aggregates ------------------------------------------------------------
    def annotate_groupby(self, gb: Any, method: str, args: tuple, kwargs: dict, result: Any) -> Any:
        obj = gb.obj
        table = table_of(obj, self)
        if table is None or not isinstance(result, NDFrame):
            return result
        self.touched = True
        with self.quiet():
            sizes = _ORIG["GroupBy.size"](gb)
            if isinstance(sizes, pd.DataFrame):  # as_index=False
                sizes = sizes.set_index(list(sizes.columns[:-1])).iloc[:, 0]
            stat, column_stats = _statistic_of(method, args, kwargs)
            kind = "frequency" if stat in dr.FREQUENCY_STATISTICS else "magnitude"
            if method == "value_counts":
                counts: pd.Series | pd.DataFrame = result.copy()
                kind = "frequency"
            else:
                counts = sizes
            positives = top = None
            if isinstance(obj, pd.Series) and kind == "magnitude":
                values = obj.to_numpy()
                codes = np.asarray(_ORIG["GroupBy.ngroup"](gb))
                positives, top = _contributions(values, codes, sizes.index)
            elif isinstance(obj, pd.DataFrame) and kind == "magnitude":
                selected = [c for c in obj.columns if c in getattr(result, "columns", [])]
                if selected:
                    codes = np.asarray(_ORIG["GroupBy.ngroup"](gb))
                    pos = {}
                    for c in selected:
                        p, _ = _contributions(obj[c].to_numpy(), codes, sizes.index)
                        if p is not None:
                            pos[c] = p
                    positives = pd.DataFrame(pos) if pos else None
            ann = Annotation(
                table, kind, counts, stat, column_stats, positives, top,
                suppress_rows=("min", "max") if method == "describe" else (),
            )  # fmt: skip
        return self.annotate(result, ann)

    def annotate_frequency(self, table: str, result: Any, counts: Any) -> Any:
        return self.annotate(result, Annotation(table, "frequency", counts, "count"))

    def annotate_summary(self, table: str, result: Any, n: int | pd.Series, **kw: Any) -> Any:
        if isinstance(result, pd.Series):
            counts = pd.Series(n, index=result.index) if not isinstance(n, pd.Series) else n
        elif isinstance(result, pd.DataFrame):
            counts = pd.Series(n, index=result.index) if not isinstance(n, pd.Series) else n
        else:
            return result
        return self.annotate(result, Annotation(table, "summary", counts, "mean", **kw))

    # -- installation ----------------------------------------------------------------------
    def install(self) -> None:
        """Wrap the pandas entry points (once per process)."""
        if self._patched:
            return
        self._patched = True
        _install_patches(self)


_ORIG: dict[str, Callable[..., Any]] = {}


def _contributions(
    values: np.ndarray, codes: np.ndarray, labels: pd.Index
) -> tuple[pd.Series | None, pd.DataFrame | None]:
    """Per group: ones of a 0/1 column, or the two largest |values| and the total."""
    ok = codes >= 0
    if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
        return None, None
    v = values.astype(float)
    ok &= ~np.isnan(v)
    v, c = v[ok], codes[ok]
    ngroups = len(labels)
    if _is_binary(v):
        pos = np.bincount(c, weights=v, minlength=ngroups)[:ngroups]
        return pd.Series(pos.round().astype(int), index=labels), None
    a = np.abs(v)
    total = np.bincount(c, weights=a, minlength=ngroups)[:ngroups]
    order = np.lexsort((-a, c))
    cs, as_ = c[order], a[order]
    first = np.ones(cs.size, dtype=bool)
    first[1:] = cs[1:] != cs[:-1]
    top1 = np.zeros(ngroups)
    top2 = np.zeros(ngroups)
    top1[cs[first]] = as_[first]
    second = np.zeros(cs.size, dtype=bool)
    second[1:] = first[:-1] & (cs[1:] == cs[:-1])
    top2[cs[second]] = as_[second]
    return None, pd.DataFrame({"top1": top1, "top2": top2, "total": total}, index=labels)


def _statistic_of(method: str, args: tuple, kwargs: dict) -> tuple[str, dict[Any, str]]:
    if method not in ("agg", "aggregate"):
        return {"size": "size", "value_counts": "count"}.get(method, method), {}
    func = args[0] if args else kwargs.get("func")
    if isinstance(func, str):
        return func, {}
    if isinstance(func, (list, tuple)):
        names = [f if isinstance(f, str) else getattr(f, "__name__", "custom") for f in func]
        return "mixed", {n: n for n in names}
    if isinstance(func, dict):
        return "mixed", {k: v if isinstance(v, str) else "mixed" for k, v in func.items()}
    if kwargs:  # named aggregation: out=(col, func)
        return "mixed", {k: v[1] if isinstance(v, tuple) and isinstance(v[1], str) else "mixed"
                         for k, v in kwargs.items()}  # fmt: skip
    return getattr(func, "__name__", "custom"), {}


def _any_protected(tracker: ProvenanceTracker, *objs: Any) -> str | None:
    for o in objs:
        if isinstance(o, (list, tuple)):
            t = _any_protected(tracker, *o)
        else:
            t = table_of(o, tracker)
        if t is not None:
            return t
    return None


def _install_patches(tracker: ProvenanceTracker) -> None:
    from pandas.core.groupby.groupby import GroupBy

    _ORIG["GroupBy.size"] = GroupBy.size
    _ORIG["GroupBy.ngroup"] = GroupBy.ngroup

    orig_finalize = NDFrame.__finalize__

    def __finalize__(self: NDFrame, other: Any, method: str | None = None, **kw: Any) -> Any:
        out = orig_finalize(self, other, method, **kw)
        if not tracker.touched and tag_of(other) is not None:
            tracker.touched = True
        return out

    NDFrame.__finalize__ = __finalize__  # type: ignore[method-assign]

    orig_s_reduce = pd.Series._reduce

    def series_reduce(self: pd.Series, op: Any, name: str, *a: Any, **kw: Any) -> Any:
        result = orig_s_reduce(self, op, name, *a, **kw)
        if not tracker.busy and tag_of(self) is not None:
            tracker.record_reduction(self, name, result)
        return result

    pd.Series._reduce = series_reduce  # type: ignore[method-assign]

    orig_f_reduce = pd.DataFrame._reduce

    def frame_reduce(self: pd.DataFrame, op: Any, name: str, *a: Any, **kw: Any) -> Any:
        result = orig_f_reduce(self, op, name, *a, **kw)
        table = None if tracker.busy else table_of(self, tracker)
        if (
            table is not None
            and isinstance(result, pd.Series)
            and kw.get("axis", 0) in (0, None, "index")
        ):
            with tracker.quiet():
                n = self.notna().sum()
            result = tracker.annotate_summary(table, result, n.reindex(result.index).fillna(0))
            if name in ("min", "max"):
                ann = tracker.annotation_of(result)
                if ann is not None:
                    ann.statistic = name
        return result

    pd.DataFrame._reduce = frame_reduce  # type: ignore[method-assign]

    def wrap_groupby(cls: type, method: str) -> None:
        orig = getattr(cls, method)

        @functools.wraps(orig)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if tracker.busy or table_of(self.obj, tracker) is None:
                return orig(self, *args, **kwargs)
            with tracker.quiet():
                result = orig(self, *args, **kwargs)
            return tracker.annotate_groupby(self, method, args, kwargs, result)

        setattr(cls, method, wrapper)

    for cls in (SeriesGroupBy, DataFrameGroupBy):
        for m in GROUPBY_METHODS:
            wrap_groupby(cls, m)

    def wrap_value_counts(cls: type) -> None:
        orig = cls.value_counts

        @functools.wraps(orig)
        def value_counts(self: Any, *args: Any, **kwargs: Any) -> Any:
            table = None if tracker.busy else table_of(self, tracker)
            if table is None:
                return orig(self, *args, **kwargs)
            with tracker.quiet():
                result = orig(self, *args, **kwargs)
                counts = result
                if kwargs.get("normalize"):
                    counts = orig(self, **{**kwargs, "normalize": False})
            tracker.touched = True
            return tracker.annotate_frequency(table, result, counts)

        cls.value_counts = value_counts

    wrap_value_counts(pd.Series)
    wrap_value_counts(pd.DataFrame)

    orig_describe = NDFrame.describe

    @functools.wraps(orig_describe)
    def describe(self: NDFrame, *args: Any, **kwargs: Any) -> Any:
        table = None if tracker.busy else table_of(self, tracker)
        if table is None:
            return orig_describe(self, *args, **kwargs)
        with tracker.quiet():
            result = orig_describe(self, *args, **kwargs)
            if isinstance(result, pd.Series):
                n = int(result.get("count", len(self)))
                counts: Any = pd.Series(n, index=result.index)
            else:
                row = result.loc["count"] if "count" in result.index else None
                counts = pd.DataFrame(
                    {c: [int(row[c]) if row is not None else len(self)] * len(result.index)
                     for c in result.columns}, index=result.index,
                )  # fmt: skip
        tracker.touched = True
        extremes = tuple(r for r in ("min", "max", "0%", "100%") if r in result.index)
        return tracker.annotate(
            result,
            Annotation(table, "summary", counts, "mean", {}, suppress_rows=extremes),
        )

    NDFrame.describe = describe  # type: ignore[method-assign]

    import pandas.core.reshape.pivot as pivot_mod

    orig_crosstab = pivot_mod.crosstab

    @functools.wraps(orig_crosstab)
    def crosstab(index: Any, columns: Any, values: Any = None, *args: Any, **kwargs: Any) -> Any:
        table = None if tracker.busy else _any_protected(tracker, index, columns, values)
        if table is None:
            return orig_crosstab(index, columns, values, *args, **kwargs)
        with tracker.quiet():
            result = orig_crosstab(index, columns, values, *args, **kwargs)
            plain = {k: v for k, v in kwargs.items() if k in ("rownames", "colnames", "margins",
                                                             "margins_name", "dropna")}  # fmt: skip
            counts = orig_crosstab(index, columns, **plain)
        tracker.touched = True
        kind = "frequency" if values is None else "magnitude"
        stat = "count" if values is None else str(kwargs.get("aggfunc", "mean"))
        return tracker.annotate(result, Annotation(table, kind, counts, stat))

    pivot_mod.crosstab = crosstab
    pd.crosstab = crosstab

    orig_pivot = pivot_mod.pivot_table

    @functools.wraps(orig_pivot)
    def pivot_table(data: Any, values: Any = None, index: Any = None, columns: Any = None,
                    aggfunc: Any = "mean", *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        table = None if tracker.busy else table_of(data, tracker)
        if table is None:
            return orig_pivot(data, values, index, columns, aggfunc, *args, **kwargs)
        with tracker.quiet():
            result = orig_pivot(data, values, index, columns, aggfunc, *args, **kwargs)
            counts = orig_pivot(
                data,
                None,
                index,
                columns,
                "size",
                **{k: v for k, v in kwargs.items() if k in ("margins", "dropna", "observed")},
            )
        tracker.touched = True
        stat = aggfunc if isinstance(aggfunc, str) else "mixed"
        kind = "frequency" if stat in dr.FREQUENCY_STATISTICS else "magnitude"
        if (
            isinstance(counts, pd.DataFrame)
            and isinstance(result, pd.DataFrame)
            and counts.shape != result.shape
        ):
            counts = counts.min(axis=1) if isinstance(counts, pd.DataFrame) else counts
        return tracker.annotate(result, Annotation(table, kind, counts, stat))

    pivot_mod.pivot_table = pivot_table
    pd.pivot_table = pivot_table
