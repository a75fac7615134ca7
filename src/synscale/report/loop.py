"""The report's section on the closed loop (synscale.analysis.loop, docs/adaptive.md): where each round's images
went (a class x round heat map), the adaptive, uniform and retrieved curves, and the images each needs to reach the
uniform run's final loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synscale.report.figures import Figure, _pyplot, _save, _t, figure
from synscale.report.parts import esc, table


@figure(
    "a", "Where the adaptive source's images went",
    "Images of each class the adaptive source generated in each round (its allocation; colour and number), and in "
    "each cell the candidate configuration that drew most of them; classes the pilot called poor are marked *.",
    section="loop", inputs=("allocation", "curves"))
def figure_allocation(f: Figure, allocation: Any, curves: Any, out_dir: Path) -> Figure:
    if allocation is None or not len(allocation):
        f.missing = "no [[adaptive]] source: the study allocated nothing."
        return f
    a = allocation[(allocation.arm == "adaptive")]
    sources = list(dict.fromkeys(a.source))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(sources), figsize=(3.2 + 1.1 * a["round"].nunique(), 4.2), squeeze=False)
    for ax, src in zip(axes[0], sources, strict=True):
        g = a[a.source == src]
        added = g.pivot_table(index="class_index", columns="round", values="added", aggfunc="sum", fill_value=0)
        im = ax.imshow(added.to_numpy(), cmap="viridis", aspect="auto")
        configs = sorted(set(g.config))
        short = {c: chr(ord("A") + i) for i, c in enumerate(configs)}
        for (ci, r), cell in g.groupby(["class_index", "round"]):
            top = cell.loc[cell.added.idxmax()]
            y, x = list(added.index).index(ci), list(added.columns).index(r)
            ax.text(x, y, f"{int(cell.added.sum())}{short[top.config] if top.added else ''}", ha="center",
                    va="center", fontsize=7, color="w" if cell.added.sum() < added.to_numpy().max() / 2 else "k")
        poor = set(g[g.category == "poor"].class_index)
        names = dict(zip(curves.class_index, curves.class_name, strict=False)) if curves is not None and len(curves) else {}
        ax.set_yticks(range(len(added.index)), [f"{names.get(c, c)}{'*' if c in poor else ''}" for c in added.index],
                      fontsize=7)
        ax.set_xticks(range(len(added.columns)), [f"round {r + 1}" for r in added.columns], fontsize=8)
        ax.set_ylabel("class")
        ax.set_title(_t(src), fontsize=9)
        fig.colorbar(im, ax=ax, label="images added")
        f.caption += " Candidates: " + "; ".join(f"{v} = {esc(k)}" for k, v in short.items()) + "."
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "figa_allocation")
    return f


@figure(
    "u", "Adaptive, uniform and retrieved at equal images",
    "Validation loss against the images of each curve: the adaptive source after each round, its uniform control "
    "(the pilot's best candidate, class-balanced) and the retrieval control, with the real curve for scale; error "
    "bars: the adaptive − uniform paired bootstrap interval drawn on the adaptive points.",
    section="loop", inputs=("loop", "scaling"))
def figure_loop_curves(f: Figure, loop: Any, scaling: Any, out_dir: Path) -> Figure:
    if loop is None or not len(loop):
        f.missing = "no [[adaptive]] source."
        return f
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    val = scaling[scaling.eval_set == "val"].groupby(["source", "scale"])["loss"].mean()
    styles = {"adaptive": ("tab:blue", "o-"), "uniform": ("tab:orange", "s--"), "retrieved": ("tab:green", "^-.")}
    for src, g in loop.groupby("source", sort=False):
        g = g.sort_values("scale")
        for arm, (color, style) in styles.items():
            col = f"{arm}_loss"
            if col in g and g[col].notna().any():
                several = loop.source.nunique() > 1
                ax.plot(g.scale, g[col], style, color=color, label=f"{_t(src)}: {arm}" if several else arm)
        err = np.array([g.gain_vs_uniform - g.gain_vs_uniform_lo, g.gain_vs_uniform_hi - g.gain_vs_uniform])
        ax.errorbar(g.scale, g.adaptive_loss, yerr=np.nan_to_num(err).clip(min=0), fmt="none", ecolor="tab:blue",
                    capsize=3, alpha=0.6)
        lo, hi = g.scale.min() / 1.5, g.scale.max() * 1.5
    if "real" in val.index.get_level_values(0):
        real = val.loc["real"]
        real = real[(real.index >= lo) & (real.index <= hi)]
        if len(real):
            ax.plot(real.index, real.to_numpy(), "k.:", lw=1, label="real")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel("validation loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "figu_loop_curves")
    return f


@figure(
    "t", "Images to reach the uniform run's final loss",
    "Images each curve needs to reach the validation loss the uniform control reaches with all of its images: read "
    "off the measured curve where it gets there (solid), else forecast by its Equation 2 fit (hatched).",
    section="loop", inputs=("loop_target",))
def figure_images_to_target(f: Figure, targets: Any, out_dir: Path) -> Figure:
    t = targets[np.isfinite(targets.images.astype(float))] if targets is not None and len(targets) else None
    if t is None or not len(t):
        f.missing = "no curve reaches (or is forecast to reach) the uniform run's final loss."
        return f
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    colors = {"adaptive": "tab:blue", "uniform": "tab:orange", "retrieved": "tab:green"}
    several = t.source.nunique() > 1
    labels = [f"{_t(r.source)}: {r.curve}" if several else r.curve for r in t.itertuples()]
    bars = ax.barh(range(len(t)), t.images, color=[colors.get(c, "gray") for c in t.curve],
                   hatch=None)
    for b, r in zip(bars, t.itertuples(), strict=True):
        if r.how != "measured":
            b.set_hatch("//")
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {r.images:,.0f}", va="center", fontsize=8)
    ax.set_yticks(range(len(t)), labels, fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("images to reach the uniform run's final validation loss")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "figt_images_to_target")
    return f


def section(results: Any, info: dict[str, Any], figs: str) -> str:
    """The section's HTML: the loop's sentences, its figures, the comparison table and the decisions per round."""
    from synscale.results import read_table

    loop, alloc = read_table(results / "loop.parquet"), read_table(results / "allocation.parquet")
    retrieval = read_table(results / "retrieval.parquet")
    if (loop is None or not len(loop)) and (retrieval is None or not len(retrieval)):
        return f"""<section id="loop"><h2>Where generation pays</h2>
