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
    # Computing the records behind each cell costs a second pass over the data, so groupby
    # results defer it until the result is displayed (most intermediate results never are).
    compute: Callable[[], tuple[Any, Any, Any, Any]] | None = None
    value_name: Any = None  # the aggregated column of a SeriesGroupBy
    records: dict[Any, np.ndarray] | None = None  # group label -> sorted record-label hashes

    def resolve(self, tracker: ProvenanceTracker) -> Annotation:
        if self.compute is not None:
            with tracker.quiet():
                self.counts, self.positives, self.top, self.records = self.compute()
            self.compute = None
        return self


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


def _same(a: Any, b: Any) -> bool:
    """Equal keys of `ProvenanceTracker._grouped`: the same labels, or equal arrays."""
    if isinstance(a, pd.Index):
        return isinstance(b, pd.Index) and (a.is_(b) or (len(a) == len(b) and a.equals(b)))
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind == "f":
            return bool(np.array_equal(a, b, equal_nan=True))
        if a.dtype.kind in "iub":
            return bool(np.array_equal(a, b))
    return False  # other values (objects, extension arrays): computed again


def _label_hashes(index: pd.Index) -> np.ndarray:
    return np.sort(pd.util.hash_array(np.asarray(index, dtype=object)))


def _is_binary(values: np.ndarray) -> bool:
    if values.dtype == bool:
        return True
    if not np.issubdtype(values.dtype, np.number):
        return False
    v = values[~np.isnan(values)] if np.issubdtype(values.dtype, np.floating) else values
    # two comparisons instead of np.isin, which sorts: this runs on every displayed aggregate
    return v.size > 0 and bool(((v == 0) | (v == 1)).all())


