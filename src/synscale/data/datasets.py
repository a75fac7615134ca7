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

Webdataset shards are read with the webdataset library.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synscale.errors import UserError, image_error
from synscale.labels import FASHION_MNIST_CLASSES, WNID, LabelSet
from synscale.registry import Registry

DATASETS: Registry = Registry("dataset")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Sample:
    key: str
    image: Any  # numpy uint8 array (H, W) / (H, W, 3) or a PIL image
    label: int
    meta: dict[str, Any]


class DatasetError(UserError, RuntimeError):
    """A dataset that cannot be read; the message says what to do about it."""


def create_dataset(name: str, root: str = "", image_size: int = 0) -> Any:
    return DATASETS.create(name, root=root, image_size=image_size)


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
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


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
class FashionMNIST:
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

    def samples(self, split: str) -> Iterator[Sample]:
        if split not in self._paths:
            raise DatasetError(f"fashion-mnist has splits {self.splits()}, not {split!r}")
        images_path, labels_path = self._paths[split]
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise DatasetError(f"{images_path}: {len(images)} images but {len(labels)} labels")
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            if self.image_size and self.image_size != img.shape[0]:
                from PIL import Image

                img = np.asarray(Image.fromarray(img).resize((self.image_size,) * 2, Image.Resampling.BICUBIC))
            yield Sample(f"{split}-{i:07d}", img, int(lab), {"index": i})

    def count(self, split: str) -> int:
        return int(read_idx(self._paths[split][1]).shape[0])

    def class_counts(self, split: str) -> list[int]:
        """Images per class of a split (label order)."""
        labels = read_idx(self._paths[split][1])
        return np.bincount(labels, minlength=len(self.labels)).tolist()


@DATASETS.register("imagefolder")
class ImageFolder:
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
        self.labels = LabelSet.from_folder_names(classes, self.root / "classnames.txt")

    def splits(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir())

    def _files(self, split: str) -> list[tuple[Path, int]]:
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise DatasetError(f"imagefolder: no split folder {split_dir} (found: {self.splits()})")
        out = []
        folders = self.labels.wnids or self.labels.names
        present = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        unknown = set(present) - set(folders)
        if unknown:
            raise DatasetError(f"{split_dir}: class folders {sorted(unknown)[:5]} are not in split {self.splits()[0]!r}")
        for label, folder in enumerate(folders):
            for p in sorted((split_dir / folder).glob("*")) if (split_dir / folder).is_dir() else []:
                if p.suffix.lower() in IMAGE_EXTS:
                    out.append((p, label))
        if not out:
            raise DatasetError(f"{split_dir}: no images ({', '.join(IMAGE_EXTS)}) in its class folders")
        return out

    def fingerprint(self) -> str:
        files = [p for s in self.splits() for p, _ in self._files(s)]
        return _stat_fingerprint(files, self.root)

    def samples(self, split: str) -> Iterator[Sample]:
        from PIL import Image

        for p, label in self._files(split):
            try:
                with Image.open(p) as im:
                    img = im.convert("RGB")
            except (OSError, ValueError, SyntaxError) as e:
                raise DatasetError(f"{p}: not a readable image ({image_error(e)}); remove or replace it") from None
            if self.image_size:
                img = resize_center_crop(img, self.image_size)
            rel = p.relative_to(self.root / split)
            yield Sample(f"{split}-{rel.with_suffix('').as_posix().replace('/', '_')}", img, label, {"file": str(rel)})

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
        from PIL import Image

        files = self._files(split)
        out = {}
        for p, _ in files[:: max(1, len(files) // n)][:n]:
            try:
                with Image.open(p) as im:
                    out[str(p)] = im.size
            except (OSError, ValueError, SyntaxError) as e:
                raise DatasetError(f"{p}: not a readable image ({image_error(e)}); remove or replace it") from None
        return out


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


def _decode_image(sample: dict[str, Any], image_size: int) -> Any:
    from PIL import Image

    ext = next((e for e in IMAGE_KEYS if e in sample), None)
    if ext is None:
        raise DatasetError(f"{sample.get('__url__')}: sample {sample['__key__']!r} has no png/jpg/jpeg/webp image")
    try:
        img = Image.open(io.BytesIO(sample[ext])).convert("RGB")
    except OSError as e:
        raise DatasetError(f"{sample.get('__url__')}: sample {sample['__key__']!r}: unreadable image ({e})") from None
    return resize_center_crop(img, image_size) if image_size else img


def _sample_key(prefix: str, key: str) -> str:
    return prefix + key.replace("/", "_").replace(".", "_")


@DATASETS.register("webdataset")
class WebDatasetSource:
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
        names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
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

    def samples(self, split: str) -> Iterator[Sample]:
        for sample in iter_webdataset(self._shards(split)):
            key, url = sample["__key__"], sample.get("__url__")
            meta = json.loads(sample["json"]) if "json" in sample else {}
            if "cls" in sample:
                label = int(sample["cls"].decode().strip())
            elif "label" in meta:
                label = int(meta["label"])
            else:
                raise DatasetError(f"{url}: sample {key!r} has no label (.cls, or 'label' in .json)")
            if not 0 <= label < len(self.labels):
                raise DatasetError(f"{url}: sample {key!r} has label {label}, outside 0..{len(self.labels) - 1}")
            yield Sample(_sample_key(f"{split}-", key), _decode_image(sample, self.image_size), label, {"source_key": key})

    def count(self, split: str) -> int | None:
        return None


@DATASETS.register("img2dataset")
class Img2DatasetPairs:
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

    def samples(self, split: str = "train") -> Iterator[Sample]:
        for sample in iter_webdataset(self.urls):
            key, url = sample["__key__"], sample.get("__url__")
            meta = json.loads(sample["json"]) if "json" in sample else {}
            caption = sample["txt"].decode("utf-8").strip() if "txt" in sample else str(meta.get("caption") or "").strip()
            if not caption:
                raise DatasetError(f"{url}: sample {key!r} has no caption (.txt, or 'caption' in .json); "
                                   "remove it or re-run img2dataset with captions")
            yield Sample(_sample_key("", key), _decode_image(sample, self.image_size), -1,
                         {"caption": caption, "source_key": key})

    def count(self, split: str) -> int | None:
        return None
