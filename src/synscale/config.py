"""Typed, frozen study configs read from TOML.

A study file is validated into `StudyConfig`. Unknown or mistyped keys are errors that name the file,
the key and the allowed keys; `--set a.b=v` overrides go through the same validation. Every study has
sizes (`smoke`, `default`, `full`): `[sizes.<name>]` tables in the file hold overrides that shrink or
grow the grid; `default` is the file as written.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SIZES = ("smoke", "default", "full")


class ConfigError(ValueError):
    """A study file or override that does not validate; the message says where and why."""


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

    def check(self) -> None:
        _positive(self, "shard_size")
        _nonnegative(self, "image_size", "reference_size")


@dataclass(frozen=True)
class ScheduleConfig:
    """Training length linear in log2(D) (paper appendix A.1): iters(D) = per_doubling * log2(D / zero_scale).

    The paper's points (95k/10k at 1M, 190k/20k at 2M, 285k/30k at 4M) are zero_scale = 500k,
    iters_per_doubling = 95k, warmup_per_doubling = 10k. A study scales the rule to its own size.
    """

    zero_scale: int = 500_000
    iters_per_doubling: float = 95_000.0
    warmup_per_doubling: float = 10_000.0
    kind: Literal["log-scale", "epochs"] = "log-scale"
    # kind = "epochs" (CLIP, appendix B.1): ceil(epochs * D / batch) steps at every scale D, warm-up from
    # the table [[threshold D, steps], ...] (the row with the largest threshold <= D; the first below all)
    epochs: float = 32.0
    warmup_by_scale: list[list[int]] = field(default_factory=list)

    def check(self) -> None:
        _positive(self, "zero_scale", "iters_per_doubling", "epochs")
        _nonnegative(self, "warmup_per_doubling")
        if self.warmup_per_doubling >= self.iters_per_doubling:
            raise ValueError("warmup_per_doubling must be smaller than iters_per_doubling")
        if any(len(r) != 2 or min(r) < 0 for r in self.warmup_by_scale):
            raise ValueError(f"warmup_by_scale must be [[scale, warm-up steps], ...] of non-negative integers, "
                             f"got {self.warmup_by_scale}")

    def check_scales(self, scales: list[int], table: str) -> None:
        """The log-scale rule gives scales at or below zero_scale no iterations (`table`: train or clip.train)."""
        if self.kind == "log-scale" and scales and min(scales) <= self.zero_scale:
            raise ValueError(f"the smallest scale ({min(scales)}) must exceed {table}.schedule.zero_scale "
                             f"({self.zero_scale}): the log-scale rule gives it no iterations")


@dataclass(frozen=True)
class TrainConfig:
    """`[train]` (and `[clip.train]`): a training recipe (see docs/training.md, docs/clip.md). `recipe` names
    a shipped recipe (synscale.train.recipes: `paper-vit-b16`, `miniature-cnn`, `miniature-vit`,
    `paper-clip-s`, `paper-clip-l`, `miniature-clip`) whose values are the defaults of this table; keys
    written here override them. `task` says what is trained: a classifier (a timm model) or CLIP (an
    open_clip model)."""

    recipe: str = ""
    task: Literal["classification", "contrastive"] = "classification"
    model: str = "synscale_cnn_small"  # a timm model name (classification) or an open_clip config name (contrastive)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model (drop_rate, ...)
    batch_size: int = 256  # global batch: images per optimizer step over all processes
    accum_steps: int = 1  # gradient accumulation: each process runs batch_size / (processes * accum_steps) at once
    lr: float = 3e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8  # AdamW epsilon
    loss: Literal["ce", "bce"] = "ce"  # softmax cross-entropy, or sigmoid binary cross-entropy (summed over classes)
    mixup: float = 0.0  # Mixup alpha (0 = off): one Beta(alpha, alpha) draw per step, batch mixed with its reverse
    randaugment: list[int] = field(default_factory=list)  # [num_ops, magnitude], e.g. [2, 15]; [] = off
    crop: int = 0  # train on random crop x crop patches, evaluate on the centre crop; 0 = full images
    augment: Literal["none", "flip", "flip-shift"] = "flip-shift"  # flip: random horizontal flip only
    eval_batch_size: int = 1000
    seed: int = 0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Where and how it runs. loader, workers and checkpoint_every do not change what is computed, so they are
    # left out of stage ids (TRAIN_RUN_ONLY, with `recipe`, whose values are in the other keys); the others
    # can change the numbers in the last bits or more.
    nproc: int = 1  # processes (GPUs) per training run; > 1 launches torchrun with DistributedDataParallel
    device: str = "auto"  # auto (cuda if there) | cpu | cuda
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast (CUDA, or CPU)
    compile: bool = False  # torch.compile the model
    loader: Literal["auto", "memory", "stream"] = "auto"  # memory: decoded arrays; stream: shards in workers
    workers: int = 0  # loader worker processes (stream); 0 = decode in the training process
    checkpoint_every: int = 500  # steps between resumable checkpoints (safetensors + JSON); 0 = none

    def check(self) -> None:
        _positive(self, "batch_size", "lr", "eval_batch_size", "accum_steps", "nproc", "eps")
        _nonnegative(self, "weight_decay", "mixup", "crop", "workers", "checkpoint_every")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas must be two numbers in [0, 1)")
        if self.randaugment and (len(self.randaugment) != 2 or self.randaugment[0] < 1 or not 0 <= self.randaugment[1] <= 30):
            raise ValueError(f"randaugment must be [num_ops >= 1, magnitude 0..30] or [], got {self.randaugment}")
        if self.batch_size % (self.nproc * self.accum_steps):
            raise ValueError(f"batch_size {self.batch_size} must divide by nproc * accum_steps = {self.nproc * self.accum_steps}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


TRAIN_RUN_ONLY = ("recipe", "loader", "workers", "checkpoint_every")
# Keys added to [train] after stage ids were first made: they enter an id only where they differ from
# these defaults, so the ids of every earlier workdir's train stages stay what they were.
TRAIN_ADDED = {"task": "classification", "eps": 1e-8}
SCHEDULE_ADDED = {"kind": "log-scale", "epochs": 32.0, "warmup_by_scale": []}


_UNSET = object()  # equal to no value


def train_identity(train: TrainConfig) -> dict[str, Any]:
    """`[train]` as it enters stage ids: without the keys that only say how a run executes, and without
    later-added keys at their defaults."""
    out = {k: v for k, v in to_dict(train).items() if k not in TRAIN_RUN_ONLY and TRAIN_ADDED.get(k, _UNSET) != v}
    out["schedule"] = {k: v for k, v in out["schedule"].items() if SCHEDULE_ADDED.get(k, _UNSET) != v}
    return out


@dataclass(frozen=True)
class ProbeConfig:
    """`[[evaluate.probes]]`: a downstream set for linear probes (appendix A.3) of every trained model;
    results land as `eval_set = "probe:<name>"`."""

    name: str
    dataset: str = "imagefolder"  # imagefolder | webdataset | fashion-mnist
    root: str = ""
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = 0
    c: float = 1.0  # inverse L2 strength, as scikit-learn's C
    max_iter: int = 500

    def check(self) -> None:
        from synscale.data.datasets import DATASETS

        if not self.name or "/" in self.name:
            raise ValueError(f"probe name {self.name!r} must be non-empty, without '/'")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS.names())}")
        _positive(self, "c", "max_iter")


@dataclass(frozen=True)
class OODSetConfig:
    """`[[evaluate.sets]]`: an out-of-distribution evaluation set (synscale.data.ood), e.g. ImageNet-A/R/
    Sketch/V2 by preset, or any class folder tree / webdataset; results land as `eval_set = <name>`."""

    name: str
    root: str
    preset: str = ""  # imagenet-a | imagenet-r | imagenet-sketch | imagenet-v2 | "" (plain folders / shards)
    dataset: Literal["imagefolder", "webdataset"] = "imagefolder"  # without a preset
    split: str = ""  # sub-folder (imagefolder) or shard prefix (webdataset) of the split to use
    class_subset: str = "auto"  # auto | all | a file of wnids or class names (logits restricted to them)
    image_size: int = 0  # 0 = the study's data.image_size

    def check(self) -> None:
        from synscale.data.ood import PRESETS

        if not self.name or "/" in self.name or self.name == "val" or self.name.startswith("probe:"):
            raise ValueError(f"evaluation set name {self.name!r} must be non-empty, not 'val', without '/'")
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if not self.root:
            raise ValueError(f"evaluation set {self.name!r} needs root")
        _nonnegative(self, "image_size")


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

    def check(self) -> None:
        _nonnegative(self, "bootstrap", "saturating_bootstrap")
        if not 0 < self.confidence < 1:
            raise ValueError("fit.confidence must be in (0, 1)")
        if not self.break_tolerance > 0:
            raise ValueError("fit.break_tolerance must be positive")
        if not 0 < self.category_low < self.category_high < 1:
            raise ValueError("fit.category_low and fit.category_high must satisfy 0 < low < high < 1")


@dataclass(frozen=True)
class GenerationConfig:
    """How a synthetic set is generated: a text-to-image model, its guidance scale and sampler, and where
    it runs. `[[synthetic]]` (class prompts) and `[[clip.synthetic]]` (one image per caption) add to it."""

    name: str
    model: str  # builtin:<family>, a diffusers pipeline directory (or hub id with allow_download)
    guidance: float = 2.0
    steps: int = 0  # sampling steps; 0 = the model's default (built-in: its family's; diffusers: 50)
    scheduler: str = "default"
    dtype: str = "float32"
    size: int = 0  # generation height = width; 0 = the pipeline's default
    seed: int = 0
    batch_size: int = 16
    shard_size: int = 1000
    executor: Literal["local", "ray"] = "local"
    ray_actors: int = 1
    ray_cpus: float = 0.5
    ray_gpus: float = 0.0
    threads: int = 0  # torch threads while generating (0: default); equal values give equal bytes
    allow_download: bool = False
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        _source_name(self.name, "synthetic")
        _positive(self, "batch_size", "shard_size", "ray_actors")
        _nonnegative(self, "steps", "guidance", "size", "threads")


GENERATION_RUN_ONLY = ("executor", "ray_actors", "ray_cpus", "ray_gpus")  # where it runs does not change the bytes


@dataclass(frozen=True)
class SyntheticConfig(GenerationConfig):
    """One synthetic configuration (`[[synthetic]]`): a text-to-image model, a prompt strategy and a
    guidance scale. The study generates a class-balanced set with it, sized for the largest scale,
    trains on it at every scale and evaluates on the real test set (source = `name`)."""

    strategy: str = "classname"
    per_class: int = 0  # images per class; 0 = enough for the largest scale
    captioner: str = "attributes"  # in-captions: attributes | file:<path> | hf:<model>

    def check(self) -> None:
        from synscale.prompts.strategies import PROMPTS

        super().check()
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
        if not 0 <= self.real_fraction <= 1:
            raise ValueError(f"real_fraction must be in [0, 1], got {self.real_fraction}")
        _nonnegative(self, "real_images")

    def counts(self, scale: int) -> tuple[int, int]:
        """(real, synthetic) images at data scale `scale`."""
        if self.real_images:
            return self.real_images, scale
        real = round(self.real_fraction * scale)
        return real, scale - real


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

    def check(self) -> None:
        _nonnegative(self, "image_size", "limit")
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
        if not 0 <= self.real_prob <= 1:
            raise ValueError(f"real_prob must be in [0, 1], got {self.real_prob}")


def check_templates(spec: str, key: str) -> None:
    from synscale.train.templates import template_names

    if spec not in template_names() and not Path(spec).is_file():
        raise ValueError(f"{key} must be one of {', '.join(template_names())} or a file of templates "
                         f"(one per line, {{}} = the class name), got {spec!r}")


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

    def check(self) -> None:
        _scale_list(self.scales)
        if self.scales and self.train.task != "contrastive":
            raise ValueError('clip.train must be a contrastive recipe: set clip.train.recipe = "miniature-clip", '
                             '"paper-clip-s" or "paper-clip-l" (or clip.train.task = "contrastive")')
        self.train.schedule.check_scales(self.scales, "clip.train")
        check_templates(self.templates, "clip.templates")
        names = [c.name for c in self.synthetic]
        for m in self.mix:
            if m.synthetic not in names:
                raise ValueError(f"clip mix {m.name!r}: no [[clip.synthetic]] named {m.synthetic!r} (have: {names})")

    def sources(self) -> list[str]:
        """Every CLIP curve's source name."""
        return ([self.real] if self.real else []) + [c.name for c in self.synthetic] + [m.name for m in self.mix]


