"""What the closed loop bought (docs/adaptive.md): every `[[adaptive]]` source against its uniform control at equal
generated images, the images each curve needs to reach the uniform run's final loss, and the retrieval control
beside them.

- `loop.parquet`: per adaptive source and round scale D, the validation loss of the adaptive, the uniform and (where
  one has that scale) the retrieved model, and the gain = uniform − adaptive with a paired bootstrap interval (both
  models' test examples redrawn together; the same for retrieved − adaptive).
- `loop_target.parquet`: per adaptive source and curve (adaptive, uniform, retrieved), the images needed to reach the
  uniform curve's final validation loss: read off the curve where it gets there (log-log interpolation between its
  scales, `how` = "measured"), else from its Equation 2 fit past its last scale (`how` = "forecast"); and the ratio
  of the uniform run's images to those.
- `loop_lines`: the sentences the demo prints and the report shows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

COMPARED = ("adaptive", "uniform", "retrieved")


def loop_tables(results_dir: Any, scaling: Any, examples: Any, fits: Any, loops: list[dict[str, Any]], n_boot: int,
                confidence: float, seed: int = 0) -> dict[str, Any]:
    """loop.parquet and loop_target.parquet for `loops` (meta.json's: per adaptive source its name, its uniform
    control's and the retrieved sources'); returns {"lines": [...]} for analysis.json."""
    import pandas as pd

    rows, targets, lines = [], [], []
    val = scaling[(scaling.eval_set == "val") & (scaling.task == "classification")]
    loss = val.groupby(["source", "scale"])["loss"].mean()
    for lp in loops:
        names = {"adaptive": lp["adaptive"], "uniform": lp["uniform"], **{"retrieved": r for r in lp["retrieved"][:1]}}
        for scale in lp["scales"]:
            row: dict[str, Any] = {"source": lp["adaptive"], "scale": int(scale)}
            for arm, src in names.items():
                row[f"{arm}_loss"] = float(loss.get((src, scale), math.nan))
            for other in ("uniform", "retrieved"):
                lo, hi = _paired(examples, names.get(other), lp["adaptive"], scale, n_boot, confidence, seed)
                row[f"gain_vs_{other}"] = row.get(f"{other}_loss", math.nan) - row["adaptive_loss"]
                row[f"gain_vs_{other}_lo"], row[f"gain_vs_{other}_hi"] = lo, hi
            rows.append(row)
        target = float(loss.get((lp["uniform"], max(lp["scales"])), math.nan))
        for arm, src in names.items():
            need, how = _images_to(loss, fits, src, target)
            targets.append({"source": lp["adaptive"], "curve": arm, "name": src, "target_loss": target,
                            "images": need, "how": how, "ratio": max(lp["scales"]) / need if need > 0 else math.nan})
    table = pd.DataFrame(rows)
    target_table = pd.DataFrame(targets, columns=["source", "curve", "name", "target_loss", "images", "how", "ratio"])
    table.to_parquet(results_dir / "loop.parquet", index=False)
    target_table.to_parquet(results_dir / "loop_target.parquet", index=False)
    for lp in loops:
        lines += loop_lines(table[table.source == lp["adaptive"]], target_table[target_table.source == lp["adaptive"]],
                            confidence)
    return {"lines": lines}


def _paired(examples: Any, other: str | None, adaptive: str, scale: int, n_boot: int, confidence: float,
            seed: int) -> tuple[float, float]:
    """The interval of other's loss − adaptive's at `scale` on the validation set, both models' examples redrawn
    together; NaN where either has no examples there."""
    from synscale.analysis.fit import bootstrap_replicates

    if other is None or not n_boot:
        return math.nan, math.nan
    ex = [examples.get((s, s, "val"), [int(scale)]) for s in (other, adaptive)]
    if any(e is None for e in ex) or ex[0][0][0].shape[-1] != ex[1][0][0].shape[-1]:
        return math.nan, math.nan
    reps = bootstrap_replicates([ex[0][0][0], ex[1][0][0]], n_boot, seed)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(reps[:, 0] - reps[:, 1], [a, 1 - a])
    return float(lo), float(hi)


def _images_to(loss: Any, fits: Any, source: str, target: float) -> tuple[float, str]:
    """The images `source`'s validation curve needs to reach `target`: measured (interpolated in log-log between
    its scales) where it gets there, else its Equation 2 fit's forecast past its last scale; NaN, "never" where the
    fit does not fall (k <= 0)."""
    if source not in loss.index.get_level_values(0) or not math.isfinite(target):
        return math.nan, "none"
    curve = loss.loc[source].sort_index()
    scales, values = curve.index.to_numpy(float), curve.to_numpy(float)
    hit = np.flatnonzero(values <= target)
    if len(hit):
        i = int(hit[0])
        if values[i] == target:  # the curve's own point (the uniform run's final loss on its own curve)
            return float(scales[i]), "measured"
        if i == 0:
            return float(scales[0]), "at or below its first scale"
        x0, x1, y0, y1 = np.log(scales[i - 1]), np.log(scales[i]), np.log(values[i - 1]), np.log(values[i])
        t = (np.log(target) - y0) / (y1 - y0) if y1 != y0 else 1.0
        return float(np.exp(x0 + t * (x1 - x0))), "measured"
    from synscale.analysis.forecast import law_scale

    f = fits[(fits.source == source) & (fits.eval_set == "val")] if fits is not None and len(fits) else None
    if f is None or not len(f) or not float(f.k.iloc[0]) > 0:
        return math.nan, "never"
    return law_scale(f.iloc[0], target), "forecast"


def loop_lines(table: Any, targets: Any, confidence: float) -> list[str]:
    """The sentences of one adaptive source: its gain over uniform at each round scale with its interval, the
    images each curve needs to reach the uniform run's final loss, and which of synthetic and retrieved wins where."""
    if not len(table):
        return []
    name, pct = table.source.iloc[0], f"{confidence:.0%}"
    out = []
    for r in table.itertuples():
        lo, hi = r.gain_vs_uniform_lo, r.gain_vs_uniform_hi
        verdict = ("lower" if lo > 0 else "higher" if hi < 0 else "not distinguishable") if math.isfinite(lo) else "?"
        out.append(f"{name} at {r.scale:,} generated images: validation loss {r.adaptive_loss:.3f} against uniform's "
                   f"{r.uniform_loss:.3f}, gain {r.gain_vs_uniform:+.3f} ({pct} interval {lo:+.3f} to {hi:+.3f}): {verdict}")
    t = targets.set_index("curve")
    if "uniform" in t.index and "adaptive" in t.index:
        target, top = t.at["uniform", "target_loss"], t.at["uniform", "images"]
        parts = []
        for arm in ("adaptive", "retrieved"):
            if arm in t.index:
                n, how = t.at[arm, "images"], t.at[arm, "how"]
                parts.append(f"{arm} {_n(n)} ({how}; {top / n:.1f}x fewer)" if n == n and n > 0 else f"{arm}: {how}")
        out.append(f"images to reach uniform's final loss {target:.3f} ({_n(top)} images): " + ", ".join(parts))
    if "retrieved_loss" in table and table.retrieved_loss.notna().any():
        wins = []
        for r in table.itertuples():
            if math.isfinite(r.retrieved_loss):
                best = min(("adaptive", r.adaptive_loss), ("uniform", r.uniform_loss), ("retrieved", r.retrieved_loss),
                           key=lambda p: p[1])
                wins.append(f"{best[0]} at {r.scale:,}")
        out.append("lowest validation loss by scale (adaptive, uniform, retrieved): " + ", ".join(wins))
    return out


def _n(x: float) -> str:
    return f"{x:,.0f}" if x == x else "n/a"
