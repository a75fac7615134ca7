"""synscale shards: webdataset tars of `<key>.png` (or `.jpg` / `.webp`: synscale.data.encoding) + `<key>.json`,
with a parquet manifest.

Tars are written deterministically (fixed mtime, owner and mode; PNG at a fixed compression level, JPEG and WebP
at a recorded quality, a source's kept bytes as they came), so the same samples always give the same bytes. A set
directory holds:

    shard-00000.tar, shard-00001.tar, ...   the samples, in write order
    manifest.parquet                          one row per sample: key, label, class_name, shard, + meta
                                              (`caption` for image-text pairs)
    labels.json                               the label set (absent for an unlabelled caption set, whose
                                              samples have label -1)
    arrays.npy                                for small sets only (images <= 64 px, <= 2 GiB decoded): all
                                              images decoded, uint8 (N, C, H, W) in manifest order, so that
                                              in-memory training does not decode them again (a cache; the
                                              tars are the data)

The manifest is written last, atomically, and carries in its parquet metadata (key `synscale`) every
shard's sample count, size and sha256 and the array cache's size and sha256: a set is complete when its
manifest is there, and a shard truncated or replaced afterwards, a cache edited or left from other data is
an error naming the file (`DataError`) instead of a smaller or a different set read without a word. Sets
written before the metadata existed are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from synscale.atomic import clear_partials, replacing
from synscale.data.encoding import PNG_COMPRESS_LEVEL, ImageEncoding, decode_png, encode_png, stored_image  # noqa: F401
from synscale.errors import DataError
from synscale.labels import LabelSet

ARRAY_CACHE_MAX_SIDE = 64
ARRAY_CACHE_MAX_BYTES = 2 << 30  # a set's decoded images above this are not cached (the writer holds them until close)


def array_cacheable(image: np.ndarray, total_bytes: int) -> bool:
    """Whether a set whose decoded images come to `total_bytes` so far (`image` the latest) has an array cache:
    small sets only (sides <= ARRAY_CACHE_MAX_SIDE, all of them <= ARRAY_CACHE_MAX_BYTES)."""
    return max(image.shape[:2]) <= ARRAY_CACHE_MAX_SIDE and total_bytes <= ARRAY_CACHE_MAX_BYTES
META_KEY = b"synscale"
MANIFEST_COLUMNS = ("key", "label", "shard")
DERIVED = ("arrays.npy", "tar_index.parquet")  # caches made from a set's shards
SKIPPED = "skipped.parquet"  # the samples writing the set skipped (write_dataset_split's error budget)
SET_FILES = ("manifest.parquet", "labels.json", "shards.json", SKIPPED, *DERIVED)  # shards.json: how `synscale shards` made it


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def finalize_set(out_dir: str | Path, rows: list[dict[str, Any]], labels: LabelSet | None,
                 arrays: np.ndarray | None = None, shard_pattern: str = r"shard-\d{5}\.tar", skipped: int = 0) -> None:
    """Make `out_dir` a complete set of `rows` (each with its `shard`): the labels, the array cache (`arrays`,
    N x C x H x W uint8, or none), then the manifest with every shard's count, size and sha256, written last
    and atomically. Caches and shards left in the directory from other data are removed first."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    (out_dir / "manifest.parquet").unlink(missing_ok=True)  # from here until the end, the set is not complete
    clear_partials(out_dir)  # a killed run's half-written caches and manifest
    for name in DERIVED:
        (out_dir / name).unlink(missing_ok=True)
    if not skipped:  # a record of skipped samples from other data
        (out_dir / SKIPPED).unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["shard"]] = counts.get(r["shard"], 0) + 1
    for p in out_dir.iterdir():
        if re.fullmatch(shard_pattern, p.name) and p.name not in counts:
            p.unlink()
    shards = [{"name": n, "samples": c, "bytes": (out_dir / n).stat().st_size, "sha256": file_sha256(out_dir / n)}
              for n, c in counts.items()]
    meta: dict[str, Any] = {"format": 1, "samples": len(rows), "shards": shards, "arrays": None,
                            **({"skipped": skipped} if skipped else {})}
    if labels is not None:
        labels.save(out_dir / "labels.json")
    if arrays is not None:
        with replacing(out_dir / "arrays.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arrays)
        meta["arrays"] = {"shape": list(arrays.shape), "bytes": (out_dir / "arrays.npy").stat().st_size,
                          "sha256": file_sha256(out_dir / "arrays.npy")}
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with replacing(out_dir / "manifest.parquet") as tmp:
        pq.write_table(table, tmp)


def set_meta(set_dir: str | Path) -> dict[str, Any] | None:
    """The shard and cache record a set's manifest carries (None for a set written before it existed)."""
    import pyarrow.parquet as pq

    path = Path(set_dir) / "manifest.parquet"
    try:
        md = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable manifest ({e}); regenerate the set") from None
    return json.loads(md[META_KEY]) if META_KEY in md else None


class TarOut:
    """A tar, byte for byte as tarfile writes it in USTAR format, of members with a fixed mtime (0), owner (0, no
    names) and mode (0644): each member's header (tarfile's own, TarInfo.tobuf), its bytes padded to 512, and
    at the end two zero blocks, padded to a 10,240-byte record. Without tarfile's copy of every member and its
    list of them, which took most of `synscale shards`' time per small image."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb")
        self.offset = 0

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        header = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
        pad = b"\0" * (-len(data) % tarfile.BLOCKSIZE)
        self.f.write(header + data + pad)
        self.offset += len(header) + len(data) + len(pad)

    def close(self) -> None:
        end = 2 * tarfile.BLOCKSIZE
        self.f.write(b"\0" * (end + -(self.offset + end) % tarfile.RECORDSIZE))
        self.f.close()


class ShardWriter:
    """Writes samples into numbered tars of at most `shard_size` samples, and the manifest at close(); images
    stored as `encoding` says (PNG by default)."""

    def __init__(self, out_dir: str | Path, labels: LabelSet | None, shard_size: int = 10000, prefix: str = "shard",
                 cache_arrays: bool = True, encoding: ImageEncoding = ImageEncoding("png")) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.shard_size = shard_size
        self.prefix = prefix
        self.rows: list[dict[str, Any]] = []
        self._tar: TarOut | None = None
        self._keys: set[str] = set()
        self._arrays: list[np.ndarray] | None = [] if cache_arrays else None  # None: no arrays.npy
        self._cached = 0  # bytes of the decoded images kept for the array cache
        self.encoding = encoding
        self.skipped = 0  # samples the writer's caller skipped (recorded in the manifest's record)

    def _shard_name(self, i: int) -> str:
        return f"{self.prefix}-{i:05d}.tar"

    def write(self, key: str, image: Any, label: int, meta: dict[str, Any] | None = None) -> None:
        """Write one sample: `image` a numpy uint8 (H, W) / (H, W, 3) array or a PIL image."""
        ext, data = self.encoding.encode(image)
        self.write_encoded(key, ext, data, label, meta, image if isinstance(image, np.ndarray) else None)

    def write_encoded(self, key: str, ext: str, data: bytes, label: int, meta: dict[str, Any] | None = None,
                      array: np.ndarray | None = None) -> None:
        """Write one sample already encoded (`ext`: png, jpg or webp); `array`: the image its bytes decode to,
        when the caller has it as an array (else the array cache decodes them)."""
        if key in self._keys:
            raise DataError(f"duplicate sample key {key!r}")
        if "." in key or "/" in key:
            raise DataError(f"sample key {key!r} must not contain '.' or '/' (webdataset splits on them)")
        if self.labels is None:
            if label != -1:
                raise DataError(f"label {label} of {key!r} in an unlabelled set (its samples have label -1)")
        elif not 0 <= label < len(self.labels):
            raise DataError(f"label {label} of {key!r} is outside the label set (0..{len(self.labels) - 1})")
        n = len(self.rows)
        if n % self.shard_size == 0:
            self._open(n // self.shard_size)
        name = self.labels.names[label] if self.labels is not None else ""
        record = {"key": key, "label": int(label), "class_name": name, **(meta or {})}
        self._add(f"{key}.{ext}", data)
        self._keep_array(data if array is None else array)
        self._add(f"{key}.json", json.dumps(record, sort_keys=True).encode())
        self.rows.append({**record, "shard": self._shard_name(n // self.shard_size)})
        self._keys.add(key)

    def _keep_array(self, image: np.ndarray | bytes) -> None:
        if self._arrays is None:
            return
        arr = decode_png(image) if isinstance(image, bytes) else image
        self._cached += arr.nbytes
        if not array_cacheable(arr, self._cached) or (self._arrays and arr.shape != self._arrays[0].shape):
            self._arrays = None
            return
        self._arrays.append(arr)

    def _open(self, index: int) -> None:
        if self._tar is not None:
            self._tar.close()
        self._tar = TarOut(self.out_dir / self._shard_name(index))

    def _add(self, name: str, data: bytes) -> None:
        assert self._tar is not None
        self._tar.add(name, data)

    def close_shards(self) -> None:
        """Close the open tar (the samples are all written; no manifest)."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def close(self) -> None:
        """Close the tars and make the directory a complete set (synscale.data.shards.finalize_set)."""
        self.close_shards()
        arrays = None
        if self._arrays:
            arr = np.stack(self._arrays)
            arrays = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
        finalize_set(self.out_dir, self.rows, self.labels, arrays, rf"{re.escape(self.prefix)}-\d{{5}}\.tar",
                     self.skipped)

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
    try:
        yield from _tar_samples(path, take)
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{path}: the shard is missing; regenerate the set") from None
        raise DataError(f"{path}: not a complete tar ({e}); regenerate the set") from None


def _tar_samples(path: str | Path, take: Callable[[int], bool] | None) -> Iterator[tuple[str, dict[str, bytes]]]:
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
    """A set's manifest (one row per sample), checked against the set's files: its columns, and every shard
    there with the size the manifest records (a truncated, missing or replaced shard is a DataError)."""
    return manifest_table(set_dir).to_pandas()


def manifest_table(set_dir: str | Path, columns: list[str] | None = None) -> Any:
    """A set's manifest as a pyarrow Table (only `columns`, where given), checked as read_manifest checks it: for
    large sets, whose every key and caption as a Python string would not fit in memory."""
    path = Path(set_dir) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{set_dir} is not a synscale set: no manifest.parquet")
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        table = pq.read_table(path, columns=columns)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable manifest ({e}); regenerate the set") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in schema.names]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (edited by hand?); regenerate the set")
    md = schema.metadata or {}
    meta = json.loads(md[META_KEY]) if META_KEY in md else None
    if meta is not None:
        _check_shards(Path(set_dir), table, meta)
    return table


