"""The six findings (synscale.analysis.findings) on planted results with known verdicts: each holds where the
planted numbers say so and does not hold where they say otherwise, through the real analysis (fits, per-class
fits, bootstrap) from results tables written as a study writes them."""

import json

import numpy as np
import pandas as pd
import pytest

from synscale.analysis.findings import FAILS, HOLDS, UNMEASURABLE, findings, format_findings
from synscale.analysis.run import analyse
from synscale.config import FitConfig

SCALES = [100, 200, 400, 800, 1600]
CLASSES = 10
PER_CLASS = 30


def _examples(class_losses: np.ndarray, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-example losses whose class means are exactly `class_losses` (fixed multiplicative noise)."""
    rng = np.random.default_rng(rng_seed)
    u = rng.gamma(4.0, 0.25, size=(CLASSES, PER_CLASS))
    u /= u.mean(1, keepdims=True)
    return (class_losses[:, None] * u).ravel(), np.repeat(np.arange(CLASSES), PER_CLASS)


def plant(tmp_path, *, k_real=0.40, k_syn=0.15, best_guidance=2.0, kc_follows="recognizability",
          sketch_gap=1.15, mix_gain=0.8):
    """A results directory: real and ld-classname-g2 curves, g1.5 and g4 at the top scale, a sketch shift,
    a scarce-real mix, metrics and per-class metrics."""
    rng = np.random.default_rng(1)
    recog_c = np.linspace(0.3, 0.95, CLASSES)
    div_c = rng.permutation(np.linspace(20, 50, CLASSES))
    driver = recog_c if kc_follows == "recognizability" else (div_c - 20) / 30
    kc_syn = k_syn * (0.5 + (driver - driver.min()) / np.ptp(driver))  # mean k_syn, each class its own
    rows, pcs, exs = [], [], []

    def add(source, scale, class_losses, eval_set="val", real_images=0, syn_images=None):
        ex, lab = _examples(class_losses, rng_seed=hash(eval_set) % 97)
        syn = scale - real_images if syn_images is None else syn_images
        ident = {"source": source, "config": source, "scale": scale, "eval_set": eval_set, "run": 0}
        rows.append({**ident, "task": "classification", "real_images": real_images, "synthetic_images": syn,
                     "loss": float(ex.mean()), "top1": float(np.exp(-ex.mean())), "n_eval": len(ex)})
        for c in range(CLASSES):
            pcs.append({**ident, "task": "classification", "class_index": c, "class_name": f"c{c}",
                        "loss": float(class_losses[c]), "top1": 0.5, "n": PER_CLASS})
        exs.append({**ident, "example_loss": ex, "label": lab})

    base_c = np.linspace(0.6, 1.4, CLASSES)
    for d in SCALES:
        r = base_c * (d / 100) ** -k_real
        add("real", d, r, real_images=d)
        add("real", d, r * 2.0, "sketch", real_images=d)
        s = 2.5 * base_c * (d / 100) ** -kc_syn
        add("ld-classname-g2", d, s)
        add("ld-classname-g2", d, s / s.mean() * (r * 2.0).mean() * sketch_gap, "sketch")
    top = SCALES[-1]
    s_top = 2.5 * base_c * (top / 100) ** -kc_syn
    for g in (1.5, 4.0):
        factor = 1.2 if g != best_guidance else 0.9
        add(f"ld-classname-g{g:g}", top, s_top * factor)
        add(f"ld-classname-g{g:g}", top, s_top * factor * 0.5, "sketch")
    real100 = base_c
    for n_syn in (100, 400):
        add("scarce-mix", 100 + n_syn, real100 * mix_gain * (n_syn / 100) ** -0.05, real_images=100, syn_images=n_syn)
    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame(rows).to_parquet(results / "scaling.parquet")
    pd.DataFrame(pcs).to_parquet(results / "scaling_per_class.parquet")
    pd.DataFrame(exs).to_parquet(results / "scaling_examples.parquet")
    gen, met, mpc = [], [], []
    for i, g in enumerate((1.5, 2.0, 4.0)):
        name = f"ld-classname-g{g:g}"
        gen.append({"config": name, "model": "builtin:latent-diffusion", "family": "latent-diffusion",
                    "generator": "x", "strategy": "classname", "guidance_scale": g, "steps": 5, "images": top,
                    "per_class": top // 10, "seed": 0, "set_path": "", "stage": "", "task": "classification"})
        met.append({"config": name, "recognizability": 0.5 + 0.15 * i, "diversity": 40 - 5 * i})
        for c in range(CLASSES):
            mpc.append({"config": name, "class_index": c, "class_name": f"c{c}", "recognizability": recog_c[c],
                        "diversity": div_c[c]})
    met.append({"config": "real", "recognizability": 0.9, "diversity": 45})
    pd.DataFrame(gen).to_parquet(results / "generation.parquet")
    pd.DataFrame(met).to_parquet(results / "metrics.parquet")
    pd.DataFrame(mpc).to_parquet(results / "metrics_per_class.parquet")
    analyse(results, {"classification": 60000.0, "clip": 0.0}, FitConfig(bootstrap=100))
    return findings(results)


def verdicts(out):
    return {f["key"]: f["verdict"] for f in out["findings"]}


def test_all_six_hold_where_planted(tmp_path):
    out = plant(tmp_path)
    assert verdicts(out) == {"power_law": HOLDS, "guidance": HOLDS, "real_scales_better": HOLDS, "shift_gap": HOLDS,
                             "recognizability_over_diversity": HOLDS, "mix_helps": HOLDS}
    f = {x["key"]: x for x in out["findings"]}
    assert f["power_law"]["value"] > 0.95 and f["power_law"]["interval"][0] <= f["power_law"]["value"]
    assert f["real_scales_better"]["value"] == pytest.approx(0.40 - 0.15, abs=0.06)
    assert f["guidance"]["details"][0]["best_guidance"] == 2.0
    assert f["mix_helps"]["details"][0]["real_images"] == 100
    saved = json.loads((tmp_path / "results" / "findings.json").read_text())
    assert [x["finding"] for x in saved["findings"]] == [1, 2, 3, 4, 5, 6]
    lines = format_findings(saved)
    assert len(lines) == 6 and lines[0].startswith("1. loss follows a power law") and "HOLDS" in lines[0]


def test_each_does_not_hold_where_planted_otherwise(tmp_path):
    out = plant(tmp_path, k_real=0.10, k_syn=0.30, best_guidance=4.0, kc_follows="diversity", sketch_gap=3.0,
                mix_gain=1.3)
    v = verdicts(out)
    assert v["real_scales_better"] == FAILS
    assert v["guidance"] == FAILS and "best loss at the highest guidance 4" in out["findings"][1]["why"]
    assert v["shift_gap"] == FAILS
    assert v["recognizability_over_diversity"] == FAILS
    assert v["mix_helps"] == FAILS


def test_not_measurable_says_why(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame([{"source": "real", "config": "real", "scale": 100, "eval_set": "val", "run": 0,
                   "task": "classification", "real_images": 100, "synthetic_images": 0, "loss": 1.0, "top1": 0.5,
                   "n_eval": 10}]).to_parquet(results / "scaling.parquet")
    pd.DataFrame(columns=["source", "config", "eval_set", "task", "k", "k_lo", "k_hi", "r2", "n_points"]).to_parquet(
        results / "fits.parquet")
    out = findings(results)
    assert [f["verdict"] for f in out["findings"]] == [UNMEASURABLE] * 6
    assert all(f["why"] for f in out["findings"])
    assert "4 or more scales" in out["findings"][0]["why"]


def test_intervals_use_the_studys_fit_settings(tmp_path):
    """Findings' intervals come from [fit]: the analysis's replicates by default, and a narrower confidence gives
    intervals nested inside the wider ones from the same seed's replicates."""
    out = plant(tmp_path)
    assert out["thresholds"]["bootstrap"] == 100 and out["thresholds"]["confidence"] == 0.95  # analyse's FitConfig
    results = tmp_path / "results"
    wide = findings(results, FitConfig(bootstrap=300, confidence=0.95, seed=3))
    narrow = findings(results, FitConfig(bootstrap=300, confidence=0.5, seed=3))
    assert narrow["thresholds"] == {**wide["thresholds"], "confidence": 0.5}
    narrower = 0
    for w, n in zip(wide["findings"], narrow["findings"]):
        if w["interval"] and all(np.isfinite(w["interval"])):
            assert w["interval"][0] <= n["interval"][0] <= n["interval"][1] <= w["interval"][1]
            narrower += n["interval"][1] - n["interval"][0] < w["interval"][1] - w["interval"][0]
    assert narrower >= 4  # all but finding 3 (k's intervals, from the fits table) are bootstrapped here
    again = findings(results, FitConfig(bootstrap=300, confidence=0.95, seed=3))
    assert again["findings"] == wide["findings"]  # the seed fixes every replicate
