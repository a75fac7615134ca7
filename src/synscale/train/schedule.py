"""How long to train at data scale D, and the learning rate at each step.

Paper, appendix A.1: iterations and warm-up grow linearly in log2(D): 95k/10k at 1M, 190k/20k at
2M, 285k/30k at 4M, i.e. iters(D) = 95k * log2(D / 500k). The rule is written once here, with the
study choosing its own constants (`ScheduleConfig`) so it scales to any study size.
"""

from __future__ import annotations

import math

from synscale.config import ScheduleConfig

PAPER = ScheduleConfig(zero_scale=500_000, iters_per_doubling=95_000, warmup_per_doubling=10_000)


def doublings(scale: int, rule: ScheduleConfig) -> float:
    if scale <= rule.zero_scale:
        raise ValueError(f"scale {scale} must exceed the rule's zero_scale {rule.zero_scale}")
    return math.log2(scale / rule.zero_scale)


def total_iters(scale: int, rule: ScheduleConfig) -> int:
    return max(1, round(rule.iters_per_doubling * doublings(scale, rule)))


def warmup_iters(scale: int, rule: ScheduleConfig) -> int:
    return min(total_iters(scale, rule) - 1, round(rule.warmup_per_doubling * doublings(scale, rule)))


def lr_at(step: int, base_lr: float, total: int, warmup: int) -> float:
    """Linear warm-up to `base_lr`, then cosine decay to zero at `total` (step counts from 0)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
