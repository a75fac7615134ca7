"""The reference network that metrics read images through, and batched, cached feature extraction.

A reference is one of:
- `trained`: the study's own recipe trained on its whole real training set (a cached train stage);
  for Fashion-MNIST a small CNN with about 92% test accuracy.
- `timm:<name>`: a pretrained timm model, e.g. `timm:vit_base_patch16_224.augreg2_in21k_ft_in1k`, as the
  paper's ViT-B. Weights come from the local Hugging Face cache (or are downloaded with
  `metrics.allow_download = true`).
- a local checkpoint: a synscale train-stage directory (`model.safetensors` + `train.json`) or a
  `.safetensors`/`.pth` file of a timm architecture named by `metrics.reference_arch`.

Features are the network's pre-logit features (what `forward_head(..., pre_logits=True)` returns), logits
its class scores restricted to the study's classes (by WordNet id when the network is an ImageNet
classifier and the study a subset of ImageNet), and feature maps the outputs of its stages
(`forward_intermediates`) for the LPIPS-style distance. On CUDA the network runs under bf16 autocast,
channels-last, optionally compiled; decoding runs in DataLoader workers when images are not cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synscale.atomic import read_json
from synscale.errors import ConfigError, DataError


@dataclass
class Reference:
    name: str  # identifies the weights, for stage ids
    model: nn.Module
    input_size: int
    in_chans: int
    mean: tuple[float, ...] | None  # None: synscale's own [-1, 1] normalisation
    std: tuple[float, ...] | None
    class_index: list[int] | None  # the model output of each study class; None = the same order
    device: torch.device
    autocast: torch.dtype | None
    compiled: Any = None  # the compiled forward pass (load_reference's compile, on CUDA)
    # the normalisation and the class index as tensors on the device, made once (not per batch: each copy from
    # host memory is a wait on the device)
    _on_device: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast == torch.bfloat16 else "fp32"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the network's input: channels, size and normalisation."""
        x = x.to(self.device, non_blocking=True).float()
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        if self.mean is None:
            x = x / 127.5 - 1.0
        else:
            x = (x / 255.0 - self._tensor("mean", self.mean)) / self._tensor("std", self.std)
        return x.contiguous(memory_format=torch.channels_last)

    def _tensor(self, name: str, values: Any) -> torch.Tensor:
        if name not in self._on_device:
            t = torch.tensor(values, device=self.device)
            self._on_device[name] = t.view(1, -1, 1, 1) if name in ("mean", "std") else t
        return self._on_device[name]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-logit features and all the network's logits of a prepared batch (what `compiled` compiles: the
        methods called here are not the module's forward, so compiling the module compiled none of them)."""
        pre = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return pre, self.model.get_classifier()(pre)

    def _autocast(self) -> Any:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-logit features and study-class logits (float32) of a uint8 batch."""
        with self._autocast():
            pre, logits = (self.compiled or self.forward)(self.prepare(x))
        logits = logits.float()
        if self.class_index is not None:
            logits = logits.index_select(1, self._tensor("class_index", self.class_index))
        return pre.float().flatten(1), logits

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The network's intermediate feature maps (float32, N x C x H x W each)."""
        with self._autocast():
            maps = self.model.forward_intermediates(self.prepare(x), intermediates_only=True)
        return [m.float() for m in maps]


def pick_device(device: str) -> torch.device:
    from synscale.device import resolve_device

    return torch.device(resolve_device(device))