@dataclass(frozen=True)
class ZeroShotSetConfig:
    """`[[evaluate.zero_shot]]`: a downstream set for zero-shot classification by every CLIP model (the
    paper's table 1: Food-101, CIFAR-10, ...), read as `dataset` (imagefolder | webdataset | fashion-mnist)
    with its own class names; results land as `eval_set = <name>`."""

    name: str
    root: str = ""
    dataset: str = "imagefolder"
    split: str = "test"
    image_size: int = 0
    templates: str = ""  # "" = clip.templates

    def check(self) -> None:
        from synscale.data.datasets import DATASETS

        if not self.name or "/" in self.name:
            raise ValueError(f"zero-shot set name {self.name!r} must be non-empty, without '/'")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS.names())}")
        if self.templates:
            check_templates(self.templates, "templates")
        _nonnegative(self, "image_size")


@dataclass(frozen=True)
class MetricsConfig:
    """`[metrics]`: recognizability, diversity, Fréchet distance, LPIPS and extras for every configuration
    (see docs/metrics.md). Each configuration gets a fixed test set of `per_class` images per class."""

    per_class: int = 50  # test-set images per class and configuration (the paper: 50); 0 = no metrics
    reference: str = "trained"  # "trained" | "timm:<name>" (pretrained) | a checkpoint file or train-stage dir
    reference_arch: str = ""  # timm architecture of a checkpoint file
    allow_download: bool = False  # let timm fetch "timm:<name>" weights (else the local cache only)
    names: list[str] = field(default_factory=lambda: ["recognizability", "diversity", "fd", "fd_class", "lpips",
                                                      "prdc", "vendi", "lpips_alex", "fid_inception"])
    fd_per_class: int = 1300  # images per class for per-class FD (appendix G.4), synthetic and real train
    lpips_pairs: int = 250  # random pairs per class (appendix D)
    nearest_k: int = 5  # k of precision/recall/density/coverage
    seed: int = 0
    batch_size: int = 500
    device: str = "auto"  # "auto" (cuda if there), "cpu", "cuda", "cuda:1", ...
    compile: bool = False  # torch.compile the reference network (CUDA)
    alexnet_weights: str = ""  # torchvision AlexNet weights for real LPIPS; "" = torch hub cache if there
    inception_weights: str = ""  # FID Inception weights (torch-fidelity's); "" = torch hub cache if there

    def check(self) -> None:
        from synscale.metrics.core import METRICS

        _nonnegative(self, "per_class", "fd_per_class", "lpips_pairs")
        _positive(self, "nearest_k", "batch_size")
        for n in self.names:
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
    synthetic: list[SyntheticConfig] = field(default_factory=list)
    mix: list[MixConfig] = field(default_factory=list)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: int = 1  # models per (source, scale), with train.seed, train.seed + 1, ...: runs the fits' bootstrap redraws

    def check(self) -> None:
        if not self.scales and not self.clip.scales:
            raise ValueError("scales must list at least one data scale (or clip.scales, for a CLIP-only study)")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {self.repeats!r}")
        _scale_list(self.scales)
        if self.scales and self.train.task != "classification":
            raise ValueError("[train] is the classifier's recipe (task = classification); CLIP's goes in [clip.train]")
        self.train.schedule.check_scales(self.scales, "train")
        taken = ["real", *(c.name for c in self.synthetic), *(m.name for m in self.mix)]
        clash = sorted(set(taken) & set(self.clip.sources())) if self.clip.scales else []
        if clash or len(set(self.clip.sources())) != len(self.clip.sources()):
            raise ValueError(f"CLIP sources need names of their own (real, [[synthetic]] and [[mix]] take {taken}): "
                             f"{self.clip.sources()}")
        names = [c.name for c in self.synthetic]
        if len(set(names)) != len(names):
            raise ValueError(f"synthetic configurations need distinct names, got {names}")
        for m in self.mix:
            if m.synthetic not in names:
                raise ValueError(f"mix {m.name!r}: no [[synthetic]] configuration named {m.synthetic!r} (have: {names})")
            if m.name in names:
                raise ValueError(f"mix {m.name!r}: the name is taken by a [[synthetic]] configuration")
        if len({m.name for m in self.mix}) != len(self.mix):
            raise ValueError("mixes need distinct names")
        unknown = set(self.sizes) - {"smoke", "full"}
        if unknown:
            raise ValueError(f"unknown size(s) {sorted(unknown)} in [sizes]; allowed: smoke, full")