class ProvenanceTracker:
    """Per-kernel state: protected tables, aggregate annotations, the cell's reduction events."""

    def __init__(self, rules: dr.DisclosureRules) -> None:
        self.rules = rules
        self.tables: dict[str, pd.Index] = {}
        self._label_hashes: dict[str, np.ndarray] = {}
        self.annotations: OrderedDict[int, Annotation] = OrderedDict()
        self.cell_events: list[ReductionEvent] = []
        self.history: list[ReductionEvent] = []
        self.touched = False
        self._local = threading.local()
        self._keys = itertools.count(1)
        self._patched = False
        # (index, its sorted label hashes): indexes are immutable, and `is_` (same labels object,
        # through views) is a safe key while the index is held here
        self._hash_cache: list[tuple[pd.Index, tuple[np.ndarray, np.ndarray]]] = []
        self._group_cache: list[tuple[tuple[Any, ...], Any]] = []  # see `_grouped`

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
            while len(self.annotations) > 128:
                self.annotations.popitem(last=False)
            obj.attrs[TAG] = ("agg", key)
        return obj

    def annotation_of(self, obj: object) -> Annotation | None:
        tag = tag_of(obj)
        if tag and tag[0] == "agg":
            ann = self.annotations.get(tag[1])
            return None if ann is None else ann.resolve(self)
        return None

    def _index_hashes(self, index: pd.Index) -> tuple[np.ndarray, np.ndarray]:
        """`_sorted_label_hashes(index)`, remembered for the last few indexes: frames derived
        from a protected table share its index (as views: `Index.is_` sees through them), so
        every displayed aggregate over it would hash and sort the same labels again."""
        for ref, hashed in self._hash_cache:
            if ref.is_(index):
                return hashed
        hashed = _sorted_label_hashes(index)
        self._hash_cache.insert(0, (index, hashed))
        del self._hash_cache[4:]
        return hashed

    def _grouped(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """`compute()`, remembered for the last few keys (index, group codes, group labels[,
        values]). Aggregates shown one after another often group the same records the same way
        (a cell run again; the mean, sum and median of one column by ward): their record sets
        and contributions are the same, and comparing the arrays costs far less than the sorts
        and scatters that compute them. Arrays are kept as copies, so a frame changed in place
        later compares unequal."""
        for ref, value in self._group_cache:
            if len(ref) == len(key) and all(_same(a, b) for a, b in zip(ref, key, strict=True)):
                return value
        value = compute()
        kept = tuple(np.array(k, copy=True) if isinstance(k, np.ndarray) else k for k in key)
        self._group_cache.insert(0, (kept, value))
        del self._group_cache[8:]
        return value

    def is_record_axis(self, labels: pd.Index, table: str) -> bool:
        """True when the labels are record labels of the table (rows, not column names)."""
        base = self.tables.get(table)
        if base is None or len(labels) == 0 or isinstance(labels, pd.MultiIndex):
            return False
        hashes = self._label_hashes.get(table)
        if hashes is None:
            hashes = self._label_hashes[table] = _label_hashes(base)
        with self.quiet():
            probe = pd.util.hash_array(np.asarray(labels, dtype=object))
        pos = np.searchsorted(hashes, probe)
        pos[pos >= hashes.size] = 0
        return bool(hashes.size and (hashes[pos] == probe).all())

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
        stat, column_stats = _statistic_of(method, args, kwargs)
        kind = "frequency" if stat in dr.FREQUENCY_STATISTICS else "magnitude"
        if method == "value_counts":
            kind = "frequency"
        # not getattr(result, "columns"): on a Series that is pandas' slow attribute lookup
        result_columns = list(result.columns) if isinstance(result, pd.DataFrame) else []
        counted = result.copy() if method == "value_counts" else None

        def compute() -> tuple[Any, Any, Any, Any]:
            codes, sizes = _group_codes(gb)
            records = self._grouped(
                (obj.index, codes, sizes.index),
                lambda: _group_records(obj.index, codes, sizes.index, self._index_hashes),
            )
            counts = counted if counted is not None else sizes
            positives = top = None
            if kind == "magnitude":
                if isinstance(obj, pd.Series):
                    v = obj.to_numpy()
                    positives, top = self._grouped(
                        (obj.index, codes, sizes.index, v),
                        lambda: _contributions(v, codes, sizes.index),
                    )
                else:
                    pos = {}
                    for c in (c for c in obj.columns if c in result_columns):
                        p, _ = _contributions(obj[c].to_numpy(), codes, sizes.index)
                        if p is not None:
                            pos[c] = p
                    positives = pd.DataFrame(pos) if pos else None
            return counts, positives, top, records

        ann = Annotation(
            table, kind, _PENDING, stat, column_stats, None, None,
            suppress_rows=("min", "max") if method == "describe" else (), compute=compute,
            value_name=obj.name if isinstance(obj, pd.Series) else None,
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
# The counts of an annotation whose `compute` has not run yet (`resolve` replaces them); one
# shared empty Series, as building one costs more than the rest of annotating a groupby result.
_PENDING = pd.Series(dtype=float)


def _group_codes(gb: Any) -> tuple[np.ndarray, pd.Series]:
    """Group number of every row and the records per group, from the grouping already done."""
    grouper = getattr(gb, "_grouper", None)
    try:
        ids = np.asarray(grouper.ids)  # type: ignore[union-attr]
        labels = grouper.result_index  # type: ignore[union-attr]
        if ids.shape[0] == len(gb.obj) and len(labels):
            n = np.bincount(ids[ids >= 0], minlength=len(labels))[: len(labels)]
            return ids, pd.Series(n, index=labels)
    except (AttributeError, TypeError, ValueError):
        pass  # other pandas versions: the public API, one more pass over the data
    sizes = _ORIG["GroupBy.size"](gb)
    if isinstance(sizes, pd.DataFrame):  # as_index=False
        sizes = sizes.set_index(list(sizes.columns[:-1])).iloc[:, 0]
    return np.asarray(_ORIG["GroupBy.ngroup"](gb)), sizes


MAX_TRACKED_GROUPS = 1000  # the differencing log keeps record sets of tables up to this size


def _sorted_label_hashes(index: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """(order, hashes): the positions of `index` sorted by label hash, and the sorted hashes."""
    values = index.to_numpy()
    if values.dtype == object or not np.issubdtype(values.dtype, np.number):
        values = np.asarray(values, dtype=object)
    hashes = pd.util.hash_array(values)
    order = np.argsort(hashes)
    return order, hashes[order]


def _group_records(
    index: pd.Index,
    codes: np.ndarray,
    labels: pd.Index,
    sorted_hashes: Callable[[pd.Index], tuple[np.ndarray, np.ndarray]] = _sorted_label_hashes,
) -> dict[Any, np.ndarray]:
    """Sorted hashes of the record labels behind each group (for the differencing log)."""
    n = len(labels)
    if n > MAX_TRACKED_GROUPS or len(codes) != len(index):
        return {}
    order, hashes = sorted_hashes(index)
    c = np.asarray(codes)[order]
    ok = c >= 0
    if not ok.all():
        c, hashes = c[ok], hashes[ok]
    # A stable sort by group of labels already in hash order leaves every group's slice sorted;
    # group numbers fit in 16 bits (n <= MAX_TRACKED_GROUPS), where numpy's stable sort is a
    # radix sort.
    hs = hashes[np.argsort(c.astype(np.int16), kind="stable")]
    bounds = [0, *np.cumsum(np.bincount(c, minlength=n)[:n]).tolist()]
    return {label: hs[bounds[i] : bounds[i + 1]] for i, label in enumerate(labels)}


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
    # The two largest per group in O(n): the maximum, then the maximum without its first holder.
    top1 = np.zeros(ngroups)
    np.maximum.at(top1, c, a)
    holders = np.flatnonzero(a == top1[c])
    _, first = np.unique(c[holders], return_index=True)
    rest = a.copy()
    rest[holders[first]] = 0.0
    top2 = np.zeros(ngroups)
    np.maximum.at(top2, c, rest)
    # one 2-D block: a frame from a dict of columns costs ten times as much to build
    return None, pd.DataFrame(np.column_stack((top1, top2, total)), index=labels,
                              columns=_TOP_COLUMNS, copy=False)  # fmt: skip


_TOP_COLUMNS = pd.Index(["top1", "top2", "total"])


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
            try:
                return tracker.annotate_groupby(self, method, args, kwargs, result)
            except Exception:  # noqa: BLE001 - unknown records behind the cells: fail closed
                return tracker.annotate(
                    result,
                    Annotation(
                        table_of(self.obj, tracker) or "?", "magnitude", pd.Series(dtype=float)
                    ),
                )

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
            no_values = values is None and not kwargs.get("normalize")
            counts = result if no_values else orig_crosstab(index, columns, **plain)
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
