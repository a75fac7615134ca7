"""Forecasts that are checked, and the exchange rate of synthetic images in real ones (docs/analysis.md).

Forecasters (FORECASTERS): the power law of Equation 2 in D, the saturating form, and the power law in the samples
a run puts through the model (results' samples_seen), which knows the recipe's schedule.

Backtests. Every curve (task, source, eval_set: the mean loss over runs at each trained scale) is fitted on its
first c scales (c >= MIN_FIT for the power laws, >= 4 for the saturating form) and forecasts each larger scale it
was trained at; the forecast error is log(actual) - log(forecast), its horizon the ratio of the forecast point to
the largest fitted one in the forecaster's own axis (scales, or samples seen). `forecasts.parquet` holds every
backtest.

Held-out anchors. Models trained past a curve only to check it ([forecast] holdout; results/holdout.parquet) are
forecast by every forecaster fitted on the whole curve, with its interval at that horizon (its width extrapolated
past the backtests: `supported` False): `forecast_checks.parquet`.

Calibrated intervals. A forecast at horizon h is as uncertain as the backtests of comparable curves say: the
half-width (in log loss) of a `confidence` interval at h is the `confidence` quantile of |error| over the
backtests whose horizon falls in h's band (bands by log2 h, rounded); where a band has fewer than MIN_BAND
errors, the width grows with log2 h at the rate the backtests with enough errors give (a least-squares line
through the origin of width against log2 h), and a horizon beyond twice the largest backtested one is past
what the backtests support. Run-to-run noise (the standard deviation of a scale's loss over repeats, where
`repeats` measured it) is added in quadrature. `forecast_calibration.parquet` holds the width per forecaster
and band, and each band's empirical coverage: the share of its backtests inside intervals computed without
their own curve (leave one curve out).

Exchange rate. For a curve and a scale D with loss L, the real scale D_real at which the real curve (of the same
task and evaluation set) reaches L: inside the real curve's trained range by piecewise-linear interpolation of
log L over log D, outside it by the real power law, with the calibrated interval of that forecast carried into
D_real, or inside the real range a paired bootstrap of both curves' test examples (Bootstrap). r = D_real / D: "one
image of this curve is worth r real images at D". For a model of R real and S synthetic
images, r counts what its synthetic images are worth: (D_real - R) / S (a mix: S = D - R; CLIP's mixed pairs, where
every caption has both images: R = S = D). The real curve is `real`, or CLIP's real-pairs curve (real_sources).
`exchange.parquet` holds them; `exchange_per_class.parquet` the same per class (point values).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from synscale.analysis.fit import fit_power_law, fit_saturating, reference_size

MIN_FIT = 3  # scales a backtest's power law is fitted on, at least
MIN_SATURATING = 4  # the saturating form's three parameters need four
MIN_BAND = 5  # backtest errors a horizon band needs for its own quantile
# the forecasters and the fewest scales each is fitted on: Equation 2's power law in D, the saturating form, and
# the power law in the samples the recipe puts through the model (steps x batch: results' samples_seen), which
# knows the schedule (the paper's grows its steps with log D, so past its scales a run is short of steps, not data)
RATE_BOOTSTRAP = 200  # replicates of an interpolated exchange rate's interval, at most (fit.bootstrap's, else)
FORECASTERS = {"power_law": MIN_FIT, "saturating": MIN_SATURATING, "samples_seen": MIN_FIT}
LABELS = {"power_law": "power law in D", "saturating": "saturating form", "samples_seen": "power law in samples seen"}


class Curve(NamedTuple):
    key: dict[str, Any]  # task, source, eval_set
    scales: np.ndarray
    losses: np.ndarray  # the mean over runs at each scale
    noise: float  # run-to-run noise: the median over scales of the loss's log standard deviation across runs
    samples: np.ndarray  # samples seen at each scale (NaN where the table does not say)

    def axis(self, forecaster: str) -> np.ndarray | None:
        """What `forecaster` fits the losses against (None: this curve cannot have it)."""
        if forecaster != "samples_seen":
            return self.scales
        ok = np.all(np.isfinite(self.samples)) and np.all(np.diff(self.samples) > 0)
        return self.samples if ok else None


def curves(scaling: Any) -> Iterator[Curve]:
    """Every curve of a scaling table with two or more scales (synscale.analysis.forecast.Curve)."""
    if "samples_seen" not in scaling:
        scaling = scaling.assign(samples_seen=np.nan)
    for (task, source, eval_set), g in scaling.groupby(["task", "source", "eval_set"], sort=False):
        per = g.groupby("scale").agg(mean=("loss", "mean"), std=("loss", "std"), size=("loss", "size"),
                                     samples=("samples_seen", "mean"))
        if len(per) < 2:
            continue
        sd = per["std"].dropna()
        noise = float(np.median(np.log1p(sd / per["mean"].loc[sd.index]))) if len(sd) and per["size"].max() > 1 else 0.0
        key = {"task": task, "source": source, "eval_set": eval_set}
        yield Curve(key, per.index.to_numpy(float), np.maximum(per["mean"].to_numpy(float), 1e-8), noise,
                    per["samples"].to_numpy(float))


def forecast_loss(forecaster: str, x: np.ndarray, losses: np.ndarray, at: np.ndarray, d_ref: float) -> np.ndarray:
    """The loss `forecaster` fitted on (x, losses) gives at `at` (x and at: scales, or samples seen for the
    samples_seen forecaster)."""
    if forecaster == "saturating":
        return fit_saturating(x, losses, d_ref).predict_loss(at)
    return fit_power_law(x, losses, d_ref if forecaster == "power_law" else float(x[-1])).predict_loss(at)


def backtests(scaling: Any, d_ref: float | dict[str, float]) -> Any:
    """forecasts.parquet: every curve fitted on its first c scales, forecasting each larger trained scale."""
    import pandas as pd

    rows = []
    for cv in curves(scaling):
        key, scales, losses = cv.key, cv.scales, cv.losses
        ref = reference_size(d_ref, key["task"])
        for forecaster, least in FORECASTERS.items():
            x = cv.axis(forecaster)
            for c in range(least, len(scales) if x is not None else 0):
                try:
                    pred = forecast_loss(forecaster, x[:c], losses[:c], x[c:], ref or float(scales[-1]))
                except (ValueError, np.linalg.LinAlgError):  # a prefix no law fits (flat, or degenerate): no forecast
                    continue
                for s, h, p, a in zip(scales[c:], x[c:] / x[c - 1], pred, losses[c:], strict=True):
                    rows.append({**key, "forecaster": forecaster, "fitted_points": c, "fitted_max": int(scales[c - 1]),
                                 "scale": int(s), "horizon": float(h), "forecast": float(p),
                                 "actual": float(a), "log_error": float(math.log(a) - math.log(p))})
    cols = ["task", "source", "eval_set", "forecaster", "fitted_points", "fitted_max", "scale", "horizon", "forecast",
            "actual", "log_error"]
    return pd.DataFrame(rows, columns=cols)


def band(horizon: float | np.ndarray) -> Any:
    """A horizon's band: log2 of it, rounded (x2: 1, x4: 2, x10: 3, x150: 7)."""
    return np.rint(np.log2(np.asarray(horizon, float))).astype(int)


