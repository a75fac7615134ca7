"""The closed loop's allocator (synscale.analysis.allocate) against hand-solved cases: the budget goes where the
marginal gain is."""

from __future__ import annotations

import math

import pytest

from synscale.analysis.allocate import ClassCurve, allocate


def _curve(ci, a, k, config="g", k_lo=math.nan, classes=2, d_ref=1000.0):
    # L = a (C n / D_I)^-k, so perf = -log a
    return ClassCurve(ci, config, k, -math.log(a), d_ref, classes, k_lo)


def test_two_classes_get_what_equal_marginal_gains_say():
    """L_i = a_i (2 n_i / D)^-k: at the optimum the marginal gains a_i k n_i^(-k-1) are equal, so
    n_1 / n_2 = (a_1 / a_2)^(1/(k+1)); with 100 images each already and a budget of 1,000 the greedy
    allocation is that optimum to within a step."""
    k, a1, a2 = 0.5, 4.0, 1.0
    curves = [_curve(0, a1, k), _curve(1, a2, k)]
    out = allocate(curves, {(0, "g"): 100, (1, "g"): 100}, budget=1000, step=1).set_index("class_index")
    total = 1200
    ratio = (a1 / a2) ** (1 / (k + 1))
    n1 = total * ratio / (1 + ratio)
    assert out.added.sum() == 1000
    assert abs((100 + out.added[0]) - n1) <= 1.0
    assert out.loss_after[0] < out.loss_before[0] and out.loss_after[1] < out.loss_before[1]


def test_a_class_that_does_not_scale_gets_nothing_while_others_do():
    """Class 1's k interval reaches 0 (k_lo < 0): it gets no image while class 0's lies above 0, even where its
    point forecast would gain more; if no class's interval lies above 0, every class is eligible again."""
    curves = [_curve(0, 1.0, 0.3, k_lo=0.2), _curve(1, 5.0, 0.3, k_lo=-0.1)]
    out = allocate(curves, {(0, "g"): 50, (1, "g"): 50}, budget=200, step=10).set_index("class_index")
    assert out.added[0] == 200 and out.added[1] == 0 and not out.eligible[1] and "reaches 0" in out.why[1]
    flat = [_curve(0, 1.0, 0.3, k_lo=-0.2), _curve(1, 5.0, 0.3, k_lo=-0.1)]
    assert allocate(flat, {(0, "g"): 50, (1, "g"): 50}, budget=200, step=10).added.sum() == 200


def test_a_class_is_drawn_by_the_configuration_that_forecasts_lower():
    """Per class the configuration may differ: class 0 is drawn better by g2 (its curve lies below g1's at every
    count), so its images come from g2, with no pilot images of g2 needed beyond one step; the budget is spent
    in whole steps and never over."""
    curves = [_curve(0, 2.0, 0.4, "g1"), _curve(0, 1.0, 0.4, "g2"), _curve(1, 2.0, 0.4, "g1")]
    out = allocate(curves, {(0, "g1"): 100, (0, "g2"): 100, (1, "g1"): 100}, budget=95, step=10)
    got = {(r.class_index, r.config): r.added for r in out.itertuples()}
    assert got[(0, "g1")] == 0 and got[(0, "g2")] > 0 and sum(got.values()) == 90
    with pytest.raises(ValueError, match="budget"):
        allocate(curves, {}, budget=-1)
