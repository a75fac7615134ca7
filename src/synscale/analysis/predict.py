"""Predict scaling ability k from recognizability and diversity, before paying for training at scale.

The model is ridge regression of k on the standardised features (recognizability and diversity of a
configuration's cheap test set, or of one class of it) with an unpenalised intercept. Its error is
measured by leave-one-out: each row's k is predicted by the model fitted on all the other rows — for the
per-class rows, on the rows of all the other configurations (leave-one-configuration-out: a class's k is
never predicted from its own configuration's other classes, as it could not be before that configuration is
trained) — and the mean absolute error is set beside that of the baseline that predicts the mean k of the
same training rows.
skill = 1 - MAE(model) / MAE(mean): above 0, the metrics tell something about k that the mean does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FEATURES = ("recognizability", "diversity")


@dataclass(frozen=True)
class KPredictor:
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + ((np.asarray(X, float) - self.mean) / self.scale) @ self.coef


def fit_predictor(X: np.ndarray, y: np.ndarray, ridge: float = 1.0, features: tuple[str, ...] = FEATURES) -> KPredictor:
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(X) < 2:
        raise ValueError("the k predictor needs at least two rows")
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    Z = (X - mean) / scale
    yc = y - y.mean()
    coef = np.linalg.solve(Z.T @ Z + ridge * np.eye(Z.shape[1]), Z.T @ yc)
    return KPredictor(tuple(features), mean, scale, coef, float(y.mean()))


def loo_predictions(X: np.ndarray, y: np.ndarray, ridge: float = 1.0,
                    groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(model, mean-baseline) leave-one-out predictions of every row; with `groups`, every row is predicted
    from the rows of the other groups only (leave-one-group-out)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    n = len(y)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    model, base = np.empty(n), np.empty(n)
    for g in np.unique(groups):
        out = groups == g
        keep = ~out
        if keep.sum() < 2:
            raise ValueError("leave-one-group-out needs at least two rows outside every group")
        model[out] = fit_predictor(X[keep], y[keep], ridge).predict(X[out])
        base[out] = y[keep].mean()
    return model, base


@dataclass(frozen=True)
class LOOSummary:
    level: str
    n: int
    groups: int
    mae: float
    mae_mean: float
    skill: float
    spearman: float
    coef_recognizability: float
    coef_diversity: float
    intercept: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def evaluate_predictor(X: np.ndarray, y: np.ndarray, level: str, ridge: float = 1.0,
                       groups: np.ndarray | None = None) -> tuple[LOOSummary, np.ndarray]:
    """Leave-one-out (with `groups`: leave-one-group-out) summary and predictions. Needs at least 4 rows (3
    parameters + 1), and with groups at least 2 groups."""
    from scipy.stats import spearmanr

    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 4:
        raise ValueError(f"leave-one-out of a 3-parameter model needs at least 4 rows, got {len(y)}")
    if groups is not None and len(np.unique(groups)) < 2:
        raise ValueError("leave-one-configuration-out needs rows of at least two configurations")
    pred, base = loo_predictions(X, y, ridge, groups)
    mae, mae_mean = float(np.abs(pred - y).mean()), float(np.abs(base - y).mean())
    rho = float(spearmanr(pred, y).statistic) if np.ptp(pred) > 0 and np.ptp(y) > 0 else float("nan")
    full = fit_predictor(X, y, ridge)
    raw = full.coef / full.scale  # per unit of each metric
    n_groups = len(y) if groups is None else len(np.unique(groups))
    return LOOSummary(level, len(y), n_groups, mae, mae_mean, 1 - mae / mae_mean if mae_mean > 0 else float("nan"), rho,
                      float(raw[0]), float(raw[1]), float(full.intercept - (full.mean / full.scale) @ full.coef)), pred
