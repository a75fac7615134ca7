"""A dataset split's samples decoded, resized and encoded for a set (synscale.data.encoding: PNG, JPEG, WebP, or the
source's file bytes kept): in this process, or in worker processes.

`synscale shards --workers N` and a study's shards stage write a large split with N processes. The source's
`items(split)` (a file's path, a sample's bytes: cheap to read and to send) are read here, in order, and sent
in chunks of CHUNK to the workers, which `load` them (decode, resize) and encode each image; the chunks come
back in order, so the shards are the same bytes as a sequential run's. At most 2 x N chunks are out at once:
a split whose items are its images' bytes (webdataset shards, a Hugging Face dataset) is never held in memory
whole. A sample that cannot be read (BadSample) comes back as `Skipped`, for the writer's error budget. Workers
are spawned (the process may hold torch threads, which a fork copies badly) and ignore Ctrl-C: the parent stops
them.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from synscale.data.encoding import ImageEncoding
from synscale.errors import ResourceError

CHUNK = 64  # samples per task: enough to make a task's overhead small, few enough to keep the bar moving


@dataclass
class Encoded:
    """A sample ready to be written (synscale.data.shards.ShardWriter.write_encoded)."""

    key: str
    ext: str  # png, jpg or webp
    data: bytes
    label: int
    meta: dict[str, Any]
    shape: tuple[int, int]  # (height, width) of the image
    array: np.ndarray | None  # the image, where the source gave an array (the array cache need not decode it)


@dataclass
class Skipped:
    """A sample that could not be read (synscale.data.datasets.BadSample): where it is, why, and the whole line."""

    where: str
    reason: str
    message: str


def encode_sample(sample: Any, encoding: ImageEncoding = ImageEncoding("png")) -> Encoded:
    """A synscale.data.datasets.Sample, its image encoded as `encoding` says (its source bytes kept where allowed)."""
    img = sample.image
    is_array = isinstance(img, np.ndarray)
    shape = img.shape[:2] if is_array else img.size[::-1]
    ext, data = encoding.encode(img, sample.source)
    return Encoded(sample.key, ext, data, sample.label, sample.meta, tuple(shape), img if is_array else None)


def load_encoded(dataset: Any, item: Any, encoding: ImageEncoding = ImageEncoding("png")) -> Encoded | Skipped:
    """One item of a source loaded and encoded, or Skipped where the sample cannot be read."""
    from synscale.data.datasets import BadSample

    try:
        return encode_sample(dataset.load(item), encoding)
    except BadSample as e:
        return Skipped(e.where, e.reason, str(e))


def encoded_samples(dataset: Any, split: str, workers: int = 1,
                    encoding: ImageEncoding = ImageEncoding("png")) -> Iterator[Encoded | Skipped]:
    """The split's samples, in order, encoded in this process (`workers` <= 1) or in `workers` processes; a sample
    that cannot be read comes as Skipped (the caller decides). Read lazily: the caller stops when it has enough."""
    if workers <= 1:
        yield from (load_encoded(dataset, item, encoding) for item in dataset.items(split))
        return
    yield from ordered_map(_load_and_encode, dataset.items(split), workers, (dataset, encoding))


_WORKER: dict[str, Any] = {}


def _init(dataset: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["dataset"] = dataset


def _load_and_encode(chunk: list[Any]) -> list[Encoded | Skipped]:
    dataset, encoding = _WORKER["dataset"]
    return [load_encoded(dataset, item, encoding) for item in chunk]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def ordered_map(work: Callable[[list[Any]], list[Any]], items: Iterable[Any], workers: int, dataset: Any,
                chunk: int = CHUNK) -> Iterator[Any]:
    """`work` over `items` in chunks, in `workers` spawned processes that hold `dataset`; results in order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                               initargs=(dataset,))
    pending: deque[Any] = deque()
    try:
        for batch in _chunks(items, chunk):
            pending.append(pool.submit(work, batch))
            if len(pending) > 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        raise ResourceError(f"a worker process of the {workers} died (out of memory? or a script that starts them "
                            "without an `if __name__ == '__main__':` guard); rerun with fewer workers "
                            "(synscale shards: --workers)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