def _check_shards(set_dir: Path, manifest: Any, meta: dict[str, Any]) -> None:
    if len(manifest) != meta["samples"]:
        raise DataError(f"{set_dir}/manifest.parquet: {len(manifest)} rows, its record says {meta['samples']} "
                        "(edited by hand?); regenerate the set")
    for sh in meta["shards"]:
        p = set_dir / sh["name"]
        if not p.exists():
            raise DataError(f"{p}: the shard is missing ({sh['samples']} samples); regenerate the set")
        size = p.stat().st_size
        if size != sh["bytes"]:
            raise DataError(f"{p}: {size:,} bytes, the manifest records {sh['bytes']:,} (truncated or replaced); "
                            "regenerate the set")


def verify_set(set_dir: str | Path) -> int:
    """Check every shard's sha256 (and the array cache's) against the manifest; returns the sample count."""
    set_dir = Path(set_dir)
    manifest = read_manifest(set_dir)
    meta = set_meta(set_dir)
    if meta is None:
        raise DataError(f"{set_dir}: its manifest has no shard record (written by an older synscale); rewrite the set")
    for sh in meta["shards"]:
        if file_sha256(set_dir / sh["name"]) != sh["sha256"]:
            raise DataError(f"{set_dir / sh['name']}: its bytes differ from the manifest's sha256 (changed after "
                            "it was written); regenerate the set")
    array_cache(set_dir, verify=True)
    return len(manifest)


