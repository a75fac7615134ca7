"""Forecasts that are checked (synscale.analysis.forecast): the backtest table against a hand computation, the
calibrated intervals' coverage on simulated studies with planted curves, and the exchange rate against a closed
form."""

from __future__ import annotations

import math
import re

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


def _samples(scales):
    """The samples a log-scale schedule puts through a model: 64 x 60 steps per doubling above 30 images."""
    return [64 * 60 * math.log2(s / 30) for s in scales]


def test_held_out_anchors_score_each_forecaster_by_hand():
    """A curve whose loss is a power law in samples seen (a log-scale schedule, as the paper's): the held-out
    models at x10 and x100 are forecast exactly by the law in samples seen and badly by Equation 2's law in D,
    whose forecast is checked against a hand least-squares fit; the intervals come from the backtests'
    calibration in each forecaster's own axis."""
    from synscale.analysis.forecast import LABELS, check_lines, forecast_tables, holdout_checks

    scales, held = [100, 200, 400, 800, 1600], [16000, 160000]
    law = lambda s: 5.0 * np.asarray(s, float) ** -0.6  # noqa: E731  (loss against samples seen)
    rng = np.random.default_rng(3)
    # the real curve and five others like it (the calibration needs backtests of several curves)
    scaling = table({name: (law(_samples(scales)) * np.exp(rng.normal(0, 0.01, 5))).tolist()
                     for name in ["real", *(f"c{i}" for i in range(5))]}, scales=scales)
    scaling["samples_seen"] = _samples(scales) * 6
    holdout = table({"real": law(_samples(held)).tolist()}, scales=held).assign(samples_seen=_samples(held))
    bt = backtests(scaling, 60000.0)
    assert set(bt.forecaster) == {"power_law", "saturating", "samples_seen"}
    ss = bt[bt.forecaster == "samples_seen"]
    row = ss[(ss.fitted_points == 3) & (ss.scale == 800)].iloc[0]  # its horizon in its own axis, samples seen
    assert row.horizon == pytest.approx(_samples([800])[0] / _samples([400])[0], rel=1e-12)
    checks = holdout_checks(scaling, holdout, 60000.0, bt, 0.9).set_index(["forecaster", "scale"])
    slope, intercept = np.polyfit(np.log(scales), np.log(scaling[scaling.source == "real"].loss), 1)
    for s in held:
        pl = checks.loc[("power_law", s)]
        assert pl.forecast == pytest.approx(math.exp(intercept + slope * math.log(s)), rel=1e-9)
        assert pl.scale_ratio == pytest.approx(s / 1600) and pl.horizon == pytest.approx(s / 1600)
        assert pl.log_error > 0.3  # the law in D forecasts gains the schedule's steps do not buy
        by_samples = checks.loc[("samples_seen", s)]
        assert abs(by_samples.log_error) < 0.03 and by_samples.inside
        assert by_samples.horizon == pytest.approx(_samples([s])[0] / _samples([1600])[0])
        assert by_samples.measured == pytest.approx(float(law(_samples([s]))[0]))
    # the law in D at x100 is past twice its longest backtest (x4): its interval's width is extrapolated; the law
    # in samples seen at x10 in D is x1.4 in samples, well inside its backtests
    assert not checks.loc[("power_law", 160000)].supported and checks.loc[("samples_seen", 16000)].supported
    summary = forecast_tables(_tmp_dir(), scaling, 60000.0, 0.9, holdout, {"classification": _samples([60000])[0]})
    lines = check_lines(summary)
    assert any(line.startswith("real at 16,000 (x10 its largest scale): measured") for line in lines)
    assert LABELS["samples_seen"] in lines[1]
    at = summary["at_reference_samples"]["classification/real/val"]
    assert at["loss"] == pytest.approx(float(law(_samples([60000]))[0]), rel=0.03)
    assert at["horizon"] == pytest.approx(_samples([60000])[0] / _samples([1600])[0])


