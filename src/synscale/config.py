"""Typed, frozen study configs read from TOML.

A study file is validated into `StudyConfig`. Unknown or mistyped keys are errors that name the file,
the key and the allowed keys; `--set a.b=v` overrides go through the same validation. Every study has
sizes (`smoke`, `default`, `full`): `[sizes.<name>]` tables in the file hold overrides that shrink or
grow the grid; `default` is the file as written.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synscale.data.stages import CAPTION_SETS_MAX_BAD
from synscale.schema import ConfigError, check_range, from_dict, in_id_if_changed, not_in_id, to_dict
from synscale.schema import nonnegative as _nonnegative
from synscale.schema import positive as _positive
from synscale.train.config import ScheduleConfig, TrainConfig  # noqa: F401 (ScheduleConfig: the [train] tables')

SIZES = ("smoke", "default", "full")


@dataclass(frozen=True)
class DataConfig:
    """The real dataset: train split (the source of the real scaling curve) and test split (eval)."""

    dataset: str = "fashion-mnist"
    root: str = ""  # dataset location; "" = the dataset's default (Debian's files for fashion-mnist)
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = 0  # 0 = keep native size; else shorter side resized + centre crop to this
    reference_size: int = 0  # D_I of Equation 2; 0 = the size of the real training split
    order_seed: int = 0  # seeds the fixed per-class order that makes nested subsets
    shard_size: int = 10000  # samples per tar shard
    scales: list[int] = field(default_factory=list)  # the real curve's scales; [] = the study's `scales`
    image_column: str = "image"  # hf: the column that holds the images
    label_column: str = "label"  # hf: the column that holds the labels (a ClassLabel)
    # the share of samples that may be skipped where they cannot be read (each recorded in the set and counted in
    # the report); 0: the first one stops the study, with its own line
    max_bad_fraction: float = 0.0
    # how the shards store the images (synscale.data.encoding): auto keeps a source's JPEG / WebP / PNG bytes where
    # they decode to exactly the set's pixels, else PNG; png always PNG; jpeg / webp re-encode at image_quality
    # (lossy: in the set's identity)
    image_format: Literal["auto", "png", "jpeg", "webp"] = "auto"
    image_quality: int = 95

    def check(self) -> None:
        _positive(self, "shard_size")
        _nonnegative(self, "image_size", "reference_size", "order_seed")
        check_range("image_quality", self.image_quality, 1, 100)
        _check_columns(self)
        check_range("max_bad_fraction", self.max_bad_fraction, 0, 1, high_open=True)
        if self.scales:
            _scale_list(self.scales)


def _check_columns(table: Any) -> None:
    """`image_column` / `label_column` are named, and only for a dataset that reads named columns (hf)."""
    from synscale.data.datasets import DATASETS, DEFAULT_COLUMNS

    for key in DEFAULT_COLUMNS:
        if not getattr(table, key):
            raise ValueError(f"{key} must name a column")
    changed = [k for k, d in DEFAULT_COLUMNS.items() if getattr(table, k) != d]
    if changed and table.dataset in DATASETS and not getattr(DATASETS.get(table.dataset), "named_columns", False):
        raise ValueError(f"{' and '.join(changed)}: dataset {table.dataset!r} has no named columns (only hf has); "
                         "leave them out")


@dataclass(frozen=True)
class ProbeConfig:
    """`[[evaluate.probes]]`: a downstream set for linear probes (appendix A.3) of every trained model;
    results land as `eval_set = "probe:<name>"`."""

    name: str
    dataset: str = "imagefolder"  # imagefolder | webdataset | fashion-mnist | hf
    root: str = ""
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = 0
    c: float = 1.0  # inverse L2 strength, as scikit-learn's C
    max_iter: int = 500
    image_column: str = "image"  # hf: the column that holds the images
    label_column: str = "label"  # hf: the column that holds the labels (a ClassLabel)

    def check(self) -> None:
        from synscale.data.datasets import DATASETS

        if not self.name or "/" in self.name:
            raise ValueError(f"probe name {self.name!r} must be non-empty, without '/'")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS.names())}")
        _positive(self, "c", "max_iter")
        _nonnegative(self, "image_size")
        _check_columns(self)


@dataclass(frozen=True)
class OODSetConfig:
    """`[[evaluate.sets]]`: an out-of-distribution evaluation set (synscale.data.ood), e.g. ImageNet-A/R/
    Sketch/V2 by preset, or any class folder tree / webdataset; results land as `eval_set = <name>`."""

    name: str
    root: str
    preset: str = ""  # imagenet-a | imagenet-r | imagenet-sketch | imagenet-v2 | "" (plain folders / shards)
    dataset: Literal["imagefolder", "webdataset", "hf"] = "imagefolder"  # without a preset
    split: str = ""  # sub-folder (imagefolder), shard prefix (webdataset) or split (hf) of the set
    class_subset: str = "auto"  # auto | all | a file of wnids or class names (logits restricted to them)
    image_size: int = 0  # 0 = the study's data.image_size
    # hf: the columns that hold the images and the labels (a ClassLabel); added after OOD sets had ids
    image_column: str = in_id_if_changed("image")
    label_column: str = in_id_if_changed("label")

    def check(self) -> None:
        from synscale.data.ood import PRESETS

        if not self.name or "/" in self.name or self.name == "val" or self.name.startswith("probe:"):
            raise ValueError(f"evaluation set name {self.name!r} must be non-empty, not 'val', without '/'")
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if not self.root:
            raise ValueError(f"evaluation set {self.name!r} needs root")
        _nonnegative(self, "image_size")
        _check_columns(self)


@dataclass(frozen=True)
class EvaluateConfig:
    """`[evaluate]`: besides the real test set (`val`), evaluate every model on shifted copies of it
    (synscale.data.shifts: sketch, rendition, v2, a) and by linear probes on downstream sets, each its
    own `eval_set`."""

    shifts: list[str] = field(default_factory=list)
    shift_seed: int = 0
    probes: list[ProbeConfig] = field(default_factory=list)
    sets: list[OODSetConfig] = field(default_factory=list)
    zero_shot: list[ZeroShotSetConfig] = field(default_factory=list)  # CLIP models only

    def check(self) -> None:
        _nonnegative(self, "shift_seed")
        zs = [z.name for z in self.zero_shot]
        if len(set(zs)) != len(zs):
            raise ValueError(f"zero-shot sets need distinct names, got {zs}")
        sets = [s.name for s in self.sets]
        if len(set(sets)) != len(sets) or set(sets) & set(self.shifts):
            raise ValueError(f"evaluation sets need distinct names, also from the shifts: {sets}")
        names = [p.name for p in self.probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probes need distinct names, got {names}")
        from synscale.data.shifts import HARD, SHIFTS

        for name in self.shifts:
            if name != HARD and name not in SHIFTS:
                raise ValueError(f"unknown shift {name!r}; known: {', '.join([*SHIFTS.names(), HARD])}")
        if len(set(self.shifts)) != len(self.shifts):
            raise ValueError(f"evaluate.shifts lists a shift twice: {self.shifts}")


@dataclass(frozen=True)
class FitConfig:
    """Equation 2 fits and the analyses built on them (docs/analysis.md)."""

    bootstrap: int = 1000  # replicates for the CIs of k and -log L(D_I), per configuration and per class
    confidence: float = 0.95
    seed: int = 0
    break_tolerance: float = 0.05  # max |log residual| for the power law to count as holding (break detection)
    saturating_bootstrap: int = 200  # replicates for the saturating fit's CIs (each one a nonlinear refit)
    category_low: float = 1 / 3  # per-class categories: quantiles of k and -log L(D_I) within a configuration
    category_high: float = 2 / 3
    forecast_confidence: float = 0.9  # the forecasts' intervals, calibrated on backtests (synscale.analysis.forecast)

    def check(self) -> None:
        _nonnegative(self, "bootstrap", "saturating_bootstrap", "seed")
        check_range("confidence", self.confidence, 0, 1, low_open=True, high_open=True)
        check_range("break_tolerance", self.break_tolerance, 0, low_open=True)
        check_range("forecast_confidence", self.forecast_confidence, 0, 1, low_open=True, high_open=True)
        if not 0 < self.category_low < self.category_high < 1:
            raise ValueError("fit.category_low and fit.category_high must satisfy 0 < low < high < 1")


@dataclass(frozen=True)
class ForecastConfig:
    """`[forecast]`: held-out anchors that check the fitted laws' forecasts (docs/analysis.md). Every source of
    `sources` is also trained at each `holdout` scale past its curve's scales (a source with fewer than three scales
    gets none), and evaluated on every set; the fits never see these models (results/holdout.parquet), which only
    score the forecasts. A holdout scale equal
    to the reference network's (the demo's 60,000) is the same training stage: it is trained once."""

    holdout: list[int] = field(default_factory=list)  # classifier scales beyond the curves' own
    sources: list[str] = field(default_factory=lambda: ["real"])  # real, or [[synthetic]] configurations with a curve

    def check(self) -> None:
        if any(not isinstance(s, int) or s <= 0 for s in self.holdout) or sorted(set(self.holdout)) != list(self.holdout):
            raise ValueError(f"forecast.holdout must list positive, strictly increasing integers, got {self.holdout}")
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"forecast.sources must name each source once, got {self.sources}")


@dataclass(frozen=True)
class UpscaleConfig:
    """`[[synthetic.upscale]]`: a super-resolution stage of a cascade, run on the previous stage's images with its
    own guidance and steps: DeepFloyd IF's stage II (IFSuperResolutionPipeline, 64 -> 256 px; after an IF stage I
    it takes stage I's text embeddings and is loaded without a text encoder of its own) and stage III (Stable
    Diffusion's x4 upscaler, StableDiffusionUpscalePipeline). Seeds: each image's own generator goes on through
    every stage."""

    model: str  # the stage's diffusers pipeline directory (or a hub id with the configuration's allow_download)
    guidance: float | None = None  # None: the pipeline's own default (IF II: 4, the x4 upscaler: 9)
    steps: int = 0  # 0: the pipeline's own default (IF II: 50, the x4 upscaler: 75)
    noise_level: int | None = None  # noise added to the upscaled input; None: the pipeline's (IF II: 250, x4: 20)

    def check(self) -> None:
        if not self.model:
            raise ValueError("an upscale stage needs model: its diffusers pipeline directory")
        _nonnegative(self, "steps")
        if self.guidance is not None:
            check_range("upscale guidance", self.guidance, 0)
        if self.noise_level is not None:
            check_range("upscale noise_level", self.noise_level, 0, 1000, high_open=True)


def effective_guidance(guidance: float, convention: str) -> float:
    """The guidance scale `s` of diffusers' uncond + s (cond - uncond) that `guidance` means in `convention`:
    diffusers' (and Stable Diffusion's, Imagen's and IF's) own, or Muse's t of (1 + t) cond - t uncond (the
    paper's Muse values, 0.1 to 1 in appendix C), which is s = 1 + t."""
    return 1.0 + guidance if convention == "muse" else guidance