class Calibration:
    """The interval half-width (log loss) of a forecaster's forecasts by horizon, from backtest errors."""

    def __init__(self, errors: Any, confidence: float) -> None:
        self.confidence = confidence
        e = errors.assign(band=band(errors["horizon"].to_numpy()), abs_error=errors["log_error"].abs())
        self.width: dict[int, float] = {}
        for b, g in e.groupby("band"):
            if len(g) >= MIN_BAND:
                self.width[int(b)] = float(np.quantile(g["abs_error"], confidence))
        x = np.array([max(b, 1) for b in self.width], float)  # band 0 (x1.4 and less) counts as one doubling
        y = np.array(list(self.width.values()))
        self.slope = float(x @ y / (x @ x)) if len(x) else math.nan  # width per doubling, through the origin
        self.max_horizon = float(2 * e["horizon"].max()) if len(e) else 0.0

    def half_width(self, horizon: float, beyond: bool = False) -> float:
        """The interval's half-width at `horizon`; NaN beyond what the backtests support (twice the longest
        backtest), unless `beyond`: then the width keeps growing with log2 h at the backtests' rate, a width
        the backtests did not check (a held-out anchor does)."""
        if not math.isfinite(self.slope) or (horizon > self.max_horizon and not beyond):
            return math.nan
        b = int(band(horizon))
        return self.width.get(b, self.slope * max(math.log2(horizon), 1.0))

    def supports(self, horizon: float) -> bool:
        return horizon <= self.max_horizon and math.isfinite(self.slope)


