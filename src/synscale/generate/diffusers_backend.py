"""Any diffusers `DiffusionPipeline` by hub id or local path: Stable Diffusion (latent diffusion),
DeepFloyd IF (pixel diffusion), aMUSEd (masked tokens), PixArt, SDXL, ...

Weights come from a local directory, or from the hub only when the user names a hub id and allows
downloads (`local_files_only=False`); synscale itself never downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synscale.generate import tuning
from synscale.generate.base import GENERATORS, to_uint8

SCHEDULERS = {
    "default": None,
    "ddim": "DDIMScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}


# Pipelines whose sampling loop takes a single torch.Generator, not one per image: sampled by synscale's own
# batched loop with one generator per image (synscale.generate.masked), so that every image still depends on
# its own seed alone.
ONE_GENERATOR_PIPELINES = {"AmusedPipeline"}


# Pipelines that work with only some of the schedulers: IF's sampling loop reads the scheduler's learned
# variance (`variance_type`, which DDIM and Euler lack); aMUSEd's loop is its masked-token scheduler's.
SCHEDULERS_FOR = {"IF": (("default", "dpm-solver++"), "a learned variance"),
                  "Amused": (("default",), "its own masked-token scheduler")}
BUILTIN_PIPELINES = {"latent-diffusion": "StableDiffusionPipeline", "pixel-diffusion": "IFPipeline",
                     "masked-token": "AmusedPipeline"}


def scheduler_problem(pipeline_class: str, scheduler: str) -> str | None:
    """Why `scheduler` cannot sample a `pipeline_class` pipeline, or None."""
    for prefix, (allowed, needs) in SCHEDULERS_FOR.items():
        if pipeline_class.startswith(prefix) and scheduler not in allowed:
            return (f"scheduler {scheduler!r} cannot sample {pipeline_class} (its sampling loop needs {needs}); "
                    f"choose {' or '.join(allowed)}")
    return None


def scheduler_overrides(cls: type, config: Any) -> dict[str, Any]:
    """Settings a swapped-in scheduler must not take from its own defaults: DDIM clips its samples to [-1, 1]
    and sets the final alpha to one unless told otherwise, which is wrong for latents (the built-in latent
    family's macro-F1 fell to ~0.1 with DDIM) and unlike Stable Diffusion's DDIM config. A pipeline whose own
    scheduler says otherwise keeps its value."""
    import inspect

    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in {"clip_sample": False, "set_alpha_to_one": False}.items() if k in names and k not in config}


def load_pipeline(model: str, dtype: Any, local_files_only: bool = True) -> Any:
    """`DiffusionPipeline.from_pretrained` quietly and lean: the dtype under the argument name this diffusers
    takes (`dtype` where `torch_dtype` is deprecated), weights loaded straight into empty modules by
    `accelerate` (diffusers' `low_cpu_mem_usage` default: one copy of the weights in memory, not two), and
    without the libraries' per-component progress bars and notices; their errors still raise."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils
    from diffusers.utils import logging as df_logging
    from transformers.utils import logging as hf_logging

    name = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    levels = df_logging.get_verbosity(), hf_logging.get_verbosity()
    bars = df_logging.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    df_logging.set_verbosity_error()
    hf_logging.set_verbosity_error()
    df_logging.disable_progress_bar()
    hf_logging.disable_progress_bar()
    try:
        return DiffusionPipeline.from_pretrained(model, **{name: dtype}, local_files_only=local_files_only)
    finally:
        df_logging.set_verbosity(levels[0])
        hf_logging.set_verbosity(levels[1])
        if bars[0]:
            df_logging.enable_progress_bar()
        if bars[1]:
            hf_logging.enable_progress_bar()


@GENERATORS.register("diffusers")
@dataclass
class DiffusersGenerator:
    model: str  # a pipeline directory, a hub id (with local_files_only=False), or builtin:<family>[@<weights>]
    steps: int = 0  # 0: the model's default (a built-in family's own; 50 for other pipelines)
    scheduler: str = "default"
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16 (auto: bfloat16 on CUDA, float32 on CPU)
    device: str = "auto"
    batch_size: int = 0  # the run's batch: compiled modules get every call padded to it (static shapes)
    compile: bool | str = "auto"  # torch.compile the denoiser and the decoder (auto: on CUDA)
    channels_last: bool | str = "auto"  # channels-last memory for them (auto: on CUDA)
    resolution: int = 0  # output size after resizing; 0 = the pipeline's own
    channels: int = 3
    height: int | None = None  # generation size; None = the pipeline's default
    width: int | None = None
    local_files_only: bool = True
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"clean_caption": false} for IF

    def __post_init__(self) -> None:
        import torch

        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        dev = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self._device = dev
        tuned = tuning.resolve({"dtype": self.dtype, "compile": self.compile, "channels_last": self.channels_last}, dev)
        self.dtype, self.compile, self.channels_last = tuned["dtype"], tuned["compile"], tuned["channels_last"]
        if self.model.startswith("builtin:"):  # builtin:<family>[@<weights dir>]
            from synscale.generate import builtin

            family, _, weights = self.model[len("builtin:"):].partition("@")
            pipe, cfg = builtin.load(family, weights or None)
            self.pipeline_kwargs = {**builtin.FAMILIES.get(family).call_kwargs, **self.pipeline_kwargs}
            self.steps = self.steps or cfg.default_steps
            if self.dtype != "float32":
                pipe = pipe.to(getattr(torch, self.dtype))
        else:
            pipe = load_pipeline(self.model, getattr(torch, self.dtype), self.local_files_only)
        problem = scheduler_problem(type(pipe).__name__, self.scheduler)
        if problem:
            from synscale.errors import ConfigError

            raise ConfigError(f"{self.model}: {problem}")
        if SCHEDULERS[self.scheduler]:
            import diffusers

            cls = getattr(diffusers, SCHEDULERS[self.scheduler])
            pipe.scheduler = cls.from_config(pipe.scheduler.config, **scheduler_overrides(cls, pipe.scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(dev)
        self.steps = self.steps or 50
        self.id = f"diffusers:{type(pipe).__name__}:{self.model}"
        self._embeds: dict[str, Any] = {}  # prompt -> its embedding, for pipelines that take prompt_embeds
        self._masked = None
        if type(pipe).__name__ in ONE_GENERATOR_PIPELINES:
            from synscale.generate.masked import MaskedTokenSampler

            self._masked = MaskedTokenSampler(pipe, dev)
        if self.model.startswith("builtin:") and dev == "cpu":
            builtin.tune_for_cpu(pipe)
        self.tuned = tuning.tune_pipeline(pipe, self.compile, self.channels_last)

    def _cached_embeds(self, prompts: list[str], cfg: bool) -> dict[str, Any] | None:
        """prompt_embeds (and negative_prompt_embeds for the empty negative prompt) from a per-prompt cache:
        class-balanced sets repeat prompts, and the text encoder is a large share of a small model's time.
        Each prompt is encoded alone, so its embedding (and so every image) does not depend on which prompts
        shared its batch or whether the run was resumed. None where the pipeline has no `prompt_embeds`."""
        import inspect

        encode = getattr(self.pipe, "encode_prompt", None)
        if encode is None or "negative_prompt" in self.pipeline_kwargs or "prompt_embeds" in self.pipeline_kwargs:
            return None
        names = inspect.signature(encode).parameters
        if not {"prompt_embeds", "negative_prompt_embeds", "do_classifier_free_guidance"} <= set(names):
            return None
        extra = {k: v for k, v in self.pipeline_kwargs.items() if k in names and k != "prompt"}

        def one(prompt: str) -> Any:
            if prompt not in self._embeds:
                if len(self._embeds) >= 65536:
                    self._embeds.clear()
                pe, ne = encode(prompt=[prompt], device=self._device, num_images_per_prompt=1,
                                do_classifier_free_guidance=True, negative_prompt=None, **extra)
                self._embeds[prompt] = pe
                self._embeds.setdefault("\x00negative", ne)
            return self._embeds[prompt]

        import torch

        out = {"prompt_embeds": torch.cat([one(p) for p in prompts])}
        if cfg:
            out["negative_prompt_embeds"] = self._embeds["\x00negative"].expand(len(prompts), *out["prompt_embeds"].shape[1:])
        return out

    def __call__(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> np.ndarray:
        """uint8 images (N, H, W, C); compiled modules sample the call padded to `batch_size`."""
        prompts, seeds, n = tuning.pad_batch(list(prompts), list(seeds), self.batch_size if self.compile else 0)
        return self._sample(prompts, seeds, guidance_scale)[:n]

    def _sample(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> np.ndarray:
        if self._masked is not None:
            kw = {k: v for k, v in self.pipeline_kwargs.items() if k in ("temperature",)}
            return to_uint8(self._masked(list(prompts), list(seeds), guidance_scale, self.steps, **kw),
                            self.resolution, self.channels)
        import torch

        gens = [torch.Generator(self._device).manual_seed(int(s)) for s in seeds]
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps, "guidance_scale": guidance_scale,
                                  "generator": gens[0] if len(gens) == 1 else gens, **self.pipeline_kwargs}
        if self.height:
            kwargs.update(height=self.height, width=self.width or self.height)
        with torch.inference_mode():
            embeds = self._cached_embeds(list(prompts), guidance_scale > 1)
            if embeds is None:
                out = self.pipe(prompt=list(prompts), output_type="np", **kwargs)
            else:
                out = self.pipe(output_type="np", **embeds, **kwargs)
        return to_uint8(out.images, self.resolution, self.channels)
