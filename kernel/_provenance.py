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

import contextlib
import copy
import functools
import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.core.generic import NDFrame
from pandas.core.groupby.generic import DataFrameGroupBy, SeriesGroupBy

from bedside.kernel._sequences import SequenceLog
from bedside.policy import disclosure as dr

TAG = "bedside"

# Statistics whose scalar results the event log judges; any/all and friends are pandas plumbing.
EVENT_STATS = frozenset({"sum", "mean", "median", "min", "max", "std", "var", "sem", "prod"})
RUNNING_TOTALS = 4096  # the rows of cumulative sums over few records kept for the session
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
    # crosstab / pivot_table: per (row label, column label) of the result, the sorted record-label
    # hashes (differencing) and (top1, top2, total) of |values| (dominance, p-ratio)
    cell_records: dict[tuple[Any, Any], np.ndarray] | None = None
    cell_top: dict[tuple[Any, Any], tuple[float, float, float]] | None = None

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


# The statistics a column label names (`agg(['mean', 'count'])`, `describe()`'s columns).
LABEL_STATS = frozenset({"count", "size", "sum", "mean", "std", "var", "sem", "median", "min",
                         "max", "nunique"})  # fmt: skip


def label_statistic(ann: Annotation, label: Any) -> str:
    """The statistic of a result column: the annotation's per-column map (a column of several
    levels, `(value, 'mean')`, also by its last level), else the annotation's statistic. A
    column of `describe()` or of a list of aggfuncs says its statistic in its label (`'min'`,
    `'75%'`: the percentile is written `q75%`)."""
    stat = ann.column_stats.get(label)
    last = label[-1] if isinstance(label, tuple) and label else label
    if stat is None and last is not label:
        stat = ann.column_stats.get(last)
    if stat is None:
        stat = ann.statistic
    if stat in ("mixed", "describe"):
        name = str(last)
        if name in LABEL_STATS:
            return name
        if stat == "describe" and name.endswith("%"):
            return "q" + name
        return "mean" if stat == "mixed" else stat
    return str(stat)


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


class _Identity:
    """A key part equal only to the very same object: an immutable pyarrow array held by a
    memo (so its id cannot be reused while the memo holds it) has the same values whenever it
    is the same object; pandas replaces it, never changes it, when the column is written."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


class _Strings:
    """A key part for an object array of `str` only (checked when the part is made): equal
    arrays of strings are equal element by element, which objects of other types need not be
    (a class may define `__eq__` as it likes), so those are never compared."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


_SCALARS = (str, int, float, bool, type(None))
_BITS = {2: np.int16, 4: np.int32, 8: np.int64}  # an integer type of each float's size


def _same(a: Any, b: Any) -> bool:
    """Equal keys of `ProvenanceTracker._grouped`: the same labels, or equal arrays."""
    t = type(a)
    # the commonest parts first, by exact type (each key is compared on every display)
    if t is tuple:
        if type(b) is not tuple or len(a) != len(b):
            return False
        for x, y in zip(a, b):  # noqa: B905 - lengths checked above
            if not _same(x, y):
                return False
        return True
    if t is str or t is int or a is None:
        return t is type(b) and a == b
    if isinstance(a, pd.Index):
        if not isinstance(b, pd.Index) or len(a) != len(b):
            return False
        if a.is_(b):
            return True
        if isinstance(a, pd.MultiIndex) or isinstance(b, pd.MultiIndex):
            # (no single backing array: `.array` raises; the labels of two or more keys)
            return type(a) is type(b) and a.equals(b)
        pa_a, pa_b = getattr(a.array, "_pa_array", None), getattr(b.array, "_pa_array", None)
        if pa_a is not None and pa_b is not None:  # pyarrow labels: one comparison in arrow
            return type(a) is type(b) and a.dtype == b.dtype and bool(pa_a.equals(pa_b))
        return a.equals(b)
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind == "f":
            # bit for bit (NaN equals NaN, 0.0 differs from -0.0): stricter than equal values,
            # and a third of the cost of array_equal(equal_nan=True)
            bits = _BITS.get(a.dtype.itemsize)
            if bits is not None:
                return bool((a.view(bits) == b.view(bits)).all())
            return bool(np.array_equal(a, b, equal_nan=True))
        if a.dtype.kind in "iub":
            return bool((a == b).all())  # shapes and dtypes checked above
        return False
    if isinstance(a, _Identity):
        return isinstance(b, _Identity) and a.obj is b.obj
    if isinstance(a, _Strings):
        return (isinstance(b, _Strings) and a.values.shape == b.values.shape
                and bool(np.array_equal(a.values, b.values)))  # fmt: skip
    if isinstance(a, tuple):
        return (isinstance(b, tuple) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))  # fmt: skip
    if isinstance(a, _SCALARS):
        return type(a) is type(b) and a == b  # NaN never equals itself: computed again
    return False  # other values (objects, extension arrays): computed again


def _kept(part: Any) -> Any:
    """A key part as a memo keeps it: arrays copied, so data changed in place later compares
    unequal."""
    if isinstance(part, np.ndarray):
        return np.array(part, copy=True)
    if isinstance(part, _Strings):
        return _Strings(np.array(part.values, copy=True))
    if isinstance(part, tuple):
        return tuple(_kept(p) for p in part)
    return part


def series_key(s: pd.Series) -> tuple[Any, ...]:
    """A memo key part for a Series' labels and values (see `_same`): numeric and boolean
    arrays as they are, pyarrow-backed arrays by identity, categoricals by codes and
    categories, object arrays of strings compared string by string. Values of any other kind
    get a part equal to nothing, so a memo computes again."""
    values: Any = s.array
    pa = getattr(values, "_pa_array", None)
    if pa is not None:
        part: Any = _Identity(pa)
    elif isinstance(values, pd.Categorical):
        part = (values.codes, values.categories, bool(values.ordered))
    elif isinstance(s.dtype, np.dtype) and s.dtype.kind in "fiubO":
        arr = s.to_numpy()
        if arr.dtype == object:
            if pd.api.types.infer_dtype(arr, skipna=False) != "string":
                return (s.index, str(s.dtype), _NEVER)
            part = _Strings(arr)
        else:
            part = arr
    else:
        part = _NEVER
    return (s.index, str(s.dtype), part)


_NEVER = object()  # equal to no key part (`_same` returns False for unknown objects)


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


class _Quiet:
    """`ProvenanceTracker.quiet()`: counts this thread's nesting (a class, not a generator
    context manager: the guard enters it a dozen times per cell)."""

    __slots__ = ("_local",)

    def __init__(self, local: threading.local) -> None:
        self._local = local

    def __enter__(self) -> None:
        self._local.busy = getattr(self._local, "busy", 0) + 1

    def __exit__(self, *exc: object) -> None:
        self._local.busy -= 1