def _source_name(name: str, what: str) -> None:
    """A curve's source name: it names results rows and stage logs, and `real` is the real data's."""
    if name == "real" or not name or "/" in name:
        raise ValueError(f"{what} name {name!r} must be non-empty, not 'real', without '/'")


def _scale_list(scales: list[int]) -> None:
    if any(s <= 0 for s in scales) or sorted(set(scales)) != list(scales):
        raise ValueError(f"scales must be positive, strictly increasing integers, got {scales}")


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        if getattr(obj, n) <= 0:
            raise ValueError(f"{n} must be > 0, got {getattr(obj, n)}")


def _nonnegative(obj: Any, *names: str) -> None:
    for n in names:
        if getattr(obj, n) < 0:
            raise ValueError(f"{n} must be >= 0, got {getattr(obj, n)}")


# ---------------------------------------------------------------------------------------------------
# Validation: raw dict -> frozen dataclass, with errors that name the source, the key and the choices.


def from_dict(cls: type, data: dict[str, Any], source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`; raise ConfigError naming `source` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix or 'study'}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1) or [
                f for f in fields if key.startswith(f + "_") or f.startswith(key)
            ]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {where!r}{hint}; allowed keys in "
                f"[{prefix.rstrip('.') or 'study'}]: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, source, where)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(prefix + m for m in missing)}")
    obj = cls(**kwargs)
    try:
        obj.check()
    except ValueError as e:
        raise ConfigError(f"{source}: [{prefix.rstrip('.') or 'study'}] {e}") from None
    return obj


def _coerce(tp: Any, value: Any, source: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{source}: {where!r} must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, where + ".")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(
                f"{source}: {where!r} must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, source, where)
            except ConfigError:
                pass
        raise bad
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (arg,) = typing.get_args(tp)
        return [_coerce(arg, v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp}")  # a bug in a config class, not in the file


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


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
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file") from None
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
    """`train.recipe = "<name>"` (and `clip.train.recipe`): the recipe's table under the study's own keys."""
    out = {**raw, "train": _merge_recipe(raw.get("train"), source, "train")}
    clip = raw.get("clip")
    if isinstance(clip, dict):
        out["clip"] = {**clip, "train": _merge_recipe(clip.get("train"), source, "clip.train")}
    return {k: v for k, v in out.items() if v is not None}


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


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


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
