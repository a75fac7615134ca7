"""Equation 2 of the paper: log L_D = -k (log D - log D_I) + log L_{D_I}.

Ordinary least squares of log L on log D (natural logs) gives the scaling ability k (minus the
slope) and the performance at D_I, -log L_{D_I} (minus the intercept at log D = log D_I); R² is that
of the log-log regression.

Confidence intervals come from a bootstrap over evaluation examples: each replicate redraws the
evaluation set with replacement, recomputes every scale's mean loss from its per-example losses and
refits. When every scale was evaluated on the same examples, one draw serves all scales (the
replicates keep the pairing, as a new test set would). Without per-example losses, the bootstrap
resamples the fit's residuals instead. The interval is the percentile interval at `confidence`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    k: float
    perf_at_DI: float  # -log L at D_I
    r2: float
    n_points: int
    d_ref: float
    k_lo: float = float("nan")
    k_hi: float = float("nan")
    perf_lo: float = float("nan")
    perf_hi: float = float("nan")

    def predict_loss(self, scales: np.ndarray) -> np.ndarray:
        return np.exp(-self.k * (np.log(scales) - np.log(self.d_ref)) - self.perf_at_DI)

    def as_row(self) -> dict[str, float]:
        return asdict(self)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts of y (..., n) on x (n,), vectorised over leading axes of y."""
    xm = x.mean()
    xc = x - xm
    slope = (y - y.mean(-1, keepdims=True)) @ xc / (xc @ xc)
    return slope, y.mean(-1) - slope * xm


def fit_power_law(scales: np.ndarray, losses: np.ndarray, d_ref: float) -> PowerLawFit:
    scales, losses = np.asarray(scales, float), np.asarray(losses, float)
    if len(scales) < 2:
        raise ValueError("a power-law fit needs at least two scales")
    if np.any(losses <= 0) or np.any(scales <= 0):
        raise ValueError("scales and losses must be positive")
    x, y = np.log(scales) - np.log(d_ref), np.log(losses)
    slope, intercept = _ols(x, y)
    resid = y - (slope * x + intercept)
    ss_tot = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(k=float(-slope), perf_at_DI=float(-intercept), r2=float(r2), n_points=len(scales), d_ref=float(d_ref))


def bootstrap_fit(
    scales: np.ndarray,
    example_losses: list[np.ndarray] | None,
    d_ref: float,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PowerLawFit:
    """The point fit on mean losses, with percentile CIs for k and -log L(D_I)."""
    scales = np.asarray(scales, float)
    if example_losses is None:
        raise ValueError("example_losses is required; use bootstrap_fit_points for mean losses only")
    means = np.array([np.mean(e) for e in example_losses])
    fit = fit_power_law(scales, means, d_ref)
    if n_boot == 0:
        return fit
    rng = np.random.default_rng(seed)
    paired = len({len(e) for e in example_losses}) == 1
    reps = np.empty((n_boot, len(scales)))
    for start in range(0, n_boot, 100):
        b = min(100, n_boot - start)
        if paired:
            n = len(example_losses[0])
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float32)  # (b, n)
            reps[start : start + b] = (np.stack(example_losses).astype(np.float32) @ counts.T).T / n
        else:
            for j, e in enumerate(example_losses):
                reps[start : start + b, j] = rng.choice(e, size=(b, len(e)), replace=True).mean(1)
    return _with_intervals(fit, scales, reps, d_ref, confidence)


def bootstrap_fit_points(
    scales: np.ndarray, losses: np.ndarray, d_ref: float, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> PowerLawFit:
    """Residual bootstrap in log space, for when only mean losses per scale are known."""
    scales, losses = np.asarray(scales, float), np.asarray(losses, float)
    fit = fit_power_law(scales, losses, d_ref)
    if n_boot == 0 or len(scales) < 3:
        return fit
    rng = np.random.default_rng(seed)
    x = np.log(scales) - np.log(d_ref)
    yhat = -fit.k * x - fit.perf_at_DI
    resid = np.log(losses) - yhat
    resid = resid * np.sqrt(len(x) / (len(x) - 2))  # undo OLS residual shrinkage
    reps = np.exp(yhat + rng.choice(resid, size=(n_boot, len(x)), replace=True))
    return _with_intervals(fit, scales, reps, d_ref, confidence)


def _with_intervals(fit: PowerLawFit, scales: np.ndarray, reps: np.ndarray, d_ref: float, confidence: float) -> PowerLawFit:
    x = np.log(scales) - np.log(d_ref)
    slope, intercept = _ols(x, np.log(reps))
    a = (1 - confidence) / 2
    k_lo, k_hi = np.quantile(-slope, [a, 1 - a])
    p_lo, p_hi = np.quantile(-intercept, [a, 1 - a])
    return PowerLawFit(**{**fit.as_row(), "k_lo": float(k_lo), "k_hi": float(k_hi), "perf_lo": float(p_lo), "perf_hi": float(p_hi)})