def array_cache(set_dir: str | Path, verify: bool = False) -> Path | None:
    """The set's decoded-array cache when it has one that belongs to it (the size the manifest records;
    `verify`: and its sha256), else None. A cache the manifest does not record is not used."""
    path = Path(set_dir) / "arrays.npy"
    meta = set_meta(set_dir) if (Path(set_dir) / "manifest.parquet").exists() else None
    if meta is None:  # a set from before the record: its cache as it is
        return path if path.exists() else None
    rec = meta.get("arrays")
    if rec is None or not path.exists():  # none, or deleted: the shards are decoded instead
        return None
    if path.stat().st_size != rec["bytes"] or (verify and file_sha256(path) != rec["sha256"]):
        raise DataError(f"{path}: the array cache does not match the set's manifest (edited, or left from other "
                        "data); delete it (the shards are decoded instead)")
    return path


def iter_samples(set_dir: str | Path, keys: Iterable[str] | None = None) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """(key, stored image bytes (PNG, JPEG or WebP), json meta) for every sample (or the given keys), in shard order."""
    set_dir = Path(set_dir)
    wanted = set(keys) if keys is not None else None
    counts = read_manifest(set_dir).groupby("shard", sort=False).size()
    for shard, expected in counts.items():
        n = 0
        for key, files in iter_tar_samples(set_dir / shard):
            n += 1
            image = stored_image(files)
            if image is None or "json" not in files:
                raise DataError(f"{set_dir / shard}: sample {key!r} has no image (.png, .jpg, .webp) or no .json; "
                                "regenerate the set")
            if wanted is None or key in wanted:
                yield key, image[1], json.loads(files["json"])
        if n != expected:
            raise DataError(f"{set_dir / shard}: {n} samples, the manifest lists {expected} (truncated?); "
                            "regenerate the set")


