"""Where the next round of generated images should go (issue 30's closed loop, its first part): a budget of images
split across (class, configuration) pairs to minimise the forecast validation loss, from the per-class curves.

Each class c of a candidate configuration g has its own Equation 2 curve (results/per_class.parquet, fitted
against the study's balanced scale D = C n with n images per class): L_cg(n) = exp(-perf_cg) (C n / D_I)^-k_cg.
A class is drawn by one configuration at a time, the one whose forecast is lowest at its count, so the class's
forecast loss is min_g L_cg(n_cg); the validation loss is the mean over classes (a class-balanced set).

The budget goes out in steps of `step` images, each to the pair whose step lowers the forecast validation loss most
(greedy on marginal gains: optimal for these separable, convex, decreasing curves up to one step). A class whose
scaling is indistinguishable from none (its k interval reaches 0) gets nothing while any class's k interval lies
above 0: the forecast gain of spending there is not distinguishable from zero.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClassCurve:
    """One class's curve under one configuration (a per_class.parquet row)."""

    class_index: int
    config: str
    k: float
    perf: float  # -log L at D_I
    d_ref: float
    classes: int  # C: the curve is fitted against the balanced scale C n
    k_lo: float = math.nan
    k_hi: float = math.nan

    def loss(self, n: float) -> float:
        """The forecast loss of the class with `n` images of it (inf with none)."""
        return math.exp(-self.perf) * (self.classes * n / self.d_ref) ** -self.k if n > 0 else math.inf

    @property
    def scales(self) -> bool:
        """Whether its scaling is distinguishable from none: the k interval lies above 0 (a point k > 0 where the
        fit has no interval)."""
        return self.k_lo > 0 if math.isfinite(self.k_lo) else self.k > 0


def curves_from_table(per_class: Any, d_ref: float, configs: Iterable[str], eval_set: str = "val") -> list[ClassCurve]:
    """The ClassCurves of `configs` on `eval_set` from a per_class.parquet table."""
    rows = per_class[per_class.config.isin(list(configs)) & (per_class.eval_set == eval_set)]
    classes = int(per_class["class_index"].nunique())
    return [ClassCurve(int(r.class_index), str(r.config), float(r.k), float(r.perf_at_DI), float(d_ref), classes,
                       float(getattr(r, "k_lo", math.nan)), float(getattr(r, "k_hi", math.nan)))
            for r in rows.itertuples() if math.isfinite(float(r.k)) and math.isfinite(float(r.perf_at_DI))]