def load_reference(spec: str, arch: str, n_classes: int, wnids: tuple[str, ...] | None, device: str = "auto",
                   compile: bool = False, allow_download: bool = False, trained: Any = None,
                   train_cfg: dict[str, Any] | None = None) -> Reference:
    """The reference network of `metrics.reference` (see the module docstring). `trained`: the train
    stage of the "trained" reference and `train_cfg` its recipe."""
    dev = pick_device(device)
    if spec == "trained":
        if trained is None:
            raise ConfigError("the 'trained' reference needs its train stage")
        ref = _synscale_model(trained.path, train_cfg or {}, f"trained:{trained.id}")
    elif spec.startswith("timm:"):
        ref = _timm_pretrained(spec[len("timm:"):], allow_download)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"metrics.reference {spec!r}: no such checkpoint (file or synscale train directory)")
        ref = _synscale_model(path, train_cfg or {}, None) if path.is_dir() else _checkpoint(path, arch)
    ref.class_index = _class_index(ref.model, n_classes, wnids, ref.name)
    ref.device = dev
    ref.model = ref.model.to(dev).eval().to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        ref.autocast = torch.bfloat16
        if compile:
            ref.compiled = torch.compile(ref.forward)
    return ref


def _synscale_model(stage_dir: Path, train_cfg: dict[str, Any], name: str | None) -> Reference:
    from synscale.train.models import load_trained

    meta_path = stage_dir / "train.json"
    if not meta_path.exists() or not (stage_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"{stage_dir} is not a synscale train directory (model.safetensors + train.json)")
    meta = read_json(meta_path)
    if not train_cfg:
        info = read_json(stage_dir / "stage.json", default={})
        train_cfg = info.get("params", {}).get("train", {})
    if "model" not in train_cfg:
        raise DataError(f"{stage_dir}: cannot tell which model it holds (no stage.json with the train config)")
    model, meta = load_trained(stage_dir, train_cfg)
    if train_cfg.get("task") == "contrastive":  # a CLIP model: its image tower, read like a classifier's features
        from synscale.train.clip import ClipImageTower

        model = ClipImageTower(model)
    name = name or f"file:{_sha(stage_dir / 'model.safetensors')}"
    size = meta.get("model_img_size", meta["img_size"])
    return Reference(name, model, size, meta["in_chans"], None, None, None, torch.device("cpu"), None)


def _timm_pretrained(name: str, allow_download: bool) -> Reference:
    import timm
    from huggingface_hub import hf_hub_download

    model = timm.create_model(name, pretrained=False)
    hub_id = model.pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        raise ConfigError(f"timm:{name} names no Hugging Face weights; give a checkpoint file with metrics.reference_arch")
    try:
        file = hf_hub_download(hub_id, model.pretrained_cfg.get("hf_hub_filename") or "model.safetensors",
                               local_files_only=not allow_download)
    except Exception as e:  # huggingface_hub raises several kinds for a missing cache entry
        raise FileNotFoundError(
            f"no local weights for timm:{name} ({hub_id}) in the Hugging Face cache; download them once "
            f"(metrics.allow_download = true) or give a checkpoint file: {type(e).__name__}") from None
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": file})
    return _timm_reference(f"timm:{name}", model)


def _checkpoint(path: Path, arch: str) -> Reference:
    import timm

    if not arch:
        raise ConfigError(f"metrics.reference is the file {path}: set metrics.reference_arch to its timm architecture")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    model = timm.create_model(arch, pretrained=False)
    head = f"{model.pretrained_cfg.get('classifier', 'head')}.weight"
    if head in state and state[head].shape[0] != model.num_classes:
        model = timm.create_model(arch, pretrained=False, num_classes=state[head].shape[0])
    model.load_state_dict(state)
    return _timm_reference(f"file:{_sha(path)}", model)


def _timm_reference(name: str, model: nn.Module) -> Reference:
    cfg = model.pretrained_cfg
    c, h, _ = cfg.get("input_size", (3, 224, 224))
    return Reference(name, model, int(h), int(c), tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                     tuple(cfg.get("std", (0.229, 0.224, 0.225))), None, torch.device("cpu"), None)


