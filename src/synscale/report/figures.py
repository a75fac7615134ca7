"""The paper's figures from the results and analysis tables (matplotlib; each saved as PNG and SVG).

Every function returns a `Figure`: its files, or the reason it was left out (its inputs do not exist in
this study) -- a figure is never drawn empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synscale.registry import Registry

REAL_COLOR = "#d62728"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
CATEGORY_COLOR = {"scaling": "#d62728", "easy": "#1f77b4", "poor": "#2ca02c", "other": "#9a9a9a"}
CATEGORY_MARKER = {"scaling": "^", "easy": "s", "poor": "v", "other": "o"}
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">"]


@dataclass
class Figure:
    key: str  # "1", "2", "3", ... as in the paper
    title: str
    caption: str = ""
    paths: list[Path] = field(default_factory=list)
    missing: str = ""  # why it was left out

    @property
    def png(self) -> Path | None:
        return next((p for p in self.paths if p.suffix == ".png"), None)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _t(s: Any) -> str:
    """A user's text (class, configuration, set names) for matplotlib: `$` would start TeX math."""
    return str(s).replace("$", r"\$")


def colors(configs: list[str]) -> dict[str, str]:
    out, i = {}, 0
    for c in dict.fromkeys(configs):
        if c == "real":
            out[c] = REAL_COLOR
        else:
            out[c] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def scale_label(d: float) -> str:
    """1000 -> 1k, 1_300_000 -> 1.3M."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if d >= div:
            return f"{d / div:.3g}{unit}"
    return f"{d:g}"


def _scale_ticks(ax: Any, scales: Any) -> None:
    """x ticks at the trained scales (at most ~8 of them), labelled 1k, 2k, ...; no minor labels."""
    from matplotlib import ticker

    scales = sorted({float(s) for s in scales})
    step = max(1, int(np.ceil(len(scales) / 8)))
    ticks = scales[::step]
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([scale_label(t) for t in ticks]))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _log_axes(ax: Any, ylabel: str = "cross-entropy loss L", scales: Any = None) -> None:
    from matplotlib import ticker

    ax.set_xscale("log")
    if scales is not None and len(scales):
        _scale_ticks(ax, scales)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("training images D")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def eval_set_groups(eval_sets: list[str]) -> tuple[list[str], list[str]]:
    """(in-domain + distribution-shift sets, linear-probe sets), in order of appearance."""
    sets = list(dict.fromkeys(eval_sets))
    return [s for s in sets if not s.startswith("probe:")], [s for s in sets if s.startswith("probe:")]


# ---------------------------------------------------------------------------------------------------
# The report's figures by key: each declares its title, caption, the report section it is shown in and the tables it
# reads (fields of Tables); the page draws every registered figure, in this order, and shows each in its section. A
# figure whose inputs this study lacks comes back with the reason (Figure.missing).


@dataclass
class Tables:
    """The tables the figures read (W/results: the classifier rows, CLIP's apart), and the configuration the
    per-class figures focus on."""

    scaling: Any = None
    fits: Any = None
    per_class: Any = None
    curves: Any = None  # scaling_per_class
    correlations: Any = None
    predictions: Any = None
    metrics: Any = None
    generation: Any = None
    focus: str | None = None
    clip_scaling: Any = None
    clip_fits: Any = None
    exchange: Any = None  # exchange.parquet: the real images each image of a curve is worth
    checks: Any = None  # forecast_checks.parquet: the held-out anchors against the forecasts
    allocation: Any = None  # allocation.parquet: every adaptive round's allocation (synscale.report.loop)
    loop: Any = None  # loop.parquet: adaptive against uniform and retrieved at equal images
    loop_target: Any = None  # loop_target.parquet: the images each curve needs to reach uniform's final loss


@dataclass(frozen=True)
class FigureSpec:
    key: str  # "1", "2", "3", ... as in the paper
    title: str
    caption: str
    section: str  # the id of the report section that shows it (<section id=...> on the page)
    inputs: tuple[str, ...]  # the Tables fields it is drawn from, in the order `fn` takes them
    fn: Callable[..., Figure]  # fn(Figure, *inputs, out_dir) -> the Figure, drawn or with `missing` set

    def draw(self, tables: Tables, out_dir: Path) -> Figure:
        f = Figure(self.key, self.title, self.caption)
        return self.fn(f, *(getattr(tables, n) for n in self.inputs), out_dir)


FIGURES: Registry[FigureSpec] = Registry("figure")


def figure(key: str, title: str, caption: str, *, section: str, inputs: tuple[str, ...]) -> Callable[[Any], Any]:
    """Register a figure function under `key` with what it shows and reads."""
    def deco(fn: Callable[..., Figure]) -> Callable[..., Figure]:
        FIGURES.register(key)(FigureSpec(key, title, caption, section, inputs, fn))
        return fn

    return deco


def in_section(figs: dict[str, Figure], section: str, focus: bool | None = None) -> list[Figure]:
    """The drawn figures that report section `section` shows, in the registry's order; with `focus`, only those
    that show (True) or do not show (False) the one configuration the per-class figures focus on."""
    return [figs[key] for key, spec in FIGURES.entries()
            if spec.section == section and focus in (None, "focus" in spec.inputs)]


@figure(
    "1", "Scaling ability k per configuration and evaluation set",
    "k of Equation 2 (the slope of log L against log D) for every configuration, real images in red; "
    "error bars: bootstrap CIs. Larger k: the loss falls faster as data grows.",
    section="ability", inputs=("fits",))
def figure1(f: Figure, fits: Any, out_dir: Path) -> Figure:
    """Scaling ability k per configuration, real in red, per evaluation set, with CIs."""
    if fits is None or not len(fits):
        f.missing = "no scaling curve has two or more scales, so no k was fitted."
        return f
    plt = _pyplot()
    sets, probes = eval_set_groups(fits.eval_set.tolist())
    sets = sets + probes
    col = colors(fits.config.tolist())
    fig, axes = plt.subplots(1, len(sets), figsize=(max(3.2 * len(sets), 5), 3.6), squeeze=False, sharey=False)
    for ax, es in zip(axes[0], sets, strict=True):
        g = fits[fits.eval_set == es]
        x = np.arange(len(g))
        err = np.array([g.k - g.k_lo, g.k_hi - g.k]).clip(min=0)
        err = np.nan_to_num(err)
        ax.bar(x, g.k, yerr=err, color=[col[c] for c in g.config], capsize=3)
        ax.set_xticks(x, [_t(c) for c in g.config], rotation=45, ha="right", fontsize=8)
        ax.set_title(_t(es), fontsize=10)
        ax.axhline(0, color="k", lw=0.6)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("scaling ability k")
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig1_scaling_ability")
    return f


@figure(
    "2", "Recognizability vs diversity, coloured by performance",
    "Each point is a configuration (its metrics' images); colour: −log L on the real validation set at "
    "the largest scale (larger: better); marker: the text-to-image model family (real images: star).",
    section="quality", inputs=("metrics", "scaling", "generation"))
def figure2(f: Figure, metrics: Any, scaling: Any, generation: Any, out_dir: Path) -> Figure:
    """Recognizability vs diversity, a point per configuration, coloured by -log L on the real validation set
    at the grid's scale (the paper's figure 2: at 1.3M)."""
    if metrics is None or not len(metrics) or not {"recognizability", "diversity"} <= set(metrics.columns):
        f.missing = "no recognizability and diversity were measured (metrics.parquet is absent; set [metrics] per_class)."
        return f
    val = scaling[(scaling.eval_set == "val") & (scaling.real_images.isin([0]) | (scaling.source == "real"))] \
        if scaling is not None and len(scaling) else None
    if val is None or not len(val):
        f.missing = "no model was evaluated on the real validation set."
        return f
    graded = val[val.source.isin(metrics.config) & (val.source != "real")]  # the configurations with metrics
    top = int(graded.scale.max()) if len(graded) else int(val.scale.max())
    at = val[val.scale == top].groupby("source", as_index=False)["loss"].mean()
    m = metrics[["config", "recognizability", "diversity"]].merge(at.rename(columns={"source": "config"}), on="config")
    if not len(m):
        f.missing = f"no configuration has both metrics and a model at {top:,} images."
        return f
    m = m.assign(perf_at_DI=-np.log(m.loss))
    f.caption = f.caption.replace("the largest scale", f"{top:,} images")
    # markers tell apart whichever varies more among the configurations: the model family or the prompt strategy
    fam = dict(zip(generation.config, generation.family, strict=True)) if generation is not None and len(generation) else {}
    strat = dict(zip(generation.config, generation.strategy, strict=True)) if generation is not None and len(generation) else {}
    by = strat if len(set(strat.values())) > len(set(fam.values())) else fam
    other = fam if by is strat else strat
    kinds = list(dict.fromkeys(by.values()))
    f.caption = f.caption.replace("the text-to-image model family", "the prompt strategy" if by is strat else "the text-to-image model family")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.4, 5.4) if len(m) > 6 else (6.2, 4.6))
    vmin, vmax = m.perf_at_DI.min(), m.perf_at_DI.max()
    sc = None
    for r in m.itertuples():
        marker = "*" if r.config == "real" else MARKERS[kinds.index(by[r.config]) % len(MARKERS)] if r.config in by else "o"
        sc = ax.scatter(r.recognizability, r.diversity, c=[r.perf_at_DI], cmap="viridis", vmin=vmin, vmax=vmax,
                        marker=marker, s=180 if marker == "*" else 80, edgecolors="k", linewidths=0.6)
        label = _t(r.config + (f"\n{other[r.config]}" if r.config in other and len(m) <= 6 else ""))
        ax.annotate(label, (r.recognizability, r.diversity), textcoords="offset points", xytext=(6, 4),
                    fontsize=7 if len(m) <= 6 else 5.5)
    for kind in kinds:
        ax.scatter([], [], marker=MARKERS[kinds.index(kind) % len(MARKERS)], color="w", edgecolors="k", label=_t(kind))
    if "real" in set(m.config):
        ax.scatter([], [], marker="*", color="w", edgecolors="k", s=150, label="real")
    ax.legend(fontsize=8, loc="best")
    fig.colorbar(sc, ax=ax, label=f"−log L at {top:,} (val)")
    ax.margins(0.18)
    ax.set_xlabel("recognizability (mean per-class F1)")
    ax.set_ylabel("diversity")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig2_recognizability_diversity")
    return f


def _curve_panel(ax: Any, scaling: Any, fits: Any, eval_set: str, col: dict[str, str], what: str = "loss") -> None:
    sub = scaling[scaling.eval_set == eval_set]
    for config, g in sub.groupby("config", sort=False):
        g = g.groupby("scale", as_index=False)[["loss", "top1"]].mean().sort_values("scale")
        c = col[config]
        ax.plot(g.scale, g[what], "o", color=c, ms=4)
        fr = fits[(fits.config == config) & (fits.eval_set == eval_set)] if fits is not None and len(fits) else []
        if what == "top1":
            ax.plot(g.scale, g[what], "-", color=c, label=_t(config), alpha=0.8)
            continue
        if not len(fr):
            ax.plot(g.scale, g[what], "-", color=c, label=_t(config))
            continue
        r = fr.iloc[0]
        xs = np.geomspace(g.scale.min(), g.scale.max(), 60)
        ys = np.exp(-r.k * (np.log(xs) - np.log(r.d_ref)) - r.perf_at_DI)
        ax.plot(xs, ys, "--" if config == "real" else "-", color=c, alpha=0.85, label=f"{_t(config)}: k={r.k:.3f}")
        if "sat_E" in r and np.isfinite(r.sat_E):
            ax.plot(xs, r.sat_E + r.sat_A * (xs / r.d_ref) ** -r.sat_k, ":", color=c, alpha=0.7)
        if "break_at" in r and np.isfinite(r.break_at):
            ax.axvline(r.break_at, color=c, lw=0.8, alpha=0.5)
            ax.axvspan(r.break_at, g.scale.max() * 1.05, color=c, alpha=0.06)


@figure(
    "3", "Scaling on the real validation set",
    "Loss against training images, log-log; lines: Equation 2 fits (real dashed); dotted: the saturating "
    "fit L = E + A·D^−k; a shaded band marks scales past a detected break of the power law.",
    section="scaling", inputs=("scaling", "fits"))
def figure3(f: Figure, scaling: Any, fits: Any, out_dir: Path) -> Figure:
    """Scaling curves on the real validation set with their Equation 2 fits (log-log)."""
    if scaling is None or "val" not in set(scaling.eval_set):
        f.missing = "no model was evaluated on the real validation set."
        return f
    plt = _pyplot()
    col = colors(scaling.config.tolist())
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    _curve_panel(ax, scaling, fits, "val", col)
    _log_axes(ax, scales=scaling[scaling.eval_set == "val"].scale)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig3_scaling_val")
    return f


@figure(
    "4", "Scaling on distribution-shifted and out-of-distribution sets",
    "Top row: loss (log-log) with Equation 2 fits; bottom row: top-1 accuracy. Where synthetic curves "
    "come closer to (or cross) real ones here than on the validation set, synthetic data helps robustness.",
    section="ood", inputs=("scaling", "fits"))
def figure4(f: Figure, scaling: Any, fits: Any, out_dir: Path) -> Figure:
    """Loss (log-log) and top-1 against data scale on every shifted / out-of-distribution set."""
    sets = [s for s in eval_set_groups(scaling.eval_set.tolist())[0] if s != "val"] if scaling is not None else []
    if not sets:
        f.missing = "the study has no shifted or out-of-distribution evaluation sets ([evaluate] shifts / [[evaluate.sets]])."
        return f
    plt = _pyplot()
    col = colors(scaling.config.tolist())
    fig, axes = plt.subplots(2, len(sets), figsize=(max(3.6 * len(sets), 6), 6.4), squeeze=False)
    for j, es in enumerate(sets):
        _curve_panel(axes[0][j], scaling, fits, es, col)
        _log_axes(axes[0][j], scales=scaling[scaling.eval_set == es].scale)
        axes[0][j].set_title(_t(es))
        _curve_panel(axes[1][j], scaling, None, es, col, what="top1")
        axes[1][j].set_xscale("log")
        _scale_ticks(axes[1][j], scaling[scaling.eval_set == es].scale)
        axes[1][j].set_xlabel("training images D")
        axes[1][j].set_ylabel("top-1")
        axes[1][j].grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig4_ood")
    return f


@figure(
    "probe", "Linear probes on downstream sets",
    "Loss of a linear probe on each downstream set, on the features of each trained classifier.",
    section="ood", inputs=("scaling", "fits"))
def figure_probes(f: Figure, scaling: Any, fits: Any, out_dir: Path) -> Figure:
    sets = eval_set_groups(scaling.eval_set.tolist())[1] if scaling is not None else []
    if not sets:
        f.missing = "the study has no linear-probe sets ([[evaluate.probes]])."
        return f
    plt = _pyplot()
    col = colors(scaling.config.tolist())
    fig, axes = plt.subplots(1, len(sets), figsize=(max(4.4 * len(sets), 5), 3.8), squeeze=False)
    for ax, es in zip(axes[0], sets, strict=True):
        _curve_panel(ax, scaling, fits, es, col)
        _log_axes(ax, scales=scaling[scaling.eval_set == es].scale)
        ax.set_title(_t(es))
        ax.legend(fontsize=7)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig_probes")
    return f


def focus_config(fits: Any, generation: Any = None) -> str | None:
    """The synthetic configuration the per-class figures show: the best -log L(D_I) on val (as the paper
    shows its best Stable Diffusion configuration), among the generated configurations where `generation`
    names them (not a real + synthetic mix, which has no metrics of its own)."""
    if fits is None or not len(fits):
        return None
    v = fits[(fits.eval_set == "val") & (fits.source != "real")]
    if generation is not None and len(generation) and v.config.isin(generation.config).any():
        v = v[v.config.isin(generation.config)]
    return None if not len(v) else str(v.sort_values("perf_at_DI", ascending=False).config.iloc[0])


@figure(
    "6", "Per-class scaling ability against performance at D_I",
    "Each point is a class (validation set), one row per synthetic configuration; colours: the class's "
    "diversity, recognizability and −log L at the largest scale; markers: the category "
    "(▲ scaling, ■ easy, ▼ poor, ● other).",
    section="per-class", inputs=("per_class",))
def figure6(f: Figure, per_class: Any, out_dir: Path) -> Figure:
    """Per-class k_c against -log L_c(D_I), coloured by diversity, recognizability and final performance."""
    pc = per_class[(per_class.eval_set == "val") & (per_class.source != "real")] if per_class is not None and len(per_class) else None
    if pc is None or not len(pc):
        f.missing = "no synthetic configuration has per-class fits on the validation set."
        return f
    configs = list(dict.fromkeys(pc.config))
    colourings = [("diversity", "diversity"), ("recognizability", "recognizability"), ("perf_at_max", "−log L at largest D")]
    colourings = [(c, t) for c, t in colourings if pc[c].notna().any()]
    plt = _pyplot()
    fig, axes = plt.subplots(len(configs), len(colourings), figsize=(4.4 * len(colourings), 3.6 * len(configs)), squeeze=False)
    for i, config in enumerate(configs):
        g = pc[pc.config == config]
        for j, (c, title) in enumerate(colourings):
            ax = axes[i][j]
            if g[c].isna().all():  # a configuration without its own metrics (a mix): said, not drawn empty
                ax.text(0.5, 0.5, f"{_t(config)}: no {title} measured\n(metrics are measured per synthetic set)",
                        ha="center", va="center", fontsize=8, transform=ax.transAxes)
                ax.set_axis_off()
                continue
            sc = None
            for cat, gg in g.groupby("category"):
                sc = ax.scatter(gg.k, gg.perf_at_DI, c=gg[c], cmap="viridis", vmin=g[c].min(), vmax=g[c].max(),
                                marker=CATEGORY_MARKER.get(cat, "o"), edgecolors="k", linewidths=0.4, s=40)
            if len(g) <= 40:
                for r in g.itertuples():
                    ax.annotate(_t(r.class_name), (r.k, r.perf_at_DI), fontsize=6, xytext=(3, 2), textcoords="offset points")
            fig.colorbar(sc, ax=ax, label=title)
            ax.set_xlabel("scaling ability k_c")
            ax.set_ylabel("−log L_c at D_I")
            ax.set_title(f"{_t(config)}: coloured by {title}", fontsize=9)
            ax.grid(True, alpha=0.3)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig6_per_class")
    return f


def pick_classes(per_class: Any, config: str, per_category: int = 2) -> dict[str, list[int]]:
    """Two classes of each category for figure 7: the highest k of `scaling`, the best performance of
    `easy`, the worst performance of `poor`."""
    g = per_class[(per_class.config == config) & (per_class.eval_set == "val")]
    order = {"scaling": ("k", False), "easy": ("perf_at_DI", False), "poor": ("perf_at_DI", True)}
    return {cat: g[g.category == cat].sort_values(col, ascending=asc).class_index.head(per_category).tolist()
            for cat, (col, asc) in order.items()}


@figure(
    "7", "Per-class scaling: scaling, easy and poor classes against real",
    "Per-class validation loss against training images (log-log); solid: the synthetic configuration, "
    "dashed: real images. Scaling classes (red) improve fastest, easy ones (blue) start well, poor "
    "ones (green) neither.",
    section="per-class", inputs=("curves", "per_class", "focus"))
def figure7(f: Figure, curves: Any, per_class: Any, config: str | None, out_dir: Path) -> Figure:
    """Per-class scaling curves for two classes of each category, synthetic against real."""
    if config is None or curves is None or per_class is None or not len(per_class):
        f.missing = "no synthetic configuration has per-class fits on the validation set."
        return f
    picked = pick_classes(per_class, config)
    chosen = [(cat, ci) for cat, cis in picked.items() for ci in cis]
    if not chosen:
        f.missing = f"no class of {config} falls into the scaling, easy or poor categories."
        return f
    f.caption += f" Configuration: {config}." + "".join(
        f" No {cat} class." for cat, cis in picked.items() if not cis)
    names = dict(zip(per_class.class_index, per_class.class_name, strict=False))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.9 * len(chosen), 3.1), squeeze=False)
    val = curves[curves.eval_set == "val"]
    for ax, (cat, ci) in zip(axes[0], chosen, strict=True):
        for cfg_name, style in ((config, "-o"), ("real", "--s")):
            g = val[(val.config == cfg_name) & (val.class_index == ci)].groupby("scale", as_index=False)["loss"].mean()
            if len(g):
                ax.plot(g.scale, g.loss.clip(lower=1e-8), style, color=CATEGORY_COLOR[cat] if cfg_name == config else REAL_COLOR,
                        ms=3, label=_t(cfg_name))
        _log_axes(ax, "loss", scales=val.scale)
        ax.set_title(f"{_t(names.get(ci, ci))} ({cat})", fontsize=9, color=CATEGORY_COLOR[cat])
        ax.legend(fontsize=7)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig7_per_class_curves")
    return f


def deciles(per_class: Any, config: str, groups: int = 10) -> Any:
    """Classes of `config` (val) in up to `groups` equal groups by k_c, lowest first: mean k, recognizability
    and diversity per group (figure A5)."""
    import pandas as pd

    g = per_class[(per_class.config == config) & (per_class.eval_set == "val")].sort_values("k")
    n = min(groups, len(g))
    if n == 0:
        return pd.DataFrame(columns=["group", "classes", "k", "recognizability", "diversity"])
    idx = np.array_split(np.arange(len(g)), n)
    rows = [{"group": i + 1, "classes": len(ix), "k": g.k.iloc[ix].mean(),
             "recognizability": g.recognizability.iloc[ix].mean(), "diversity": g.diversity.iloc[ix].mean()}
            for i, ix in enumerate(idx)]
    return pd.DataFrame(rows)


@figure(
    "A5", "Recognizability and diversity by scaling-ability decile",
    "Classes split into ten equal groups by k_c, lowest first (fewer groups when there are fewer than "
    "ten classes); bars: the groups' mean recognizability and diversity.",
    section="per-class", inputs=("per_class", "focus"))
def figureA5(f: Figure, per_class: Any, config: str | None, out_dir: Path) -> Figure:
    if config is None or per_class is None or not len(per_class):
        f.missing = "no synthetic configuration has per-class fits on the validation set."
        return f
    d = deciles(per_class, config)
    if not len(d) or d[["recognizability", "diversity"]].isna().all().all():
        f.missing = f"{config} has no per-class recognizability or diversity (metrics_per_class.parquet)."
        return f
    f.caption += f" Configuration: {config}."
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, c, color in ((axes[0], "recognizability", "#1f77b4"), (axes[1], "diversity", "#ff7f0e")):
        ax.bar(d.group, d[c], color=color)
        ax.set_xlabel("k_c group (low → high)")
        ax.set_ylabel(f"mean {c}")
        ax.set_xticks(d.group)
        lo, hi = d[c].min(), d[c].max()
        if np.isfinite(lo) and hi > lo:
            ax.set_ylim(max(0, lo - 0.5 * (hi - lo)), hi + 0.2 * (hi - lo))
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "figA5_deciles")
    return f


@figure(
    "A13", "Spearman correlation of k_c with per-class metrics",
    "Per configuration, Spearman's ρ between the classes' scaling ability k_c and each per-class "
    "metric (FD and the LPIPS-style distances as measured: lower FD is closer to real; higher is more "
    "varied). lpips_ref is the LPIPS-style distance on the reference network, not the paper's LPIPS "
    "(AlexNet, lpips_alex).",
    section="per-class", inputs=("correlations",))
def figureA13(f: Figure, corr: Any, out_dir: Path) -> Figure:
    if corr is None or not len(corr):
        f.missing = "fewer than three classes have both a k_c and per-class metrics."
        return f
    plt = _pyplot()
    metrics = list(dict.fromkeys(corr.metric))
    configs = list(dict.fromkeys(corr.config))
    col = colors(configs)
    fig, ax = plt.subplots(figsize=(max(1.1 * len(metrics) * max(len(configs), 1) ** 0.5 + 2, 6), 3.6))
    w = 0.8 / len(configs)
    for i, c in enumerate(configs):
        g = corr[corr.config == c].set_index("metric").reindex(metrics)
        ax.bar(np.arange(len(metrics)) + (i - (len(configs) - 1) / 2) * w, g.rho, w, color=col[c], label=_t(c))
    ax.set_xticks(np.arange(len(metrics)), metrics, rotation=30, ha="right")
    ax.set_ylabel("Spearman ρ with k_c")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1, 1)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "figA13_correlations")
    return f


@figure(
    "k-pred", "Predicting k from recognizability and diversity (leave-one-out)",
    "Each point: a class of a synthetic configuration (dots) or a configuration (squares); x: its "
    "k predicted by the model fitted without it, y: its fitted k.",
    section="predictor", inputs=("predictions",))
def figure_predictor(f: Figure, predictions: Any, out_dir: Path) -> Figure:
    p = predictions.dropna(subset=["k"]) if predictions is not None and len(predictions) else None
    if p is None or not len(p):
        f.missing = "the k predictor needs at least four configurations or classes with metrics and fits."
        return f
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for level, marker in (("class", "o"), ("config", "s")):
        g = p[p.level == level]
        if len(g):
            ax.scatter(g.k_pred, g.k, marker=marker, s=30 if level == "class" else 70, alpha=0.8, edgecolors="k",
                       linewidths=0.4, label=f"{level} (n={len(g)})")
    lo, hi = float(min(p.k.min(), p.k_pred.min())), float(max(p.k.max(), p.k_pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("k predicted (leave-one-out)")
    ax.set_ylabel("k fitted")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig_k_predictor")
    return f


def source_kind(scaling: Any) -> dict[str, str]:
    """Per source: `real`, `synthetic` or `synthetic + real`, from the images its models saw."""
    out = {}
    for config, g in scaling.groupby("config", sort=False):
        real, syn = (g.real_images > 0).any(), (g.synthetic_images > 0).any()
        out[config] = "synthetic + real" if real and syn else "synthetic" if syn else "real"
    return out


def clip_colors(scaling: Any) -> dict[str, str]:
    """CLIP sources coloured by what their images are: real only (red, as real everywhere), synthetic only
    (blue shades), both (green shades)."""
    pools = {"synthetic": ["#1f77b4", "#17becf", "#9467bd"], "synthetic + real": ["#2ca02c", "#bcbd22", "#8c564b"]}
    out: dict[str, str] = {}
    for config, kind in source_kind(scaling).items():
        pool = pools.get(kind)
        out[config] = REAL_COLOR if pool is None else pool[sum(1 for c in out.values() if c in pool) % len(pool)]
    return out


@figure(
    "8", "CLIP scaling: zero-shot loss and top-1 against captions (synthetic, real, synthetic + real)",
    "CLIP models trained on nested caption subsets; every source at one scale has the same captions. Left: the "
    "zero-shot loss −log softmax(τ·sim) on val (log-log) with Equation 2 fits; right: zero-shot top-1.",
    section="clip", inputs=("clip_scaling", "clip_fits"))
def figure8(f: Figure, scaling: Any, fits: Any, out_dir: Path) -> Figure:
    """The paper's figure 8: CLIP's zero-shot loss (log-log, with Equation 2 fits) and top-1 against the
    number of captions, for real, synthetic and mixed pairs."""
    eval_set = "val"
    if scaling is None or not len(scaling) or eval_set not in set(scaling.eval_set):
        f.missing = "this study has no CLIP training results (figure 8 and table 1 of the paper need them: [clip] scales)."
        return f
    plt = _pyplot()
    col = clip_colors(scaling)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _curve_panel(axes[0], scaling, fits, eval_set, col)
    _log_axes(axes[0], "zero-shot loss", scales=scaling[scaling.eval_set == eval_set].scale)
    axes[0].set_xlabel("captions D")
    _curve_panel(axes[1], scaling, None, eval_set, col, what="top1")
    axes[1].set_xscale("log")
    _scale_ticks(axes[1], scaling[scaling.eval_set == eval_set].scale)
    axes[1].set_xlabel("captions D")
    axes[1].set_ylabel("zero-shot top-1")
    axes[1].grid(True, which="both", alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig8_clip")
    return f


@figure(
    "r", "What a synthetic image is worth in real images",
    "r at each trained scale D: the real scale at which the real curve reaches this curve's loss, over D (for a "
    "mix, what its added images are worth). Filled: read off the real curve inside its trained range, with a "
    "bootstrap interval (both curves' test examples redrawn together); open: from the real power law outside it, "
    "with its interval calibrated on backtests where they support the horizon (the table says which). r = 1: an "
    "image as good as a real one.",
    section="forecasts", inputs=("exchange",))
def figure_exchange(f: Figure, exchange: Any, out_dir: Path) -> Figure:
    ex = _classifier_val(exchange)
    ex = ex[np.isfinite(ex.rate.astype(float)) & (ex.rate > 0)] if ex is not None else None
    if ex is None or not len(ex):
        f.missing = "no synthetic curve shares a loss range the real curve covers or forecasts."
        return f
    plt = _pyplot()
    col = colors(ex.source.tolist())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for source, g in ex.groupby("source", sort=False):
        ax.plot(g.scale, g.rate, "-", color=col[source], lw=1.2, label=source)
        inside = g.how == "interpolated"
        ax.scatter(g.scale[inside], g.rate[inside], color=col[source], s=28, zorder=3)
        ax.scatter(g.scale[~inside], g.rate[~inside], facecolors="white", edgecolors=col[source], s=28, zorder=3)
        bars = g[np.isfinite(g.rate_lo.astype(float))]
        if len(bars):
            ax.errorbar(bars.scale, bars.rate, yerr=[bars.rate - bars.rate_lo, bars.rate_hi - bars.rate], fmt="none",
                        ecolor=col[source], elinewidth=0.8, capsize=2)
    ax.axhline(1.0, color=REAL_COLOR, lw=0.8, ls="--")
    _log_axes(ax, "real images per image, r", ex.scale)
    _decade_ticks(ax)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig_exchange_rate")
    return f


@figure(
    "h", "Forecasts checked by held-out models",
    "Each curve with a held-out anchor ([forecast] holdout), on the real validation set: the losses the fits saw "
    "(filled), the power law in D (solid) and the saturating form (dashed) fitted on them and carried forward, and "
    "the forecasts at the held-out scales with their intervals (open circles, squares, and diamonds for the power "
    "law in samples seen; calibrated on backtests; dotted bars: the horizon is past the backtests and the width "
    "extrapolated). Stars: the loss the held-out model measured.",
    section="forecasts", inputs=("scaling", "checks"))
def figure_checks(f: Figure, scaling: Any, checks: Any, out_dir: Path) -> Figure:
    ch = _classifier_val(checks)
    if ch is None or not len(ch):
        f.missing = "no held-out anchor: set [forecast] holdout to train a curve past its fitted range."
        return f
    from synscale.analysis.forecast import LABELS, forecast_loss

    plt = _pyplot()
    col = colors(ch.source.tolist())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for source, g in ch.groupby("source", sort=False):
        cur = scaling[(scaling.source == source) & (scaling.eval_set == "val")].groupby("scale")["loss"].mean()
        x, y = cur.index.to_numpy(float), cur.to_numpy(float)
        ax.scatter(x, y, color=col[source], s=24, zorder=3, label=f"{source}: fitted")
        grid = np.geomspace(x[0], g.scale.max(), 60)
        for fc, style, marker, dx in (("power_law", "-", "o", 0.9), ("saturating", "--", "s", 1.0),
                                      ("samples_seen", None, "D", 1.1)):
            gf = g[g.forecaster == fc]
            if not len(gf):
                continue
            if style:  # a law in D drawn across; the law in samples seen only where a run's samples are known
                ax.plot(grid, forecast_loss(fc, x, y, grid, float(x[-1])), style, color=col[source], lw=1.1,
                        label=f"{source}: {LABELS[fc]}")
            for i, r in enumerate(gf.itertuples()):
                ok = r.lo is not None and np.isfinite(float(r.lo))
                yerr = [[r.forecast - r.lo], [r.hi - r.forecast]] if ok else None
                bar = ax.errorbar([r.scale * dx], [r.forecast], yerr=yerr, fmt=marker, mfc="white", color=col[source],
                                  elinewidth=1.0, capsize=3, ms=5,
                                  label=f"{source}: {LABELS[fc]}" if not style and i == 0 else None)
                if ok and not r.supported:
                    bar[2][0].set_linestyle(":")
        held = g.drop_duplicates("scale")
        ax.scatter(held.scale, held.measured, marker="*", s=140, color=col[source], edgecolors="black", linewidths=0.6,
                   zorder=4, label=f"{source}: held out")
    shown = scaling[scaling.source.isin(ch.source.unique())].scale.unique()
    _log_axes(ax, "cross-entropy loss L", np.concatenate([ch.scale.unique(), [shown.min(), shown.max()]]))
    _decade_ticks(ax)
    ax.legend(fontsize=7)
    fig.tight_layout()
    f.paths = _save(fig, out_dir, "fig_forecast_checks")
    return f


def _classifier_val(table: Any) -> Any:
    """The classifier rows on the real test set of a forecasts table (None where there are none)."""
    if table is None or not len(table):
        return None
    return table[(table.task == "classification") & (table.eval_set == "val")]


def _decade_ticks(ax: Any) -> None:
    """Over more than a decade the loss axes' dense ticks crowd: 1, 2, 5 per decade."""
    lo, hi = ax.get_ylim()
    if hi / lo > 10:
        from matplotlib import ticker

        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def draw_all(tables: Tables, out_dir: Path) -> dict[str, Figure]:
    """Every registered figure, by key, in the order registered, each from the tables it declares."""
    return {key: spec.draw(tables, out_dir) for key, spec in FIGURES.entries()}
