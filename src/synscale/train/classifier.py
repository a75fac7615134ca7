"""Train one classifier: the loop behind every `train` stage, on one process or many.

- Recipe: `TrainConfig` (see synscale.train.recipes): timm model by name, AdamW with decoupled weight
  decay on weights (not on norms and biases), linear warm-up + cosine decay for the log-scale rule's
  iterations, softmax or binary cross-entropy, Mixup, RandAugment, random crops, flips, gradient
  accumulation up to the global batch.
- Processes: run under `torchrun` (the WORLD_SIZE/RANK/LOCAL_RANK environment) the model is wrapped in
  DistributedDataParallel; each process reads its slice of every global batch. NCCL on CUDA, gloo on CPU.
- CUDA: bf16 autocast (`precision = "bf16"`), channels-last, fused AdamW, optional `torch.compile`.
- Determinism: data order and augmentation are functions of (seed, step) (synscale.train.data); the
  model's own randomness (dropout, stochastic depth) comes from each process's RNG, whose state is in
  every checkpoint. A run killed at any step and resumed from its checkpoint ends with the same weights
  as an uninterrupted run on the same machine and thread count.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.config import TrainConfig
from synscale.train import checkpoint
from synscale.train.data import (
    ArraySource,
    SampleAugment,
    ShardSource,
    StepBatches,
    sample_seed,
    step_generator,
    step_loader,
)
from synscale.train.models import create_model
from synscale.train.schedule import lr_at, total_iters, warmup_iters

KILL_AT_STEP = "SYNSCALE_KILL_AT_STEP"  # testing hook: SIGKILL this process after the given step


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1]."""
    return images_u8.float().div_(127.5).sub_(1.0)


