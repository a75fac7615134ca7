"""ImageNet's validation split as it ships, made readable by the `imagefolder` source.

The ILSVRC2012 validation images come as one flat folder (`ILSVRC2012_val_00000001.JPEG` ...
`ILSVRC2012_val_00050000.JPEG`) with their labels apart, in one of two forms:

- the devkit's `ILSVRC2012_validation_ground_truth.txt` (line i: the ILSVRC2012 id, 1-1000, of image i)
  with its `meta.mat` (the `synsets` struct, whose `ILSVRC2012_ID` and `WNID` fields map ids to WordNet
  ids), found beside the ground truth (the devkit's `data/` folder) or given;
- Kaggle's `LOC_val_solution.csv` (`ImageId,PredictionString`; the string's first word is the wnid).

`synscale imagenet-val` links every image into `<root>/<split>/<wnid>/` (hard links; symbolic links where
the output is on another file system), so no image is copied, and the split folder appears whole or not at
all (synscale.stage.building_dir).
"""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

from synscale.atomic import read_text
from synscale.data.datasets import IMAGE_EXTS, DatasetError
from synscale.labels import WNID

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


def val_labels(labels: Path, meta: Path | None = None) -> dict[str, str]:
    """{image file stem: wnid} from a LOC_val_solution.csv, or a ground-truth file and meta.mat."""
    if not labels.is_file():
        raise DatasetError(f"no such labels file {labels}; give the devkit's {GROUND_TRUTH} or LOC_val_solution.csv")
    if labels.suffix.lower() == ".csv":
        return _loc_solution(labels)
    meta = meta or labels.parent / "meta.mat"
    if not meta.is_file():
        raise DatasetError(f"{labels}: its ILSVRC2012 ids need the devkit's meta.mat, not found at {meta}; "
                           "give it with --meta")
    wnids = meta_wnids(meta)
    out = {}
    for line_no, line in enumerate(read_text(labels, "ground truth").split(), 1):
        if not line.isdigit() or int(line) not in wnids:
            raise DatasetError(f"{labels}: line {line_no} is {line!r}, not an ILSVRC2012 id of {meta}")
        out[f"ILSVRC2012_val_{line_no:08d}"] = wnids[int(line)]
    return out


def meta_wnids(meta: Path) -> dict[int, str]:
    """{ILSVRC2012 id: wnid} of the devkit's meta.mat (a MATLAB file, read with scipy)."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
        ids, wnids = synsets["ILSVRC2012_ID"], synsets["WNID"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DatasetError(f"{meta}: not the devkit's meta.mat (a `synsets` struct with ILSVRC2012_ID and WNID: "
                           f"{type(e).__name__}: {e})") from None
    return {int(i): str(w) for i, w in zip(ids.ravel(), wnids.ravel(), strict=True)}


def _loc_solution(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["ImageId", "PredictionString"]:
        raise DatasetError(f"{path}: not a LOC_val_solution.csv (its header is not ImageId,PredictionString)")
    out = {}
    for line_no, row in enumerate(rows[1:], 2):
        words = row[1].split() if len(row) > 1 else []
        if not words or not WNID.match(words[0]):
            raise DatasetError(f"{path}: line {line_no} has no wnid (n########) first in its PredictionString")
        out[row[0]] = words[0]
    return out


def arrange_val(images: Path, labels: dict[str, str], out: Path) -> int:
    """Link every image of the flat folder `images` into `out/<wnid>/`; returns the number of images. Every
    image must have a label and every label an image."""
    from synscale.stage import building_dir

    if not images.is_dir():
        raise DatasetError(f"no such folder {images}; give the folder of ILSVRC2012_val_*.JPEG")
    files = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_EXTS}
    unlabelled = sorted(set(files) - set(labels))
    if unlabelled:
        raise DatasetError(f"{files[unlabelled[0]]}: no label for it ({len(unlabelled)} of {len(files)} images have "
                           "none); give the labels of this folder")
    missing = sorted(set(labels) - set(files))
    if missing:
        raise DatasetError(f"{images}: {len(missing)} labelled images are not there, e.g. {missing[0]}; "
                           "give the complete folder (or its own labels)")
    with building_dir(out) as tmp:
        for wnid in sorted(set(labels.values())):
            (tmp / wnid).mkdir()
        for stem, src in files.items():
            link(src, tmp / labels[stem] / src.name)
    return len(files)


def write_classnames(root: Path, wnids: list[str]) -> Path | None:
    """`root/classnames.txt` (read by the imagefolder source) with ImageNet's readable class names (open_clip's,
    which the CLIP templates use) in sorted wnid order, where every wnid is one of ImageNet-1k's and the file is
    not there yet (a root that already names its classes keeps its file). The path written, or None."""
    from synscale.labels import named_label_set

    path = root / "classnames.txt"
    imagenet = named_label_set("imagenet")
    name_of = dict(zip(imagenet.wnids or (), imagenet.names, strict=True))
    if path.exists() or not all(w in name_of for w in wnids):
        return None
    path.write_text("".join(f"{name_of[w]}\n" for w in sorted(wnids)))
    return path


def link(src: Path, dst: Path) -> None:
    """A hard link, or a symbolic link (to the absolute path) where a hard link cannot be made."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        os.symlink(src.resolve(), dst)
