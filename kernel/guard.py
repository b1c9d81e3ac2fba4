"""The in-kernel output guard: one `OutputGuard.check(msg)` for every message the kernel sends.

Two hooks feed it. At display-formatter time `judge_object` sees the Python object (a protected
DataFrame, an aggregate with the records behind each cell, a matplotlib figure) and either
releases it, redacts it (suppressed cells, rounded counts, hidden extremes) or replaces it by a
notice. At the session level every outgoing message on iopub, shell, control and stdin passes
`check`, which scrubs errors, refuses SVG, applies the cell's disclosure events (threshold,
differencing, extremes) and scans all text for identifier values, PHI, encoded identifiers and
rows printed as numbers. Every message it touches carries `metadata["bedside"]`. Behind the
sentry (`behind_sentry`) it leaves the identifier/PHI scan of long texts to the sentry, which
runs the same scan on everything it lets out, and keeps the checks only it can make.

This guard runs inside the researcher's process: it stops honest mistakes and careless leaks,
not a determined attacker who can switch it off. The sentry outside the sandbox is the
enforcement boundary.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from bedside.kernel._provenance import (
    Annotation,
    ProvenanceTracker,
    _same,
    label_statistic,
    sequence_log,
    tag_of,
)
from bedside.kernel._scan import Finding, TextScanner, has_ascii_digit, numbers_in
from bedside.kernel._sequences import SequenceGuard
from bedside.policy import disclosure as dr
from bedside.policy._encodings import DigestIndex
from bedside.policy.decision import Action, Decision

OUTPUT_TYPES = frozenset({"execute_result", "display_data", "update_display_data", "stream"})
# Messages with no data in them: status, the echo of the researcher's own code, bookkeeping.
PASS_TYPES = frozenset(
    {"status", "execute_input", "kernel_info_reply", "shutdown_reply", "interrupt_reply",
     "is_complete_reply", "clear_output", "comm_info_reply", "connect_reply", "debug_event",
     "debug_reply", "usage_reply", "iopub_welcome"}
)  # fmt: skip
SUPPRESSED = "suppressed"
# Behind the sentry (`behind_sentry`), a text at least this long is not run through
# `bedside.policy.scan_text` (identifier values, PHI, encoded forms) here: the sentry runs that
# same scan, with the same policy and index, on every byte it lets out, so a second run in the
# kernel stops nothing more. Measured in this process with the kernel tests' hospital indexed
# (text of ordinary words): the scan costs about 0.04 ms of CPU at 4 KiB, 0.3 ms at 64 KiB,
# 1.4 ms at 256 KiB and 5 ms at 1 MB. Below 64 KiB it stays under a tenth of a trivial cell's
# CPU in the kernel (about 3 ms), and ordinary outputs (tables, summaries, tracebacks: a few
# KiB) keep the kernel's own explanations; the sentry's limit on text buffers is 64 KiB too.
SENTRY_SCAN_MIN_CHARS = 64 * 1024
# The characters of a stream chunk kept to be scanned with the next chunk (a value split
# across two writes is still found).
STREAM_TAIL = 256
SENTRY_SCAN_RULE = "identifier-scan-by-sentry"
SENTRY_SCAN_REASON = "the identifier and PHI scan of this long text is left to the hospital sentry"
# Every digit a "0", everything else a space: `_has_date_run` finds eight digits in a row with one
# `bytes.translate` and one substring search (a regex takes ten times as long on a megabyte).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))

VERDICT_MEMO = 4  # verdicts remembered (each holds the record sets of its cells)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_QUOTED = re.compile(r"(['\"])(.*?)\1")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,:/-]\d+)*")
_GROUPED = re.compile(r"(?<![\w.])\d{1,3}(?:[,_]\d{3})+(?:\.\d+)?")  # 187,654.32


def _numbers_shown(text: str) -> np.ndarray:
    """The numbers a text shows, also those written with thousands separators
    (`f"{x:,.2f}"` gives `187,654.32`, `f"{x:_}"` gives `187_654`)."""
    nums = numbers_in(text)
    if "," in text or "_" in text:
        grouped = [float(re.sub(r"[,_]", "", m)) for m in _GROUPED.findall(text[:200_000])]
        nums = np.concatenate([nums, np.array(grouped, dtype=float)])
    return nums


PRECISE_DIGITS = 5  # significant digits a number needs to be compared with kept statistics
_PRECISE = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:[,_]\d{3})+|\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?")


def _precise_numbers(text: str, limit: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """The numbers a text shows with at least `PRECISE_DIGITS` significant digits (thousands
    separators read), and for each the half unit of its last digit: a value rounded to what
    was printed lies within it."""
    values: list[float] = []
    tolerance: list[float] = []
    for sign, whole, frac, exp in _PRECISE.findall(text[:limit]):
        digits = whole.replace(",", "").replace("_", "")
        if len((digits + frac).lstrip("0")) < PRECISE_DIGITS:
            continue
        shift = int(exp) if exp else 0
        try:
            value = float(f"{sign}{digits}.{frac or 0}e{shift}")
        except (ValueError, OverflowError):
            continue
        values.append(value)
        tolerance.append(0.5 * 10.0 ** (shift - len(frac)) + 1e-9 * abs(value))
    return np.array(values, dtype=float), np.array(tolerance, dtype=float)


def _distance_to_kept(kept: list[float], nums: np.ndarray) -> np.ndarray:
    """For each number, its distance to the nearest kept value (a sorted search, not pair by
    pair: up to 4,096 kept values against up to 200 kB of numbers)."""
    vals = np.sort(np.asarray(kept, dtype=float))
    at = np.searchsorted(vals, nums)
    below = vals[np.clip(at - 1, 0, vals.size - 1)]
    above = vals[np.clip(at, 0, vals.size - 1)]
    return np.minimum(np.abs(nums - below), np.abs(nums - above))


ADVICE = {
    "identifier": "Outputs may not contain identifier values. Work with aggregates "
    "(counts, means by group) instead of individual records.",
    "phi": "Outputs may not contain personal details such as e-mail addresses or phone numbers.",
    "row-level": "Row-level data cannot leave the hospital. Summarise it first, e.g. "
    "df.groupby('ward').size() or df.age.describe(); df.shape and df.dtypes show the schema.",
    "svg": "SVG embeds the plotted coordinates; use the default PNG output "
    "(%config InlineBackend.figure_formats = ['png']).",
    "figure-points": "Plots with one mark per patient are not released; plot a histogram, "
    "a hexbin with large cells, or group means instead.",
    "magic": "This command shows raw values or the kernel's internals and is disabled here.",
    "shell": "Shell commands are disabled by the hospital's policy.",
    "cell": "An earlier result in this cell failed the disclosure rules, so the cell's "
    "outputs are withheld.",
    "error": "The error message contained data values and was shortened.",
    "guard-error": "Try a simpler output; report the rule and cell to the custodian.",
    "unknown-records": "Compute the aggregate again and show it in the same cell (the guard "
    "keeps the records of the last 128 aggregates computed).",
}


def _has_date_run(text: str) -> bool:
    """Does `text` hold eight digits in a row, the compact form of a date (`19560312`)?

    The sentry reads a date-of-birth match made of a bare digit run as an ordinary number (so
    that statistics stay usable) where this guard, in a listing of five or more, blocks it; a
    text with such a run is scanned here even behind the sentry."""
    if not has_ascii_digit(text):
        return False
    return b"0" * 8 in text.encode("utf-8", "surrogatepass").translate(_DIGITS_ONLY)


def notice_bundle(decision: Decision) -> dict[str, str]:
    """The readable replacement for a blocked output (text/plain and text/html)."""
    head = f"[bedside] output {decision.action.value} by rule '{decision.rule}'"
    parts = [head]
    if decision.reason:
        parts.append(f"why: {decision.reason}")
    if decision.advice:
        parts.append(f"instead: {decision.advice}")
    parts.append("(in-kernel guard; the hospital sentry checks every output again)")
    text = "\n".join(parts)
    h = "".join(
        f"<div>{html.escape(p)}</div>" if i else f"<b>{html.escape(p)}</b>"
        for i, p in enumerate(parts)
    )
    return {"text/plain": text, "text/html": f'<div class="bedside-notice">{h}</div>'}


# Protocol vocabulary: strings no identifier can be (identifiers are matched on whole tokens).
_PROTOCOL = frozenset(
    {"status", "ok", "error", "execution_count", "user_expressions", "payload", "name", "text",
     "stdout", "stderr", "data", "metadata", "transient", "text/plain", "text/html", "image/png",
     "application/json", "display_id", "found", "matches", "cursor_start", "cursor_end",
     "ename", "evalue", "traceback", "source", "start", "comm_id", "target_name", "state",
     "buffer_paths", "method", "update", "prompt", "password", "history", "restart"}
)  # fmt: skip


_PROTOCOL_LEN = max(map(len, _PROTOCOL))


def _strings(obj: Any) -> Iterator[str]:
    """Every string of a message's content, keys included, in document order."""
    out: list[str] = []
    _collect_strings(obj, out)
    return iter(out)


