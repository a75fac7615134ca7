"""The training input pipeline: which images each step reads, and how they are augmented.

Data order is a function of (seed, step) alone: step s reads slice s of the permutation of its epoch
(`batch_indices`), and each image's augmentation draws from a generator seeded by (seed, step, its
position in the global batch). So a run resumed at step s reads exactly what an uninterrupted run reads
there, whatever the number of loader workers or processes.

Two sources hold the images:
- `ArraySource`: decoded uint8 arrays in memory (small images: the miniature study).
- `ShardSource`: synscale shards read by byte offset (an index of every sample's PNG inside its tar,
  built once per set and cached as `tar_index.parquet`), decoded in DataLoader worker processes.

`StepBatches` is a map-style dataset whose item s is this process's share of step s's global batch,
augmented per sample (RandAugment, random crop, flip); a DataLoader with `batch_size=None` runs it in
workers, each assembling whole batches, so decoding and augmentation overlap with training.
Whole-batch augmentation that is cheap on tensors (flip-shift, Mixup) runs in the training process.
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of step `step`: consecutive slices of per-epoch permutations (epoch e seeded by seed, e)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return perm[pos * batch_size : (pos + 1) * batch_size]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def sample_seed(seed: int, step: int, position: int) -> int:
    return (seed * 1_000_003 + step * 65_537 + position * 7 + 12345) % (2**63)


# ---------------------------------------------------------------------------------------------------
# Sources


class ArraySource:
    """Decoded uint8 images (N, C, H, W) and int labels in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def get(self, i: int) -> np.ndarray:
        return self.images[i]

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]


def tar_index(set_dir: Path) -> Any:
    """Byte offset and size of every sample's PNG in its shard (cached in the set as tar_index.parquet)."""
    import pandas as pd

    cache = set_dir / "tar_index.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    from synscale.data.shards import read_manifest

    rows = []
    for shard in read_manifest(set_dir)["shard"].unique():
        with tarfile.open(set_dir / shard, "r") as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".png"):
                    rows.append({"key": m.name[: -len(".png")].rpartition("/")[2], "shard": shard,
                                 "offset": m.offset_data, "size": m.size})
    index = pd.DataFrame(rows)
    tmp = cache.with_name(f".tar_index-{os.getpid()}.parquet")
    try:
        index.to_parquet(tmp, index=False)
        os.replace(tmp, cache)
    except OSError:  # a read-only set: keep the index in memory only
        tmp.unlink(missing_ok=True)
    return index


class ShardSource:
    """Samples of one or more synscale sets (each with an optional key list), read from their tars by
    byte offset, decoded on demand. Safe to use from DataLoader workers (files open lazily per process)."""

    def __init__(self, parts: Sequence[tuple[str | Path, Sequence[str] | None]]) -> None:
        from synscale.data.shards import read_manifest

        self.paths: list[str] = []
        offsets, sizes, files, labels = [], [], [], []
        for set_dir, keys in parts:
            set_dir = Path(set_dir)
            index = tar_index(set_dir).set_index("key")
            manifest = read_manifest(set_dir).set_index("key")
            keys = list(keys) if keys is not None else manifest.index.tolist()
            missing = index.index.intersection(keys)
            if len(missing) != len(keys):
                raise KeyError(f"{set_dir}: {len(keys) - len(missing)} requested keys are not in its shards")
            sel = index.loc[keys]
            base = len(self.paths)
            shard_names = sorted(sel["shard"].unique())
            self.paths += [str(set_dir / s) for s in shard_names]
            code = {s: base + i for i, s in enumerate(shard_names)}
            files.append(sel["shard"].map(code).to_numpy(np.int32))
            offsets.append(sel["offset"].to_numpy(np.int64))
            sizes.append(sel["size"].to_numpy(np.int64))
            labels.append(manifest.loc[keys, "label"].to_numpy(np.int64))
        self.file, self.offset = np.concatenate(files), np.concatenate(offsets)
        self.size, self.labels = np.concatenate(sizes), np.concatenate(labels)
        self._fds: dict[int, int] = {}
        self._pid = -1
        first = self.get(0)
        self.shape = tuple(first.shape)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}, "_pid": -1}

    def _fd(self, f: int) -> int:
        if self._pid != os.getpid():  # a forked worker: never share the parent's file offsets
            self._fds, self._pid = {}, os.getpid()
        if f not in self._fds:
            self._fds[f] = os.open(self.paths[f], os.O_RDONLY)
        return self._fds[f]

    def get(self, i: int) -> np.ndarray:
        from PIL import Image

        data = os.pread(self._fd(int(self.file[i])), int(self.size[i]), int(self.offset[i]))
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return np.stack([self.get(int(i)) for i in idx])


