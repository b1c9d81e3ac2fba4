"""The disclosure rules as pure functions (`bedside.policy.disclosure`), against ACRO's meaning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bedside.policy import disclosure as dr
from bedside.policy.decision import Action

RULES = dr.Rules()


def test_threshold_and_zeros_on_frequency_tables() -> None:
    v = dr.check_cells([25, 9, 0, 10], rules=RULES, statistic="count")
    assert v.mask == [(), (dr.THRESHOLD,), (dr.ZEROS,), ()]
    assert v.decision.action is Action.REDACTED and v.failing == [1, 2]
    lax = dr.Rules(zeros_disclosive=False)
    assert dr.check_cells([0, 30], rules=lax).mask == [(), ()]


def test_all_cells_failing_blocks() -> None:
    v = dr.check_cells([1, 2, 3], rules=RULES)
    assert v.decision.blocked and v.decision.rule == dr.THRESHOLD
    assert "records" in v.decision.advice


def test_counts_that_pass_are_rounded() -> None:
    v = dr.check_cells([12, 40], rules=RULES)
    assert v.decision.action is Action.REDACTED and v.decision.rule == dr.ROUNDING
    assert [dr.round_count(n, 5) for n in (12, 13, 40, 0)] == [10, 15, 40, 0]
    assert dr.round_count(7, 1) == 7


def test_dominance_and_p_ratio_on_sums() -> None:
    dominated = [1000.0, 900.0] + [1.0] * 20
    spread = [10.0 + i for i in range(20)]
    v = dr.check_cells([22, 20], values=[dominated, spread], rules=RULES, statistic="sum")
    assert dr.DOMINANCE in v.mask[0] and dr.P_RATIO in v.mask[0]
    assert v.mask[1] == ()


def test_p_ratio_matches_acro_definition() -> None:
    # ACRO agg_p_percent: (total - top1 - top2) / top1 < p is disclosive.
    assert dr.p_ratio_violated([100, 50, 5, 4], 0.1, True)  # 9/100 < 0.1
    assert not dr.p_ratio_violated([100, 50, 6, 5], 0.1, True)  # 11/100
    assert dr.p_ratio_violated([0, 0, 0], 0.1, True)  # all zero: zeros are disclosive
    assert not dr.p_ratio_violated([0, 0, 0], 0.1, False)


def test_extremes_and_class_disclosure() -> None:
    v = dr.check_cells([100], rules=RULES, statistic="max")
    assert v.mask == [(dr.EXTREMES,)]
    assert dr.check_cells([100], rules=dr.Rules(extremes="allow"), statistic="max").mask == [()]
    assert dr.binary_class_fails(0, 50, RULES) == (dr.CLASS,)
    assert dr.binary_class_fails(4, 50, RULES) == (dr.THRESHOLD,)
    assert dr.binary_class_fails(50, 50, RULES) == (dr.CLASS,)
    assert dr.binary_class_fails(20, 50, RULES) == ()


def test_differencing() -> None:
    everyone = frozenset(range(100))
    assert dr.differencing([everyone], everyone - {7}, 10) == 0
    assert dr.differencing([everyone], frozenset(range(50)), 10) is None
    assert dr.differencing([everyone], everyone, 10) is None


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30))
def test_frequency_verdict_is_consistent(counts: list[int]) -> None:
    v = dr.check_cells(counts, rules=RULES)
    for n, m in zip(counts, v.mask, strict=True):
        assert bool(m) == (n < RULES.min_cell_count)
    if all(v.mask):
        assert v.decision.blocked
    else:
        assert v.decision.action is Action.REDACTED


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=40))
def test_top_summary_agrees_with_full_contributions(values: list[float]) -> None:
    ordered = sorted(values, reverse=True)
    # the total summed in the order the full-contribution functions sum it: at a ratio exactly
    # on a threshold ([0.004, 0.004, 0.08, 0.0625]: p-ratio 0.1) another order rounds across it
    fails = dr.top_summary_fails(ordered[:2], sum(ordered), len(values), RULES)
    assert (dr.DOMINANCE in fails) == dr.nk_dominance(values, 2, 0.9)
    assert (dr.P_RATIO in fails) == dr.p_ratio_violated(values, 0.1, True)
