"""Linear probes (paper appendix A.3): a trained classifier's pre-logit features, without augmentation,
on a downstream set, and a multinomial logistic regression fitted by L-BFGS (at most 500 iterations).

The objective is scikit-learn's `LogisticRegression(solver="lbfgs", C=C)`:
    sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)
(no penalty on the intercepts), minimised in float64 with torch's L-BFGS and a strong-Wolfe line search,
so it runs on the GPU for large feature sets and agrees with scikit-learn on small ones (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synscale.errors import DataError


@dataclass
class LinearProbe:
    weight: np.ndarray  # (D, K)
    bias: np.ndarray  # (K,)
    mean: np.ndarray  # feature centring used in the fit (D,)
    iterations: int

    def logits(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) @ self.weight + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)


def fit_linear_probe(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0, max_iter: int = 500,
                     tol: float = 1e-6, device: str = "cpu") -> LinearProbe:
    """Multinomial logistic regression of `y` on `x` (see the module docstring)."""
    if len(x) == 0:
        raise DataError("a linear probe needs training examples")
    xt = torch.as_tensor(np.asarray(x, np.float64), device=device)
    mean = xt.mean(0)  # centring changes only the intercepts' parametrisation, and helps L-BFGS
    xt = xt - mean
    yt = torch.as_tensor(np.asarray(y, np.int64), device=device)
    w = torch.zeros(xt.shape[1], n_classes, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=max_iter * 2, tolerance_grad=tol,
                            tolerance_change=1e-14, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt, reduction="sum") + (w * w).sum() / (2 * c)
        loss.backward()
        return loss

    opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return LinearProbe(w.detach().cpu().numpy(), b.detach().cpu().numpy(), mean.cpu().numpy(), iters)


def probe_examples(probe: LinearProbe, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example cross-entropy, prediction and label (the shape `evaluate.classification.predict` gives)."""
    p = probe.predict_proba(x)
    y = np.asarray(y, np.int64)
    return {"loss": (-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))).astype(np.float32),
            "pred": p.argmax(1).astype(np.int64), "label": y}
