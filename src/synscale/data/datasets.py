"""Real datasets behind one registry. Each yields samples `(key, image, label)` per split.

- `fashion-mnist`: Debian's `dataset-fashion-mnist` files (gzipped IDX), or the same files in a dir.
- `imagefolder`: any class-per-folder tree, `<root>/<split>/<class>/<image>` (the user's own data,
  an ImageNet split). Folder names that are WordNet ids are kept as the label set's wnids.
- `webdataset`: existing webdataset shards `<root>/<split>-*.tar` (or a brace pattern with `{split}`,
  e.g. `/data/in1k/{split}-{000000..000146}.tar`) with an image (`png`/`jpg`/`jpeg`/`webp`) and a label
  (`cls`, or `label` in the `json`).
- `img2dataset`: image-text pairs as img2dataset writes them for LAION / CC12M (`<key>.jpg|png|webp` +
  `<key>.txt` caption + optional `<key>.json`): a directory of `*.tar`, a brace pattern
  (`/data/laion/{00000..41455}.tar`) or any URL the webdataset library opens (`pipe:...`, http). No
  labels; each sample's caption is in its meta.
- `hf` (alias `huggingface`): a Hugging Face `datasets` dataset, a directory `save_to_disk` wrote or a hub
  name (`ILSVRC/imagenet-1k`) already in the local cache (read offline, never downloaded); the image and
  label columns are named by `image_column` / `label_column`, the class names are the label column's
  ClassLabel names.

Webdataset shards are read with the webdataset library.

A source reads its samples in two steps, `items(split)` (what is cheap to read and to send to another
process: a file's path, a sample's bytes) and `load(item) -> Sample` (decoding, resizing), so that
`synscale shards --workers N` decodes in N processes (synscale.data.parallel); `samples(split)`
is the two in one process.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from synscale.data.decode import decode_image, header_size
from synscale.data.keys import image_folder_keys, sample_key
from synscale.errors import BadSample, DatasetError
from synscale.labels import FASHION_MNIST_CLASSES, WNID, LabelSet, read_names
from synscale.registry import Registry

DATASETS: Registry = Registry("dataset")  # DataSource subclasses by name

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Sample:
    key: str
    image: Any  # numpy uint8 array (H, W) / (H, W, 3) or a PIL image
    label: int
    meta: dict[str, Any]
    source: bytes | None = None  # the file bytes the image was decoded from (a set may keep them: data.encoding)


DEFAULT_COLUMNS = {"image_column": "image", "label_column": "label"}


class DataSource:
    """A registered dataset source: what every source does, and the capabilities a source may declare (a base
    method answers None where a source cannot say: its count, its class counts, its image sizes).

    A source reads in two steps: `items(split)`, what is cheap to read and to send to another process, and
    `load(item) -> Sample` (decode, resize); `samples` is the two in one process."""

    named_columns: ClassVar[bool] = False  # takes image_column / label_column (create_dataset)
    labels: LabelSet | None = None  # None: unlabelled image-text pairs
    root: Any = ""
    image_size: int = 0  # 0: images as they are; else shorter side resized + centre crop

    def splits(self) -> list[str]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A cheap identity of the source's files (a shards stage's input)."""
        raise NotImplementedError

    def items(self, split: str) -> Iterator[Any]:
        raise NotImplementedError

    def load(self, item: Any) -> Sample:
        raise NotImplementedError

    def samples(self, split: str) -> Iterator[Sample]:
        return map(self.load, self.items(split))

    def count(self, split: str) -> int | None:
        """The split's samples, where known without reading them."""
        return None

    def class_counts(self, split: str) -> list[int] | None:
        """Samples per class of the split, where known without decoding images (preflight checks scales)."""
        return None

    def image_sizes(self, split: str, n: int) -> dict[str, tuple[int, int]] | None:
        """Up to `n` images' (width, height) by file, where cheap (preflight checks image sizes)."""
        return None


