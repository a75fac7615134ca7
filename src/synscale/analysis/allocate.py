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


def allocate(curves: list[ClassCurve], have: dict[tuple[int, str], int], budget: int, step: int = 1) -> Any:
    """The budget of images split across (class, configuration) pairs: one row per pair with its images before
    (`have`), the images `added`, the class's forecast loss before and after, whether the pair could get images
    (`eligible`) and why not where it could not. `step`: images per greedy step (the budget's granularity)."""
    import pandas as pd

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

    def gain(c: ClassCurve) -> float:
        now = _class_loss(by_class[c.class_index], counts)
        after = c.loss(counts[(c.class_index, c.config)] + step)
        return (now - min(now, after)) if math.isfinite(now) else (math.inf if math.isfinite(after) else 0.0)

    heap = [(-gain(c), c.class_index, c.config, c) for c in curves if eligible[(c.class_index, c.config)]]
    heapq.heapify(heap)
    left = budget
    while heap and left >= step:
        g, ci, cfg, c = heapq.heappop(heap)
        now = -gain(c)
        if now > g + 1e-15:  # its class moved since this entry was pushed: push it again with its gain now
            heapq.heappush(heap, (now, ci, cfg, c))
            continue
        if -now <= 0:
            break  # no step lowers the forecast any more
        counts[(ci, cfg)] += step
        left -= step
        # gains only fall as counts grow (the class's other configurations' too): a stale entry is re-pushed when
        # it is popped, so the first entry whose gain is current is the largest
        heapq.heappush(heap, (-gain(c), ci, cfg, c))
    rows = []
    for c in curves:
        key = (c.class_index, c.config)
        why = "" if eligible[key] else "its k interval reaches 0 while other classes' lie above it"
        rows.append({"class_index": c.class_index, "config": c.config, "have": int(have.get(key, 0)),
                     "added": counts[key] - int(have.get(key, 0)), "k": c.k, "k_lo": c.k_lo,
                     "loss_before": before[c.class_index], "loss_after": _class_loss(by_class[c.class_index], counts),
                     "eligible": eligible[key], "why": why})
    return pd.DataFrame(rows)


def _class_loss(curves: list[ClassCurve], counts: dict[tuple[int, str], int]) -> float:
    """A class's forecast loss: that of its best configuration at the images it has."""
    return min(c.loss(counts[(c.class_index, c.config)]) for c in curves)
