"""`[train]` and `[clip.train]`: a training recipe and its schedule, as typed, validated configs (no torch).
The study config (synscale.config) holds them; the training engine reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from synscale.schema import nonnegative as _nonnegative
from synscale.schema import positive as _positive
from synscale.schema import identity, in_id_if_changed, not_in_id


def check_batch(batch_size: int, processes: int, accum_steps: int, processes_name: str = "processes") -> None:
    """The batch splits evenly over the processes and the accumulation steps (the one rule: the recipe's nproc is
    checked when the file is read, the processes a launch really has when training starts); ValueError if not."""
    if batch_size % (processes * accum_steps):
        raise ValueError(f"batch_size {batch_size} must divide by {processes_name} * accum_steps = {processes} * "
                         f"{accum_steps}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Training length linear in log2(D) (paper appendix A.1): iters(D) = per_doubling * log2(D / zero_scale).

    The paper's points (95k/10k at 1M, 190k/20k at 2M, 285k/30k at 4M) are zero_scale = 500k,
    iters_per_doubling = 95k, warmup_per_doubling = 10k. A study scales the rule to its own size.
    """

    zero_scale: int = 500_000
    iters_per_doubling: float = 95_000.0
    warmup_per_doubling: float = 10_000.0
    kind: Literal["log-scale", "epochs"] = in_id_if_changed("log-scale")
    # kind = "epochs" (CLIP, appendix B.1): ceil(epochs * D / batch) steps at every scale D, warm-up from
    # the table [[threshold D, steps], ...] (the row with the largest threshold <= D; the first below all)
    epochs: float = in_id_if_changed(32.0)
    warmup_by_scale: list[list[int]] = in_id_if_changed(factory=list)
    # kind = "log-scale": at least ceil(min_epochs * D / batch) steps at scales D up to 2 * zero_scale (0 = no
    # floor), so scales at or below zero_scale train too (synscale's choice, not the paper's: synscale.train.schedule)
    min_epochs: float = in_id_if_changed(0.0)

    def check(self) -> None:
        _positive(self, "zero_scale", "iters_per_doubling", "epochs")
        _nonnegative(self, "warmup_per_doubling", "min_epochs")
        if self.warmup_per_doubling >= self.iters_per_doubling:
            raise ValueError("warmup_per_doubling must be smaller than iters_per_doubling")
        if any(len(r) != 2 or min(r) < 0 for r in self.warmup_by_scale):
            raise ValueError(f"warmup_by_scale must be [[scale, warm-up steps], ...] of non-negative integers, "
                             f"got {self.warmup_by_scale}")

    def check_scales(self, scales: list[int], table: str) -> None:
        """The log-scale rule gives scales at or below zero_scale no iterations (`table`: train or clip.train)."""
        if self.kind == "log-scale" and not self.min_epochs and scales and min(scales) <= self.zero_scale:
            raise ValueError(f"the smallest scale ({min(scales)}) must exceed {table}.schedule.zero_scale "
                             f"({self.zero_scale}): the log-scale rule gives it no iterations (or set {table}.schedule.min_epochs, a floor)")


