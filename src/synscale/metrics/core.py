"""The metrics of a synthetic (or real) test set, each a registry entry (see docs/metrics.md for formulas).

Every metric returns (row values, per-class table). A per-class column and the row value of the same
name agree: the row value is the mean over classes. Whole-set quantities (`fd`, `fid_inception`) have
no per-class column; `fd_class` is the per-class Fréchet distance of appendix G.4. `lpips_ref` is an
LPIPS-style distance on the reference network; the paper's LPIPS (AlexNet) is `lpips_alex`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synscale.registry import Registry

if TYPE_CHECKING:  # torch is imported where it is used, so that importing this module needs none
    import torch


@dataclass
class MetricInputs:
    test: Any  # Features of the configuration's test set (`per_class` images per class)
    images: np.ndarray  # its uint8 images (N, C, H, W), in the same order
    real: Any  # Features of the real validation set
    class_names: tuple[str, ...]
    cfg: Any  # MetricsConfig
    ref: Any = None  # the Reference (feature maps for lpips_ref, device)
    fd_set: Any = None  # Features: up to fd_per_class per class of the configuration's training set
    fd_real: Any = None  # Features: up to fd_per_class per class of the real training set
    real_dir: Path | None = None  # the real validation set on disk (Inception FID streams it)


@dataclass(frozen=True)
class Metric:
    fn: Callable[[MetricInputs], tuple[dict[str, float], dict[str, np.ndarray]]]
    columns: tuple[str, ...]  # row columns it fills (NaN when it cannot run)
    per_class: tuple[str, ...]  # per-class columns


METRICS: Registry[Any] = Registry("metric")  # in registration order: the order of the columns in every table
# metrics renamed since: old name -> new name. Study files naming the old one are refused with the new name
# (config.py); results tables written before are read with the new column name (results.read_table).
RENAMED = {"lpips": "lpips_ref"}  # the reference network's LPIPS-style distance, never the paper's LPIPS


def register(name: str, columns: tuple[str, ...], per_class: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        METRICS.register(name)(Metric(fn, columns, per_class))
        return fn

    return deco


def metric_columns(per_class: bool = False) -> list[str]:
    """The columns the registered metrics fill (with `per_class`: their per-class columns), in registry order: what
    the analysis and the report read from the metrics tables."""
    return [c for _, m in METRICS.entries() for c in (m.per_class if per_class else m.columns)]


def _classes(inp: MetricInputs) -> range:
    return range(len(inp.class_names))


def _by_class(values: np.ndarray, name: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    return {name: float(np.nanmean(values)) if np.isfinite(values).any() else math.nan}, {name: values}


# ---------------------------------------------------------------------------------------------------
# Formulas (numpy, float64)


def f1_per_class(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class, with precision and recall over all predictions (0 where a class has none)."""
    f1 = np.zeros(n_classes)
    for c in range(n_classes):
        tp = np.sum((pred == c) & (labels == c))
        denom = 2 * tp + np.sum((pred == c) & (labels != c)) + np.sum((pred != c) & (labels == c))
        f1[c] = 2 * tp / denom if denom else 0.0
    return f1


def macro_f1(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    """Macro-averaged F1 and the per-class F1 scores."""
    f1 = f1_per_class(pred, labels, n_classes)
    return float(f1.mean()), f1


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def feature_std(feats: np.ndarray) -> float:
    """Diversity of one class: sqrt(mean_i ||u_i - mean(u)||^2) over L2-normalised features u_i, the
    standard deviation of the class's features around their centre (0 for identical images, at most 1)."""
    u = unit(feats)
    return float(np.sqrt(np.mean(np.sum((u - u.mean(0)) ** 2, axis=1)))) if len(u) else math.nan


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)), unbiased covariances, the trace of the
    matrix square root from the eigenvalues of S_x S_y (as torchmetrics and clean-fid compute it)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        return math.nan
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(eig.astype(np.complex128)).real.sum()
    d = float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(d, 0.0)


def _kth_nn(d: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row's k-th nearest neighbour in a square distance matrix (self excluded)."""
    return np.sort(d, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) with
    k-nearest-neighbour balls in feature space."""
    import torch

    nan = dict.fromkeys(("precision", "recall", "density", "coverage"), math.nan)
    if len(real) <= k or len(fake) <= k:
        return nan
    real, fake = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    r_rad = _kth_nn(torch.cdist(real, real).numpy(), k)
    f_rad = _kth_nn(torch.cdist(fake, fake).numpy(), k)
    d = torch.cdist(real, fake).numpy()  # (R, F)
    inside = d < r_rad[:, None]
    return {"precision": float(inside.any(0).mean()), "recall": float((d < f_rad[None, :]).any(1).mean()),
            "density": float(inside.sum(0).mean() / k), "coverage": float((d.min(1) < r_rad).mean())}


def vendi(feats: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine-similarity kernel: exp of the entropy of the
    eigenvalues of K/n; 1 for identical images, n for n mutually orthogonal features."""
    if len(feats) == 0:
        return math.nan
    u = unit(feats)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 1e-12]
    return float(np.exp(-np.sum(lam * np.log(lam))))


# ---------------------------------------------------------------------------------------------------
# Registry entries


