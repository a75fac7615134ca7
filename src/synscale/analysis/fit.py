"""Equation 2 of the paper: log L_D = -k (log D - log D_I) + log L_{D_I}.

Ordinary least squares of log L on log D (natural logs) gives the scaling ability k (minus the
slope) and the performance at D_I, -log L_{D_I} (minus the intercept at log D = log D_I); R² is that
of the log-log regression.

Confidence intervals come from a bootstrap over evaluation examples: each replicate redraws the
evaluation set with replacement, recomputes every scale's mean loss from its per-example losses and
refits. When every scale was evaluated on the same examples, one draw serves all scales (the
replicates keep the pairing, as a new test set would). Where a scale has several training runs
(repeated seeds), each replicate also redraws that scale's runs with replacement, so the interval
carries the run-to-run spread too. Without per-example losses, the bootstrap resamples the fit's
residuals instead. The interval is the percentile interval at `confidence`.

Beyond the power law (section 4.4: it bends once the model saturates):
- `linear_range` finds the largest prefix of scales on which the log-log fit stays linear within a
  tolerance (every |log residual| <= tol); the first scale after it is the break.
- `fit_saturating` fits L = E + A (D/D_I)^-k by least squares in log space (E in [0, min L)), with
  bootstrap CIs from the same replicates.
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


def _runs(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float64)
    return e[None] if e.ndim == 1 else e


def bootstrap_replicates(example_losses: list[np.ndarray], n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_scales) bootstrap replicates of every scale's mean loss.

    `example_losses[j]` holds scale j's per-example losses, shape (n,) for one training run or
    (runs, n) for repeated seeds evaluated on the same examples."""
    rng = np.random.default_rng(seed)
    losses = [_runs(e) for e in example_losses]
    paired = len({e.shape[1] for e in losses}) == 1
    reps = np.empty((n_boot, len(losses)))
    for start in range(0, n_boot, 100):
        b = min(100, n_boot - start)
        if paired:
            n = losses[0].shape[1]
            draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
            counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).T / n  # (n, b): how often each example is drawn
        for j, e in enumerate(losses):
            if paired:
                run_means = e @ counts  # (runs, b)
            else:
                run_means = np.stack([rng.choice(r, size=(b, len(r)), replace=True).mean(1) for r in e])
            runs = rng.integers(0, len(e), size=(b, len(e)))  # redraw the runs (one run: always itself)
            reps[start : start + b, j] = run_means[runs, np.arange(b)[:, None]].mean(1)
    return reps


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
    means = np.array([_runs(e).mean() for e in example_losses])
    fit = fit_power_law(scales, means, d_ref)
    if n_boot == 0:
        return fit
    return with_intervals(fit, scales, bootstrap_replicates(example_losses, n_boot, seed), d_ref, confidence)


