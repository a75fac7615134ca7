"""The contrastive task: CLIP (open_clip) trained on image-text pairs, and its zero-shot evaluation.

Training (paper section 5, appendix B.1): any open_clip architecture by config name
(`open_clip.create_model(name, pretrained=None)`; synscale registers `synscale-clip-mini`, a ViT with
4-px patches on 28-px images and a 2-layer text transformer, for the CPU miniature), the symmetric
InfoNCE loss of `open_clip.ClipLoss` with the model's learned temperature (clamped to at most 100, as
open_clip does). Under torchrun every process's features are gathered with their gradients and each
process takes the loss of its own rows against all columns (`local_loss`), which adds up to the loss of
the whole global batch, so 2 processes train the model 1 process does.

Gradient accumulation cannot simply add micro-batch losses here: every pair's loss depends on every
other pair of the step. As open_clip does, the step's features are first computed without gradients;
then each micro-batch is run again with gradients and its features put in place of its cached ones,
so each backward pass gives that micro-batch's exact share of the full batch's gradient. The learned
temperature enters every pass's loss whole, so each pass takes 1/accum_steps of its gradient (open_clip's
loop counts it accum_steps times). (A model with dropout draws other masks in the two passes; the shipped
recipes use none.)

Captions become tokens in the loader (`CaptionTokens`, open_clip's tokenizer for the model). Images of
one channel are repeated to the three a CLIP vision tower takes.

Zero-shot (appendix B.3): a class's text feature is the mean of the L2-normalised text features of every
template filled with its name, normalised again (as `open_clip.build_zero_shot_classifier`); an image's
logits are tau * cos(image feature, class feature) with the model's learned tau, so the evaluation's
cross-entropy is the paper's zero-shot loss -log softmax(tau * sim).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.errors import ConfigError, DataError
from synscale.train.config import TrainConfig
from synscale.train.engine import Dist
from synscale.train.tasks import TASKS

CONFIG_DIR = Path(__file__).parent / "clip_configs"
MAX_LOGIT_SCALE = math.log(100.0)


@functools.cache
def _registered() -> None:
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)


def model_names() -> list[str]:
    import open_clip

    _registered()
    return open_clip.list_models()


class _NoRandomInitNotice(logging.Filter):
    """open_clip logs a warning that a model without pretrained weights is initialised randomly: synscale
    always trains from scratch, so that is no news to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_clip(name: str, **kwargs: Any) -> nn.Module:
    """An open_clip model by config name, randomly initialised (nothing is downloaded)."""
    import open_clip

    names = model_names()
    if name not in names:
        stem = name.split("-")[0].lower()
        close = [n for n in names if n.lower().startswith(stem)][:8]
        raise ConfigError(f"unknown open_clip model {name!r}; similar: {', '.join(close) or 'none'} "
                         f"(open_clip.list_models() has them all)")
    quiet = _NoRandomInitNotice()
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(name, pretrained=None, pretrained_text=False, output_dict=True, **kwargs)
    finally:
        logging.getLogger().removeFilter(quiet)


@functools.cache
def tokenizer(name: str) -> Any:
    import open_clip

    _registered()
    return open_clip.get_tokenizer(name)


class CaptionTokens:
    """StepBatches' targets for CLIP: the tokens of each drawn sample's caption. Each caption is tokenized once
    per process and kept while it is among the `cache_size` most recently used (train.token_cache; web-scale
    sets rarely repeat a caption, so a large cache only costs memory in every loader worker)."""

    def __init__(self, model: str, cache_size: int = 65536) -> None:
        from synscale.lru import LRU

        self.model, self.cache_size = model, cache_size
        self._cache: LRU[str, torch.Tensor] = LRU(cache_size)

    def __getstate__(self) -> dict[str, Any]:
        from synscale.lru import LRU

        return {**self.__dict__, "_cache": LRU(self.cache_size)}

    def __call__(self, source: Any, idx: np.ndarray) -> torch.Tensor:
        texts = list(source.texts[idx])
        batch = {t: self._cache.get(t) for t in dict.fromkeys(texts)}  # read before anything is added or dropped
        new = [t for t, tok in batch.items() if tok is None]
        if new:
            batch.update(zip(new, tokenizer(self.model)(new), strict=True))
            for t in new:
                self._cache.put(t, batch[t])
        return torch.stack([batch[t] for t in texts])


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Grayscale images repeated to the three channels CLIP's vision tower takes."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last)