def calibration(bt: Any, confidence: float) -> Any:
    """forecast_calibration.parquet: per forecaster and horizon band, the backtests, the half-width and the
    empirical coverage of intervals computed without the backtest's own curve."""
    import pandas as pd

    rows = []
    for forecaster, g in bt.groupby("forecaster", sort=False):
        cal = Calibration(g, confidence)
        ids = g["task"] + "/" + g["source"] + "/" + g["eval_set"]
        inside = np.full(len(g), np.nan)
        for curve in ids.unique():
            others = Calibration(g[ids != curve], confidence)
            mine = np.flatnonzero((ids == curve).to_numpy())
            for i in mine:
                w = others.half_width(float(g["horizon"].iloc[i]))
                if math.isfinite(w):
                    inside[i] = abs(g["log_error"].iloc[i]) <= w
        bands = band(g["horizon"].to_numpy())
        for b in sorted(set(bands.tolist())):
            sel = bands == b
            judged = inside[sel][np.isfinite(inside[sel])]
            rows.append({"forecaster": forecaster, "band": int(b), "horizon": float(2.0**b), "backtests": int(sel.sum()),
                         "half_width": cal.half_width(float(2.0**max(b, 0))),
                         "coverage": float(judged.mean()) if len(judged) else math.nan, "judged": int(len(judged))})
    return pd.DataFrame(rows, columns=["forecaster", "band", "horizon", "backtests", "half_width", "coverage", "judged"])


def coverage(bt: Any, confidence: float) -> tuple[float, int]:
    """The empirical coverage over every backtest (leave one curve out) and how many were judged."""
    return _overall(calibration(bt, confidence))


def _overall(cal: Any) -> tuple[float, int]:
    """(coverage, backtests judged) over the bands of a calibration table."""
    judged = cal["judged"].sum()
    return (float((cal["coverage"] * cal["judged"]).sum() / judged) if judged else math.nan), int(judged)


def _real_scale(loss: float, scales: np.ndarray, losses: np.ndarray, fit: Any) -> tuple[float, str]:
    """The real scale at which the real curve reaches `loss`: interpolated inside its trained range, else the
    power law's; and which of the two."""
    x, y = np.log(scales), np.log(losses)
    order = np.argsort(y)  # interpolation needs increasing y: a real curve falls with scale
    if y.min() <= math.log(loss) <= y.max() and np.all(np.diff(y) < 0):
        return float(np.exp(np.interp(math.log(loss), y[order], x[order]))), "interpolated"
    return law_scale(fit, loss), "forecast"


def _reach(d: float, scales: np.ndarray) -> float:
    """How far a scale `d` lies outside the trained `scales`, as a horizon (>= 1; inf where d is not a positive
    finite scale)."""
    if not (math.isfinite(d) and d > 0):
        return math.inf
    out = max(math.log(d) - math.log(scales[-1]), math.log(scales[0]) - math.log(d), 0.0)
    return math.exp(out) if out < 700 else math.inf


