"""Forecasts that are checked (synscale.analysis.forecast): the backtest table against a hand computation, the
calibrated intervals' coverage on simulated studies with planted curves, and the exchange rate against a closed
form."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from synscale.analysis.forecast import Calibration, backtests, band, calibration, coverage, exchange_rates

SCALES = [100, 200, 400, 800, 1600, 3200]


def table(curves: dict[str, list[float]], scales=SCALES, task="classification", eval_set="val", real_images=None):
    rows = []
    for source, losses in curves.items():
        for s, loss in zip(scales, losses, strict=True):
            n_real = s if source == "real" else (real_images or {}).get(source, 0)
            rows.append({"task": task, "source": source, "config": source, "eval_set": eval_set, "scale": s, "run": 0,
                         "loss": loss, "top1": 0.5, "real_images": n_real})
    return pd.DataFrame(rows)


def test_a_backtest_is_the_fit_on_the_first_scales_forecasting_the_next():
    rng = np.random.default_rng(0)
    losses = (2.0 * np.array(SCALES, float) ** -0.3 * np.exp(rng.normal(0, 0.02, len(SCALES)))).tolist()
    bt = backtests(table({"real": losses}), 60000.0)
    pl = bt[bt.forecaster == "power_law"]
    # fitted on 3, 4, 5 scales: 3 + 2 + 1 forecasts; the saturating form from 4 scales: 2 + 1
    assert len(pl) == 6 and len(bt[bt.forecaster == "saturating"]) == 3
    # by hand: least squares of log L on log D over the first three scales, forecast at 3,200
    slope, intercept = np.polyfit(np.log(SCALES[:3]), np.log(losses[:3]), 1)
    want = math.exp(intercept + slope * math.log(3200))
    row = pl[(pl.fitted_points == 3) & (pl.scale == 3200)].iloc[0]
    assert row.forecast == pytest.approx(want, rel=1e-9) and row.horizon == pytest.approx(8.0)
    assert row.log_error == pytest.approx(math.log(losses[-1]) - math.log(want), abs=1e-12)
    assert row.fitted_max == 400 and row.actual == losses[-1]
    assert band(np.array([2.0, 4.0, 10.0, 150.0])).tolist() == [1, 2, 3, 7]


def _simulated_study(rng, n_curves=40, noise=0.03):
    """Planted curves L = a D^-k (a, k drawn), each scale's loss off by log-normal noise of sd `noise`."""
    curves = {}
    for i in range(n_curves):
        a, k = rng.uniform(1.0, 4.0), rng.uniform(0.05, 0.5)
        curves[f"c{i}"] = (a * np.array(SCALES, float) ** -k * np.exp(rng.normal(0, noise, len(SCALES)))).tolist()
    return table(curves)


@pytest.mark.parametrize("seed", [0, 1])
def test_calibrated_intervals_cover_what_they_say(seed):
    """On simulated studies with planted power laws, the leave-one-curve-out coverage of the 90% intervals is
    within 80-97%, for both forecasters, and the width grows with the horizon."""
    bt = backtests(_simulated_study(np.random.default_rng(seed)), 60000.0)
    for forecaster in ("power_law", "saturating"):
        cov, judged = coverage(bt[bt.forecaster == forecaster], 0.9)
        assert judged > 50 and 0.80 <= cov <= 0.97, (forecaster, cov)
    cal = Calibration(bt[bt.forecaster == "power_law"], 0.9)
    assert cal.half_width(2.0) < cal.half_width(8.0)  # farther out, wider
    assert math.isnan(cal.half_width(1000.0))  # past twice the longest backtest: not supported
    table_ = calibration(bt, 0.9)
    assert set(table_.forecaster) == {"power_law", "saturating"} and (table_.backtests > 0).all()


def test_the_exchange_rate_of_a_curve_shifted_by_a_factor_is_that_factor():
    """Synthetic L(D) = real L(D / 4): each synthetic image is worth a quarter of a real one, at every scale,
    read off the real curve inside its range and from its power law outside it."""
    real = [2.0 * s ** -0.5 for s in SCALES]
    syn = [2.0 * (s / 4) ** -0.5 for s in SCALES]  # the loss real data reaches at a quarter of the images
    ex = exchange_rates(table({"real": real, "syn": syn}), 60000.0)
    assert len(ex) == len(SCALES)
    assert np.allclose(ex.rate, 0.25, rtol=1e-9)
    assert ex.how.tolist() == ["forecast", "forecast"] + ["interpolated"] * 4  # 25 and 50: below the real curve
    # a curve better than real: worth more than one real image each, from the power law past the real range
    better = [2.0 * (s * 3) ** -0.5 for s in SCALES]
    ex = exchange_rates(table({"real": real, "better": better}), 60000.0)
    assert np.allclose(ex.rate, 3.0, rtol=1e-9) and ex.how.iloc[-1] == "forecast"


def test_a_mix_is_rated_by_what_its_added_images_are_worth():
    """A mix of R = 100 real images and D - 100 synthetic ones with the real curve's loss at 100 + (D - 100) / 2:
    its added images are worth half a real one each."""
    real = [2.0 * s ** -0.5 for s in SCALES]
    mix_scales = [200, 400, 800, 1600]
    mix = [2.0 * (100 + (s - 100) / 2) ** -0.5 for s in mix_scales]
    t = pd.concat([table({"real": real}), table({"mix": mix}, scales=mix_scales, real_images={"mix": 100})])
    ex = exchange_rates(t, 60000.0)
    assert np.allclose(ex.rate, 0.5, rtol=1e-9) and (ex.real_images == 100).all()


def test_flat_and_rising_curves_backtest_without_failing():
    """A curve that does not fall (flat, or rising: a configuration that gets worse) is backtested like any other;
    its errors are what they are, and its losses above the real curve's range are rated by the real power law."""
    flat = [1.0] * len(SCALES)
    rising = [0.5 * 1.1**i for i in range(len(SCALES))]
    real = [2.0 * s ** -0.5 for s in SCALES]
    t = table({"real": real, "flat": flat, "rising": rising})
    bt = backtests(t, 60000.0)
    assert set(bt.source) == {"real", "flat", "rising"} and np.isfinite(bt.log_error).all()
    ex = exchange_rates(t, 60000.0)
    assert len(ex) == 2 * len(SCALES) and set(ex.how) <= {"interpolated", "forecast"}
    flat_ex = ex[ex.source == "flat"]
    assert (flat_ex.how == "forecast").all() and np.allclose(flat_ex.real_scale, 4.0)  # 2 D^-0.5 = 1 at D = 4