def create_dataset(name: str, root: str = "", image_size: int = 0, *, image_column: str = "image",
                   label_column: str = "label") -> Any:
    """The registered source `name` at `root`. `image_column` / `label_column` name the columns that hold the
    image and the label, for the sources that read named columns (their entry says `named_columns`: hf); the
    others take the defaults only."""
    entry = DATASETS.get(name)
    columns = {"image_column": image_column, "label_column": label_column}
    if entry.named_columns:
        return entry(root=root, image_size=image_size, **columns)
    changed = [f"{k} = {v!r}" for k, v in columns.items() if v != DEFAULT_COLUMNS[k]]
    if changed:
        raise DatasetError(f"dataset {name} has no named columns ({', '.join(changed)}): image_column and "
                           "label_column are for the hf source; leave them out")
    return entry(root=root, image_size=image_size)


def columns_of(table: Any) -> dict[str, str]:
    """The `image_column` / `label_column` of a config table (or the command line's arguments) that differ from
    the defaults: what create_dataset takes, and what enters a shards stage's params (stages that use the
    defaults keep their ids)."""
    return {k: getattr(table, k) for k, d in DEFAULT_COLUMNS.items() if getattr(table, k, d) != d}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (16 hex digits); a clear error when it does not exist."""
    if not path.is_file():
        raise DatasetError(f"no such file {path}")
    return _sha256_files([path])


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _stat_fingerprint(paths: list[Path], root: Path) -> str:
    """Cheap id for large trees: relative path, size and mtime of every file."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def load_image(source: str | Path | bytes, where: str, image_size: int) -> Any:
    """An image file or its bytes as RGB (synscale.data.decode: upright, high bit depths scaled, transparency over
    white), resized and centre-cropped to `image_size` (0: as it is); `where` names it in the BadSample."""
    img = decode_image(source, where)
    return resize_center_crop(img, image_size) if image_size else img


def readable(name: str) -> str:
    """A file name as text a table can hold: a byte that is not UTF-8 as `\\xNN`."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def resize_center_crop(img: Any, size: int) -> Any:
    """Shorter side to `size` (bicubic, antialiased), then a centred size x size crop."""
    from PIL import Image

    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


# ---------------------------------------------------------------------------------------------------


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 0x08 ndim, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: expected {dims} values, found {arr.size} (truncated file?)")
    return arr.reshape(dims)


@DATASETS.register("fashion-mnist")
class FashionMNIST(DataSource):
    """Fashion-MNIST from Debian's package (`apt-get install dataset-fashion-mnist`) or a given dir."""

    FILES = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def __init__(self, root: str = "", image_size: int = 0) -> None:
        self.root = Path(root) if root else DEBIAN_FASHION_MNIST
        self.image_size = image_size
        self.labels = LabelSet(FASHION_MNIST_CLASSES)
        self._paths = {split: tuple(self._find(stem) for stem in stems) for split, stems in self.FILES.items()}

    def _find(self, stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (self.root / name).exists():
                return self.root / name
        how = (
            "install Debian's package: sudo apt-get install -y dataset-fashion-mnist"
            if self.root == DEBIAN_FASHION_MNIST
            else "give the directory holding the four IDX files (gzipped or not) as data.root"
        )
        raise DatasetError(f"Fashion-MNIST file {stem}(.gz) not found in {self.root}: {how}")

    def splits(self) -> list[str]:
        return list(self.FILES)

    def fingerprint(self) -> str:
        return _sha256_files([p for pair in self._paths.values() for p in pair])

    def items(self, split: str) -> Iterator[tuple[str, int, np.ndarray, int]]:
        if split not in self._paths:
            raise DatasetError(f"fashion-mnist has splits {self.splits()}, not {split!r}")
        images_path, labels_path = self._paths[split]
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise DatasetError(f"{images_path}: {len(images)} images but {len(labels)} labels")
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            yield split, i, img, int(lab)

    def load(self, item: tuple[str, int, np.ndarray, int]) -> Sample:
        split, i, img, label = item
        if self.image_size and self.image_size != img.shape[0]:
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((self.image_size,) * 2, Image.Resampling.BICUBIC))
        return Sample(f"{split}-{i:07d}", img, label, {"index": i})


    def count(self, split: str) -> int:
        return int(read_idx(self._paths[split][1]).shape[0])

    def class_counts(self, split: str) -> list[int]:
        """Images per class of a split (label order)."""
        labels = read_idx(self._paths[split][1])
        return np.bincount(labels, minlength=len(self.labels)).tolist()


