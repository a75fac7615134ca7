"""The generator protocol: `generator(prompts, seeds, guidance_scale) -> uint8 images`.

Image i depends only on (prompt i, seed i, guidance scale, steps): a backend seeds one random
generator per image, so any image can be regenerated alone.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from synscale.registry import Registry

GENERATORS: Registry = Registry("generator backend")

# Backends live in modules with heavy imports (diffusers, torch); they register when first needed.
BACKEND_MODULES = {"diffusers": "synscale.generate.diffusers_backend"}


def create_generator(backend: str, **kwargs: Any) -> Any:
    import importlib

    if backend not in GENERATORS and backend in BACKEND_MODULES:
        importlib.import_module(BACKEND_MODULES[backend])
    return GENERATORS.create(backend, **kwargs)


class Generator(Protocol):
    id: str  # recorded with every sample: which model made it
    steps: int
    device: str  # where it generates ("cpu", "cuda", ...)

    def __call__(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> np.ndarray:
        """uint8 images (N, H, W, C) for N prompts and seeds."""
        ...

    def sample(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> Any:
        """The images and, per image, what its sample records beside its prompt row (the seed that made it where
        a safety checker flagged an earlier one): synscale.generate.diffusers_backend.Sampled."""
        ...


def to_uint8(images: Any, resolution: int = 0, channels: int = 3) -> np.ndarray:
    """Float images in [0, 1] (N, H, W, C) or PIL images -> uint8 (N, R, R, channels).

    Resizing (bicubic, antialiased) brings a model's native size to the study's resolution; channels=1
    converts to grayscale (ITU-R 601-2 luma, PIL's "L")."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        arr = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
        pil = [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a) for a in arr]
    else:
        pil = list(images)
    out = []
    for im in pil:
        im = im.convert("L" if channels == 1 else "RGB")
        if resolution and im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
        a = np.asarray(im)
        out.append(a[..., None] if a.ndim == 2 else a)
    return np.stack(out)