def law_scale(fit: Any, loss: float) -> float:
    """The scale at which a power law (log L = -perf - k (log D - log D_I)) reaches `loss`; NaN where it does
    not fall."""
    if not fit.k > 0:
        return math.nan
    x = (-math.log(loss) - fit.perf_at_DI) / fit.k  # log(D / D_I); a nearly flat law reaches a loss only far out
    return float(fit.d_ref * math.exp(x)) if x < 700 else math.inf


def exchange_rates(scaling: Any, d_ref: float | dict[str, float], cal: Calibration | None = None,
                   boot: Any = None) -> Any:
    """exchange.parquet: for every non-real curve and scale, the real scale of the same loss and the rate r, with
    its interval: from the calibrated forecast where the real curve's power law is read, from `boot` (a Bootstrap of
    the per-example losses) where the real curve is interpolated. r = (D_real - R) / S for a model of R real and S
    synthetic images: what its synthetic images are worth (a mix's added ones; CLIP's mixed pairs: R = S = D)."""
    import pandas as pd

    scaling = _with_counts(scaling)
    reals = real_sources(scaling)
    real = {(c.key["task"], c.key["eval_set"]): c for c in curves(scaling) if c.key["source"] == reals.get(c.key["task"])}
    parts = _parts(scaling)
    rows = []
    for cv in curves(scaling):
        key, rc = cv.key, real.get((cv.key["task"], cv.key["eval_set"]))
        if key["source"] == reals.get(key["task"]) or rc is None or len(rc.scales) < 2:
            continue
        fit = fit_power_law(rc.scales, rc.losses, reference_size(d_ref, key["task"]) or float(rc.scales[-1]))
        reps = boot.joint(rc, cv) if boot is not None else None
        for j, (s, loss) in enumerate(zip(cv.scales, cv.losses, strict=True)):
            d_real, how = _real_scale(float(loss), rc.scales, rc.losses, fit)
            lo = hi = math.nan
            if how == "forecast" and cal is not None and math.isfinite(d_real):
                w = cal.half_width(_reach(d_real, rc.scales))
                if math.isfinite(w) and fit.k > 0:  # the loss's interval, read as a scale's through the law
                    lo, hi = d_real * math.exp(-w / fit.k), d_real * math.exp(w / fit.k)
                else:
                    how = "beyond the backtests"
            elif how == "interpolated" and reps is not None:
                lo, hi = boot.interval([_real_scale(float(r[len(rc.scales) + j]), rc.scales, r[:len(rc.scales)], fit)[0]
                                        for r in reps])
            n_real, n_syn = parts.get((key["task"], key["source"], s), (0.0, float(s)))

            def rate(d: float, n_real: float = n_real, n_syn: float = n_syn) -> float:
                return (d - n_real) / n_syn if n_syn > 0 else math.nan

            rows.append({**key, "scale": int(s), "loss": float(loss), "real_images": int(n_real), "real_scale": d_real,
                         "rate": rate(d_real), "rate_lo": rate(lo), "rate_hi": rate(hi), "how": how})
    cols = ["task", "source", "eval_set", "scale", "loss", "real_images", "real_scale", "rate", "rate_lo", "rate_hi", "how"]
    return pd.DataFrame(rows, columns=cols)


def _with_counts(scaling: Any) -> Any:
    """A scaling table with its task and real_images columns (a table from before them: classifiers, real by name)."""
    if "task" not in scaling:
        scaling = scaling.assign(task="classification")
    if "real_images" not in scaling:
        scaling = scaling.assign(real_images=np.where(scaling["source"] == "real", scaling["scale"], 0))
    return scaling


def real_sources(scaling: Any) -> dict[str, str]:
    """Per task, the source of the real curve: `real` for the classifiers; CLIP's (clip.real, e.g. clip-real) is the
    one whose every model trained on real images only."""
    out: dict[str, str] = {}
    syn = scaling["synthetic_images"] if "synthetic_images" in scaling else scaling["scale"] - scaling["real_images"]
    pure = scaling.assign(pure=(scaling["real_images"] == scaling["scale"]) & (syn == 0))
    for (task, source), g in pure.groupby(["task", "source"], sort=False):
        if g["pure"].all() and (task not in out or source == "real"):
            out[task] = source
    return out


