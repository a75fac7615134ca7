"""Cross-entropy loss and top-1 of a classifier on an evaluation set, per example and per class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.train.classifier import normalize


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """Per-example cross-entropy loss, predicted class and true class."""
    model.eval()
    losses, preds = [], []
    for i in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(images[i : i + batch_size])).contiguous(memory_format=torch.channels_last)
        y = torch.tensor(labels[i : i + batch_size])
        logits = model(x).float()
        losses.append(nn.functional.cross_entropy(logits, y, reduction="none").numpy())
        preds.append(logits.argmax(1).numpy())
    return {
        "loss": np.concatenate(losses).astype(np.float32),
        "pred": np.concatenate(preds).astype(np.int64),
        "label": np.asarray(labels, dtype=np.int64),
    }


def summarize(examples: dict[str, np.ndarray], class_names: list[str] | tuple[str, ...]) -> tuple[dict[str, float], Any]:
    """Overall {loss, top1, n} and a per-class table (class_index, class_name, loss, top1, n)."""
    import pandas as pd

    correct = examples["pred"] == examples["label"]
    overall = {"loss": float(examples["loss"].mean()), "top1": float(correct.mean()), "n": int(len(correct))}
    rows = []
    for c, name in enumerate(class_names):
        m = examples["label"] == c
        if m.any():
            rows.append({"class_index": c, "class_name": name, "loss": float(examples["loss"][m].mean()),
                         "top1": float(correct[m].mean()), "n": int(m.sum())})
    return overall, pd.DataFrame(rows)
