"""Known-answer tests of the scaling-law analysis: CI coverage, break detection, the saturating fit,
per-class categories, the k predictor, and the analysis tables built from a planted results directory."""

import json

import numpy as np
import pandas as pd
import pytest
from tests_helpers import simulate_results

from synscale.analysis.fit import (
    bootstrap_fit,
    bootstrap_replicates,
    break_direction,
    fit_power_law,
    fit_saturating,
    linear_range,
)
from synscale.analysis.predict import evaluate_predictor, fit_predictor
from synscale.analysis.run import analyse, categorise
from synscale.config import FitConfig

SCALES = np.array([500, 1000, 2000, 4000, 8000.0])
D_REF = 6e4


def eq2(k, perf, scales=SCALES):
    return np.exp(-k * (np.log(scales) - np.log(D_REF)) - perf)


def paired_examples(means, n, rng, noise=0.3):
    """Per-example losses sharing each example's difficulty across scales (one evaluation set)."""
    difficulty = rng.gamma(2.0, 0.5, size=n)
    return [m * difficulty * rng.gamma(1 / noise, noise, size=n) for m in means]


def test_ci_covers_true_k_in_90_to_99_percent_of_200_studies():
    rng = np.random.default_rng(123)
    covered = 0
    for i in range(200):
        ex = paired_examples(eq2(0.25, 1.0), 400, rng)
        fit = bootstrap_fit(SCALES, ex, D_REF, n_boot=400, confidence=0.95, seed=i)
        covered += fit.k_lo <= 0.25 <= fit.k_hi
    assert 0.90 <= covered / 200 <= 0.99


def test_planted_k_and_intercept_recovered_from_noisy_examples():
    rng = np.random.default_rng(5)
    for k, perf in ((0.1, 0.5), (0.3, 1.4), (0.6, -0.2)):
        fit = bootstrap_fit(SCALES, paired_examples(eq2(k, perf), 20_000, rng), D_REF, n_boot=200)
        # the mean of difficulty x noise is 1, so the planted curve is the expected loss
        assert fit.k == pytest.approx(k, abs=0.015)
        assert fit.perf_at_DI == pytest.approx(perf, abs=0.05)
        assert fit.k_lo < k < fit.k_hi


def test_repeated_runs_widen_the_interval():
    """Runs that disagree (seed-to-seed spread) must show in the CI; runs that agree must not."""
    rng = np.random.default_rng(0)
    base = paired_examples(eq2(0.3, 1.0), 2000, rng)
    agree = [np.stack([e, e, e]) for e in base]
    spread = [np.stack([e * f for f in rng.lognormal(0, 0.08, 3)]) for e in base]
    w_one = bootstrap_fit(SCALES, base, D_REF, 400, seed=1)
    w_agree = bootstrap_fit(SCALES, agree, D_REF, 400, seed=1)
    w_spread = bootstrap_fit(SCALES, spread, D_REF, 400, seed=1)
    width = lambda f: f.k_hi - f.k_lo  # noqa: E731
    assert width(w_agree) == pytest.approx(width(w_one), rel=0.25)
    assert width(w_spread) > 2 * width(w_one)
    assert bootstrap_replicates(spread, 10).shape == (10, len(SCALES))


def test_break_found_on_planted_knee_and_not_on_a_straight_line():
    scales = np.geomspace(250, 64_000, 9)
    rng = np.random.default_rng(1)
    straight = eq2(0.3, 1.0, scales) * np.exp(rng.normal(0, 0.01, len(scales)))
    assert linear_range(scales, straight, D_REF, tol=0.05) == len(scales)
    knee = eq2(0.3, 1.0, scales)
    knee[6:] = knee[5] * (scales[6:] / scales[5]) ** -0.02  # flat after the 6th scale (model saturates)
    knee *= np.exp(rng.normal(0, 0.01, len(scales)))
    m = linear_range(scales, knee, D_REF, tol=0.05)
    assert m == 6 and break_direction(scales, knee, D_REF, m) == "flattens"
    assert break_direction(scales, straight, D_REF, len(scales)) == ""
    # a curve that is not a power law even on its first three scales has no linear range, hence no break
    zigzag = eq2(0.3, 1.0, scales) * np.exp(np.array([0, 0.3, 0, 0.3, 0, 0.3, 0, 0.3, 0]))
    assert linear_range(scales, zigzag, D_REF, tol=0.05) == 0
    assert linear_range(scales[:2], zigzag[:2], D_REF) == 2  # two scales: nothing to test, no break