def _parts(scaling: Any) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(task, source, scale) -> (real images, synthetic images) of its models: what a rate counts against."""
    syn = scaling["synthetic_images"] if "synthetic_images" in scaling else scaling["scale"] - scaling["real_images"]
    g = scaling.assign(syn=syn).groupby(["task", "source", "scale"])[["real_images", "syn"]].max()
    return {k: (float(r.real_images), float(r.syn)) for k, r in g.iterrows()}


def rate_forecast(scaling: Any, task: str, source: str, eval_set: str, at: float) -> float | None:
    """The exchange rate of `source` at scale `at` as the power laws of both curves forecast it: the real scale at
    which the real curve's law reaches the loss `source`'s law forecasts at `at`, over `at` (None without both
    curves)."""
    scaling = _with_counts(scaling)
    real_source = real_sources(scaling).get(task)
    found = {c.key["source"]: c for c in curves(scaling[scaling.eval_set == eval_set]) if c.key["task"] == task
             and c.key["source"] in (real_source, source)}
    if len(found) < 2 or any(len(c.scales) < MIN_FIT for c in found.values()):
        return None
    real, mine = (fit_power_law(c.scales, c.losses, float(c.scales[-1])) for c in (found[real_source], found[source]))
    loss = float(mine.predict_loss(np.array([at], float))[0])
    return law_scale(real, loss) / at


class Bootstrap:
    """Joint bootstrap replicates of two curves' mean losses on one evaluation set: the same examples redrawn for
    both (they were evaluated on the same set), from the per-example losses (analysis.run.CurveExamples)."""

    def __init__(self, examples: Any, n_boot: int, seed: int, confidence: float) -> None:
        self.examples, self.seed, self.confidence = examples, seed, confidence
        self.n_boot = min(n_boot, RATE_BOOTSTRAP)

    def joint(self, a: Curve, b: Curve) -> np.ndarray | None:
        """(n_boot, len(a.scales) + len(b.scales)) replicates of both curves' means; None without examples."""
        from synscale.analysis.fit import bootstrap_replicates

        ex = [self.examples.get((c.key["source"], c.key["source"], c.key["eval_set"]), c.scales.astype(int).tolist())
              for c in (a, b)]
        if not self.n_boot or any(e is None for e in ex):
            return None
        arrays = [np.maximum(x, 0.0) for e in ex for x in e[0]]
        if len({x.shape[-1] for x in arrays}) != 1:
            return None  # not the same examples: no joint redraw
        return np.maximum(bootstrap_replicates(arrays, self.n_boot, self.seed), 1e-8)

    def interval(self, values: list[float]) -> tuple[float, float]:
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if len(v) < 0.9 * self.n_boot:  # too many replicates without a value: no interval
            return math.nan, math.nan
        a = (1 - self.confidence) / 2
        lo, hi = np.quantile(v, [a, 1 - a])
        return float(lo), float(hi)