def _tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_holdout_config_is_checked():
    """[forecast]: a source is real or a configuration (best / worst, picked after generation, are refused with
    what to do); only scales past a source's curve of three or more scales are held out, so a study whose scales
    are overridden keeps working."""
    from synscale.config import ConfigError, find_study, load_study

    path = find_study("fashion-mnist")
    cfg = load_study(path)
    assert cfg.forecast.holdout == [4000, 60000] and cfg.holdout_scales("real") == [4000, 60000]
    assert cfg.holdout_scales("mt-in-captions-g1") == []
    assert load_study(path, overrides=["forecast.holdout=[300, 4000]"]).holdout_scales("real") == [4000]
    assert load_study(path, overrides=["scales=[400]"]).holdout_scales("real") == []
    named = load_study(path, overrides=['forecast.sources=["real", "ld-classname-g2"]', 'curves=["ld-classname-g2"]'])
    assert named.holdout_scales("ld-classname-g2") == [4000, 60000]
    for override, says in (('forecast.sources=["best"]', "best / worst are picked after generation"),
                           ('forecast.sources=["nope"]', "'nope' is not 'real' or a [[synthetic]] configuration"),
                           ("forecast.holdout=[5000, 4000]", "strictly increasing")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_study(find_study("fashion-mnist"), overrides=[override])


def test_a_rate_read_inside_the_real_range_has_a_paired_bootstrap_interval():
    """Inside the real range the interval comes from redrawing the test examples of both curves together: a
    curve whose every example loss at D is the real curve's at D/2 is worth exactly 0.5 in every replicate (a
    degenerate interval: unpaired redraws would spread it), and a noisy copy gets an interval around its point."""
    from synscale.analysis.forecast import Bootstrap
    from synscale.analysis.run import CurveExamples

    rng = np.random.default_rng(5)
    scales, n = [100, 200, 400, 800], 2000
    real_ex = {s: rng.gamma(2.0, 0.5 * (s / 100) ** -0.3, n) for s in scales}  # per-example losses, mean 1.0 D^-0.3
    twin = {2 * s: real_ex[s] for s in scales[:3]}  # at 200, 400, 800: the real examples of 100, 200, 400
    noisy = {s: real_ex[s // 2] * np.exp(rng.normal(0, 0.3, n)) for s in (200, 400, 800)}
    rows = [{"source": src, "config": src, "eval_set": "val", "scale": s, "run": 0, "example_loss": e,
             "label": np.zeros(n, int)} for src, d in (("real", real_ex), ("twin", twin), ("noisy", noisy))
            for s, e in d.items()]
    examples = pd.DataFrame(rows)
    scaling = pd.DataFrame([{"task": "classification", "source": r["source"], "config": r["source"], "eval_set": "val",
                             "scale": r["scale"], "run": 0, "loss": float(r["example_loss"].mean()), "top1": 0.5,
                             "real_images": r["scale"] if r["source"] == "real" else 0} for r in rows])
    ex = exchange_rates(scaling, 60000.0, None, Bootstrap(CurveExamples(examples), 200, 0, 0.9)).set_index(
        ["source", "scale"])
    for s in (200, 400, 800):
        twin_row = ex.loc[("twin", s)]
        assert twin_row.how == "interpolated" and twin_row.rate == pytest.approx(0.5)
        assert twin_row.rate_lo == pytest.approx(0.5) and twin_row.rate_hi == pytest.approx(0.5)
        row = ex.loc[("noisy", s)]
        if row.how == "interpolated":
            assert row.rate_lo < row.rate < row.rate_hi and row.rate_hi - row.rate_lo > 0.01


def test_per_class_rates_read_each_class_against_its_own_real_curve():
    """exchange_per_class: a class whose synthetic curve is its real curve at D/4 is worth 0.25, another's at D/2
    is worth 0.5; a mix is not rated per class."""
    from synscale.analysis.forecast import class_exchange_rates

    scales = [100, 200, 400, 800, 1600]
    law = {0: lambda d: 2.0 * d**-0.3, 1: lambda d: 1.0 * d**-0.5}
    rows = []
    for ci, f in law.items():
        for s in scales:
            rows.append({"source": "real", "config": "real", "eval_set": "val", "scale": s, "run": 0, "class_index": ci,
                         "class_name": f"c{ci}", "loss": f(s)})
            shift = 4 if ci == 0 else 2
            if s >= 400:
                rows.append({"source": "syn", "config": "syn", "eval_set": "val", "scale": s, "run": 0,
                             "class_index": ci, "class_name": f"c{ci}", "loss": f(s / shift)})
                rows.append({"source": "mix", "config": "mix", "eval_set": "val", "scale": s, "run": 0,
                             "class_index": ci, "class_name": f"c{ci}", "loss": f(s)})
    pc = class_exchange_rates(pd.DataFrame(rows), 60000.0, {"mix"})
    assert set(pc.source) == {"syn"}
    got = pc.set_index(["class_index", "scale"]).rate
    for s in (400, 800, 1600):
        assert got[(0, s)] == pytest.approx(0.25) and got[(1, s)] == pytest.approx(0.5)


def test_a_rate_forecast_past_both_curves_follows_their_laws():
    """rate_forecast: a curve equal to the real one at D/4 is forecast to stay worth 0.25 at x10; one whose law
    falls half as fast loses worth as D grows (its rate at x10 below its rate at the largest scale)."""
    from synscale.analysis.forecast import rate_forecast

    d = np.array(SCALES, float)
    scaling = table({"real": (2.0 * d**-0.4).tolist(), "quarter": (2.0 * (d / 4) ** -0.4).tolist(),
                     "slow": (2.0 * (d / 4) ** -0.2).tolist()})
    assert rate_forecast(scaling, "classification", "quarter", "val", 32000) == pytest.approx(0.25)
    slow_now = exchange_rates(scaling, 60000.0).set_index(["source", "scale"]).rate[("slow", 3200)]
    assert rate_forecast(scaling, "classification", "slow", "val", 32000) < slow_now
    assert rate_forecast(scaling, "classification", "absent", "val", 32000) is None


def test_clip_rates_read_against_the_real_pairs_curve():
    """CLIP's real curve is its real pairs' (every model on real images only), whatever its name; mixed pairs (every
    caption with its real and its synthetic image: R = S = D) are rated by what the synthetic images add: a mixed
    curve at the real curve's loss of 2D is worth (2D - D) / D = 1."""
    from synscale.analysis.forecast import real_sources

    d = np.array(SCALES, float)
    rows = []
    for source, losses, real, syn in (("clip-real", 3.0 * d**-0.3, d, 0 * d), ("clip-synthetic", 3.0 * (d / 2) ** -0.3, 0 * d, d),
                                      ("clip-mixed", 3.0 * (2 * d) ** -0.3, d, d)):
        for s, loss, r, y in zip(SCALES, losses, real, syn, strict=True):
            rows.append({"task": "clip", "source": source, "config": source, "eval_set": "val", "scale": s, "run": 0,
                         "loss": float(loss), "top1": 0.5, "real_images": int(r), "synthetic_images": int(y)})
    scaling = pd.DataFrame(rows)
    assert real_sources(scaling) == {"clip": "clip-real"}
    ex = exchange_rates(scaling, {"clip": 3200.0}).set_index(["source", "scale"])
    for s in SCALES[1:-1]:  # read off the real curve inside its range
        assert ex.rate[("clip-synthetic", s)] == pytest.approx(0.5) and ex.how[("clip-synthetic", s)] == "interpolated"
    for s in SCALES[:-1]:
        assert ex.rate[("clip-mixed", s)] == pytest.approx(1.0)
