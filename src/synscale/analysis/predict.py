"""Predict scaling ability k from recognizability and diversity, before paying for training at scale.

The model is ridge regression of k on the standardised features (recognizability and diversity of a
configuration's cheap test set, or of one class of it) with an unpenalised intercept. Its error is
measured by leave-one-out: each row's k is predicted by the model fitted on all the other rows, and the
mean absolute error is set beside that of the baseline that predicts the mean k of the other rows.
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


def loo_predictions(X: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(model, mean-baseline) leave-one-out predictions of every row."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    n = len(y)
    model, base = np.empty(n), np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        model[i] = fit_predictor(X[keep], y[keep], ridge).predict(X[i : i + 1])[0]
        base[i] = y[keep].mean()
    return model, base


@dataclass(frozen=True)
class LOOSummary:
    level: str
    n: int
    mae: float
    mae_mean: float
    skill: float
    spearman: float
    coef_recognizability: float
    coef_diversity: float
    intercept: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def evaluate_predictor(X: np.ndarray, y: np.ndarray, level: str, ridge: float = 1.0) -> tuple[LOOSummary, np.ndarray]:
    """Leave-one-out summary and the LOO predictions. Needs at least 4 rows (3 parameters + 1)."""
    from scipy.stats import spearmanr

    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 4:
        raise ValueError(f"leave-one-out of a 3-parameter model needs at least 4 rows, got {len(y)}")
    pred, base = loo_predictions(X, y, ridge)
    mae, mae_mean = float(np.abs(pred - y).mean()), float(np.abs(base - y).mean())
    rho = float(spearmanr(pred, y).statistic) if np.ptp(pred) > 0 and np.ptp(y) > 0 else float("nan")
    full = fit_predictor(X, y, ridge)
    raw = full.coef / full.scale  # per unit of each metric
    return LOOSummary(level, len(y), mae, mae_mean, 1 - mae / mae_mean if mae_mean > 0 else float("nan"), rho,
                      float(raw[0]), float(raw[1]), float(full.intercept - (full.mean / full.scale) @ full.coef)), pred
