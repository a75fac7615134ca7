"""The study end to end through the real CLI: stages on disk, the demo (SIGKILL and resume: tests/test_faults.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests_helpers import NO_HOLDOUT, NO_SYNTHETIC
from synscale.cli import main

SMOKE = ["--size", "smoke", "--quiet"]


def tiny_args(root: Path, workdir: Path, *extra: str) -> list[str]:
    return ["study", "fashion-mnist", *SMOKE, "--workdir", str(workdir), "--set", f"data.root={root}",
            "--set", "scales=[1000, 1500, 2500]", "--set", "train.schedule.zero_scale=700", "--set", "train.schedule.iters_per_doubling=60",
            *NO_SYNTHETIC, *NO_HOLDOUT, *extra]


def test_training_learns_and_a_rerun_skips_every_stage(tiny_fmnist, tmp_path):
    """(Two separate runs of a study give the same tables: tests/test_faults.py compares every killed-and-resumed
    run with an uninterrupted one.)"""
    assert main(tiny_args(tiny_fmnist, tmp_path / "a")) == 0
    a = pd.read_parquet(tmp_path / "a" / "results" / "scaling.parquet")
    assert (a[a.eval_set == "val"]["top1"] > 0.4).all()  # 10 classes: chance is 0.1
    assert sorted(a.eval_set.unique()) == ["a", "rendition", "sketch", "v2", "val"]  # the study's shifts
    # a second run in the same workdir skips every stage and rewrites identical tables
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "stages").rglob("model.safetensors")}
    assert main(tiny_args(tiny_fmnist, tmp_path / "a")) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "stages").rglob("model.safetensors")}
    pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "a" / "results" / "scaling.parquet"))


def test_demo_smoke_end_to_end(fmnist_files, tmp_path, capsys):
    """`synscale demo --size smoke` on the real Debian Fashion-MNIST, through the CLI entry point: a grid of four
    configurations at the largest scale, curves for real data and the grid's best and worst, a scarce-real mix,
    the metrics, the fits, the six findings and the report."""
    assert main(["demo", "--size", "smoke", "--workdir", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Equation 2 fits" in out and "report:" in out and "the grid at 400 images, best first" in out
    assert "6. synthetic + real beats real alone when real data is scarce" in out
    res = tmp_path / "results"
    everything = pd.read_parquet(res / "scaling.parquet")
    assert set(everything.columns) >= {"source", "config", "scale", "eval_set", "loss", "top1"}
    scaling = everything[everything.eval_set == "val"]
    grid = ["ld-classname-g2", "ld-classname-g4", "pd-in-captions-g2", "mt-in-captions-g2"]
    curves = scaling.groupby("source", sort=False)["scale"].apply(sorted).to_dict()
    assert curves["real"] == [100, 200, 400] and curves["scarce-real+best"] == [200, 300, 500]
    # the held-out anchors ([forecast] holdout = [4000, 60000]): the real curve past its scales, kept out of every
    # table the fits read; at D_I it is the reference network (one training stage), not judged on the hard shift
    # it picked
    held = pd.read_parquet(res / "holdout.parquet")
    assert held.groupby("scale")["eval_set"].apply(sorted).to_dict() == {
        4000: ["a", "rendition", "sketch", "v2", "val"], 60000: ["rendition", "sketch", "v2", "val"]}
    assert (held.source == "real").all() and everything.scale.max() == 500
    assert (held.samples_seen > 0).all() and (everything.samples_seen > 0).all()
    assert "forecasts checked" in out and "real at 4,000 (x10 its largest scale): measured" in out
    checks = pd.read_parquet(res / "forecast_checks.parquet")
    val_checks = checks[checks.eval_set == "val"].set_index(["forecaster", "scale"])
    assert set(val_checks.index) == {(f, s) for f in ("power_law", "samples_seen") for s in (4000, 60000)}  # 3 scales: no saturating
    measured = held[held.eval_set == "val"].set_index("scale").loss
    assert np.allclose(val_checks.measured.to_numpy(), measured.loc[[s for _, s in val_checks.index]].to_numpy())
    # every grid configuration at 400; the best and the worst of them (validation loss at 400) at every scale
    at_top = scaling[scaling.source.isin(grid) & (scaling.scale == 400)].set_index("source").loss
    assert sorted(at_top.index) == sorted(grid)
    best, worst = at_top.idxmin(), at_top.idxmax()
    assert {c for c in grid if curves[c] == [100, 200, 400]} == {best, worst}
    assert all(curves[c] == [400] for c in grid if c not in (best, worst))
    # grid-only models on val; curves on val and the four shifts (the picked ones' 400 included)
    shifted = everything[everything.eval_set == "sketch"].groupby("source")["scale"].apply(sorted).to_dict()
    assert shifted == {"real": [100, 200, 400], best: [100, 200, 400], worst: [100, 200, 400],
                       "scarce-real+best": [200, 300, 500]}
    # the mix: 100 real images + the best configuration's 100, 200, 400
    mix = scaling[scaling.source == "scarce-real+best"]
    assert (mix.real_images == 100).all() and sorted(mix.synthetic_images) == [100, 200, 400]
    real = scaling[scaling.source == "real"].sort_values("scale")
    assert real["loss"].is_monotonic_decreasing and (real["top1"] > 0.5).all()  # more real data, lower loss
    for shift in ("sketch", "a"):  # out of distribution: the real models do worse than on val
        sh = everything[(everything.source == "real") & (everything.eval_set == shift)].sort_values("scale")
        assert (sh["loss"].to_numpy() > real["loss"].to_numpy()).all(), shift
    per_class = pd.read_parquet(res / "scaling_per_class.parquet")
    assert set(per_class.columns) >= {"source", "config", "scale", "eval_set", "class_name", "loss", "top1"}
    # per-class values weight back to the overall numbers, on every eval set
    for (source, scale, eval_set), g in per_class.groupby(["source", "scale", "eval_set"]):
        row = everything[(everything.source == source) & (everything.scale == scale) & (everything.eval_set == eval_set)].iloc[0]
        assert np.isclose((g.loss * g.n).sum() / g.n.sum(), row.loss, rtol=1e-5)
        assert np.isclose((g.top1 * g.n).sum() / g.n.sum(), row.top1)
    all_fits = pd.read_parquet(res / "fits.parquet")
    assert set(all_fits.columns) >= {"source", "config", "eval_set", "k", "k_lo", "k_hi", "perf_at_DI", "r2", "n_points"}
    assert sorted(all_fits[all_fits.eval_set == "val"].source) == sorted(["real", best, worst, "scarce-real+best"])
    assert len(all_fits) == 4 * 5
    for _, f in all_fits.iterrows():
        assert f.n_points == 3 and f.k_lo <= f.k <= f.k_hi and f.d_ref == 60000
    # the generated sets: per image its prompt, seed, guidance and steps; findable per configuration
    gen = pd.read_parquet(res / "generation.parquet")
    assert gen[["config", "family", "strategy", "guidance_scale", "steps", "images"]].values.tolist() == [
        ["ld-classname-g2", "latent-diffusion", "classname", 2.0, 2, 400],
        ["ld-classname-g4", "latent-diffusion", "classname", 4.0, 2, 400],
        ["pd-in-captions-g2", "pixel-diffusion", "in-captions", 2.0, 2, 400],
        ["mt-in-captions-g2", "masked-token", "in-captions", 2.0, 2, 400]]
    for _, g in gen.iterrows():
        m = pd.read_parquet(tmp_path / g.set_path / "manifest.parquet")  # relative to the workdir
        assert len(m) == 400 and (m.guidance_scale == g.guidance_scale).all() and (m.steps == 2).all()
    # metrics of every configuration on 20 of its training images per class, through the reference network
    metrics = pd.read_parquet(res / "metrics.parquet").set_index("config")
    assert metrics.index.tolist() == ["real", *grid] and (metrics.n_test == 200).all()
    assert metrics.loc["real", "recognizability"] > 0.8  # the reference recognizes real images it never saw
    assert metrics.fd.idxmin() == "real" and metrics.fd_class.idxmin() == "real"
    # the paper's trade-off: higher guidance, more recognizable and less diverse
    assert metrics.loc["ld-classname-g4", "recognizability"] > metrics.loc["ld-classname-g2", "recognizability"]
    assert metrics.loc["ld-classname-g4", "diversity"] < metrics.loc["ld-classname-g2", "diversity"]
    mpc = pd.read_parquet(res / "metrics_per_class.parquet")
    assert len(mpc) == 50 and (mpc.n == 20).all()
    for config, g in mpc.groupby("config"):
        for col in ("recognizability", "diversity", "fd_class", "lpips_ref", "precision", "vendi"):
            assert np.isclose(g[col].mean(), metrics.loc[config, col])
    # the six findings, each with a verdict
    found = json.loads((res / "findings.json").read_text())["findings"]
    assert [f["finding"] for f in found] == [1, 2, 3, 4, 5, 6]
    assert all(f["verdict"] in ("holds", "does not hold", "not measurable") and f["why"] for f in found)
    html = (tmp_path / "report" / "index.html").read_text()
    assert "data:image/png;base64," in html and "Scaling ability" in html and 'id="metrics"' in html
    for fig in ("1", "2", "3", "4", "6", "7", "A5", "A13", "r", "h"):
        assert f'id="fig-{fig}"' in html, fig
    assert 'id="forecast-checks"' in html and "held out of the fits, measured" in html
    assert 'id="table-A6"' in html and 'id="table-A5"' in html  # guidance (ld 2 vs 4), families (pd vs mt)
    assert html.count("<details class=\"samples\"") == 4 and 'id="findings-table"' in html
    assert (tmp_path / "report" / "fig3_scaling_val.svg").exists()
    assert sorted(p.name for p in (tmp_path / "report" / "samples").glob("*.png")) == sorted(f"{c}.png" for c in grid)
    pc = pd.read_parquet(res / "per_class.parquet")
    assert len(pc) == 4 * 10 * 5 and set(pc.category) <= {"poor", "easy", "scaling", "other"}
    val_pc = pc[pc.eval_set == "val"]
    assert val_pc[val_pc.config.isin(["real", best, worst])].recognizability.notna().all()  # the mix has no metrics
    assert (val_pc.k_lo <= val_pc.k_hi).all()
    for config, g in val_pc.groupby("config"):  # a third of the classes at most are poor (quantile rule)
        assert (g.category == "poor").sum() <= 4 and (g.category == "easy").sum() >= 1, config
    # fit and report rebuild from the results tables alone
    (tmp_path / "report" / "index.html").unlink()
    assert main(["fit", str(tmp_path), "--bootstrap", "50"]) == 0
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report" / "index.html").exists()


def test_cli_help_and_errors(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "synscale", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("demo", "study", "config", "shards", "fit", "report"):
        assert cmd in r.stdout
    assert main(["study", "fashion-mnist", "--set", "train.lrr=1", "--dry-run"]) == 2
    assert "unknown key 'train.lrr'" in capsys.readouterr().err
    assert main(["study", "fashion-mnist", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ld-classname-g4: builtin:latent-diffusion, classname, guidance 4" in out and "select 1" in out
    assert main(["study", "fashion-mnist", "--set", f"data.root={tmp_path}", "--workdir", str(tmp_path / "w"), "-q"]) == 2
    assert "not found in" in capsys.readouterr().err
    for cmd in ("fit", "report"):  # nothing trained yet: a clear error, not a traceback
        assert main([cmd, str(tmp_path / "empty")]) == 2
        assert "scaling.parquet does not exist: run the study first" in capsys.readouterr().err
    assert main(["study", "fashion-mnist", "--set", "fit.category_low=0.9", "--dry-run"]) == 2
    assert "category_low" in capsys.readouterr().err