def _collect_strings(obj: Any, out: list[str]) -> None:
    # appends to one list rather than nesting generators: this runs on every message
    t = type(obj)
    if t is dict:  # the usual containers and leaves by exact type first, then any subclass
        for k, v in obj.items():
            if type(k) is str:
                if k not in _PROTOCOL:
                    out.append(k)
            elif isinstance(k, str) and k not in _PROTOCOL:
                out.append(k)
            tv = type(v)
            if tv is str:
                if k == "image/png":
                    # The text a PNG carries, as the sentry reads it: its base64 scanned as
                    # text holds, by chance, every three-letter first name of a hospital.
                    out.append(_png_text(v))
                # (a long value is no protocol word: not hashed to find out, a 1 MB output's
                # text would cost its hash, half a millisecond)
                elif len(v) > _PROTOCOL_LEN or v not in _PROTOCOL:
                    out.append(v)
            elif tv is not int and tv is not bool and v is not None:
                _collect_strings(v, out)
        return
    if t is str:
        if len(obj) > _PROTOCOL_LEN or obj not in _PROTOCOL:
            out.append(obj)
        return
    if isinstance(obj, str):
        if obj not in _PROTOCOL:
            out.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k not in _PROTOCOL:
                out.append(k)
            _collect_strings(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_strings(v, out)
    elif obj is not None and not isinstance(obj, (bool, int, float)):
        out.append(str(obj))


def _png_text(value: str) -> str:
    """The text chunks of a base64 PNG (the sentry's `png_text`), or `value` itself when it is
    not one. Text drawn into the pixels is judged on the figure (`_judge_figure`)."""
    from bedside.gateway._boundary import png_text

    carried = png_text(value)
    return value if carried is None else carried


class OutputGuard:
    """Judges objects at display time and messages at send time, per the custodian's policy."""

    def __init__(self, policy: Any, tracker: ProvenanceTracker, scanner: TextScanner, *,
                 behind_sentry: bool = False) -> None:  # fmt: skip
        self.policy = policy
        # Set when the sentry launched this kernel (`bedside.kernel.BEHIND_SENTRY_ENV`): long
        # texts' identifier/PHI scan is left to it (`SENTRY_SCAN_MIN_CHARS`). Code that sets it
        # weakens only this cooperative guard, which such code can switch off anyway.
        self.behind_sentry = behind_sentry
        self.rules: dr.DisclosureRules = policy.disclosure
        self.tracker = tracker
        self.scanner = scanner
        self.columns: set[str] = set()
        self.code = ""
        self.cell_id = ""
        self.cell_block: Decision | None = None
        # Session memory of released aggregate cells: (table, column, statistic, group) ->
        # record sets, so a later cell over almost the same records is refused (differencing).
        self.released: dict[tuple[Any, ...], list[np.ndarray]] = {}
        self._released_version = 0  # counts every change of `released`
        # The last verdicts on aggregates, by what they depend on (`_verdict_key`): a table shown
        # again is not judged cell by cell again.
        self._verdicts: list[tuple[tuple[Any, ...], tuple[Decision, np.ndarray, bool]]] = []
        self._stream_tail: dict[str, str] = {}
        self._muted_streams: set[str] = set()
        self._lock = threading.RLock()
        self.sequences = SequenceGuard(sequence_log(tracker))  # row-order runs, any cardinality
        # Decisions on aggregates the cell wrote as text (`judge_rendered`), attached to the
        # cell's outputs that carry no decision of their own.
        self._text_notes: list[Decision] = []
        tracker.render_judge = self.judge_rendered
        # Digests of the loaded tables' identifiers, built on the first hex run (`DigestIndex`).
        self._digests: tuple[int, DigestIndex] | None = None

    # -- cells ---------------------------------------------------------------------------------
    def begin_cell(self, code: str, msg_id: str) -> None:
        with self._lock:
            self.tracker.begin_cell()
            self.code = code
            self.cell_id = msg_id
            self.cell_block = None
            self._text_notes.clear()
            models = self.tracker.__dict__.get("models")
            if models is not None:
                models.begin_cell(code)
            self._stream_tail.clear()
            self._muted_streams.clear()

    def _cell_events_block(self) -> Decision | None:
        models = self.tracker.__dict__.get("models")
        for note in models.cell_notes if models is not None else ():
            if note.blocked:  # an evaluation table of which every cell fails
                return note
        for ev in self.tracker.cell_events:
            fails = [f for f in ev.fails if f != dr.EXTREMES]
            if fails:
                return Decision.block(
                    fails[0],
                    f"a {ev.statistic} over protected records fails the {fails[0]} rule",
                    dr.ADVICE[fails[0]].format(min=self.rules.min_cell_count),
                )
        return None

    def _extreme_in(self, text: str) -> bool:
        values = [ev.value for ev in self.tracker.cell_events
                  if dr.EXTREMES in ev.fails and ev.value is not None]  # fmt: skip
        if not values:
            return False
        nums = _numbers_shown(text)
        return any(bool(np.isclose(nums, v, rtol=1e-6, atol=0.5).any()) for v in values)

    def _running_total_in(self, text: str) -> bool:
        """Whether the text shows a row of a cumulative sum over few records."""
        return self._kept_number_in(self.tracker.running_totals, text)

    def _few_stats_in(self, text: str) -> bool:
        """Whether the text shows what numpy makes of an array of few records' values, to the
        precision it is written with and with at least `PRECISE_DIGITS` significant digits:
        such statistics are kept whatever their size (a rate of 0/1 values over three patients
        is 0.333), and a short number is in every output."""
        kept = self.tracker.few_stats
        if not kept:
            return False
        shown, tolerance = _precise_numbers(text)
        if not shown.size:
            return False
        return bool((_distance_to_kept(kept, shown) <= tolerance).any())

    @staticmethod
    def _kept_number_in(kept: list[float], text: str) -> bool:
        """Whether the text shows one of the numbers kept for the session (up to
        `RUNNING_TOTALS`: found by a sorted search, not pair by pair)."""
        if not kept:
            return False
        nums = _numbers_shown(text)
        nums = nums[np.isfinite(nums)]
        if not nums.size:
            return False
        near = _distance_to_kept(kept, nums)
        return bool((near <= np.maximum(5e-3, 1e-9 * np.abs(nums))).any())

    def _few_rows_in(self, text: str) -> bool:
        values = self.tracker.few_rows
        if not values:
            return False
        nums = _numbers_shown(text)
        nums = nums[:20_000]
        return bool(nums.size) and bool(
            np.isclose(nums[:, None], np.array(values)[None, :], rtol=1e-9, atol=5e-3).any()
        )

    # -- objects at display time -------------------------------------------------------------
    def judge_object(self, obj: Any) -> tuple[Decision | None, Any]:
        """(decision, object to format). None decision = not protected, format as is."""
        with self.tracker.quiet():
            models = self.tracker.__dict__.get("models")
            fit = None if models is None else models.judge_object(obj)
            if fit is not None:
                return fit, models.shown_instead(obj)
            if isinstance(obj, (pd.DataFrame, pd.Series)):
                return self._judge_pandas(obj)
            if _is_figure(obj):
                return self._judge_figure(obj), obj
            extracted = self._extracted(obj)
            if extracted is not None:
                return extracted, obj
            if isinstance(obj, (list, tuple, dict, set)):
                items = list(obj.values()) if isinstance(obj, dict) else list(obj)
                worst: Decision | None = None
                for item in items[:200]:
                    if isinstance(item, (pd.DataFrame, pd.Series, list, tuple, dict)):
                        d, _ = self.judge_object(item)
                        if d is not None and d.action is not Action.RELEASED:
                            worst = d if worst is None else worst.most_severe(d)
                            if d.blocked:
                                return Decision.block(
                                    d.rule, f"a collection holds an object that is {d.reason}",
                                    d.advice), obj  # fmt: skip
                return worst, obj
        return None, obj

    def judge_rendered(self, obj: Any, *, to_file: bool = False) -> Any:
        """The object an aggregate's text is written from (`print(t)`, `t.to_csv()`,
        `t.to_json()`, ...): judged as its display would be, so the text carries the same
        suppressed cells. A table of which every cell fails is written all `suppressed` and the
        cell's outputs are withheld; a table that only has its counts rounded is written as is
        (its text releases nothing the rules forbid). `to_file`: written to a file or buffer,
        not returned; the cell's outputs are not marked for it."""
        with self._lock:
            decision, target = self.judge_object(obj)
            if decision is None or decision.action is Action.RELEASED:
                return obj
            if decision.rule == dr.ROUNDING:
                return obj
            if decision.blocked:
                if self.cell_block is None and not to_file:
                    self.cell_block = Decision.block(
                        decision.rule, f"a table written as text: {decision.reason}",
                        decision.advice, details=decision.details)  # fmt: skip
                frame = _Grid.of(obj)
                out = np.full((len(frame.index), len(frame.columns)), SUPPRESSED, dtype=object)
                blank: Any = pd.DataFrame(out, index=frame.index, columns=frame.columns)
                if isinstance(obj, pd.Series):
                    blank = blank.iloc[:, 0].rename(obj.name)
                blank.attrs.clear()
                return blank
            if not to_file:
                self._text_notes.append(decision)
            return target

    def _extracted(self, obj: Any) -> Decision | None:
        """A list or array taken from protected rows in record order (`tolist`, `.values`)."""
        if not isinstance(obj, (list, np.ndarray)):
            return None
        src = self.sequences.log.source_of(obj)
        if src is None or not self.tracker.is_record_axis(src[1], src[0]):
            return None
        return Decision.block(
            "row-level", f"it lists values of the protected table '{src[0]}' record by record",
            ADVICE["row-level"], details={"table": src[0]})  # fmt: skip

    def _judge_pandas(self, obj: pd.DataFrame | pd.Series) -> tuple[Decision | None, Any]:
        tag = tag_of(obj)
        if tag is None:
            return None, obj
        ann = self.tracker.annotation_of(obj)
        if ann is not None:
            return self._judge_aggregate(obj, ann)
        if tag[0] != "rows":
            # An aggregate whose annotation the tracker no longer holds (it keeps the last
            # ones): the records behind its cells are unknown, so it is not released.
            return Decision.block(
                "unknown-records", "the guard no longer knows how many records stand behind "
                "this aggregate's cells", ADVICE["unknown-records"]), obj  # fmt: skip
        table = str(tag[1])
        rows = self.tracker.is_record_axis(obj.index, table)
        cols = isinstance(obj, pd.DataFrame) and self.tracker.is_record_axis(obj.columns, table)
        if rows or cols or len(obj) == 0:
            return Decision.block(
                "row-level", f"it shows individual records of the protected table '{table}'",
                ADVICE["row-level"], details={"table": table}), obj  # fmt: skip
        # Derived from protected data but indexed by column names (dtypes, corr, ...).
        return Decision.release("schema-or-summary"), obj

    def _judge_aggregate(self, obj: Any, ann: Annotation) -> tuple[Decision, Any]:
        frame = _Grid.of(obj)
        key = self._verdict_key(obj, ann, frame)
        if key is not None:
            for ref, verdict in self._verdicts:
                if _same_verdict_key(ref, key):
                    return self._shown(obj, frame, *verdict)
        version = self._released_version
        decision, out, changed = self._verdict(obj, ann, frame)
        # Remembered only when judging it logged nothing new: the verdict was reached against
        # the log as it still is, so judging the same input again gives the same verdict and
        # logs nothing.
        if key is not None and version == self._released_version:
            self._verdicts.insert(0, (_kept_verdict_key(key), (decision, out.copy(), changed)))
            del self._verdicts[VERDICT_MEMO:]
        return self._shown(obj, frame, decision, out, changed)

    def _verdict_key(self, obj: Any, ann: Annotation, frame: Any) -> tuple[Any, ...] | None:
        """What the verdict on an aggregate depends on, or None when it is not remembered.

        The records, counts and contributions behind the cells count by identity only when
        they are the tracker's own memo values (`ProvenanceTracker.remembers`: built by the
        tracker from data it compared, never handed to the researcher's code, never changed);
        the result's labels and values are compared by value (numeric values only), the
        annotation's other fields by value, the rules and the differencing log by identity and
        the log's version."""
        parts = (ann.counts, ann.positives, ann.top, ann.records, ann.cell_records, ann.cell_top)
        for p in parts:
            if p is not None and not self.tracker.remembers(p):
                return None
        values = obj.to_numpy()
        if values.dtype.kind not in "fiub":
            return None
        columns = frame.columns if isinstance(frame.columns, pd.Index) else tuple(frame.columns)
        scalars = (ann.table, ann.kind, ann.statistic, tuple(ann.column_stats.items()),
                   ann.suppress_rows, ann.value_name)  # fmt: skip
        return (parts, scalars, frame.index, columns, values, self.rules, self.released,
                self._released_version)  # fmt: skip

    def _shown(self, obj: Any, frame: Any, decision: Decision, out: np.ndarray,
               changed: bool) -> tuple[Decision, Any]:  # fmt: skip
        """The verdict applied: the object itself, or a redacted copy of it."""
        if decision.action is Action.RELEASED or decision.blocked or not changed:
            return decision, obj
        red: Any = _frame_of(out.copy(), frame.index, frame.columns)
        if isinstance(obj, pd.Series):
            red = red.iloc[:, 0].rename(obj.name)
        red.attrs.clear()
        return decision, red

    def _verdict(self, obj: Any, ann: Annotation, frame: Any) -> tuple[Decision, np.ndarray, bool]:
        """(decision, cells as shown, whether any cell changed), logging released cells."""
        rules = self.rules
        values = frame.to_numpy(dtype=object)
        out = values.copy()
        counts = ann.counts
        fallback = _smallest(counts)
        # Plain dicts: per-cell pandas lookups would cost more than the rest of the cell.
        row_counts = _as_dict(counts) if isinstance(counts, pd.Series) else None
        cell_counts = _cells_dict(counts) if isinstance(counts, pd.DataFrame) else None
        top = _top_dict(ann.top)
        pos_rows = _as_dict(ann.positives) if isinstance(ann.positives, pd.Series) else None
        masks: list[tuple[str, ...]] = []
        to_log: list[tuple[tuple[Any, ...], np.ndarray | None]] = []
        changed = False
        columns = _labels(frame.columns)
        stats = [_column_stat(ann, col) for col in columns]
        for i, row in enumerate(_labels(frame.index)):
            for j, col in enumerate(columns):
                stat = stats[j]
                if row_counts is not None:
                    n = _count(row_counts.get(row), fallback)
                elif cell_counts is not None:
                    n = _count(cell_counts.get((row, col)), fallback)
                else:
                    n = _lookup(counts, row, col, fallback)
                value = values[i, j]
                fails: list[str] = []
                if ann.kind == "frequency":
                    if n == 0:
                        if rules.zeros_disclosive:
                            fails.append(dr.ZEROS)
                    elif n < rules.min_cell_count:
                        fails.append(dr.THRESHOLD)
                else:
                    if n < rules.min_cell_count or (
                        stat in dr.DISPERSION_STATISTICS and n - 1 < rules.min_cell_count
                    ):
                        fails.append(dr.THRESHOLD)
                    if (row in ann.suppress_rows or stat in ("min", "max")) and (
                        rules.extremes == "suppress"
                    ):
                        fails.append(dr.EXTREMES)
                    elif stat[:1] == "q" and stat[-1:] == "%" and _extreme_percentile(
                            stat, n, rules):  # fmt: skip
                        fails.append(dr.EXTREMES)  # a group's describe(): 25% of 21 records
                    if stat == dr.MISSING and pos_rows is not None:
                        pos = _count(pos_rows.get(row), None)
                        if pos is not None:
                            fails.extend(dr.record_count_fails(pos, n, rules))
                    if stat in ("mean", "sum"):
                        pos = (_count(pos_rows.get(row), None) if pos_rows is not None
                               else _positives(ann, row, col))  # fmt: skip
                        cell_top = (ann.cell_top.get((row, col)) if ann.cell_top is not None
                                    else None)  # fmt: skip
                        if pos is not None:
                            fails.extend(dr.binary_class_fails(pos, n, rules))
                        elif cell_top is not None:
                            fails.extend(dr.top_summary_fails(
                                cell_top[:2], cell_top[2], n, rules))  # fmt: skip
                        elif row in top:
                            t = top[row]
                            fails.extend(dr.top_summary_fails(
                                [t["top1"], t["top2"]], t["total"], n, rules))  # fmt: skip
                if not fails and (ann.records or ann.cell_records):
                    key = (ann.table, ann.value_name if ann.value_name is not None else col,
                           _family(stat), row)  # fmt: skip
                    recs = (ann.cell_records.get((row, col)) if ann.cell_records is not None
                            else (ann.records or {}).get(row))  # fmt: skip
                    if self._differs_slightly(key, recs):
                        fails.append(dr.DIFFERENCING)
                    else:
                        to_log.append((key, recs))
                cell = tuple(dict.fromkeys(fails))
                masks.append(cell)
                if cell:
                    out[i, j] = SUPPRESSED
                    changed = True
                elif (ann.kind == "frequency" or stat in ("count", "size")) and _is_count(value):
                    out[i, j] = dr.round_count(value, rules.round_counts_to)
                    changed = True
        rounded = ann.kind == "frequency" or any(s in ("count", "size") for s in stats)
        decision = dr.verdict_decision(masks, rules, rounded=rounded)
        if not decision.blocked:
            self._log_released(to_log)
        return decision, out, changed

    def _differs_slightly(self, key: tuple[Any, ...], records: np.ndarray | None) -> bool:
        if records is None:
            return False
        for prev in self.released.get(key, ()):
            if abs(prev.size - records.size) >= self.rules.min_cell_count:
                continue
            if prev is records or (prev.size == records.size and (prev == records).all()):
                continue  # the same records again: nothing to tell apart (setxor1d sorts)
            d = _xor_size(prev, records)
            if 0 < d < self.rules.min_cell_count:
                return True
        return False

    def _log_released(self, cells: list[tuple[tuple[Any, ...], np.ndarray | None]]) -> None:
        for key, records in cells:
            if records is None:
                continue
            kept = self.released.get(key)
            if kept is None:
                kept = self.released[key] = []
                self._released_version += 1
            # the very same array: record sets come from the tracker's memo and are never
            # changed, so identity is equality (and spares comparing the hashes again)
            if not any(p is records or (p.size == records.size and (p == records).all())
                       for p in kept):  # fmt: skip
                kept.append(records)
                del kept[:-4]
                self._released_version += 1
        while len(self.released) > 5000:
            self.released.pop(next(iter(self.released)))
            self._released_version += 1

    def _judge_figure(self, fig: Any) -> Decision | None:
        from matplotlib.collections import PathCollection
        from matplotlib.patches import Rectangle
        from matplotlib.text import Text

        texts = "\n".join(_figure_texts(fig, Text))
        finding = self.scanner.scan(texts, structure=False)
        if finding:
            return self._finding_decision(finding, "figure text")
        for ax in fig.axes:
            for coll in ax.collections:
                if isinstance(coll, PathCollection) and len(coll.get_offsets()) > 1:
                    offsets = np.asarray(coll.get_offsets(), dtype=float)
                    if self.tracker.touched or self.scanner.rows.matches(offsets.ravel()) or \
                            self.scanner.rows.matches(offsets[:, 0]):  # fmt: skip
                        return Decision.block(
                            "figure-points", "a scatter plot shows one point per record",
                            ADVICE["figure-points"])  # fmt: skip
            for line in ax.lines:
                for data in (line.get_xdata(), line.get_ydata()):
                    arr = np.asarray(data, dtype=float).ravel()
                    if arr.size >= 5 and self.scanner.rows.matches(arr):
                        return Decision.block(
                            "figure-points", "a line plot draws protected values record by record",
                            ADVICE["figure-points"])  # fmt: skip
            heights = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
            heights = [h for h in heights if np.isfinite(h)]
            widths = [p.get_width() for p in ax.patches if isinstance(p, Rectangle)]
            drawn = self._drawn_failing_cell([*heights, *(w for w in widths if np.isfinite(w))])
            if drawn is not None:
                return drawn
            if heights and all(float(h).is_integer() for h in heights):
                small = [h for h in heights if 0 < h < self.rules.min_cell_count]
                if small and self.tracker.touched:
                    return Decision.block(
                        dr.THRESHOLD,
                        f"{len(small)} bars or bins count fewer than "
                        f"{self.rules.min_cell_count} records",
                        "Use wider bins or merge categories.")  # fmt: skip
        return None

    def _drawn_failing_cell(self, bars: list[float]) -> Decision | None:
        """Blocked when a bar is as long as a cell that fails the rules in an aggregate this cell
        computed (`m = df.groupby(k).cost.mean(); ax.bar(m.index, m.values)`): drawn from its
        values, the bars have no provenance, and a group of one patient is that patient's value."""
        if not bars or not self.tracker.cell_aggregates:
            return None
        lengths = np.asarray(bars, dtype=float)
        lengths = lengths[lengths != 0]  # an empty bin draws nothing of a cell
        if not lengths.size:
            return None
        for ref in self.tracker.cell_aggregates:
            obj = ref()
            if not isinstance(obj, (pd.Series, pd.DataFrame)):
                continue
            decision, shown = self._judge_pandas(obj)
            if decision is None or decision.action is Action.RELEASED:
                continue
            values = np.asarray(obj, dtype=object).ravel()
            marks = np.asarray(shown, dtype=object).ravel() if shown is not obj else None
            for i, v in enumerate(values):
                failing = decision.blocked or (
                    marks is not None and i < marks.size and isinstance(marks[i], str)
                )
                if not failing or isinstance(v, (str, bytes)) or v is None:
                    continue
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    continue
                if x and np.isfinite(x) and bool(np.isclose(lengths, x, rtol=1e-9, atol=0).any()):
                    return Decision.block(
                        decision.rule, "a bar draws a cell that fails the disclosure rules",
                        decision.advice)  # fmt: skip
        return None

    # -- messages at send time ----------------------------------------------------------------
    def check(self, msg: dict[str, Any], channel: str) -> dict[str, Any] | None:
        """The message to send (possibly rewritten), or None to drop a withheld stream chunk."""
        msg_type = msg["header"]["msg_type"]
        if msg_type in PASS_TYPES:
            return msg
        with self._lock, self.tracker.quiet():
            try:
                if msg.get("buffers"):
                    self._check_buffers(msg)
                return self._check(msg, msg_type, channel)
            except Exception as exc:  # noqa: BLE001 - the guard fails closed, never open
                decision = Decision.block(
                    "guard-error", f"the guard could not judge this message ({type(exc).__name__})",
                    "Try a simpler output; report the rule and cell to the custodian.")  # fmt: skip
                msg["buffers"] = []
                self._replace(msg, msg_type, msg.get("content") or {}, decision)
                msg.setdefault("metadata", {})["bedside"] = decision.to_metadata()
                return msg

    def _check_buffers(self, msg: dict[str, Any]) -> None:
        """Binary buffers (widgets, comms) are scanned as text and as float64 rows."""
        for buf in msg["buffers"]:
            raw = bytes(buf)
            finding = self.scanner.scan(raw.decode("utf-8", "ignore"), structure=False)
            if finding is None and len(raw) % 8 == 0 and raw:
                arr = np.frombuffer(raw, dtype=np.float64)
                if self.scanner.rows.matches(arr[np.isfinite(arr)]):
                    finding = Finding("row-level", "binary buffer of protected values")
            if finding is not None:
                msg["buffers"] = []
                content = msg.get("content") or {}
                decision = self._finding_decision(finding, "buffer")
                self._replace(msg, msg["header"]["msg_type"], content, decision)
                msg.setdefault("metadata", {})["bedside"] = decision.to_metadata()
                return

    def _check(self, msg: dict[str, Any], msg_type: str, channel: str) -> dict[str, Any] | None:
        content = msg.get("content") or {}
        meta = msg.setdefault("metadata", {})
        cmeta = content.get("metadata") if isinstance(content.get("metadata"), dict) else {}
        prior = meta.get("bedside") or cmeta.get("bedside")  # set by judge_object
        if prior is None and msg_type == "execute_reply":
            prior = _expressions_decision(content)
        decision: Decision | None = None
        stream_key = ""
        if msg_type == "stream":
            stream_key = str(content.get("name", "stdout"))
            if stream_key in self._muted_streams:
                return None
        if msg_type == "error" or (
            msg_type == "execute_reply" and content.get("status") == "error"
        ):
            decision = self._scrub_error(content)
        if msg_type in OUTPUT_TYPES:
            if self.cell_block is None:
                self.cell_block = self._cell_events_block()
            if self.cell_block is not None and not (prior and prior.get("decision") == "blocked"):
                decision = self.cell_block
            data = content.get("data") or {}
            if "image/svg+xml" in data:
                decision = Decision.block(
                    "svg", "SVG output carries the plotted coordinates", ADVICE["svg"]
                )
        if decision is None or not decision.blocked:
            text = "\n".join(_strings(content))
            tail = ""
            if msg_type == "stream":
                tail = self._stream_tail.get(stream_key, "")
                if tail:
                    text = tail + text
                self._stream_tail[stream_key] = text[-STREAM_TAIL:]
            # Scanned even when a decision is already attached: metadata is not to be trusted.
            # (No text, nothing to find: a reply made of protocol words only, the usual
            # execute_reply.)
            delegated = (
                self.behind_sentry
                and len(text) >= SENTRY_SCAN_MIN_CHARS
                and not _has_date_run(text)
            )
            if not text:
                finding = None
            elif delegated:
                # The sentry scans this text for identifiers and PHI; the kernel keeps what
                # only it can check: rows and codes in record order, extractions, extremes.
                finding = self.scanner.scan(text, identifiers=False)
                if finding is None and tail:
                    # (a value split between the last chunk and this one: the sentry sees
                    # each message alone)
                    finding = self.scanner.scan(text[: len(tail) + STREAM_TAIL], structure=False)
            else:
                finding = self.scanner.scan(text)
            if finding is None and text:
                finding = self._sequence_finding(text)
            if finding is None and text and len(text) < SENTRY_SCAN_MIN_CHARS:
                finding = self._digest_finding(text)
            if finding is not None:
                decision = self._finding_decision(finding, channel)
            elif text and msg_type in OUTPUT_TYPES and self._extreme_in(text):
                decision = Decision.block(
                    dr.EXTREMES, "it shows the minimum or maximum of a protected column",
                    dr.ADVICE[dr.EXTREMES])  # fmt: skip
            elif text and msg_type in OUTPUT_TYPES and self._few_rows_in(text):
                decision = Decision.block(
                    "row-level", f"it shows a value of one of fewer than "
                    f"{self.rules.min_cell_count} protected records iterated in this cell",
                    ADVICE["row-level"])  # fmt: skip
            elif text and msg_type in OUTPUT_TYPES and self._running_total_in(text):
                decision = Decision.block(
                    dr.THRESHOLD, "it shows a row part-way down a cumulative sum of protected "
                    f"records: a total over fewer than {self.rules.min_cell_count} of them (or "
                    "over all but fewer than that)", dr.ADVICE[dr.THRESHOLD].format(
                        min=self.rules.min_cell_count))  # fmt: skip
            elif text and (fit := self._model_finding(text)) is not None:
                decision = fit
            elif text and msg_type in OUTPUT_TYPES and self._few_stats_in(text):
                decision = Decision.block(
                    dr.THRESHOLD, "it shows a statistic of an array taken out of fewer than "
                    f"{self.rules.min_cell_count} protected records (`.values`, `.to_numpy()`)",
                    dr.ADVICE[dr.THRESHOLD].format(min=self.rules.min_cell_count))  # fmt: skip
            elif delegated and decision is None and not prior:
                # Said in the kernel's claim, which the sentry records in the ledger
                # (`kernel_rule`): this layer did not look for identifiers in this text. No
                # digit in it: the sentry scans metadata with the content, and a digit anywhere
                # in a megabyte of words costs its PHI patterns a pass over all of it (~5 ms).
                decision = Decision.release(SENTRY_SCAN_RULE, SENTRY_SCAN_REASON)
        notes = self._text_notes or getattr(self.tracker.__dict__.get("models"), "cell_notes", [])
        if decision is None and not prior and notes and msg_type in OUTPUT_TYPES:
            decision = notes[0]  # the cell wrote a redacted table (or report) as text
        if decision is None:
            if prior:
                meta["bedside"] = prior
            return msg
        if decision.blocked:
            self._replace(msg, msg_type, content, decision)
            if msg_type == "stream":
                self._muted_streams.add(stream_key)
        if decision.blocked or not prior:
            meta["bedside"] = decision.to_metadata()
        return msg

    def _model_finding(self, text: str) -> Decision | None:
        """Numbers of a fit or test on too few records (`bedside.kernel._models`)."""
        models = self.tracker.__dict__.get("models")
        return None if models is None else models.judge_text(text)

    def _sequence_finding(self, text: str) -> Finding | None:
        self.sequences.sync_tables(getattr(self.scanner, "_frames", []))
        what = self.sequences.scan(text)
        return Finding("row-level", what) if what else None

    def _digest_finding(self, text: str) -> Finding | None:
        """An unkeyed digest of an identifier value (`md5(pat_id)`, `sha256(name)[:12]`)."""
        frames = getattr(self.scanner, "_frames", [])
        if not frames:
            return None
        if self._digests is None or self._digests[0] != len(frames):
            self._digests = (len(frames), DigestIndex(list(frames)))
        column = self._digests[1].find(text)
        return Finding("identifier", column, "digest") if column else None

    def _finding_decision(self, finding: Finding, channel: str) -> Decision:
        where = {"iopub": "output", "shell": "reply", "control": "reply",
                 "stdin": "input prompt"}.get(channel, channel)  # fmt: skip
        enc = f" ({finding.encoding}-encoded)" if finding.encoding else ""
        reason = {
            "identifier": f"the {where} contains an identifier value{enc} of column "
            f"'{finding.kind}'",
            "phi": f"the {where} contains personal data ({finding.kind})",
            "row-level": f"the {where} reproduces protected rows ({finding.kind})",
        }[finding.rule]
        return Decision.block(
            finding.rule,
            reason,
            ADVICE[finding.rule],
            details={"kind": finding.kind, "encoding": finding.encoding},
        )

    def _replace(self, msg: dict[str, Any], msg_type: str, content: dict[str, Any],
                 decision: Decision) -> None:  # fmt: skip
        bundle = notice_bundle(decision)
        text = bundle["text/plain"]
        if msg_type == "stream":
            msg["content"] = {"name": content.get("name", "stdout"), "text": text + "\n"}
        elif msg_type in ("execute_result", "display_data", "update_display_data"):
            new = {k: v for k, v in content.items() if k not in ("data", "metadata")}
            new["data"] = bundle
            new["metadata"] = {}
            msg["content"] = new
        elif msg_type == "error" or (
            msg_type == "execute_reply" and content.get("status") == "error"
        ):
            msg["content"] = {**content, "evalue": text, "traceback": [text]}
            msg["content"].pop("user_expressions", None)
            if msg_type == "execute_reply":
                msg["content"]["user_expressions"] = {}
                msg["content"]["payload"] = []
        elif msg_type == "execute_reply":
            blocked = {"status": "error", "ename": "Blocked", "evalue": text, "traceback": [text]}
            msg["content"] = {
                **content,
                "payload": [],
                "user_expressions": {k: blocked for k in content.get("user_expressions", {})},
            }
        elif msg_type == "inspect_reply":
            msg["content"] = {"status": "ok", "found": True, "data": {"text/plain": text},
                              "metadata": {}}  # fmt: skip
        elif msg_type == "complete_reply":
            msg["content"] = {**content, "matches": [], "metadata": {}}
        elif msg_type == "history_reply":
            msg["content"] = {"status": "ok", "history": []}
        elif msg_type in ("comm_open", "comm_msg", "comm_close"):
            msg["content"] = {k: content[k] for k in ("comm_id", "target_name", "target_module")
                              if k in content}  # fmt: skip
            msg["content"]["data"] = {"bedside": text}
        elif msg_type == "input_request":
            msg["content"] = {"prompt": text + "\n", "password": False}
        else:
            msg["content"] = {"status": "error", "ename": "Blocked", "evalue": text,
                              "traceback": [text]}  # fmt: skip

    # -- errors ------------------------------------------------------------------------------
    def _scrub_value(self, text: str) -> str:
        allowed = self.columns | set(re.findall(r"\w+", self.code))

        def quoted(m: re.Match[str]) -> str:
            inner = m.group(2)
            return (
                m.group(0)
                if inner in allowed or inner in self.code
                else f"{m.group(1)}<value>{m.group(1)}"
            )

        def number(m: re.Match[str]) -> str:
            return m.group(0) if m.group(0) in self.code else "<n>"

        out = _NUMBER.sub(number, _QUOTED.sub(quoted, text))
        if self.scanner.scan(out) is not None:
            return "<message hidden: it contained data values>"
        return out

    def _scrub_error(self, content: dict[str, Any]) -> Decision | None:
        if getattr(self.policy, "errors", "scrub") != "scrub":
            return None
        evalue = str(content.get("evalue", ""))
        scrubbed = self._scrub_value(evalue)
        frames = []
        hidden = 0
        for entry in content.get("traceback", []) or []:
            plain = _ANSI.sub("", str(entry))
            if evalue and evalue in plain:
                plain = plain.replace(evalue, scrubbed)
            if self.scanner.scan(plain) is not None:
                hidden += 1
                plain = "<traceback frame hidden: it showed data values>"
            frames.append(plain)
        changed = scrubbed != evalue or hidden
        content["evalue"] = scrubbed
        content["traceback"] = frames
        if not changed:
            return None
        return Decision.redact("error-scrub", "values were removed from the error message",
                               ADVICE["error"])  # fmt: skip


def _expressions_decision(content: dict[str, Any]) -> dict[str, Any] | None:
    """The first guard decision on the reply's user_expressions (each is formatted, and judged,
    like an output), so the reply itself says that a value was withheld."""
    exprs = content.get("user_expressions")
    for v in exprs.values() if isinstance(exprs, dict) else ():
        md = v.get("metadata") if isinstance(v, dict) else None
        found = md.get("bedside") if isinstance(md, dict) else None
        if isinstance(found, dict):
            return found
    return None


def _same_verdict_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Equal keys of `OutputGuard._verdicts` (see `_verdict_key`)."""
    for x, y in zip(a[0], b[0]):  # noqa: B905 - six parts each
        if x is not y:
            return False
    if a[5] is not b[5] or a[6] is not b[6] or a[7] != b[7]:  # rules, log, log version
        return False
    return _same(a[1:5], b[1:5])


def _kept_verdict_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The key as the memo keeps it: the values copied (a frame changed in place later
    compares unequal)."""
    return (*key[:4], np.array(key[4], copy=True), *key[5:])


def _lookup(counts: pd.Series | pd.DataFrame, row: Any, col: Any, fallback: int) -> int:
    try:
        v = counts.at[row, col] if col is not None else counts.get(row, None)  # type: ignore[union-attr]
    except (KeyError, ValueError, TypeError):
        v = None
    if isinstance(v, (pd.Series, pd.DataFrame, np.ndarray)):
        v = np.nanmin(np.asarray(v, dtype=float)) if np.size(v) else None
    try:
        return fallback if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return fallback


class _Grid:
    """The rows, columns and values of an aggregate, without building a frame for a Series."""

    __slots__ = ("index", "columns", "_obj")

    def __init__(self, index: pd.Index, columns: list[Any], obj: Any) -> None:
        self.index, self.columns, self._obj = index, columns, obj

    @classmethod
    def of(cls, obj: pd.DataFrame | pd.Series) -> Any:
        if isinstance(obj, pd.DataFrame):
            return obj
        # the labels `obj.to_frame()` would give: the Series' name, or 0
        return cls(obj.index, [0 if obj.name is None else obj.name], obj)

    def to_numpy(self, dtype: Any = None) -> np.ndarray:
        return self._obj.to_numpy(dtype=dtype).reshape(-1, 1)


def _smallest(counts: pd.Series | pd.DataFrame) -> int:
    """The fewest records behind any cell: the count of a cell whose own count is unknown."""
    if not counts.size:
        return 0
    # to_numpy() as stored, not np.asarray(counts, dtype=float): that goes through pandas'
    # attribute lookup and a conversion, forty times the cost for a small table of counts
    v = counts.to_numpy()
    if v.dtype.kind in "iub":
        return int(v.min())
    if v.dtype.kind == "f":  # the per-cell counts of a crosstab: as stored, no conversion
        return int(np.nanmin(v))
    return int(np.nanmin(np.asarray(counts, dtype=float)))


def _xor_size(a: np.ndarray, b: np.ndarray) -> int:
    """`np.setxor1d(a, b, assume_unique=True).size` for sorted record sets, without sorting their
    concatenation: |a| + |b| - 2|a & b|, the common part found by binary search."""
    if a.size and b.size and (a[1:] > a[:-1]).all() and (b[1:] > b[:-1]).all():
        i = np.searchsorted(b, a)
        i[i == b.size] = 0
        return int(a.size + b.size - 2 * np.count_nonzero(b[i] == a))
    return int(np.setxor1d(a, b, assume_unique=True).size)


def _frame_of(out: np.ndarray, index: Any, columns: Any) -> pd.DataFrame:
    """The redacted cells as a frame with the dtypes `infer_objects` would give them.

    A table of counts (all Python or numpy integers: rounded, none suppressed) is built as int64
    directly; an object frame plus `infer_objects` costs ten times as much."""
    flat = out.ravel()
    if flat.size and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                         for v in flat):  # fmt: skip
        try:
            return pd.DataFrame(out.astype(np.int64), index=index, columns=columns)
        except OverflowError:
            pass
    red = pd.DataFrame(out, index=index, columns=columns)
    try:
        return red.infer_objects()
    except (TypeError, ValueError):
        return red