def _class_index(model: nn.Module, n_classes: int, wnids: tuple[str, ...] | None, name: str) -> list[int] | None:
    """Which model output each study class reads: the same order when the counts agree, else by WordNet id."""
    out = getattr(model, "num_classes", n_classes)
    if out == n_classes:
        return None
    if wnids is None:
        raise ConfigError(f"reference {name} has {out} classes and the study {n_classes}; without WordNet ids in "
                         "the label set synscale cannot map them")
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        raise ConfigError(f"reference {name} ({out} classes) is not an ImageNet classifier timm knows")
    known = {w: i for i, w in enumerate(ImageNetInfo(subset).label_names())}
    missing = [w for w in wnids if w not in known]
    if missing:
        raise ConfigError(f"reference {name} does not know {len(missing)} study classes, e.g. {missing[:3]}")
    return [known[w] for w in wnids]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Extraction


@dataclass
class Features:
    feats: np.ndarray  # (N, D) float32 pre-logit features
    logits: np.ndarray  # (N, classes) float32
    labels: np.ndarray  # (N,) int64
    keys: list[str]


def iter_batches(set_dir: Path, keys: list[str] | None, batch_size: int, workers: int) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """(keys, uint8 images, labels) batches: from the set's decoded array cache when it has one, else
    decoded from its shards in `workers` DataLoader processes (order differs from `keys` then)."""
    from synscale.data.shards import array_cache, load_arrays

    if workers == 0 or array_cache(set_dir) is not None:
        images, labels, ks = load_arrays(set_dir, keys)
        for i in range(0, len(ks), batch_size):
            yield ks[i : i + batch_size], torch.from_numpy(np.array(images[i : i + batch_size])), torch.from_numpy(np.array(labels[i : i + batch_size]))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_ShardImages(set_dir, keys), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, pin_memory=torch.cuda.is_available(), persistent_workers=False)
    yield from loader


class _ShardImages(torch.utils.data.IterableDataset):
    """A set's samples decoded from its shards; DataLoader worker w of n decodes every n-th sample (the
    others' bytes are skipped), so the work splits evenly however few shards there are."""

    def __init__(self, set_dir: Path, keys: list[str] | None) -> None:
        from synscale.data.shards import read_manifest

        self.set_dir, self.keys = set_dir, (set(keys) if keys is not None else None)
        counts = read_manifest(set_dir).groupby("shard", sort=False).size()
        self.shards = list(counts.index)
        self.offsets = np.concatenate([[0], np.cumsum(counts.to_numpy())[:-1]]).tolist()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, int]]:
        from synscale.data.shards import decode_png, iter_tar_samples, stored_image

        info = torch.utils.data.get_worker_info()
        w, n = (0, 1) if info is None else (info.id, info.num_workers)
        for shard, offset in zip(self.shards, self.offsets, strict=True):
            for key, files in iter_tar_samples(self.set_dir / shard, lambda i, o=offset: (o + i) % n == w):
                if self.keys is None or key in self.keys:
                    img = decode_png(stored_image(files)[1])
                    yield key, (img[..., None] if img.ndim == 2 else img), int(json.loads(files["json"])["label"])


