"""Cross-entropy loss and top-1 of a classifier on an evaluation set, per example and per class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.errors import DataError
from synscale.train.engine import normalize


class _Batches(torch.utils.data.Dataset):
    def __init__(self, source: Any, batch_size: int, crop: int) -> None:
        self.source, self.batch_size, self.crop = source, batch_size, crop

    def __len__(self) -> int:
        return -(-len(self.source) // self.batch_size)

    def __getitem__(self, b: int) -> torch.Tensor:
        from synscale.train.data import center_crop

        idx = np.arange(b * self.batch_size, min(len(self.source), (b + 1) * self.batch_size))
        return torch.from_numpy(np.ascontiguousarray(center_crop(self.source.take(idx), self.crop)))


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray | None, labels: np.ndarray | None, batch_size: int = 1000,
            crop: int = 0, class_subset: np.ndarray | None = None, source: Any = None, workers: int = 0,
            device: str | torch.device = "cpu", progress: bool = False, desc: str = "evaluate") -> dict[str, np.ndarray]:
    """Per-example cross-entropy loss, predicted class and true class of `images` (uint8 N,C,H,W) or of a
    `source` (synscale.train.data; decoded by `workers` processes), on the centre `crop` when given.

    class_subset: the model outputs an evaluation set's classes are among (ImageNet-A/-R: 200 of 1000);
    loss and prediction then use only those logits. Labels and predictions stay in the model's indices."""
    from synscale.train.data import ArraySource

    if source is None:
        source = ArraySource(images, labels)
    labels = np.asarray(source.labels, dtype=np.int64)
    subset = None
    if class_subset is not None:
        subset = torch.as_tensor(np.asarray(class_subset, dtype=np.int64))
        outside = np.setdiff1d(labels, subset.numpy())
        if len(outside):
            raise DataError(f"labels {outside[:5].tolist()} are not in the class subset")
        position = {int(c): i for i, c in enumerate(subset.tolist())}
    model = model.eval().to(device)
    batches = _Batches(source, batch_size, crop)
    loader = (torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers) if workers
              else (batches[b] for b in range(len(batches))))
    from synscale.progress import bar

    losses, preds, start = [], [], 0
    for xb in bar(loader, total=len(batches), desc=desc, unit="batch", disable=not progress):
        x = normalize(xb.to(device)).contiguous(memory_format=torch.channels_last)
        y = torch.tensor(labels[start : start + len(xb)])
        start += len(xb)
        logits = model(x).float().cpu()
        if subset is not None:
            logits = logits[:, subset]
            y_sub = torch.tensor([position[int(v)] for v in y])
            losses.append(nn.functional.cross_entropy(logits, y_sub, reduction="none").numpy())
            preds.append(subset[logits.argmax(1)].numpy())
        else:
            losses.append(nn.functional.cross_entropy(logits, y, reduction="none").numpy())
            preds.append(logits.argmax(1).numpy())
    return {
        "loss": np.concatenate(losses).astype(np.float32),
        "pred": np.concatenate(preds).astype(np.int64),
        "label": labels,
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
