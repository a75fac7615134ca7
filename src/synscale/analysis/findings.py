"""The paper's six findings, tested on a study's results: each a measured number with its interval and a
plain verdict — "holds", "does not hold", or "not measurable" (with the reason) — written to
`W/results/findings.json` and shown at the end of the report.

These are measurements, not targets: the thresholds below are fixed here, never tuned to a run.

1. power law: loss follows a power law in data size — R² of the log-log fit (Equation 2) of every
   classification curve on the real test set; holds where every curve's R² >= 0.95 (the interval: R² over
   bootstrap redraws of the test examples).
2. guidance: per family (configurations differing only in guidance), raising guidance raises
   recognizability (Spearman ρ > 0) and lowers diversity (ρ < 0), and the lowest loss at the largest scale is
   not at the highest guidance (interval: the loss gap between the highest guidance and the best, paired
   bootstrap over test examples).
3. real scales better: in distribution, k_real > k of every synthetic curve, with disjoint intervals.
4. shift narrows the gap: per synthetic curve and shift, the synthetic-real gap in log loss at the largest
   common scale is smaller on the shift than on the real test set (paired bootstrap interval); holds where
   it narrows, with the interval above 0, for most (curve, shift) pairs.
5. recognizability over diversity: per class, |Spearman(k_c, recognizability_c)| − |Spearman(k_c,
   diversity_c)|, pooled over the synthetic configurations with per-class fits (bootstrap over rows);
   holds where the interval is above 0.
6. synthetic helps scarce real data: a `[[mix]]` with R real images against real alone at R images, and
   CLIP's mixed pairs against real pairs at the same number of captions (paired bootstrap of the loss
   difference at the largest scale); holds where every measurable comparison improves with the interval
   above 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from synscale.config import FitConfig

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "not measurable"
R2_MIN = 0.95  # finding 1's threshold (the foundation's: a power law fits where R² >= 0.95)
MIN_POINTS = 4  # scales a curve needs before its R² says anything
MIN_ROWS = 8  # per-class rows finding 5 needs
FLAT = 0.05  # |k| below this: a curve that barely moves, whose R² says little (named in finding 1's reason)
R2_BOOT = 200  # replicates of finding 1's R² interval (each one a refit per curve), fixed like the thresholds




def _finding(num: int, key: str, claim: str, verdict: str, value: float | None, interval: list[float] | None,
             measure: str, why: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"finding": num, "key": key, "claim": claim, "verdict": verdict,
            "value": None if value is None or not math.isfinite(value) else float(value),
            "interval": interval, "measure": measure, "why": why, "details": details or []}


class Results:
    """The results tables a study wrote (the ones that are there), and the study's [fit] bootstrap settings
    (replicates, confidence, seed) that every interval here uses."""

    def __init__(self, results_dir: Path, fc: FitConfig | None = None, n_boot: int | None = None) -> None:
        import pandas as pd

        from synscale.results import read_table

        def read(name: str) -> Any:
            t = read_table(results_dir / f"{name}.parquet")
            return pd.DataFrame() if t is None else t

        self.scaling, self.fits, self.metrics = read("scaling"), read("fits"), read("metrics")
        self.generation, self.per_class = read("generation"), read("per_class")
        self.examples = read("scaling_examples")
        # tables of studies written before a column existed: classifier rows, one run, no real images counted
        for t in (self.scaling, self.fits, self.generation):
            if len(t) and "task" not in t:
                t["task"] = "classification"
        s = self.scaling
        if len(s):
            if "run" not in s:
                s["run"] = 0
            if "real_images" not in s:
                s["real_images"] = np.where(s.source == "real", s.scale, 0)
            if "synthetic_images" not in s:
                s["synthetic_images"] = s.scale - s.real_images
        fc = fc or FitConfig()
        self.n_boot = fc.bootstrap if n_boot is None else n_boot
        self.confidence, self.seed = fc.confidence, fc.seed
        self.rng = np.random.default_rng(fc.seed)

    def ci(self, values: np.ndarray) -> list[float]:
        """The central `confidence` interval of bootstrap replicates (non-finite ones dropped)."""
        a = (1 - self.confidence) / 2
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] if len(v) else [math.nan, math.nan]

    def classification(self) -> Any:
        s = self.scaling
        return s[(s.task == "classification")] if len(s) else s

    def example_losses(self, source: str, scale: int, eval_set: str) -> np.ndarray | None:
        """Per-example losses of (source, scale, eval_set), averaged over runs; None where missing."""
        e = self.examples
        if not len(e):
            return None
        rows = e[(e.source == source) & (e.scale == scale) & (e.eval_set == eval_set)]
        if not len(rows):
            return None
        arrays = [np.asarray(a, float) for a in rows.example_loss]
        if len({len(a) for a in arrays}) != 1:
            return None
        return np.mean(arrays, axis=0)

    def paired(self, a: np.ndarray, b: np.ndarray, stat: Any) -> np.ndarray:
        """Bootstrap replicates of stat(a[idx], b[idx]) over the shared examples."""
        n = len(a)
        idx = self.rng.integers(0, n, size=(self.n_boot, n))
        return np.array([stat(a[i], b[i]) for i in idx])


def power_law(r: Results) -> dict[str, Any]:
    claim = "loss follows a power law in data size"
    from synscale.analysis.fit import bootstrap_replicates, fit_power_law

    f = r.fits
    f = f[(f.task == "classification") & (f.eval_set == "val")] if len(f) else f
    f = f[(f.n_points >= MIN_POINTS) & f.source.isin(["real", *_synthetic_sources(r)])] if len(f) else f  # not mixes
    if not len(f):
        return _finding(1, "power_law", claim, UNMEASURABLE, None, None, "R² of the log-log fit per source",
                        f"no classification curve has {MIN_POINTS} or more scales")
    details = []
    for row in f.itertuples():
        s = r.classification()
        g = s[(s.source == row.source) & (s.eval_set == "val")].groupby("scale")["loss"].mean()
        ex = [r.example_losses(row.source, int(sc), "val") for sc in g.index]
        interval = [math.nan, math.nan]
        if all(x is not None for x in ex):
            reps = bootstrap_replicates(ex, R2_BOOT, r.seed)
            scales = g.index.to_numpy(float)
            interval = r.ci(np.array([fit_power_law(scales, rep, float(scales.max())).r2 for rep in reps]))
        details.append({"source": row.source, "r2": float(row.r2), "interval": interval, "scales": int(row.n_points),
                        "k": float(row.k)})
    worst = min(details, key=lambda d: d["r2"])
    ok = all(d["r2"] >= R2_MIN for d in details)
    below = [f"{d['source']} ({d['r2']:.3f}" + (f"; k {d['k']:.3f}: nearly flat, no power law to fit" if abs(d["k"]) < FLAT
                                               else "") + ")" for d in details if d["r2"] < R2_MIN]
    why = (f"every curve's R² >= {R2_MIN} ({len(details)} curves; lowest {worst['source']})" if ok else
           f"R² below {R2_MIN} for {', '.join(below)}")
    return _finding(1, "power_law", claim, HOLDS if ok else FAILS, worst["r2"], worst["interval"],
                    "lowest R² of the log-log fits (val) over the sources", why, details)


def _top_losses(r: Results) -> Any:
    """Validation loss of every generated configuration at the largest scale they were trained at (mean over
    runs)."""
    s = r.classification()
    s = s[(s.eval_set == "val") & (s.source != "real") & (s.real_images == 0)]
    g = r.generation
    if len(g) and s.source.isin(g.config).any():  # the generated configurations' (not an adaptive or retrieved
        s = s[s.source.isin(g.config)]  # source's, which reach past the grid's scale)
    if not len(s):
        return s
    top = s.scale.max()
    return s[s.scale == top].groupby("source", as_index=False).agg(loss=("loss", "mean"), scale=("scale", "max"))


def guidance(r: Results) -> dict[str, Any]:
    claim = ("raising guidance raises recognizability and lowers diversity; the best loss is at a low-to-moderate "
             "guidance, not the highest")
    from scipy.stats import spearmanr

    g, m, top = r.generation, r.metrics, _top_losses(r)
    if not len(g) or not len(m) or not len(top) or "recognizability" not in m:
        return _finding(2, "guidance", claim, UNMEASURABLE, None, None, "", "no generation, metrics or grid results")
    g = g[g.task == "classification"].merge(m[["config", "recognizability", "diversity"]], on="config") \
        .merge(top.rename(columns={"source": "config"}), on="config")
    details = []
    for (model, strategy), grp in g.groupby(["model", "strategy"]):
        grp = grp.sort_values("guidance_scale")
        if grp.guidance_scale.nunique() < 2:
            continue
        gs = grp.guidance_scale.to_numpy()
        rho_r = float(spearmanr(gs, grp.recognizability).statistic) if grp.recognizability.nunique() > 1 else 0.0
        rho_d = float(spearmanr(gs, grp.diversity).statistic) if grp.diversity.nunique() > 1 else 0.0
        best = grp.loc[grp.loss.idxmin()]
        high = grp.iloc[-1]
        gap, interval = float(high.loss - best.loss), None
        a = r.example_losses(high.config, int(high.scale), "val")
        b = r.example_losses(best.config, int(best.scale), "val")
        if a is not None and b is not None and len(a) == len(b) and high.config != best.config:
            interval = r.ci(r.paired(a, b, lambda x, y: x.mean() - y.mean()))
        holds = bool(rho_r > 0 and rho_d < 0 and best.guidance_scale < high.guidance_scale)
        details.append({"family": grp.family.iloc[0], "model": model, "strategy": strategy,
                        "guidance": gs.tolist(), "rho_recognizability": rho_r, "rho_diversity": rho_d,
                        "best_guidance": float(best.guidance_scale), "loss_gap_highest_minus_best": gap,
                        "interval": interval, "holds": holds})
    if not details:
        return _finding(2, "guidance", claim, UNMEASURABLE, None, None, "",
                        "no two configurations differ only in guidance")
    fails = [d for d in details if not d["holds"]]
    parts = []
    for d in fails:
        bits = ([f"recognizability ρ {d['rho_recognizability']:+.2f}"] if d["rho_recognizability"] <= 0 else []) + \
               ([f"diversity ρ {d['rho_diversity']:+.2f}"] if d["rho_diversity"] >= 0 else []) + \
               ([f"best loss at the highest guidance {d['best_guidance']:g}"] if d["loss_gap_highest_minus_best"] <= 0 else [])
        parts.append(f"{d['family']} / {d['strategy']}: {', '.join(bits)}")
    main = max(details, key=lambda d: len(d["guidance"]))
    why = (f"in all {len(details)} guidance series" if not fails else "; ".join(parts))
    return _finding(2, "guidance", claim, HOLDS if not fails else FAILS, main["loss_gap_highest_minus_best"],
                    main["interval"], f"loss at the highest guidance minus the best loss ({main['family']}, "
                    f"{main['strategy']}; largest scale, val)", why, details)


def _synthetic_sources(r: Results) -> list[str]:
    g = r.generation
    return [c for c in g.config] if len(g) else []


def real_scales_better(r: Results) -> dict[str, Any]:
    claim = "in distribution, real data scales better than synthetic (k_real > k_synthetic)"
    f = r.fits
    f = f[(f.task == "classification") & (f.eval_set == "val")] if len(f) else f
    real = f[f.source == "real"] if len(f) else f
    syn = f[f.source.isin(_synthetic_sources(r))] if len(f) else f
    if not len(real) or not len(syn):
        return _finding(3, "real_scales_better", claim, UNMEASURABLE, None, None, "",
                        "needs a real curve and a synthetic curve (two or more scales each)")
    kr = real.iloc[0]
    details = [{"source": s.source, "k": float(s.k), "interval": [float(s.k_lo), float(s.k_hi)],
                "below_real": bool(s.k_hi < kr.k_lo)} for s in syn.itertuples()]
    closest = max(details, key=lambda d: d["k"])
    ok = all(d["below_real"] for d in details)
    over = [f"{d['source']} k {d['k']:.3f} [{d['interval'][0]:.3f}, {d['interval'][1]:.3f}]" for d in details
            if not d["below_real"]]
    why = (f"k_real {kr.k:.3f} [{kr.k_lo:.3f}, {kr.k_hi:.3f}] above every synthetic curve's interval" if ok else
           f"k_real {kr.k:.3f} [{kr.k_lo:.3f}, {kr.k_hi:.3f}] not above: {'; '.join(over)}")
    return _finding(3, "real_scales_better", claim, HOLDS if ok else FAILS, float(kr.k - closest["k"]),
                    [float(kr.k_lo - closest["interval"][1]), float(kr.k_hi - closest["interval"][0])],
                    f"k_real − the largest synthetic k ({closest['source']})", why,
                    [{"source": "real", "k": float(kr.k), "interval": [float(kr.k_lo), float(kr.k_hi)]}, *details])


def shift_gap(r: Results) -> dict[str, Any]:
    claim = "under distribution shift the synthetic-real gap narrows"
    s = r.classification()
    if not len(s):
        return _finding(4, "shift_gap", claim, UNMEASURABLE, None, None, "", "no classification results")
    shifts = [e for e in s.eval_set.unique() if e != "val" and not str(e).startswith("probe:")]
    real = s[s.source == "real"]
    curves = [c for c in _synthetic_sources(r) if s[(s.source == c)].scale.nunique() >= 2]
    details, reps = [], []
    for c in curves:
        common = sorted(set(real.scale) & set(s[s.source == c].scale))
        if not common:
            continue
        scale = int(common[-1])
        rv, cv = r.example_losses("real", scale, "val"), r.example_losses(c, scale, "val")
        if rv is None or cv is None:
            continue
        for e in shifts:
            re_, ce = r.example_losses("real", scale, e), r.example_losses(c, scale, e)
            if re_ is None or ce is None:
                continue
            gap_val = math.log(cv.mean() / rv.mean())
            gap_shift = math.log(ce.mean() / re_.mean())
            # the two gaps are on different example sets: resample each set's examples (paired within a set)
            reps_v = r.paired(cv, rv, lambda x, y: math.log(x.mean() / y.mean()))
            reps_s = r.paired(ce, re_, lambda x, y: math.log(x.mean() / y.mean()))
            interval = r.ci(reps_v - reps_s)
            reps.append(reps_v - reps_s)
            details.append({"source": c, "shift": e, "scale": scale, "gap_val": gap_val, "gap_shift": gap_shift,
                            "narrowing": gap_val - gap_shift, "interval": interval, "narrows": bool(interval[0] > 0)})
    if not details:
        return _finding(4, "shift_gap", claim, UNMEASURABLE, None, None, "",
                        "needs shifted test sets and synthetic curves sharing a scale with the real one")
    n = sum(d["narrows"] for d in details)
    med = float(np.median([d["narrowing"] for d in details]))
    ok = n > len(details) / 2
    why = f"the gap narrows (interval above 0) in {n} of {len(details)} (curve, shift) pairs"
    return _finding(4, "shift_gap", claim, HOLDS if ok else FAILS, med, r.ci(np.median(np.stack(reps), axis=0)),
                    "median over (curve, shift) of log(L_syn/L_real) on val minus on the shift", why, details)


def recognizability_over_diversity(r: Results) -> dict[str, Any]:
    claim = "per class, scaling ability correlates more with recognizability than with diversity"
    from scipy.stats import spearmanr

    pc = r.per_class
    need = {"k", "recognizability", "diversity"}
    if not len(pc) or not need <= set(pc.columns):
        return _finding(5, "recognizability_over_diversity", claim, UNMEASURABLE, None, None, "",
                        "no per-class fits with per-class metrics")
    pc = pc[(pc.eval_set == "val") & (pc.source.isin(_synthetic_sources(r)))].dropna(subset=list(need))
    if len(pc) < MIN_ROWS:
        return _finding(5, "recognizability_over_diversity", claim, UNMEASURABLE, None, None, "",
                        f"{len(pc)} (configuration, class) rows with a fit; needs {MIN_ROWS}")
    k, rec, div = (pc[c].to_numpy(float) for c in ("k", "recognizability", "diversity"))

    def diff(i: np.ndarray) -> float:
        a = spearmanr(k[i], rec[i]).statistic
        b = spearmanr(k[i], div[i]).statistic
        return abs(a) - abs(b)

    idx = np.arange(len(k))
    value = diff(idx)
    reps = np.array([diff(r.rng.integers(0, len(k), len(k))) for _ in range(r.n_boot)])
    interval = r.ci(reps)
    rho_r, rho_d = float(spearmanr(k, rec).statistic), float(spearmanr(k, div).statistic)
    ok = interval[0] > 0
    why = (f"ρ(k_c, recognizability) {rho_r:+.2f}, ρ(k_c, diversity) {rho_d:+.2f} over {len(k)} (configuration, class) "
           f"rows of {pc.config.nunique()} configuration(s)" + ("" if ok else "; the difference's interval includes 0 or "
                                                               "is below it"))
    return _finding(5, "recognizability_over_diversity", claim, HOLDS if ok else FAILS, float(value), interval,
                    "|ρ(k_c, recognizability)| − |ρ(k_c, diversity)|, pooled", why,
                    [{"rho_recognizability": rho_r, "rho_diversity": rho_d, "rows": int(len(k)),
                      "configurations": int(pc.config.nunique())}])


def mix_helps(r: Results) -> dict[str, Any]:
    claim = "synthetic + real beats real alone when real data is scarce"
    s = r.scaling
    details = []
    if len(s):
        cls = s[(s.task == "classification") & (s.eval_set == "val")]
        mixes = cls[(cls.real_images > 0) & (cls.synthetic_images > 0)]
        for source, g in mixes.groupby("source"):
            row = g.sort_values("scale").iloc[-1]
            n_real = int(row.real_images)
            a = r.example_losses("real", n_real, "val")
            b = r.example_losses(source, int(row.scale), "val")
            if a is None or b is None:
                details.append({"task": "classification", "source": source, "skipped":
                                f"no real-only model at {n_real} images to compare with"})
                continue
            reps = r.paired(a, b, lambda x, y: x.mean() - y.mean())
            details.append({"task": "classification", "source": source, "real_images": n_real,
                            "synthetic_images": int(row.synthetic_images), "loss_real": float(a.mean()),
                            "loss_mix": float(b.mean()), "improvement": float(a.mean() - b.mean()), "interval": r.ci(reps)})
        clip = s[(s.task == "clip") & (s.eval_set == "val")]
        real_src = [src for src, g in clip.groupby("source") if (g.synthetic_images == 0).all()]
        mixed = [src for src, g in clip.groupby("source") if (g.real_images > 0).all() and (g.synthetic_images > 0).all()]
        for src in mixed:
            for rs in real_src:
                common = sorted(set(clip[clip.source == src].scale) & set(clip[clip.source == rs].scale))
                if not common:
                    continue
                a, b = r.example_losses(rs, int(common[-1]), "val"), r.example_losses(src, int(common[-1]), "val")
                if a is None or b is None:
                    continue
                details.append({"task": "clip", "source": src, "against": rs, "captions": int(common[-1]),
                                "loss_real": float(a.mean()), "loss_mix": float(b.mean()),
                                "improvement": float(a.mean() - b.mean()),
                                "interval": r.ci(r.paired(a, b, lambda x, y: x.mean() - y.mean()))})
    measured = [d for d in details if "interval" in d]
    if not measured:
        why = "; ".join(d["skipped"] for d in details if "skipped" in d) or "no [[mix]] or CLIP mixed pairs in the study"
        return _finding(6, "mix_helps", claim, UNMEASURABLE, None, None, "", why, details)
    ok = all(d["interval"][0] > 0 for d in measured)
    first = measured[0]
    parts = [f"{d['task']} {d['source']}: loss {d['loss_mix']:.3f} vs {d['loss_real']:.3f} real alone "
             f"(improvement {d['improvement']:+.3f} [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}])" for d in measured]
    return _finding(6, "mix_helps", claim, HOLDS if ok else FAILS, first["improvement"], first["interval"],
                    f"loss of real alone − loss with synthetic added ({first['task']} {first['source']}, largest scale)",
                    "; ".join(parts), details)


FINDINGS = (power_law, guidance, real_scales_better, shift_gap, recognizability_over_diversity, mix_helps)


def run_to_run_noise(r: Results) -> float | None:
    """Median over (source, scale) of the standard deviation of the validation loss across runs (repeats)."""
    s = r.classification()
    if not len(s) or s.run.nunique() < 2:
        return None
    g = s[s.eval_set == "val"].groupby(["source", "scale"])["loss"]
    sd = g.std().dropna()
    return float(sd.median()) if len(sd) else None


def findings(results_dir: str | Path, fc: FitConfig | None = None, n_boot: int | None = None) -> dict[str, Any]:
    """Test the six findings on `results_dir`'s tables; writes and returns findings.json's content.

    Intervals use the study's [fit] bootstrap replicates, confidence and seed (`fc`; where not given, the
    settings analysis.json records, else [fit]'s defaults); `n_boot` overrides the replicates."""
    results_dir = Path(results_dir)
    if fc is None:
        from synscale.atomic import read_json

        fc = FitConfig(**read_json(results_dir / "analysis.json", default={}).get("fit", {}))
    r = Results(results_dir, fc, n_boot)
    out = {"findings": [fn(r) for fn in FINDINGS], "run_to_run_noise": run_to_run_noise(r),
           "thresholds": {"r2_min": R2_MIN, "min_points": MIN_POINTS, "min_rows": MIN_ROWS, "bootstrap": r.n_boot,
                          "confidence": r.confidence, "seed": r.seed}}
    (results_dir / "findings.json").write_text(json.dumps(out, indent=1, default=float, allow_nan=True))
    return out


def format_findings(out: dict[str, Any]) -> list[str]:
    """One line per finding, for the terminal."""
    lines = []
    for f in out["findings"]:
        num = "" if f["value"] is None else f" {f['value']:+.3f}" + (
            f" [{f['interval'][0]:+.3f}, {f['interval'][1]:+.3f}]" if f["interval"] and
            all(math.isfinite(x) for x in f["interval"]) else "")
        lines.append(f"{f['finding']}. {f['claim']}: {f['verdict'].upper()}{num} — {f['why']}")
    return lines
