"""The analysis tables, rebuilt from `W/results/*.parquet` alone (no training): `synscale fit W`.

Writes into W/results:
- fits.parquet        one row per (source, config, eval_set): Equation 2 (k, -log L(D_I), R², residuals,
                      bootstrap CIs), the break (largest linear prefix) and the saturating fit with its CIs.
- per_class.parquet   one row per (config, eval_set, class): k_c, -log L_c(D_I) with CIs, final loss,
                      category (poor / easy / scaling / other), and the class's recognizability,
                      diversity, FD, LPIPS-style distance... from metrics_per_class.parquet.
- correlations.parquet  Spearman ρ of k_c with each per-class metric, per configuration (figure A13).
- predictions.parquet   k predicted from recognizability and diversity, by leave-one-out.
- forecasts.parquet, forecast_calibration.parquet, exchange.parquet   backtests of every curve's forecasts, the
                      intervals they calibrate, and the real images each image of a curve is worth
                      (synscale.analysis.forecast).
- analysis.json       the settings, the predictor's leave-one-out summary, the class lists and the forecasts'
                      coverage.
- findings.json       the paper's six findings tested on these tables (synscale.analysis.findings).

The rules are in docs/analysis.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from synscale.analysis.fit import (
    reference_size,
    bootstrap_fit_points,
    bootstrap_replicates,
    break_direction,
    class_fits_vectorised,
    fit_power_law,
    fit_saturating,
    linear_range,
    log_residuals,
    point_replicates,
    with_intervals,
)
from synscale.analysis.predict import FEATURES, evaluate_predictor, fit_predictor
from synscale.config import FitConfig
from synscale.metrics.core import metric_columns

KEYS = ["source", "config", "eval_set"]
PER_CLASS_METRICS = tuple(metric_columns(per_class=True))  # every registered metric's per-class columns
CATEGORIES = ("poor", "easy", "scaling", "other")
FLOOR = 1e-8  # a class whose every example has ~zero loss still gets a finite log


def _read(path: Path) -> Any:
    from synscale.results import read_table

    return read_table(path)


class CurveExamples:
    """The per-example losses of every curve, grouped once from scaling_examples.parquet; each curve's
    arrays are built once and shared by the configuration and per-class fits."""

    def __init__(self, examples: Any) -> None:
        self.groups = {} if examples is None else dict(tuple(examples.groupby(KEYS, sort=False)))
        self.built: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[str, str, str], scales: list[int]) -> tuple[list[np.ndarray], np.ndarray | None] | None:
        """Per scale, the (runs, n) per-example losses of one curve, and the labels if every scale has the
        same examples in the same order; None if a scale has no examples."""
        memo = (*key, *scales)
        if memo not in self.built:
            self.built[memo] = self._build(self.groups.get(key), scales)
        return self.built[memo]

    @staticmethod
    def _build(e: Any, scales: list[int]) -> tuple[list[np.ndarray], np.ndarray | None] | None:
        if e is None:
            return None
        out, labels = [], None
        paired = True
        for s in scales:
            runs = e[e.scale == s]
            if not len(runs):
                return None
            arrs = [np.asarray(v, np.float64) for v in runs["example_loss"]]
            if len({len(a) for a in arrs}) != 1:
                arrs = arrs[:1]  # runs on different evaluation sets cannot be stacked: keep the first
            out.append(np.stack(arrs))
            lab = np.asarray(runs["label"].iloc[0])
            if labels is None:
                labels = lab
            elif len(lab) != len(labels) or not np.array_equal(lab, labels):
                paired = False
        return out, (labels if paired else None)


def _curve_fit(scales: np.ndarray, means: np.ndarray, ex: list[np.ndarray] | None, d_ref: float, fc: FitConfig,
               n_boot: int) -> dict[str, Any]:
    """Equation 2 with its intervals, the break and the saturating fit of one curve. The bootstrap
    replicates are drawn once and serve both fits."""
    means = np.maximum(means, FLOOR)
    reps = None
    if ex is not None:
        ex = [np.maximum(e, 0.0) for e in ex]
        fit = fit_power_law(scales, np.maximum([e.mean() for e in ex], FLOOR), d_ref)  # = bootstrap_fit's point fit
        if n_boot:
            reps = np.maximum(bootstrap_replicates(ex, n_boot, fc.seed), FLOOR)
    else:
        fit = fit_power_law(scales, means, d_ref)
        if n_boot and len(scales) >= 3:
            reps = point_replicates(scales, means, d_ref, n_boot, fc.seed)
    if reps is not None:
        fit = with_intervals(fit, scales, reps, d_ref, fc.confidence)
    resid = log_residuals(scales, means, fit)
    row: dict[str, Any] = {**fit.as_row(), "residuals": resid.tolist(), "rmse_log": float(np.sqrt(np.mean(resid**2)))}
    alpha = (1 - fc.confidence) / 2  # the mean loss at the largest scale, from the same replicates
    last = np.quantile(reps[:, -1], [alpha, 1 - alpha]) if reps is not None and ex is not None else (math.nan, math.nan)
    row.update(loss_at_max_lo=float(last[0]), loss_at_max_hi=float(last[1]))
    m = linear_range(scales, means, d_ref, fc.break_tolerance)
    has_break = 0 < m < len(scales)
    row.update(linear_points=m, linear_until=float(scales[m - 1]) if m else math.nan,
               break_at=float(scales[m]) if has_break else math.nan,
               break_direction=break_direction(scales, means, d_ref, m))
    lin = fit_power_law(scales[:m], means[:m], d_ref) if has_break else fit
    row.update(k_linear=lin.k if m else math.nan, perf_linear=lin.perf_at_DI if m else math.nan)
    sat = {"sat_E": math.nan, "sat_A": math.nan, "sat_k": math.nan, "sat_perf_at_DI": math.nan, "sat_rmse_log": math.nan,
           "sat_E_lo": math.nan, "sat_E_hi": math.nan, "sat_k_lo": math.nan, "sat_k_hi": math.nan}
    if len(scales) >= 4:
        nb = min(n_boot, fc.saturating_bootstrap)
        s = fit_saturating(scales, means, d_ref, reps[:nb] if reps is not None and nb else None, fc.confidence)
        sat = {"sat_E": s.E, "sat_A": s.A, "sat_k": s.k, "sat_perf_at_DI": s.perf_at_DI, "sat_rmse_log": s.rmse_log,
               "sat_E_lo": s.E_lo, "sat_E_hi": s.E_hi, "sat_k_lo": s.k_lo, "sat_k_hi": s.k_hi}
    row.update(sat)
    return row


def reference_sizes(meta: dict[str, Any]) -> dict[str, float]:
    """D_I of Equation 2 per task, from results/meta.json (`d_ref`; CLIP's `d_ref_clip`, in captions)."""
    refs = {"classification": float(meta["d_ref"])}
    if meta.get("d_ref_clip"):
        refs["clip"] = float(meta["d_ref_clip"])
    return refs


def _task(g: Any) -> str:
    """A curve's task: `classification` (and for results written before CLIP existed) or `clip`."""
    return str(g["task"].iloc[0]) if "task" in g else "classification"


def config_fits(scaling: Any, examples: CurveExamples, d_ref: float | dict[str, float], fc: FitConfig,
                n_boot: int | None = None) -> Any:
    """fits.parquet's rows: every (source, config, eval_set) curve with at least two scales; `d_ref`: one
    D_I, or one per task."""
    import pandas as pd

    n_boot = fc.bootstrap if n_boot is None else n_boot
    rows = []
    for (source, config, eval_set), g in scaling.groupby(KEYS, sort=False):
        per_scale = g.groupby("scale").agg(loss=("loss", "mean"), top1=("top1", "mean"), runs=("loss", "size"))
        if len(per_scale) < 2:
            continue
        scales = per_scale.index.to_numpy(float)
        got = examples.get((source, config, eval_set), per_scale.index.tolist())
        row = _curve_fit(scales, per_scale["loss"].to_numpy(), got[0] if got else None, reference_size(d_ref, _task(g)), fc, n_boot)
        rows.append({"source": source, "config": config, "eval_set": eval_set, "task": _task(g), **row,
                     "min_scale": int(scales.min()), "max_scale": int(scales.max()), "runs": int(per_scale["runs"].max()),
                     "loss_at_max": float(per_scale["loss"].iloc[-1]), "top1_at_max": float(per_scale["top1"].iloc[-1])})
    return pd.DataFrame(rows)


def class_fits(per_class_curves: Any, examples: CurveExamples, d_ref: float | dict[str, float], fc: FitConfig,
               n_boot: int | None = None) -> Any:
    """One row per (source, config, eval_set, class): Equation 2 on the class's own loss curve, all
    classes of a curve at once (`class_fits_vectorised`); from mean losses alone (residual bootstrap)
    where the per-example losses are missing."""
    import pandas as pd

    n_boot = fc.bootstrap if n_boot is None else n_boot
    rows = []
    for (source, config, eval_set), g in per_class_curves.groupby(KEYS, sort=False):
        task = _task(g)
        ref = reference_size(d_ref, task)
        per = g.groupby(["class_index", "scale"]).agg(loss=("loss", "mean"), top1=("top1", "mean"), n=("n", "max"))
        loss, top1, n = (per[c].unstack("scale").sort_index(axis=1) for c in ("loss", "top1", "n"))
        if loss.shape[1] < 2:
            continue
        ok = loss.notna().all(axis=1) & (n.fillna(0).min(axis=1) > 0)
        loss, top1, n = loss[ok], top1[ok], n[ok]
        if not len(loss):
            continue
        classes = loss.index.to_numpy()
        names = g.drop_duplicates("class_index").set_index("class_index")["class_name"]
        scales = loss.columns.to_numpy(float)
        got = examples.get((source, config, eval_set), loss.columns.tolist())
        if got is not None and got[1] is not None and np.isin(classes, got[1]).all():
            res = class_fits_vectorised(scales, [np.maximum(e, 0.0) for e in got[0]], got[1], classes, ref, n_boot,
                                        fc.confidence, fc.seed, FLOOR)
        else:
            fits = [bootstrap_fit_points(scales, np.maximum(row, FLOOR), ref, n_boot, fc.confidence, fc.seed)
                    for row in loss.to_numpy()]
            res = {c: np.array([getattr(f, c) for f in fits]) for c in ("k", "perf_at_DI", "r2", "k_lo", "k_hi", "perf_lo", "perf_hi")}
            res["rmse_log"] = np.array([np.sqrt(np.mean(log_residuals(scales, np.maximum(row, FLOOR), f) ** 2))
                                        for row, f in zip(loss.to_numpy(), fits, strict=True)])
        final = np.maximum(loss.iloc[:, -1].to_numpy(), FLOOR)
        for i, ci in enumerate(classes):
            rows.append({"source": source, "config": config, "eval_set": eval_set, "task": task, "class_index": int(ci),
                         "class_name": str(names[ci]), "k": float(res["k"][i]), "perf_at_DI": float(res["perf_at_DI"][i]),
                         "r2": float(res["r2"][i]), "n_points": len(scales), "d_ref": ref,
                         "k_lo": float(res["k_lo"][i]), "k_hi": float(res["k_hi"][i]),
                         "perf_lo": float(res["perf_lo"][i]), "perf_hi": float(res["perf_hi"][i]),
                         "rmse_log": float(res["rmse_log"][i]), "loss_at_max": float(final[i]),
                         "perf_at_max": float(-np.log(final[i])), "top1_at_max": float(top1.iloc[i, -1]),
                         "n_eval": int(n.iloc[i].max())})
    return pd.DataFrame(rows)


def categorise(k: np.ndarray, perf: np.ndarray, low: float = 1 / 3, high: float = 2 / 3) -> np.ndarray:
    """Section 4.6's class categories from the quantiles of k and of -log L(D_I) within one configuration:

    - poor:    k <= q_k(low)  and perf <= q_perf(low)    (bottom-left: neither scales nor performs)
    - easy:    perf >= q_perf(high) and k > q_k(low)      (top: good performance, scaling not poor)
    - scaling: k >= q_k(high) and perf < q_perf(high)     (right, not top: scales well from a weaker start)
    - other:   the rest.
    """
    k, perf = np.asarray(k, float), np.asarray(perf, float)
    out = np.full(len(k), "other", dtype=object)
    if len(k) < 3:
        return out
    k_lo, k_hi = np.quantile(k, [low, high])
    p_lo, p_hi = np.quantile(perf, [low, high])
    out[(k >= k_hi) & (perf < p_hi)] = "scaling"
    out[(perf >= p_hi) & (k > k_lo)] = "easy"
    out[(k <= k_lo) & (perf <= p_lo)] = "poor"
    return out


def add_categories_and_metrics(per_class: Any, metrics_pc: Any, fc: FitConfig) -> Any:
    import pandas as pd

    if not len(per_class):
        out = per_class.assign(category=pd.Series(dtype=object))
    else:
        out = pd.concat([g.assign(category=categorise(g["k"], g["perf_at_DI"], fc.category_low, fc.category_high))
                         for _, g in per_class.groupby(KEYS, sort=False)])
    if len(out) and metrics_pc is not None and len(metrics_pc):
        cols = [c for c in PER_CLASS_METRICS if c in metrics_pc.columns]
        m = metrics_pc[["config", "class_index", *cols]]
        out = out.merge(m, on=["config", "class_index"], how="left")
    for c in PER_CLASS_METRICS:
        if c not in out:
            out[c] = math.nan
    return out.reset_index(drop=True)


def correlations(per_class: Any, eval_set: str = "val") -> Any:
    """Spearman ρ of k_c with every per-class metric, per configuration (figure A13 of the paper)."""
    import pandas as pd
    from scipy.stats import spearmanr

    rows = []
    pc = per_class[per_class.eval_set == eval_set]
    for config, g in pc.groupby("config", sort=False):
        for metric in PER_CLASS_METRICS:
            ok = g[["k", metric]].dropna()
            if len(ok) < 3 or ok[metric].nunique() < 2 or ok["k"].nunique() < 2:
                continue
            r = spearmanr(ok["k"], ok[metric])
            rows.append({"config": config, "eval_set": eval_set, "metric": metric, "rho": float(r.statistic),
                         "p_value": float(r.pvalue), "n": len(ok)})
    return pd.DataFrame(rows, columns=["config", "eval_set", "metric", "rho", "p_value", "n"])


def predictions(fits: Any, per_class: Any, metrics: Any, eval_set: str = "val") -> tuple[Any, dict[str, Any]]:
    """k (per configuration) and k_c (per synthetic configuration and class) predicted from
    recognizability and diversity by leave-one-out; configurations with metrics but no fit get the
    full model's prediction."""
    import pandas as pd

    rows, summary = [], {}
    # per class: every synthetic configuration's classes (all configurations' if none is synthetic)
    pc = per_class[(per_class.eval_set == eval_set)].dropna(subset=["k", *FEATURES]) if len(per_class) else per_class
    if len(pc):
        syn = pc[pc.source != "real"]
        pc = syn if len(syn) else pc
    try:
        s, pred = evaluate_predictor(pc[list(FEATURES)].to_numpy(), pc["k"].to_numpy(), "class",
                                     groups=pc["config"].to_numpy())
        summary["class"] = s.as_dict()
        rows += [{"level": "class", "config": r.config, "class_index": int(r.class_index), "class_name": r.class_name,
                  "k": float(r.k), "k_pred": float(p), "recognizability": float(r.recognizability),
                  "diversity": float(r.diversity)} for r, p in zip(pc.itertuples(), pred, strict=True)]
    except (ValueError, KeyError) as e:
        summary["class"] = {"skipped": f"per-class prediction skipped: {e}"}
    # per configuration (real included: it has metrics like any configuration)
    if metrics is not None and len(metrics) and all(f in metrics for f in FEATURES) and len(fits):
        f = fits[fits.eval_set == eval_set][["config", "k"]]
        m = metrics[["config", *FEATURES]].dropna().merge(f, on="config", how="left")
        known = m.dropna(subset=["k"])
        try:
            s, pred = evaluate_predictor(known[list(FEATURES)].to_numpy(), known["k"].to_numpy(), "config")
            summary["config"] = s.as_dict()
            rows += [{"level": "config", "config": r.config, "class_index": -1, "class_name": "", "k": float(r.k),
                      "k_pred": float(p), "recognizability": float(r.recognizability), "diversity": float(r.diversity)}
                     for r, p in zip(known.itertuples(), pred, strict=True)]
        except ValueError as e:
            summary["config"] = {"skipped": f"{e} (configurations with both metrics and a fit on {eval_set})"}
        unknown = m[m["k"].isna()]
        if len(unknown) and len(known) >= 2:
            model = fit_predictor(known[list(FEATURES)].to_numpy(), known["k"].to_numpy())
            for r, p in zip(unknown.itertuples(), model.predict(unknown[list(FEATURES)].to_numpy()), strict=True):
                rows.append({"level": "config", "config": r.config, "class_index": -1, "class_name": "", "k": math.nan,
                             "k_pred": float(p), "recognizability": float(r.recognizability), "diversity": float(r.diversity)})
    else:
        summary["config"] = {"skipped": "no metrics.parquet with recognizability and diversity"}
    cols = ["level", "config", "class_index", "class_name", "k", "k_pred", "recognizability", "diversity"]
    return pd.DataFrame(rows, columns=cols), summary


def analyse(results_dir: str | Path, d_ref: float | dict[str, float], fc: FitConfig, n_boot: int | None = None) -> dict[str, Any]:
    """Every analysis table from the results tables; returns them by name. `d_ref`: D_I, one or per task
    (`reference_sizes`)."""
    results_dir = Path(results_dir)
    fc.check()
    from synscale.results import read_table

    scaling = read_table(results_dir / "scaling.parquet", empty_ok=False)
    if scaling is None:
        raise FileNotFoundError(f"{results_dir / 'scaling.parquet'} does not exist: run the study first")
    examples = CurveExamples(_read(results_dir / "scaling_examples.parquet"))
    fits = config_fits(scaling, examples, d_ref, fc, n_boot)
    fits.to_parquet(results_dir / "fits.parquet", index=False)
    curves = _read(results_dir / "scaling_per_class.parquet")
    per_class = class_fits(curves, examples, d_ref, fc, n_boot) if curves is not None else None
    import pandas as pd

    if per_class is None or not len(per_class):
        per_class = pd.DataFrame(columns=[*KEYS, "class_index", "class_name", "k", "perf_at_DI"])
    per_class = add_categories_and_metrics(per_class, _read(results_dir / "metrics_per_class.parquet"), fc)
    per_class.to_parquet(results_dir / "per_class.parquet", index=False)
    corr = correlations(per_class)
    corr.to_parquet(results_dir / "correlations.parquet", index=False)
    preds, summary = predictions(fits, per_class, _read(results_dir / "metrics.parquet"))
    preds.to_parquet(results_dir / "predictions.parquet", index=False)
    cats: dict[str, dict[str, list[str]]] = {}
    for (config, eval_set), g in per_class.groupby(["config", "eval_set"], sort=False):
        if eval_set == "val":
            cats[config] = {c: g[g.category == c].sort_values("k", ascending=False)["class_name"].tolist() for c in CATEGORIES}
    from synscale.analysis.forecast import Bootstrap, forecast_tables
    from synscale.atomic import read_json

    info = {"d_ref": reference_size(d_ref, "classification"), "d_ref_clip": reference_size(d_ref, "clip"), "fit": {k: getattr(fc, k) for k in fc.__dataclass_fields__},
            "bootstrap": fc.bootstrap if n_boot is None else n_boot, "predictor": summary, "categories": cats,
            "forecasts": forecast_tables(results_dir, scaling, d_ref, fc.forecast_confidence,
                                         read_table(results_dir / "holdout.parquet"),
                                         read_json(results_dir / "meta.json", default={}).get("samples_d_ref", {}),
                                         Bootstrap(examples, fc.bootstrap if n_boot is None else n_boot, fc.seed,
                                                   fc.forecast_confidence), curves)}
    loops = read_json(results_dir / "meta.json", default={}).get("loops", [])
    if loops:
        from synscale.analysis.loop import loop_tables

        info["loop"] = loop_tables(results_dir, scaling, examples, fits, loops,
                                   min(fc.bootstrap if n_boot is None else n_boot, 1000), fc.confidence, fc.seed)
    (results_dir / "analysis.json").write_text(json.dumps(info, indent=1, default=float))
    from synscale.analysis.findings import findings

    findings(results_dir, fc, n_boot)  # findings.json: the paper's six findings on these tables
    return {"fits": fits, "per_class": per_class, "correlations": corr, "predictions": preds, "analysis": info}


def refit(workdir: Path, n_boot: int | None = None) -> None:
    """`synscale fit W`: every analysis table of a workdir recomputed from its results tables alone (with the
    study's [fit] settings; `n_boot` replicates where given), put in place whole or not at all."""
    import shutil

    from synscale.atomic import read_json
    from synscale.stage import building_dir, recover_dir

    results = workdir / "results"
    recover_dir(results)
    for need in (results / "scaling.parquet", results / "meta.json"):
        if not need.exists():
            raise FileNotFoundError(f"{need} does not exist: run the study first (synscale study ... --workdir {workdir})")
    study = read_json(workdir / "study.json", default={})
    d_ref = reference_sizes(read_json(results / "meta.json"))
    fc = FitConfig(**study.get("fit", {}))
    fc.check()
    from synscale.results import read_table

    for name in ("scaling", "scaling_per_class", "scaling_examples", "metrics", "metrics_per_class", "generation",
                 "holdout"):
        read_table(results / f"{name}.parquet", empty_ok=name != "scaling")  # a bad table named where it is
    with building_dir(results) as tmp:  # the analysis tables replace the old ones whole, or not at all
        for p in results.iterdir():
            if p.is_file():
                shutil.copy2(p, tmp / p.name)
        analyse(tmp, d_ref, fc, n_boot)