@register("recognizability", ("recognizability",), ("recognizability",))
def _recognizability(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    f1 = f1_per_class(inp.test.logits.argmax(1), inp.test.labels, len(inp.class_names))
    return _by_class(f1, "recognizability")


@register("diversity", ("diversity",), ("diversity",))
def _diversity(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    return _by_class(np.array([feature_std(inp.test.feats[inp.test.labels == c]) for c in _classes(inp)]), "diversity")


@register("fd", ("fd",))
def _fd(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    return {"fd": frechet_distance(inp.test.feats, inp.real.feats)}, {}


@register("fd_class", ("fd_class",), ("fd_class",))
def _fd_class(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    if inp.fd_set is None or inp.fd_real is None or inp.cfg.fd_per_class == 0:
        return {"fd_class": math.nan}, {}
    a, b = inp.fd_set, inp.fd_real
    return _by_class(np.array([frechet_distance(a.feats[a.labels == c], b.feats[b.labels == c]) for c in _classes(inp)]), "fd_class")


def sample_pairs(n: int, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `pairs` distinct unordered pairs (i < j) of n items, drawn uniformly without replacement."""
    total = n * (n - 1) // 2
    if total == 0:
        return np.zeros((0, 2), np.int64)
    flat = rng.choice(total, size=min(pairs, total), replace=False)
    i, j = np.triu_indices(n, 1)
    return np.stack([i[flat], j[flat]], 1)


def _pair_distances(inp: MetricInputs, dist: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    out = np.full(len(inp.class_names), math.nan)
    for c in _classes(inp):
        idx = np.flatnonzero(inp.test.labels == c)
        pairs = sample_pairs(len(idx), inp.cfg.lpips_pairs, np.random.default_rng([inp.cfg.seed, c]))
        if len(pairs):
            out[c] = float(dist(inp.images[idx[pairs[:, 0]]], inp.images[idx[pairs[:, 1]]]).mean())
    return out


def _unit_channels(m: torch.Tensor) -> torch.Tensor:
    return m / (m.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)


def lpips_style(ref: Any, a: np.ndarray, b: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Per pair: (1/L) sum over the reference network's L feature maps of the spatial mean of
    ||u_a - u_b||^2, with u the map normalised to unit length along channels (LPIPS with uniform weights
    on a different network)."""
    import torch

    out = []
    for i in range(0, len(a), batch_size):
        ma = ref.feature_maps(torch.from_numpy(a[i : i + batch_size]))
        mb = ref.feature_maps(torch.from_numpy(b[i : i + batch_size]))
        d = [(_unit_channels(x) - _unit_channels(y)).pow(2).sum(1).mean((1, 2)) for x, y in zip(ma, mb, strict=True)]
        out.append(torch.stack(d).mean(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@register("lpips_ref", ("lpips_ref",), ("lpips_ref",))
def _lpips_ref(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The LPIPS-style distance on the reference network (not the paper's LPIPS: that is `lpips_alex`)."""
    return _by_class(_pair_distances(inp, lambda a, b: lpips_style(inp.ref, a, b)), "lpips_ref")


PRDC = ("precision", "recall", "density", "coverage")


@register("prdc", PRDC, PRDC)
def _prdc(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per class, the test images against as many real validation images of the class (a seeded sample)."""
    per = {m: np.full(len(inp.class_names), math.nan) for m in PRDC}
    for c in _classes(inp):
        fake = inp.test.feats[inp.test.labels == c]
        real_idx = np.flatnonzero(inp.real.labels == c)
        rng = np.random.default_rng([inp.cfg.seed, 7, c])
        real = inp.real.feats[np.sort(rng.choice(real_idx, size=min(len(real_idx), len(fake)), replace=False))]
        for m, v in prdc(real, fake, inp.cfg.nearest_k).items():
            per[m][c] = v
    row: dict[str, float] = {}
    for m in PRDC:
        row.update(_by_class(per[m], m)[0])
    return row, per


@register("vendi", ("vendi",), ("vendi",))
def _vendi(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    return _by_class(np.array([vendi(inp.test.feats[inp.test.labels == c]) for c in _classes(inp)]), "vendi")


# The paper's pretrained-network metrics, last in tables (they need weights a user fetches: docs/metrics.md)


@register("lpips_alex", ("lpips_alex",), ("lpips_alex",))
def _lpips_alex(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    from synscale.metrics.pretrained import alexnet_lpips

    net = alexnet_lpips(inp.cfg.alexnet_weights, inp.ref.device if inp.ref is not None else "cpu")
    if net is None:
        return {"lpips_alex": math.nan}, {}
    return _by_class(_pair_distances(inp, net), "lpips_alex")


@register("fid_inception", ("fid_inception",))
def _fid_inception(inp: MetricInputs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    from synscale.metrics.pretrained import inception_fid

    if inp.real_dir is None:
        return {"fid_inception": math.nan}, {}
    value = inception_fid(inp.cfg.inception_weights, inp.images, inp.real_dir, inp.cfg.batch_size,
                          inp.ref.device if inp.ref is not None else "cpu")
    return {"fid_inception": value}, {}


def compute(inp: MetricInputs, names: list[str] | tuple[str, ...]) -> tuple[dict[str, float], Any]:
    """Every metric in `names`: the row (name -> value) and the per-class table."""
    import pandas as pd

    row: dict[str, float] = {}
    table = pd.DataFrame({"class_index": list(_classes(inp)), "class_name": list(inp.class_names),
                          "n": [int(np.sum(inp.test.labels == c)) for c in _classes(inp)]})
    for name in names:
        metric = METRICS.get(name)
        values, per = metric.fn(inp)
        row.update({col: values.get(col, math.nan) for col in metric.columns})
        for col in metric.per_class:
            table[col] = per.get(col, np.full(len(table), math.nan))
    return row, table
