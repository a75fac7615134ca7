"""Cascaded text-to-image models: a base pipeline's images taken up through super-resolution stages.

DeepFloyd IF (the paper's "Imagen" stand-in) samples 64-px images in stage I; stage II
(IFSuperResolutionPipeline) brings them to 256 px and stage III (Stable Diffusion's x4 upscaler) to 1024. A set
generated from stage I alone is 64-px images enlarged, not the model's. A generation config's `upscale` list
names the stages after the first; each runs on the previous stage's images with its own guidance, steps and
noise level, and each image's own random generator goes on through every stage, so an image still depends on
its prompt and seed alone.

Stage II after an IF stage I takes stage I's T5 embeddings (as DeepFloyd runs it) and is loaded without a text
encoder of its own; other stages encode the prompt themselves. Images pass between stages as tensors: IF's
pipelines take and give them in [-1, 1], the others in [0, 1].
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from synscale.generate import safety


def takes_signed(pipeline_class: str) -> bool:
    """Whether a pipeline gives and takes its "pt" images in [-1, 1] (DeepFloyd IF's), not [0, 1]."""
    return pipeline_class.startswith("IF")


def shares_embeds(base_class: str, stage_class: str) -> bool:
    """Whether a super-resolution stage takes the base pipeline's text embeddings (IF's stage II after stage I)."""
    return base_class.startswith("IF") and stage_class.startswith("IFSuperResolution")


@dataclass
class UpscaleStage:
    """A loaded super-resolution stage and how it is called."""

    pipe: Any
    model: str
    guidance: float
    steps: int
    noise_level: int | None
    shares_embeds: bool
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        return type(self.pipe).__name__

    def __call__(self, images: Any, signed: bool, prompts: list[str], embeds: dict[str, Any] | None, gens: list[Any],
                 last: bool) -> tuple[Any, bool]:
        """This stage's images of `images` (a tensor, in [-1, 1] where `signed`); returns the images and whether
        they are signed (float NHWC in [0, 1] when `last`)."""
        want_signed = takes_signed(self.name)
        if signed != want_signed:
            images = images * 2 - 1 if want_signed else (images + 1) / 2
        kw: dict[str, Any] = {"image": images, "generator": gens, "guidance_scale": self.guidance,
                              "output_type": "np" if last else "pt", **self.kwargs}
        if self.steps:
            kw["num_inference_steps"] = self.steps
        if self.noise_level is not None:
            kw["noise_level"] = self.noise_level
        if self.shares_embeds and embeds is not None:
            kw["prompt_embeds"] = embeds["prompt_embeds"]
            if self.guidance > 1:
                kw["negative_prompt_embeds"] = embeds["negative_prompt_embeds"]
        else:
            kw["prompt"] = list(prompts)
        return self.pipe(**kw).images, want_signed and not last


def load_stage(cfg: dict[str, Any], base_class: str, dtype: Any, local_files_only: bool,
               base_kwargs: dict[str, Any]) -> UpscaleStage:
    """A super-resolution stage of `cfg` (synscale.config.UpscaleConfig as a dict) after a `base_class` pipeline."""
    from synscale.generate.loading import load_pipeline

    index = safety.model_index(cfg["model"]) or {}
    share = shares_embeds(base_class, str(index.get("_class_name", "")))
    extra = {"text_encoder": None, "tokenizer": None} if share else {}
    pipe = load_pipeline(cfg["model"], dtype, local_files_only, **extra)
    names = inspect.signature(pipe.__call__).parameters
    guidance = cfg.get("guidance")
    if guidance is None:
        guidance = float(names["guidance_scale"].default) if "guidance_scale" in names else 1.0
    kwargs = {k: v for k, v in base_kwargs.items() if k in ("clean_caption",) and k in names}
    return UpscaleStage(pipe, cfg["model"], float(guidance), int(cfg.get("steps") or 0), cfg.get("noise_level"),
                        share and "prompt_embeds" in names, kwargs)