@dataclass(frozen=True)
class GenerationConfig:
    """How a synthetic set is generated: a text-to-image model, its guidance scale and sampler, and where
    it runs. `[[synthetic]]` (class prompts) and `[[clip.synthetic]]` (one image per caption) add to it."""

    name: str
    model: str  # builtin:<family>, a diffusers pipeline directory (or hub id with allow_download)
    guidance: float = 2.0
    # how `guidance` is stated: "diffusers" (the scale s of uncond + s (cond - uncond): guided only above 1, 1 is
    # unguided) or "muse" (Muse's t of (1 + t) cond - t uncond: the paper's 0.1-1 for Muse; s = 1 + t)
    guidance_convention: Literal["diffusers", "muse"] = in_id_if_changed("diffusers")
    steps: int = 0  # sampling steps; 0 = the model's default (built-in: its family's; diffusers: 50)
    scheduler: str = "default"
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on a CPU (synscale.generate.tuning)
    size: int = 0  # generation height = width; 0 = the pipeline's default
    seed: int = 0
    batch_size: int = 0  # images per sampling call; 0: 64 on a GPU, 16 on a CPU
    compile: bool | Literal["auto"] = "auto"  # torch.compile the denoiser and decoder; auto: on a GPU
    channels_last: bool | Literal["auto"] = "auto"  # channels-last memory for them; auto: on a GPU
    shard_size: int = 1000
    executor: Literal["local", "ray"] = not_in_id("local")  # where it runs does not change the bytes
    ray_actors: int = not_in_id(1)
    ray_cpus: float = not_in_id(0.5)
    ray_gpus: float = not_in_id(0.0)
    threads: int = 0  # torch threads while generating (0: default); equal values give equal bytes
    allow_download: bool = False
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)
    # keep the pipeline's safety checker (Stable Diffusion's; IF's, which also flags watermarks): an image it flags
    # is generated again with the sample's next seed (never written black under its label), and counted. Off by
    # default: training sets are generated without it.
    safety_checker: bool = in_id_if_changed(False)
    upscale: list[UpscaleConfig] = in_id_if_changed(factory=list)  # a cascade's super-resolution stages, in order

    def check(self) -> None:
        _source_name(self.name, "synthetic")
        _positive(self, "shard_size", "ray_actors", "ray_cpus")
        _nonnegative(self, "steps", "guidance", "size", "threads", "batch_size", "seed", "ray_gpus")
        if self.guidance_convention == "diffusers" and 0 < self.guidance < 1:
            raise ValueError(f"guidance {self.guidance:g} has no effect in diffusers' convention (a pipeline guides "
                             "only above 1, and 1 is unguided: the same images as 0 or 1); for Muse's convention "
                             "(the paper's 0.1-1 for Muse: (1 + t) cond - t uncond) set guidance_convention = 'muse'")


