"""Training tasks by name (`train.task`): what a model is, how a batch becomes a loss, and how a trained
model is evaluated. The engine (synscale.train.engine) runs every task's loop.

- `classification` (synscale.train.classifier): a timm classifier, softmax or binary cross-entropy.
- `contrastive` (synscale.train.clip): an open_clip CLIP model, the symmetric InfoNCE loss with a learned
  temperature, zero-shot evaluation.
"""

from __future__ import annotations

import importlib
from typing import Any

from synscale.registry import Registry

TASKS: Registry = Registry("training task")

# Tasks live in modules with heavy imports; they register when first needed.
TASK_MODULES = {"classification": "synscale.train.classifier", "contrastive": "synscale.train.clip"}


def create_task(cfg: Any, **info: Any) -> Any:
    """The task of `cfg.task` (a TrainConfig); `info`: what the task needs to know of the data
    (classification: num_classes)."""
    if cfg.task not in TASKS and cfg.task in TASK_MODULES:
        importlib.import_module(TASK_MODULES[cfg.task])
    return TASKS.create(cfg.task, cfg, **info)