def concat_arrays(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> ArraySource:
    return ArraySource(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


# ---------------------------------------------------------------------------------------------------
# Per-sample augmentation


@dataclass(frozen=True)
class SampleAugment:
    """A random `crop` x `crop` patch, then (optionally) a random horizontal flip, then RandAugment(num_ops,
    magnitude), all drawn from generators seeded by the sample's seed. uint8 CHW in and out.

    RandAugment is timm's PIL implementation (`rand-m<M>-n<N>-p1-mstd0`: every one of the N ops drawn is
    applied, at the fixed magnitude M, as in big_vision's and torchvision's RandAugment); it is about ten times
    faster than torchvision's tensor version on 224-px images (0.9 against 6-9 ms a image). Pixels that
    rotations and shears uncover are filled with the ImageNet mean (RGB) or black (grayscale)."""

    randaugment: tuple[int, ...] = ()
    crop: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return bool(self.randaugment or self.crop or self.flip)

    def __call__(self, img: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.crop:
            _, h, w = img.shape
            if h < self.crop or w < self.crop:
                raise ValueError(f"crop {self.crop} is larger than the {h}x{w} images; set train.crop <= {min(h, w)}")
            top, left = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
            img = img[:, top : top + self.crop, left : left + self.crop]
        if self.flip and rng.random() < 0.5:
            img = img[:, :, ::-1]
        if self.randaugment:
            img = _randaugment(img, self.randaugment[0], self.randaugment[1], seed)
        return np.ascontiguousarray(img)


@functools.lru_cache(maxsize=8)
def _randaugment_op(num_ops: int, magnitude: int, channels: int) -> Any:
    from timm.data.auto_augment import rand_augment_transform

    fill = (124, 116, 104) if channels == 3 else 0
    return rand_augment_transform(f"rand-m{magnitude}-n{num_ops}-p1-mstd0", {"img_mean": fill})


def _randaugment(img: np.ndarray, num_ops: int, magnitude: int, seed: int) -> np.ndarray:
    """timm's RandAugment draws from Python's and numpy's global generators: seed them for this image and
    put their states back, so nothing else sees a difference."""
    import random

    from PIL import Image

    c = img.shape[0]
    pil = Image.fromarray(np.ascontiguousarray(img[0] if c == 1 else img.transpose(1, 2, 0)))
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        out = np.asarray(_randaugment_op(num_ops, magnitude, c)(pil))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def center_crop(images: np.ndarray, crop: int) -> np.ndarray:
    if not crop:
        return images
    h, w = images.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return images[..., top : top + crop, left : left + crop]


class StepBatches(torch.utils.data.Dataset):
    """Item `step` = (uint8 images, labels) of this process's share of global batch `step`."""

    def __init__(self, source: ArraySource | ShardSource, batch_size: int, seed: int, augment: SampleAugment,
                 rank: int = 0, world: int = 1) -> None:
        self.source, self.batch, self.seed, self.augment = source, batch_size, seed, augment
        self.rank, self.world = rank, world
        self.local = batch_size // world

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the global batch, source indices) of this process's share of step `step`."""
        idx = batch_indices(len(self.source), self.batch, step, self.seed).numpy()
        pos = np.arange(self.rank * self.local, min(len(idx), (self.rank + 1) * self.local))
        return pos, idx[pos]

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos, idx = self.indices(step)
        if self.augment.active:
            images = np.stack([self.augment(self.source.get(int(i)), sample_seed(self.seed, step, int(p)))
                               for p, i in zip(pos, idx, strict=True)])
        else:
            images = self.source.take(idx)
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(self.source.labels[idx])


def step_loader(batches: StepBatches, start: int, stop: int, workers: int) -> Any:
    """Batches of steps start..stop-1, in order, prepared by `workers` processes (0: in this process)."""
    if workers == 0:
        return (batches[s] for s in range(start, stop))
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, stop), num_workers=workers, pin_memory=torch.cuda.is_available(),
        prefetch_factor=4, worker_init_fn=_one_thread,
        generator=torch.Generator().manual_seed(0))  # its own: starting workers must not draw from the global RNG


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
