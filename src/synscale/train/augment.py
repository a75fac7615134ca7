"""A step's batch of uint8 images as a model's input, for both tasks (classification and CLIP): normalised to
[-1, 1], the flip-shift augmentation of the small-image recipes drawn from (seed, step), channels-last."""

from __future__ import annotations

import torch
from torch import nn

from synscale.train.config import TrainConfig
from synscale.train.data import step_generator
from synscale.train.engine import normalize


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


def batch_images(xb: torch.Tensor, cfg: TrainConfig, step: int, device: torch.device) -> torch.Tensor:
    """A step's uint8 images as the model's input: [-1, 1], flip-shift where the recipe asks, channels-last."""
    if cfg.augment == "flip-shift":  # whole-batch tensor augmentation on the CPU (small images)
        x = flip_shift(normalize(xb), step_generator(cfg.seed, step)).to(device, non_blocking=True)
    else:
        x = normalize(xb.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last)
