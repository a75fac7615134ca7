"""Captioners for the `in-captions` strategy: a caption of one of the class's real training images.

- `attributes` (built-in, offline): for small grayscale images (an object on a dark background, as
  Fashion-MNIST), attributes measured on the image: tone (dark / mid-toned / light, from the mean
  intensity of object pixels), shape (slim / wide, from the bounding box's width-to-height ratio),
  texture (plain / patterned, from the mean absolute difference between horizontally adjacent object
  pixels) and size (small / large, from the fraction of the image the object covers).
- `file:<path>`: the user's captions, a CSV or JSONL file with columns `key` and `caption`.
- `hf:<model>`: an image-to-text model by local path or hub id (BLIP-2 in the paper), see
  `synscale.prompts.hf_backends.ImageToTextCaptioner`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synscale.errors import DataError
from synscale.registry import Registry

CAPTIONERS: Registry = Registry("captioner")

OBJECT_THRESHOLD = 30  # uint8 intensity above which a pixel belongs to the object


def image_attributes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image measurements of uint8 images (N, H, W) or (N, 1, H, W)."""
    x = images.reshape(len(images), images.shape[-2], images.shape[-1]).astype(np.float32)
    mask = x > OBJECT_THRESHOLD
    n_obj = np.maximum(mask.sum((1, 2)), 1)
    tone = (x * mask).sum((1, 2)) / n_obj
    rows, cols = mask.any(2), mask.any(1)
    height = np.maximum(rows.sum(1), 1)
    width = np.maximum(cols.sum(1), 1)
    both = mask[:, :, 1:] & mask[:, :, :-1]
    texture = (np.abs(np.diff(x, axis=2)) * both).sum((1, 2)) / np.maximum(both.sum((1, 2)), 1)
    coverage = mask.mean((1, 2))
    return {"tone": tone, "aspect": width / height, "texture": texture, "coverage": coverage}


def describe(attrs: dict[str, np.ndarray], i: int) -> str:
    tone = attrs["tone"][i]
    words = [
        "large" if attrs["coverage"][i] > 0.5 else "small" if attrs["coverage"][i] < 0.3 else "medium-sized",
        "wide" if attrs["aspect"][i] > 1.15 else "slim" if attrs["aspect"][i] < 0.75 else "evenly proportioned",
        "dark" if tone < 90 else "light" if tone > 170 else "mid-toned",
        "patterned" if attrs["texture"][i] > 25 else "plain",
    ]
    return f"a {', '.join(words)} item on a black background"


@CAPTIONERS.register("attributes")
def attribute_captions(images: np.ndarray, keys: list[str]) -> list[str]:
    if images.ndim == 4 and 1 not in (images.shape[1], images.shape[-1]):  # (N, C, H, W) or (N, H, W, C) colour
        from synscale.schema import ConfigError

        channels = images.shape[-1] if images.shape[-1] in (3, 4) else images.shape[1]
        raise ConfigError(f"the attribute captioner reads grayscale images, these have {channels} channels: "
                          "caption them with a model (captioner = 'hf:<image-to-text model>') or from a file "
                          "(captioner = 'file:<captions.csv|jsonl>'); synscale prompts: --captioner")
    attrs = image_attributes(images)
    return [describe(attrs, i) for i in range(len(images))]


def read_captions_file(path: str | Path) -> dict[str, str]:
    """`key` -> `caption` from a CSV (with a header) or JSONL file: UTF-8 text, every caption a non-empty string,
    every key once; anything else is a DataError naming the file and the line or key."""
    from synscale.atomic import read_text

    path = Path(path)
    text = read_text(path)
    rows = _jsonl_rows(text, path) if path.suffix in (".jsonl", ".json") else _csv_rows(text, path)
    out: dict[str, str] = {}
    for line, row in rows:
        key, caption = row.get("key"), row.get("caption")
        if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).strip():
            raise DataError(f"{path}: line {line}: key {key!r} is not a sample key (text or a number)")
        if not isinstance(caption, str) or not caption.strip():
            what = "empty" if caption in (None, "") or isinstance(caption, str) else f"{type(caption).__name__}, not text"
            raise DataError(f"{path}: line {line}: the caption of {str(key)!r} is {what}; give every key a caption, or "
                            "leave the key out")
        if str(key) in out:
            raise DataError(f"{path}: line {line}: key {str(key)!r} is there twice; give each sample one caption")
        out[str(key)] = caption.strip()
    return out


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, dict[str, object]]]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}: line {i} is not JSON ({e}); one object per line: {{\"key\": ..., \"caption\": ...}}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {i} is not a JSON object; one per line: {{\"key\": ..., \"caption\": ...}}")
        rows.append((i, row))
    _need_columns(path, set().union(*(r.keys() for _, r in rows)) if rows else set())
    return rows


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict[str, object]]]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text, newline=""))
    _need_columns(path, set(reader.fieldnames or ()))
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num} is not CSV ({e})") from None