def _cells_dict(counts: pd.DataFrame) -> dict[tuple[Any, Any], Any] | None:
    """{(row, column): count} of a frame with unique labels (else None: `_lookup` per cell)."""
    if not (counts.index.is_unique and counts.columns.is_unique):
        return None
    columns = _labels(counts.columns)
    try:
        return {
            (r, c): v
            for r, row in zip(_labels(counts.index), counts.to_numpy().tolist(), strict=True)
            for c, v in zip(columns, row, strict=True)
        }
    except TypeError:  # unhashable labels
        return None


def _top_dict(top: pd.DataFrame | None) -> dict[Any, dict[str, float]]:
    """`top.to_dict("index")` without pandas' per-row machinery."""
    if top is None:
        return {}
    cols = [str(c) for c in _labels(top.columns)]
    try:
        rows = zip(_labels(top.index), top.to_numpy().tolist(), strict=True)
        return {r: dict(zip(cols, row, strict=True)) for r, row in rows}
    except TypeError:  # unhashable labels
        return top.to_dict("index")


_FAMILY = {"mean": "sum", "size": "count"}


def _family(stat: Any) -> str:
    return _FAMILY.get(str(stat), str(stat))


def _column_stat(ann: Annotation, col: Any) -> Any:
    return label_statistic(ann, col)