@dataclass(frozen=True)
class SyntheticConfig(GenerationConfig):
    """One synthetic configuration (`[[synthetic]]`): a text-to-image model, a prompt strategy and a
    guidance scale. The study generates a class-balanced set with it, sized for the largest scale,
    trains on it at every scale and evaluates on the real test set (source = `name`)."""

    strategy: str = "classname"
    per_class: int = 0  # images per class; 0 = enough for the largest scale
    captioner: str = "attributes"  # in-captions: attributes | file:<path> | hf:<model>
    # this configuration's scales; [] = the study's `scales` (not in its set's id: the set's size is per_class)
    scales: list[int] = not_in_id(factory=list)

    def check(self) -> None:
        from synscale.prompts.strategies import PROMPTS

        super().check()
        if self.scales:
            _scale_list(self.scales)
        if self.strategy not in PROMPTS:
            raise ValueError(f"unknown prompt strategy {self.strategy!r}; known: {', '.join(PROMPTS.names())}")
        _nonnegative(self, "per_class")


@dataclass(frozen=True)
class MixConfig:
    """`[[mix]]`: train on real + synthetic images together (beyond the paper's supervised part). At each
    scale D the model sees `real_images` real images (fixed; the scarce-real experiment) plus D synthetic,
    or, with real_images = 0, round(real_fraction * D) real and the rest synthetic. Both parts are nested,
    class-balanced subsets; the row's `scale` is the total number of training images."""

    name: str
    synthetic: str  # the [[synthetic]] configuration whose set supplies the synthetic images
    real_fraction: float = 0.5
    real_images: int = 0

    def check(self) -> None:
        _source_name(self.name, "mix")
        check_range("real_fraction", self.real_fraction, 0, 1)
        _nonnegative(self, "real_images")

    def counts(self, scale: int) -> tuple[int, int]:
        """(real, synthetic) images at data scale `scale`."""
        if self.real_images:
            return self.real_images, scale
        real = round(self.real_fraction * scale)
        return real, scale - real