def allocate(curves: list[ClassCurve], have: dict[tuple[int, str], int], budget: int, step: int = 1,
             floor: int | dict[int, int] = 0, cap: dict[int, int] | None = None) -> Any:
    """The budget of images split across (class, configuration) pairs: one row per pair with its images before
    (`have`), the images `added`, the class's forecast loss before and after, whether the pair could get images
    (`eligible`) and why not where it could not. `step`: images per greedy step (the budget's granularity).
    `floor`: every class is first brought to this many images (per class where a dict; by the configuration that
    forecasts lowest there), eligible or not, as far as the budget goes: a class without images is a class the
    model cannot predict.
    `cap`: per class, the most images it may hold (no step takes it past; a forecast trusted only so far)."""
    if budget < 0 or step <= 0:
        from synscale.errors import ConfigError

        raise ConfigError(f"allocate: the budget must be >= 0 and the step > 0, got {budget} and {step}")
    by_class: dict[int, list[ClassCurve]] = {}
    for c in curves:
        by_class.setdefault(c.class_index, []).append(c)
    counts = {(c.class_index, c.config): int(have.get((c.class_index, c.config), 0)) for c in curves}
    any_scales = any(c.scales for c in curves)
    eligible = {(c.class_index, c.config): c.scales or not any_scales for c in curves}
    before = {ci: _class_loss(cs, counts) for ci, cs in by_class.items()}
    left = _fill_floor(by_class, counts, floor, budget)
    total = {ci: sum(counts[(c.class_index, c.config)] for c in cs) for ci, cs in by_class.items()}

    def gain(c: ClassCurve) -> float:
        now = _class_loss(by_class[c.class_index], counts)
        after = c.loss(counts[(c.class_index, c.config)] + step)
        if not math.isfinite(now):  # the class has no images yet: it comes first, by the configuration that
            return FIRST - after if math.isfinite(after) else 0.0  # forecasts lowest for its first step
        return now - min(now, after)

    heap = [(-gain(c), c.class_index, c.config, c) for c in curves if eligible[(c.class_index, c.config)]]
    heapq.heapify(heap)
    while heap and left >= step:
        g, ci, cfg, c = heapq.heappop(heap)
        if cap is not None and total[ci] + step > cap.get(ci, total[ci] + step):
            continue  # the class is at its cap: no more steps for any of its configurations
        now = -gain(c)
        if now > g + 1e-15:  # its class moved since this entry was pushed: push it again with its gain now
            heapq.heappush(heap, (now, ci, cfg, c))
            continue
        if -now <= 0:
            break  # no step lowers the forecast any more
        counts[(ci, cfg)] += step
        total[ci] += step
        left -= step
        # gains only fall as counts grow (the class's other configurations' too): a stale entry is re-pushed when
        # it is popped, so the first entry whose gain is current is the largest
        heapq.heappush(heap, (-gain(c), ci, cfg, c))
    return _table(curves, by_class, have, counts, eligible, before)


def _fill_floor(by_class: dict[int, list[ClassCurve]], counts: dict[tuple[int, str], int],
                floor: int | dict[int, int], budget: int) -> int:
    """Every class brought to its floor (class by class, by the configuration that forecasts lowest there, as far
    as the budget goes); returns the budget left."""
    left = budget
    for ci, cs in sorted(by_class.items()):
        want = floor.get(ci, 0) if isinstance(floor, dict) else floor
        short = min(want - sum(counts[(c.class_index, c.config)] for c in cs), left)
        if short > 0:
            best = min(cs, key=lambda c: c.loss(counts[(ci, c.config)] + short))
            counts[(ci, best.config)] += short
            left -= short
    return left


def _table(curves: list[ClassCurve], by_class: dict[int, list[ClassCurve]], have: dict[tuple[int, str], int],
           counts: dict[tuple[int, str], int], eligible: dict[tuple[int, str], bool], before: dict[int, float]) -> Any:
    """allocate's table: a row per (class, configuration)."""
    import pandas as pd

    rows = []
    for c in curves:
        key = (c.class_index, c.config)
        why = "" if eligible[key] else "its k interval reaches 0 while other classes' lie above it" + (
            ": held at its floor" if counts[key] > int(have.get(key, 0)) else "")
        rows.append({"class_index": c.class_index, "config": c.config, "have": int(have.get(key, 0)),
                     "added": counts[key] - int(have.get(key, 0)), "k": c.k, "k_lo": c.k_lo,
                     "loss_before": before[c.class_index], "loss_after": _class_loss(by_class[c.class_index], counts),
                     "eligible": eligible[key], "why": why})
    return pd.DataFrame(rows)


FIRST = 1e6  # the gain of a class's first step: above any loss, so classes without images come first


def _class_loss(curves: list[ClassCurve], counts: dict[tuple[int, str], int]) -> float:
    """A class's forecast loss: that of its best configuration at the images it has."""
    return min(c.loss(counts[(c.class_index, c.config)]) for c in curves)