def test_saturating_fit_recovers_planted_floor_with_intervals():
    rng = np.random.default_rng(2)
    scales = np.geomspace(250, 64_000, 9)
    means = 1.0 + 1.5 * (scales / D_REF) ** -0.5
    ex = paired_examples(means, 5000, rng, noise=0.2)
    reps = bootstrap_replicates(ex, 100, seed=3)
    sat = fit_saturating(scales, np.array([e.mean() for e in ex]), D_REF, reps)
    assert sat.E == pytest.approx(1.0, abs=0.08) and sat.k == pytest.approx(0.5, abs=0.06)
    assert sat.E_lo <= 1.0 <= sat.E_hi and sat.k_lo <= 0.5 <= sat.k_hi
    assert sat.perf_at_DI == pytest.approx(-np.log(2.5), abs=0.03)
    # the pure power law misfits this curve: its log residuals are far larger than the saturating fit's
    pl = fit_power_law(scales, np.array([e.mean() for e in ex]), D_REF)
    assert np.sqrt(np.mean((np.log(pl.predict_loss(scales)) - np.log([e.mean() for e in ex])) ** 2)) > 5 * sat.rmse_log
    with pytest.raises(ValueError, match="four scales"):
        fit_saturating(scales[:3], means[:3], D_REF)


def test_categories_on_a_planted_table():
    # nine classes on a 3x3 grid of (k, perf): low/mid/high each
    k = np.array([0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.5, 0.5, 0.5])
    perf = np.array([0.0, 1.0, 2.0] * 3)
    cats = categorise(k, perf, 1 / 3, 2 / 3)
    assert cats.tolist() == ["poor", "other", "other",
                             "other", "other", "easy",
                             "scaling", "scaling", "easy"]


def test_predictor_beats_the_mean_where_k_depends_on_recognizability():
    rng = np.random.default_rng(4)
    rec, div = rng.uniform(0.3, 0.9, 60), rng.uniform(0.4, 0.8, 60)
    k = 0.05 + 0.4 * rec + rng.normal(0, 0.02, 60)
    s, pred = evaluate_predictor(np.c_[rec, div], k, "class")
    assert s.skill > 0.5 and s.mae < s.mae_mean and s.spearman > 0.8
    assert s.coef_recognizability == pytest.approx(0.4, abs=0.08) and abs(s.coef_diversity) < 0.08
    # where k is noise, the metrics carry nothing: no real skill
    s0, _ = evaluate_predictor(np.c_[rec, div], rng.normal(0.3, 0.05, 60), "class")
    assert s0.skill < 0.1
    model = fit_predictor(np.c_[rec, div], k)
    assert model.predict(np.array([[0.9, 0.6]]))[0] == pytest.approx(0.05 + 0.36, abs=0.03)
    with pytest.raises(ValueError, match="at least 4"):
        evaluate_predictor(np.c_[rec, div][:3], k[:3], "config")


CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "<b>boot</b> & $x$"]
PLANTED_K = {"real": [0.30] * 10, "syn-a": [0.05, 0.05, 0.3, 0.3, 0.45, 0.45, 0.2, 0.2, 0.35, 0.1],
             "syn-b": [0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2]}
PLANTED_PERF = {"real": [1.0] * 10, "syn-a": [0.0, 0.1, 2.0, 2.1, 0.5, 0.6, 1.0, 1.1, 1.5, 0.8],
                "syn-b": [0.5] * 10}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    results = tmp_path_factory.mktemp("w") / "results"
    simulate_results(results, PLANTED_K, PLANTED_PERF, CLASSES, per_class_eval=400, noise=0.2)
    tables = analyse(results, D_REF, FitConfig(bootstrap=200, saturating_bootstrap=20))
    return results, tables