def class_exchange_rates(per_class: Any, d_ref: float | dict[str, float], mixes: set[str],
                         cal: Calibration | None = None, reals: dict[str, str] | None = None) -> Any:
    """exchange_per_class.parquet: the exchange rate of every class of every synthetic curve (not the `mixes`) at
    each scale, against the real curve of that class (scaling_per_class.parquet: mean over runs); point values. A
    real scale read off the class's power law further out than the curves' backtests reach (`cal`) is marked
    `beyond the backtests`."""
    import pandas as pd

    cols = ["task", "source", "eval_set", "class_index", "class_name", "scale", "loss", "real_scale", "rate", "how"]
    if per_class is None or not len(per_class):
        return pd.DataFrame(columns=cols)
    pc = per_class.assign(task=per_class["task"] if "task" in per_class else "classification")
    pc = pc[pc.source == pc.config] if "config" in pc else pc
    means = pc.groupby(["task", "eval_set", "class_index", "source", "scale"], sort=False)["loss"].mean()
    names = pc.groupby(["task", "eval_set", "class_index"])["class_name"].first()  # an OOD set has its own classes
    grouped: dict[tuple[Any, Any, Any], dict[str, dict[int, float]]] = {}
    for (task, eval_set, ci, source, s), loss in means.items():  # one pass: a groupby per class is slow at 1,000
        grouped.setdefault((task, eval_set, ci), {}).setdefault(source, {})[s] = float(loss)
    rows = []
    for (task, eval_set, ci), curves_ in grouped.items():
        real_source = (reals or {}).get(task, "real")
        real = curves_.get(real_source)
        if real is None or len(real) < 2:
            continue
        rs = np.array(sorted(real), float)
        rl = np.maximum([real[k] for k in sorted(real)], 1e-8)
        fit = fit_power_law(rs, rl, reference_size(d_ref, task) or float(rs[-1]))
        name = str(names[(task, eval_set, ci)])
        for source, c in curves_.items():
            if source == real_source or source in mixes:
                continue
            for s, loss in sorted(c.items()):
                d, how = _real_scale(max(float(loss), 1e-8), rs, rl, fit)
                if how == "forecast" and not (cal is not None and cal.supports(_reach(d, rs))):
                    how = "beyond the backtests"
                rows.append({"task": task, "source": source, "eval_set": eval_set, "class_index": int(ci),
                             "class_name": name, "scale": int(s), "loss": float(loss), "real_scale": d,
                             "rate": d / float(s) if math.isfinite(d) else math.nan, "how": how})
    return pd.DataFrame(rows, columns=cols)


def forecast_tables(results_dir: Any, scaling: Any, d_ref: float | dict[str, float], confidence: float,
                    holdout: Any = None, samples_ref: dict[str, float] | None = None, boot: Bootstrap | None = None,
                    per_class: Any = None) -> dict[str, Any]:
    """forecasts.parquet, forecast_calibration.parquet, exchange.parquet and (with `holdout`, the held-out
    anchors' rows) forecast_checks.parquet written into `results_dir`; returns the summary analysis.json keeps
    (coverage per forecaster, per curve the forecaster that backtests better, each curve at D_I, the checks)."""
    scaling = _with_counts(scaling)
    bt = backtests(scaling, d_ref)
    bt.to_parquet(results_dir / "forecasts.parquet", index=False)
    cal = calibration(bt, confidence)
    cal.to_parquet(results_dir / "forecast_calibration.parquet", index=False)
    pl = bt[bt.forecaster == "power_law"]
    law = Calibration(pl, confidence) if len(pl) else None
    exchange_rates(scaling, d_ref, law, boot).to_parquet(results_dir / "exchange.parquet", index=False)
    reals = real_sources(scaling)
    mixes = set(scaling.loc[(scaling.real_images > 0) & ~scaling.source.isin(list(reals.values())), "source"])
    class_exchange_rates(per_class, d_ref, mixes, law, reals).to_parquet(results_dir / "exchange_per_class.parquet", index=False)
    checks = holdout_checks(scaling, holdout, d_ref, bt, confidence)
    if len(checks):
        checks.to_parquet(results_dir / "forecast_checks.parquet", index=False)
    by_samples = bt[bt.forecaster == "samples_seen"]
    summary: dict[str, Any] = {"confidence": confidence, "coverage": {}, "better": {},
                               "at_reference": at_reference(scaling, d_ref, law),
                               "at_reference_samples": at_reference(
                                   scaling, d_ref, Calibration(by_samples, confidence) if len(by_samples) else None,
                                   samples_ref or {}),
                               "checks": checks.to_dict("records")}
    for forecaster, g in bt.groupby("forecaster", sort=False):
        cov, judged = _overall(cal[cal.forecaster == forecaster])
        summary["coverage"][forecaster] = {"coverage": cov, "judged": judged, "backtests": int(len(g))}
    both = bt[bt.fitted_points >= MIN_SATURATING]  # the backtests every forecaster could make
    for (task, source, eval_set), g in both.groupby(["task", "source", "eval_set"], sort=False):
        err = g.groupby("forecaster")["log_error"].apply(lambda e: float(np.median(np.abs(e))))
        if len(err) >= 2:
            summary["better"][f"{task}/{source}/{eval_set}"] = str(err.idxmin())
    return summary