def _need_columns(path: Path, have: set[str]) -> None:
    missing = {"key", "caption"} - have
    if missing:
        raise DataError(f"{path}: captions file needs columns key and caption (missing {sorted(missing)})")


def caption_keys(manifest: object, n_cls: int, pool: int, seed: int = 0) -> list[str]:
    """The keys of up to `pool` images per class whose captions the in-captions strategy draws from: the first of
    each class in the nested-subset order, as many of every class as the smallest class allows."""
    from synscale.data.subsets import subset_keys

    take = min(pool * n_cls, int(manifest.groupby("label").size().min()) * n_cls)  # type: ignore[attr-defined]
    return subset_keys(manifest, take, n_cls, seed)


def caption_images(captioner: str, images: np.ndarray, keys: list[str], local_files_only: bool = True,
                   model: object = None) -> list[str]:
    """Captions of uint8 images (N, H, W) / (N, H, W, C) with sample keys `keys`: `attributes`, `file:<path>` (looked
    up by key; missing ones are None) or `hf:<model>` (`model`: that captioner, loaded once by the caller)."""
    if captioner.startswith("file:"):
        table = read_captions_file(captioner[5:])
        return [table.get(k) for k in keys]  # type: ignore[misc]
    if captioner.startswith("hf:"):
        from synscale.prompts.hf_backends import ImageToTextCaptioner

        model = model or ImageToTextCaptioner(captioner[3:], local_files_only=local_files_only)
        return model(images, keys)  # type: ignore[operator]
    return CAPTIONERS.create(captioner, images, keys)


def by_class(labels: list[int], texts: list[str | None]) -> dict[int, list[str]]:
    """Class index -> its captions, in order (empty and missing captions left out)."""
    out: dict[int, list[str]] = {}
    for label, text in zip(labels, texts, strict=True):
        if text:
            out.setdefault(int(label), []).append(text)
    return out


def captions_per_class(dataset: object, split: str, captioner: str, pool: int, seed: int = 0,
                       local_files_only: bool = True) -> dict[int, list[str]]:
    """Captions of up to `pool` real images per class (caption_keys) of a registered dataset's split. `captioner`
    is `attributes` or `file:<path>` (keys are the dataset's sample keys) or `hf:<model>` (an image-to-text model).
    A study captions its real training shards instead, in a stage of its own (synscale.prompts.stages.caption_pool)."""
    import pandas as pd

    samples = list(dataset.samples(split))  # type: ignore[attr-defined]
    manifest = pd.DataFrame({"key": [s.key for s in samples], "label": [s.label for s in samples]})
    keys = caption_keys(manifest, len(dataset.labels), pool, seed)  # type: ignore[attr-defined]
    by_key = {s.key: s for s in samples}
    chosen = [by_key[k] for k in keys]
    images = None if captioner.startswith("file:") else np.stack([np.asarray(s.image) for s in chosen])
    texts = caption_images(captioner, images, keys, local_files_only)
    check_file_keys(captioner, texts, keys)
    return by_class([s.label for s in chosen], texts)


def check_file_keys(captioner: str, texts: list[str | None], keys: list[str]) -> None:
    """A captions file that names none of the keys is a mistake (its `key` column must name the set's samples)."""
    if captioner.startswith("file:") and keys and not any(texts):
        from synscale.schema import ConfigError

        raise ConfigError(f"{captioner[5:]}: none of the dataset's keys (e.g. {keys[0]!r}) has a caption; "
                          "its `key` column must name the dataset's samples")


def captioned_pairs(set_dir: str | Path, keys: list[str], captioner: str, out: str | Path, shard_size: int,
                    local_files_only: bool = True, progress: bool = True) -> int:
    """Write `keys` of a labelled set (in their order) as a pair set: each image with a caption of it by
    `captioner` (`attributes`, `file:<csv|jsonl of key,caption>`, `hf:<image-to-text model>`)."""
    from synscale.data.pairs import compose_caption
    from synscale.data.shards import ShardWriter, load_arrays, read_labels
    from synscale.progress import bar

    labels = read_labels(set_dir)
    images, targets, _ = load_arrays(set_dir, keys)
    hwc = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    texts = caption_images(captioner, hwc, keys, local_files_only)
    missing = [k for k, t in zip(keys, texts, strict=True) if t is None]
    if missing:
        raise DataError(f"{captioner[5:]}: no caption for {len(missing)} of the {len(keys)} samples, e.g. {missing[0]!r}")
    with ShardWriter(out, labels, shard_size) as w:
        for key, img, y, text in bar(list(zip(keys, images, targets, texts, strict=True)), desc="captioned pairs",
                                     unit="img", disable=not progress):
            name = labels.names[y] if labels is not None and y >= 0 else ""
            w.write(key, img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), int(y),
                    {"caption": compose_caption(name, text)})
    return len(keys)