def bootstrap_fit_points(
    scales: np.ndarray, losses: np.ndarray, d_ref: float, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> PowerLawFit:
    """Residual bootstrap in log space, for when only mean losses per scale are known."""
    scales, losses = np.asarray(scales, float), np.asarray(losses, float)
    fit = fit_power_law(scales, losses, d_ref)
    if n_boot == 0 or len(scales) < 3:
        return fit
    return with_intervals(fit, scales, point_replicates(scales, losses, d_ref, n_boot, seed), d_ref, confidence)


def point_replicates(scales: np.ndarray, losses: np.ndarray, d_ref: float, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_scales) residual-bootstrap replicates of the mean losses: the fit's log residuals,
    rescaled to undo OLS shrinkage, redrawn with replacement around the fitted line."""
    scales, losses = np.asarray(scales, float), np.asarray(losses, float)
    fit = fit_power_law(scales, losses, d_ref)
    x = np.log(scales) - np.log(d_ref)
    yhat = -fit.k * x - fit.perf_at_DI
    resid = (np.log(losses) - yhat) * np.sqrt(len(x) / max(len(x) - 2, 1))
    return np.exp(yhat + np.random.default_rng(seed).choice(resid, size=(n_boot, len(x)), replace=True))


def log_residuals(scales: np.ndarray, losses: np.ndarray, fit: PowerLawFit) -> np.ndarray:
    return np.log(np.asarray(losses, float)) - np.log(fit.predict_loss(np.asarray(scales, float)))


def linear_range(scales: np.ndarray, losses: np.ndarray, d_ref: float, tol: float = 0.05, min_points: int = 3) -> int:
    """How many of the smallest scales the power law holds on: the largest prefix of at least
    `min_points` scales whose own log-log fit leaves every |log residual| <= `tol` (0.05: within about
    5% of the loss). 0 when no such prefix exists (the curve is too noisy for `tol`: no break can be
    told from noise). A curve of fewer than `min_points` scales counts as linear (nothing to test).
    Scales must be sorted."""
    scales, losses = np.asarray(scales, float), np.asarray(losses, float)
    if len(scales) < min_points:
        return len(scales)
    for m in range(len(scales), min_points - 1, -1):
        fit = fit_power_law(scales[:m], losses[:m], d_ref)
        if np.max(np.abs(log_residuals(scales[:m], losses[:m], fit))) <= tol:
            return m
    return 0


def break_direction(scales: np.ndarray, losses: np.ndarray, d_ref: float, m: int) -> str:
    """After a linear prefix of m scales: 'flattens' if the next scale's loss lies above the prefix's
    power law (the model saturates, as in section 4.4), 'steepens' if below; '' without a break."""
    if m == 0 or m >= len(scales):
        return ""
    fit = fit_power_law(np.asarray(scales[:m], float), np.asarray(losses[:m], float), d_ref)
    return "flattens" if losses[m] > fit.predict_loss(np.asarray([scales[m]], float))[0] else "steepens"


@dataclass(frozen=True)
class SaturatingFit:
    """L = E + A (D/D_I)^-k: E the loss the model saturates at, A + E the loss at D_I."""

    E: float
    A: float
    k: float
    rmse_log: float
    d_ref: float
    E_lo: float = float("nan")
    E_hi: float = float("nan")
    k_lo: float = float("nan")
    k_hi: float = float("nan")

    @property
    def perf_at_DI(self) -> float:
        return float(-np.log(self.E + self.A))

    def predict_loss(self, scales: np.ndarray) -> np.ndarray:
        return self.E + self.A * (np.asarray(scales, float) / self.d_ref) ** -self.k


def _saturating_point(x: np.ndarray, losses: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    from scipy.optimize import least_squares

    y = np.log(losses)
    lmin = float(losses.min())

    def resid(p: np.ndarray) -> np.ndarray:
        return np.log(p[0] + p[1] * np.exp(-p[2] * x)) - y

    def jac(p: np.ndarray) -> np.ndarray:
        e = np.exp(-p[2] * x)
        m = p[0] + p[1] * e
        return np.stack([1 / m, e / m, -p[1] * x * e / m], axis=1)

    lower, upper = [0.0, 1e-12, 0.0], [lmin * (1 - 1e-9), np.inf, 20.0]
    starts = [start] if start is not None else []
    for frac in (0.0, 0.3, 0.6, 0.9) if start is None else ():
        e0 = frac * lmin
        slope, intercept = _ols(x, np.log(losses - e0))
        starts.append(np.array([e0, np.exp(intercept), float(np.clip(-slope, 1e-3, 19.0))]))
    best = None
    for p0 in starts:
        p0 = np.clip(p0, lower, [u if np.isfinite(u) else 1e300 for u in upper])
        p0[0] = min(p0[0], lmin * (1 - 1e-6))
        r = least_squares(resid, p0, jac=jac, bounds=(lower, upper), method="trf", x_scale="jac")
        if best is None or r.cost < best.cost:
            best = r
    return best.x, float(np.sqrt(np.mean(best.fun**2)))


def fit_saturating(
    scales: np.ndarray, losses: np.ndarray, d_ref: float, replicates: np.ndarray | None = None, confidence: float = 0.95
) -> SaturatingFit:
    """L = E + A (D/D_I)^-k by least squares on log L; CIs for E and k from bootstrap `replicates`
    (n_boot, n_scales) of the mean losses, each refitted from the point estimate."""
    scales, losses = np.asarray(scales, float), np.asarray(losses, float)
    if len(scales) < 4:
        raise ValueError("the saturating fit has three parameters: it needs at least four scales")
    x = np.log(scales) - np.log(d_ref)
    p, rmse = _saturating_point(x, losses)
    fit = SaturatingFit(E=float(p[0]), A=float(p[1]), k=float(p[2]), rmse_log=rmse, d_ref=float(d_ref))
    if replicates is None or not len(replicates):
        return fit
    est = np.array([_saturating_point(x, r, start=p.copy())[0] for r in replicates])
    a = (1 - confidence) / 2
    (e_lo, k_lo), (e_hi, k_hi) = np.quantile(est[:, [0, 2]], [a, 1 - a], axis=0)
    return SaturatingFit(**{**asdict(fit), "E_lo": float(e_lo), "E_hi": float(e_hi), "k_lo": float(k_lo), "k_hi": float(k_hi)})


def with_intervals(fit: PowerLawFit, scales: np.ndarray, reps: np.ndarray, d_ref: float, confidence: float) -> PowerLawFit:
    x = np.log(scales) - np.log(d_ref)
    slope, intercept = _ols(x, np.log(reps))
    a = (1 - confidence) / 2
    k_lo, k_hi = np.quantile(-slope, [a, 1 - a])
    p_lo, p_hi = np.quantile(-intercept, [a, 1 - a])
    return PowerLawFit(**{**fit.as_row(), "k_lo": float(k_lo), "k_hi": float(k_hi), "perf_lo": float(p_lo), "perf_hi": float(p_hi)})


def class_fits_vectorised(
    scales: np.ndarray,
    example_losses: list[np.ndarray],
    labels: np.ndarray,
    classes: np.ndarray,
    d_ref: float,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    floor: float = 1e-8,
) -> dict[str, np.ndarray]:
    """Equation 2 on every class's own curve at once, with a stratified bootstrap: each replicate redraws
    every class's examples within the class (the same draw at every scale, as one evaluation set) and
    the runs, as `bootstrap_replicates` does for a whole curve. `example_losses[j]` is scale j's
    (runs, n) or (n,) per-example losses, all scales on the same examples with `labels`.

    Returns arrays over `classes`: k, perf_at_DI, r2, rmse_log, k_lo, k_hi, perf_lo, perf_hi, and
    `means` (classes, scales), the per-class mean losses averaged over runs."""
    scales = np.asarray(scales, float)
    losses = [_runs(e) for e in example_losses]
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, classes, side="left")
    ends = np.searchsorted(sorted_labels, classes, side="right")
    n_c = ends - starts
    if np.any(n_c == 0):
        raise ValueError("every class needs at least one evaluation example")
    keep = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])  # positions of wanted classes
    seg = np.repeat(np.arange(len(classes)), n_c)  # class slot of each kept position
    seg_starts = np.concatenate([[0], np.cumsum(n_c)[:-1]])
    sorted_losses = [e[:, order][:, keep] for e in losses]  # (runs, N') grouped by class
    means = np.stack([np.add.reduceat(e, seg_starts, axis=1).mean(0) / n_c for e in sorted_losses], axis=1)  # (C, S)
    means = np.maximum(means, floor)
    x = np.log(scales) - np.log(d_ref)
    y = np.log(means)
    slope, intercept = _ols(x, y)
    resid = y - (slope[:, None] * x + intercept[:, None])
    ss_tot = ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    r2 = np.where(ss_tot > 0, 1 - (resid**2).sum(1) / np.where(ss_tot > 0, ss_tot, 1), 1.0)
    out = {"k": -slope, "perf_at_DI": -intercept, "r2": r2, "rmse_log": np.sqrt((resid**2).mean(1)), "means": means}
    nan = np.full(len(classes), np.nan)
    out.update(k_lo=nan, k_hi=nan, perf_lo=nan, perf_hi=nan)
    if n_boot == 0:
        return out
    rng = np.random.default_rng(seed)
    slopes, intercepts = _class_bootstrap(x, sorted_losses, seg, seg_starts, n_c, n_boot, rng, floor)
    a = (1 - confidence) / 2
    k_q = np.quantile(-slopes, [a, 1 - a], axis=0)
    p_q = np.quantile(-intercepts, [a, 1 - a], axis=0)
    out.update(k_lo=k_q[0], k_hi=k_q[1], perf_lo=p_q[0], perf_hi=p_q[1])
    return out


def _class_bootstrap(x: np.ndarray, sorted_losses: list[np.ndarray], seg: np.ndarray, seg_starts: np.ndarray,
                     n_c: np.ndarray, n_boot: int, rng: np.random.Generator, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """`n_boot` stratified replicates of every class's fit (class_fits_vectorised): slopes and intercepts,
    each (n_boot, classes). `sorted_losses[j]`: scale j's (runs, N') losses grouped by class (`seg`, `seg_starts`)."""
    big_n, n_classes = len(seg), len(n_c)
    slopes, intercepts = np.empty((n_boot, n_classes)), np.empty((n_boot, n_classes))
    step = max(1, min(100, 5_000_000 // max(big_n, 1)))  # replicates per batch, bounded memory
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        # within-class draws: position = class start + floor(u * n_c)
        pos = seg_starts[seg] + np.floor(rng.random((b, big_n)) * n_c[seg]).astype(np.int64)
        counts = np.bincount((pos + (np.arange(b) * big_n)[:, None]).ravel(), minlength=b * big_n).reshape(b, big_n)
        reps = np.empty((b, n_classes, len(x)))
        for j, e in enumerate(sorted_losses):
            run_means = np.stack([np.add.reduceat(counts * r, seg_starts, axis=1) / n_c for r in e])  # (runs, b, C)
            runs = rng.integers(0, len(e), size=(b, len(e)))
            reps[:, :, j] = run_means[runs, np.arange(b)[:, None]].mean(1)
        sl, ic = _ols(x, np.log(np.maximum(reps, floor)))
        slopes[start : start + b], intercepts[start : start + b] = sl, ic
    return slopes, intercepts


def reference_size(d_ref: float | dict[str, float], task: str) -> float:
    """D_I of a task's curves: `d_ref` itself, or its entry for the task (the classifiers' where it has none)."""
    if not isinstance(d_ref, dict):
        return float(d_ref)
    return float(d_ref.get(task) or d_ref["classification"])
