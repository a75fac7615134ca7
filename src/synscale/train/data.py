"""The training input pipeline: which images each step reads, and how they are augmented.

Data order is a function of (seed, step) alone: step s reads slice s of the permutation of its epoch
(`batch_indices`; `EpochOrder` computes each epoch's permutation once, shared through a file for large sets), and each image's augmentation draws from a generator seeded by (seed, step, its
position in the global batch). So a run resumed at step s reads exactly what an uninterrupted run reads
there, whatever the number of loader workers or processes.

Two sources hold the images (with their labels, and their captions where the set has them):
- `ArraySource`: decoded uint8 arrays in memory (small images: the miniature study).
- `ShardSource`: synscale shards read by byte offset (synscale.data.index: where every sample's image lies
  in its tar, its label and caption as flat arrays, built once per run and memory-mapped by its processes),
  decoded in DataLoader worker processes.
`MixedPairs` puts a real and a synthetic source of the same captions together: at every step each
caption takes its real or its synthetic image, drawn from (seed, step, position in the batch).

`StepBatches` is a map-style dataset whose item s is this process's share of step s's global batch,
augmented per sample (RandAugment, random crop, flip); `step_loader` splits each step's share across its
DataLoader workers (one slice each, `StepBatches.part`, joined in order), so decoding and augmentation overlap
with training and a batch is ready in one worker's time for its slice. Whole-batch augmentation that is cheap
on tensors (flip-shift, Mixup, and RandAugment with `randaugment_on = "device"`) runs in the training process.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synscale.errors import ConfigError, DataError


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a permutation of n seeded by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of step `step`: consecutive slices of per-epoch permutations (epoch_permutation)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    return epoch_permutation(n, seed, epoch)[pos * batch_size : (pos + 1) * batch_size]


ORDER_SHARED = 1 << 22  # sets of more samples share each epoch's order between processes through a file


class EpochOrder:
    """Step s's samples (`batch_indices`'s, the same values), with each epoch's permutation computed once per
    process instead of on every step: at 64M images one permutation takes seconds and half a gigabyte, at 371M
    twenty seconds and 3 GB. For a set of more than ORDER_SHARED samples with a `directory`, the first process of
    a machine that needs an epoch writes its permutation there (int32 below 2^31 samples, put in place atomically,
    under a lock) and every process memory-maps it: one copy per machine, not one per loader worker. The two
    epochs before the current one are removed as the next is written."""

    def __init__(self, n: int, batch_size: int, seed: int, directory: Path | None = None) -> None:
        self.n, self.batch, self.seed = n, batch_size, seed
        self.per_epoch = max(1, n // batch_size)
        self.directory = directory if directory is not None and n > ORDER_SHARED else None
        self._epoch, self._perm = -1, np.empty(0, np.int64)

    def __getstate__(self) -> dict[str, Any]:  # a worker computes (or maps) its own
        return {**self.__dict__, "_epoch": -1, "_perm": np.empty(0, np.int64)}

    def indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm, self._epoch = self._permutation(epoch), epoch
        return np.asarray(self._perm[pos * self.batch : (pos + 1) * self.batch], dtype=np.int64)

    def _compute(self, epoch: int) -> np.ndarray:
        perm = epoch_permutation(self.n, self.seed, epoch).numpy()
        return perm.astype(np.int32) if self.n < 2**31 else perm

    def _permutation(self, epoch: int) -> np.ndarray:
        if self.directory is None:
            return self._compute(epoch)
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"order-{self.seed}-{self.n}-{epoch}.npy"
        if not path.exists():
            with open(self.directory / "order.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one process computes; the others wait, then map its file
                if not path.exists():
                    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                    with open(tmp, "wb") as f:
                        np.save(f, self._compute(epoch))
                    os.replace(tmp, path)
                    for old in (epoch - 2, epoch - 3):
                        (self.directory / f"order-{self.seed}-{self.n}-{old}.npy").unlink(missing_ok=True)
        return np.load(path, mmap_mode="r", allow_pickle=False)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def sample_seed(seed: int, step: int, position: int) -> int:
    return (seed * 1_000_003 + step * 65_537 + position * 7 + 12345) % (2**63)


# ---------------------------------------------------------------------------------------------------
# Sources


class ArraySource:
    """Decoded uint8 images (N, C, H, W), int labels and optionally captions, in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, texts: Sequence[str] | None = None) -> None:
        if len(images) != len(labels) or (texts is not None and len(texts) != len(images)):
            raise ValueError(f"{len(images)} images but {len(labels)} labels" + (f", {len(texts)} captions" if texts is not None else ""))
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.texts = None if texts is None else np.asarray(texts, dtype=object)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def get(self, i: int) -> np.ndarray:
        return self.images[i]

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]