def test_analysis_tables_recover_planted_per_class_values(planted):
    results, t = planted
    pc = pd.read_parquet(results / "per_class.parquet")
    assert set(pc.eval_set) == {"val", "sketch"}
    a = pc[(pc.config == "syn-a") & (pc.eval_set == "val")].sort_values("class_index")
    assert np.abs(a.k.to_numpy() - PLANTED_K["syn-a"]).max() < 0.05
    assert np.abs(a.perf_at_DI.to_numpy() - PLANTED_PERF["syn-a"]).max() < 0.25
    assert (a.k_lo < a.k).all() and (a.k < a.k_hi).all()
    # planted: classes 0, 1 poor (lowest k and perf), 2, 3 easy (best perf, mid k), 4, 5 scaling (highest k, mid perf)
    cats = dict(zip(a.class_index, a.category, strict=True))
    assert [cats[i] for i in (0, 1)] == ["poor", "poor"]
    assert [cats[i] for i in (2, 3)] == ["easy", "easy"]
    assert [cats[i] for i in (4, 5)] == ["scaling", "scaling"]
    assert {"recognizability", "diversity", "fd_class", "lpips_ref"} <= set(pc.columns)
    assert a.recognizability.notna().all()
    info = json.loads((results / "analysis.json").read_text())
    assert set(info["categories"]["syn-a"]["poor"]) == {"t-shirt", "trouser"}

    fits = pd.read_parquet(results / "fits.parquet")
    real = fits[(fits.config == "real") & (fits.eval_set == "val")].iloc[0]
    assert real.k == pytest.approx(0.30, abs=0.02) and real.k_lo < 0.30 < real.k_hi
    assert np.isnan(real.break_at) and real.linear_points == len(SCALES) and real.break_direction == ""
    assert len(real.residuals) == len(SCALES) and real.rmse_log < 0.05
    assert np.isfinite(real.sat_k)

    # recognizability was planted as 0.5 + k_c, so k_c and recognizability are rank-correlated
    corr = pd.read_parquet(results / "correlations.parquet")
    rho = corr[(corr.config == "syn-a") & (corr.metric == "recognizability")].rho.iloc[0]
    assert rho > 0.9
    assert info["predictor"]["class"]["skill"] > 0.3
    assert "at least 4" in info["predictor"]["config"]["skipped"]  # three configurations


def test_vectorised_class_fits_equal_one_class_at_a_time():
    """All classes in one pass: the same point fits as fitting each class's mean losses alone, and
    intervals like the one-class bootstrap over that class's examples (a stratified bootstrap)."""
    rng = np.random.default_rng(8)
    k_true, perf_true = rng.uniform(0.05, 0.5, 6), rng.uniform(-0.5, 1.5, 6)
    labels = np.repeat(np.arange(6), [300, 200, 250, 300, 150, 400])
    means = np.exp(-np.outer(k_true, np.log(SCALES) - np.log(D_REF)) - perf_true[:, None])  # (6, S)
    runs = [np.stack([means[labels, j] * rng.gamma(1 / 0.3, 0.3, len(labels)) for _ in range(2)]) for j in range(len(SCALES))]
    from synscale.analysis.fit import class_fits_vectorised

    got = class_fits_vectorised(SCALES, runs, labels, np.arange(6), D_REF, n_boot=600, seed=1)
    for c in range(6):
        own = [r[:, labels == c] for r in runs]
        one = bootstrap_fit(SCALES, own, D_REF, n_boot=600, seed=2)
        assert got["k"][c] == pytest.approx(one.k, abs=1e-10) and got["perf_at_DI"][c] == pytest.approx(one.perf_at_DI, abs=1e-10)
        assert got["r2"][c] == pytest.approx(one.r2, abs=1e-10)
        assert (got["k_hi"][c] - got["k_lo"][c]) == pytest.approx(one.k_hi - one.k_lo, rel=0.25)
        assert got["k_lo"][c] < k_true[c] + 0.05 and got["k_hi"][c] > k_true[c] - 0.05
    with pytest.raises(ValueError, match="at least one"):
        class_fits_vectorised(SCALES, runs, labels, np.arange(7), D_REF)