@TASKS.register("contrastive")
@dataclass
class ContrastiveTask:
    cfg: TrainConfig
    num_classes: int = 0  # unused: CLIP has no classes
    name: str = "contrastive"
    _loss: Any = field(default=None, repr=False)

    def build_model(self, source: Any, dist: Dist) -> nn.Module:
        from open_clip import ClipLoss

        if source.texts is None:
            raise DataError("contrastive training needs captions: the training set has no `caption` (or `prompt`) column")
        model = create_clip(self.cfg.model, **self.cfg.model_kwargs)
        side = self.cfg.crop or source.shape[1]
        want = model.visual.image_size
        want = want[0] if isinstance(want, tuple | list) else want
        if want != side:
            raise ConfigError(f"open_clip model {self.cfg.model} takes {want}-px images, the training images are "
                             f"{side} px: set clip.train.model_kwargs = {{ force_image_size = {side} }}, or resize "
                             f"the pairs (clip.pairs.image_size) or crop them (clip.train.crop) to {want}")
        self._loss = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=dist.rank,
                              world_size=dist.world)
        return model

    def targets(self) -> CaptionTokens:
        return CaptionTokens(self.cfg.model, self.cfg.token_cache)

    def inputs(self, xb: torch.Tensor, tokens: torch.Tensor, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        from synscale.train.augment import batch_images

        return to_rgb(batch_images(xb, self.cfg, step, device)), tokens.to(device, non_blocking=True)

    def prepare(self, model: nn.Module, chunks: list[tuple[torch.Tensor, ...]], autocast: Any) -> tuple[list, list]:
        """Every micro-batch's features without gradients (gradient accumulation, see the module docstring)."""
        images, texts = [], []
        with torch.no_grad(), autocast:
            for x, t in chunks:
                out = model(x, t)
                images.append(out["image_features"].float())
                texts.append(out["text_features"].float())
        return images, texts

    def loss(self, net: nn.Module, chunk: tuple[torch.Tensor, ...], j: int, shared: Any, autocast: Any,
             denom: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, t = chunk
        with autocast:
            out = net(x, t)
        img, txt, scale = out["image_features"].float(), out["text_features"].float(), out["logit_scale"].float()
        parts = 1
        if shared is not None:
            images, texts = shared
            img = torch.cat([*images[:j], img, *images[j + 1:]])
            txt = torch.cat([*texts[:j], txt, *texts[j + 1:]])
            parts = len(images)
            # the temperature enters every pass's loss, not one micro-batch's share of it: each pass gives
            # 1/parts of its gradient, so the step's sum is the full batch's (the value is unchanged)
            scale = scale.detach() + (scale - scale.detach()) / parts
        loss = self._loss(img, txt, scale)
        return loss, loss.detach() / parts  # every micro-batch's pass computes the whole step's loss

    def after_step(self, model: nn.Module) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def meta(self, source: Any) -> dict[str, Any]:
        return {"num_classes": 0, "captions": len(source)}


# ---------------------------------------------------------------------------------------------------
# Zero-shot evaluation


def zero_shot_names(names: Sequence[str], wnids: Sequence[str] | None = None) -> list[str]:
    """Class names to put into the templates: a class named by its WordNet id (ImageNet folders without
    classnames.txt) gets its ImageNet-1k name as open_clip has it."""
    from synscale.labels import WNID

    if not any(WNID.match(n) for n in names):
        return list(names)
    from synscale.labels import named_label_set

    imagenet = named_label_set("imagenet")
    by_wnid = dict(zip(imagenet.wnids or (), imagenet.names, strict=True))
    return [by_wnid.get(n, n) for n in names]


@torch.no_grad()
def class_text_features(model: nn.Module, model_name: str, names: Sequence[str], templates: Sequence[Any],
                        device: torch.device | str = "cpu", classes_per_batch: int = 50) -> torch.Tensor:
    """(C, d) class features: per class, the L2-normalised text feature of every template, averaged and
    normalised again."""
    tok = tokenizer(model_name)
    model = model.eval().to(device)
    out = []
    for start in range(0, len(names), classes_per_batch):
        batch = names[start : start + classes_per_batch]
        texts = [t.format(c) if isinstance(t, str) else t(c) for c in batch for t in templates]
        feats = model.encode_text(tok(texts).to(device), normalize=True).float()
        mean = feats.view(len(batch), len(templates), -1).mean(1)
        out.append(mean / mean.norm(dim=1, keepdim=True))
    return torch.cat(out)


class ZeroShotClassifier(nn.Module):
    """A CLIP image tower with class text features as its head: logits = tau * cos(image, class)."""

    def __init__(self, clip: nn.Module, class_features: torch.Tensor) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("weight", class_features.float())
        self.num_classes = len(class_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.clip.encode_image(to_rgb(x), normalize=True).float()
        return self.clip.logit_scale.exp().float() * feats @ self.weight.T


class ClipImageTower(nn.Module):
    """A CLIP model's image tower with timm's feature interface (forward_features / forward_head /
    get_classifier, no classes), so that linear probes and feature metrics read it as a classifier's."""

    num_classes = 0

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(to_rgb(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
