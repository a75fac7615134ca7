"""The training engine: one loop for every task (classification, contrastive), on one process or many.

The engine owns what every training run needs and knows nothing of classes or captions:
- the optimizer (AdamW with decoupled weight decay on weights, not on norms, biases and scalars such as
  CLIP's temperature), the schedule (linear warm-up + cosine decay over the run's steps, which the
  recipe's `schedule` gives per data scale: the log-scale rule or a number of epochs);
- processes: under `torchrun` (the WORLD_SIZE/RANK/LOCAL_RANK environment) the model is wrapped in
  DistributedDataParallel and each process reads its slice of every global batch; NCCL on CUDA, gloo on CPU;
- CUDA: bf16 autocast (`precision = "bf16"`), channels-last, fused AdamW, optional `torch.compile`;
- gradient accumulation up to the global batch (`accum_steps` micro-batches per step);
- checkpoints every `checkpoint_every` steps and kill-and-resume: data order and augmentation are
  functions of (seed, step) (synscale.train.data), and each process's RNG state is in every checkpoint,
  so a run killed at any step and resumed ends with the same weights as an uninterrupted one.

A task (synscale.train.tasks) supplies the model, turns a step's batch into tensors and the tensors into a
loss, as open_clip's loop takes its losses from the model's outputs by name.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from synscale.errors import ConfigError, DataError, ResourceError, UserError
from synscale.train import checkpoint
from synscale.train.config import TrainConfig, check_batch
from synscale.train.data import SampleAugment, StepBatches, sample_seed, step_loader
from synscale.train.schedule import lr_at, run_length

KILL_AT_STEP = "SYNSCALE_KILL_AT_STEP"  # testing hook: SIGKILL this process after the given step
KILL_ONCE = "SYNSCALE_KILL_ONCE"  # with KILL_AT_STEP: a marker file; only the process that creates it is killed
NAN_AT_STEP = "SYNSCALE_NAN_AT_STEP"  # testing hook: the weights become NaN at the given step (a diverged run)
MEMORY_LIMIT = "SYNSCALE_MEMORY_LIMIT_MB"  # testing hook: cap the address space this much above its size at step 0


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or inf; the message names the setting and the checkpoint kept."""
LOG_EVERY = 50  # steps per logged mean training loss


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1]."""
    return images_u8.float().div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """A training process's device (synscale.device.resolve_device: the one rule), its local rank's GPU."""
    from synscale.device import resolve_device as resolve

    return torch.device(resolve(name, local_rank))


class Task(Protocol):
    """What a task gives the engine (synscale.train.tasks has the two that exist)."""

    name: str

    def build_model(self, source: Any, dist: Dist) -> nn.Module:
        """The model, created under the run's seed (the same initial weights on every process)."""

    def targets(self) -> Any:
        """What StepBatches returns beside the images (None: the source's labels; else a picklable
        `fn(source, indices) -> Tensor`)."""

    def inputs(self, images: torch.Tensor, targets: torch.Tensor, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """A step's batch as tensors on the device, batch-first (augmented where the task does it)."""

    def prepare(self, model: nn.Module, chunks: list[tuple[torch.Tensor, ...]], autocast: Any) -> Any:
        """Anything the micro-batches of one step share (computed without gradients), or None."""

    def loss(self, net: nn.Module, chunk: tuple[torch.Tensor, ...], j: int, shared: Any, autocast: Any,
             denom: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to back-propagate for micro-batch j, its share of the step's logged loss)."""

    def after_step(self, model: nn.Module) -> None:
        """After each optimizer step (e.g. clamp a learned temperature)."""


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    warmup: int
    losses: list[float]  # mean training loss per logging window (LOG_EVERY steps)
    resumed_from: int = 0  # the step a checkpoint resumed this run at (0: from scratch)
    images_per_s: float = float("nan")  # training throughput after the first step, all processes together


def optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on weights (ndim > 1), none on norms, biases and scalars."""
    decay = [p for _, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for _, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **({"fused": True} if device.type == "cuda" else {}),
    )


def _start(dist: Dist, cfg: TrainConfig) -> torch.device:
    device = resolve_device(cfg.device, dist.local_rank)
    if dist.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        check_batch(cfg.batch_size, dist.world, cfg.accum_steps)
    except ValueError as e:
        raise ConfigError(f"train.{e}") from None
    return device


@dataclass
class _Log:
    """The logged training loss: the mean over a window of steps (and over all processes)."""

    losses: list[float]
    window: torch.Tensor
    n: int = 0
    ckpt_dir: Path | None = None

    def diverged(self, value: float, step: int) -> TrainingDiverged:
        last = checkpoint.latest(self.ckpt_dir)
        kept = f"; the last good checkpoint ({last}) is kept" if last is not None else ""
        return TrainingDiverged(f"training loss became {value} by step {step + 1}; lower train.lr (or lengthen "
                                f"the warm-up in train.schedule){kept}")

    def check_finite(self, step: int) -> None:
        """Before a checkpoint: the steps since the last logged loss must all be finite."""
        value = self.window.item()
        if not math.isfinite(value):
            raise self.diverged(value, step)

    def shared_window(self, dist: Dist) -> float:
        """The open window's loss sum as a checkpoint keeps it: the mean over the processes (each resumes with it,
        and the mean logged at the window's end is then the uninterrupted run's; rank 0's own sum was kept before)."""
        window = self.window.clone()
        if dist.world > 1:
            torch.distributed.all_reduce(window)
            window /= dist.world
        return window.item()

    def add(self, total: torch.Tensor, step: int, last: bool, dist: Dist) -> bool:
        """Add a step's loss; True when it closed a window (the mean is in losses[-1])."""
        self.window += total
        self.n += 1
        if self.n == LOG_EVERY or last:
            if dist.world > 1:  # log the mean over all processes' batches
                torch.distributed.all_reduce(self.window)
                self.window /= dist.world
            value = self.window.item() / self.n
            if not math.isfinite(value):
                raise self.diverged(value, step)
            self.losses.append(value)
            self.window.zero_()
            self.n = 0
            return True
        return False


def train(task: Task, cfg: TrainConfig, source: Any, scale: int, progress: Any = None,
          ckpt_dir: Path | None = None, events: Any = None) -> TrainResult:
    """Train `task`'s model on `source` for the schedule's steps at data scale `scale`; with `ckpt_dir`,
    checkpoint every `cfg.checkpoint_every` steps and resume from the newest checkpoint there; with `events`
    (synscale.train.events.TrainEvents), log the training loss, learning rate and images/s there."""
    dist = Dist.from_env()
    device = _start(dist, cfg)
    torch.manual_seed(cfg.seed)  # initial weights: the same on every process
    model = task.build_model(source, dist).to(device, memory_format=torch.channels_last)
    if dist.rank:
        torch.manual_seed(cfg.seed * 1_000_003 + dist.rank)  # each process its own dropout masks
    opt = optimizer(model, cfg, device)
    steps, warmup = run_length(scale, cfg)
    start, log = 0, _Log([], torch.zeros((), device=device, dtype=torch.float64))
    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        state = checkpoint.load(last, model, opt, dist.rank, device)
        start, log.losses, log.n = state["step"], state["losses"], state["window_n"]
        log.window += state["window"]
        if state.get("world", 1) != dist.world or state.get("total_steps", steps) != steps:
            raise DataError(f"{last}: written by a run with {state.get('world')} process(es) and "
                            f"{state.get('total_steps')} steps; this run has {dist.world} and {steps}: run it as it "
                            f"was, or delete {ckpt_dir} to train from the start")
    log.ckpt_dir = ckpt_dir
    try:
        clock = _steps(task, cfg, model, opt, source, dist, device, start, steps, warmup, log, progress, ckpt_dir, events)
        if ckpt_dir is not None and dist.rank == 0:  # the epochs' shared orders (EpochOrder) are not kept
            shutil.rmtree(ckpt_dir / "order", ignore_errors=True)
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise _out_of_memory(cfg, device, e) from None
    except RuntimeError as e:
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        raise _out_of_memory(cfg, device, e) from None
    model.eval()
    return TrainResult(model, steps, warmup, log.losses, start, clock.images_per_s())


def _first_to_kill() -> bool:
    """The KILL_AT_STEP hook fires, or (KILL_ONCE) fires only in the process that creates the marker file: a run
    restarted from its checkpoint (Ray Train's retry) then passes the step."""
    marker = os.environ.get(KILL_ONCE)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def device_randaugment(xb: torch.Tensor, cfg: TrainConfig, step: int, rank: int) -> torch.Tensor:
    """This process's share of step `step`'s batch (uint8, on the device) through RandAugment on the device, each
    image drawing from its seed (seed, step, position in the global batch: the loader's draw seeds)."""
    from synscale.train.randaugment import rand_augment

    n = len(xb)
    seeds = np.array([sample_seed(cfg.seed, step, rank * n + p) for p in range(n)], dtype=np.uint64)
    return rand_augment(xb, seeds, cfg.randaugment[0], cfg.randaugment[1])


def _out_of_memory(cfg: TrainConfig, device: torch.device, e: BaseException) -> ResourceError:
    import re

    text = str(e).strip()
    asked = re.search(r"(?:tried to )?allocate ([\d.]+ ?[KMGT]?i?B|\d+ bytes)", text)
    what = f"it asked for {asked.group(1)} more" if asked else (text.splitlines()[0][:120] if text else type(e).__name__)
    return ResourceError(f"out of memory on {device} at train.batch_size = {cfg.batch_size} ({what}); lower "
                         "train.batch_size, or raise train.accum_steps to keep the batch with less memory per step")


def _steps(task: Task, cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer, source: Any, dist: Dist,
           device: torch.device, start: int, steps: int, warmup: int, log: _Log, progress: Any,
           ckpt_dir: Path | None, events: Any) -> _Clock:
    """The training steps from `start` to `steps`; checkpoints (never of a diverged model) on the way."""
    net = _wrap(model, cfg, dist, device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())
    batch = min(cfg.batch_size, len(source))
    on_device = cfg.randaugment_on == "device" and bool(cfg.randaugment)  # RandAugment here, on whole batches
    per_sample = SampleAugment(() if on_device else tuple(cfg.randaugment), cfg.crop, cfg.augment == "flip")
    batches = StepBatches(source, batch, cfg.seed, per_sample, dist.rank, dist.world, targets=task.targets(),
                          order_dir=None if ckpt_dir is None else ckpt_dir / "order")
    kill_at, nan_at = int(os.environ.get(KILL_AT_STEP, -1)), int(os.environ.get(NAN_AT_STEP, -1))
    if os.environ.get(MEMORY_LIMIT):  # a real allocation failure at a batch that does not fit
        import resource

        vm = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        cap = vm + (int(os.environ[MEMORY_LIMIT]) << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    clock = _Clock(device, batch)
    model.train()
    for step, (xb, yb) in zip(range(start, steps), step_loader(batches, start, steps, cfg.workers), strict=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, steps, warmup)
        opt.zero_grad(set_to_none=True)
        if step == nan_at:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        if on_device:
            xb = device_randaugment(xb.to(device, non_blocking=True), cfg, step, dist.rank)
        total = _accumulate(task, net, model, task.inputs(xb, yb, step, device), cfg.accum_steps, batches.local,
                            autocast, dist.world > 1)
        opt.step()
        task.after_step(model)
        logged = log.add(total, step, step == steps - 1, dist)
        clock.tick()
        if logged and events is not None:
            events.log(step + 1, log.losses[-1], opt.param_groups[0]["lr"], clock.images_per_s())
        if ckpt_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            log.check_finite(step)
            _checkpoint(ckpt_dir, step + 1, model, opt, dist, device,
                        {"losses": log.losses, "window": log.shared_window(dist), "window_n": log.n, "world": dist.world,
                         "total_steps": steps})
        if progress is not None:
            progress.update(1)
        if step == kill_at and _first_to_kill():
            os.kill(os.getpid(), signal.SIGKILL)
    return clock


def _wrap(model: nn.Module, cfg: TrainConfig, dist: Dist, device: torch.device) -> nn.Module:
    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def _accumulate(task: Task, net: nn.Module, model: nn.Module, inputs: tuple[torch.Tensor, ...], split: int,
                local_n: int, autocast: Any, ddp: bool) -> torch.Tensor:
    """Forward and backward over `split` micro-batches, gradients synchronised after the last only;
    returns the step's loss (detached)."""
    chunks = list(zip(*(t.tensor_split(split) for t in inputs), strict=True))
    shared = task.prepare(model, chunks, autocast) if split > 1 else None
    total = torch.zeros((), device=inputs[0].device)
    for j, chunk in enumerate(chunks):
        sync = contextlib.nullcontext() if not ddp or j == split - 1 else net.no_sync()
        with sync:
            loss, logged = task.loss(net, chunk, j, shared, autocast, None if split == 1 else local_n)
            loss.backward()
        total += logged
    return total


class _Clock:
    """Training throughput, timed from the end of the first step (which compiles, warms caches)."""

    def __init__(self, device: torch.device, batch: int) -> None:
        self.device, self.batch = device, batch
        self.t_first: float | None = None
        self.n_after_first = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tick(self) -> None:
        if self.t_first is None:
            self._sync()
            self.t_first = time.perf_counter()
        else:
            self.n_after_first += self.batch

    def images_per_s(self) -> float:
        self._sync()
        if not self.t_first or not self.n_after_first:
            return float("nan")
        return self.n_after_first / (time.perf_counter() - self.t_first)


def _checkpoint(ckpt_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, dist: Dist,
                device: torch.device, state: dict[str, Any]) -> None:
    ckpt = ckpt_dir / f"step-{step:08d}"
    if dist.rank == 0:
        checkpoint.save(ckpt_dir, step, model, opt, state)
    if dist.world > 1:
        torch.distributed.barrier()
    checkpoint.save_rng(ckpt, dist.rank, device)
    if dist.world > 1:
        torch.distributed.barrier()
    if dist.rank == 0:
        checkpoint.commit(ckpt_dir, step)