def _interval(loss: float, horizon: float, noise: float, cal: Calibration | None) -> dict[str, Any]:
    """A forecast `loss` at `horizon` with its interval: calibrated where the backtests reach, else the width
    extrapolated (`supported` False), run-to-run `noise` added in quadrature."""
    w = cal.half_width(horizon, beyond=True) if cal is not None and horizon > 1 else math.nan
    if math.isfinite(w):
        w = math.sqrt(w**2 + noise**2)
    ok = math.isfinite(w)
    return {"horizon": horizon, "forecast": loss, "lo": loss * math.exp(-w) if ok else None,
            "hi": loss * math.exp(w) if ok else None,
            "supported": horizon <= 1 or (cal is not None and cal.supports(horizon)),
            "max_horizon": cal.max_horizon if cal is not None else 0.0}


def at_reference(scaling: Any, d_ref: float | dict[str, float], cal: Calibration | None,
                 samples_ref: dict[str, float] | None = None) -> dict[str, Any]:
    """Per curve, the power law's loss at D_I with its interval and horizon (D_I over the largest trained scale);
    `supported` False where that horizon is past what the backtests support (the interval's width is then
    extrapolated, unchecked by them). With `samples_ref` (the samples a run at D_I sees, per task), the power law in
    samples seen instead, its horizon in samples."""
    out = {}
    for cv in curves(scaling):
        key = cv.key
        ref = reference_size(d_ref, key["task"])
        if samples_ref is not None:
            x, at = cv.axis("samples_seen"), samples_ref.get(key["task"])
            if x is None or not at or not ref:
                continue
            loss = float(forecast_loss("samples_seen", x, cv.losses, np.array([at], float), ref)[0])
            item = _interval(loss, float(at / x[-1]), cv.noise, cal)
        elif ref:
            x = cv.scales
            loss = float(fit_power_law(x, cv.losses, ref).predict_loss(np.array([ref]))[0])
            item = _interval(loss, float(ref / x[-1]), cv.noise, cal)
        else:
            continue
        out[f"{key['task']}/{key['source']}/{key['eval_set']}"] = {"d_ref": float(ref), "loss": loss, **item,
                                                                   "scale_ratio": float(ref / cv.scales[-1])}
    return out


def holdout_checks(scaling: Any, holdout: Any, d_ref: float | dict[str, float], bt: Any, confidence: float) -> Any:
    """forecast_checks.parquet: every held-out anchor (task, source, eval_set, scale: the mean loss over runs of
    the models trained there only to check) against each forecaster fitted on the whole curve, with its interval
    at that horizon (calibrated on the backtests, or extrapolated past them: `supported` False)."""
    import pandas as pd

    cols = ["task", "source", "eval_set", "forecaster", "scale", "scale_ratio", "horizon", "forecast", "lo", "hi",
            "measured", "log_error", "inside", "supported", "max_horizon"]
    if holdout is None or not len(holdout):
        return pd.DataFrame(columns=cols)
    holdout = holdout.assign(task=holdout["task"] if "task" in holdout else "classification")
    if "samples_seen" not in holdout:
        holdout = holdout.assign(samples_seen=np.nan)
    measured = holdout.groupby(["task", "source", "eval_set", "scale"]).agg(loss=("loss", "mean"),
                                                                           samples=("samples_seen", "mean"))
    cals = {f: Calibration(g, confidence) for f, g in bt.groupby("forecaster")}
    rows = []
    for cv in curves(scaling):
        key = cv.key
        mine = measured[[k[:3] == (key["task"], key["source"], key["eval_set"]) for k in measured.index]]
        ref = reference_size(d_ref, key["task"]) or float(cv.scales[-1])
        for forecaster, least in FORECASTERS.items():
            x = cv.axis(forecaster)
            at = mine["samples"].to_numpy(float) if forecaster == "samples_seen" else np.array(
                [k[3] for k in mine.index], float)
            if not len(mine) or x is None or len(x) < least or not np.all(np.isfinite(at)):
                continue
            try:
                pred = forecast_loss(forecaster, x, cv.losses, at, ref)
            except (ValueError, np.linalg.LinAlgError):
                continue
            for (_, _, _, scale), a, actual, p in zip(mine.index, at, mine["loss"].to_numpy(float), pred, strict=True):
                item = _interval(float(p), float(a / x[-1]), cv.noise, cals.get(forecaster))
                inside = item["lo"] is not None and item["lo"] <= actual <= item["hi"]
                rows.append({**key, "forecaster": forecaster, "scale": int(scale), "scale_ratio": float(scale / cv.scales[-1]),
                             **item, "measured": float(actual),
                             "log_error": float(math.log(max(actual, 1e-8)) - math.log(p)), "inside": bool(inside)})
    return pd.DataFrame([{c: r[c] for c in cols} for r in rows], columns=cols)


