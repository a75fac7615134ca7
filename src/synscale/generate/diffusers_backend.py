"""Any diffusers `DiffusionPipeline` by hub id or local path: Stable Diffusion (latent diffusion),
DeepFloyd IF (pixel diffusion), aMUSEd (masked tokens), PixArt, SDXL, ...

Weights come from a local directory, or from the hub only when the user names a hub id and allows
downloads (`local_files_only=False`); synscale itself never downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synscale.errors import ConfigError
from synscale.generate import tuning
from synscale.generate.base import GENERATORS, to_uint8
from synscale.generate.loading import load_pipeline  # noqa: F401 (synscale.generate.diffusers_backend.load_pipeline)
from synscale.modelref import builtin_family, is_builtin

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


EMBED_CACHE_BYTES = 1 << 30  # prompt embeddings kept on the generating device (SD 1.5's: 118 KB each in bf16)


@dataclass
class Sampled:
    """A batch of generated images and what each sample records beside its prompt row (the seed that made it
    where the safety checker had an earlier one flagged, how often it was regenerated, the guidance convention).

    The images stay the pipeline's floats until `images` is read: their conversion to 8 bits (and the resize to
    the study's resolution, and to grey) then runs where they are read, on synscale.generate.runner's writer
    thread, beside the next batch's sampling rather than between batches on the sampling thread."""

    raw: np.ndarray  # float (N, H, W, C) in [0, 1], as the pipeline gave them
    meta: list[dict[str, Any]]
    resolution: int = 0
    channels: int = 3
    _uint8: np.ndarray | None = field(default=None, repr=False)

    @property
    def images(self) -> np.ndarray:
        """uint8 (N, resolution, resolution, channels), converted on first read."""
        if self._uint8 is None:
            self._uint8 = to_uint8(self.raw, self.resolution, self.channels)
        return self._uint8


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
    guidance_convention: str = "diffusers"  # how the guidance of a call is stated (synscale.config.effective_guidance)
    safety_checker: bool = False  # keep the pipelines' checkers: flagged images are generated again (generate.safety)
    upscale: list[dict[str, Any]] = field(default_factory=list)  # a cascade's stages (synscale.config.UpscaleConfig)
    embed_cache_bytes: int = EMBED_CACHE_BYTES

    def __post_init__(self) -> None:
        import torch

        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        from synscale.device import resolve_device

        dev = resolve_device(self.device)
        self._device = self.device = dev  # where it generates: "cpu", "cuda", "cuda:1", ...
        tuned = tuning.resolve({"dtype": self.dtype, "compile": self.compile, "channels_last": self.channels_last}, dev)
        self.dtype, self.compile, self.channels_last = tuned["dtype"], tuned["compile"], tuned["channels_last"]
        pipe = self._load_base(torch)
        self.pipe = pipe.to(dev)
        self.steps = self.steps or 50
        self.upscalers = self._load_upscalers(getattr(torch, self.dtype))
        self._checkers = self._load_checkers(getattr(torch, self.dtype))
        self.id = f"diffusers:{type(pipe).__name__}:{self.model}" + "".join(f" + {u.name}:{u.model}" for u in self.upscalers)
        from synscale.lru import LRU

        self._embeds: Any = LRU(self.embed_cache_bytes, cost=lambda t: t.numel() * t.element_size())
        self._negative: Any = None  # the empty negative prompt's embedding
        self._masked = None
        if type(pipe).__name__ in ONE_GENERATOR_PIPELINES:
            from synscale.generate.masked import MaskedTokenSampler

            self._masked = MaskedTokenSampler(pipe, dev, self.embed_cache_bytes)
        if is_builtin(self.model) and dev == "cpu":
            from synscale.generate import builtin

            builtin.tune_for_cpu(pipe)
        self.tuned = tuning.tune_pipeline(pipe, self.compile, self.channels_last)
        for u in self.upscalers:
            self.tuned += [f"{u.name} {t}" for t in tuning.tune_pipeline(u.pipe, self.compile, self.channels_last)]

    def _load_base(self, torch: Any) -> Any:
        """The first (or only) pipeline: a built-in family's, or any diffusers pipeline's, its scheduler swapped."""
        if is_builtin(self.model):  # builtin:<family>[@<weights dir>]
            from synscale.generate import builtin

            family, weights = builtin_family(self.model)
            pipe, cfg = builtin.load(family, weights or None)
            self.pipeline_kwargs = {**builtin.FAMILIES.get(family).call_kwargs, **self.pipeline_kwargs}
            self.steps = self.steps or cfg.default_steps
            if self.dtype != "float32":
                pipe = pipe.to(getattr(torch, self.dtype))
        else:
            pipe = load_pipeline(self.model, getattr(torch, self.dtype), self.local_files_only)
        problem = scheduler_problem(type(pipe).__name__, self.scheduler)
        if problem:
            from synscale.schema import ConfigError

            raise ConfigError(f"{self.model}: {problem}")
        if SCHEDULERS[self.scheduler]:
            import diffusers

            cls = getattr(diffusers, SCHEDULERS[self.scheduler])
            pipe.scheduler = cls.from_config(pipe.scheduler.config, **scheduler_overrides(cls, pipe.scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _load_upscalers(self, dtype: Any) -> list[Any]:
        from synscale.generate.cascade import load_stage

        stages = []
        for cfg in self.upscale:
            stage = load_stage(cfg, type(self.pipe).__name__, dtype, self.local_files_only, self.pipeline_kwargs)
            stage.pipe.set_progress_bar_config(disable=True)
            stage.pipe = stage.pipe.to(self._device)
            stages.append(stage)
        return stages

    def _load_checkers(self, dtype: Any) -> list[Any]:
        """The safety checkers of the pipeline and its upscalers where the generator keeps them (generate.safety)."""
        from synscale.generate.safety import SafetyChecker

        if not self.safety_checker:
            return []
        models = [self.model, *(u.model for u in self.upscalers)]
        checkers = [c for c in (SafetyChecker.load(m, dtype, self._device, self.local_files_only) for m in models) if c]
        if not checkers:
            from synscale.schema import ConfigError

            raise ConfigError(f"{self.model}: the pipeline has no safety checker to keep; leave safety_checker out")
        return checkers

    def _cached_embeds(self, prompts: list[str], negative: bool) -> dict[str, Any] | None:
        """prompt_embeds (and, with `negative`, negative_prompt_embeds for the empty negative prompt) from a
        per-prompt cache of at most `embed_cache_bytes` (least recently used first out): class-balanced sets repeat
        prompts, and the text encoder is a large share of a small model's time; in-captions prompts are mostly
        distinct, and an unbounded cache held 7.7 GB of SD's (41 GB of IF's) on the GPU. Each prompt is encoded
        alone, so its embedding (and so every image) does not depend on which prompts shared its batch or whether
        the run was resumed. None where the pipeline has no `prompt_embeds`."""
        import inspect

        encode = getattr(self.pipe, "encode_prompt", None)
        if encode is None or "negative_prompt" in self.pipeline_kwargs or "prompt_embeds" in self.pipeline_kwargs:
            return None
        names = inspect.signature(encode).parameters
        if not {"prompt_embeds", "negative_prompt_embeds", "do_classifier_free_guidance"} <= set(names):
            return None
        extra = {k: v for k, v in self.pipeline_kwargs.items() if k in names and k != "prompt"}

        def one(prompt: str) -> Any:
            pe = self._embeds.get(prompt)
            if pe is None:
                pe, ne = encode(prompt=[prompt], device=self._device, num_images_per_prompt=1,
                                do_classifier_free_guidance=True, negative_prompt=None, **extra)
                self._embeds.put(prompt, pe)
                if self._negative is None:
                    self._negative = ne
            return pe

        import torch

        out = {"prompt_embeds": torch.cat([one(p) for p in prompts])}
        if negative:
            out["negative_prompt_embeds"] = self._negative.expand(len(prompts), *out["prompt_embeds"].shape[1:])
        return out

    def __call__(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> np.ndarray:
        """uint8 images (N, H, W, C); compiled modules sample the call padded to `batch_size`."""
        return self.sample(prompts, seeds, guidance_scale).images

    def sample(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> Sampled:
        """The images of (prompt, seed) pairs at `guidance_scale` (in this generator's convention), each checked by
        the kept safety checkers: a flagged image is generated again with the sample's next seed."""
        from synscale.generate.safety import MAX_ATTEMPTS, safety_seed

        prompts, seeds, n = list(prompts), [int(s) for s in seeds], len(prompts)
        images, flagged = self._checked(prompts, seeds, guidance_scale)
        extra = {} if self.guidance_convention == "diffusers" else {"guidance_convention": self.guidance_convention}
        if not self._checkers:
            return Sampled(images, [dict(extra) for _ in range(n)], self.resolution, self.channels)
        attempts, used = [0] * n, list(seeds)
        while flagged.any():
            idx = np.flatnonzero(flagged)
            for i in idx:
                attempts[i] += 1
                if attempts[i] == MAX_ATTEMPTS:
                    from synscale.errors import DataError

                    raise DataError(f"{self.model}: the safety checker flagged all {MAX_ATTEMPTS} images of prompt "
                                    f"{prompts[i]!r} (seed {seeds[i]} and {MAX_ATTEMPTS - 1} more); change that "
                                    "class's prompts, or generate without the checker (safety_checker = false)")
                used[i] = safety_seed(seeds[i], attempts[i])
            again, again_flagged = self._checked([prompts[i] for i in idx], [used[i] for i in idx], guidance_scale)
            images[idx] = again
            flagged = np.zeros(n, bool)
            flagged[idx] = again_flagged
        return Sampled(images, [{**extra, "seed": used[i], "safety_regenerated": attempts[i]} for i in range(n)],
                       self.resolution, self.channels)

    def _checked(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Float images of a call (padded to `batch_size` for compiled modules) and which ones a checker flags."""
        from synscale.config import effective_guidance

        padded, padded_seeds, n = tuning.pad_batch(prompts, seeds, self.batch_size if self.compile else 0)
        raw = self._sample(padded, padded_seeds, effective_guidance(guidance_scale, self.guidance_convention))[:n]
        flagged = np.zeros(n, bool)
        for checker in self._checkers:
            flagged |= checker.flags(raw)
        return raw, flagged

    def _sample(self, prompts: list[str], seeds: list[int], guidance_scale: float) -> np.ndarray:
        """Float images (N, H, W, C) in [0, 1] of the whole cascade, `guidance_scale` in diffusers' convention."""
        if self._masked is not None:
            kw = {k: v for k, v in self.pipeline_kwargs.items() if k in ("temperature",)}
            return self._masked(list(prompts), list(seeds), guidance_scale, self.steps, **kw)
        import torch

        from synscale.generate.cascade import takes_signed

        gens = [torch.Generator(self._device).manual_seed(int(s)) for s in seeds]
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps, "guidance_scale": guidance_scale,
                                  "generator": gens[0] if len(gens) == 1 and not self.upscalers else gens,
                                  **self.pipeline_kwargs}
        if self.height:
            kwargs.update(height=self.height, width=self.width or self.height)
        with torch.inference_mode():
            embeds = self._cached_embeds(list(prompts), guidance_scale > 1 or any(u.guidance > 1 for u in self.upscalers))
            out_type = "pt" if self.upscalers else "np"
            if embeds is None:
                images = self.pipe(prompt=list(prompts), output_type=out_type, **kwargs).images
            else:
                first = embeds if guidance_scale > 1 else {"prompt_embeds": embeds["prompt_embeds"]}
                images = self.pipe(output_type=out_type, **first, **kwargs).images
            signed = takes_signed(type(self.pipe).__name__)
            for i, stage in enumerate(self.upscalers):
                images, signed = stage(images, signed, list(prompts), embeds, gens, last=i == len(self.upscalers) - 1)
        return images