@dataclass(frozen=True)
class TrainConfig:
    """`[train]` (and `[clip.train]`): a training recipe (see docs/training.md, docs/clip.md). `recipe` names
    a shipped recipe (synscale.train.recipes: `paper-vit-b16`, `miniature-cnn`, `miniature-vit`,
    `paper-clip-s`, `paper-clip-l`, `miniature-clip`) whose values are the defaults of this table; keys
    written here override them. `task` says what is trained: a classifier (a timm model) or CLIP (an
    open_clip model)."""

    recipe: str = not_in_id("")  # its values are in the other keys
    task: Literal["classification", "contrastive"] = in_id_if_changed("classification")
    model: str = "synscale_cnn_small"  # a timm model name (classification) or an open_clip config name (contrastive)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model (drop_rate, ...)
    batch_size: int = 256  # global batch: images per optimizer step over all processes
    accum_steps: int = 1  # gradient accumulation: each process runs batch_size / (processes * accum_steps) at once
    lr: float = 3e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = in_id_if_changed(1e-8)  # AdamW epsilon
    loss: Literal["ce", "bce"] = "ce"  # softmax cross-entropy, or sigmoid binary cross-entropy (summed over classes)
    mixup: float = 0.0  # Mixup alpha (0 = off): one Beta(alpha, alpha) draw per step, batch mixed with its reverse
    randaugment: list[int] = field(default_factory=list)  # [num_ops, magnitude], e.g. [2, 15]; [] = off
    # where RandAugment runs: loader (timm's PIL ops per image in the loader processes) or device (the same ops
    # on a whole batch where the model trains: synscale.train.randaugment; frees the loader's cores)
    randaugment_on: Literal["loader", "device"] = in_id_if_changed("loader")
    crop: int = 0  # train on random crop x crop patches, evaluate on the centre crop; 0 = full images
    augment: Literal["none", "flip", "flip-shift"] = "flip-shift"  # flip: random horizontal flip only
    eval_batch_size: int = 1000
    seed: int = 0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Where and how it runs. loader, workers, checkpoint_every, tensorboard and token_cache do not change what is
    # computed, so they are in no stage id; the others can change the numbers in the last bits or more.
    nproc: int = 1  # processes (GPUs) per machine of a training run; > 1 launches torchrun with DistributedDataParallel
    # machines of one training run: > 1 runs nproc processes on each through Ray Train's TorchTrainer on the Ray
    # cluster (synscale.train.ray_train; NCCL on GPUs, gloo on CPUs); the run's out directory must be shared storage
    nodes: int = in_id_if_changed(1)
    device: str = "auto"  # auto (cuda if there) | cpu | cuda
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast (CUDA, or CPU)
    compile: bool = False  # torch.compile the model
    loader: Literal["auto", "memory", "stream"] = not_in_id("auto")  # memory: decoded arrays; stream: shards in workers
    workers: int = not_in_id(0)  # loader worker processes (stream); 0 = decode in the training process
    checkpoint_every: int = not_in_id(500)  # steps between resumable checkpoints (safetensors + JSON); 0 = none
    tensorboard: bool = not_in_id(True)  # TensorBoard events beside the model (where the tensorboard package is installed)
    token_cache: int = not_in_id(65536)  # CLIP: captions whose tokens each loader process keeps (least recently used first out)

    def check(self) -> None:
        _positive(self, "batch_size", "lr", "eval_batch_size", "accum_steps", "nproc", "nodes", "eps")
        _nonnegative(self, "weight_decay", "mixup", "crop", "workers", "checkpoint_every", "token_cache", "seed")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas must be two numbers in [0, 1)")
        if self.randaugment and (len(self.randaugment) != 2 or self.randaugment[0] < 1 or not 0 <= self.randaugment[1] <= 30):
            raise ValueError(f"randaugment must be [num_ops >= 1, magnitude 0..30] or [], got {self.randaugment}")
        check_batch(self.batch_size, self.nproc * self.nodes, self.accum_steps, "nproc * nodes")
        if self.randaugment_on == "device" and self.augment == "flip-shift":
            raise ValueError("randaugment_on = 'device' runs after the loader's crop and flip: set augment = 'flip' or "
                             "'none' (flip-shift is the small images' augmentation on the CPU)")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


def rank_resources(train: TrainConfig) -> dict[str, float]:
    """What one process (rank) of a training run holds on its machine: a CPU for itself and each of its loader
    workers (all busy at once), and a GPU unless the run is on the CPU."""
    return {"CPU": float(train.workers + 1), "GPU": 0.0 if train.device == "cpu" else 1.0}


def train_identity(train: TrainConfig) -> dict[str, Any]:
    """`[train]` as it enters stage ids (synscale.schema.identity: each key by its declared rule)."""
    out = identity(train)
    if train.task == "contrastive" and train.accum_steps > 1:
        # CLIP trained with accumulation before its temperature got the full batch's gradient (not accum_steps
        # times it) is another model: such stages are trained again, every other id stays
        out["temperature_gradient"] = "full-batch"
    return out