def _collate(batch: list[tuple[str, np.ndarray, int]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Stacks (H, W, C) images as decoded (a plain copy) and hands them on as an (N, C, H, W) view: the
    transpose is left to the device."""
    first = batch[0][1]
    images = torch.empty((len(batch), *first.shape), dtype=torch.uint8)
    if torch.utils.data.get_worker_info() is not None:  # fill shared memory directly: no second copy to send it
        images.share_memory_()
    out = images.numpy()
    for i, b in enumerate(batch):
        out[i] = b[1]
    images = images.permute(0, 3, 1, 2)
    return [b[0] for b in batch], images, torch.tensor([b[2] for b in batch])


DRAIN_EVERY = 20_000  # images whose outputs wait on the device before one copy back


def extract(ref: Reference, set_dir: str | Path, keys: list[str] | None = None, batch_size: int = 500,
            workers: int | None = None, progress: bool = True) -> Features:
    """Features and logits of a set (or of `keys` of it, returned in that order)."""
    from synscale.data.shards import read_manifest
    from synscale.progress import bar

    set_dir = Path(set_dir)
    total = len(keys) if keys is not None else len(read_manifest(set_dir))
    workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if workers is None else workers
    out_keys, feats, logits, labels = [], [], [], []
    if total == 0:  # e.g. a class-disjoint sample that the set is too small for
        return Features(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [])
    on_device: list[tuple[torch.Tensor, torch.Tensor]] = []

    def drain() -> None:  # outputs stay on the device for a while: no sync per batch, the loader keeps up
        for f, lg in on_device:
            feats.append(f.cpu().numpy())
            logits.append(lg.cpu().numpy())
        on_device.clear()

    with bar(total=total, desc=f"features {set_dir.name}", unit="img", disable=not progress) as pbar:
        for ks, x, y in iter_batches(set_dir, keys, batch_size, workers):
            on_device.append(ref.embed(x))
            out_keys += ks
            labels.append(y.numpy())
            pbar.update(len(ks))
            if len(on_device) * batch_size >= DRAIN_EVERY:
                drain()
    drain()
    out = Features(np.concatenate(feats), np.concatenate(logits), np.concatenate(labels).astype(np.int64), out_keys)
    if keys is not None and out_keys != list(keys):
        pos = {k: i for i, k in enumerate(out_keys)}
        order = np.array([pos[k] for k in keys])
        out = Features(out.feats[order], out.logits[order], out.labels[order], list(keys))
    return out


CONTENT_HASH_LIMIT = 2 << 30  # sets up to 2 GiB are identified by their bytes, larger ones by file sizes and times


def set_identity(set_dir: str | Path) -> str:
    """A set's id for stage inputs: its stage id when it is a stage, else a hash of its manifest and its
    shards' contents (of their names, sizes and modification times for sets over 2 GiB)."""
    set_dir = Path(set_dir)
    info = set_dir / "stage.json"
    if info.exists():
        return read_json(info)["id"]
    from synscale.data.shards import read_manifest

    shards = sorted(set_dir / s for s in read_manifest(set_dir)["shard"].unique())
    h = hashlib.sha256(_sha(set_dir / "manifest.parquet").encode())
    by_content = sum(p.stat().st_size for p in shards) <= CONTENT_HASH_LIMIT
    for p in shards:
        st = p.stat()
        h.update(f"{p.name}:{_sha(p) if by_content else f'{st.st_size}:{st.st_mtime_ns}'}".encode())
    return "set:" + h.hexdigest()[:16]


def keys_digest(keys: list[str] | None) -> str:
    return "all" if keys is None else hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def feature_stage(root: str | Path, ref: Reference, set_dir: str | Path, keys: list[str] | None = None,
                  batch_size: int = 500, progress: bool = True) -> Features:
    """`extract`, cached as a `features` stage in `root` (per reference weights, set, keys and precision)."""
    from synscale.stage import run_stage

    set_dir = Path(set_dir)

    def fn(out: Path) -> None:
        import pandas as pd

        f = extract(ref, set_dir, keys, batch_size, progress=progress)
        np.save(out / "feats.npy", f.feats)
        np.save(out / "logits.npy", f.logits)
        np.save(out / "labels.npy", f.labels)
        pd.DataFrame({"key": f.keys}).to_parquet(out / "keys.parquet", index=False)

    params = {"reference": ref.name, "keys": keys_digest(keys), "precision": ref.precision}
    res = run_stage(root, "features", params, {"set": set_identity(set_dir)}, fn)
    return load_features(res.path)


def load_features(stage_dir: Path) -> Features:
    import pandas as pd

    return Features(np.load(stage_dir / "feats.npy"), np.load(stage_dir / "logits.npy"), np.load(stage_dir / "labels.npy"),
                    pd.read_parquet(stage_dir / "keys.parquet")["key"].tolist())