@dataclass(frozen=True)
class AdaptiveConfig:
    """`[[adaptive]]`: the closed loop (docs/adaptive.md). Each candidate configuration is trained at the `pilot`
    scales on its own set; per-class curves of those pilot models decide, round by round, how many images of each
    class to generate and with which candidate; after round r the adaptive set holds `scales[r]` images (nested: a
    round's set holds every earlier round's) and a model is trained on it, evaluated, and its per-class losses refit
    the curves for the next round. The uniform control, `<name>-uniform`, generates the pilot's best candidate
    class-balanced at the same counts."""

    name: str
    candidates: list[str]  # [[synthetic]] configurations (grid names) a class may be drawn by
    scales: list[int]  # the adaptive set's images after each round: one round per scale
    pilot: list[int] = field(default_factory=list)  # each candidate's pilot scales; [] = the study's scales
    regenerate: Literal["poor", "all"] = "poor"  # which classes may move off the best candidate: the poor ones, or all
    step: int = 0  # images per allocation step; 0 = the number of classes
    # every class holds at least base x its class-balanced share of each round's scale, whatever its forecast; the
    # allocator spends the rest (0: only the forecasts decide, down to the smallest pilot scale's count per class)
    base: float = 0.5
    reach: float = 4.0  # a class grows to at most reach x the largest count its curve was fitted on
    bootstrap: int = 200  # replicates of the per-class k intervals (over each class's validation examples)
    confidence: float = 0.95

    def check(self) -> None:
        _source_name(self.name, "adaptive")
        _scale_list(self.scales)
        if self.pilot:
            _scale_list(self.pilot)
            if len(self.pilot) < 2:
                raise ValueError(f"adaptive {self.name!r}: pilot needs at least two scales to fit per-class curves")
        if not self.candidates or len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"adaptive {self.name!r}: candidates must name each [[synthetic]] configuration once")
        _nonnegative(self, "step")
        check_range("base", self.base, 0, 1)
        _positive(self, "bootstrap")
        check_range("reach", self.reach, 1, low_open=False)
        check_range("confidence", self.confidence, 0, 1, low_open=True, high_open=True)

    @property
    def uniform(self) -> str:
        """The uniform control's source name."""
        return f"{self.name}-uniform"


@dataclass(frozen=True)
class RetrievedConfig:
    """`[[retrieved]]`: the retrieval control (docs/adaptive.md). For each prompt of `strategy`, the nearest
    images of an unlabelled pool by a CLIP model's text-image similarity, labelled by the prompt's class; pool
    images that are near-duplicates of an evaluation image (their 16 x 16 grey thumbnails correlate at `dedup` or
    above) are never taken."""

    name: str
    scales: list[int] = field(default_factory=list)  # [] = the scales of the study's [[adaptive]] (else the study's)
    # "study": the CLIP the study trains on its real pairs at the largest clip scale; or "open_clip:ARCH:WEIGHTS"
    clip: str = "study"
    # "train": the study's training split less every image a real classifier curve trains on; or a synscale set's
    # directory (its labels are not read)
    pool: str = "train"
    # the prompts whose nearest pool images are taken: a prompt strategy (one prompt per image wanted), or
    # "templates", the study's zero-shot templates (clip.templates) filled with each class name
    strategy: str = "templates"
    candidates: int = 8  # pool images considered per prompt (more are drawn where a class falls short)
    dedup: float = 0.99
    seed: int = 0

    def check(self) -> None:
        from synscale.prompts.strategies import PROMPTS

        _source_name(self.name, "retrieved")
        if self.scales:
            _scale_list(self.scales)
        if self.strategy != "templates" and (self.strategy not in PROMPTS or self.strategy == "in-captions"):
            raise ValueError(f"retrieved {self.name!r}: strategy must be \"templates\" or a prompt strategy other than "
                             f"in-captions; known: {', '.join(n for n in PROMPTS.names() if n != 'in-captions')}")
        if self.clip != "study" and not (self.clip.startswith("open_clip:") and self.clip.count(":") >= 2):
            raise ValueError(f'retrieved {self.name!r}: clip must be "study" or "open_clip:ARCH:WEIGHTS", got {self.clip!r}')
        _positive(self, "candidates")
        _nonnegative(self, "seed")
        check_range("dedup", self.dedup, 0, 1, low_open=True)


@dataclass(frozen=True)
class PairsConfig:
    """`[clip.pairs]`: the real image-text pairs CLIP trains on (docs/clip.md).

    - `captioned`: the study's own real training split ([data]), each image captioned by `captioner`
      in the in-captions style ("<class name>, <caption>"); the miniature's pairs.
    - `img2dataset`: webdataset shards as img2dataset writes them for LAION / CC12M (`<key>.jpg|png|webp`
      + `<key>.txt` + optional `<key>.json`): `root` is a directory of `*.tar`, a brace pattern
      (`/data/laion/{00000..41455}.tar`) or any URL the webdataset library opens (`pipe:...`, http)."""

    dataset: Literal["captioned", "img2dataset"] = "captioned"
    root: str = ""
    captioner: str = "attributes"  # captioned: attributes | file:<path> | hf:<image-to-text model>
    image_size: int = 0  # 0 = native size; else shorter side resized + centre crop (img2dataset)
    limit: int = 0  # pairs to take (the first of the shards); 0 = as many as the largest scale needs
    allow_download: bool = False  # let an hf: captioner be fetched
    # img2dataset: the share of pairs that may be skipped where their image, caption or JSON cannot be read (web
    # crawls hold a few; each is recorded in the set and counted in the report)
    max_bad_fraction: float = CAPTION_SETS_MAX_BAD
    # img2dataset: how the pairs' shards store the images ([data]'s image_format; auto keeps img2dataset's JPEGs)
    image_format: Literal["auto", "png", "jpeg", "webp"] = "auto"
    image_quality: int = 95

    def check(self) -> None:
        _nonnegative(self, "image_size", "limit")
        check_range("image_quality", self.image_quality, 1, 100)
        check_range("max_bad_fraction", self.max_bad_fraction, 0, 1, high_open=True)
        if self.dataset == "img2dataset" and not self.root:
            raise ValueError("clip.pairs.dataset = 'img2dataset' needs root: a shard directory, a brace pattern or a URL")