def _extreme_percentile(stat: str, n: int, rules: dr.DisclosureRules) -> bool:
    """`q75%` over n records: fewer than `min_cell_count` records above or below it."""
    try:
        q = float(stat[1:-1]) / 100
    except ValueError:
        return False
    return rules.extremes == "suppress" and min(q, 1.0 - q) * n < rules.min_cell_count


def _labels(index: Any) -> list[Any]:
    """The labels of an index as iterating it gives them. A pyarrow-backed string index is read
    in one conversion: iterating it converts label by label, thirty times slower, and the guard
    reads the labels of every aggregate it judges several times."""
    if (
        isinstance(index, pd.Index)
        and not isinstance(index, pd.MultiIndex)
        and isinstance(index.dtype, pd.StringDtype)
    ):
        arrow = getattr(index.array, "_pa_array", None)
        if arrow is not None:
            out: list[Any] = arrow.to_pylist()
            if arrow.null_count:
                na = index.dtype.na_value
                out = [na if v is None else v for v in out]
            return out
    return list(index)


def _as_dict(series: pd.Series) -> dict[Any, Any]:
    try:
        return dict(zip(_labels(series.index), series.to_numpy(), strict=True))
    except TypeError:  # unhashable labels
        return {}


def _count(v: Any, fallback: Any) -> Any:
    if type(v) is int or isinstance(v, np.integer):  # the usual case: no pd.isna on a scalar
        return int(v)
    try:
        return fallback if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return fallback


def _positives(ann: Annotation, row: Any, col: Any) -> int | None:
    pos = ann.positives
    if pos is None:
        return None
    try:
        if isinstance(pos, pd.DataFrame):
            if col not in pos.columns:
                return None
            v = pos.at[row, col]
        else:
            v = pos.get(row, None)
    except (KeyError, ValueError, TypeError):
        return None
    return None if v is None or pd.isna(v) else int(v)


def _is_count(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return False


def _figure_texts(fig: Any, text_type: type) -> list[str]:
    """Every text a figure draws: its Text artists (titles, labels, ticks, annotations,
    legends) and the texts artists hold without listing them as children (a table's cells)."""
    out: list[str] = []
    for artist in fig.findobj():
        get = getattr(artist, "get_text", None)
        if get is None:
            continue
        text = get()
        if isinstance(text, text_type):  # `Cell.get_text()` is the cell's Text
            text = text.get_text()
        if isinstance(text, str) and text:
            out.append(text)
    return out


def _is_figure(obj: Any) -> bool:
    mod = type(obj).__module__
    if not mod.startswith("matplotlib"):
        return False
    from matplotlib.figure import Figure

    return isinstance(obj, Figure)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
