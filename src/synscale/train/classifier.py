"""Train one classifier on an in-memory set of small images: the loop of the miniature study.

Data order is a function of (seed, step) alone: step s reads slice s of the permutation of its epoch,
and augmentation draws from a generator seeded by (seed, step). A rerun on the same machine with the
same thread count gives the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.config import TrainConfig
from synscale.train.models import create_model
from synscale.train.schedule import lr_at, total_iters, warmup_iters


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1]."""
    return images_u8.float().div_(127.5).sub_(1.0)


def flip_shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Per-sample random translation by up to `pad` px (zero fill at -1) and horizontal flip."""
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


AUGMENTS = {"none": lambda x, gen: x, "flip-shift": flip_shift}


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of step `step`: consecutive slices of per-epoch permutations (epoch e seeded by seed, e)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return perm[pos * batch_size : (pos + 1) * batch_size]


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    warmup: int
    losses: list[float]  # mean training loss per logging window


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    cfg: TrainConfig,
    scale: int,
    progress: Any = None,
) -> TrainResult:
    """Train `cfg.model` for the log-scale rule's iterations at `scale` (= len(images))."""
    torch.manual_seed(cfg.seed)  # initial weights
    x_all = torch.from_numpy(np.ascontiguousarray(images))
    y_all = torch.tensor(labels)
    _, c, h, _ = x_all.shape
    model = create_model(cfg.model, num_classes, c, h, **cfg.model_kwargs).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=tuple(cfg.betas),
    )
    steps, warmup = total_iters(scale, cfg.schedule), warmup_iters(scale, cfg.schedule)
    augment = AUGMENTS[cfg.augment]
    batch = min(cfg.batch_size, len(x_all))
    losses, window = [], []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, steps, warmup)
        idx = batch_indices(len(x_all), batch, step, cfg.seed)
        xb = augment(normalize(x_all[idx]), step_generator(cfg.seed, step)).contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(xb), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if len(window) == 50 or step == steps - 1:
            losses.append(float(np.mean(window)))
            window = []
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower train.lr")
        if progress is not None:
            progress.update(1)
    model.eval()
    return TrainResult(model, steps, warmup, losses)