def load_arrays(set_dir: str | Path, keys: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode a set (or the given keys, in their order) into memory: uint8 images (N, C, H, W), int64
    labels, keys.

    For small images (the miniature study); large sets stream instead. Uses `arrays.npy` when the set
    has one (written with the shards for images up to 64 px).
    """
    wanted = list(keys) if keys is not None else None
    manifest = read_manifest(set_dir)
    cache = array_cache(set_dir, verify=True)
    if cache is not None:
        images = np.load(cache, allow_pickle=False)
        if len(images) != len(manifest):
            raise DataError(f"{cache}: {len(images)} images for {len(manifest)} manifest rows (left from other "
                            "data?); delete it (the shards are decoded instead)")
        labels_all = manifest["label"].to_numpy(np.int64)
        all_keys = manifest["key"].tolist()
        if wanted is None:
            return images, labels_all, all_keys
        pos = {k: i for i, k in enumerate(all_keys)}
        missing = [k for k in wanted if k not in pos]
        if missing:
            raise DataError(f"{set_dir}: {len(missing)} requested keys not found, e.g. {missing[:5]}")
        idx = np.array([pos[k] for k in wanted], dtype=np.int64)
        return images[idx], labels_all[idx], list(wanted)
    images, labels, out_keys = [], [], []
    for key, png, meta in iter_samples(set_dir, wanted):
        img = decode_png(png, f"{set_dir}: sample {key!r}")
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        if images and img.shape != images[0].shape:
            raise DataError(f"{set_dir}: sample {key!r} is {img.shape[2]}x{img.shape[1]}x{img.shape[0]}, the first "
                            f"is {images[0].shape[2]}x{images[0].shape[1]}x{images[0].shape[0]}: images of one size "
                            "only; set data.image_size (or --image-size) to resize them")
        images.append(img)
        labels.append(meta["label"])
        out_keys.append(key)
    if wanted is not None:
        pos = {k: i for i, k in enumerate(out_keys)}
        missing = [k for k in wanted if k not in pos]
        if missing:
            raise DataError(f"{set_dir}: {len(missing)} requested keys not found, e.g. {missing[:5]}")
        order = [pos[k] for k in wanted]
        return np.stack([images[i] for i in order]), np.asarray([labels[i] for i in order], np.int64), list(wanted)
    return np.stack(images), np.asarray(labels, dtype=np.int64), out_keys


SMALL_SPLIT = 5000  # images below which worker processes save little or nothing (they take ~0.5 s to start)


def default_workers(total: int | None) -> int:
    """Worker processes for writing a split of `total` images (None: unknown): the cores this process may use,
    at most 8, for a split of SMALL_SPLIT images or more; 1 (this process) for a smaller one."""
    if total is not None and total < SMALL_SPLIT:
        return 1
    from synscale.device import cores

    return max(1, min(cores(), 8))


class ErrorBudget:
    """Samples a set may skip: at most `fraction` of those read (past the first GRACE, of those the first GRACE),
    each recorded with its shard or file, key and reason (`skipped.parquet` in the set). Past the budget, the write
    stops with one line; with a budget of 0 (the default for labelled sets), at the first bad sample, with its own
    line. `key`: the setting that sets the budget, named in the error."""

    GRACE = 1000

    def __init__(self, fraction: float, key: str) -> None:
        self.fraction, self.key = fraction, key
        self.skipped: list[Any] = []
        self.good = 0

    def skip(self, item: Any) -> None:
        from synscale.data.datasets import DatasetError

        self.skipped.append(item)
        if not self.fraction:
            raise DatasetError(f"{item.message} (or let a share of bad samples be skipped: {self.key})")
        if len(self.skipped) > self.fraction * max(self.good + len(self.skipped), self.GRACE):
            raise DatasetError(self.over())

    def over(self) -> str:
        from collections import Counter

        seen = self.good + len(self.skipped)
        why = ", ".join(f"{reason}: {n:,}" for reason, n in Counter(s.reason for s in self.skipped).most_common())
        return (f"{len(self.skipped):,} of the {seen:,} samples read could not be read ({why}), more than {self.key} = "
                f"{self.fraction:g} allows; the first: {self.skipped[0].message}")

    def finish(self, out_dir: Path) -> None:
        """Check the budget over the whole set and record what was skipped in `out_dir/skipped.parquet`."""
        from synscale.data.datasets import DatasetError

        if len(self.skipped) > self.fraction * (self.good + len(self.skipped)):
            raise DatasetError(self.over())
        if self.skipped:
            import pandas as pd

            with replacing(out_dir / SKIPPED) as tmp:
                pd.DataFrame({"sample": [s.where for s in self.skipped], "reason": [s.reason for s in self.skipped],
                              "message": [s.message for s in self.skipped]}).to_parquet(tmp, index=False)


def skipped_record(set_dir: str | Path) -> dict[str, Any]:
    """What writing a set skipped: {"skipped": n, "samples": the set's, "reasons": {reason: n}} (zeros for a set that
    skipped nothing, or was written before sets recorded it)."""
    meta = set_meta(set_dir) or {}
    record = {"skipped": int(meta.get("skipped", 0)), "samples": int(meta.get("samples", 0)), "reasons": {}}
    if record["skipped"] and (Path(set_dir) / SKIPPED).exists():
        import pandas as pd

        record["reasons"] = pd.read_parquet(Path(set_dir) / SKIPPED)["reason"].value_counts().to_dict()
    return record


def write_dataset_split(dataset: Any, split: str, out_dir: Path, shard_size: int, progress: bool = True,
                        limit: int = 0, overwrite: bool = False, workers: int = 1, max_bad_fraction: float = 0.0,
                        budget_key: str = "--max-bad-fraction", encoding: ImageEncoding = ImageEncoding("png")) -> int:
    """Write one split of a registered dataset (the first `limit` readable samples; 0: all) into synscale shards;
    returns the number of samples. `out_dir` must be empty (or absent); `overwrite`: a set there is replaced.
    `workers` > 1: decode, resize and encode in that many processes (0: default_workers); the set is the same,
    byte for byte. Samples that cannot be read are skipped up to `max_bad_fraction` of them (ErrorBudget), each
    recorded in the set (skipped.parquet, and its count in the manifest's record). `encoding`: how the images are
    stored (synscale.data.encoding)."""
    import contextlib

    from synscale.data.parallel import Skipped, encoded_samples
    from synscale.progress import bar

    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    total = dataset.count(split)
    total = min(total, limit) if total and limit else (limit or total)
    workers = workers or default_workers(total)
    native, size = not dataset.image_size, None
    budget = ErrorBudget(max_bad_fraction, budget_key)
    with ShardWriter(out_dir, dataset.labels, shard_size=shard_size) as writer, \
            contextlib.closing(encoded_samples(dataset, split, workers, encoding)) as encoded:
        for e in bar(encoded, total=total, desc=f"shards {split}", unit="img", disable=not progress):
            if isinstance(e, Skipped):
                budget.skip(e)
                continue
            size = size or e.shape
            if native and e.shape != size:
                where = Path(dataset.root) / split / e.meta["file"] if "file" in e.meta else f"{split} sample {e.key!r}"
                raise DataError(f"{where}: {e.shape[1]}x{e.shape[0]} px, the first image is {size[1]}x{size[0]}: a set "
                                "holds images of one size; set data.image_size (synscale shards: --image-size) to "
                                "resize and centre-crop them")
            writer.write_encoded(e.key, e.ext, e.data, e.label, {"split": split, **e.meta}, e.array)
            budget.good += 1
            if limit and budget.good == limit:
                break
        budget.finish(out_dir)
        writer.skipped = len(budget.skipped)
    return len(writer.rows)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output directory that holds anything but a set (a set only with `overwrite`: the writer
    then replaces it, and finalize_set removes what the new set does not have)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a directory; choose another output directory")
    present = sorted(p.name for p in out_dir.iterdir())
    if not present:
        return
    ours = [n for n in present if n in SET_FILES or re.fullmatch(r"shard-\d{5}\.tar", n)]
    if len(ours) != len(present):
        raise DataError(f"{out_dir}: holds other files ({', '.join(n for n in present if n not in ours)[:80]}); choose "
                        "an empty directory")
    if not overwrite:
        raise DataError(f"{out_dir}: holds a set; choose an empty directory, or pass --overwrite to replace it")


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
