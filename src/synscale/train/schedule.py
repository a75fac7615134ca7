"""How long to train at data scale D, and the learning rate at each step.

Two rules, chosen by `schedule.kind`, written once here with the study choosing its own constants
(`ScheduleConfig`) so they scale to any study size:

- `log-scale` (the paper's supervised runs, appendix A.1): iterations and warm-up grow linearly in
  log2(D): 95k/10k at 1M, 190k/20k at 2M, 285k/30k at 4M, i.e. iters(D) = 95k * log2(D / 500k).
- `epochs` (the paper's CLIP runs, appendix B.1): the same number of epochs at every scale,
  iters(D) = ceil(epochs * D / batch), with a warm-up that steps up with D (`warmup_by_scale`: 600 steps
  at 1M captions, 1200 at 2M, 2000 from 4M on).

The log-scale rule gives no iterations at or below `zero_scale` (the paper's 500k), yet the paper's figure 3
trains at 0.125M, 0.25M and 0.5M. `min_epochs` is synscale's floor for such scales (the project's choice,
not the paper's): at scales up to 2 * zero_scale, at least ceil(min_epochs * D / batch) steps, with the
rule's warm-up share (warmup_per_doubling / iters_per_doubling) wherever the floor sets the length; above
2 * zero_scale the rule alone. `paper-vit-b16` sets 100
epochs: 3,052 steps at 0.125M, 12,208 at 0.5M; from about 0.55M on the rule is longer and holds.
"""

from __future__ import annotations

import math
from typing import Any

from synscale.errors import ConfigError
from synscale.train.config import ScheduleConfig

PAPER = ScheduleConfig(zero_scale=500_000, iters_per_doubling=95_000, warmup_per_doubling=10_000)


def doublings(scale: int, rule: ScheduleConfig) -> float:
    if scale <= rule.zero_scale:
        raise ConfigError(f"scale {scale} must exceed the rule's zero_scale {rule.zero_scale}")
    return math.log2(scale / rule.zero_scale)


def _epochs(epochs: float, scale: int, batch_size: int) -> int:
    if batch_size <= 0:
        raise ValueError("an epochs rule (kind epochs, or min_epochs) needs the batch size")
    return max(1, math.ceil(epochs * scale / batch_size - 1e-9))


def _floored(scale: int, rule: ScheduleConfig, batch_size: int) -> bool:
    """Whether the min_epochs floor, not the log-scale rule, sets the run's length: only up to the first
    doubling above zero_scale, where the rule gives few or no iterations (above, the rule alone holds; a floor
    linear in D would otherwise overtake the logarithmic rule again at large scales)."""
    if not rule.min_epochs or scale > 2 * rule.zero_scale:
        return False
    rule_iters = round(rule.iters_per_doubling * doublings(scale, rule)) if scale > rule.zero_scale else 0
    if rule_iters and batch_size <= 0:  # no batch size given: the rule, where it gives iterations
        return False
    return _epochs(rule.min_epochs, scale, batch_size) > rule_iters


def total_iters(scale: int, rule: ScheduleConfig, batch_size: int = 0) -> int:
    """Optimizer steps at data scale `scale` (`batch_size`: the global batch, for the `epochs` rule and the
    `min_epochs` floor)."""
    if rule.kind == "epochs":
        return _epochs(rule.epochs, scale, batch_size)
    if _floored(scale, rule, batch_size):
        return _epochs(rule.min_epochs, scale, batch_size)
    return max(1, round(rule.iters_per_doubling * doublings(scale, rule)))


def warmup_iters(scale: int, rule: ScheduleConfig, batch_size: int = 0) -> int:
    total = total_iters(scale, rule, batch_size)
    if rule.kind == "epochs":
        return min(total - 1, scale_table(rule.warmup_by_scale, scale))
    if _floored(scale, rule, batch_size):
        return min(total - 1, round(total * rule.warmup_per_doubling / rule.iters_per_doubling))
    return min(total - 1, round(rule.warmup_per_doubling * doublings(scale, rule)))


def scale_table(table: list[list[int]], scale: int) -> int:
    """The value of the row with the largest threshold <= scale (the first row's below all of them)."""
    rows = sorted((int(t), int(v)) for t, v in table)
    if not rows:
        return 0
    return next((v for t, v in reversed(rows) if t <= scale), rows[0][1])


def run_length(scale: int, train: Any) -> tuple[int, int]:
    """(steps, warm-up steps) of a training run of `train` (a TrainConfig) at data scale `scale`."""
    batch = min(train.batch_size, scale)
    return total_iters(scale, train.schedule, batch), warmup_iters(scale, train.schedule, batch)


def samples_seen(scale: int, train: Any) -> int:
    """Samples through the model in a run of `train` at data scale `scale` (its steps times the batch, which is at
    most the scale): the one formula of the plan's estimates, the dry run's table and the results tables."""
    return samples_of(run_length(scale, train)[0], train.batch_size, scale)


def samples_of(steps: int, batch_size: int, scale: int) -> int:
    """Samples through the model in `steps` steps of batches of `batch_size` (at most `scale`) images."""
    return steps * min(batch_size, scale)


def floored(scale: int, train: Any) -> bool:
    """Whether `train`'s min_epochs floor, not its log-scale rule, sets the run's length at `scale`."""
    return train.schedule.kind == "log-scale" and _floored(scale, train.schedule, min(train.batch_size, scale))


def lr_at(step: int, base_lr: float, total: int, warmup: int) -> float:
    """Linear warm-up to `base_lr`, then cosine decay to zero at `total` (step counts from 0)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
