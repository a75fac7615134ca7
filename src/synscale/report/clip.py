"""The report's CLIP section (paper section 5): figure 8, a table-1-style table of zero-shot top-1 per
evaluation set, source and scale, the Equation 2 fits of the CLIP curves and how the sources compare.

CLIP rows are the results' rows with `task == "clip"`; a scale is a number of captions, and every source
at one scale was trained on the same captions.
"""

from __future__ import annotations

import math
from typing import Any

from synscale.report import figures as F
from synscale.report.parts import esc, figure_html, interval, table


def only(df: Any, task: str) -> Any:
    """The rows of one task (`classification` or `clip`); results written before CLIP existed are all
    classification."""
    if df is None:
        return None
    if "task" not in df:
        return df if task == "classification" else df.iloc[:0]
    return df[df.task == task].reset_index(drop=True)


def summary_items(scaling: Any, fits: Any, d_ref: int) -> list[str]:
    """How the CLIP sources compare on the real test set: k with its interval, the zero-shot loss and top-1
    at the largest scale (with the loss's interval), and which differences the intervals resolve."""
    if fits is None or not len(fits):
        return []
    val = fits[fits.eval_set == "val"]
    if not len(val):
        return []
    kind = F.source_kind(scaling)
    top = int(val.max_scale.max())
    parts = []
    for r in val.sort_values("k", ascending=False).itertuples():
        parts.append(f"<b>{esc(r.config)}</b> ({esc(kind.get(r.config, '?'))}): k = {r.k:.3f} {esc(interval(r.k_lo, r.k_hi))}, "
                     f"loss {r.loss_at_max:.3f} {esc(interval(r.loss_at_max_lo, r.loss_at_max_hi))} and top-1 "
                     f"{r.top1_at_max:.1%} at {r.max_scale:,} captions")
    out = ["CLIP, zero-shot on the real test set: " + "; ".join(parts) + "."]
    real = val[val.config.map(kind) == "real"]
    if len(real):
        r = real.iloc[0]
        for other in val[val.config.map(kind) != "real"].itertuples():
            k_word = ("scales faster than" if other.k_lo > r.k_hi else "scales slower than" if other.k_hi < r.k_lo
                      else "scales as fast as (the k intervals overlap)")
            loss_word = ("a lower" if other.loss_at_max_hi < r.loss_at_max_lo else "a higher"
                         if other.loss_at_max_lo > r.loss_at_max_hi else "an indistinguishable")
            out.append(f"{esc(other.config)} {k_word} real pairs and reaches {loss_word} zero-shot loss at {top:,} captions "
                       f"({other.loss_at_max:.3f} against {r.loss_at_max:.3f}).")
    return out


