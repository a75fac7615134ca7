"""Where each training sample is, for loaders that read shards: per sample its shard, the byte offset and size of its
image inside it, its label and its caption, as flat arrays.

At LAION scale (371M captions) the loader's bookkeeping, not the images, filled the hosts: a pandas index of every
tar member and the manifest's captions as Python strings took ~0.6 GB per million samples in every process (230 GB
per rank at 371M), every loader worker copied the pages it touched, and every rank of a run scanned the same tars
at once (~34 s per million members with `tarfile`: hours, inside NCCL's timeout). Here:

- `tar_index(set_dir)`: every sample's image offset and size, read from the tars' USTAR headers (~3 s per million)
  in worker processes for sets of many shards, and cached in the set (`tar_index.parquet`, tied to the manifest it
  was made from);
- `build_index(parts)`: a training run's samples (sets and nested subsets) as a `LoaderIndex`, built with Arrow
  (no Python object per sample), once per run before its processes start; `save` writes it beside the run as
  `.npy` files that every rank and loader worker memory-maps (`LoaderIndex.load`), sharing the pages;
- `Texts`: captions as one UTF-8 buffer and its offsets (an Arrow string array's layout): 8 bytes a caption beside
  its text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synscale.atomic import read_json
from synscale.errors import DataError

TAR_INDEX = "tar_index.parquet"
BLOCK = 512


# ---------------------------------------------------------------------------------------------------
# Captions


class Texts:
    """N captions as UTF-8 bytes (`data`) and offsets (N + 1, int64): caption i is data[offsets[i]:offsets[i + 1]].
    Indexing with an int gives a str, with an array or slice an object array of str."""

    def __init__(self, offsets: np.ndarray, data: np.ndarray) -> None:
        self.offsets, self.data = offsets, data

    @classmethod
    def from_arrow(cls, array: Any) -> Texts:
        """An Arrow string array's captions; its text buffer is shared, not copied, where it is one chunk of
        large strings already (nulls read as empty captions)."""
        import pyarrow as pa

        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        if array.type != pa.large_string():
            array = array.cast(pa.large_string())
        if array.null_count:
            array = array.fill_null("")
        _, offsets, data = array.buffers()
        n, start = len(array), array.offset
        off = np.frombuffer(offsets, np.int64, n + 1, start * 8)
        raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        return cls(off - off[0], raw[off[0]:off[-1]])

    @classmethod
    def from_strings(cls, texts: Sequence[str]) -> Texts:
        import pyarrow as pa

        return cls.from_arrow(pa.array(list(texts), pa.large_string()))

    @classmethod
    def concat(cls, parts: Sequence[Texts]) -> Texts:
        shifts = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)])
        return cls(offsets, np.concatenate([p.data for p in parts]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _one(self, i: int) -> str:
        return bytes(self.data[self.offsets[i]:self.offsets[i + 1]]).decode("utf-8")

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, int | np.integer):
            return self._one(int(idx))
        positions = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx)
        out = np.empty(len(positions), dtype=object)
        for j, i in enumerate(positions):
            out[j] = self._one(int(i))
        return out

    def __iter__(self) -> Any:
        return (self._one(i) for i in range(len(self)))

    def equals(self, other: Any) -> bool:
        if isinstance(other, Texts):
            return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.data, other.data)
        return other is not None and len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))


def same_texts(a: Any, b: Any) -> bool:
    """Whether two sources hold the same captions in the same order (Texts or arrays of str)."""
    if a is None or b is None:
        return False
    if isinstance(a, Texts):
        return a.equals(b)
    if isinstance(b, Texts):
        return b.equals(a)
    return np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))


# ---------------------------------------------------------------------------------------------------
# The tar index of a set


def scan_tar(path: Path) -> tuple[list[str], list[int], list[int]]:
    """(key, image offset, image size) of every sample's image (png, jpg, jpeg or webp member) in a tar, in order,
    read from the USTAR headers alone; a tar with other member kinds (GNU or PAX long names) is read by tarfile."""
    from synscale.errors import DataError

    keys, offsets, sizes = [], [], []
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos + BLOCK <= size:
            f.seek(pos)
            header = f.read(BLOCK)
            if not header.strip(b"\0"):
                break  # the end-of-archive blocks
            kind = header[156:157]
            if kind not in (b"0", b"\0"):
                return _scan_with_tarfile(path)
            try:
                length = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
            except ValueError:
                raise DataError(f"{path}: not a complete tar (a bad header at byte {pos}); regenerate the set") from None
            name, prefix = header[:100].rstrip(b"\0"), header[345:500].rstrip(b"\0")
            name = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
            stem, _, ext = name.rpartition("/")[2].partition(".")
            if ext in ("png", "jpg", "jpeg", "webp"):
                keys.append(stem)
                offsets.append(pos + BLOCK)
                sizes.append(length)
            pos += BLOCK + -(-length // BLOCK) * BLOCK
    if pos + BLOCK > size and size:
        raise DataError(f"{path}: not a complete tar (it ends inside a member); regenerate the set")
    return keys, offsets, sizes


def _scan_with_tarfile(path: Path) -> tuple[list[str], list[int], list[int]]:
    import tarfile

    from synscale.errors import DataError

    keys, offsets, sizes = [], [], []
    try:
        with tarfile.open(path, "r") as tar:
            for m in tar:
                stem, _, ext = m.name.rpartition("/")[2].partition(".")
                if m.isfile() and ext in ("png", "jpg", "jpeg", "webp"):
                    keys.append(stem)
                    offsets.append(m.offset_data)
                    sizes.append(m.size)
    except (tarfile.TarError, EOFError) as e:
        raise DataError(f"{path}: not a complete tar ({e}); regenerate the set") from None
    return keys, offsets, sizes


def _scan_shards(paths: list[Path]) -> Any:
    """The tar index rows of `paths` (in order) as a pyarrow Table: Arrow arrays, not a Python object per sample."""
    import pyarrow as pa

    keys, shards, offsets, sizes = [], [], [], []
    for p in paths:
        k, o, z = scan_tar(p)
        keys += k
        shards += [p.name] * len(k)
        offsets += o
        sizes += z
    return pa.table({"key": pa.array(keys, pa.string()), "shard": pa.array(shards, pa.string()),
                     "offset": pa.array(offsets, pa.int64()), "size": pa.array(sizes, pa.int64())})


def tar_index(set_dir: str | Path, workers: int = 0) -> Any:
    """A pyarrow Table of (key, shard, offset, size): every sample's image in its shard, in shard order. Cached in the
    set as tar_index.parquet, tied to the manifest it was made from (an index of other data is made again); built in
    `workers` processes (0: the cores, up to 8, for sets of more than 64 shards)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synscale.atomic import clear_partials, replacing
    from synscale.data.shards import file_sha256, manifest_table

    set_dir = Path(set_dir)
    made_from = file_sha256(set_dir / "manifest.parquet")
    cache = set_dir / TAR_INDEX
    if cache.exists():
        md = pq.read_schema(cache).metadata or {}
        if md.get(b"synscale_manifest", b"").decode() == made_from:
            return pq.read_table(cache)
    shards = manifest_table(set_dir, ["shard"])["shard"].unique().to_pylist()
    table = pa.concat_tables(_scan_all([set_dir / s for s in shards], workers)) if shards else _scan_shards([])
    table = table.replace_schema_metadata({b"synscale_manifest": made_from.encode()})
    try:
        clear_partials(set_dir)  # a killed run's half-written index
        with replacing(cache) as tmp:
            pq.write_table(table, tmp)
    except OSError:  # a read-only set: keep the index in memory only
        pass
    return table


