"""Figures from the results tables (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scaling_curves(scaling: Any, fits: Any, out_stem: Path) -> list[Path]:
    """Log-log loss vs data scale, one panel per eval set, a line per source with its Equation 2 fit."""
    plt = _pyplot()
    from matplotlib import ticker

    eval_sets = list(dict.fromkeys(scaling["eval_set"]))
    fig, axes = plt.subplots(1, len(eval_sets), figsize=(5.2 * len(eval_sets), 4), squeeze=False)
    for ax, eval_set in zip(axes[0], eval_sets, strict=True):
        sub = scaling[scaling["eval_set"] == eval_set]
        for i, ((source, config), g) in enumerate(sub.groupby(["source", "config"], sort=False)):
            g = g.sort_values("scale")
            color = "tab:red" if source == "real" else f"C{i % 10}"
            label = source if source == config else f"{source} ({config})"
            ax.plot(g["scale"], g["loss"], "o", color=color, label=label)
            f = fits[(fits.source == source) & (fits.config == config) & (fits.eval_set == eval_set)]
            if len(f):
                row = f.iloc[0]
                xs = np.geomspace(g["scale"].min(), g["scale"].max(), 50)
                ys = np.exp(-row.k * (np.log(xs) - np.log(row.d_ref)) - row.perf_at_DI)
                ax.plot(xs, ys, "--", color=color, alpha=0.8, label=f"fit: k={row.k:.3f}, R²={row.r2:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("training images D")
        ax.set_ylabel("cross-entropy loss L")
        ax.set_title(f"eval set: {eval_set}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
