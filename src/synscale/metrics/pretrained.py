"""The paper's own LPIPS (AlexNet) and FID (Inception-v3), wherever their pretrained weights are on disk.

Neither can be downloaded by synscale at run time. Each looks for its weights at the path the study
gives (`metrics.alexnet_weights`, `metrics.inception_weights`), else where torchvision / torch-fidelity
would have cached them (`$TORCH_HOME/hub/checkpoints/`). Without them the metric is NaN and the offline
metrics (`lpips_ref`, `fd`, in the reference network's feature space) stand in. Weight files are read with
`torch.load(weights_only=True)` or safetensors, never as arbitrary pickles.
"""

from __future__ import annotations

import functools
import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synscale.errors import DataError
from synscale.extras import installed, require

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception
LPIPS_MIN_SIDE = 64  # AlexNet's five stages need at least this many pixels


def find_weights(given: str, cached_name: str) -> Path | None:
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"weights file {given} does not exist")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / cached_name
    return cached if cached.exists() else None


def load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


_SLICE_OF = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}  # lpips' AlexNet slices


@functools.lru_cache(maxsize=4)
def _lpips_net(path: str, device: str) -> Any:
    require("paper-metrics", f"LPIPS with AlexNet ({path})")
    import lpips

    with warnings.catch_warnings():  # lpips builds AlexNet with torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)  # heads from the lpips package
    state = {}
    for key, value in load_state(Path(path)).items():
        part, idx, param = key.split(".", 2)
        if part == "features":
            state[f"slice{_SLICE_OF[int(idx)]}.{idx}.{param}"] = value
    missing, _ = net.net.load_state_dict(state, strict=False)
    if missing:
        raise DataError(f"{path} is not torchvision AlexNet weights: missing {missing[:4]}")
    return net.to(device).eval()


def alexnet_lpips(weights: str, device: Any = "cpu") -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """LPIPS v0.1 with AlexNet (Zhang et al. 2018) as a function of two uint8 image batches, or None
    when the AlexNet weights are not on disk. Images below 64 px are upsampled (bilinear) first."""
    path = find_weights(weights, ALEXNET_FILE)
    if path is None or not (weights or installed("paper-metrics")):  # cached weights, but not the packages
        return None
    net = _lpips_net(str(path), str(device))

    @torch.no_grad()
    def dist(a: np.ndarray, b: np.ndarray, batch_size: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(a), batch_size):
            xa, xb = (_to_lpips_input(torch.from_numpy(v[i : i + batch_size]), device) for v in (a, b))
            out.append(net(xa, xb).flatten().float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    return dist


def _to_lpips_input(x: torch.Tensor, device: Any) -> torch.Tensor:
    x = x.to(device).float() / 127.5 - 1.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    side = max(LPIPS_MIN_SIDE, x.shape[-1])
    if x.shape[-1] != side:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x


def inception_fid(weights: str, images: np.ndarray, real_dir: Path, batch_size: int, device: Any = "cpu") -> float:
    """FID (torchmetrics, torch-fidelity's Inception-v3 pool features) between uint8 `images` and the real
    set in `real_dir`, or NaN when the Inception weights are not on disk."""
    path = find_weights(weights, INCEPTION_FILE)
    if path is None or not (weights or installed("paper-metrics")):
        return math.nan
    require("paper-metrics", f"FID with Inception-v3 ({path})")
    from torchmetrics.image.fid import FrechetInceptionDistance

    from synscale.metrics.features import iter_batches

    with tempfile.TemporaryDirectory() as tmp:
        # torch-fidelity unpickles its weights file without weights_only: hand it a copy that synscale
        # wrote from tensors it loaded safely.
        safe = Path(tmp) / "inception.pth"
        torch.save(load_state(path), safe)
        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(safe), normalize=False).to(device)
    for _, x, _ in iter_batches(real_dir, None, batch_size, workers=0):
        fid.update(_rgb(x).to(device), real=True)
    for i in range(0, len(images), batch_size):
        fid.update(_rgb(torch.from_numpy(images[i : i + batch_size])).to(device), real=False)
    return float(fid.compute())


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x