def flip_shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Per-sample random translation by up to `pad` px (zero fill at -1) and horizontal flip."""
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    warmup: int
    losses: list[float]  # mean training loss per logging window (50 steps)
    resumed_from: int = 0  # the step a checkpoint resumed this run at (0: from scratch)
    images_per_s: float = float("nan")  # training throughput after the first step, all processes together


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def _loss(logits: torch.Tensor, targets: torch.Tensor, kind: str, denom: int | None) -> torch.Tensor:
    """Softmax CE (targets: indices or probabilities) or BCE summed over classes; mean over the batch, or
    sum / denom when a batch is split into accumulation steps."""
    if kind == "bce":
        per = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    elif denom is None:
        return nn.functional.cross_entropy(logits, targets)
    else:
        per = nn.functional.cross_entropy(logits, targets, reduction="none")
    return per.mean() if denom is None else per.sum() / denom


def train_classifier(
    images: np.ndarray | None,
    labels: np.ndarray | None,
    num_classes: int,
    cfg: TrainConfig,
    scale: int,
    progress: Any = None,
    source: ArraySource | ShardSource | None = None,
    ckpt_dir: Path | None = None,
) -> TrainResult:
    """Train `cfg.model` for the log-scale rule's iterations at `scale` on `images`/`labels` (in memory)
    or on `source`; with `ckpt_dir`, checkpoint every `cfg.checkpoint_every` steps and resume from the
    newest checkpoint there."""
    dist = Dist.from_env()
    source = source if source is not None else ArraySource(images, labels)
    device = resolve_device(cfg.device, dist.local_rank)
    ddp = dist.world > 1
    if ddp and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.batch_size % (dist.world * cfg.accum_steps):
        raise ValueError(f"train.batch_size {cfg.batch_size} must divide by processes * accum_steps "
                         f"= {dist.world} * {cfg.accum_steps}")

    torch.manual_seed(cfg.seed)  # initial weights: the same on every process
    c, h, _ = source.shape
    model = create_model(cfg.model, num_classes, c, cfg.crop or h, **cfg.model_kwargs)
    if cfg.loss == "bce" and num_classes > 1:  # prior init: sigmoid outputs start at 1/C, not 1/2
        head = model.get_classifier()
        if isinstance(head, nn.Linear) and head.bias is not None:
            nn.init.constant_(head.bias, -math.log(num_classes - 1))
    model = model.to(device, memory_format=torch.channels_last)
    if dist.rank:
        torch.manual_seed(cfg.seed * 1_000_003 + dist.rank)  # each process its own dropout masks
    decay = [p for _, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for _, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=tuple(cfg.betas), **({"fused": True} if device.type == "cuda" else {}),
    )
    steps, warmup = total_iters(scale, cfg.schedule), warmup_iters(scale, cfg.schedule)
    start, losses, window, window_n = 0, [], 0.0, 0
    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        state = checkpoint.load(last, model, opt, dist.rank, device)
        start, losses, window, window_n = state["step"], state["losses"], state["window"], state["window_n"]
        if state.get("world", 1) != dist.world or state.get("total_steps", steps) != steps:
            raise RuntimeError(f"{last}: written by a run with {state.get('world')} process(es) and "
                               f"{state.get('total_steps')} steps; this run has {dist.world} and {steps}")

    net: nn.Module = model
    if ddp:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())

    batch = min(cfg.batch_size, len(source))
    per_sample = SampleAugment(tuple(cfg.randaugment), cfg.crop, cfg.augment == "flip")
    batches = StepBatches(source, batch, cfg.seed, per_sample, dist.rank, dist.world)
    loader = step_loader(batches, start, steps, cfg.workers)
    local_n = batches.local
    split = cfg.accum_steps
    one_hot = cfg.loss == "bce" or cfg.mixup > 0
    kill_at = int(os.environ.get(KILL_AT_STEP, -1))
    window_t = torch.zeros((), device=device, dtype=torch.float64) + window
    t_first, n_after_first = None, 0
    model.train()
    for step, (xb, yb) in zip(range(start, steps), loader, strict=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, steps, warmup)
        if cfg.augment == "flip-shift":  # whole-batch tensor augmentation on the CPU (small images)
            x = flip_shift(normalize(xb), step_generator(cfg.seed, step)).to(device, non_blocking=True)
        else:
            x = normalize(xb.to(device, non_blocking=True))
        x = x.contiguous(memory_format=torch.channels_last)
        y = yb.to(device, non_blocking=True)
        if one_hot:
            y = nn.functional.one_hot(y, num_classes).float()
        if cfg.mixup > 0:
            lam = float(np.random.default_rng(sample_seed(cfg.seed, step, -1)).beta(cfg.mixup, cfg.mixup))
            x = x.mul(lam).add_(x.flip(0), alpha=1 - lam)
            y = y.mul(lam).add_(y.flip(0), alpha=1 - lam)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for j, (xc, yc) in enumerate(zip(x.tensor_split(split), y.tensor_split(split), strict=True)):
            sync = contextlib.nullcontext() if not ddp or j == split - 1 else net.no_sync()
            with sync:
                with autocast:
                    logits = net(xc)
                loss = _loss(logits.float(), yc, cfg.loss, None if split == 1 else local_n)
                loss.backward()
            total += loss.detach()
        opt.step()
        window_t += total
        window_n += 1
        if window_n == 50 or step == steps - 1:
            if ddp:  # log the mean over all processes' batches
                torch.distributed.all_reduce(window_t)
                window_t /= dist.world
            value = window_t.item() / window_n
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} by step {step}; lower train.lr")
            losses.append(value)
            window_t.zero_()
            window_n = 0
        if t_first is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_first = time.perf_counter()
        else:
            n_after_first += batch
        if ckpt_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            _checkpoint(ckpt_dir, step + 1, model, opt, dist, device,
                        {"losses": losses, "window": window_t.item(), "window_n": window_n, "world": dist.world,
                         "total_steps": steps})
        if progress is not None:
            progress.update(1)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ips = n_after_first / (time.perf_counter() - t_first) if t_first and n_after_first else float("nan")
    model.eval()
    return TrainResult(model, steps, warmup, losses, start, ips)


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