def test_results_written_before_lpips_was_renamed_are_read_as_lpips_ref(tmp_path):
    """An old workdir's tables name the reference network's LPIPS-style distance `lpips`: every reader (they all
    read through read_table: the analysis, findings, the report, `synscale fit`) sees it as `lpips_ref`, so
    the old workdir still analyses and reports, with the distance under the name that says what it is."""
    from synscale.report.html import metrics_table
    from synscale.results import read_table

    results = tmp_path / "results"
    simulate_results(results, PLANTED_K, PLANTED_PERF, CLASSES, per_class_eval=100)
    old = {}
    for name in ("metrics", "metrics_per_class"):  # as an older synscale wrote them
        old[name] = pd.read_parquet(results / f"{name}.parquet").rename(columns={"lpips_ref": "lpips"})
        old[name].to_parquet(results / f"{name}.parquet", index=False)
        t = read_table(results / f"{name}.parquet")
        assert "lpips" not in t and t.lpips_ref.tolist() == old[name].lpips.tolist()
    analyse(results, D_REF, FitConfig(bootstrap=20, saturating_bootstrap=5))
    pc = pd.read_parquet(results / "per_class.parquet")
    assert "lpips" not in pc and pc.lpips_ref.notna().all()
    corr = pd.read_parquet(results / "correlations.parquet")
    assert "lpips_ref" in set(corr.metric) and "lpips" not in set(corr.metric)
    # the analysis tables of an older synscale, which the report reads as they are
    pc.rename(columns={"lpips_ref": "lpips"}).to_parquet(results / "per_class.parquet", index=False)
    corr.assign(metric=corr.metric.replace({"lpips_ref": "lpips"})).to_parquet(results / "correlations.parquet", index=False)
    assert "lpips" not in read_table(results / "per_class.parquet") and "lpips_ref" in read_table(results / "per_class.parquet")
    assert "lpips" not in set(read_table(results / "correlations.parquet").metric)
    mt, _ = metrics_table(results, read_table(results / "scaling.parquet"), read_table(results / "fits.parquet"))
    assert "LPIPS-style distance (reference network)" in mt.columns and "lpips" not in mt.columns


def test_the_papers_lpips_joins_the_per_class_table_and_correlations_where_measured(planted, tmp_path):
    """lpips_alex (measured only where the AlexNet weights are) is a per-class metric like lpips_ref: NaN and no
    correlation without it; with it, its Spearman ρ with k_c (planted here as k_c itself, shuffled for one
    configuration) is in correlations.parquet."""
    import shutil

    results, _ = planted
    pc = pd.read_parquet(results / "per_class.parquet")
    assert pc.lpips_alex.isna().all()
    assert "lpips_alex" not in set(pd.read_parquet(results / "correlations.parquet").metric)
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    mpc = pd.read_parquet(copy / "metrics_per_class.parquet")
    k = {c: np.asarray(v) for c, v in PLANTED_K.items()}
    mpc["lpips_alex"] = [k[r.config][r.class_index] for r in mpc.itertuples()]
    mpc.to_parquet(copy / "metrics_per_class.parquet", index=False)
    analyse(copy, D_REF, FitConfig(bootstrap=50, saturating_bootstrap=0))
    corr = pd.read_parquet(copy / "correlations.parquet")
    rho = corr[(corr.config == "syn-a") & (corr.metric == "lpips_alex") & (corr.eval_set == "val")].rho.iloc[0]
    assert rho > 0.9


def test_a_scaling_table_from_before_the_task_column_is_a_classifiers(tmp_path, capsys):
    """Curves tables written before CLIP had curves of its own have no `task`: read as classifiers' everywhere,
    so `synscale fit` on such a workdir prints its summary (it raised KeyError: 'task' there)."""
    import json

    from synscale.cli import main
    from synscale.results import read_table

    results = tmp_path / "results"
    simulate_results(results, PLANTED_K, PLANTED_PERF, CLASSES, per_class_eval=100)
    raw = pd.read_parquet(results / "scaling.parquet")
    assert "task" not in raw
    assert (read_table(results / "scaling.parquet").task == "classification").all()
    (tmp_path / "study.json").write_text(json.dumps({"name": "planted", "fit": {"bootstrap": 20, "saturating_bootstrap": 5}}))
    assert main(["fit", str(tmp_path), "--bootstrap", "20"]) == 0
    assert "Equation 2 fits on val" in capsys.readouterr().out
