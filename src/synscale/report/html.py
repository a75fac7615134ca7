"""`W/report/index.html`: a static, self-contained page rebuilt from `W/results/*.parquet` alone.

Sections follow the paper: a plain-language summary, the synthetic training sets, scaling ability per
configuration (figure 1), recognizability/diversity against performance (figure 2, tables A4-A6), the
scaling curves with their fits and breaks (figure 3), distribution shifts (figure 4), per-class analysis
(figures 6, 7, A5, A13), the k predictor, CLIP (figure 8, table 1) and every trained model. Figures are
embedded as PNG (their SVGs sit beside the page); every text from the user's files is escaped; tables
sort by a click on their header (a few lines of inline script, no network).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.report import figures as F
from synscale.report.clip import only
from synscale.report.clip import section as clip_section
from synscale.report.forecasts import section as forecast_section
from synscale.report.forecasts import summary_item as forecast_summary
from synscale.report.loop import section as loop_section
from synscale.report.loop import summary_item as loop_summary
from synscale.report.parts import CSS, SORT_JS, esc, figure_html, interval, is_missing, table
from synscale.results import read_table

# the report's headers for the two LPIPS columns, which are not the same measure (docs/metrics.md)
LPIPS_HEADERS = {"lpips_ref": "LPIPS-style distance (reference network)", "lpips_alex": "LPIPS (AlexNet, paper)"}

# ---------------------------------------------------------------------------------------------------
# sections


def summary_items(fits: Any, per_class: Any, info: dict[str, Any], focus: str | None, d_ref: int) -> list[str]:
    """Plain-language findings, each an already-escaped HTML fragment."""
    out: list[str] = []
    if fits is None or not len(fits):
        return ["No scaling curve has two or more scales yet, so nothing was fitted."]
    val = fits[fits.eval_set == "val"].set_index("config")
    real = val.loc["real"] if "real" in val.index else None
    syn = val[val.source != "real"] if len(val) else val
    if real is not None:
        out.append(f"Real images scale with <b>k = {real.k:.3f}</b> {esc(interval(real.k_lo, real.k_hi))} on the real "
                   f"validation set; {_at_reference(info, 'classification/real/val', d_ref, math.exp(-real.perf_at_DI))}.")
    if len(syn):
        best = syn.sort_values("k", ascending=False)
        b = best.iloc[0]
        rel = f" ({b.k / real.k:.0%} of real)" if real is not None and real.k > 0 else ""
        out.append(f"The synthetic configuration that scales best is <b>{esc(str(best.index[0]))}</b>, k = {b.k:.3f} "
                   f"{esc(interval(b.k_lo, b.k_hi))}{esc(rel)}.")
        if real is not None:
            above = [str(c) for c, r in syn.iterrows() if r.k_lo > real.k_hi]
            below = [str(c) for c, r in syn.iterrows() if r.k_hi < real.k_lo]
            if below:
                out.append(f"Scaling clearly worse than real (the intervals do not overlap): {esc(', '.join(below))}.")
            if above:
                out.append(f"Scaling clearly better than real: {esc(', '.join(above))}.")
            by_perf = syn.sort_values("perf_at_DI", ascending=False)
            gap = math.exp(-by_perf.perf_at_DI.iloc[0]) - math.exp(-real.perf_at_DI)
            out.append(f"At D<sub>I</sub> the best-performing synthetic configuration, {esc(str(by_perf.index[0]))}, "
                       f"is projected to reach a loss {abs(gap):.3f} {'above' if gap > 0 else 'below'} that of real images.")
    out += _shift_items(fits, real) + _break_items(fits, info.get("fit", {}).get("break_tolerance", 0.05))
    cats = info.get("categories", {}).get(focus, {}) if focus else {}
    if cats:
        parts = [f'<span class="cat-{c}">{c}</span>: {esc(", ".join(cats[c]) or "none")}' for c in ("scaling", "easy", "poor")]
        out.append(f"Per class in {esc(focus)}: " + "; ".join(parts) + ".")
    pred = info.get("predictor", {}).get("class", {})
    if "mae" in pred:
        verdict = "beats" if pred["skill"] > 0 else "does not beat"
        out.append(f"Recognizability and diversity of the 50-per-class test sets predict per-class k with leave-one-out "
                   f"error {pred['mae']:.3f}, which {verdict} predicting the mean ({pred['mae_mean']:.3f}).")
    return out

def _at_reference(info: dict[str, Any], curve: str, d_ref: int, loss: float) -> str:
    """The fit's loss at D_I said with its calibrated forecast interval and horizon, or that the horizon is past
    what the backtests support; the power law in samples seen's forecast there, and the held-out model's loss
    where one was trained at D_I (synscale.analysis.forecast)."""
    fc = info.get("forecasts", {})
    at = fc.get("at_reference", {}).get(curve)
    if at is None or at["horizon"] <= 1:
        return f"the fit puts the loss at D<sub>I</sub> = {d_ref:,} at {loss:.3f}"
    conf = fc.get("confidence", 0.9)
    if at["supported"]:
        text = (f"the fit forecasts the loss at D<sub>I</sub> = {d_ref:,}, {at['horizon']:,.0f}× its largest scale, at "
                f"{at['loss']:.3f} [{at['lo']:.3f}, {at['hi']:.3f}] ({conf:.0%} interval calibrated on backtests)")
    else:
        text = (f"the fit would put the loss at D<sub>I</sub> = {d_ref:,} at {at['loss']:.3f}, but that is "
                f"{at['horizon']:,.0f}× its largest scale, past what the backtests support (×{at['max_horizon']:,.0f} at "
                "most): not a forecast")
    by_samples = fc.get("at_reference_samples", {}).get(curve)
    if by_samples and by_samples.get("lo") is not None:
        how = ("calibrated on backtests" if by_samples["supported"] else
               "its width extrapolated past the backtests")
        text += (f"; the power law in samples seen, ×{by_samples['horizon']:,.1f} past its largest run in samples, "
                 f"forecasts {by_samples['loss']:.3f} [{by_samples['lo']:.3f}, {by_samples['hi']:.3f}] ({how})")
    task, source, eval_set = curve.split("/", 2)
    held = [c for c in fc.get("checks", []) if (c["task"], c["source"], c["eval_set"]) == (task, source, eval_set)
            and int(c["scale"]) == d_ref]
    if held:
        text += f"; the model trained there, held out of the fits, measured <b>{held[0]['measured']:.3f}</b>"
    return text


def _shift_items(fits: Any, real: Any) -> list[str]:
    """Where synthetic training beats real at the largest scale on a shifted / OOD set (summary_items)."""
    shifted = fits[(fits.eval_set != "val") & ~fits.eval_set.str.startswith("probe:")]
    if not len(shifted) or real is None:
        return []
    closer = []
    for es, g in shifted.groupby("eval_set", sort=False):
        r = g[g.source == "real"]
        s = g[g.source != "real"]
        if len(r) and len(s):
            beat = s[s.loss_at_max < r.loss_at_max.iloc[0]]
            if len(beat):
                closer.append(f"{es} ({', '.join(beat.config)})")
    if closer:
        return ["Synthetic training beats real images at the largest scale on: " + esc("; ".join(closer)) + "."]
    return ["On every shifted / out-of-distribution set real images still give the lower loss at the largest scale."]


def _break_items(fits: Any, tol: float) -> list[str]:
    """The curves whose power law breaks, or that are too noisy to tell (summary_items)."""
    out = []
    broken = fits[fits.break_at.notna()] if "break_at" in fits else fits.iloc[:0]
    noisy = fits[fits.linear_points == 0] if "linear_points" in fits else fits.iloc[:0]
    if len(broken):
        out.append(f"The power law breaks (tolerance {tol:g} in log loss) on {len(broken)} of {len(fits)} curves: "
                   + esc("; ".join(f"{r.config} on {r.eval_set} {r.break_direction} after {r.linear_until:,.0f}"
                                   for r in broken.head(6).itertuples()))
                   + ("…" if len(broken) > 6 else "") + ".")
    elif not len(noisy):
        out.append("Every curve stays a straight line in log-log space over the scales trained (no break detected).")
    if len(noisy):
        out.append(f"{len(noisy)} of {len(fits)} curves are not within {tol:g} of a power law even on their first three "
                   "scales (too noisy to tell a break): " + esc(", ".join(f"{r.config} on {r.eval_set}" for r in noisy.head(8).itertuples()))
                   + ("…" if len(noisy) > 8 else "") + ".")
    return out


def _fits_table(fits: Any, d_ref: int) -> str:
    t = fits.assign(
        k_ci=[interval(a, b) for a, b in zip(fits.k_lo, fits.k_hi, strict=True)],
        perf_ci=[interval(a, b) for a, b in zip(fits.perf_lo, fits.perf_hi, strict=True)],
        scales=[f"{a:,}–{b:,}" for a, b in zip(fits.min_scale, fits.max_scale, strict=True)],
        sat_E_ci=[interval(a, b) for a, b in zip(fits.sat_E_lo, fits.sat_E_hi, strict=True)],
        sat_k_ci=[interval(a, b) for a, b in zip(fits.sat_k_lo, fits.sat_k_hi, strict=True)],
        breaks=["–" if is_missing(b) else f"{int(b):,} ({d})" for b, d in zip(fits.break_at, fits.break_direction, strict=True)],
    )[["config", "eval_set", "k", "k_ci", "perf_at_DI", "perf_ci", "r2", "rmse_log", "scales", "linear_until", "breaks",
       "sat_E", "sat_E_ci", "sat_k", "sat_k_ci"]]
    t = t.rename(columns={"k_ci": "k CI", "perf_at_DI": f"−log L({d_ref:,})", "perf_ci": "−log L CI", "r2": "R²",
                          "rmse_log": "RMSE (log)", "linear_until": "linear up to", "breaks": "break at",
                          "sat_E": "E", "sat_E_ci": "E CI", "sat_k": "k (sat.)", "sat_k_ci": "k (sat.) CI"})
    fmt = {"k": "{:.4f}", f"−log L({d_ref:,})": "{:.4f}", "R²": "{:.4f}", "RMSE (log)": "{:.4f}", "linear up to": "{:,.0f}",
           "E": "{:.3f}", "k (sat.)": "{:.3f}"}
    return table(t, fmt, left=("config", "eval_set", "k CI", "−log L CI", "scales", "break at", "E CI", "k (sat.) CI"),
                 table_id="fits")


def metrics_table(results: Path, scaling: Any, fits: Any) -> tuple[Any, str]:
    """Tables A4-A6 of the paper: per configuration, loss and top-1 at the largest scale on val beside
    the metrics of its test set. Returns (the joined table, a note on what is left out)."""
    m = read_table(results / "metrics.parquet")
    if m is None or not len(m):
        return None, ""
    val = scaling[scaling.eval_set == "val"]
    graded = val[val.config.isin(m.config)]  # the configurations with metrics: the grid's scale, not a loop's
    top = int(graded.scale.max()) if len(graded) else int(val.scale.max()) if len(val) else 0
    at = val[val.scale == top].groupby("config")[["loss", "top1"]].mean()
    from synscale.metrics.core import metric_columns

    cols = [c for c in metric_columns() if c in m and m[c].notna().any()]
    t = m.set_index("config")[cols].join(at, how="left")
    if fits is not None and len(fits):
        t = t.join(fits[fits.eval_set == "val"].set_index("config")[["k", "perf_at_DI"]], how="left")
    gen = read_table(results / "generation.parquet")
    if gen is not None and len(gen):
        t = gen.set_index("config")[["family", "strategy", "guidance_scale"]].join(t, how="right")
    t = t.reset_index().rename(columns={"loss": f"loss@{top:,}", "top1": f"top1@{top:,}", "guidance_scale": "guidance",
                                        "perf_at_DI": "−log L(D_I)", **LPIPS_HEADERS})
    missing = [c for c in ("lpips_alex", "fid_inception") if c not in cols]
    note = (f" {' and '.join(missing)} (the paper's AlexNet LPIPS and Inception FID) are left out: their pretrained weights "
            "are not on this machine (synscale doctor prints the command that fetches each; docs/metrics.md says where they go)." if missing else "")
    return t, note


def _metric_fmt(t: Any) -> dict[str, str]:
    fmt = {c: "{:.3f}" for c in t.columns if c not in ("config", "strategy", "family")}
    fmt.update({"guidance": "{:g}", "fd": "{:.2f}", "fd_class": "{:.2f}", "fid_inception": "{:.2f}", "k": "{:.4f}"})
    return fmt


def grouped_tables(t: Any) -> str:
    """Appendix C's three comparison groups, where the study has them:
    A4-style: the same model family and guidance, different prompt strategies;
    A5-style: the same prompt strategy, different model families (each at its guidance scales);
    A6-style: the same family and strategy, different guidance scales."""
    if t is None or "family" not in t:
        return ""
    syn = t[t.family.notna()]
    out = []
    groups = [
        ("A4", "prompt strategy", ["family", "guidance"], "strategy", lambda g: g.strategy.nunique() > 1),
        ("A5", "text-to-image model", ["strategy"], "family", lambda g: g.family.nunique() > 1),
        ("A6", "guidance scale", ["family", "strategy"], "guidance", lambda g: g["guidance"].nunique() > 1),
    ]
    for key, what, by, vary, ok in groups:
        parts = []
        for name, g in syn.groupby(by, sort=False):
            if not ok(g):
                continue
            name = name if isinstance(name, tuple) else (name,)
            fixed = ", ".join(f"{b} = {v:g}" if isinstance(v, float) else f"{b} = {v}" for b, v in zip(by, name, strict=True))
            g = g.sort_values(vary)
            parts.append(f"<h4>{esc(fixed)}</h4>" + table(g, _metric_fmt(g), left=("config", "strategy", "family")))
        if parts:
            out.append(f'<h3 id="table-{key}">Table {key}-style: comparison on {esc(what)}</h3>' + "".join(parts))
        else:
            out.append(f'<p class="missing" id="missing-table-{key}">Table {key}-style (comparison on {esc(what)}) is left out: '
                       f"no two configurations of this study differ only in their {esc(what)}.</p>")
    return "".join(out)


def _predictor_section(info: dict[str, Any], figs: str) -> str:
    import pandas as pd

    rows = []
    for level, s in info.get("predictor", {}).items():
        if "mae" in s:
            rows.append({"level": level, "n": s["n"], "configurations": s.get("groups", s["n"]), "LOO MAE": s["mae"], "MAE of the mean": s["mae_mean"], "skill": s["skill"],
                         "Spearman": s["spearman"], "∂k/∂recognizability": s["coef_recognizability"],
                         "∂k/∂diversity": s["coef_diversity"]})
    skipped = [f"<li>{esc(level)}: {esc(s['skipped'])}</li>" for level, s in info.get("predictor", {}).items() if "skipped" in s]
    tbl = table(pd.DataFrame(rows), {c: "{:.4f}" for c in ("LOO MAE", "MAE of the mean", "skill", "Spearman",
                                                           "∂k/∂recognizability", "∂k/∂diversity")}, left=("level",)) if rows else ""
    return f"""<section id="predictor"><h2>Predicting k before training at scale</h2>
