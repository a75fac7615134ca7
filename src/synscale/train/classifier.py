"""The classification task: a timm classifier trained with softmax or binary cross-entropy.

The engine (synscale.train.engine) runs the loop; this task owns what is particular to classifiers:
- the model: `cfg.model` by timm name with the set's classes, channels and image size; with binary
  cross-entropy the head's bias starts at -ln(C - 1), so the first sigmoid outputs are 1/C, not 1/2;
- the batch: images normalised to [-1, 1] (flip-shift augmentation on the CPU for small images), labels
  as indices, or one-hot for BCE and Mixup (one Beta(alpha, alpha) draw per step, the batch mixed with
  its reverse);
- the loss: softmax CE or BCE summed over classes, a mean over the batch (or sum / local batch when a
  step is split into accumulation micro-batches, so that the micro-batches add up to the mean).
Evaluation (synscale.evaluate.classification) reads the logits of the trained model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.train.augment import batch_images, flip_shift  # noqa: F401 (flip_shift: re-exported)
from synscale.train.config import TrainConfig
from synscale.train.data import ArraySource, ShardSource, sample_seed
from synscale.train.engine import Dist, TrainResult, train
from synscale.train.models import create_model
from synscale.train.tasks import TASKS


def _loss(logits: torch.Tensor, targets: torch.Tensor, kind: str, denom: int | None) -> torch.Tensor:
    """Softmax CE (targets: indices or probabilities) or BCE summed over classes; mean over the batch, or
    sum / denom when a batch is split into accumulation steps."""
    if kind == "bce":
        per = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    elif denom is None:
        return nn.functional.cross_entropy(logits, targets)
    else:
        per = nn.functional.cross_entropy(logits, targets, reduction="none")
    return per.mean() if denom is None else per.sum() / denom


@TASKS.register("classification")
@dataclass
class ClassificationTask:
    cfg: TrainConfig
    num_classes: int
    name: str = "classification"

    def build_model(self, source: Any, dist: Dist) -> nn.Module:
        c, h, _ = source.shape
        cfg = self.cfg
        model = create_model(cfg.model, self.num_classes, c, cfg.crop or h, **cfg.model_kwargs)
        if cfg.loss == "bce" and self.num_classes > 1:  # prior init: sigmoid outputs start at 1/C, not 1/2
            head = model.get_classifier()
            if isinstance(head, nn.Linear) and head.bias is not None:
                nn.init.constant_(head.bias, -math.log(self.num_classes - 1))
        return model

    def targets(self) -> None:
        return None  # the labels

    def inputs(self, xb: torch.Tensor, yb: torch.Tensor, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        x = batch_images(xb, cfg, step, device)
        y = yb.to(device, non_blocking=True)
        if cfg.loss == "bce" or cfg.mixup > 0:
            y = nn.functional.one_hot(y, self.num_classes).float()
        if cfg.mixup > 0:
            lam = float(np.random.default_rng(sample_seed(cfg.seed, step, -1)).beta(cfg.mixup, cfg.mixup))
            x = x.mul(lam).add_(x.flip(0), alpha=1 - lam)
            y = y.mul(lam).add_(y.flip(0), alpha=1 - lam)
        return x, y

    def prepare(self, model: nn.Module, chunks: list[tuple[torch.Tensor, ...]], autocast: Any) -> None:
        return None

    def loss(self, net: nn.Module, chunk: tuple[torch.Tensor, ...], j: int, shared: Any, autocast: Any,
             denom: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        xc, yc = chunk
        with autocast:
            logits = net(xc)
        loss = _loss(logits.float(), yc, self.cfg.loss, denom)
        return loss, loss.detach()

    def after_step(self, model: nn.Module) -> None:
        pass

    def meta(self, source: Any) -> dict[str, Any]:
        return {"num_classes": self.num_classes}


def train_classifier(
    images: np.ndarray | None,
    labels: np.ndarray | None,
    num_classes: int,
    cfg: TrainConfig,
    scale: int,
    progress: Any = None,
    source: ArraySource | ShardSource | None = None,
    ckpt_dir: Path | None = None,
) -> TrainResult:
    """Train `cfg.model` for the schedule's iterations at `scale` on `images`/`labels` (in memory) or on
    `source`; with `ckpt_dir`, checkpoint every `cfg.checkpoint_every` steps and resume from the newest
    checkpoint there."""
    source = source if source is not None else ArraySource(images, labels)
    return train(ClassificationTask(cfg, num_classes), cfg, source, scale, progress, ckpt_dir)
