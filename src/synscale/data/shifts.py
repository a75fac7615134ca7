"""Fixed distribution shifts of a test set: the miniature study's stand-ins for ImageNet-Sketch, -R, -V2
and -A (paper section 4.5, figure 4). Each is a deterministic function of the images and a seed.

- `sketch`: an edge map. The Sobel gradient magnitude of the image's luminance, scaled so that each
  image's strongest edge is 255 (an image without edges stays black), on every channel.
- `rendition`: each image gets one of three renditions, drawn with the seed: posterised to 2 bits per
  channel (`x & 0xC0`), inverted (`255 - x`), or reduced contrast (`mean + 0.35 (x - mean)` around the
  image's mean).
- `v2`: a small random affine per image, drawn with the seed: rotation in ±12°, scale in [0.9, 1.1],
  translation in ±7% of the side (±2 px at 28 px), bilinear, zero fill.
- `a`: the hard subset. The test images that a separate real-trained model (the metrics' reference
  network, trained on all real training images) gets wrong, unchanged. It is built in the study, which
  owns that model (`synscale.evaluate.stages.shift_set`, planned by `synscale.study`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from synscale.registry import Registry

if TYPE_CHECKING:  # torch is imported where it is used, so that importing this module needs none
    import torch

SHIFTS: Registry[Callable[[np.ndarray, int], np.ndarray]] = Registry("shift")
HARD = "a"  # built from a model's errors, not by a transform


def _float(images: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.array(images, dtype=np.float32))


def _uint8(x: torch.Tensor) -> np.ndarray:
    import torch

    return x.round().clamp(0, 255).to(torch.uint8).numpy()


@SHIFTS.register("sketch")
def sketch(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) -> the edge maps (same shape)."""
    import torch

    x = _float(images)
    lum = x.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    padded = torch.nn.functional.pad(lum, (1, 1, 1, 1), mode="replicate")
    gx = torch.nn.functional.conv2d(padded, kx)
    gy = torch.nn.functional.conv2d(padded, kx.transpose(2, 3))
    mag = (gx**2 + gy**2).sqrt()
    peak = mag.amax((1, 2, 3), keepdim=True)
    edges = torch.where(peak > 0, mag * (255.0 / peak.clamp_min(1e-12)), torch.zeros_like(mag))
    return _uint8(edges.expand(-1, x.shape[1], -1, -1))


@SHIFTS.register("rendition")
def rendition(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per image, one of: posterise (2 bits), invert, reduced contrast; drawn with `seed`."""
    import torch

    kind = torch.randint(0, 3, (len(images),), generator=torch.Generator().manual_seed(seed)).numpy()
    x = _float(images)
    mean = x.mean((1, 2, 3), keepdim=True)
    low_contrast = _uint8(mean + 0.35 * (x - mean))
    choices = [images & 0xC0, 255 - images, low_contrast]
    return np.stack([choices[k][i] for i, k in enumerate(kind)]).astype(np.uint8)


@SHIFTS.register("v2")
def v2(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """A small random affine per image (rotation, scale, translation), drawn with `seed`."""
    import torch

    n = len(images)
    gen = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    angle, scale = u(-12, 12) * math.pi / 180, u(0.9, 1.1)
    shift = 2 * 2.0 / 28  # ±2 px at 28 px (±7% of the side), in [-1, 1] coordinates
    tx, ty = u(-shift, shift), u(-shift, shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    x = _float(images)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return _uint8(torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


def hard_subset(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices of the images a model gets wrong (the `a` shift)."""
    return np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
