"""Statistical disclosure rules as pure functions, shared by the in-kernel guard and the sentry.

The rules and their defaults follow ACRO (SACRO project, `acro/acro_tables.py`): a cell is
disclosive when fewer than `min_cell_count` records stand behind it (`agg_threshold`), when its
largest `dominance_n` contributions make up more than `dominance_k` of its total (`agg_nk`), when
the total minus the two largest contributions is less than `p_ratio` times the largest
(`agg_p_percent`, which treats an all-zero or single-contributor cell as disclosive when zeros
are), and, for frequency tables, when a count is zero and zeros are disclosive. Extremes (min and
max of a protected column) are single records' values and are suppressed when the policy says so.
Counts that pass are rounded to `round_counts_to`.

No Jupyter or pandas imports: inputs are plain sequences, so the sentry can reuse these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bedside.policy.decision import Decision
from bedside.policy.model import DisclosureRules

# Rule identifiers carried in Decision.rule and in CellVerdict.mask.
THRESHOLD = "threshold"
ZEROS = "zeros"
DOMINANCE = "dominance"
P_RATIO = "p-ratio"
CLASS = "class-disclosure"
EXTREMES = "extremes"
DIFFERENCING = "differencing"
ROUNDING = "rounding"
# A model fit with fewer residual degrees of freedom than `min_degrees_of_freedom` (ACRO's
# `safe_dof_threshold`, its MinimumDoFCheck).
DEGREES_OF_FREEDOM = "degrees-of-freedom"

# The statistic of a count of missing values per column (`df.isna().sum()`): `record_count_fails`.
MISSING = "missing"
FREQUENCY_STATISTICS = frozenset({"count", "size", "frequency", "nunique"})
MAGNITUDE_STATISTICS = frozenset({"sum", "mean"})
EXTREME_STATISTICS = frozenset({"min", "max", "first", "last"})
# A standard deviation (variance, standard error) needs `min_cell_count` degrees of freedom,
# n - 1, as ACRO's `safe_dof_threshold` (10) asks: one record more than a mean.
DISPERSION_STATISTICS = frozenset({"std", "var", "sem"})

ADVICE = {
    THRESHOLD: "Group into fewer, larger categories (for example age bands) so every cell has "
    "at least {min} records, or drop the small groups.",
    ZEROS: "Empty cells reveal that nobody in a group has a value; merge categories or report "
    "the table without the empty cells.",
    DOMINANCE: "One or two records dominate this total; report a median or a count instead, or "
    "merge groups.",
    P_RATIO: "The largest contributions can be estimated from this total; report a median or "
    "a count instead, or merge groups.",
    CLASS: "Everyone (or almost everyone) in a group shares this value, which discloses it for "
    "each member; merge groups or report the overall rate.",
    EXTREMES: "Minimum and maximum are single patients' values; report percentiles "
    "(e.g. quantile([0.05, 0.95])) instead.",
    DEGREES_OF_FREEDOM: "Estimated from so few records, these numbers reproduce them: fit on "
    "at least {dof} more records than the model has parameters (a wider selection, fewer "
    "terms), and show coefficients and tests, not fitted values or residuals.",
    DIFFERENCING: "This result differs from an earlier one by fewer than {min} records, so "
    "subtracting them would reveal those records; widen the selection.",
}


# The policy's disclosure section is the one definition of the rules and their (ACRO) defaults;
# `Rules()` gives those defaults where no policy is loaded (tests, the ACRO comparison).
Rules = DisclosureRules


@dataclass(frozen=True)
class CellVerdict:
    """The verdict on a table: one decision, and per cell the rules it fails (empty = safe)."""

    decision: Decision
    mask: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def failing(self) -> list[int]:
        return [i for i, m in enumerate(self.mask) if m]


def round_count(n: float, base: int) -> int:
    """Round a count to the nearest multiple of `base` (half up); base <= 1 leaves it."""
    if base <= 1:
        return int(n)
    return int(math.floor(n / base + 0.5) * base)


def nk_dominance(contributions: Sequence[float], n: int, k: float) -> bool:
    """ACRO `agg_nk`: True (disclosive) when the n largest make up more than k of the total."""
    vals = sorted((abs(float(v)) for v in contributions), reverse=True)
    total = sum(vals)
    if total <= 0:
        return False
    return sum(vals[:n]) / total > k


def p_ratio_violated(contributions: Sequence[float], p: float, zeros_disclosive: bool) -> bool:
    """ACRO `agg_p_percent`: (total - two largest) / largest < p is disclosive."""
    vals = sorted((abs(float(v)) for v in contributions), reverse=True)
    total = sum(vals)
    if total <= 0 or len(vals) <= 1:
        return zeros_disclosive
    return (total - vals[0] - vals[1]) / vals[0] < p


def top_summary_fails(
    top: Sequence[float], total: float, count: int, rules: DisclosureRules
) -> tuple[str, ...]:
    """Dominance and p-ratio from a cell's largest contributions (descending) and its total.

    Lets callers with large cells pass only the top few values instead of every contribution.
    """
    fails: list[str] = []
    top = [abs(float(v)) for v in top]
    total = abs(float(total))
    if total > 0 and sum(top[: rules.dominance_n]) / total > rules.dominance_k:
        fails.append(DOMINANCE)
    if total <= 0 or count <= 1:
        if rules.zeros_disclosive:
            fails.append(P_RATIO)
    elif len(top) >= 2 and (total - top[0] - top[1]) / top[0] < rules.p_ratio:
        fails.append(P_RATIO)
    return tuple(fails)


def binary_class_fails(positives: int, count: int, rules: DisclosureRules) -> tuple[str, ...]:
    """A proportion of a 0/1 attribute is a frequency table in disguise (group x attribute).

    Both the members with the attribute and those without must meet the threshold; a group in
    which nobody or everybody has it discloses the attribute of each member (class disclosure).
    """
    negatives = count - positives
    fails: list[str] = []
    for part in (positives, negatives):
        if part == 0:
            if rules.zeros_disclosive:
                fails.append(CLASS)
        elif part < rules.min_cell_count:
            fails.append(THRESHOLD)
    return tuple(dict.fromkeys(fails))


def record_count_fails(count: int, total: int, rules: DisclosureRules) -> tuple[str, ...]:
    """A count of records with a property that is not a patient's attribute (a missing value):
    judged like any count, as ACRO judges a one-cell frequency table without its zeros rule.

    A non-zero count below the threshold fails, and so does its complement (the table's size is
    shown by `len(df)`, so `total - count` is as good as printed). Zero passes: that no record
    lacks a value says nothing of any patient, unlike nobody in a group having a diagnosis
    (`binary_class_fails`).
    """
    fails = [THRESHOLD for part in (count, total - count) if 0 < part < rules.min_cell_count]
    return tuple(dict.fromkeys(fails))


def check_cells(
    counts: Sequence[int],
    *,
    values: Sequence[Sequence[float]] | None = None,
    rules: DisclosureRules,
    statistic: str = "count",
) -> CellVerdict:
    """Judge every cell of a table from the number of records behind it.

    `counts[i]` is the number of records behind cell i; `values[i]` (magnitude tables) are that
    cell's individual contributions, used for dominance and p-ratio on sums and means. Returns a
    blocked decision when no cell is safe, redacted when some are suppressed or counts are
    rounded, released otherwise.
    """
    mask: list[tuple[str, ...]] = []
    for i, n in enumerate(counts):
        n = int(n)
        fails: list[str] = []
        if statistic in FREQUENCY_STATISTICS:
            if n == 0:
                if rules.zeros_disclosive:
                    fails.append(ZEROS)
            elif n < rules.min_cell_count:
                fails.append(THRESHOLD)
        else:
            if n < rules.min_cell_count or (
                statistic in DISPERSION_STATISTICS and n - 1 < rules.min_cell_count
            ):
                fails.append(THRESHOLD)
            if statistic in EXTREME_STATISTICS and rules.extremes == "suppress":
                fails.append(EXTREMES)
            if statistic in MAGNITUDE_STATISTICS and values is not None and n > 0:
                cell = values[i]
                if nk_dominance(cell, rules.dominance_n, rules.dominance_k):
                    fails.append(DOMINANCE)
                if p_ratio_violated(cell, rules.p_ratio, rules.zeros_disclosive):
                    fails.append(P_RATIO)
        mask.append(tuple(dict.fromkeys(fails)))
    return CellVerdict(
        verdict_decision(mask, rules, rounded=statistic in FREQUENCY_STATISTICS), mask
    )


def verdict_decision(
    mask: Sequence[tuple[str, ...]], rules: DisclosureRules, *, rounded: bool = False
) -> Decision:
    """Blocked if every cell fails, redacted if some fail or counts get rounded."""
    failing = [m for m in mask if m]
    fired = sorted({rule for m in failing for rule in m})
    if mask and len(failing) == len(mask):
        rule = fired[0] if len(fired) == 1 else fired[0]
        return Decision.block(
            rule,
            f"every cell of this result fails the disclosure rules ({', '.join(fired)})",
            ADVICE[rule].format(min=rules.min_cell_count),
            details={"rules": fired},
        )
    if failing:
        return Decision.redact(
            fired[0],
            f"{len(failing)} of {len(mask)} cells suppressed ({', '.join(fired)})",
            ADVICE[fired[0]].format(min=rules.min_cell_count),
            details={"rules": fired},
        )
    if rounded and rules.round_counts_to > 1:
        return Decision.redact(
            ROUNDING,
            f"counts rounded to the nearest {rules.round_counts_to}",
            details={"base": rules.round_counts_to},
        )
    return Decision.release("disclosure")


def differencing(
    previous: Sequence[frozenset[object] | set[object]],
    current: frozenset[object] | set[object],
    min_cell_count: int,
) -> int | None:
    """Index of an earlier record set that differs from `current` by 1..min_cell_count-1 records.

    Releasing both would let the difference reveal those few records (the classic
    `sum(all) - sum(all but one)` attack). None when no earlier set is that close.
    """
    for i, prev in enumerate(previous):
        d = len(prev.symmetric_difference(current))
        if 0 < d < min_cell_count:
            return i
    return None
