"""synscale shards: webdataset tars of `<key>.png` + `<key>.json`, with a parquet manifest.

Tars are written deterministically (fixed mtime, owner and mode; PNG at a fixed compression level),
so the same samples always give the same bytes. A set directory holds:

    shard-00000.tar, shard-00001.tar, ...   the samples, in write order
    manifest.parquet                          one row per sample: key, label, class_name, shard, + meta
                                              (`caption` for image-text pairs)
    labels.json                               the label set (absent for an unlabelled caption set, whose
                                              samples have label -1)
    arrays.npy                                for small images (<= 64 px): all images decoded, uint8
                                              (N, C, H, W) in manifest order, so that in-memory training
                                              does not decode PNGs again (a cache; the tars are the data)
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from synscale.labels import LabelSet

PNG_COMPRESS_LEVEL = 6
ARRAY_CACHE_MAX_SIDE = 64


def encode_png(image: Any) -> bytes:
    """numpy uint8 (H, W) / (H, W, 3) or PIL image -> PNG bytes (lossless, deterministic)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {image.dtype}")
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


class ShardWriter:
    """Writes samples into numbered tars of at most `shard_size` samples, and the manifest at close()."""

    def __init__(self, out_dir: str | Path, labels: LabelSet | None, shard_size: int = 10000, prefix: str = "shard",
                 cache_arrays: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.shard_size = shard_size
        self.prefix = prefix
        self.rows: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()
        self._arrays: list[np.ndarray] | None = [] if cache_arrays else None  # None: no arrays.npy

    def _shard_name(self, i: int) -> str:
        return f"{self.prefix}-{i:05d}.tar"

    def write(self, key: str, image: Any, label: int, meta: dict[str, Any] | None = None) -> None:
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (webdataset splits on them)")
        if self.labels is None:
            if label != -1:
                raise ValueError(f"label {label} of {key!r} in an unlabelled set (its samples have label -1)")
        elif not 0 <= label < len(self.labels):
            raise ValueError(f"label {label} of {key!r} is outside the label set (0..{len(self.labels) - 1})")
        n = len(self.rows)
        if n % self.shard_size == 0:
            self._open(n // self.shard_size)
        name = self.labels.names[label] if self.labels is not None else ""
        record = {"key": key, "label": int(label), "class_name": name, **(meta or {})}
        png = encode_png(image)
        self._add(f"{key}.png", png)
        self._keep_array(png if not isinstance(image, np.ndarray) else image)
        self._add(f"{key}.json", json.dumps(record, sort_keys=True).encode())
        self.rows.append({**record, "shard": self._shard_name(n // self.shard_size)})
        self._keys.add(key)

    def _keep_array(self, image: np.ndarray | bytes) -> None:
        if self._arrays is None:
            return
        arr = decode_png(image) if isinstance(image, bytes) else image
        if max(arr.shape[:2]) > ARRAY_CACHE_MAX_SIDE or (self._arrays and arr.shape != self._arrays[0].shape):
            self._arrays = None
            return
        self._arrays.append(arr)

    def _open(self, index: int) -> None:
        if self._tar is not None:
            self._tar.close()
        self._tar = tarfile.open(self.out_dir / self._shard_name(index), "w", format=tarfile.USTAR_FORMAT)

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        assert self._tar is not None
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        import pandas as pd

        if self._tar is not None:
            self._tar.close()
            self._tar = None
        pd.DataFrame(self.rows).to_parquet(self.out_dir / "manifest.parquet", index=False)
        if self.labels is not None:
            self.labels.save(self.out_dir / "labels.json")
        if self._arrays:
            arr = np.stack(self._arrays)
            np.save(self.out_dir / "arrays.npy", arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._tar is not None:
            self._tar.close()


def iter_tar_samples(path: str | Path, take: Callable[[int], bool] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group a webdataset tar's members by key (the name up to the first '.' of the basename).

    take: which samples (by position in the tar) to read; the others' bytes are skipped, not read."""
    current: str | None = None
    files: dict[str, bytes] = {}
    index, wanted = -1, False
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            dirname, _, base = member.name.rpartition("/")
            stem, _, ext = base.partition(".")
            key = f"{dirname}/{stem}" if dirname else stem
            if key != current:
                if current is not None and wanted:
                    yield current, files
                files, current, index = {}, key, index + 1
                wanted = take is None or take(index)
            if wanted:
                fh = tar.extractfile(member)
                assert fh is not None
                files[ext] = fh.read()
    if current is not None and wanted:
        yield current, files


def read_manifest(set_dir: str | Path) -> Any:
    import pandas as pd

    path = Path(set_dir) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{set_dir} is not a synscale set: no manifest.parquet")
    return pd.read_parquet(path)


def iter_samples(set_dir: str | Path, keys: Iterable[str] | None = None) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """(key, png bytes, json meta) for every sample (or the given keys), in shard order."""
    set_dir = Path(set_dir)
    wanted = set(keys) if keys is not None else None
    shards = read_manifest(set_dir)["shard"].unique()
    for shard in shards:
        for key, files in iter_tar_samples(set_dir / shard):
            if wanted is None or key in wanted:
                yield key, files["png"], json.loads(files["json"])


def load_arrays(set_dir: str | Path, keys: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode a set (or the given keys, in their order) into memory: uint8 images (N, C, H, W), int64
    labels, keys.

    For small images (the miniature study); large sets stream instead. Uses `arrays.npy` when the set
    has one (written with the shards for images up to 64 px).
    """
    wanted = list(keys) if keys is not None else None
    cache = Path(set_dir) / "arrays.npy"
    if cache.exists():
        manifest = read_manifest(set_dir)
        images = np.load(cache, allow_pickle=False)
        labels_all = manifest["label"].to_numpy(np.int64)
        all_keys = manifest["key"].tolist()
        if wanted is None:
            return images, labels_all, all_keys
        pos = {k: i for i, k in enumerate(all_keys)}
        missing = [k for k in wanted if k not in pos]
        if missing:
            raise KeyError(f"{set_dir}: {len(missing)} requested keys not found, e.g. {missing[:5]}")
        idx = np.array([pos[k] for k in wanted], dtype=np.int64)
        return images[idx], labels_all[idx], list(wanted)
    images, labels, out_keys = [], [], []
    for key, png, meta in iter_samples(set_dir, wanted):
        img = decode_png(png)
        images.append(img[None] if img.ndim == 2 else img.transpose(2, 0, 1))
        labels.append(meta["label"])
        out_keys.append(key)
    if wanted is not None:
        pos = {k: i for i, k in enumerate(out_keys)}
        missing = [k for k in wanted if k not in pos]
        if missing:
            raise KeyError(f"{set_dir}: {len(missing)} requested keys not found, e.g. {missing[:5]}")
        order = [pos[k] for k in wanted]
        return np.stack([images[i] for i in order]), np.asarray([labels[i] for i in order], np.int64), list(wanted)
    return np.stack(images), np.asarray(labels, dtype=np.int64), out_keys


def write_dataset_split(dataset: Any, split: str, out_dir: Path, shard_size: int, progress: bool = True,
                        limit: int = 0) -> int:
    """Write one split of a registered dataset (the first `limit` samples; 0: all) into synscale shards;
    returns the number of samples."""
    import itertools

    from synscale.progress import bar

    total = dataset.count(split)
    total = min(total, limit) if total and limit else (limit or total)
    samples = itertools.islice(dataset.samples(split), limit or None)
    with ShardWriter(out_dir, dataset.labels, shard_size=shard_size) as writer:
        for s in bar(samples, total=total, desc=f"shards {split}", unit="img", disable=not progress):
            writer.write(s.key, s.image, s.label, {"split": split, **s.meta})
    return len(writer.rows)


def read_labels(set_dir: str | Path) -> LabelSet | None:
    """A set's label set, or None for an unlabelled caption set."""
    path = Path(set_dir) / "labels.json"
    return LabelSet.load(path) if path.exists() else None


def captions_for(set_dir: str | Path, keys: Iterable[str] | None = None) -> list[str] | None:
    """The captions of `keys` (in their order; all samples in manifest order without keys), or None when
    the set has none."""
    texts = read_captions(set_dir)
    if texts is None or keys is None:
        return texts
    pos = dict(zip(read_manifest(set_dir)["key"], texts, strict=True))
    return [pos[k] for k in keys]


def caption_column(manifest: Any) -> str | None:
    """The manifest column that holds each sample's text: `caption` (pairs), else `prompt` (generated
    sets), else None."""
    return next((c for c in ("caption", "prompt") if c in manifest), None)


def read_captions(set_dir: str | Path) -> list[str] | None:
    """Every sample's caption in manifest order (generated sets: the prompt), or None if it has none."""
    manifest = read_manifest(set_dir)
    col = caption_column(manifest)
    return None if col is None else manifest[col].astype(str).tolist()
