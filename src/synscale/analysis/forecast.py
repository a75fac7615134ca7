"""Forecasts that are checked, and the exchange rate of synthetic images in real ones (docs/analysis.md).

Backtests. Every curve (task, source, eval_set: the mean loss over runs at each trained scale) is fitted on its
first c scales (c >= MIN_FIT for the power law of Equation 2, >= 4 for the saturating form) and forecasts each
larger scale it was trained at; the forecast error is log(actual) - log(forecast), its horizon the ratio of the
forecast scale to the largest fitted one. `forecasts.parquet` holds every backtest.

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
D_real. r = D_real / D: "one image of this curve is worth r real images at D". For a mix with R real images,
r counts what its added images are worth: (D_real - R) / (D - R). `exchange.parquet` holds them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from synscale.analysis.fit import fit_power_law, fit_saturating

MIN_FIT = 3  # scales a backtest's power law is fitted on, at least
MIN_SATURATING = 4  # the saturating form's three parameters need four
MIN_BAND = 5  # backtest errors a horizon band needs for its own quantile
FORECASTERS = ("power_law", "saturating")


def curves(scaling: Any) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray, float]]:
    """(key, scales, mean losses, run-to-run noise) of every curve of a scaling table with two or more scales;
    the noise is the median over scales of the loss's standard deviation across runs (0 with one run)."""
    for (task, source, eval_set), g in scaling.groupby(["task", "source", "eval_set"], sort=False):
        per = g.groupby("scale")["loss"].agg(["mean", "std", "size"])
        if len(per) < 2:
            continue
        sd = per["std"].dropna()
        noise = float(np.median(np.log1p(sd / per["mean"].loc[sd.index]))) if len(sd) and per["size"].max() > 1 else 0.0
        key = {"task": task, "source": source, "eval_set": eval_set}
        yield key, per.index.to_numpy(float), np.maximum(per["mean"].to_numpy(float), 1e-8), noise


def forecast_loss(forecaster: str, scales: np.ndarray, losses: np.ndarray, at: np.ndarray, d_ref: float) -> np.ndarray:
    """The loss `forecaster` fitted on (scales, losses) gives at the scales `at`."""
    if forecaster == "power_law":
        return fit_power_law(scales, losses, d_ref).predict_loss(at)
    return fit_saturating(scales, losses, d_ref).predict_loss(at)


