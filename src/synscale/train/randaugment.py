"""RandAugment on the training device, a batch at a time (`train.randaugment_on = "device"`).

The loader's RandAugment (synscale.train.data.SampleAugment: timm's PIL ops, one image at a time) costs a loader
core 1.4-2.4 ms per 224-px image, half or more of what a core spends on an image; eight GPUs at the compiled
ViT-B/16 rate would need ~80 cores for it. Here the same policy runs on a whole batch of uint8 images where they
are trained, after the loader's crop and flip:

- the ops are timm's RandAugment list (`rand-m<M>-n<N>-p1-mstd0`): AutoContrast, Equalize, Invert, Rotate,
  Posterize, Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX, ShearY, TranslateXRel,
  TranslateYRel, N of them drawn with replacement per image, each applied at timm's magnitude (M capped at 10,
  the random sign of the geometric ones), in the order drawn, each rounding to 8 bits as PIL does;
- every draw is a function of the image's seed (synscale.train.data.sample_seed: seed, step, position in the
  global batch), hashed without a generator per image, so a resumed run, or one on another number of processes,
  augments each image exactly as an uninterrupted one on one process does;
- the geometric ops are one bilinear `grid_sample` per op over the images that drew it (PIL draws bilinear or
  bicubic at random), pixels they uncover filled with the ImageNet mean (RGB) or black (grey), as the loader's are.

The results are the same ops at the same magnitudes, not PIL's bytes (interpolation and rounding differ within a
grey level or two; tests/test_randaugment.py compares each op with PIL's); a recipe that switches from "loader"
to "device" trains other models, so the key is in a run's identity when it is not the default.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from synscale.train.data import _mix64

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
       "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
FILL_RGB = (124.0, 116.0, 104.0)  # the ImageNet mean, as the loader's RandAugment fills (synscale.train.data)


def uniforms(seeds: np.ndarray, k: int) -> np.ndarray:
    """(len(seeds), k) uniforms in [0, 1), the j-th a hash of (seed, j): the same for a seed wherever it is drawn."""
    s = np.asarray(seeds, dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        x = _mix64(s * np.uint64(0x9E3779B97F4A7C15) + np.arange(1, k + 1, dtype=np.uint64)[None] * np.uint64(0xD1B54A32D192ED03))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def draws(seeds: np.ndarray, num_ops: int) -> tuple[np.ndarray, np.ndarray]:
    """(op index, sign) per image and op slot, each (len(seeds), num_ops): ops with replacement, sign +-1."""
    u = uniforms(seeds, 2 * num_ops)
    ops = np.minimum((u[:, :num_ops] * len(OPS)).astype(np.int64), len(OPS) - 1)
    sign = np.where(u[:, num_ops:] > 0.5, -1.0, 1.0)  # timm negates with probability one half
    return ops, sign


def rand_augment(x: torch.Tensor, seeds: np.ndarray, num_ops: int, magnitude: float) -> torch.Tensor:
    """uint8 images (B, C, H, W) on any device, RandAugment(num_ops, magnitude) applied per image as its seed
    draws; uint8 out."""
    if not len(seeds):
        return x
    level = max(0.0, min(float(magnitude), 10.0)) / 10.0  # timm's cap: magnitudes above 10 act as 10
    ops, sign = draws(seeds, num_ops)
    out = x.float()
    for slot in range(num_ops):
        for k, name in enumerate(OPS):
            rows = np.flatnonzero(ops[:, slot] == k)
            if not len(rows):
                continue
            idx = torch.from_numpy(rows).to(x.device)
            s = torch.as_tensor(sign[rows, slot], dtype=torch.float32, device=x.device)
            out[idx] = _apply(name, out[idx], level, s)
    return out.to(torch.uint8)


def _apply(name: str, x: torch.Tensor, level: float, sign: torch.Tensor) -> torch.Tensor:
    """One op on float images holding 8-bit values; rounded back to 8-bit values."""
    if name in GEOMETRIC:
        return _geometric(name, x, level, sign)
    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return 255.0 - x
    if name == "Posterize":
        shift = 8 - int(level * 4)
        return x if shift <= 0 else torch.floor(x / 2**shift) * 2**shift
    if name == "Solarize":
        thresh = min(256, int(level * 256))
        return torch.where(x >= thresh, 255.0 - x, x)
    if name == "SolarizeAdd":
        add = min(128, int(level * 110))
        return torch.where(x < 128, torch.clamp(x + add, max=255.0), x)
    factor = level * 1.8 + 0.1  # the enhance ops: timm's [0.1, 1.9], no sign
    return _blend(_degenerate(name, x), x, factor)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's L of RGB (ITU-R 601-2 luma), (B, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def _degenerate(name: str, x: torch.Tensor) -> torch.Tensor:
    """The image PIL's ImageEnhance blends away from: black, grey, the grey mean, or the smoothed image."""
    if name == "Brightness":
        return torch.zeros_like(x)
    if name == "Color":
        return _grey(x).expand_as(x)
    if name == "Contrast":
        mean = torch.floor(_grey(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
        return mean.expand_as(x)
    # Sharpness: PIL's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1) / 13, the border pixels kept
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device) / 13
    smooth = F.conv2d(x, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
    smooth = torch.floor(smooth + 0.5)
    out = x.clone()
    out[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]
    return out


def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    return torch.clamp(torch.floor(a + factor * (b - a) + 0.5), 0.0, 255.0)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the values stretched to 0..255 (PIL's autocontrast without cut-off)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / torch.clamp(hi - lo, min=1.0)
    out = torch.clamp(torch.floor(x * scale - lo * scale), 0.0, 255.0)
    return torch.where(hi > lo, out, x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, PIL's histogram equalisation (its step and rounding)."""
    b, c, h, w = x.shape
    v = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    last = hist.shape[1] - 1 - torch.argmax((hist.flip(1) > 0).float(), dim=1)  # the highest value present
    step = torch.floor((hist.sum(1) - hist.gather(1, last[:, None])[:, 0]) / 255)
    cum = torch.cumsum(hist, 1) - hist  # pixels below each value
    safe = torch.clamp(step, min=1.0)[:, None]
    lut = torch.floor((torch.floor(safe / 2) + cum) / safe).clamp(0, 255)
    identity = torch.arange(256, device=x.device, dtype=torch.float32).expand_as(lut)
    lut = torch.where((step > 0)[:, None], lut, identity)
    return lut.gather(1, v).reshape(b, c, h, w)


def _geometric(name: str, x: torch.Tensor, level: float, sign: torch.Tensor) -> torch.Tensor:
    """Rotate, shear or translate each image (its own sign) by one bilinear grid_sample; uncovered pixels filled."""
    b, c, h, w = x.shape
    n = len(sign)
    one, zero = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    # PIL's affine data (a, b, c, d, e, f): the output pixel (x, y) reads the input at (a x + b y + c, d x + e y + f)
    if name == "ShearX":
        m = (one, sign * 0.3 * level, zero, zero, one, zero)
    elif name == "ShearY":
        m = (one, zero, zero, sign * 0.3 * level, one, zero)
    elif name == "TranslateXRel":
        m = (one, zero, sign * 0.45 * level * w, zero, one, zero)
    elif name == "TranslateYRel":
        m = (one, zero, zero, zero, one, sign * 0.45 * level * h)
    else:  # Rotate by sign * 30 * level degrees counter-clockwise about the centre (PIL's Image.rotate)
        angle = sign * math.radians(30.0 * level)
        cos, sin = torch.cos(angle), torch.sin(angle)
        cx, cy = w / 2.0, h / 2.0
        m = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    a, b_, c_, d, e, f = m
    # pixel centres (x + 0.5) in the output -> input pixel coordinates -> grid_sample's [-1, 1] (align_corners=False)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32) + 0.5,
                            torch.arange(w, device=x.device, dtype=torch.float32) + 0.5, indexing="ij")
    sx = a[:, None, None] * xs + b_[:, None, None] * ys + c_[:, None, None]
    sy = d[:, None, None] * xs + e[:, None, None] * ys + f[:, None, None]
    grid = torch.stack((sx / w * 2 - 1, sy / h * 2 - 1), dim=-1)
    fill = torch.tensor(FILL_RGB if c == 3 else (0.0,) * c, device=x.device)[None, :, None, None]
    moved = F.grid_sample(torch.cat((x - fill, torch.ones_like(x[:, :1])), 1), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    inside = moved[:, -1:] > 0.5  # PIL fills a pixel whose source lies outside the image
    return torch.where(inside, torch.clamp(torch.floor(moved[:, :-1] + fill + 0.5), 0.0, 255.0), fill.expand_as(x))