class ProvenanceTracker:
    """Per-kernel state: protected tables, aggregate annotations, the cell's reduction events."""

    def __init__(self, rules: dr.DisclosureRules) -> None:
        self.rules = rules
        self.tables: dict[str, pd.Index] = {}
        self._label_hashes: dict[str, np.ndarray] = {}
        self.annotations: OrderedDict[int, Annotation] = OrderedDict()
        self.cell_events: list[ReductionEvent] = []
        self.cell_aggregates: list[weakref.ref[Any]] = []
        # fractional values of fewer than `min_cell_count` protected rows iterated in this cell
        # (`for _, r in df[df.code == x].iterrows(): print(r.cost)`), see `_note_few_rows`
        self.few_rows: list[float] = []
        # rows part-way down a cumulative sum over few records (kept for the session), see
        # `_note_running_totals`
        self.running_totals: list[float] = []
        # statistics of arrays taken out of few records (kept for the session), see
        # `_note_few_extracted`
        self.few_stats: list[float] = []
        self.history: list[ReductionEvent] = []
        self.touched = False
        self._local = threading.local()
        self._quiet = _Quiet(self._local)
        self._keys = itertools.count(1)
        self._patched = False
        # (index, its sorted label hashes): indexes are immutable, and `is_` (same labels object,
        # through views) is a safe key while the index is held here
        self._hash_cache: list[tuple[pd.Index, tuple[np.ndarray, np.ndarray]]] = []
        self._group_cache: list[tuple[tuple[Any, ...], Any]] = []  # see `_grouped`
        self._cells_cache: list[tuple[tuple[Any, ...], Any]] = []  # see `_cells`
        self._held: tuple[Any, set[int], Any] | None = None  # see `remembers`
        # Set by the output guard: the object an aggregate's text rendering (`to_string`, which
        # `print` calls, `to_csv`, ...) is made of, i.e. its redacted copy (see `wrap_render`).
        self.render_judge: Callable[..., Any] | None = None
        # The missing-value masks (`isna`, `notna`) of protected data, by id: their sums are
        # counts of records, not rates of a patient's 0/1 attribute (`record_reduction`).
        self._missing: OrderedDict[int, weakref.ref[Any]] = OrderedDict()

    # -- state ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return getattr(self._local, "busy", 0) > 0

    def quiet(self) -> _Quiet:
        """Run pandas on the guard's behalf: no annotations, no events (a context manager)."""
        return self._quiet

    def begin_cell(self) -> None:
        self.history.extend(self.cell_events)
        del self.history[:-64]  # the differencing log keeps the recent record sets
        self.cell_events = []
        self.cell_aggregates = []
        self.few_rows = []
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
            # this cell's aggregates, for what a figure draws from them (`_judge_figure`)
            with contextlib.suppress(TypeError):
                self.cell_aggregates.append(weakref.ref(obj))
                del self.cell_aggregates[:-32]
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
        return _remembered(self._group_cache, key, compute)

    def _cells(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """`compute()` of the per-cell records and contributions of a crosstab or pivot_table,
        remembered for the last few keys (the result's labels and every input column by
        `series_key`): a table shown again costs a comparison of its inputs, not the grouping,
        the sorts and the per-cell frames."""
        # four entries: a numeric key column is kept as a copy (8 MB per column at 1M records)
        return _remembered(self._cells_cache, key, compute, size=4)

    def remembers(self, obj: object) -> bool:
        """True when `obj` is one of the values `_grouped` or `_cells` hold (or a part of one):
        built here from inputs the memo compared by value, never handed to the researcher's
        code and never changed, so while it is held the same object means the same data."""
        # the newest entries (a new (key, value) tuple per entry added, held here too, so
        # their ids cannot come back): another newest entry means the memos changed
        held = (self._group_cache[0] if self._group_cache else None,
                self._cells_cache[0] if self._cells_cache else None)  # fmt: skip
        if self._held is None or self._held[0] != (id(held[0]), id(held[1])):
            # object ids of everything the memos hold (stable while they hold it)
            ids = set()
            for cache in (self._group_cache, self._cells_cache):
                for _, value in cache:
                    parts = ((value.counts, value.positives, value.cell_top, value.cell_records)
                             if isinstance(value, Cells) else value)  # fmt: skip
                    ids.add(id(value))
                    if isinstance(parts, tuple):
                        ids.update(id(v) for v in parts if v is not None)
            self._held = ((id(held[0]), id(held[1])), ids, held)
        return id(obj) in self._held[1]

    def is_record_axis(self, labels: pd.Index, table: str) -> bool:
        """True when the labels are record labels of the table (rows, not column names)."""
        base = self.tables.get(table)
        if base is None or len(labels) == 0 or isinstance(labels, pd.MultiIndex):
            return False
        if isinstance(base, pd.RangeIndex) and labels.dtype.kind in "iu":
            # the common case (a table read from a file): arithmetic, where hashing the labels
            # as objects costs a third of a millisecond, on every extraction
            at = np.asarray(labels, dtype=np.int64) - base.start
            pos = at // base.step
            return bool(((at % base.step == 0) & (pos >= 0) & (pos < len(base))).all())
        hashes = self._label_hashes.get(table)
        if hashes is None:
            hashes = self._label_hashes[table] = _label_hashes(base)
        with self.quiet():
            probe = pd.util.hash_array(np.asarray(labels, dtype=object))
        pos = np.searchsorted(hashes, probe)
        pos[pos >= hashes.size] = 0
        return bool(hashes.size and (hashes[pos] == probe).all())

    def note_missing(self, mask: Any) -> None:
        """`mask` is a missing-value mask (`isna`/`notna`) of protected data."""
        self._missing[id(mask)] = weakref.ref(mask)
        while len(self._missing) > 64:
            self._missing.popitem(last=False)

    def is_missing_mask(self, obj: Any) -> bool:
        ref = self._missing.get(id(obj))
        return ref is not None and ref() is obj

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
            if name in ("sum", "mean") and binary and self.is_missing_mask(series):
                # a count of missing values is a count of records (see `note_missing`)
                fails.extend(dr.record_count_fails(int(values[notna].sum()), n, rules))
            elif name in ("sum", "mean") and binary:
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
            codes, labels, sizes = _group_codes(gb)

            def grouped() -> tuple[pd.Series, dict[Any, np.ndarray]]:
                # The records per group with the group sizes: both functions of the key, so a
                # grouping seen again builds neither (nor the Series of sizes).
                return self._grouped(
                    (obj.index, codes, labels),
                    lambda: (
                        sizes if sizes is not None else _sizes(codes, labels),
                        _group_records(obj.index, codes, labels, self._index_hashes),
                    ),
                )

            positives = top = None
            if kind == "magnitude" and isinstance(obj, pd.Series):
                # one lookup for the records and the contributions of the values
                v = obj.to_numpy()
                size_of, records, positives, top = self._grouped(
                    (obj.index, codes, labels, v),
                    lambda: (*grouped(), *_contributions(v, codes, labels)),
                )
                return (counted if counted is not None else size_of), positives, top, records
            size_of, records = grouped()
            if kind == "magnitude":
                pos = {}
                for c in (c for c in obj.columns if c in result_columns):
                    p, _ = _contributions(obj[c].to_numpy(), codes, labels)
                    if p is not None:
                        pos[c] = p
                positives = pd.DataFrame(pos) if pos else None
            return (counted if counted is not None else size_of), positives, top, records

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
        # Model fits and tests (statsmodels, scikit-learn, scipy.stats), wrapped when imported.
        from bedside.kernel._models import ModelGuard

        self.models = ModelGuard(self)
        self.models.install()


def _remembered(
    cache: list[tuple[tuple[Any, ...], Any]], key: tuple[Any, ...], compute: Callable[[], Any],
    size: int = 8,
) -> Any:  # fmt: skip
    """`compute()`, or the value remembered in `cache` for an equal key (`_same`, part by part)."""
    for ref, value in cache:
        if _same(ref, key):
            return value
    value = compute()
    cache.insert(0, (_kept(key), value))
    del cache[size:]
    return value


_ORIG: dict[str, Callable[..., Any]] = {}
# The counts of an annotation whose `compute` has not run yet (`resolve` replaces them); one
# shared empty Series, as building one costs more than the rest of annotating a groupby result.
_PENDING = pd.Series(dtype=float)


def _group_codes(gb: Any) -> tuple[np.ndarray, pd.Index, pd.Series | None]:
    """Group number of every row, the group labels and, when the grouping already done does
    not give them, the records per group (else None: `_sizes` of the first two)."""
    grouper = getattr(gb, "_grouper", None)
    try:
        ids = np.asarray(grouper.ids)  # type: ignore[union-attr]
        labels = grouper.result_index  # type: ignore[union-attr]
        if ids.shape[0] == len(gb.obj) and len(labels):
            return ids, labels, None
    except (AttributeError, TypeError, ValueError):
        pass  # other pandas versions: the public API, one more pass over the data
    sizes = _ORIG["GroupBy.size"](gb)
    if isinstance(sizes, pd.DataFrame):  # as_index=False
        sizes = sizes.set_index(list(sizes.columns[:-1])).iloc[:, 0]
    return np.asarray(_ORIG["GroupBy.ngroup"](gb)), sizes.index, sizes


def _sizes(ids: np.ndarray, labels: pd.Index) -> pd.Series:
    """Records per group from the group number of every row (-1: in no group)."""
    n = np.bincount(ids[ids >= 0], minlength=len(labels))[: len(labels)]
    return pd.Series(n, index=labels)


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
# DataFrame methods whose Series result pandas finalizes from the frame after `_reduce`.
_FRAME_REDUCTIONS = frozenset({"sum", "prod", "product", "mean", "median", "std", "var", "sem",
                               "min", "max", "skew", "kurt", "kurtosis", "count", "nunique",
                               "any", "all", "idxmin", "idxmax"})  # fmt: skip


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


def _record_over_rows(
    tracker: ProvenanceTracker, frame: pd.DataFrame, name: str, result: Any
) -> None:
    """A reduction of a whole protected frame to one number, logged as the same reduction of
    its rows' totals: the records are its rows with a value."""
    with tracker.quiet():
        numeric = frame.select_dtypes("number")
        if numeric.shape[1] == 0:
            return
        rows = numeric.sum(axis=1, min_count=1)
        rows.name = "+".join(map(str, numeric.columns[:8]))
        rows.attrs[TAG] = frame.attrs[TAG]
    tracker.record_reduction(rows, name, result)


def _note_running_totals(tracker: ProvenanceTracker, out: Any) -> None:
    """The rows of a cumulative sum (maximum, minimum, product) of protected rows that stand
    over fewer than `min_cell_count` records, or over all but fewer than that (the total
    minus a few patients' values): `df.cost.cumsum().iloc[4]` is the total of five patients.
    Their values with a fraction are kept for the session (whole numbers are common in any
    output and are not); an output showing one is blocked (`OutputGuard._running_total_in`)."""
    k = tracker.rules.min_cell_count
    with tracker.quiet():
        frame = out.to_frame() if isinstance(out, pd.Series) else out
        if not isinstance(frame, pd.DataFrame) or len(frame) < 2 or k < 2:
            return
        numbers = frame.select_dtypes("number")
        if numbers.shape[1] == 0:
            return
        n = len(numbers)
        at = np.unique(np.r_[0 : min(k - 1, n), max(n - k, 0) : n - 1])
        values = numbers.iloc[at, :64].to_numpy(dtype=float).ravel()
    values = values[np.isfinite(values) & (values != np.round(values))]
    if values.size:
        tracker.running_totals.extend(values.tolist())
        del tracker.running_totals[:-RUNNING_TOTALS]


def _note_few_rows(tracker: ProvenanceTracker, frame: Any) -> None:
    """The values with a fraction of a few protected rows iterated one by one: too few to be
    recognised as a run in record order, each is one patient's value (whole numbers are common
    in any output and are not kept)."""
    if not isinstance(frame, pd.DataFrame) or len(frame) == 0:
        return
    tag = tag_of(frame)
    if tag is None or tag[0] != "rows" or len(frame) >= tracker.rules.min_cell_count:
        return
    with tracker.quiet():
        numbers = frame.select_dtypes("number").to_numpy(dtype=float).ravel()
    numbers = numbers[np.isfinite(numbers) & (numbers != np.round(numbers))]
    tracker.few_rows.extend(numbers[:256].tolist())
    del tracker.few_rows[:-256]


def _note_few_extracted(tracker: ProvenanceTracker, obj: pd.Series | pd.DataFrame) -> None:
    """An array taken out of fewer than `min_cell_count` protected rows (`.values`,
    `.to_numpy()`): numpy computes with it where the guard does not follow
    (`np.mean(df[df.code == x].cost.values)`), so the statistics numpy would give of each
    numeric column (sum, mean, median, standard deviation and variance with either
    denominator) are kept for the session beside the running totals, and an output showing one
    is blocked (`OutputGuard._few_stats_in`). Whole numbers are common in any output and are
    not kept; nor are the row values themselves (the sequence log and `_note_few_rows` judge
    those)."""
    if not 0 < len(obj) < tracker.rules.min_cell_count:
        return
    src = _rows_of(tracker, obj)
    if src is None or not tracker.is_record_axis(src[1], src[0]):
        return  # not records: an aggregate's rows, or labels of the guard's own making
    with tracker.quiet():
        if isinstance(obj, pd.Series):  # the common case, without a frame's machinery
            if obj.dtype.kind not in "iuf":
                return
            numbers = np.asarray(obj._values, dtype=float)[:, None]
        else:
            cols = [c._values for _, c in obj.items() if c.dtype.kind in "iuf"][:64]
            if not cols:
                return
            numbers = np.column_stack([np.asarray(c, dtype=float) for c in cols])
    if not numbers.size:
        return
    # What numpy's sum, mean, median, var and std give (to rounding), in one pass of few values:
    # numpy's own calls and their warnings cost ten times as much, on every extraction.
    n = len(numbers)
    total = numbers.sum(0)
    mean = total / n
    ordered = np.sort(numbers, 0)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    squares = ((numbers - mean) ** 2).sum(0)
    stats = [total, mean, median, squares / n, np.sqrt(squares / n)]
    if n > 1:
        stats += [squares / (n - 1), np.sqrt(squares / (n - 1))]
    values = np.concatenate(stats)
    values = values[np.isfinite(values) & (values != np.round(values))]
    if values.size:
        tracker.few_stats.extend(values.tolist())
        del tracker.few_stats[:-RUNNING_TOTALS]


def _note_picked_mask(tracker: ProvenanceTracker, part: Any, mask: Any) -> None:
    """`part`, finalized from the missing-value mask `mask`, is one when it holds only its
    booleans: a column of it, or some of its rows or columns."""
    if isinstance(part, pd.Series):
        ok = part.dtype.kind == "b" and isinstance(mask, pd.DataFrame) and part.name in mask.columns
    elif isinstance(part, pd.DataFrame):
        ok = all(t.kind == "b" for t in part.dtypes) and bool(part.columns.isin(mask.columns).all())
    else:
        ok = False
    if ok:
        tracker.note_missing(part)


def _install_patches(tracker: ProvenanceTracker) -> None:
    from pandas.core.groupby.groupby import GroupBy

    _ORIG["GroupBy.size"] = GroupBy.size
    _ORIG["GroupBy.ngroup"] = GroupBy.ngroup

    orig_finalize = NDFrame.__finalize__

    def __finalize__(self: NDFrame, other: Any, method: str | None = None, **kw: Any) -> Any:
        # pandas 3 finalizes a frame reduction's result from the frame (`DataFrame.sum` ends with
        # `result.__finalize__(self, method="sum")`), after `frame_reduce` below has annotated
        # it: the frame's attrs would replace the aggregate's tag, and `small[["cost"]].sum()`
        # would leave unjudged. An aggregate's tag is kept.
        kept = tag_of(self) if method in _FRAME_REDUCTIONS else None
        out = orig_finalize(self, other, method, **kw)
        if kept is not None and kept[0] == "agg":
            self.attrs[TAG] = kept
        if method is None and tracker._missing and tracker.is_missing_mask(other):
            # a column or rows picked from a missing-value mask (`df.isna()["cost"]`,
            # `df.isna().loc[:, cols]`) are a missing-value mask too
            _note_picked_mask(tracker, self, other)
        if not tracker.touched and tag_of(other) is not None:
            tracker.touched = True
        return out

    NDFrame.__finalize__ = __finalize__  # type: ignore[method-assign]

    # pandas deep-copies `attrs` into every object it derives from a tagged one (several per
    # operation), through `copy.deepcopy`'s generic dict and tuple walk. Attrs holding only the
    # tag (a tuple of a string and a string or int) are copied here the way deepcopy would copy
    # them: a new dict, the same immutable tuple. Anything else goes to deepcopy as before.
    import pandas.core.generic as generic_mod

    if getattr(generic_mod, "deepcopy", None) is copy.deepcopy:
        deep = copy.deepcopy
        checked: list[Any] = [None]  # the last tag found immutable (most copies are of it)

        def deepcopy(x: Any, memo: Any = None) -> Any:
            if type(x) is dict and len(x) == 1:
                tag = x.get(TAG)
                if tag is not None and tag is checked[0]:
                    return {TAG: tag}
                if (type(tag) is tuple and len(tag) == 2 and type(tag[0]) is str
                        and type(tag[1]) in (str, int)):  # fmt: skip
                    checked[0] = tag
                    return {TAG: tag}
            return deep(x, memo)

        generic_mod.deepcopy = deepcopy  # type: ignore[attr-defined]

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
        elif table is not None and kw.get("axis", 0) is None and name in EVENT_STATS:
            # one number over every cell (`np.sum(small[cols])`, `small.sum(axis=None)`): judged
            # like a column's reduction, each record contributing its row
            _record_over_rows(tracker, self, name, result)
        return result

    pd.DataFrame._reduce = frame_reduce  # type: ignore[method-assign]

    def wrap_cumulative(cls: type, name: str, statistic: str) -> None:
        orig = getattr(cls, name)

        @functools.wraps(orig)
        def cumulative(self: Any, *a: Any, **kw: Any) -> Any:
            out = orig(self, *a, **kw)
            tag = None if tracker.busy else tag_of(self)
            if tag is None or tag[0] != "rows":
                return out
            # its last row is the column's total (or extreme) over every record before it
            # (`small[cols].cumsum().iloc[-1]`): judged as that reduction is
            if kw.get("axis", a[0] if a else 0) not in (0, None, "index"):
                return out
            parts = [self] if isinstance(self, pd.Series) else [self[c] for c in self.columns[:64]]
            for part in parts:
                if isinstance(part, pd.Series) and part.dtype.kind in "biuf":
                    with tracker.quiet():
                        total = getattr(part, statistic)()
                    tracker.record_reduction(part, statistic, total)
            _note_running_totals(tracker, out)
            return out

        setattr(cls, name, cumulative)

    for cls in (pd.Series, pd.DataFrame):
        for name, statistic in (("cumsum", "sum"), ("cummax", "max"), ("cummin", "min"),
                                ("cumprod", "prod")):  # fmt: skip
            wrap_cumulative(cls, name, statistic)

    from pandas.core.window.expanding import Expanding

    def wrap_expanding(name: str) -> None:
        orig = getattr(Expanding, name)

        @functools.wraps(orig)
        def expanding(self: Any, *a: Any, **kw: Any) -> Any:
            out = orig(self, *a, **kw)
            obj = getattr(self, "obj", None)
            tag = None if tracker.busy or obj is None else tag_of(obj)
            if tag is not None and tag[0] == "rows" and getattr(self, "axis", 0) in (0, "index"):
                # `df.cost.expanding().sum()`: a cumulative sum (mean, ...) by another name
                _note_running_totals(tracker, out)
            return out

        setattr(Expanding, name, expanding)

    for name in ("sum", "mean", "median", "max", "min", "std", "var"):
        wrap_expanding(name)

    def wrap_missing(cls: type, name: str) -> None:
        orig = getattr(cls, name)

        @functools.wraps(orig)
        def missing(self: Any, *a: Any, **kw: Any) -> Any:
            out = orig(self, *a, **kw)
            if not tracker.busy and tag_of(self) is not None:
                tracker.note_missing(out)
            return out

        setattr(cls, name, missing)

    for cls in (pd.Series, pd.DataFrame):
        for name in ("isna", "isnull", "notna", "notnull"):
            wrap_missing(cls, name)

    def wrap_missing_function(name: str) -> None:
        # `pd.isna(df.cost)` builds its Series without pandas' finalize: the mask would carry
        # no tag, and its sum, a count of records, would leave unjudged
        orig = getattr(pd, name)

        @functools.wraps(orig)
        def missing(obj: Any) -> Any:
            out = orig(obj)
            tag = tag_of(obj) if isinstance(obj, NDFrame) and not tracker.busy else None
            if tag is not None and tag[0] == "rows" and isinstance(out, NDFrame):
                if tag_of(out) is None:
                    out.attrs[TAG] = tag
                tracker.note_missing(out)
            return out

        setattr(pd, name, missing)

    for name in ("isna", "isnull", "notna", "notnull"):
        wrap_missing_function(name)

    def wrap_missing_count(name: str) -> None:
        orig = getattr(pd.DataFrame, name)

        @functools.wraps(orig)
        def counted(self: pd.DataFrame, *a: Any, **kw: Any) -> Any:
            result = orig(self, *a, **kw)
            if (
                tracker.busy
                or not isinstance(result, pd.Series)
                or not tracker.is_missing_mask(self)
                or kw.get("axis", a[0] if a else 0) not in (0, None, "index")
            ):
                return result
            table = table_of(self, tracker)
            if table is None:
                return result
            # per column a count of missing values (or its rate), judged as counts of records
            # (`dr.record_count_fails`) like the scalar `df.col.isna().sum()`
            with tracker.quiet():
                ones = self.sum().reindex(result.index)
                n = self.notna().sum().reindex(result.index).fillna(0)
            result = tracker.annotate_summary(table, result, n, positives=ones)
            ann = tracker.annotation_of(result)
            if ann is not None:
                ann.statistic = dr.MISSING
            return result

        setattr(pd.DataFrame, name, counted)

    for name in ("sum", "mean"):
        wrap_missing_count(name)

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

    # `df[cols].agg(["sum", "mean"])` (or a dict of lists): a table of statistics by column, which
    # pandas builds from each column's reductions and returns untagged. Judged like `describe()`:
    # each cell by its column's records, the rows of extremes suppressed.
    orig_frame_agg = pd.DataFrame.aggregate

    @functools.wraps(orig_frame_agg)
    def frame_aggregate(self: pd.DataFrame, func: Any = None, axis: Any = 0, *a: Any,
                        **kw: Any) -> Any:  # fmt: skip
        table = None if tracker.busy else table_of(self, tracker)
        if table is None or axis not in (0, "index") or not isinstance(func, (list, tuple, dict)):
            return orig_frame_agg(self, func, axis, *a, **kw)
        with tracker.quiet():
            result = orig_frame_agg(self, func, axis, *a, **kw)
            n = self.notna().sum()
        tracker.touched = True
        if isinstance(result, pd.Series):  # a dict of one statistic per column
            return tracker.annotate_summary(table, result, n.reindex(result.index).fillna(0))
        if not isinstance(result, pd.DataFrame):
            return result
        counts = pd.DataFrame(
            {c: [int(n.get(c, len(self)))] * len(result.index) for c in result.columns},
            index=result.index,
        )
        extremes = tuple(r for r in ("min", "max") if r in result.index)
        return tracker.annotate(
            result,
            Annotation(table, "summary", counts, "mean", {}, suppress_rows=extremes),
        )

    pd.DataFrame.aggregate = frame_aggregate  # type: ignore[method-assign]
    pd.DataFrame.agg = frame_aggregate  # type: ignore[method-assign]

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
    install_gap_hooks(tracker)


# ---------------------------------------------------------------------------------------------
# Row-order extractions, extremes by other phrasings, per-cell records of crosstab / pivot_table.
# Installed after the patches above (they wrap some of the wrappers), by `install_gap_hooks`.

# Render methods whose first argument is a file or buffer to write to (None: return the text).
WRITERS = frozenset({"to_string", "to_csv", "to_json", "to_markdown", "to_html", "to_latex",
                     "to_xml"})  # fmt: skip
RENDER_METHODS = ("to_string", "to_csv", "to_json", "to_dict", "to_markdown", "to_html",
                  "to_latex", "to_records", "to_xml", "itertuples", "iterrows")  # fmt: skip


def sequence_log(tracker: ProvenanceTracker) -> SequenceLog:
    """The session's log of values extracted from protected rows in record order."""
    log = tracker.__dict__.get("sequences")
    if log is None:
        log = tracker.__dict__["sequences"] = SequenceLog()

        def is_rows(table: str, index: pd.Index) -> bool:
            with tracker.quiet():
                return tracker.is_record_axis(index, table)

        log.is_rows = is_rows
    return log


def _rows_of(tracker: ProvenanceTracker, obj: Any) -> tuple[str, pd.Index] | None:
    """(table, labels) when `obj` holds protected rows rather than an aggregate."""
    if tracker.busy:
        return None
    tag = tag_of(obj)
    if tag is None or tag[0] != "rows":
        return None
    return str(tag[1]), obj.index


def _extraction_key(
    tracker: ProvenanceTracker, table: str, obj: pd.Series | pd.DataFrame
) -> tuple[Any, ...]:
    """Which extraction this is: the labels at both ends and a sample of the values (a derived
    Series such as `s.str[0]` keeps the name, the length and the labels of its source)."""
    idx = obj.index
    ends = (idx[0], idx[-1]) if len(idx) else ()
    name = obj.name if isinstance(obj, pd.Series) else tuple(obj.columns)
    with tracker.quiet():
        sample = obj.iloc[np.linspace(0, len(obj) - 1, min(len(obj), 16)).astype(int)]
        values = tuple(np.asarray(sample, dtype=object).astype(str).ravel())
    return (table, name, len(obj), *ends, values)


def note_extraction(tracker: ProvenanceTracker, obj: Any) -> tuple[str, pd.Index] | None:
    """Remember the values of protected rows `obj` in record order; (table, labels) or None."""
    src = _rows_of(tracker, obj)
    if src is None or len(obj) == 0:
        return None
    log = sequence_log(tracker)
    key = _extraction_key(tracker, src[0], obj)
    with tracker.quiet():
        if not log.seen(key):
            if not tracker.is_record_axis(src[1], src[0]):
                return None
            log.add_frame(key, obj)
    return src


def _extreme_q(q: float, n: int, rules: dr.DisclosureRules) -> bool:
    """A percentile with fewer than `min_cell_count` records above (or below) it is an extreme."""
    return bool(min(q, 1.0 - q) * n < rules.min_cell_count)


_END = object()


def log_extremes(tracker: ProvenanceTracker, series: Any, *, integers: bool = True) -> None:
    """Sorting, `nlargest` or iterating a protected column puts its extremes within reach
    (`s.sort_values().iloc[-1]`, `max(s)`): the cell's outputs may not show them.

    `integers=False` (iteration, which libraries do too): only columns with fractional values,
    whose extremes are a signature; the extremes of a small integer range are common numbers."""
    if tracker.rules.extremes != "suppress" or _rows_of(tracker, series) is None:
        return
    if not isinstance(series, pd.Series):
        return
    with tracker.quiet():
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            return
        v = series.to_numpy(dtype=float, na_value=np.nan)
        v = v[~np.isnan(v)]
        if v.size == 0 or _is_binary(v) or (not integers and np.all(v == np.round(v))):
            return
        table = str(tag_of(series)[1])  # type: ignore[index]
        have = {(e.column, e.statistic, e.value) for e in tracker.cell_events}
        for stat, val in (("max", float(v.max())), ("min", float(v.min()))):
            if (str(series.name), stat, val) not in have:
                tracker.cell_events.append(ReductionEvent(
                    table, str(series.name), stat, np.empty(0, np.uint64), 0, val,
                    (dr.EXTREMES,)))  # fmt: skip


def _agg_name(aggfunc: Any) -> str:
    if isinstance(aggfunc, str):
        return aggfunc
    name = getattr(aggfunc, "__name__", None)
    return {"nansum": "sum", "nanmean": "mean", "amax": "max", "amin": "min"}.get(
        str(name), str(name) if name else "mixed"
    )


def _cell_key_parts(label: Any, n: int) -> tuple[Any, ...]:
    if n == 0:
        return ()
    return tuple(label) if isinstance(label, tuple) else (label,)


@dataclass(frozen=True)
class Cells:
    """What `cells_of` works out for a crosstab / pivot_table result (see `apply_cells`)."""

    counts: pd.DataFrame
    positives: pd.DataFrame | None  # None: the annotation keeps its own
    cell_top: dict[tuple[Any, Any], tuple[float, float, float]] | None
    cell_records: dict[tuple[Any, Any], np.ndarray] | None


def apply_cells(ann: Annotation, cells: Cells | None) -> None:
    """Put the per-cell counts, contributions and records on the annotation (None: the first
    wrapper's coarser annotation stays)."""
    if cells is None:
        return
    ann.counts = cells.counts
    if cells.positives is not None:
        ann.positives = cells.positives
    ann.cell_top = cells.cell_top
    ann.cell_records = cells.cell_records


def annotate_cells(
    tracker: ProvenanceTracker,
    ann: Annotation,
    result: pd.DataFrame,
    keys: pd.DataFrame,
    n_rows: int,
    n_cols: int,
    values: dict[Any, pd.Series],
    margins_name: Any = None,
) -> None:
    """`cells_of` put on the annotation (computed every time; the hooks go through
    `ProvenanceTracker._cells`)."""
    apply_cells(ann, cells_of(result, keys, n_rows, n_cols, values, margins_name))


def cells_of(
    result: pd.DataFrame,
    keys: pd.DataFrame,
    n_rows: int,
    n_cols: int,
    values: dict[Any, pd.Series],
    margins_name: Any = None,
) -> Cells | None:
    """Per cell of a crosstab / pivot_table result: records, contributions and counts, or None
    when the result is too large or of a shape not understood.

    `keys` holds the row keys then the column keys (one column each) of every record, indexed by
    record label; `values` maps each value name to its values (aligned with `keys`). Cells of
    the margins are the unions of the cells they sum. A function of its arguments only, so
    `ProvenanceTracker._cells` may remember it.
    """
    if not isinstance(result, pd.DataFrame) or result.size > MAX_TRACKED_GROUPS:
        return None
    key_cols = list(keys.columns)
    if keys.isna().to_numpy().any():
        keys = keys.dropna(subset=key_cols)
    # Factorize each key and combine the codes (a MultiIndex of tuples is ten times slower).
    combined = np.zeros(len(keys), dtype=np.int64)
    levels = []
    for col in key_cols:
        c, u = pd.factorize(keys[col])
        combined = combined * (len(u) + 1) + c
        levels.append((c, u))
    codes, first = _factorize_first(combined)
    groups = {tuple(u[c[i]] for c, u in levels): g for g, i in enumerate(first)}
    if len(groups) > MAX_TRACKED_GROUPS:
        return None
    glabels = pd.RangeIndex(len(groups))
    records = _group_records(keys.index, np.asarray(codes), glabels)
    sizes = np.bincount(codes[codes >= 0], minlength=len(groups))
    per_value: dict[Any, tuple[np.ndarray, Any, Any]] = {}
    for name, v in values.items():
        arr = (v if v.index.equals(keys.index) else v.reindex(keys.index)).to_numpy()
        numeric = pd.api.types.is_numeric_dtype(v) or pd.api.types.is_bool_dtype(v)
        ok = ~pd.isna(arr)
        cnt = np.bincount(codes[ok & (codes >= 0)], minlength=len(groups))
        pos, top = _contributions(arr, codes, glabels) if numeric else (None, None)
        per_value[name] = (cnt, pos, top)
    nlev = result.columns.nlevels
    if nlev not in (n_cols, n_cols + 1) or (not values and nlev != max(n_cols, 1)):
        return None
    counts = pd.DataFrame(0, index=result.index, columns=result.columns, dtype=float)
    positives = pd.DataFrame(np.nan, index=result.index, columns=result.columns)
    cell_records: dict[tuple[Any, Any], np.ndarray] = {}
    cell_top: dict[tuple[Any, Any], tuple[float, float, float]] = {}
    only = next(iter(per_value)) if len(per_value) == 1 else None
    for r in result.index:
        rk = _cell_key_parts(r, n_rows)
        for c in result.columns:
            if values and nlev == n_cols + 1:
                vname, ck = (c, ()) if nlev == 1 else (c[0], tuple(c[1:]))
            else:
                vname, ck = only, _cell_key_parts(c, n_cols)
            want = rk + ck
            margin = margins_name is not None and margins_name in want
            members = [
                i
                for k, i in groups.items()
                if all(w == margins_name or w == x for w, x in zip(want, k, strict=False))
            ] if margin else ([groups[want]] if want in groups else [])  # fmt: skip
            stats = per_value.get(vname, per_value[only] if len(per_value) == 1 else None)
            if stats is not None:
                cnt, pos, top = stats
                counts.at[r, c] = float(sum(cnt[i] for i in members))
                if pos is not None:
                    positives.at[r, c] = float(sum(pos.iloc[i] for i in members))
                if top is not None and members:
                    tops = sorted((x for i in members for x in (top.top1.iloc[i],
                                   top.top2.iloc[i])), reverse=True)  # fmt: skip
                    total = float(sum(top.total.iloc[i] for i in members))
                    cell_top[(r, c)] = (tops[0], tops[1] if len(tops) > 1 else 0.0, total)
            else:
                counts.at[r, c] = float(sum(sizes[i] for i in members))
            if records:
                recs = [records[i] for i in members]
                cell_records[(r, c)] = (np.sort(np.concatenate(recs)) if recs
                                        else np.empty(0, np.uint64))  # fmt: skip
    return Cells(counts, positives if values and positives.notna().any().any() else None,
                 cell_top or None, cell_records or None)  # fmt: skip


def _transposed_per_column(ann: Annotation, src: pd.DataFrame,
                           rules: dr.DisclosureRules) -> Annotation | None:  # fmt: skip
    """`groupby(g).agg(['mean', 'max']).T`, `groupby(g).describe().T`: a column's statistic
    becomes a row's. A row of extremes (min, max, a percentile too close to either end for the
    smallest group) is suppressed whole; each cell counts the records of its group."""
    counts = ann.counts
    if not isinstance(counts, pd.Series):
        return None
    per_row = counts if counts.index.equals(src.index) else counts.reindex(src.index)
    per_row = per_row.fillna(0).to_numpy(dtype=float)
    smallest = int(per_row.min()) if per_row.size else 0
    extremes = list(ann.suppress_rows)
    for col in src.columns:
        stat = label_statistic(ann, col)
        if stat in dr.EXTREME_STATISTICS or stat == "quantile":
            extremes.append(col)
        elif stat[:1] == "q" and stat[-1:] == "%":
            try:
                q = float(stat[1:-1]) / 100
            except ValueError:
                q = 0.0
            if _extreme_q(q, smallest, rules):
                extremes.append(col)
    cells = pd.DataFrame(np.repeat(per_row[:, None], src.shape[1], axis=1), index=src.index,
                         columns=src.columns)  # fmt: skip
    stat = "mean" if ann.statistic in ("mixed", "describe") else ann.statistic
    return Annotation(
        ann.table,
        "magnitude",
        cells.T,
        stat,
        suppress_rows=tuple(dict.fromkeys(extremes)),
        value_name=ann.value_name,
    )


def _factorize_first(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group number of each value (in order of first appearance) and each group's first row."""
    codes, uniques = pd.factorize(values)
    first = np.full(len(uniques), -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    return codes, first


def _defer(ann: Annotation, cells: Callable[[], None]) -> None:
    """Compute the cells when the result is displayed (most intermediate results never are)."""

    def compute() -> tuple[Any, Any, Any, Any]:
        try:
            cells()
        except Exception:  # noqa: BLE001, S110 - keep the first wrapper's coarser annotation
            pass
        return ann.counts, ann.positives, ann.top, ann.records

    ann.compute = compute


def _as_series_list(x: Any) -> list[pd.Series] | None:
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    return items if all(isinstance(i, pd.Series) for i in items) else None


def _raw_annotation(tracker: ProvenanceTracker, obj: Any) -> Annotation | None:
    tag = tag_of(obj)
    return tracker.annotations.get(tag[1]) if tag and tag[0] == "agg" else None


def install_gap_hooks(tracker: ProvenanceTracker) -> None:
    """Extractions in row order, extremes by other phrasings, cells of crosstab / pivot_table."""
    # -- extractions ----------------------------------------------------------------------------
    orig_iter = pd.Series.__iter__

    def noting(it: Iterator[Any], series: pd.Series) -> Iterator[Any]:
        # Noted when the first value is taken, not at iter(): numpy and scipy call iter() only to
        # ask whether an object is iterable.
        first = next(it, _END)
        if first is _END:
            return
        if note_extraction(tracker, series) is not None:
            _note_few_extracted(tracker, series)
        log_extremes(tracker, series, integers=False)
        yield first
        yield from it

    def series_iter(self: pd.Series) -> Any:
        it = orig_iter(self)
        if tracker.busy or tag_of(self) is None:
            return it
        return noting(it, self)

    setattr(pd.Series, "__iter__", series_iter)  # noqa: B010 - a special method on the class

    orig_tolist = pd.Series.tolist

    @functools.wraps(orig_tolist)
    def tolist(self: pd.Series) -> list[Any]:
        out: list[Any] = orig_tolist(self)
        if not tracker.busy and tag_of(self) is not None:
            src = note_extraction(tracker, self)
            if src is not None:
                sequence_log(tracker).add_list(out, *src)
                _note_few_extracted(tracker, self)
        return out

    setattr(pd.Series, "tolist", tolist)  # noqa: B010 - one wrapper for both names
    setattr(pd.Series, "to_list", tolist)  # noqa: B010

    def wrap_array(cls: type, name: str) -> None:
        attr = cls.__dict__.get(name) or getattr(cls, name)
        is_prop = isinstance(attr, property)
        orig = attr.fget if is_prop else attr

        def get(self: Any, *a: Any, **kw: Any) -> Any:
            out = orig(self, *a, **kw)
            if not tracker.busy and tag_of(self) is not None:
                src = _rows_of(tracker, self)
                if src is not None and len(self):
                    key = _extraction_key(tracker, src[0], self)
                    sequence_log(tracker).add_array(out, src[0], src[1], key)
                    _note_few_extracted(tracker, self)
            return out

        setattr(cls, name, property(get) if is_prop else functools.wraps(orig)(get))

    for cls in (pd.Series, pd.DataFrame):
        wrap_array(cls, "values")
        wrap_array(cls, "to_numpy")

    # `np.asarray(s)`, `np.mean(np.array(s))`: numpy asks the object for its array. Only the
    # statistics of few records are noted here (numpy and pandas call `__array__` often).
    def wrap_dunder_array(cls: type) -> None:
        orig = cls.__array__

        @functools.wraps(orig)
        def array(self: Any, *a: Any, **kw: Any) -> Any:
            out = orig(self, *a, **kw)
            if not tracker.busy and len(self) < tracker.rules.min_cell_count:
                _note_few_extracted(tracker, self)
            return out

        setattr(cls, "__array__", array)  # noqa: B010 - a special method on the class

    for cls in (pd.Series, pd.DataFrame):
        wrap_dunder_array(cls)

    def wrap_render(cls: type, name: str) -> None:
        orig = getattr(cls, name)

        @functools.wraps(orig)
        def render(self: Any, *a: Any, **kw: Any) -> Any:
            if not tracker.busy and tag_of(self) is not None:
                note_extraction(tracker, self)
                if name in ("iterrows", "itertuples"):
                    _note_few_rows(tracker, self)
                judge = tracker.render_judge
                if judge is not None and name in WRITERS and tag_of(self)[0] == "agg":  # type: ignore[index]
                    # An aggregate written as text (`print(t)`, `t.to_csv()`) is judged as its
                    # display would be: the text is that of the redacted copy. Written to a
                    # file inside the hospital (`to_csv(path)`), the file holds that copy and
                    # no output of the cell is withheld for it. `to_dict`, `to_records` and the
                    # row iterators keep the true values: code computes with them (class
                    # weights from counts), and a string in place of a number would break it.
                    to_file = (a and a[0] is not None) or any(
                        kw.get(k) is not None for k in ("path_or_buf", "buf", "path_or_buffer")
                    )
                    self = judge(self, to_file=bool(to_file))
            return orig(self, *a, **kw)

        setattr(cls, name, render)

    for cls in (pd.Series, pd.DataFrame):
        for name in RENDER_METHODS:
            if hasattr(cls, name):
                wrap_render(cls, name)

    # -- extremes by other phrasings ------------------------------------------------------------
    def wrap_sorting(cls: type, name: str) -> None:
        orig = getattr(cls, name)

        @functools.wraps(orig)
        def sorting(self: Any, *a: Any, **kw: Any) -> Any:
            out = orig(self, *a, **kw)
            if not tracker.busy and tag_of(self) is not None:
                if isinstance(self, pd.Series):
                    log_extremes(tracker, self)
                else:
                    by = kw.get("by", kw.get("columns"))
                    if by is None and a:
                        by = a[0] if name == "sort_values" else (a[1] if len(a) > 1 else None)
                    for col in [by] if isinstance(by, str) else list(by or []):
                        if col in self.columns:
                            log_extremes(tracker, self[col])
            return out

        setattr(cls, name, sorting)

    for cls in (pd.Series, pd.DataFrame):
        for name in ("sort_values", "nlargest", "nsmallest"):
            wrap_sorting(cls, name)

    def wrap_quantile(cls: Any) -> None:
        orig = cls.quantile

        @functools.wraps(orig)
        def quantile(self: Any, q: Any = 0.5, *a: Any, **kw: Any) -> Any:
            src = _rows_of(tracker, self)
            if src is None:
                return orig(self, q, *a, **kw)
            with tracker.quiet():
                result = orig(self, q, *a, **kw)
                notna = self.notna().sum()
                n = int(notna if isinstance(self, pd.Series) else notna.min())
            tracker.touched = True
            rules = tracker.rules
            qs = [float(x) for x in np.atleast_1d(q)]
            ext = [x for x in qs if _extreme_q(x, n, rules)] if rules.extremes == "suppress" else []
            if np.ndim(q) == 0 and not isinstance(result, NDFrame):
                fails = ((dr.EXTREMES,) if ext else ()) + (
                    (dr.THRESHOLD,) if n < rules.min_cell_count else ()
                )
                if fails:
                    value = float(result) if isinstance(result, (int, float, np.number)) else None
                    tracker.cell_events.append(ReductionEvent(
                        src[0], str(getattr(self, "name", "")), "quantile",
                        np.empty(0, np.uint64), 0, value, fails))  # fmt: skip
                return result
            if np.ndim(q) == 0:  # a frame's quantile: one value per column
                rows = tuple(result.index) if ext else ()
            else:
                rows = tuple(x for x in result.index if float(x) in ext)
            return tracker.annotate_summary(src[0], result, n, suppress_rows=rows)

        cls.quantile = quantile

    wrap_quantile(pd.Series)
    wrap_quantile(pd.DataFrame)

    def wrap_group_quantile(cls: Any) -> None:
        prev = cls.quantile

        @functools.wraps(prev)
        def quantile(self: Any, q: Any = 0.5, *a: Any, **kw: Any) -> Any:
            result = prev(self, q, *a, **kw)
            ann = None if tracker.busy else _raw_annotation(tracker, result)
            if ann is not None and tracker.rules.extremes == "suppress":
                if any(float(x) <= 0.0 or float(x) >= 1.0 for x in np.atleast_1d(q)):
                    ann.statistic = "max"  # a group's maximum or minimum: an extreme
            return result

        cls.quantile = quantile

    wrap_group_quantile(SeriesGroupBy)
    wrap_group_quantile(DataFrameGroupBy)

    prev_describe = NDFrame.describe

    @functools.wraps(prev_describe)
    def describe(self: NDFrame, *args: Any, **kwargs: Any) -> Any:
        result = prev_describe(self, *args, **kwargs)
        ann = _raw_annotation(tracker, result)
        if ann is not None and tracker.rules.extremes == "suppress" and "count" in result.index:
            with tracker.quiet():
                cnt = result.loc["count"]
                n = int(pd.to_numeric(pd.Series(cnt), errors="coerce").min())
            ext = [r for r in result.index if isinstance(r, str) and r.endswith("%")
                   and _extreme_q(float(r[:-1]) / 100, n, tracker.rules)]  # fmt: skip
            ann.suppress_rows = tuple(dict.fromkeys((*ann.suppress_rows, *ext)))
        return result

    NDFrame.describe = describe  # type: ignore[method-assign,unused-ignore]

    # -- a grouped result reshaped into a table ------------------------------------------------
    def wrap_unstack(cls: Any) -> None:
        orig = cls.unstack

        @functools.wraps(orig)
        def unstack(self: Any, *a: Any, **kw: Any) -> Any:
            result = orig(self, *a, **kw)
            ann = None if tracker.busy else _raw_annotation(tracker, self)
            if ann is None or not isinstance(result, pd.DataFrame):
                return result
            try:
                with tracker.quiet():
                    new = unstacked(ann.resolve(tracker), self, result, a, kw)
            except Exception:  # noqa: BLE001 - records behind the cells unknown: fail closed
                new = Annotation(ann.table, ann.kind, pd.Series(dtype=float), ann.statistic)
            return tracker.annotate(result, new)

        cls.unstack = unstack

    def unstacked(ann: Annotation, src: Any, result: pd.DataFrame, a: tuple[Any, ...],
                  kw: dict[str, Any]) -> Annotation:  # fmt: skip
        """`groupby([a, b]).size().unstack()`: the annotation of the groups, per cell of the
        table (pandas does not carry `attrs` through unstack). A combination no record has
        (NaN, or `fill_value`) stands on 0 records."""
        labels = src.index
        # where each row of the source lands: unstack the row positions the same way
        where = pd.Series(np.arange(len(labels), dtype=float), index=labels)
        where = pd.Series.unstack(where, *a, **{k: v for k, v in kw.items() if k != "fill_value"})
        counts = ann.counts
        if not isinstance(counts, pd.Series):
            raise TypeError("per-cell counts of an unstacked table")
        aligned = counts.index.equals(labels)
        top = ann.top
        pos = ann.positives
        frame = isinstance(src, pd.DataFrame)
        cnt = pd.DataFrame(0.0, index=result.index, columns=result.columns)
        positives = pd.DataFrame(np.nan, index=result.index, columns=result.columns)
        cell_top: dict[tuple[Any, Any], tuple[float, float, float]] = {}
        cell_records: dict[tuple[Any, Any], np.ndarray] = {}
        column_stats: dict[Any, str] = {}
        wcols = list(where.columns)
        levels = where.columns.nlevels
        for j, col in enumerate(result.columns):
            value_col, part = None, col
            if frame:  # columns (source column..., unstacked label...)
                value_col = col[:-levels] if len(col) - levels > 1 else col[0]
                part = col[-levels:] if levels > 1 else col[-1]
                column_stats[col] = label_statistic(ann, value_col)
            k = wcols.index(part)
            for i, row in enumerate(result.index):
                p = where.iat[i, k]
                if pd.isna(p):
                    continue  # nobody: 0 records
                p = int(p)
                label = labels[p]
                n = counts.iloc[p] if aligned else counts.get(label, 0)
                cnt.iat[i, j] = float(0 if pd.isna(n) else n)
                if isinstance(pos, pd.Series):
                    positives.iat[i, j] = pos.get(label, np.nan)
                elif isinstance(pos, pd.DataFrame) and value_col in pos.columns:
                    positives.iat[i, j] = pos.at[label, value_col]
                if top is not None and label in top.index:
                    t = top.loc[label]
                    cell_top[(row, col)] = (float(t["top1"]), float(t["top2"]),
                                            float(t["total"]))  # fmt: skip
                if ann.records is not None and label in ann.records:
                    cell_records[(row, col)] = ann.records[label]
        return Annotation(
            ann.table, ann.kind, cnt, ann.statistic, column_stats,
            positives if positives.notna().to_numpy().any() else None,
            value_name=ann.value_name, cell_top=cell_top or None,
            cell_records=cell_records or None)  # fmt: skip

    wrap_unstack(pd.Series)
    wrap_unstack(pd.DataFrame)

    def wrap_reshape(cls: Any, name: str, remap: Callable[..., Annotation | None]) -> None:
        orig = getattr(cls, name)

        @functools.wraps(orig)
        def reshaped(self: Any, *a: Any, **kw: Any) -> Any:
            result = orig(self, *a, **kw)
            ann = None if tracker.busy else _raw_annotation(tracker, self)
            if ann is None or not isinstance(result, NDFrame) or result is self:
                return result
            try:
                with tracker.quiet():
                    new = remap(ann.resolve(tracker), self, result, a, kw)
            except Exception:  # noqa: BLE001 - the coarser annotation pandas carried stays
                new = None
            return result if new is None else tracker.annotate(result, new)

        setattr(cls, name, reshaped)

    def reset(ann: Annotation, src: Any, result: Any, a: tuple[Any, ...],
              kw: dict[str, Any]) -> Annotation | None:  # fmt: skip
        """`groupby([a, b]).size().reset_index(name='n')`: the rows keep their order, the
        group labels become columns (judged with their row, never rounded)."""
        counts = ann.counts
        if a or kw.get("level") is not None or not isinstance(counts, pd.Series):
            return None
        if len(result) != len(src) or not isinstance(result.index, pd.RangeIndex):
            return None
        labels = src.index
        counts = counts if counts.index.equals(labels) else counts.reindex(labels)

        def moved(part: Any) -> Any:
            if part is None:
                return None
            part = part if part.index.equals(labels) else part.reindex(labels)
            return part.set_axis(result.index, axis=0)

        stats: dict[Any, str] = {}
        if isinstance(result, pd.DataFrame):
            n_labels = 0 if kw.get("drop") else labels.nlevels
            for i, col in enumerate(result.columns):
                if i < n_labels:
                    stats[col] = "label"
                elif isinstance(src, pd.Series):
                    stats[col] = ann.statistic
                else:
                    stats[col] = label_statistic(ann, col)
        return Annotation(
            ann.table, "magnitude" if stats else ann.kind, moved(counts), ann.statistic,
            stats or dict(ann.column_stats), moved(ann.positives), moved(ann.top),
            value_name=ann.value_name)  # fmt: skip

    def transposed(ann: Annotation, src: Any, result: Any, a: tuple[Any, ...],
                   kw: dict[str, Any]) -> Annotation | None:  # fmt: skip
        """`crosstab(a, b).T`: every cell keeps its records, at (column, row)."""
        if not isinstance(src, pd.DataFrame):
            return None
        counts = ann.counts
        if ann.column_stats or ann.statistic == "describe":
            return _transposed_per_column(ann, src, tracker.rules)
        # rows that are extremes (describe()'s min and max) become columns of extremes
        stats = {r: "max" for r in ann.suppress_rows if r in src.index}
        if isinstance(counts, pd.Series):  # per row: each cell of the row
            per_row = counts if counts.index.equals(src.index) else counts.reindex(src.index)
            counts = pd.DataFrame(np.repeat(per_row.to_numpy(dtype=float)[:, None],
                                            src.shape[1], axis=1),
                                  index=src.index, columns=src.columns)  # fmt: skip
            cell_top = None
            if ann.top is not None:
                top = ann.top
                cell_top = {(c, r): (float(top.at[r, "top1"]), float(top.at[r, "top2"]),
                                     float(top.at[r, "total"]))
                            for r in src.index if r in top.index for c in src.columns}  # fmt: skip
            positives = None
            if isinstance(ann.positives, pd.Series):
                pos = ann.positives.reindex(src.index).to_numpy(dtype=float)
                positives = pd.DataFrame(np.repeat(pos[:, None], src.shape[1], axis=1),
                                         index=src.index, columns=src.columns).T  # fmt: skip
            elif ann.positives is not None:
                positives = ann.positives.T
        else:
            cell_top = ({(c, r): v for (r, c), v in ann.cell_top.items()}
                        if ann.cell_top is not None else None)  # fmt: skip
            positives = ann.positives.T if isinstance(ann.positives, pd.DataFrame) else None
        records = ({(c, r): v for (r, c), v in ann.cell_records.items()}
                   if ann.cell_records is not None else None)  # fmt: skip
        return Annotation(ann.table, ann.kind, counts.T, ann.statistic, stats, positives,
                          value_name=ann.value_name, cell_top=cell_top,
                          cell_records=records)  # fmt: skip

    wrap_reshape(pd.Series, "reset_index", reset)
    wrap_reshape(pd.DataFrame, "reset_index", reset)
    wrap_reshape(pd.DataFrame, "transpose", transposed)

    # -- per-cell records and contributions of crosstab / pivot_table ---------------------------
    import pandas.core.reshape.pivot as pivot_mod

    prev_crosstab = pivot_mod.crosstab

    @functools.wraps(prev_crosstab)
    def crosstab(index: Any, columns: Any, values: Any = None, *args: Any, **kwargs: Any) -> Any:
        result = prev_crosstab(index, columns, values, *args, **kwargs)
        ann = None if tracker.busy else _raw_annotation(tracker, result)
        rows, cols = _as_series_list(index), _as_series_list(columns)
        if ann is None or rows is None or cols is None:
            return result
        if values is not None and not isinstance(values, pd.Series):
            return result
        ann.statistic = "count" if values is None else _agg_name(kwargs.get("aggfunc"))
        margins = kwargs.get("margins_name", "All") if kwargs.get("margins") else None

        def cells() -> None:
            parts = [*rows, *cols]

            def compute() -> Cells | None:
                keys = pd.concat([p.rename(i) for i, p in enumerate(parts)], axis=1)
                vals = {} if values is None else {None: values}
                return cells_of(result, keys, len(rows), len(cols), vals, margins)

            key = ("crosstab", len(rows), len(cols), margins, result.index, result.columns,
                   tuple(series_key(p) for p in parts),
                   None if values is None else series_key(values))  # fmt: skip
            apply_cells(ann, tracker._cells(key, compute))

        _defer(ann, cells)
        return result

    pivot_mod.crosstab = crosstab
    pd.crosstab = crosstab

    prev_pivot = pivot_mod.pivot_table

    @functools.wraps(prev_pivot)
    def pivot_table(data: Any, values: Any = None, index: Any = None, columns: Any = None,
                    aggfunc: Any = "mean", *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        result = prev_pivot(data, values, index, columns, aggfunc, *args, **kwargs)
        ann = None if tracker.busy else _raw_annotation(tracker, result)
        if ann is None or not isinstance(data, pd.DataFrame):
            return result
        rk = [index] if isinstance(index, str) else list(index or [])
        ck = [columns] if isinstance(columns, str) else list(columns or [])
        if not all(isinstance(k, str) and k in data.columns for k in rk + ck) or not rk:
            return result
        if values is None:
            vnames = [c for c in data.columns if c not in rk + ck]
        else:
            vnames = [values] if isinstance(values, str) else list(values)
        stat = _agg_name(aggfunc)
        if stat in ("size", "count") or isinstance(aggfunc, (list, dict)):
            return result
        ann.statistic = stat
        margins = kwargs.get("margins_name", "All") if kwargs.get("margins") else None

        def cells() -> None:
            keys = {i: data[k] for i, k in enumerate(rk + ck)}
            vals = {v: data[v] for v in vnames if v in data.columns}

            def compute() -> Cells | None:
                return cells_of(result, pd.DataFrame(keys), len(rk), len(ck), vals, margins)

            if not all(isinstance(s, pd.Series) for s in [*keys.values(), *vals.values()]):
                apply_cells(ann, compute())  # duplicate column names: not remembered
                return
            key = ("pivot", len(rk), len(ck), margins, result.index, result.columns, data.index,
                   tuple(series_key(s) for s in keys.values()),
                   tuple((v, series_key(s)) for v, s in vals.items()))  # fmt: skip
            apply_cells(ann, tracker._cells(key, compute))

        _defer(ann, cells)
        return result

    pivot_mod.pivot_table = pivot_table
    pd.pivot_table = pivot_table