@dataclass(frozen=True)
class ClipSyntheticConfig(GenerationConfig):
    """`[[clip.synthetic]]`: synthetic pairs, the text-to-image model regenerating an image for every
    caption of the real pairs (one image per caption, its own seed). The paper used Stable Diffusion at
    guidance 1.5 (appendix H.2 compares 1.25 to 2.5)."""

    guidance: float = 1.5


@dataclass(frozen=True)
class ClipMixConfig:
    """`[[clip.mix]]`: real and synthetic pairs together (section 5.2): the same captions; at every step
    each caption takes its real image with probability `real_prob`, else its synthetic one."""

    name: str
    synthetic: str  # the [[clip.synthetic]] configuration whose images are mixed in
    real_prob: float = 0.5

    def check(self) -> None:
        _source_name(self.name, "clip mix")
        check_range("real_prob", self.real_prob, 0, 1)


def check_templates(spec: str, key: str) -> None:
    """A template set's name, or a file whose every line is a template (read now: a bad line is found before any
    model trains, not by the zero-shot evaluation after)."""
    from synscale.train.templates import BUILTIN, load_templates, template_names

    if spec not in template_names() and not Path(spec).is_file():
        raise ValueError(f"{key} must be one of {', '.join(template_names())} or a file of templates "
                         f"(one per line, {{}} = the class name), got {spec!r}")
    if spec not in BUILTIN:
        try:
            load_templates(spec)
        except ConfigError as e:
            raise ValueError(f"{key}: {e}") from None


@dataclass(frozen=True)
class ClipConfig:
    """`[clip]`: CLIP trained on image-text pairs at data scales counted in captions (paper section 5):
    real pairs (source `real`), synthetic pairs (`[[clip.synthetic]]`) and both (`[[clip.mix]]`), every
    model evaluated zero-shot on the real test set, its shifts, `[[evaluate.sets]]` and
    `[[evaluate.zero_shot]]`. The three sources at one scale share the same captions."""

    scales: list[int] = field(default_factory=list)  # captions; [] = no CLIP
    real: str = "clip-real"  # the source name of the real pairs' curve ("" = none)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(task="contrastive"))
    templates: str = "openai"  # zero-shot prompts: openai (80) | simple (7) | a shipped set | a file ({} = class)
    order_seed: int = 0  # seeds the fixed caption order that makes nested subsets
    reference_size: int = 0  # D_I of Equation 2 for the CLIP curves; 0 = the largest CLIP scale
    synthetic: list[ClipSyntheticConfig] = field(default_factory=list)
    mix: list[ClipMixConfig] = field(default_factory=list)
    # Table A3's two recipes: from `large_from` captions on (0 = never), models train with `train_large`
    large_from: int = 0
    train_large: TrainConfig = field(default_factory=lambda: TrainConfig(task="contrastive"))

    def check(self) -> None:
        _scale_list(self.scales)
        _nonnegative(self, "order_seed", "reference_size")
        for key, tc, scales in (("clip.train", self.train, self.small_scales()), ("clip.train_large", self.train_large,
                                                                                  self.large_scales())):
            if scales and tc.task != "contrastive":
                raise ValueError(f'{key} must be a contrastive recipe: set {key}.recipe = "miniature-clip", '
                                 f'"paper-clip-s" or "paper-clip-l" (or {key}.task = "contrastive")')
            tc.schedule.check_scales(scales, key)
        _nonnegative(self, "large_from")
        check_templates(self.templates, "clip.templates")
        names = [c.name for c in self.synthetic]
        for m in self.mix:
            if m.synthetic not in names:
                raise ValueError(f"clip mix {m.name!r}: no [[clip.synthetic]] named {m.synthetic!r} (have: {names})")

    def small_scales(self) -> list[int]:
        return [s for s in self.scales if not self.large_from or s < self.large_from]

    def large_scales(self) -> list[int]:
        return [s for s in self.scales if self.large_from and s >= self.large_from]

    def train_for(self, scale: int) -> TrainConfig:
        """The recipe of the models at `scale` captions: `train`, or `train_large` from `large_from` on."""
        return self.train_large if self.large_from and scale >= self.large_from else self.train

    def sources(self) -> list[str]:
        """Every CLIP curve's source name."""
        return ([self.real] if self.real else []) + [c.name for c in self.synthetic] + [m.name for m in self.mix]