def backtests(scaling: Any, d_ref: float | dict[str, float]) -> Any:
    """forecasts.parquet: every curve fitted on its first c scales, forecasting each larger trained scale."""
    import pandas as pd

    rows = []
    for key, scales, losses, _ in curves(scaling):
        ref = d_ref[key["task"]] if isinstance(d_ref, dict) else d_ref
        for forecaster, least in (("power_law", MIN_FIT), ("saturating", MIN_SATURATING)):
            for c in range(least, len(scales)):
                try:
                    pred = forecast_loss(forecaster, scales[:c], losses[:c], scales[c:], ref or float(scales[-1]))
                except (ValueError, np.linalg.LinAlgError):  # a prefix no law fits (flat, or degenerate): no forecast
                    continue
                for s, p, a in zip(scales[c:], pred, losses[c:], strict=True):
                    rows.append({**key, "forecaster": forecaster, "fitted_points": c, "fitted_max": int(scales[c - 1]),
                                 "scale": int(s), "horizon": float(s / scales[c - 1]), "forecast": float(p),
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

    def half_width(self, horizon: float) -> float:
        """The interval's half-width at `horizon`; NaN beyond what the backtests support."""
        if horizon > self.max_horizon or not math.isfinite(self.slope):
            return math.nan
        b = int(band(horizon))
        return self.width.get(b, self.slope * max(math.log2(horizon), 1.0))


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
    # the power law: log L = -perf - k (log D - log D_I)
    return float(fit.d_ref * math.exp((-math.log(loss) - fit.perf_at_DI) / fit.k)) if fit.k > 0 else math.nan, "forecast"


def exchange_rates(scaling: Any, d_ref: float | dict[str, float], cal: Calibration | None = None) -> Any:
    """exchange.parquet: for every non-real curve and scale, the real scale of the same loss and the rate r."""
    import pandas as pd

    real = {(k["task"], k["eval_set"]): (s, lo) for k, s, lo, _ in curves(scaling) if k["source"] == "real"}
    mixed = scaling.groupby(["task", "source", "scale"])["real_images"].max() if "real_images" in scaling else None
    rows = []
    for key, scales, losses, _ in curves(scaling):
        ref_curve = real.get((key["task"], key["eval_set"]))
        if key["source"] == "real" or ref_curve is None or len(ref_curve[0]) < 2:
            continue
        rs, rl = ref_curve
        fit = fit_power_law(rs, rl, (d_ref[key["task"]] if isinstance(d_ref, dict) else d_ref) or float(rs[-1]))
        for s, loss in zip(scales, losses, strict=True):
            d_real, how = _real_scale(float(loss), rs, rl, fit)
            lo = hi = math.nan
            if how == "forecast" and cal is not None and math.isfinite(d_real):
                w = cal.half_width(max(d_real / rs[-1], rs[0] / d_real))
                if math.isfinite(w) and fit.k > 0:  # the loss's interval, read as a scale's through the law
                    lo, hi = d_real * math.exp(-w / fit.k), d_real * math.exp(w / fit.k)
                else:
                    how = "beyond the backtests"
            n_real = float(mixed.get((key["task"], key["source"], s), 0.0)) if mixed is not None else 0.0

            def rate(d: float, n_real: float = n_real, s: float = float(s)) -> float:
                return (d - n_real) / (s - n_real) if s > n_real else math.nan

            rows.append({**key, "scale": int(s), "loss": float(loss), "real_images": int(n_real), "real_scale": d_real,
                         "rate": rate(d_real), "rate_lo": rate(lo), "rate_hi": rate(hi), "how": how})
    cols = ["task", "source", "eval_set", "scale", "loss", "real_images", "real_scale", "rate", "rate_lo", "rate_hi", "how"]
    return pd.DataFrame(rows, columns=cols)


def forecast_tables(results_dir: Any, scaling: Any, d_ref: float | dict[str, float], confidence: float) -> dict[str, Any]:
    """forecasts.parquet, forecast_calibration.parquet and exchange.parquet written into `results_dir`; returns
    the summary analysis.json keeps (coverage per forecaster, and per curve the forecaster that backtests better)."""
    if "task" not in scaling:
        scaling = scaling.assign(task="classification")
    if "real_images" not in scaling:
        scaling = scaling.assign(real_images=np.where(scaling["source"] == "real", scaling["scale"], 0))
    bt = backtests(scaling, d_ref)
    bt.to_parquet(results_dir / "forecasts.parquet", index=False)
    cal = calibration(bt, confidence)
    cal.to_parquet(results_dir / "forecast_calibration.parquet", index=False)
    pl = bt[bt.forecaster == "power_law"]
    law = Calibration(pl, confidence) if len(pl) else None
    exchange_rates(scaling, d_ref, law).to_parquet(results_dir / "exchange.parquet", index=False)
    summary: dict[str, Any] = {"confidence": confidence, "coverage": {}, "better": {},
                               "at_reference": at_reference(scaling, d_ref, law)}
    for forecaster, g in bt.groupby("forecaster", sort=False):
        cov, judged = _overall(cal[cal.forecaster == forecaster])
        summary["coverage"][forecaster] = {"coverage": cov, "judged": judged, "backtests": int(len(g))}
    both = bt[bt.fitted_points >= MIN_SATURATING]  # the backtests both forecasters made
    for (task, source, eval_set), g in both.groupby(["task", "source", "eval_set"], sort=False):
        err = g.groupby("forecaster")["log_error"].apply(lambda e: float(np.median(np.abs(e))))
        if len(err) == 2:
            summary["better"][f"{task}/{source}/{eval_set}"] = str(err.idxmin())
    return summary


def at_reference(scaling: Any, d_ref: float | dict[str, float], cal: Calibration | None) -> dict[str, Any]:
    """Per curve, the power law's loss at D_I with its calibrated interval and horizon (D_I over the largest trained
    scale), or `supported` False where that horizon is past what the backtests support."""
    out = {}
    for key, scales, losses, noise in curves(scaling):
        ref = d_ref[key["task"]] if isinstance(d_ref, dict) else d_ref
        if not ref:
            continue
        loss = float(fit_power_law(scales, losses, ref).predict_loss(np.array([ref]))[0])
        horizon = float(ref / scales[-1])
        w = cal.half_width(horizon) if cal is not None and horizon > 1 else math.nan
        if math.isfinite(w):
            w = math.sqrt(w**2 + noise**2)
        out[f"{key['task']}/{key['source']}/{key['eval_set']}"] = {
            "d_ref": float(ref), "horizon": horizon, "loss": loss, "lo": loss * math.exp(-w) if math.isfinite(w) else None,
            "hi": loss * math.exp(w) if math.isfinite(w) else None, "supported": bool(math.isfinite(w)) or horizon <= 1,
            "max_horizon": cal.max_horizon if cal is not None else 0.0}
    return out