MAX_OPEN_SHARDS = 64  # shard files a ShardSource keeps open per process


class ShardSource:
    """Samples of one or more synscale sets (each with an optional key list, pyarrow array or subset.parquet path),
    read from their tars by byte offset, decoded on demand: a synscale.data.index.LoaderIndex, built here or
    loaded (memory-mapped) from where the run's launcher saved it (`index`). Safe to use from DataLoader workers
    (files open lazily per process)."""

    def __init__(self, parts: Sequence[tuple[str | Path, Any]] = (), index: Any = None) -> None:
        from synscale.data.index import build_index

        index = index if index is not None else build_index(parts)
        self.index = index
        self.paths, self.file, self.offset, self.size = index.paths, index.file, index.offset, index.size
        self.labels, self.texts = index.labels, index.texts
        self._fds: Any = None  # this process's open shards (an LRU of at most MAX_OPEN_SHARDS file descriptors)
        self._pid = -1
        first = self.get(0)
        self.shape = tuple(first.shape)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": None, "_pid": -1}

    def _fd(self, f: int) -> int:
        """An open descriptor of shard `f`. Each process keeps at most MAX_OPEN_SHARDS shards open, closing the
        least recently read: a 64M-image set has thousands of shards, and every loader worker of every rank reads
        across all of them, past the usual limit of 1,024 open files per process."""
        if self._pid != os.getpid():  # a forked worker: never share the parent's file offsets
            from synscale.lru import LRU

            self._fds = LRU(MAX_OPEN_SHARDS, on_evict=lambda _, fd: os.close(fd))
            self._pid = os.getpid()
        fd = self._fds.get(f)
        if fd is None:
            fd = os.open(self.paths[f], os.O_RDONLY)
            self._fds.put(f, fd)
        return fd

    def get(self, i: int) -> np.ndarray:
        from PIL import Image

        data = os.pread(self._fd(int(self.file[i])), int(self.size[i]), int(self.offset[i]))
        try:
            with Image.open(io.BytesIO(data)) as im:
                arr = np.asarray(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise self._unreadable(i, e) from None
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def _unreadable(self, i: int, e: BaseException) -> Exception:
        """A DataError naming the shard and the sample (looked up in its set's tar index)."""
        import pyarrow.compute as pc

        from synscale.data.index import tar_index
        from synscale.errors import DataError, image_error

        path = Path(self.paths[int(self.file[i])])
        index = tar_index(path.parent)
        hit = index.filter(pc.and_(pc.equal(index["shard"], path.name), pc.equal(index["offset"], int(self.offset[i]))))
        key = hit["key"][0].as_py() if hit.num_rows else f"at byte {int(self.offset[i])}"
        return DataError(f"{path}: sample {key!r}: not a readable image ({image_error(e)}); regenerate the set")

    def take(self, idx: np.ndarray) -> np.ndarray:
        return np.stack([self.get(int(i)) for i in idx])


def concat_arrays(parts: Sequence[tuple[np.ndarray, ...]]) -> ArraySource:
    """One ArraySource of (images, labels) or (images, labels, captions) parts."""
    texts = [p[2] if len(p) > 2 else None for p in parts]
    return ArraySource(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                       None if any(t is None for t in texts) else [c for t in texts for c in t])


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-mixed 64-bit values from consecutive integers."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class MixedPairs:
    """Real and synthetic images of the same captions (section 5.2 of the paper): sample i is caption i
    with its real image (`real[i]`) or its synthetic one (`synthetic[i]`). Which one a draw takes is a
    function of the draw's seed (synscale.train.data.sample_seed: seed, step, position), so a resumed run
    draws exactly what an uninterrupted one does; each caption takes its real image with probability
    `real_prob`."""

    def __init__(self, real: ArraySource | ShardSource, synthetic: ArraySource | ShardSource, real_prob: float = 0.5) -> None:
        if len(real) != len(synthetic):
            raise DataError(f"mixed pairs need one synthetic image per real caption: {len(real)} real, {len(synthetic)} synthetic")
        from synscale.data.index import same_texts

        if not same_texts(real.texts, synthetic.texts):
            raise DataError("mixed pairs: the real and synthetic sets do not hold the same captions in the same order")
        if real.shape != synthetic.shape:
            raise DataError(f"mixed pairs: real images are {real.shape}, synthetic ones {synthetic.shape}")
        self.real, self.synthetic, self.real_prob = real, synthetic, float(real_prob)
        self.labels, self.texts, self.shape = real.labels, real.texts, real.shape

    def __len__(self) -> int:
        return len(self.real)

    def takes_real(self, seeds: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per draw seed: True where the caption takes its real image."""
        u = _mix64(np.asarray(seeds, dtype=np.uint64) ^ np.uint64(0x5EED_C11B)) >> np.uint64(11)
        return u.astype(np.float64) / float(1 << 53) < self.real_prob

    def get(self, i: int, seed: int) -> np.ndarray:
        return (self.real if self.takes_real([seed])[0] else self.synthetic).get(i)

    def take(self, idx: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        real = self.takes_real(seeds)
        out = np.empty((len(idx), *self.shape), np.uint8)
        for src, m in ((self.real, real), (self.synthetic, ~real)):
            if m.any():
                out[m] = src.take(np.asarray(idx)[m])
        return out


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
                raise ConfigError(f"crop {self.crop} is larger than the {h}x{w} images; set train.crop <= {min(h, w)}")
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
    """Item `step` = (uint8 images, targets) of this process's share of global batch `step`; targets are
    the labels, or what `targets(source, indices)` gives (a task's: e.g. caption tokens)."""

    def __init__(self, source: ArraySource | ShardSource | MixedPairs, batch_size: int, seed: int, augment: SampleAugment,
                 rank: int = 0, world: int = 1, targets: Any = None, order_dir: Path | None = None) -> None:
        self.source, self.batch, self.seed, self.augment = source, batch_size, seed, augment
        self.rank, self.world, self.targets = rank, world, targets
        self.local = batch_size // world
        self.order = EpochOrder(len(source), batch_size, seed, order_dir)

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the global batch, source indices) of this process's share of step `step`."""
        idx = self.order.indices(step)
        pos = np.arange(self.rank * self.local, min(len(idx), (self.rank + 1) * self.local))
        return pos, idx[pos]

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.part(step, 0, 1)

    def part(self, step: int, k: int, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-th of `parts` consecutive slices of this process's share of step `step` (what one loader worker
        prepares; the slices of a step concatenated are the whole share, the same images whatever `parts` is)."""
        pos, idx = self.indices(step)
        bounds = np.linspace(0, len(pos), parts + 1).astype(int)
        pos, idx = pos[bounds[k] : bounds[k + 1]], idx[bounds[k] : bounds[k + 1]]
        if isinstance(self.source, MixedPairs):
            images = self._mixed(step, pos, idx)
        elif self.augment.active:
            images = np.stack([self.augment(self.source.get(int(i)), sample_seed(self.seed, step, int(p)))
                               for p, i in zip(pos, idx, strict=True)])
        else:
            images = self.source.take(idx)
        targets = torch.from_numpy(self.source.labels[idx]) if self.targets is None else self.targets(self.source, idx)
        return torch.from_numpy(np.ascontiguousarray(images)), targets

    def _mixed(self, step: int, pos: np.ndarray, idx: np.ndarray) -> np.ndarray:
        seeds = [sample_seed(self.seed, step, int(p)) for p in pos]
        if not self.augment.active:
            return self.source.take(idx, seeds)
        return np.stack([self.augment(self.source.get(int(i), s), s) for s, i in zip(seeds, idx, strict=True)])


def step_loader(batches: StepBatches, start: int, stop: int, workers: int) -> Any:
    """Batches of steps start..stop-1, in order, prepared by `workers` processes (0: in this process). Each step's
    batch is split across the workers (StepBatches.part: one slice each, put together here in order), so a batch
    is ready in a worker's time for its slice, not for the whole batch."""
    if workers == 0:
        return (batches[s] for s in range(start, stop))
    loader = torch.utils.data.DataLoader(
        _Parts(batches, workers), batch_size=None, sampler=[(s, k) for s in range(start, stop) for k in range(workers)],
        num_workers=workers, pin_memory=torch.cuda.is_available(), prefetch_factor=4, worker_init_fn=_one_thread,
        generator=torch.Generator().manual_seed(0))  # its own: starting workers must not draw from the global RNG
    return _joined(iter(loader), workers)


class _Parts(torch.utils.data.Dataset):
    """Item (step, k): the k-th of `parts` slices of step's batch."""

    def __init__(self, batches: StepBatches, parts: int) -> None:
        self.batches, self.parts = batches, parts

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches.part(item[0], item[1], self.parts)


def _joined(parts: Any, n: int) -> Any:
    """Every `n` consecutive slices (one step's, in order) as one batch."""
    while True:
        chunk = []
        for _ in range(n):
            item = next(parts, None)
            if item is None:
                return
            chunk.append(item)
        yield torch.cat([c[0] for c in chunk]), torch.cat([c[1] for c in chunk])


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