def _scan_all(paths: list[Path], workers: int) -> list[Any]:
    """The tar index rows of every shard, in order, as tables of up to 16 shards: read in this process, or for
    many shards in worker processes."""
    from synscale.device import cores

    workers = workers or (min(8, cores()) if len(paths) > 64 else 1)
    chunks = [paths[i:i + 16] for i in range(0, len(paths), 16)]
    if workers <= 1:
        return [_scan_shards(c) for c in chunks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from synscale.errors import ResourceError

    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_scan_shards, chunks))
    except BrokenProcessPool:
        raise ResourceError(f"a process of the {workers} that read the shards' headers died (out of memory? or a script "
                            "that starts them without an `if __name__ == '__main__':` guard)") from None


# ---------------------------------------------------------------------------------------------------
# A training run's index


ARRAYS = ("file", "offset", "size", "labels")


@dataclass
class LoaderIndex:
    """A training run's samples: shard `paths[file[i]]`, image bytes at `offset[i]` (`size[i]` long), label and
    caption (None: a set without captions)."""

    paths: list[str]
    file: np.ndarray  # int32
    offset: np.ndarray  # int64
    size: np.ndarray  # int64
    labels: np.ndarray  # int64
    texts: Texts | None

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, out: str | Path) -> None:
        """The index as .npy files and paths.json in `out`, put in place whole (synscale.stage.building_dir)."""
        from synscale.stage import building_dir

        with building_dir(Path(out)) as tmp:
            for name in ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            if self.texts is not None:
                np.save(tmp / "text_offsets.npy", self.texts.offsets)
                np.save(tmp / "text_data.npy", self.texts.data)
            (tmp / "paths.json").write_text(json.dumps(self.paths))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> LoaderIndex:
        """A saved index, its arrays memory-mapped (read-only, shared by every process that maps them)."""
        path, mode = Path(path), "r" if mmap else None
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False) for name in ARRAYS}
        texts = None
        if (path / "text_offsets.npy").exists():
            texts = Texts(np.load(path / "text_offsets.npy", mmap_mode=mode, allow_pickle=False),
                          np.load(path / "text_data.npy", mmap_mode=mode, allow_pickle=False))
        return cls(read_json(path / "paths.json"), texts=texts, **arrays)


