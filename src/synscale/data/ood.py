"""Out-of-distribution evaluation sets from folders or webdataset shards (`[[evaluate.sets]]`).

Presets for the paper's ImageNet OOD sets, as they are distributed:
- `imagenet-a`: `<root>/<wnid>/*.jpg`, 200 classes; logits restricted to them.
- `imagenet-r`: `<root>/<wnid>/*.jpg`, 200 classes; logits restricted to them.
- `imagenet-sketch`: `<root>/<wnid>/*.JPEG` (or `<root>/sketch/<wnid>/...`), all 1000 classes.
- `imagenet-v2`: `<root>/<class index 0..999>/*.jpeg` (the ImageNetV2 folders are numbered by ImageNet-1k
  class index), all 1000 classes.
- no preset: `imagefolder` (`<root>[/<split>]/<class>/<image>`), `webdataset` (`<root>/<split>-*.tar`) or
  `hf` (a Hugging Face dataset: a save_to_disk directory or a hub name in the cache; its `split`, default
  `test`, and its `image_column` / `label_column`).

Every set is written as synscale shards relabelled into the study's label space: a class folder maps to
the study's class with the same WordNet id (study label sets with wnids) or the same name. The class
subset (the study's classes whose logits the evaluation keeps) is the preset's list (A, R), a file of
wnids or names, `all` (no restriction), or `auto`: the preset's list, else the classes the set covers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from synscale.atomic import read_text
from synscale.data.datasets import IMAGE_EXTS, DatasetError, Sample, load_image, readable
from synscale.data.keys import image_folder_keys
from synscale.labels import LabelSet


@dataclass(frozen=True)
class Preset:
    folders: str  # "wnid" or "index" (ImageNet-1k class index)
    subset_file: str = ""  # shipped wnid list the logits are restricted to
    nested: str = ""  # a sub-folder some distributions put the class folders in


PRESETS = {
    "imagenet-a": Preset("wnid", "imagenet_a_wnids.txt", "imagenet-a"),
    "imagenet-r": Preset("wnid", "imagenet_r_wnids.txt", "imagenet-r"),
    "imagenet-sketch": Preset("wnid", "", "sketch"),
    "imagenet-v2": Preset("index", "", "imagenetv2-matched-frequency-format-val"),
}


def shipped_wnids(name: str) -> list[str]:
    if name == "imagenet1k":
        return resources.files("synscale.prompts").joinpath("data/imagenet1k_wnids.txt").read_text().split()
    return resources.files("synscale.data").joinpath(f"wnids/{name}").read_text().split()


def _class_map(study: LabelSet) -> dict[str, int]:
    """Folder/class name -> study label index, by wnid where the study has them, and by name."""
    out = {n: i for i, n in enumerate(study.names)}
    if study.wnids:
        out |= {w: i for i, w in enumerate(study.wnids)}
    return out


def _folder_root(root: Path, preset: Preset | None, split: str) -> Path:
    if preset is None:
        return root / split if split else root
    if preset.nested and (root / preset.nested).is_dir():
        return root / preset.nested
    return root


def _folder_key(preset: Preset | None, folder: str, imagenet: list[str]) -> str:
    if preset is not None and preset.folders == "index":
        if not folder.isdigit() or not 0 <= int(folder) < len(imagenet):
            raise DatasetError(f"ImageNetV2 class folders are numbered 0..999, found {folder!r}")
        return imagenet[int(folder)]
    return folder


def ood_samples(study: LabelSet, root: str, preset: str = "", dataset: str = "imagefolder", split: str = "",
                image_size: int = 0, columns: dict[str, str] | None = None) -> Iterator[Sample]:
    """The set's images with labels in the study's label space; a class the study lacks is an error."""
    mapping = _class_map(study)
    if dataset in ("webdataset", "hf") and not preset:
        from synscale.data.datasets import create_dataset

        src = create_dataset(dataset, root, image_size, **(columns or {}))
        own = [mapping.get(w) for w in (src.labels.wnids or src.labels.names)]
        missing = [n for n, m in zip(src.labels.names, own, strict=True) if m is None]
        if missing:
            raise DatasetError(f"{root}: classes {missing[:5]} are not among the study's classes")
        for s in src.samples(split or "test"):
            yield Sample(s.key, s.image, int(own[s.label]), s.meta)
        return
    p = PRESETS.get(preset) if preset else None
    if preset and p is None:
        raise DatasetError(f"unknown OOD preset {preset!r}; known: {', '.join(PRESETS)}")
    base = _folder_root(Path(root), p, split)
    if not base.is_dir():
        raise DatasetError(f"OOD set {root}: no directory {base}")
    imagenet = shipped_wnids("imagenet1k") if p is not None and p.folders == "index" else []
    folders = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not folders:
        raise DatasetError(f"OOD set {base}: no class folders")
    keys = [_folder_key(p, f, imagenet) for f in folders]
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise DatasetError(f"OOD set {base}: class folders {missing[:5]} are not among the study's classes "
                           f"({'wnids' if study.wnids else 'class names'})")
    label = {folder: mapping[key] for folder, key in zip(folders, keys, strict=True)}
    files = [(f, path.name) for f in folders for path in sorted((base / f).iterdir())
             if path.suffix.lower() in IMAGE_EXTS]
    for (folder, name), key in zip(files, image_folder_keys("", files, folders), strict=True):
        path = base / folder / name
        yield Sample(key, load_image(path, readable(str(path)), image_size), label[folder],
                     {"file": readable(f"{folder}/{name}")})


def class_subset(study: LabelSet, spec: str, preset: str, present: list[int]) -> list[int] | None:
    """The study label indices the evaluation restricts logits to, or None for all classes."""
    if spec == "all":
        return None
    mapping = _class_map(study)
    if spec == "auto":
        p = PRESETS.get(preset)
        if p is None or not p.subset_file:
            subset = sorted(set(present))
            return None if len(subset) == len(study) else subset
        # the preset's classes that the study has (a study of a subset of ImageNet keeps fewer)
        subset = sorted({mapping[n] for n in shipped_wnids(p.subset_file) if n in mapping})
        if not subset:
            raise DatasetError(f"preset {preset}: none of its classes is among the study's (need wnids)")
        return subset
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"class_subset {spec!r}: not 'auto', 'all' or a file of wnids/class names")
    names = [ln.strip() for ln in read_text(path, "class names").splitlines() if ln.strip()]
    missing = [n for n in names if n not in mapping]
    if missing:
        raise DatasetError(f"class subset {spec}: {len(missing)} classes are not in the study, e.g. {missing[:5]}")
    return sorted({mapping[n] for n in names})


def fingerprint(root: str, dataset: str = "imagefolder", columns: dict[str, str] | None = None) -> str:
    """Cheap identity of the set: an hf dataset's own (its root may be a hub name), else of the files under
    `root` (relative path, size, mtime)."""
    from synscale.data.datasets import _stat_fingerprint, create_dataset

    if dataset == "hf":
        return create_dataset("hf", root, 0, **(columns or {})).fingerprint()

    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    return _stat_fingerprint(files, Path(root))


def write_ood_set(study: LabelSet, spec: Any, image_size: int, channels: int, out: Path, shard_size: int,
                  progress: bool = False) -> None:
    """Write `spec`'s set (an OODSetConfig) as shards in the study's label space, and ood.json with its
    class subset."""
    import numpy as np

    from synscale.data.shards import ShardWriter
    from synscale.progress import bar

    present = []
    from synscale.data.datasets import columns_of

    samples = ood_samples(study, spec.root, spec.preset, spec.dataset, spec.split, spec.image_size or image_size,
                          columns_of(spec))
    with ShardWriter(out, study, shard_size) as w:
        for s in bar(samples, desc=f"OOD set {spec.name}", unit="img", disable=not progress):
            img = np.asarray(s.image.convert("L" if channels == 1 else "RGB"))
            w.write(s.key, img, s.label, {"ood_set": spec.name, **s.meta})
            present.append(s.label)
    if not present:
        raise DatasetError(f"OOD set {spec.name}: no images found under {spec.root}")
    subset = class_subset(study, spec.class_subset, spec.preset, present)
    (out / "ood.json").write_text(json.dumps({"name": spec.name, "class_subset": subset, "images": len(present)}, indent=1))
