"""Figures the benchmark renderers compute from the JSON (not typed into prose)."""

import math

from bench.render.finetune import tokens_to_reach


def test_tokens_to_reach_recovers_an_exact_power_law():
    # ppl = 20 + 100 * T^-0.5: the excess over 20 reaches 10 at T = 100; fit on the points inside the window only
    curve = [[t, 20 + 100 * t**-0.5] for t in (1, 100, 144, 196, 256, 400)]
    curve[0][1] = 1e6  # a warm-up transient outside the window must not enter the fit
    t, slope = tokens_to_reach(curve, 30.0, floor=20.0)
    assert math.isclose(slope, -0.5, rel_tol=1e-9) and math.isclose(t, 100.0, rel_tol=1e-9)


def test_tokens_to_reach_refuses_too_few_points_or_a_rising_curve():
    assert tokens_to_reach([[1, 50.0], [100, 40.0], [200, 35.0]], 30.0) is None  # one point in the window
    assert tokens_to_reach([[t, 10.0 + t] for t in (30, 40, 50, 60, 100)], 5.0) is None