def build_index(parts: Sequence[tuple[str | Path, Any]]) -> LoaderIndex:
    """The index of samples of one or more sets, each with its keys (a list, a pyarrow array, a subset.parquet path,
    or None: every sample in manifest order), concatenated. Keys not in a set are a DataError naming the set."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from synscale.data.shards import caption_column, manifest_table

    paths: list[str] = []
    pieces: list[dict[str, Any]] = []
    for set_dir, keys in parts:
        set_dir = Path(set_dir)
        index = tar_index(set_dir)
        col = caption_column(pq.read_schema(set_dir / "manifest.parquet").names)
        manifest = manifest_table(set_dir, ["key", "label", *([col] if col else [])])
        if keys is None:
            pos = np.arange(manifest.num_rows)
        else:
            if isinstance(keys, str | Path):
                keys = pq.read_table(keys, columns=["key"])["key"]
            pos = pc.index_in(keys if not isinstance(keys, list) else _strings(keys), value_set=manifest["key"])
            if pos.null_count:
                raise DataError(f"{set_dir}: {pos.null_count} requested keys are not in its shards")
            pos = pos.to_numpy(zero_copy_only=False).astype(np.int64)
        aligned = index["key"].cast(manifest["key"].type).equals(manifest["key"])  # a set synscale wrote: tar order
        at = pos if aligned else _positions(manifest["key"].take(pos), index["key"], set_dir)
        shard = index["shard"].take(at).combine_chunks().dictionary_encode()
        every = keys is None  # the whole set in manifest order: its columns as they are, not taken
        pieces.append({"file": shard.indices.to_numpy(zero_copy_only=False).astype(np.int32) + len(paths),
                       "offset": index["offset"].take(at).to_numpy(), "size": index["size"].take(at).to_numpy(),
                       "labels": manifest["label"].take(pos).to_numpy().astype(np.int64),
                       "texts": Texts.from_arrow(manifest[col] if every else manifest[col].take(pos)) if col else None})
        paths += [str(set_dir / s) for s in shard.dictionary.to_pylist()]
    texts = [p["texts"] for p in pieces]
    return LoaderIndex(paths, **{name: np.concatenate([p[name] for p in pieces]) for name in ARRAYS},
                       texts=None if any(t is None for t in texts) else Texts.concat(texts))


def _strings(keys: list[str]) -> Any:
    import pyarrow as pa

    return pa.array([str(k) for k in keys], pa.string())


def _positions(keys: Any, value_set: Any, set_dir: Path) -> np.ndarray:
    import pyarrow.compute as pc

    from synscale.errors import DataError

    pos = pc.index_in(keys, value_set=value_set)
    if pos.null_count:
        raise DataError(f"{set_dir}: {pos.null_count} samples of the manifest have no image in the shards; regenerate "
                        "the set")
    return pos.to_numpy(zero_copy_only=False).astype(np.int64)