@dataclass(frozen=True)
class ZeroShotSetConfig:
    """`[[evaluate.zero_shot]]`: a downstream set for zero-shot classification by every CLIP model (the
    paper's table 1: Food-101, CIFAR-10, ...), read as `dataset` (imagefolder | webdataset | fashion-mnist | hf)
    with its own class names; results land as `eval_set = <name>`."""

    name: str
    root: str = ""
    dataset: str = "imagefolder"
    split: str = "test"
    image_size: int = 0
    templates: str = ""  # "" = clip.templates
    image_column: str = "image"  # hf: the column that holds the images
    label_column: str = "label"  # hf: the column that holds the labels (a ClassLabel)

    def check(self) -> None:
        from synscale.data.datasets import DATASETS

        if not self.name or "/" in self.name:
            raise ValueError(f"zero-shot set name {self.name!r} must be non-empty, without '/'")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS.names())}")
        if self.templates:
            check_templates(self.templates, "templates")
        _nonnegative(self, "image_size")
        _check_columns(self)


@dataclass(frozen=True)
class MetricsConfig:
    """`[metrics]`: recognizability, diversity, Fréchet distance, an LPIPS-style distance and extras for every
    configuration (see docs/metrics.md). Each configuration gets a fixed test set of `per_class` images per class."""

    per_class: int = 50  # test-set images per class and configuration (the paper: 50); 0 = no metrics
    # a synthetic configuration's test images: "separate" (generated apart, other seeds) or "training" (a
    # class-balanced sample of its training set: nothing more to generate, as the paper measured its sets)
    test_from: Literal["separate", "training"] = "separate"
    reference: str = "trained"  # "trained" | "timm:<name>" (pretrained) | a checkpoint file or train-stage dir
    reference_arch: str = ""  # timm architecture of a checkpoint file
    allow_download: bool = False  # let timm fetch "timm:<name>" weights (else the local cache only)
    names: list[str] = field(default_factory=lambda: ["recognizability", "diversity", "fd", "fd_class", "lpips_ref",
                                                      "prdc", "vendi", "lpips_alex", "fid_inception"])
    fd_per_class: int = 1300  # images per class for per-class FD (appendix G.4), synthetic and real train
    lpips_pairs: int = 250  # random pairs per class (appendix D)
    nearest_k: int = 5  # k of precision/recall/density/coverage
    seed: int = 0
    # where and how fast: no effect on the numbers (the reference's precision is in the stage)
    batch_size: int = not_in_id(500)
    device: str = not_in_id("auto")  # "auto" (cuda if there), "cpu", "cuda", "cuda:1", ...
    compile: bool = not_in_id(False)  # torch.compile the reference network (CUDA)
    alexnet_weights: str = ""  # torchvision AlexNet weights for real LPIPS; "" = torch hub cache if there
    inception_weights: str = ""  # FID Inception weights (torch-fidelity's); "" = torch hub cache if there

    def check(self) -> None:
        from synscale.metrics.core import METRICS, RENAMED

        _nonnegative(self, "per_class", "fd_per_class", "lpips_pairs", "seed")
        _positive(self, "nearest_k", "batch_size")
        for n in self.names:
            if n in RENAMED:  # one line that says what to write now (old workdirs' tables are still read)
                raise ValueError(f"metric {n!r} is now {RENAMED[n]!r} (an LPIPS-style distance on the reference network; "
                                 "the paper's AlexNet LPIPS is 'lpips_alex'): write that name")
            if n not in METRICS:
                raise ValueError(f"unknown metric {n!r}; known: {', '.join(METRICS.names())}")
        if not self.reference or self.reference == "timm:":
            raise ValueError("metrics.reference must be 'trained', 'timm:<name>' or a checkpoint path")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    scales: list[int]
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    synthetic: list[SyntheticConfig] = field(default_factory=list)
    mix: list[MixConfig] = field(default_factory=list)
    adaptive: list[AdaptiveConfig] = field(default_factory=list)
    retrieved: list[RetrievedConfig] = field(default_factory=list)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # named paths (diffusers pipelines, captioners) that string values elsewhere use as ${models.<name>}, so a
    # grid names each model once and `--set models.sd=/models/sd15` points all its configurations at a copy
    models: dict[str, str] = field(default_factory=dict)
    # defaults of every [[synthetic]] and [[clip.synthetic]] table (steps, dtype, executor, ...): each table's
    # own keys win
    generation: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1  # models per (source, scale), with train.seed, train.seed + 1, ...: runs the fits' bootstrap redraws
    # [[grid]] tables: model x strategy x guidance expanded into [[synthetic]] configurations (synscale.grid),
    # trained at the largest scale only unless `curves` selects them
    grid: list[dict[str, Any]] = field(default_factory=list)
    # which synthetic configurations get a scaling curve (every scale): names, "best" / "worst" (the grid's
    # lowest / highest validation loss at the largest scale, chosen when the grid's models are evaluated),
    # or "all"; [] = every configuration (the grid's at the largest scale only)
    curves: list[str] = field(default_factory=list)

    def classifier_sources(self) -> list[str]:
        """The classifier curves: real, every synthetic configuration, every mix, every adaptive source and its
        uniform control, every retrieved source."""
        return ["real", *(c.name for c in self.synthetic), *(m.name for m in self.mix),
                *(n for a in self.adaptive for n in (a.name, a.uniform)), *(r.name for r in self.retrieved)]

    def source_scales(self, source: str) -> list[int]:
        """A classifier curve's scales: data.scales (real) or the configuration's own, else the study's."""
        own = self.data.scales if source == "real" else next((c.scales for c in self.synthetic if c.name == source), [])
        for a in self.adaptive:
            own = a.scales if source in (a.name, a.uniform) else own
        for r in self.retrieved:
            if r.name == source:
                own = r.scales or (self.adaptive[0].scales if len(self.adaptive) == 1 else [])
        return list(own or self.scales)

    def holdout_scales(self, source: str) -> list[int]:
        """The scales a classifier source is also trained at only to check forecasts (`[forecast]`): those of
        forecast.holdout past its curve, where it has a curve to forecast from (three scales or more)."""
        if not self.scales or source not in self.forecast.sources:
            return []
        scales = self.source_scales(source)
        return [s for s in self.forecast.holdout if s > max(scales)] if len(scales) >= 3 else []

    def check(self) -> None:
        if not self.scales and not self.clip.scales:
            raise ValueError("scales must list at least one data scale (or clip.scales, for a CLIP-only study)")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {self.repeats!r}")
        _scale_list(self.scales)
        if self.scales and self.train.task != "classification":
            raise ValueError("[train] is the classifier's recipe (task = classification); CLIP's goes in [clip.train]")
        self.train.schedule.check_scales(sorted({s for n in self.classifier_sources()
                                                 for s in self.source_scales(n) + self.holdout_scales(n)}), "train")
        self._check_holdout()
        taken = ["real", *(c.name for c in self.synthetic), *(m.name for m in self.mix)]
        clash = sorted(set(taken) & set(self.clip.sources())) if self.clip.scales else []
        if clash or len(set(self.clip.sources())) != len(self.clip.sources()):
            raise ValueError(f"CLIP sources need names of their own (real, [[synthetic]] and [[mix]] take {taken}): "
                             f"{self.clip.sources()}")
        names = [c.name for c in self.synthetic]
        if len(set(names)) != len(names):
            raise ValueError(f"synthetic configurations need distinct names, got {names}")
        from synscale.grid import PICKS, check_curves

        check_curves(self)
        for m in self.mix:
            if m.synthetic in PICKS:
                continue
            if m.synthetic not in names:
                raise ValueError(f"mix {m.name!r}: no [[synthetic]] configuration named {m.synthetic!r} (have: {names})")
            if m.name in names:
                raise ValueError(f"mix {m.name!r}: the name is taken by a [[synthetic]] configuration")
        if len({m.name for m in self.mix}) != len(self.mix):
            raise ValueError("mixes need distinct names")
        self._check_loop(taken)
        unknown = set(self.sizes) - {"smoke", "full"}
        if unknown:
            raise ValueError(f"unknown size(s) {sorted(unknown)} in [sizes]; allowed: smoke, full")

    def _check_loop(self, taken: list[str]) -> None:
        """[[adaptive]] and [[retrieved]]: names of their own, candidates that are configurations, pilots the
        candidates' sets hold, and a CLIP for the retrieval."""
        if (self.adaptive or self.retrieved) and not self.scales:
            raise ValueError("[[adaptive]] and [[retrieved]] sources are classifier curves: they need scales "
                             "(for a CLIP-only study set retrieved = [] and adaptive = [] first)")
        names = [c.name for c in self.synthetic]
        loop = [n for a in self.adaptive for n in (a.name, a.uniform)] + [r.name for r in self.retrieved]
        clash = sorted(set(loop) & set(taken)) + sorted({n for n in loop if loop.count(n) > 1})
        if clash:
            raise ValueError(f"[[adaptive]] / [[retrieved]] names must differ from every other source's: {clash}")
        for a in self.adaptive:
            unknown = [c for c in a.candidates if c not in names]
            if unknown:
                raise ValueError(f"adaptive {a.name!r}: candidates {unknown} are not [[synthetic]] configurations "
                                 f"(have: {', '.join(names) or 'none'})")
            for c in a.candidates:
                top = max(self.source_scales(c))
                if max(self.pilot_scales(a)) > top or len(self.pilot_scales(a)) < 2:
                    raise ValueError(f"adaptive {a.name!r}: pilot scales {self.pilot_scales(a)} must be two or more, "
                                     f"none above candidate {c!r}'s largest scale {top}; set adaptive.pilot")
        for r in self.retrieved:
            if r.clip == "study" and not (self.clip.scales and self.clip.real):
                raise ValueError(f'retrieved {r.name!r}: clip = "study" needs the study\'s CLIP on real pairs '
                                 '(clip.scales and clip.real); name open_clip weights instead')
            if not r.scales and len(self.adaptive) != 1:
                raise ValueError(f"retrieved {r.name!r}: set its scales (they default to the [[adaptive]] source's "
                                 "only where the study has exactly one)")

    def pilot_scales(self, a: AdaptiveConfig) -> list[int]:
        """An adaptive source's pilot scales: its own, else the study's."""
        return list(a.pilot or self.scales)

    def _check_holdout(self) -> None:
        """`[forecast]`: each source is real or a configuration (a scale not past its curve, or a source with fewer
        than three scales, gets no held-out model: holdout_scales)."""
        if not self.forecast.holdout or not self.scales:
            return
        names = [c.name for c in self.synthetic]
        for source in self.forecast.sources:
            if source != "real" and source not in names:
                why = " (best / worst are picked after generation: name the configuration)" if source in ("best", "worst") else ""
                raise ValueError(f"forecast.sources: {source!r} is not 'real' or a [[synthetic]] configuration{why}")



