"""ImageNet's validation split as it ships (a flat folder and the devkit's or Kaggle's labels), linked into the
class folders the imagefolder source reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synscale.cli import main
from synscale.data.datasets import create_dataset


def val_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """6 ILSVRC2012_val_*.JPEG of 2 per class, and each one's wnid."""
    wnids = ["n01443537", "n01440764", "n01484850", "n01440764", "n01484850", "n01443537"]
    folder = tmp_path / "ILSVRC2012_img_val"
    folder.mkdir()
    for i, w in enumerate(wnids, 1):
        shade = 40 * i
        Image.fromarray(np.full((12, 16, 3), shade, np.uint8)).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", quality=95)
    return folder, wnids


def devkit(tmp_path: Path, wnids: list[str]) -> Path:
    """The devkit's data/: meta.mat (ILSVRC2012 ids 1-3 leaves, 1001 a parent, as in the real file) and the
    ground truth, one id per image."""
    import scipy.io

    synsets = [(1, "n01440764", "tench, Tinca tinca"), (2, "n01443537", "goldfish, Carassius auratus"),
               (3, "n01484850", "great white shark"), (1001, "n01440160", "fish")]
    arr = np.zeros((len(synsets), 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for i, (id_, wnid, words) in enumerate(synsets):
        arr[i, 0] = (np.array([[id_]], np.uint16), np.array([wnid]), np.array([words]))
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    scipy.io.savemat(data / "meta.mat", {"synsets": arr})
    ids = {w: i for i, w, _ in synsets}
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in wnids))
    return data


def test_imagenet_val_devkit_labels_linked_into_class_folders(tmp_path):
    folder, wnids = val_folder(tmp_path)
    data = devkit(tmp_path, wnids)
    assert main(["imagenet-val", str(folder), "--labels", str(data / "ILSVRC2012_validation_ground_truth.txt"),
                 "--out", str(tmp_path / "in1k")]) == 0
    ds = create_dataset("imagefolder", str(tmp_path / "in1k"))
    assert ds.splits() == ["val"] and ds.labels.wnids == ("n01440764", "n01443537", "n01484850")
    got = {s.meta["file"]: s.label for s in ds.samples("val")}
    assert got == {f"{w}/ILSVRC2012_val_{i:08d}.JPEG": ds.labels.wnids.index(w) for i, w in enumerate(wnids, 1)}
    linked = tmp_path / "in1k" / "val" / "n01443537" / "ILSVRC2012_val_00000001.JPEG"
    assert os.path.samefile(linked, folder / "ILSVRC2012_val_00000001.JPEG")  # a link, not a copy
    assert ds.count("val") == 6 and ds.class_counts("val") == [2, 2, 2]
    # readable names from ImageNet's list (open_clip's), in the folders' order
    assert ds.labels.names == ("tench", "goldfish", "great white shark")


def test_imagenet_val_kaggle_solution_csv(tmp_path):
    folder, wnids = val_folder(tmp_path)
    rows = [f"ILSVRC2012_val_{i:08d},{w} 10 20 110 90 {w} 5 5 50 50" for i, w in enumerate(wnids, 1)]
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
    assert main(["imagenet-val", str(folder), "--labels", str(tmp_path / "LOC_val_solution.csv"),
                 "--out", str(tmp_path / "in1k")]) == 0
    ds = create_dataset("imagefolder", str(tmp_path / "in1k"))
    assert {s.meta["file"].split("/")[0] for s in ds.samples("val") if s.label == 1} == {"n01443537"}
    assert sorted(p.name for p in (tmp_path / "in1k" / "val" / "n01484850").iterdir()) == [
        "ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000005.JPEG"]
    # a root that names its classes already keeps its own file
    (tmp_path / "in1k" / "classnames.txt").write_text("fish a\nfish b\nfish c\n")
    assert main(["imagenet-val", str(folder), "--labels", str(tmp_path / "LOC_val_solution.csv"),
                 "--out", str(tmp_path / "in1k"), "--overwrite"]) == 0
    assert create_dataset("imagefolder", str(tmp_path / "in1k")).labels.names == ("fish a", "fish b", "fish c")


def test_imagenet_val_across_file_systems_links_symbolically(tmp_path):
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's tmp_path")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        folder, wnids = val_folder(Path(other))
        data = devkit(tmp_path, wnids)
        assert main(["imagenet-val", str(folder), "--labels", str(data / "ILSVRC2012_validation_ground_truth.txt"),
                     "--meta", str(data / "meta.mat"), "--out", str(tmp_path / "in1k")]) == 0
        linked = tmp_path / "in1k" / "val" / "n01484850" / "ILSVRC2012_val_00000003.JPEG"
        assert linked.is_symlink() and linked.resolve() == (folder / "ILSVRC2012_val_00000003.JPEG").resolve()
        assert [s.label for s in create_dataset("imagefolder", str(tmp_path / "in1k")).samples("val")] == [0, 0, 1, 1, 2, 2]