@DATASETS.register("imagefolder")
class ImageFolder(DataSource):
    """`<root>/<split>/<class>/<image>`; class index = position of the folder in sorted order."""

    def __init__(self, root: str = "", image_size: int = 0) -> None:
        if not root:
            raise DatasetError("imagefolder needs data.root: a directory with one folder per split")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"imagefolder root {self.root} is not a directory")
        self.image_size = image_size
        splits = self.splits()
        if not splits:
            raise DatasetError(f"{self.root}: no split folders (expected e.g. {self.root}/train/<class>/...)")
        classes = sorted(d.name for d in (self.root / splits[0]).iterdir() if d.is_dir())
        if not classes:
            raise DatasetError(f"{self.root / splits[0]}: no class folders (expected {self.root / splits[0]}/<class>/"
                               "<image>); remove the empty split folder or fill it")
        self.folders = tuple(classes)  # label i is the i-th; classnames.txt may give them other names
        self.labels = LabelSet.from_folder_names([readable(c) for c in classes], self.root / "classnames.txt")

    def splits(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir())

    def _files(self, split: str) -> list[tuple[Path, int]]:
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise DatasetError(f"imagefolder: no split folder {split_dir} (found: {self.splits()})")
        out = []
        present = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        unknown = set(present) - set(self.folders)
        if unknown:
            first = self.splits()[0]
            raise DatasetError(f"{split_dir}: class folders {sorted(unknown)[:5]} are not in split {first!r}, whose "
                               f"class folders are the classes ({len(self.folders)}: {', '.join(self.folders[:5])}"
                               f"{', ...' if len(self.folders) > 5 else ''}); add them to {self.root / first} or "
                               "remove them here")
        for label, folder in enumerate(self.folders):
            for p in sorted((split_dir / folder).glob("*")) if (split_dir / folder).is_dir() else []:
                if p.suffix.lower() in IMAGE_EXTS:
                    out.append((p, label))
        if not out:
            raise DatasetError(f"{split_dir}: no images ({', '.join(IMAGE_EXTS)}) in its class folders")
        return out

    def fingerprint(self) -> str:
        files = [p for s in self.splits() for p, _ in self._files(s)]
        return _stat_fingerprint(files, self.root)

    def items(self, split: str) -> Iterator[tuple[str, Path, int, str]]:
        """(split, path, label, key) of every image of the split; keys: synscale.data.keys.image_folder_keys."""
        files = self._files(split)
        keys = image_folder_keys(f"{split}-", [(p.parent.name, p.name) for p, _ in files], self.folders)
        return ((split, p, label, key) for (p, label), key in zip(files, keys, strict=True))

    def load(self, item: tuple[str, Path, int, str]) -> Sample:
        split, p, label, key = item
        data = _read_file(p, readable(str(p)))
        img = load_image(data, readable(str(p)), self.image_size)
        return Sample(key, img, label, {"file": readable(p.relative_to(self.root / split).as_posix())}, data)


    def count(self, split: str) -> int:
        return len(self._files(split))

    def class_counts(self, split: str) -> list[int]:
        """Images per class of a split (label order)."""
        out = [0] * len(self.labels)
        for _, label in self._files(split):
            out[label] += 1
        return out

    def image_sizes(self, split: str, n: int) -> dict[str, tuple[int, int]]:
        """(width, height) of `n` images spread over the split, read from their headers (a corrupt one is
        named); the whole split is checked when its shards are written."""
        files = self._files(split)
        return {str(p): header_size(p, str(p)) for p, _ in files[:: max(1, len(files) // n)][:n]}


IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


def _is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def shard_urls(spec: str) -> list[str]:
    """The shards a spec names: a directory (its `*.tar`, sorted), a brace pattern, or URLs."""
    import braceexpand

    if not _is_url(spec) and Path(spec).is_dir():
        return [str(p) for p in sorted(Path(spec).glob("*.tar"))]
    return list(braceexpand.braceexpand(spec))


def _fingerprint_urls(urls: list[str]) -> str:
    local = [Path(u) for u in urls if not _is_url(u)]
    missing = [p for p in local if not p.exists()]
    if missing:
        raise DatasetError(f"no such shard {missing[0]} ({len(missing)} of {len(urls)} missing)")
    h = hashlib.sha256("\n".join(u for u in urls if _is_url(u)).encode())
    if local:
        h.update(_stat_fingerprint(local, Path("/")).encode())
    return h.hexdigest()[:16]


def iter_webdataset(urls: list[str]) -> Iterator[dict[str, Any]]:
    """Samples (dicts of extension -> bytes, `__key__`, `__url__`) of the shards, in order, read by the
    webdataset library."""
    import tarfile

    import webdataset as wds

    for u in urls:
        if not _is_url(u):
            check_tar_complete(Path(u))
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    try:
        yield from ds
    except (OSError, ValueError, tarfile.TarError) as e:  # unreadable or missing shard: name it
        raise DatasetError(f"reading shards {urls[0]}{' ...' if len(urls) > 1 else ''}: {e}") from None


def check_tar_complete(path: Path) -> None:
    """A local tar must end with its end-of-archive blocks (1,024 zero bytes, in whole 512-byte records):
    one cut at a sample boundary otherwise reads as a complete, smaller set without a word."""
    if not path.exists():
        raise DatasetError(f"no such shard {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
    if size % 512 or size < 1536 or tail.count(0) != len(tail):
        raise DatasetError(f"{path}: truncated (it does not end with a tar's end-of-archive blocks; {size:,} bytes); "
                           "copy or download it again")


def _where(sample: dict[str, Any]) -> str:
    return f"{sample.get('__url__')}: sample {sample['__key__']!r}"


def _decode_image(sample: dict[str, Any], image_size: int) -> tuple[Any, bytes]:
    """(the image, its file bytes) of a webdataset sample."""
    ext = next((e for e in IMAGE_KEYS if e in sample), None)
    if ext is None:
        raise BadSample(_where(sample), "no image", f"{_where(sample)} has no png/jpg/jpeg/webp image")
    return load_image(sample[ext], _where(sample), image_size), sample[ext]


def _read_file(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadSample(where, "unreadable image", f"{where}: cannot be read ({e.strerror}); remove or replace it") from None


def _sample_json(sample: dict[str, Any]) -> dict[str, Any]:
    """A webdataset sample's `.json` ({} where it has none)."""
    if "json" not in sample:
        return {}
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as e:
        raise BadSample(_where(sample), "unreadable json", f"{_where(sample)}: its .json is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise BadSample(_where(sample), "unreadable json", f"{_where(sample)}: its .json is not a JSON object")
    return meta


@DATASETS.register("webdataset")
class WebDatasetSource(DataSource):
    """Existing class-labelled webdataset shards: `<root>/<split>-*.tar`, or `root` a pattern containing
    `{split}` (and braces: `/data/in1k/{split}-{000000..000146}.tar`). Class names, one per line in label
    order, in `classnames.txt` beside the shards."""

    def __init__(self, root: str = "", image_size: int = 0) -> None:
        if not root:
            raise DatasetError("webdataset needs data.root: a directory of <split>-*.tar or a '{split}' pattern")
        self.root = root
        self.image_size = image_size
        # the shards' directory: root itself, or a pattern's part before its first brace, up to the last '/'
        base = Path(root[: root.index("{")].rpartition("/")[0] or ".") if "{split}" in root else Path(root)
        names_file = base / "classnames.txt"
        if not names_file.exists():
            raise DatasetError(f"webdataset: put the class names, one per line in label order, in {names_file}")
        names = read_names(names_file, fix="give each label its own name")
        if not names:
            raise DatasetError(f"{names_file}: no class names; write them one per line, in label order")
        self.labels = LabelSet(tuple(names), tuple(names) if all(WNID.match(n) for n in names) else None)

    def _shards(self, split: str) -> list[str]:
        if "{split}" in self.root:
            urls = shard_urls(self.root.replace("{split}", split))
        else:
            urls = [str(p) for p in sorted(Path(self.root).glob(f"{split}-*.tar"))]
        if not urls:
            raise DatasetError(f"webdataset: no shards {self.root}/{split}-*.tar")
        return urls

    def splits(self) -> list[str]:
        if "{split}" in self.root:
            return []
        return sorted({p.name.rsplit("-", 1)[0] for p in Path(self.root).glob("*-*.tar")})

    def fingerprint(self) -> str:
        if "{split}" in self.root:
            return hashlib.sha256(self.root.encode()).hexdigest()[:16]
        return _fingerprint_urls([u for s in self.splits() for u in self._shards(s)])

    def items(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((split, sample) for sample in iter_webdataset(self._shards(split)))

    def load(self, item: tuple[str, dict[str, Any]]) -> Sample:
        split, sample = item
        key = sample["__key__"]
        meta = _sample_json(sample)
        raw = sample["cls"].decode("utf-8", "replace").strip() if "cls" in sample else meta.get("label")
        if raw is None:
            raise BadSample(_where(sample), "no label", f"{_where(sample)} has no label (.cls, or 'label' in .json)")
        try:
            whole = not isinstance(raw, bool) and not (isinstance(raw, float) and not raw.is_integer())
            label = int(raw) if whole else None
        except (TypeError, ValueError, OverflowError):
            label = None
        if label is None:
            raise BadSample(_where(sample), "bad label", f"{_where(sample)} has label {raw!r}, not an integer") from None
        if not 0 <= label < len(self.labels):
            raise BadSample(_where(sample), "bad label",
                            f"{_where(sample)} has label {label}, outside 0..{len(self.labels) - 1}")
        img, data = _decode_image(sample, self.image_size)
        return Sample(sample_key(f"{split}-{key}"), img, label, {"source_key": readable(key)}, data)


@DATASETS.register("img2dataset")
class Img2DatasetPairs(DataSource):
    """Image-text pairs in webdataset shards as img2dataset writes them (LAION, CC12M): `<key>.jpg|png|webp`,
    `<key>.txt` (the caption) and optionally `<key>.json` (a `caption` there too). `root`: a directory of
    `*.tar`, a brace pattern or URLs; there is one split, whatever its name. Unlabelled (label -1)."""

    labels = None

    def __init__(self, root: str = "", image_size: int = 0) -> None:
        if not root:
            raise DatasetError("img2dataset pairs need a root: a directory of *.tar, a brace pattern or a URL")
        self.root, self.image_size = root, image_size
        self.urls = shard_urls(root)
        if not self.urls:
            raise DatasetError(f"img2dataset: no shards in {root}")

    def splits(self) -> list[str]:
        return ["train"]

    def fingerprint(self) -> str:
        return _fingerprint_urls(self.urls)

    def items(self, split: str = "train") -> Iterator[dict[str, Any]]:
        return iter_webdataset(self.urls)

    def load(self, sample: dict[str, Any]) -> Sample:
        key = sample["__key__"]
        meta = _sample_json(sample)
        try:
            caption = sample["txt"].decode("utf-8").strip() if "txt" in sample else meta.get("caption") or ""
        except UnicodeDecodeError as e:
            raise BadSample(_where(sample), "caption not UTF-8", f"{_where(sample)}: its caption (.txt) is not UTF-8 "
                            f"text ({e.reason} at byte {e.start}); re-encode it") from None
        if not isinstance(caption, str):
            raise BadSample(_where(sample), "caption not text", f"{_where(sample)}: the 'caption' of its .json is "
                            f"{type(caption).__name__} {str(caption)[:60]!r}, not text; make it a string")
        caption = caption.strip()
        if not caption:
            raise BadSample(_where(sample), "no caption", f"{_where(sample)} has no caption (.txt, or 'caption' in "
                            ".json); remove it or re-run img2dataset with captions")
        img, data = _decode_image(sample, self.image_size)
        return Sample(sample_key(key), img, -1, {"caption": caption, "source_key": readable(key)}, data)


# ---------------------------------------------------------------------------------------------------


def _import_datasets() -> Any:
    """The `datasets` package (the `datasets` extra), imported only when the hf source is used."""
    from synscale.extras import require

    require("datasets", "the hf dataset source")
    import datasets

    return datasets


@DATASETS.register("huggingface")
@DATASETS.register("hf")
class HFDataset(DataSource):
    """A Hugging Face `datasets` dataset: `root` is a directory `Dataset.save_to_disk` or
    `DatasetDict.save_to_disk` wrote, or a hub name (`ILSVRC/imagenet-1k`) that `load_dataset` put in the
    local cache before (HF_DATASETS_CACHE); it is read offline and never downloaded. A DatasetDict's splits
    are its splits, a single Dataset's is "train". `image_column` holds an Image feature, `label_column` a
    ClassLabel, whose names are the classes (names that are WordNet ids are kept as wnids). Images come as
    RGB, resized and centre-cropped to `image_size` (0: as they are)."""

    named_columns = True

    def __init__(self, root: str = "", image_size: int = 0, image_column: str = "image",
                 label_column: str = "label") -> None:
        if not root:
            raise DatasetError("the hf source needs data.root: a directory save_to_disk wrote, or a hub dataset "
                               "name in the local cache (e.g. ILSVRC/imagenet-1k)")
        self.root, self.image_size = root, image_size
        self.image_column, self.label_column = image_column, label_column
        self._splits = open_hf(root)
        first = "train" if "train" in self._splits else next(iter(self._splits))
        self.labels = self._label_set(first)

    def _label_set(self, split: str) -> LabelSet:
        feature = self._split(split).features[self.label_column]
        if not isinstance(feature, _import_datasets().ClassLabel):
            raise DatasetError(f"{self.root} [{split}]: label column {self.label_column!r} is {feature!r}, not a "
                               "ClassLabel, so its class names are unknown; cast it (dataset.cast_column("
                               f"{self.label_column!r}, datasets.ClassLabel(names=[...]))) and save it again")
        names = tuple(feature.names)
        return LabelSet(names, names if all(WNID.match(n) for n in names) else None)

    def _split(self, split: str) -> Any:
        """The split's Dataset, its image and label columns checked (present, an Image feature)."""
        if split not in self._splits:
            raise DatasetError(f"{self.root}: no split {split!r} (it has: {', '.join(self._splits)})")
        ds = self._splits[split]
        for key, column in (("image_column", self.image_column), ("label_column", self.label_column)):
            if column not in ds.features:
                raise DatasetError(f"{self.root} [{split}]: no column {column!r} (it has: {', '.join(ds.features)}); "
                                   f"set {key} (on the command line: --{key.replace('_', '-')})")
        feature = ds.features[self.image_column]
        if not isinstance(feature, _import_datasets().Image):
            raise DatasetError(f"{self.root} [{split}]: image column {self.image_column!r} is {feature!r}, not an "
                               "Image feature; set image_column to the column that holds the images")
        return ds

    def _raw(self, split: str) -> Any:
        """The split's image and label columns, the images undecoded ({"bytes", "path"})."""
        ds = self._split(split).select_columns([self.image_column, self.label_column])
        return ds.cast_column(self.image_column, _import_datasets().Image(decode=False))

    def splits(self) -> list[str]:
        return list(self._splits)

    def fingerprint(self) -> str:
        """Each split's own fingerprint, and the size and mtime of its arrow files (a dataset saved again)."""
        h = hashlib.sha256()
        for name, ds in self._splits.items():
            h.update(f"{name}\0{ds._fingerprint}\n".encode())
            files = [Path(f["filename"]) for f in ds.cache_files]
            h.update(_stat_fingerprint(files, Path("/")).encode())
        return h.hexdigest()[:16]

    def items(self, split: str) -> Iterator[tuple[str, int, dict[str, Any], int | None]]:
        i = 0
        for batch in self._raw(split).iter(batch_size=256):
            for image, label in zip(batch[self.image_column], batch[self.label_column], strict=True):
                yield split, i, image, label
                i += 1

    def load(self, item: tuple[str, int, dict[str, Any], int | None]) -> Sample:
        split, i, image, label = item
        where = f"{self.root} [{split}]: sample {i}"
        if label is None or not 0 <= label < len(self.labels):
            raise BadSample(where, "bad label", f"{where} has label {label}, outside 0..{len(self.labels) - 1} (an "
                            "unlabelled split?); use a labelled split")
        data = _hf_image_bytes(image, where)
        img = load_image(data, where, self.image_size)
        return Sample(sample_key(f"{split}-{i:07d}"), img, int(label), {"index": i}, data)


    def count(self, split: str) -> int:
        return len(self._split(split))

    def class_counts(self, split: str) -> list[int]:
        """Images per class of a split (label order; samples without a label, -1, are not counted)."""
        labels = np.asarray(self._split(split).with_format("numpy")[self.label_column], dtype=np.int64)
        return np.bincount(labels[labels >= 0], minlength=len(self.labels)).tolist()

    def image_sizes(self, split: str, n: int) -> dict[str, tuple[int, int]]:
        """(width, height) of `n` images spread over the split, from their headers."""
        raw = self._raw(split)
        out = {}
        for i in range(0, len(raw), max(1, len(raw) // n))[:n]:
            where = f"{self.root} [{split}]: sample {i}"
            out[where] = header_size(_hf_image_bytes(raw[i][self.image_column], where), where)
        return out


def _hf_image_bytes(image: dict[str, Any] | None, where: str) -> bytes:
    """An undecoded Image feature value's bytes (a value that holds only a path: the file's)."""
    if image is None:
        raise BadSample(where, "no image", f"{where} has no image")
    if image.get("bytes") is not None:
        return image["bytes"]
    path = Path(image.get("path") or "")
    if not path.is_file():
        raise BadSample(where, "no image", f"{where}: its image is a path, {path}, that is not a file here")
    return path.read_bytes()


def open_hf(root: str) -> dict[str, Any]:
    """{split: Dataset} of a directory save_to_disk wrote, or of a hub dataset in the local cache (offline):
    `owner/name`, or `owner/name:config` for one of its configurations."""
    path = Path(root).expanduser()
    if path.is_dir():
        if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            raise DatasetError(f"{path}: not a directory that save_to_disk wrote (no dataset_dict.json or state.json); "
                               "give the directory Dataset.save_to_disk or DatasetDict.save_to_disk wrote")
        datasets = _import_datasets()
        loaded = datasets.load_from_disk(str(path))
    elif path.exists() or root.startswith(("/", ".", "~")) or root.count("/") > 1:
        raise DatasetError(f"hf: {path} {'is not a directory' if path.exists() else 'does not exist'}; give a "
                           "directory that save_to_disk wrote, or a hub dataset name in the local cache")
    else:
        datasets = _import_datasets()
        loaded = _load_cached(datasets, root)
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _cached_configs(cache: str, name: str) -> list[str]:
    """The configurations of hub dataset `name` in the datasets cache (`<owner>___<name>/<config>/`)."""
    folder = Path(cache) / name.replace("/", "___")
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _load_cached(datasets: Any, root: str) -> Any:
    """`load_dataset(name[, config])` of `root` (`name` or `name:config`) from the datasets cache alone:
    offline, so that nothing is downloaded."""
    import os

    from huggingface_hub import constants

    name, _, config = root.partition(":")

    cache = os.environ.get("HF_DATASETS_CACHE") or str(datasets.config.HF_DATASETS_CACHE)
    offline = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE, datasets.logging.get_verbosity())
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True  # read at import: the env var is too late
    datasets.logging.set_verbosity_error()  # not "Using the latest cached version ..." on every open
    try:
        return datasets.load_dataset(name, config or None, cache_dir=cache)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetsError):
        call = ", ".join(repr(a) for a in (name, config) if a)
        raise DatasetError(f"{root}: not a directory here, nor a dataset in the Hugging Face datasets cache ({cache}); "
                           "download it once, online (a gated one after `hf auth login`), with: python -c \"import "
                           f"datasets; datasets.load_dataset({call})\"") from None
    except ValueError as e:  # in the cache, but not as load_dataset(name) reads it: several configurations
        configs = _cached_configs(cache, name)
        if not config and len(configs) > 1:
            raise DatasetError(f"{root}: the Hugging Face datasets cache ({cache}) holds several configurations of it "
                               f"({', '.join(configs)}); name one, e.g. {name}:{configs[0]}") from None
        raise DatasetError(f"{root} in the Hugging Face datasets cache ({cache}): {' '.join(str(e).split())}") from None
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = offline[:2]
        datasets.logging.set_verbosity(offline[2])