def table1(scaling: Any, eval_sets: list[str]) -> str:
    """Zero-shot top-1 (%) per evaluation set, source and scale, with the average over the sets; the best
    source per scale and set in bold (the paper's table 1)."""
    import pandas as pd

    s = scaling[scaling.eval_set.isin(eval_sets)]
    t = s.groupby(["scale", "config", "eval_set"], sort=False)["top1"].mean().unstack("eval_set")[eval_sets] * 100
    t["average"] = t.mean(axis=1)
    best = t.groupby(level="scale").transform("max")
    head = "".join(f"<th>{esc(c)}</th>" for c in ["captions", "source", *t.columns])
    rows = []
    for (scale, config), r in t.iterrows():
        cells = [f'<td data-v="{scale}">{scale:,}</td>', f'<td class="l" data-v="{esc(config)}">{esc(config)}</td>']
        for c, v in r.items():
            text = "–" if pd.isna(v) else f"{v:.1f}"
            bold = not pd.isna(v) and v == best.loc[(scale, config), c] and len(t.loc[scale]) > 1
            cells.append(f'<td data-v="{"" if pd.isna(v) else repr(float(v))}">{"<b>" + text + "</b>" if bold else text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable" id="table-1"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def fits_table(fits: Any, d_ref: int) -> str:
    t = fits.assign(k_ci=[interval(a, b) for a, b in zip(fits.k_lo, fits.k_hi, strict=True)],
                    loss_ci=[interval(a, b) for a, b in zip(fits.loss_at_max_lo, fits.loss_at_max_hi, strict=True)])
    t = t[["config", "eval_set", "k", "k_ci", "perf_at_DI", "r2", "max_scale", "loss_at_max", "loss_ci", "top1_at_max"]]
    t = t.rename(columns={"k_ci": "k CI", "perf_at_DI": f"−log L({d_ref:,})", "r2": "R²", "max_scale": "captions",
                          "loss_at_max": "loss", "loss_ci": "loss CI", "top1_at_max": "top-1"})
    fmt = {"k": "{:.4f}", f"−log L({d_ref:,})": "{:.4f}", "R²": "{:.4f}", "captions": "{:,}", "loss": "{:.4f}", "top-1": "{:.3f}"}
    return table(t, fmt, left=("config", "eval_set", "k CI", "loss CI"), table_id="clip-fits")


def section(scaling: Any, fits: Any, info: dict[str, Any], figs: list[F.Figure]) -> str:
    """The whole CLIP section with its figures (drawn by the report's figure registry), or why it is missing."""
    shown = "\n".join(figure_html(f) for f in figs)
    if all(f.missing for f in figs):
        return f'<section id="clip"><h2>CLIP</h2>{shown}</section>'
    d_ref = int(info.get("d_ref_clip") or scaling.scale.max())
    if fits is not None:  # fits written before the loss interval existed
        fits = fits.assign(**{c: fits.get(c, math.nan) for c in ("loss_at_max_lo", "loss_at_max_hi")})
    sets = [s for s in dict.fromkeys(scaling.eval_set) if not s.startswith("probe:")]
    kind = F.source_kind(scaling)
    cats = info.get("categories", {})
    per_class = "".join(
        f"<li>{esc(c)}: " + "; ".join(f'<span class="cat-{k}">{k}</span>: {esc(", ".join(cats[c][k]) or "none")}'
                                      for k in ("scaling", "easy", "poor")) + "</li>" for c in kind if c in cats)
    items = "".join(f"<li>{s}</li>" for s in summary_items(scaling, fits, d_ref))
    n_runs = int(scaling.groupby(["config", "scale", "eval_set"]).size().max())
    runs = f" and the {n_runs} training runs per scale" if n_runs > 1 else " (one training run per scale: <code>repeats</code> adds runs)"
    fits_html = fits_table(fits, d_ref) if fits is not None and len(fits) else '<p class="missing">No CLIP fits.</p>'
    return f"""<section id="clip"><h2>CLIP: real, synthetic and mixed image-text pairs</h2>
<p>CLIP models trained on nested subsets of captions (D counts captions): {esc(", ".join(f"{c} ({k})" for c, k in kind.items()))}.
Synthetic pairs regenerate every caption's image with the text-to-image model; mixed pairs take, at every step, each
caption's real or synthetic image at random. Every source at one scale has the same captions. Evaluation is zero-shot:
a class's text feature is the mean of the normalised features of every template, and the loss is
−log softmax(τ · cos(image, class)) with the model's learned temperature τ.</p>
<ul class="summary">{items}</ul>
<p class="muted">The intervals are over the evaluation examples{runs}; how much a curve moves from one training run to
another shows in its residuals (R² below).</p>
{shown}
<h3>Table 1-style: zero-shot top-1 (%)</h3>
<p>Per evaluation set, source and number of captions; the average is over the sets shown; bold: the best source at that
scale.</p>
{table1(scaling, sets)}
<h3>Equation 2 fits of the CLIP curves (D<sub>I</sub> = {d_ref:,} captions)</h3>
<p>The loss interval is the bootstrap interval of the mean zero-shot loss at the largest scale.</p>
{fits_html}
<h3>Per-class categories (validation set)</h3><ul>{per_class or "<li>none</li>"}</ul>
</section>"""