def study_identity(cfg: StudyConfig) -> str:
    """The study as one id: 16 hex digits of sha256 over the canonical JSON of its resolved config (what
    W/study.json holds). Runs of the same file, size and --set values share it: they may run in one workdir at
    once (synscale.workdir.study_lock), and a rerun's journal knows the stages an earlier run made."""
    import hashlib

    from synscale.stage import canonical

    return hashlib.sha256(canonical(to_dict(cfg)).encode()).hexdigest()[:16]

def _source_name(name: str, what: str) -> None:
    """A curve's source name: it names results rows and stage logs, and `real` is the real data's."""
    if name == "real" or not name or "/" in name:
        raise ValueError(f"{what} name {name!r} must be non-empty, not 'real', without '/'")


def _scale_list(scales: list[int]) -> None:
    if any(s <= 0 for s in scales) or sorted(set(scales)) != list(scales):
        raise ValueError(f"scales must be positive, strictly increasing integers, got {scales}")


# ---------------------------------------------------------------------------------------------------
# Loading: file -> size overrides -> --set overrides -> validation.


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=v` -> ("a.b", v); v is read as a TOML value (numbers, true, [1, 2], "s"), else as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=0.001")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {p!r} is a value, not a table")
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "model_kwargs":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_study(
    path: str | Path,
    size: str = "default",
    overrides: list[str] | tuple[str, ...] = (),
) -> StudyConfig:
    """Read, resize and override a study file; every step is validated with the file named in errors."""
    path = Path(path)
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    from synscale.atomic import read_text

    try:
        raw = tomllib.loads(read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a study file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    from_dict(StudyConfig, with_recipe(raw, str(path)), str(path))  # the file as written must validate on its own
    if size != "default":
        raw = deep_merge(raw, raw.get("sizes", {}).get(size, {}))
        from_dict(StudyConfig, with_recipe(raw, f"{path} [sizes.{size}]"), f"{path} [sizes.{size}]")
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
        where = f"{path} (--set {item})"
        from_dict(StudyConfig, with_recipe(raw, where), where)
    return from_dict(StudyConfig, with_recipe(raw, str(path)), str(path))


def with_recipe(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """`train.recipe = "<name>"` (and `clip.train.recipe`): the recipe's table under the study's own keys;
    `${models.<name>}` in any string replaced by `[models]`'s path."""
    from synscale.grid import expand_grid

    raw = expand_grid(resolve_models(raw, source), source)
    out = {**raw, "train": _merge_recipe(raw.get("train"), source, "train")}
    defaults = raw.get("generation", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: [generation] must be a table of [[synthetic]] keys")
    if defaults and isinstance(raw.get("synthetic"), list):
        out["synthetic"] = [{**defaults, **t} if isinstance(t, dict) else t for t in raw["synthetic"]]
    clip = raw.get("clip")
    if isinstance(clip, dict):
        out["clip"] = {**clip, "train": _merge_recipe(clip.get("train"), source, "clip.train"),
                       "train_large": _merge_recipe(clip.get("train_large"), source, "clip.train_large")}
        out["clip"] = {k: v for k, v in out["clip"].items() if v is not None}
        if defaults and isinstance(clip.get("synthetic"), list):
            clip_keys = {f.name for f in dataclasses.fields(ClipSyntheticConfig)}
            out["clip"]["synthetic"] = [{**{k: v for k, v in defaults.items() if k in clip_keys}, **t}
                                        if isinstance(t, dict) else t for t in clip["synthetic"]]
    return {k: v for k, v in out.items() if v is not None}


MODEL_REF = re.compile(r"\$\{models\.([A-Za-z0-9_-]+)\}")


def resolve_models(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of the study's table with every `${models.<name>}` in a string value replaced."""
    models = raw.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, str) for v in models.values()):
        raise ConfigError(f"{source}: [models] must be a table of paths (strings)")

    def sub(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, f"{where}.{k}" if where else k) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value

        def one(m: re.Match[str]) -> str:
            if m.group(1) not in models:
                raise ConfigError(f"{source}: {where!r} uses ${{models.{m.group(1)}}} but [models] has no {m.group(1)!r}; "
                                  f"set it with --set models.{m.group(1)}=PATH (known: {', '.join(models) or 'none'})")
            return models[m.group(1)]

        return MODEL_REF.sub(one, value)

    return {k: (v if k in ("models", "sizes") else sub(v, k)) for k, v in raw.items()}


def _merge_recipe(train: Any, source: str, where: str) -> Any:
    if not isinstance(train, dict) or not train.get("recipe"):
        return train
    from synscale.train.recipes import RecipeError, load_recipe

    try:
        recipe = load_recipe(train["recipe"])
    except RecipeError as e:
        raise ConfigError(f"{source}: {where}.recipe: {e}") from None
    merged = deep_merge(recipe, train)
    merged["model_kwargs"] = {**recipe.get("model_kwargs", {}), **train.get("model_kwargs", {})}
    return merged


def find_study(name_or_path: str) -> Path:
    """A path to a TOML file, or the name of a study shipped with synscale (e.g. `fashion-mnist`)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    shipped = Path(__file__).parent / "studies" / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    names = sorted(q.stem for q in (Path(__file__).parent / "studies").glob("*.toml"))
    raise ConfigError(f"no study file {name_or_path!r}; shipped studies: {', '.join(names)}")
