import numpy as np
import pytest

from synscale.analysis.fit import bootstrap_fit, bootstrap_fit_points, fit_power_law
from synscale.config import ScheduleConfig
from synscale.train.schedule import PAPER, lr_at, total_iters, warmup_iters


def test_log_scale_rule_paper_points():
    assert [total_iters(d, PAPER) for d in (1_000_000, 2_000_000, 4_000_000)] == [95_000, 190_000, 285_000]
    assert [warmup_iters(d, PAPER) for d in (1_000_000, 2_000_000, 4_000_000)] == [10_000, 20_000, 30_000]


def test_rule_scaled_to_a_study_is_linear_in_log2():
    rule = ScheduleConfig(zero_scale=500, iters_per_doubling=100, warmup_per_doubling=10)
    its = [total_iters(d, rule) for d in (1000, 2000, 4000, 8000)]
    assert its == [100, 200, 300, 400]
    with pytest.raises(ValueError, match="zero_scale"):
        total_iters(500, rule)


def test_min_epochs_floor_trains_the_scales_the_rule_gives_nothing():
    """paper-vit-b16's floor (synscale's choice): 100 epochs of batch 4096 where the log-scale rule gives fewer
    steps, with the rule's warm-up share; above the crossover (about 0.55M) the rule itself."""
    from synscale.config import ConfigError, find_study, load_study
    from synscale.train.recipes import load_recipe
    from synscale.train.schedule import floored, run_length
    from synscale.train.stages import identity

    rule = ScheduleConfig(**{**load_recipe("paper-vit-b16")["schedule"]})
    assert rule.min_epochs == 100
    assert [total_iters(d, rule, 4096) for d in (125_000, 250_000, 500_000)] == [3052, 6104, 12208]  # ceil(100 D / 4096)
    assert warmup_iters(500_000, rule, 4096) == round(12208 * 10_000 / 95_000)
    assert [total_iters(d, rule, 4096) for d in (540_000, 560_000, 1_000_000)] == [13184, 15532, 95_000]
    assert total_iters(64_000_000, rule, 4096) == 95_000 * 7  # far above: the rule, not 100 epochs
    assert warmup_iters(1_000_000, rule, 4096) == 10_000
    with pytest.raises(ValueError, match="batch size"):
        total_iters(125_000, rule)
    # a study at 0.125M with the recipe validates; without the floor it names the key that fixes it
    cfg = load_study(find_study("fashion-mnist"), overrides=['train={recipe="paper-vit-b16"}', "scales=[125000, 1000000]",
                                                             "curves=[]", "mix=[]", "retrieved=[]", "adaptive=[]", "grid=[]", "synthetic=[]", "clip.scales=[]", "scales=[125000, 1000000]"])
    assert run_length(125_000, cfg.train) == (3052, 321) and floored(125_000, cfg.train)
    assert not floored(1_000_000, cfg.train)
    # the floor enters a train stage's id only where it sets the run's length
    assert "min_epochs" in identity(cfg.train, 125_000)["schedule"]
    assert "min_epochs" not in identity(cfg.train, 1_000_000)["schedule"]
    with pytest.raises(ConfigError, match="train.schedule.min_epochs, a floor"):
        load_study(find_study("fashion-mnist"), overrides=['train={recipe="paper-vit-b16"}', "train.schedule.min_epochs=0",
                                                           "curves=[]", "mix=[]", "retrieved=[]", "adaptive=[]", "grid=[]", "synthetic=[]", "clip.scales=[]", "scales=[125000]"])


def test_lr_warmup_then_cosine():
    assert lr_at(0, 1.0, 100, 10) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 100, 10) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 100, 10) == pytest.approx(0.0)


def simulate(k, perf, scales, d_ref, n_eval, rng, noise=0.3):
    """Per-example losses whose means follow Equation 2 exactly in expectation."""
    means = np.exp(-k * (np.log(scales) - np.log(d_ref)) - perf)
    # gamma-distributed per-example losses with the planted means (CE losses are skewed and positive)
    return [rng.gamma(1 / noise, m * noise, size=n_eval) for m in means]


def test_fit_recovers_planted_exact_curve():
    scales = np.array([1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 6e4])
    losses = np.exp(-0.2 * (np.log(scales) - np.log(6e4)) - 1.3)
    fit = fit_power_law(scales, losses, 6e4)
    assert fit.k == pytest.approx(0.2, abs=1e-12) and fit.perf_at_DI == pytest.approx(1.3, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0) and fit.n_points == 7
    assert fit.predict_loss(np.array([6e4]))[0] == pytest.approx(np.exp(-1.3))


@pytest.mark.parametrize("k_true", [0.05, 0.18, 0.4])
def test_fit_recovers_planted_k_on_noisy_curves(k_true):
    rng = np.random.default_rng(int(k_true * 100))
    scales = np.array([1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 6e4])
    errors = []
    for _ in range(20):
        ex = simulate(k_true, 1.2, scales, 6e4, 10_000, rng)
        fit = bootstrap_fit(scales, ex, 6e4, n_boot=0)
        errors.append(abs(fit.k - k_true))
    assert max(errors) < 0.01


def test_bootstrap_interval_brackets_k_and_is_paired():
    rng = np.random.default_rng(0)
    scales = np.array([1e3, 4e3, 16e3, 6e4])
    ex = simulate(0.2, 1.0, scales, 6e4, 5000, rng)
    fit = bootstrap_fit(scales, ex, 6e4, n_boot=400, seed=1)
    assert fit.k_lo < fit.k < fit.k_hi and fit.k_lo < 0.2 < fit.k_hi
    assert fit.perf_lo < fit.perf_at_DI < fit.perf_hi
    assert fit.k_hi - fit.k_lo < 0.05
    # a set of identical examples has no sampling noise: the interval collapses onto k
    flat = [np.full(100, np.exp(-0.2 * (np.log(s) - np.log(6e4)))) for s in scales]
    tight = bootstrap_fit(scales, flat, 6e4, n_boot=50)
    assert tight.k_hi - tight.k_lo == pytest.approx(0.0, abs=1e-6)
    same = bootstrap_fit(scales, ex, 6e4, n_boot=100, seed=1)
    assert same.k_lo == bootstrap_fit(scales, ex, 6e4, n_boot=100, seed=1).k_lo  # seeded


def test_point_bootstrap_without_examples():
    rng = np.random.default_rng(2)
    scales = np.geomspace(1e3, 6e4, 7)
    losses = np.exp(-0.3 * np.log(scales / 6e4) - 1.0 + rng.normal(0, 0.01, 7))
    fit = bootstrap_fit_points(scales, losses, 6e4, n_boot=500)
    assert abs(fit.k - 0.3) < 0.02 and fit.k_lo < fit.k < fit.k_hi
    with pytest.raises(ValueError, match="positive"):
        fit_power_law(scales, -losses, 6e4)
