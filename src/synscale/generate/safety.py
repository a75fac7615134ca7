"""Safety checkers of text-to-image pipelines, for training data.

Stable Diffusion's and DeepFloyd IF's pipelines carry a safety checker that replaces an image it flags (IF's also
flags watermarks) with a black one and returns it all the same: a class such as bikini or brassiere would be
trained on black images under its label. synscale therefore loads pipelines without their checkers. A study may
keep them (`safety_checker = true`); synscale then loads every checker of the pipeline (and of a cascade's
upscalers) itself and runs it on the final images, and an image any of them flags is never written: it is generated again
with the sample's next seed (`safety_seed`), up to MAX_ATTEMPTS times, and each sample records its seed and how
many times it was regenerated (`safety_regenerated`), which the results and the report count.

Whether a model has a checker is read from its `model_index.json` (no torch), so a set's identity can say whether
its checker ran: sets of models without one (the built-in families) keep their ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.modelref import is_builtin

import numpy as np

CHECKER = "safety_checker"  # the model_index.json component that blacks out flagged images
MAX_ATTEMPTS = 10  # seeds tried for one sample before it is an error


def model_index(model: str) -> dict[str, Any] | None:
    """A pipeline's `model_index.json` (a directory's, or a hub id's in the local cache); None where unknown
    (built-in families, a hub id not yet downloaded)."""
    if is_builtin(model):
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        try:
            found = try_to_load_from_cache(model, "model_index.json")
        except Exception:  # an id the hub library rejects
            return None
        if not isinstance(found, str):
            return None
        index = Path(found)
    try:
        spec = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def has_checker(model: str) -> bool | None:
    """Whether the pipeline carries a safety checker: True, False (built-in families, pipelines without one), or
    None where it cannot be known before the model is downloaded."""
    if is_builtin(model):
        return False
    spec = model_index(model)
    if spec is None:
        return None
    part = spec.get(CHECKER)
    return isinstance(part, list) and part[0] is not None


def safety_seed(seed: int, attempt: int) -> int:
    """The seed of a sample's `attempt`-th regeneration (attempt 0 is its own seed): a 32-bit seed drawn from
    (seed, attempt), so no two samples' regenerations share seeds with each other or with the set's own."""
    if attempt == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), attempt, 0x5AFE]).generate_state(1, np.uint32)[0])


def pipeline_dir(model: str, local_files_only: bool = True) -> Path:
    """The local directory of a pipeline: itself, or a hub id's snapshot in the cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, local_files_only=local_files_only))


class SafetyChecker:
    """A pipeline's checker and its feature extractor, run by synscale on float images (N, H, W, C) in [0, 1]:
    `flags(images)` is True where the checker would have blacked the image out (NSFW or, IF's, a watermark)."""

    def __init__(self, module: Any, feature_extractor: Any, device: str) -> None:
        self.module, self.feature_extractor, self.device = module, feature_extractor, device

    @classmethod
    def load(cls, model: str, dtype: Any, device: str, local_files_only: bool = True) -> SafetyChecker | None:
        """The checker of pipeline `model` (None where it has none), loaded from its `safety_checker` folder: its
        class (model_index.json's) built from its config, its weights read from safetensors. Pipelines are loaded
        without it (synscale.generate.loading.load_pipeline): diffusers 0.42 cannot load IF's checker
        under transformers 5 (IFSafetyChecker never calls post_init), and this way every checker runs alike."""
        import importlib

        import torch
        from safetensors.torch import load_file
        from transformers import CLIPConfig, CLIPImageProcessor

        from synscale.schema import ConfigError

        spec = model_index(model)
        part = (spec or {}).get(CHECKER)
        if not (isinstance(part, list) and part[0] is not None):
            return None
        root = pipeline_dir(model, local_files_only)
        library, name = part
        module_name = library if library in ("diffusers", "transformers") else f"diffusers.pipelines.{library}"
        weights = sorted((root / CHECKER).glob("*.safetensors"))
        if not weights or not (root / "feature_extractor").is_dir():
            raise ConfigError(f"{root}: its safety checker has no safetensors weights or no feature_extractor folder; "
                              "keep the pipeline whole, or generate without the checker (safety_checker = false)")
        module = getattr(importlib.import_module(module_name), name)(CLIPConfig.from_pretrained(root / CHECKER))
        state: dict[str, Any] = {}
        for f in weights:
            state.update(load_file(str(f)))
        module.load_state_dict(state)
        module = module.to(device, dtype if isinstance(dtype, torch.dtype) else None).eval()
        return cls(module, CLIPImageProcessor.from_pretrained(root / "feature_extractor"), device)

    def flags(self, images: np.ndarray) -> np.ndarray:
        import torch
        from diffusers.utils import logging as df_logging
        from PIL import Image

        pil = [Image.fromarray(np.clip(np.round(im * 255), 0, 255).astype(np.uint8).squeeze()) for im in images]
        clip_input = self.feature_extractor([p.convert("RGB") for p in pil], return_tensors="pt").pixel_values
        dtype = next(self.module.parameters()).dtype
        level = df_logging.get_verbosity()
        df_logging.set_verbosity_error()  # not a "Potential NSFW content was detected" warning per flagged batch
        try:
            with torch.inference_mode():
                out = self.module(images=np.array(images, copy=True), clip_input=clip_input.to(self.device, dtype))
        finally:
            df_logging.set_verbosity(level)
        flagged = np.zeros(len(images), bool)
        for part in out[1:]:  # SD: (images, nsfw); IF: (images, nsfw, watermark)
            if part is not None:
                flagged |= np.asarray(part, dtype=bool)
        return flagged