def fit_class_curves(obs: Any, examples: dict[str, tuple[Any, Any]], classes: int, d_ref: float, n_boot: int = 200,
                     confidence: float = 0.95, seed: int = 0) -> Any:
    """Equation 2 per (configuration, class) from observations: `obs` rows (config, class_index, n, model), each a
    model that saw `n` images of the class drawn by `config`, evaluated on one set whose per-example losses and
    labels are `examples[model]` (every model on the same examples, in the same order). The k interval is a
    bootstrap over the class's examples, one draw shared by all of its models (as class_fits_vectorised's).
    Returns rows (config, class_index, k, k_lo, k_hi, perf_at_DI, points, n_min, n_max); a pair with fewer than
    two distinct counts gets no row."""
    import numpy as np
    import pandas as pd

    from synscale.analysis.fit import _ols

    rng = np.random.default_rng(seed)
    a = (1 - confidence) / 2
    rows = []
    for (config, c), g in obs.groupby(["config", "class_index"], sort=True):
        g = g[g.n > 0]
        if g.n.nunique() < 2:
            continue
        per_model = []
        for m in g.model:
            loss, label = examples[m]
            per_model.append(np.asarray(loss, float)[np.asarray(label) == c])
        e = np.stack(per_model)  # (models, examples of the class): the same examples for every model
        x = np.log(classes * g.n.to_numpy(float) / d_ref)
        slope, icpt = _ols(x, np.log(np.maximum(e.mean(1), 1e-8)))
        draws = rng.integers(0, e.shape[1], size=(n_boot, e.shape[1]))
        reps = e[:, draws].mean(2).T  # (n_boot, models)
        s_b, _ = _ols(x, np.log(np.maximum(reps, 1e-8)))
        k_lo, k_hi = np.quantile(-s_b, [a, 1 - a])
        rows.append({"config": config, "class_index": int(c), "k": float(-slope), "k_lo": float(k_lo),
                     "k_hi": float(k_hi), "perf_at_DI": float(-icpt), "points": len(g), "n_min": int(g.n.min()),
                     "n_max": int(g.n.max())})
    return pd.DataFrame(rows, columns=["config", "class_index", "k", "k_lo", "k_hi", "perf_at_DI", "points", "n_min",
                                       "n_max"])


def spend(curves: list[ClassCurve], have: dict[tuple[int, str], int], budget: int, step: int,
          fallback: dict[int, str], floor: int | dict[int, int] = 0, cap: dict[int, int] | None = None) -> Any:
    """The whole budget, every image of it: `allocate` in steps of `step` (with its `floor` and `cap`), what is left
    below a step one image at a time, and what no forecast gain or cap lets it take spread evenly over the classes,
    each with its `fallback` configuration. Returns allocate's table with the images per pair summed (`why` says where the
    even spread gave any)."""
    import pandas as pd

    counts = dict(have)
    first = allocate(curves, counts, budget, step, floor, cap)
    for r in first.itertuples():
        counts[(r.class_index, r.config)] = r.have + r.added
    left = budget - int(first.added.sum())
    if left:
        second = allocate(curves, counts, left, 1, 0, cap)
        for r in second.itertuples():
            counts[(r.class_index, r.config)] = r.have + r.added
        left -= int(second.added.sum())
    spread: dict[tuple[int, str], int] = {}
    classes = sorted(fallback)
    for j in range(left):  # no step lowers any forecast: the rest class-balanced, as uniform generation would
        key = (classes[j % len(classes)], fallback[classes[j % len(classes)]])
        spread[key] = spread.get(key, 0) + 1
    out = first.assign(added=[counts[(r.class_index, r.config)] - r.have for r in first.itertuples()])
    extra = []
    for key, n in spread.items():
        hit = (out.class_index == key[0]) & (out.config == key[1])
        if hit.any():
            out.loc[hit, "added"] += n
            out.loc[hit, "why"] = "no forecast gain within the caps: the rest spread evenly"
        else:
            extra.append({"class_index": key[0], "config": key[1], "have": int(have.get(key, 0)), "added": n,
                          "eligible": False, "why": "no curve: the rest spread evenly"})
    if extra:
        out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    loss_after = {ci: _class_loss([c for c in curves if c.class_index == ci], counts) for ci in {c.class_index for c in curves}}
    return out.assign(loss_after=out.class_index.map(loss_after))
