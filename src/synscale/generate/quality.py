"""Recognizability and diversity of a generator's samples, as the paper measures them for its T2I models
(appendix: a classifier trained on real data classifies the synthetic images; higher guidance gives higher
recognizability and lower diversity).

    synscale generator eval --family latent-diffusion --guidance 1,2,4,7 --per-class 100

The reference classifier is the Fashion-MNIST study's model trained on all 60,000 real training images,
a cached stage in the work directory (trained once, about a minute on a 2-core CPU). Its macro-F1 on the
real test set is printed beside the samples' so the two can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synscale.metrics.core import macro_f1


def within_class_std(images: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the per-pixel standard deviation across the class's images (0-255): a simple
    diversity measure (0 when every image of a class is the same)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return float(np.mean([flat[labels == c].std(0).mean() for c in np.unique(labels)]))


@dataclass
class Reference:
    model: Any
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def sample_set(generator: Any, class_names: tuple[str, ...], per_class: int, guidance: float, strategy: str = "classname",
               seed: int = 0, batch_size: int = 250, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced set from `generator` (uint8 N x C x H x W, labels), prompts from `strategy`."""
    from synscale.labels import LabelSet
    from synscale.progress import bar
    from synscale.prompts.strategies import make_context, make_prompts

    df = make_prompts(strategy, make_context(LabelSet(class_names), "fashion-mnist"), per_class, seed)
    prompts, seeds, labels = list(df.prompt), [int(s) for s in df.seed], df.class_index.to_numpy()
    out = []
    with bar(total=len(prompts), desc=f"sample guidance {guidance:g}", unit="img", disable=not progress) as pbar:
        for i in range(0, len(prompts), batch_size):
            out.append(generator(prompts[i : i + batch_size], seeds[i : i + batch_size], guidance))
            pbar.update(len(out[-1]))
    return np.concatenate(out).transpose(0, 3, 1, 2), labels


def evaluate_family(model: str, guidances: list[float], per_class: int, ref: Reference, strategy: str = "classname",
                    steps: int = 0, seed: int = 0, grid: str | Path | None = None, grid_per_class: int = 8,
                    quiet: bool = False) -> Any:
    """A table (guidance, macro_f1, per-class F1, within-class std) for `model` (e.g. builtin:latent-diffusion),
    judged by the reference classifier `ref` (synscale.study.reference.reference_classifier)."""
    import pandas as pd

    from synscale.evaluate.classification import predict
    from synscale.generate.diffusers_backend import DiffusersGenerator

    n = len(ref.class_names)
    real_f1, _ = macro_f1(predict(ref.model, ref.test_images, ref.test_labels)["pred"], ref.test_labels, n)
    gen = DiffusersGenerator(model, steps=steps, resolution=ref.test_images.shape[-1], channels=ref.test_images.shape[1])
    rows, grids = [], []
    for g in guidances:
        images, labels = sample_set(gen, ref.class_names, per_class, g, strategy, seed, progress=not quiet)
        f1, per = macro_f1(predict(ref.model, images, labels)["pred"], labels, n)
        rows.append({"model": model, "steps": gen.steps, "strategy": strategy, "guidance": g, "macro_f1": f1,
                     "within_class_std": within_class_std(images, labels), "real_test_macro_f1": real_f1,
                     **{f"f1[{name}]": float(v) for name, v in zip(ref.class_names, per, strict=True)}})
        grids.append(images.reshape(n, per_class, *images.shape[1:])[:, : min(grid_per_class, per_class)])
    if grid:
        save_grid(grids, guidances, grid)
    return pd.DataFrame(rows)


def save_grid(grids: list[np.ndarray], guidances: list[float], path: str | Path, pad: int = 2) -> Path:
    """One PNG: a panel per guidance scale (rows = classes, columns = samples), side by side."""
    from PIL import Image

    panels = []
    for g in grids:  # (classes, k, C, H, W)
        c, k, ch, h, w = g.shape
        panel = np.full((c * (h + pad) + pad, k * (w + pad) + pad, ch), 255, np.uint8)
        for i in range(c):
            for j in range(k):
                y, x = pad + i * (h + pad), pad + j * (w + pad)
                panel[y : y + h, x : x + w] = g[i, j].transpose(1, 2, 0)
        panels.append(panel)
    sep = np.full((panels[0].shape[0], 3 * pad, panels[0].shape[2]), 255, np.uint8)
    full = np.concatenate([p for panel in panels for p in (panel, sep)][:-1], axis=1)
    img = Image.fromarray(full[..., 0] if full.shape[2] == 1 else full)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST).save(path)
    return path