<p class="missing">This study has no <code>[[adaptive]]</code> source: nothing allocated generation by the per-class
forecasts (docs/adaptive.md has the closed loop and its uniform and retrieval controls; the demo runs one).</p>
{figs}
</section>"""
    lines = info.get("loop", {}).get("lines", [])
    said = "".join(f"<li>{esc(s)}</li>" for s in lines)
    loop_html = ('<div class="scroll">' + table(loop, {c: "{:.4f}" for c in loop.columns if c not in ("source", "scale")}
                                                | {"scale": "{:,}"}, left=("source",), table_id="loop") + "</div>"
                 if loop is not None and len(loop) else "")
    return f"""<section id="loop"><h2>Where generation pays</h2>
<p>An adaptive source spends a generation budget round by round where the per-class curves forecast the largest fall in
validation loss per image, drawing each class with the candidate configuration that forecasts lowest for it (poor
classes may move off the pilot's best candidate); its uniform control generates the pilot's best candidate
class-balanced at the same counts, and a retrieval control takes the nearest images of an unlabelled pool by CLIP
text-image similarity. All three are trained with the same recipe at the same image counts; gains are uniform's loss
minus adaptive's with a paired bootstrap interval. docs/adaptive.md has the method.</p>
<ul>{said}</ul>
{figs}
{loop_html}
{_decisions_html(alloc, _class_names(results))}
{_retrieval_html(retrieval)}
</section>"""


def _class_names(results: Any) -> dict[int, str]:
    """Class index -> name, from the per-class results."""
    from synscale.results import read_table

    pc = read_table(results / "scaling_per_class.parquet")
    return dict(zip(pc.class_index, pc.class_name, strict=False)) if pc is not None and len(pc) else {}


def _decisions_html(alloc: Any, names: dict[int, str]) -> str:
    """Per source and round: the best candidate, the classes moved off it and where, the classes left without
    images (their k interval reaches 0), and the full allocation table in a scroll box."""
    if alloc is None or not len(alloc):
        return ""
    items = []
    a = alloc[alloc.arm == "adaptive"]
    for (src, r), g in a.groupby(["source", "round"], sort=True):
        primary = g.primary.iloc[0]
        drawn = g[g.added > 0]
        moved = sorted({f"{esc(str(names.get(int(c), f'class {int(c)}')))} ({esc(x.category.iloc[0])}) to "
                        f"{esc(x.loc[x.added.idxmax(), 'config'])}"
                        for c, x in drawn.groupby("class_index") if x.loc[x.added.idxmax(), "config"] != primary})
        skipped = sorted({str(names.get(int(c), c)) for c, x in g.groupby("class_index") if not x.added.sum()})
        items.append(f"<li>{esc(str(src))}, round {int(r) + 1}: {int(g.added.sum()):,} images; best candidate "
                     f"{esc(str(primary))}" + (f"; moved: {'; '.join(moved)}" if moved else "; no class moved")
                     + (f"; no images for class(es) {', '.join(map(str, skipped))} (forecast gain not distinguishable "
                        "from zero)" if skipped else "") + "</li>")
    shown = alloc[alloc.added > 0].drop(columns=[c for c in ("eligible",) if c in alloc])
    shown.insert(1, "class_name", shown.class_index.map(names).fillna(""))
    fmt = {"k": "{:.3f}", "k_lo": "{:.3f}", "loss_before": "{:.4f}", "loss_after": "{:.4f}"}
    return (f"<h3>Decisions per round</h3><ul>{''.join(items)}</ul><div class=\"scroll\">"
            + table(shown, fmt, left=("source", "arm", "config", "why", "category", "primary"), table_id="allocation")
            + "</div>")


def _retrieval_html(retrieval: Any) -> str:
    if retrieval is None or not len(retrieval):
        return ""
    out = []
    for src, g in retrieval.groupby("source", sort=False):
        has = g.pool_label >= 0
        prec = f"; {(g.pool_label == g.class_index)[has].mean():.0%} carry the pool's own label of their class" \
            if has.any() else ""
        out.append(f"{esc(str(src))}: {len(g):,} pool images, median similarity {g.similarity.median():.3f}{prec}")
    return "<h3>The retrieval control</h3><p>" + "; ".join(out) + ".</p>"


def summary_item(info: dict[str, Any]) -> str:
    """The summary's line on the loop: its last gain over uniform and the images to uniform's final loss."""
    lines = info.get("loop", {}).get("lines", [])
    picked = [s for s in lines if s.startswith("images to reach")]
    last = [s for s in lines if " generated images: " in s][-1:]
    return ('Generation spent where it pays (<a href="#loop">below</a>): ' + esc("; ".join(last + picked))) if lines else ""