<p>Can the cheap metrics tell how well a configuration will scale? A ridge regression of k on recognizability and
diversity (standardised, with intercept), scored before training as it would be used: every configuration's k is
predicted by the model fitted on the other configurations, and every class's k<sub>c</sub> by the model fitted on the
classes of the other configurations (leave-one-configuration-out). <i>skill</i> = 1 − MAE / MAE of predicting the mean
of the same training rows: above 0 the metrics carry information about k.</p>
{tbl}{"<ul>" + "".join(skipped) + "</ul>" if skipped else ""}
{figs}
</section>"""


def _per_class_section(per_class: Any, corr: Any, info: dict[str, Any], focus: str | None, figs: str,
                       focus_figs: str) -> str:
    """The per-class analysis: `figs` (every configuration's classes) above the categories, `focus_figs` (the focus
    configuration's) below them."""
    if per_class is None or not len(per_class):
        return ('<section id="per-class"><h2>Per-class analysis</h2><p class="missing">No per-class fits: '
                "scaling_per_class.parquet is absent or has fewer than two scales.</p></section>")
    fc = info.get("fit", {})
    lists = []
    shown = set(per_class.config)
    for config, cats in info.get("categories", {}).items():
        if config not in shown:  # CLIP's are in its own section
            continue
        items = "".join(f'<li><span class="cat-{c}">{c}</span> ({len(cats[c])}): {esc(", ".join(cats[c]) or "none")}</li>'
                        for c in ("scaling", "easy", "poor"))
        lists.append(f"<h4>{esc(config)}</h4><ul>{items}</ul>")
    pc = per_class[per_class.eval_set == "val"]
    cols = [c for c in ("config", "class_name", "category", "k", "k_lo", "k_hi", "perf_at_DI", "perf_at_max", "top1_at_max",
                        "recognizability", "diversity", "fd_class", "lpips_ref") if c in pc and (c in ("config", "class_name", "category") or pc[c].notna().any())]
    every = pc[cols].rename(columns=LPIPS_HEADERS)
    fmt = {c: "{:.3f}" for c in every.columns if c not in ("config", "class_name", "category")}
    corr_tbl = table(corr[["config", "metric", "rho", "p_value", "n"]].assign(metric=corr.metric.replace(LPIPS_HEADERS)),
                     {"rho": "{:.3f}", "p_value": "{:.3g}"}, left=("config", "metric")) if corr is not None and len(corr) else ""
    return f"""<section id="per-class"><h2>Per-class analysis</h2>
<p>Equation 2 fitted to every class's own validation loss curve (k<sub>c</sub>, −log L<sub>c</sub> at D<sub>I</sub>, with
bootstrap intervals over the class's examples). Categories, within each configuration, from the quantiles of k<sub>c</sub>
and −log L<sub>c</sub>(D<sub>I</sub>) at q<sub>low</sub> = {fc.get('category_low', 1 / 3):.3g} and
q<sub>high</sub> = {fc.get('category_high', 2 / 3):.3g}:
<span class="cat-poor">poor</span> = k ≤ q<sub>low</sub>(k) and perf ≤ q<sub>low</sub>(perf);
<span class="cat-easy">easy</span> = perf ≥ q<sub>high</sub>(perf) and k &gt; q<sub>low</sub>(k);
<span class="cat-scaling">scaling</span> = k ≥ q<sub>high</sub>(k) and perf &lt; q<sub>high</sub>(perf); other: the rest.
Figures 7 and A5 show {esc(focus or "–")}, the synthetic configuration with the best −log L(D<sub>I</sub>).</p>
{figs}
<h3>Classes by category (validation set)</h3>{"".join(lists)}
{focus_figs}
<h3>Spearman correlation of k<sub>c</sub> with per-class metrics</h3>{corr_tbl or '<p class="muted">none</p>'}
<h3>Every class</h3><div class="scroll">{table(every, fmt, left=("config", "class_name", "category"), table_id="per-class-table")}</div>
</section>"""


def _ensure_analysis(workdir: Path, results: Path) -> dict[str, Any]:
    """results/meta.json; runs the analysis first where its tables are missing."""
    meta = read_json(results / "meta.json", default={})
    needed = ("fits.parquet", "per_class.parquet", "correlations.parquet", "predictions.parquet", "forecasts.parquet",
              "forecast_calibration.parquet", "exchange.parquet", "analysis.json")
    if not all((results / n).exists() for n in needed):
        from synscale.analysis.run import analyse, reference_sizes
        from synscale.config import FitConfig

        study = read_json(workdir / "study.json", default={})
        if "d_ref" not in meta:
            raise FileNotFoundError(f"{results / 'meta.json'} with d_ref is needed to fit the results")
        analyse(results, reference_sizes(meta), FitConfig(**study.get("fit", {})))
    return meta


def _skipped_section(skipped: dict[str, Any], workdir: Path) -> str:
    """The real sets' samples that could not be read and were skipped within their error budget (none: nothing);
    each set's path as meta.json holds it (relative to the workdir)."""
    from synscale.workdir import resolve

    if not any(r.get("skipped") for r in skipped.values()):
        return ""
    rows = []
    for name, r in skipped.items():
        if r.get("skipped"):
            why = ", ".join(f"{esc(str(k))}: {v:,}" for k, v in r.get("reasons", {}).items())
            rows.append(f"<li>{esc(name)}: {r['skipped']:,} of {r['skipped'] + r['samples']:,} samples ({why}), listed in "
                        f"<code>{esc(str(resolve(r.get('path'), workdir) or ''))}/skipped.parquet</code></li>")
    return f"""<section id="skipped"><h2>Samples skipped</h2>
<p>These samples of the real data could not be read (an image that does not decode, an empty caption, ...) and were left
out, within the study's error budget (<code>data.max_bad_fraction</code>, <code>clip.pairs.max_bad_fraction</code>):</p>
<ul>{"".join(rows)}</ul></section>
"""


def _generation_section(gen: Any) -> str:
    if gen is None or not len(gen):
        return ""
    cols = ["config", "model", "family", "strategy", "guidance_scale", "steps", "images"]
    notes, fmt = [], {"guidance_scale": "{:g}", "images": "{:,}", "safety_regenerated": "{:,}"}
    if "guidance_convention" in gen and (gen.guidance_convention == "muse").any():
        gen = gen.assign(guidance_scale=[f"{g:g} (Muse's t)" if c == "muse" else f"{g:g}"
                                         for g, c in zip(gen.guidance_scale, gen.guidance_convention, strict=True)])
        fmt["guidance_scale"] = "{}"
        notes.append("A guidance marked <i>Muse's t</i> is stated in Muse's convention, (1 + t)·cond − t·uncond: "
                     "diffusers' scale 1 + t.")
    if "safety_checker" in gen and gen.safety_checker.any():
        cols.append("safety_regenerated")
        kept = gen[gen.safety_checker]
        notes.append(f"{len(kept)} configuration(s) kept their pipeline's safety checker: {int(kept.safety_regenerated.sum()):,} "
                     "flagged image(s) were generated again with the sample's next seed (column safety_regenerated); "
                     "none was written black under its label.")
    return f"""<section id="generation"><h2>Synthetic training sets</h2>
<p>Each synthetic configuration is one set generated at its guidance scale (class-balanced, one seed per image), of which
nested class-balanced subsets give the training scales; CLIP's synthetic pairs (strategy <i>captions</i>) have one image per
caption of the real pairs. Pipelines are loaded without their safety checkers unless a configuration keeps them.
{" ".join(notes)}</p>
{table(gen[cols], fmt, left=("config", "model", "family", "strategy"))}
</section>"""


def _metrics_html(results: Path, scaling: Any, fits: Any) -> str:
    """Every configuration's metrics beside its loss (and tables A4-A6), or why there are none."""
    mt, note = metrics_table(results, scaling, fits)
    if mt is None:
        return '<p class="missing">No metrics were measured in this study ([metrics] per_class = 0).</p>'
    return f"""<h3>Every configuration</h3>
<p>Loss and top-1 on the real validation set at the largest scale, k and −log L(D<sub>I</sub>), beside the metrics of the
configuration's own test set: recognizability = mean per-class F1 of the reference classifier; diversity = mean per-class
standard deviation of normalised features; fd = Fréchet distance to real validation images; fd_class = per-class FD against
real training images (appendix G.4); <i>LPIPS-style distance (reference network)</i> (column <code>lpips_ref</code>) =
mean distance of random same-class pairs in the reference network's feature maps, LPIPS's formula with uniform weights
(higher: more varied; not the paper's LPIPS, and not comparable with its values); <i>LPIPS (AlexNet, paper)</i> (column
<code>lpips_alex</code>) = the paper's LPIPS on the same pairs, where the AlexNet weights are on this machine.
The row <code>real</code> is a sample of the real validation set measured the same way.{esc(note)}</p>
{table(mt, _metric_fmt(mt), left=("config", "strategy", "family"), table_id="metrics")}{grouped_tables(mt)}"""


def _findings(results: Path) -> dict[str, Any]:
    from synscale.analysis.findings import findings

    path = results / "findings.json"
    return read_json(path) if path.exists() else findings(results)


def findings_item(results: Path) -> str:
    """The summary's line on the paper's findings."""
    out = _findings(results)["findings"]
    verbs = {"holds": ("holds", "hold"), "does not hold": ("does not hold", "do not hold"),
             "not measurable": ("is not measurable", "are not measurable")}
    parts = []
    for v, (one, many) in verbs.items():
        n = [str(f["finding"]) for f in out if f["verdict"] == v]
        if n:
            parts.append(f"finding {n[0]} {one}" if len(n) == 1 else f"findings {', '.join(n)} {many}")
    return (f'The paper\'s six findings on this run (<a href="#findings">tested below</a>): {esc("; ".join(parts))}.')


def findings_section(results: Path) -> str:
    """The paper's six findings tested on this run (results/findings.json, computed here where missing)."""
    out = _findings(results)
    rows = []
    for f in out["findings"]:
        val = "–" if f["value"] is None else f"{f['value']:+.3f}"
        iv = f["interval"]
        if f["value"] is not None and iv and all(isinstance(x, float) and x == x for x in iv):
            val += f" [{iv[0]:+.3f}, {iv[1]:+.3f}]"
        cls = {"holds": "ok", "does not hold": "bad"}.get(f["verdict"], "na")
        rows.append(f'<tr><td>{f["finding"]}</td><td class="l">{esc(f["claim"])}</td>'
                    f'<td class="l verdict {cls}">{esc(f["verdict"])}</td><td>{esc(val)}</td>'
                    f'<td class="l">{esc(f["measure"])}</td><td class="l">{esc(f["why"])}</td></tr>')
    noise = out.get("run_to_run_noise")
    th = out.get("thresholds", {})
    conf, n_boot = th.get("confidence", 0.95), th.get("bootstrap", 1000)
    noise_html = (f"<p>Run-to-run noise (median over curves and scales of the standard deviation of the validation loss "
                  f"across repeats): {noise:.4f}.</p>" if noise is not None else
                  "<p>This run has one training run per point (repeats = 1): run-to-run noise is not measured; "
                  "<code>--size full</code> trains three.</p>")
    return f"""<section id="findings"><h2>The paper's findings, tested on this run</h2>
<p>Each finding of the paper as a measurement on this study, with its {conf:.0%} bootstrap interval ({n_boot:,} replicates,
the study's <code>[fit]</code> settings) and a plain verdict. These are
measurements, not targets; the rules (fixed in synscale.analysis.findings) are in docs/findings.md, with a full run's
numbers beside the demo's.</p>
<table id="findings-table"><thead><tr><th>#</th><th class="l">finding</th><th class="l">verdict</th><th>value [interval]</th>
<th class="l">measure</th><th class="l">why</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{noise_html}</section>"""


def write_report(workdir: str | Path, title: str) -> Path:
    """Rebuild W/report/index.html (and its figures) from W/results; runs the analysis first if its
    tables are missing."""
    from synscale.stage import building_dir, recover_dir

    workdir = Path(workdir)
    results = workdir / "results"
    recover_dir(results)
    if not (results / "scaling.parquet").exists():
        raise FileNotFoundError(f"{results / 'scaling.parquet'} does not exist: run the study first")
    meta = _ensure_analysis(workdir, results)
    with building_dir(workdir / "report") as out:  # the page and its figures replace the old ones whole
        _write_page(results, out, meta, title)
    return workdir / "report" / "index.html"


def _top(title: str, results: Path, d_ref: int, info: dict[str, Any]) -> str:
    """The page's head, title, provenance line and navigation."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>synscale report: {esc(title)}</title><style>{CSS}</style></head><body>
<h1>synscale report: {esc(title)}</h1>
<p class="muted">Built {time.strftime('%Y-%m-%d %H:%M')} from {esc(str(results))} (D<sub>I</sub> = {d_ref:,}; bootstrap
{int(info.get('bootstrap', 0)):,} replicates, {info.get('fit', {}).get('confidence', 0.95):.0%} intervals).</p>
<nav><a href="#summary">Summary</a><a href="#ability">Scaling ability</a><a href="#quality">Recognizability &amp; diversity</a>
<a href="#scaling">Scaling curves</a><a href="#ood">Shifts</a><a href="#per-class">Per class</a><a href="#predictor">Predicting k</a><a href="#forecasts">Forecasts</a><a href="#loop">Where generation pays</a>
<a href="#samples">Images</a><a href="#clip">CLIP</a><a href="#findings">Findings</a><a href="#points">Every model</a>
<a href="#method">Method</a></nav>"""


def _points_section(everything: Any) -> str:
    """Every trained model's row (the report's last table)."""
    cols = [c for c in ("task", "config", "eval_set", "scale", "run", "real_images", "synthetic_images", "loss", "top1",
                        "n_eval") if c in everything and (c not in ("run", "task") or everything[c].nunique() > 1)]
    points = everything[cols].sort_values([c for c in ("task", "config", "eval_set", "scale") if c in cols])
    fmt = {"loss": "{:.4f}", "top1": "{:.4f}", "scale": "{:,}", "real_images": "{:,}", "synthetic_images": "{:,}",
           "n_eval": "{:,}"}
    return (f'<section id="points"><h2>Every trained model</h2><div class="scroll">\n'
            f'{table(points, fmt, left=("task", "config", "eval_set"), table_id="points")}\n</div></section>')


def _method_section(info: dict[str, Any]) -> str:
    return f"""<section id="method"><h2>Method</h2>
<p>Fits are ordinary least squares of log L on log D (natural logs). Intervals are percentile bootstrap intervals: each
replicate redraws the evaluation examples with replacement (the same draw for every scale when all scales share one
evaluation set) and, where a scale has several training runs, the runs; per-class intervals redraw the class's own
examples. The break is the first scale after the longest prefix of scales whose own log-log fit keeps every residual
within {info.get('fit', {}).get('break_tolerance', 0.05):g} (natural log of the loss). The saturating fit minimises the squared
log residuals with E in [0, min L). Everything on this page is rebuilt from W/results by <code>synscale report W</code>;
<code>synscale fit W</code> recomputes the analysis tables. docs/analysis.md has the details.</p>
</section>"""


def _read_tables(results: Path) -> tuple[F.Tables, Any, Any]:
    """The tables the page shows (classifier and CLIP rows apart), with every model's rows and every generated set."""
    def read(name: str) -> Any:
        return read_table(results / name)

    everything, all_fits, all_gen = read("scaling.parquet"), read("fits.parquet"), read("generation.parquet")
    fits, gen = only(all_fits, "classification"), only(all_gen, "classification")
    t = F.Tables(scaling=only(everything, "classification"), fits=fits, per_class=only(read("per_class.parquet"), "classification"),
                 curves=only(read("scaling_per_class.parquet"), "classification"), correlations=read("correlations.parquet"),
                 predictions=read("predictions.parquet"), metrics=read("metrics.parquet"), generation=gen,
                 focus=F.focus_config(fits, gen), clip_scaling=only(everything, "clip"), clip_fits=only(all_fits, "clip"),
                 exchange=read("exchange.parquet"), checks=read("forecast_checks.parquet"),
                 allocation=read("allocation.parquet"), loop=read("loop.parquet"), loop_target=read("loop_target.parquet"))
    return t, everything, all_gen


def _write_page(results: Path, out: Path, meta: dict[str, Any], title: str) -> None:
    t, everything, all_gen = _read_tables(results)
    scaling, fits, per_class, corr, focus = t.scaling, t.fits, t.per_class, t.correlations, t.focus
    info = read_json(results / "analysis.json")
    d_ref = int(info.get("d_ref", meta.get("d_ref", 0)))
    figs = F.draw_all(t, out)

    def shown(section: str, focus: bool | None = None) -> str:
        return "\n".join(figure_html(f) for f in F.in_section(figs, section, focus))
    from synscale.report.samples import samples_section

    curve_configs = tuple(fits[(fits.eval_set == "val") & (fits.source != "real")].source) if fits is not None and len(fits) else ()
    samples_html = samples_section(results, out, t.generation, per_class, read_table(results / "metrics_per_class.parquet"),
                                   meta.get("real_train_path"), curve_configs)
    clip_html = clip_section(t.clip_scaling, t.clip_fits, info, F.in_section(figs, "clip"))

    # the closed loop's curves (docs/adaptive.md) have their own summary line: the configurations' lines leave them out
    loop = {n for lp in meta.get("loops", []) for n in (lp["adaptive"], lp["uniform"], *lp["retrieved"])}
    grid_fits = fits[~fits.source.isin(loop)] if fits is not None and len(fits) else fits
    items = summary_items(grid_fits, per_class, info, focus, d_ref) if len(scaling) or not len(everything) else [
        "This study trained no classifiers; the CLIP section has its findings."]
    items += [s for s in (forecast_summary(results, loop), loop_summary(info)) if s]
    items.append(findings_item(results))

    page = f"""{_top(title, results, d_ref, info)}
<section id="summary" class="summary"><h2>What this study found</h2><ul>{"".join(f"<li>{s}</li>" for s in items)}</ul></section>
{_skipped_section(meta.get("skipped", {}), results.parent)}{_generation_section(all_gen)}
<section id="ability"><h2>Scaling ability per configuration</h2>
<p>Equation 2 of the paper, log L = −k (log D − log D<sub>I</sub>) + log L<sub>D<sub>I</sub></sub>, fitted per configuration
and evaluation set: k is the scaling ability (larger: the loss falls faster with more data), −log L(D<sub>I</sub>) the performance
at D<sub>I</sub> (larger: better). <i>linear up to</i> is the largest scale of the longest prefix on which the power law holds;
E and k (sat.) are the saturating fit L = E + A·(D/D<sub>I</sub>)<sup>−k</sup> (four or more scales).</p>
{shown("ability")}
{_fits_table(fits, d_ref) if fits is not None and len(fits) else '<p class="missing">No fits.</p>'}
</section>
<section id="quality"><h2>Recognizability, diversity and performance</h2>
{shown("quality")}
{_metrics_html(results, scaling, fits)}
</section>
<section id="scaling"><h2>Scaling curves</h2>
{shown("scaling")}
</section>
<section id="ood"><h2>Distribution shifts and downstream probes</h2>
{shown("ood")}
</section>
{_per_class_section(per_class, corr, info, focus, shown("per-class", focus=False),
                     shown("per-class", focus=True))}
{_predictor_section(info, shown("predictor"))}
{forecast_section(results, info, shown("forecasts"))}
{loop_section(results, info, shown("loop"))}
{samples_html}
{clip_html}
{findings_section(results)}
{_points_section(everything)}
{_method_section(info)}
<script>{SORT_JS}</script>
</body></html>
"""
    (out / "index.html").write_text(page, encoding="utf-8")