GOAL_ERROR = 0.10  # the |log error| a forecast at x10 should stay within (issue 29's goal, printed by the demo)
GOAL_COVERAGE = (0.80, 0.97)  # the backtest coverage the 90% intervals should have


def check_lines(fc: dict[str, Any], eval_set: str = "val") -> list[str]:
    """The forecasts' checks as terminal lines: backtest coverage per forecaster, and each held-out anchor on
    `eval_set` against both forecasters (analysis.json `forecasts`)."""
    conf = fc.get("confidence", 0.9)
    cov = [f"{LABELS[f]} {c['coverage']:.0%} of {c['judged']}" for f, c in fc.get("coverage", {}).items()
           if c.get("judged")]
    lines = [f"backtest coverage of the {conf:.0%} intervals (leave one curve out): {', '.join(cov) or 'none judged'} "
             f"(goal {GOAL_COVERAGE[0]:.0%}-{GOAL_COVERAGE[1]:.0%})"] if cov else []
    checks = [c for c in fc.get("checks", []) if c["eval_set"] == eval_set]
    extrapolated = 0.0  # the largest horizon the backtests reach, where an interval is past it
    for (task, source, scale), group in _grouped(checks):
        parts = []
        for c in group:
            star = "" if c["supported"] else "*"
            if not c["supported"]:
                extrapolated = max(extrapolated, c["max_horizon"])
            has = c["lo"] is not None and math.isfinite(c["lo"])
            iv = f" [{c['lo']:.3f}, {c['hi']:.3f}]{star}" if has else ""
            verdict = ("inside" if c["inside"] else "OUTSIDE") if has else "no interval: too few backtests"
            parts.append(f"{LABELS[c['forecaster']]} {c['forecast']:.3f}{iv} (log error {c['log_error']:+.2f}, {verdict})")
        head = group[0]
        lines.append(f"{source if task == 'classification' else task + '/' + source} at {scale:,} "
                     f"(x{head['scale_ratio']:,.0f} its largest scale): measured {head['measured']:.3f}; forecasts: "
                     + "; ".join(parts))
    if extrapolated:
        lines.append("  * past the horizons the backtests reach (a forecaster's own: x{:,.1f} at most): the interval's "
                     "width is extrapolated, which the held-out model checks".format(extrapolated))
    if checks:
        lines.append(f"  goal at x10: |log error| <= {GOAL_ERROR:.2f} and the measured loss inside the interval")
    return lines


def _grouped(checks: list[dict[str, Any]]) -> list[tuple[tuple[str, str, int], list[dict[str, Any]]]]:
    out: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for c in checks:
        out.setdefault((c["task"], c["source"], int(c["scale"])), []).append(c)
    return list(out.items())
