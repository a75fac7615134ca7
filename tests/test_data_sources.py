"""Data a user already has: a Hugging Face dataset (saved with save_to_disk, or in the datasets cache), and large
splits written into shards by worker processes (the same bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synscale.cli import main
from synscale.data.datasets import DatasetError, create_dataset
from synscale.data.shards import iter_samples, load_arrays, read_labels, read_manifest, write_dataset_split

NAMES = ["red", "green", "blue"]


def colour(label: int, j: int) -> tuple[int, int, int]:
    """Image j of class `label`: a solid colour no other image has."""
    return (200 if label == 0 else 20 * j, 200 if label == 1 else 20 * j + 1, 200 if label == 2 else 20 * j + 2)


def colour_images(n_per_class: int, offset: int = 0) -> tuple[list[Image.Image], list[int]]:
    """3 classes x n images of 10 x 8 px (width x height), in label order."""
    images, labels = [], []
    for label in range(3):
        for j in range(offset, offset + n_per_class):
            images.append(Image.fromarray(np.full((8, 10, 3), colour(label, j), np.uint8)))
            labels.append(label)
    return images, labels


def hf_dataset(images: list[Image.Image], labels: list[int], image_column: str = "image", label_column: str = "label",
               class_label: bool = True):
    import datasets

    label_feature = datasets.ClassLabel(names=NAMES) if class_label else datasets.Value("int64")
    features = datasets.Features({image_column: datasets.Image(), label_column: label_feature})
    return datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)


@pytest.fixture
def saved_dict(tmp_path: Path) -> Path:
    """A DatasetDict saved with save_to_disk: train 3 x 4 images, test 3 x 2 others."""
    import datasets

    root = tmp_path / "colours"
    datasets.DatasetDict({"train": hf_dataset(*colour_images(4)),
                          "test": hf_dataset(*colour_images(2, offset=4))}).save_to_disk(str(root))
    return root


def test_hf_saved_dataset_dict_samples_labels_splits_and_resize(saved_dict):
    ds = create_dataset("hf", str(saved_dict), image_size=4)
    assert ds.splits() == ["train", "test"] and ds.labels.names == tuple(NAMES) and ds.labels.wnids is None
    assert ds.count("train") == 12 and ds.class_counts("train") == [4, 4, 4] and ds.class_counts("test") == [2, 2, 2]
    test = list(ds.samples("test"))
    assert [s.key for s in test] == [f"test-{i:07d}" for i in range(6)]
    assert [s.label for s in test] == [0, 0, 1, 1, 2, 2]
    for s in test:  # resized and centre-cropped to 4 x 4 RGB, each image its own solid colour
        j = 4 + s.meta["index"] % 2
        assert s.image.mode == "RGB" and s.image.size == (4, 4)
        assert (np.asarray(s.image) == colour(s.label, j)).all()
    native = next(create_dataset("hf", str(saved_dict)).samples("train"))
    assert native.image.size == (10, 8)
    assert ds.image_sizes("train", 3) == {f"{saved_dict} [train]: sample {i}": (10, 8) for i in (0, 4, 8)}
    with pytest.raises(DatasetError, match=r"no split 'val' \(it has: train, test\)"):
        ds.count("val")


def test_hf_fingerprint_follows_the_data(saved_dict, tmp_path):
    import datasets

    first = create_dataset("hf", str(saved_dict)).fingerprint()
    assert create_dataset("huggingface", str(saved_dict)).fingerprint() == first  # the alias, the same data
    datasets.DatasetDict({"train": hf_dataset(*colour_images(4, offset=1)),
                          "test": hf_dataset(*colour_images(2, offset=4))}).save_to_disk(str(tmp_path / "other"))
    assert create_dataset("hf", str(tmp_path / "other")).fingerprint() != first


def test_hf_single_dataset_is_split_train_with_named_columns(tmp_path):
    images, labels = colour_images(2)
    hf_dataset(images, labels, image_column="picture", label_column="kind").save_to_disk(str(tmp_path / "one"))
    ds = create_dataset("hf", str(tmp_path / "one"), image_column="picture", label_column="kind")
    assert ds.splits() == ["train"] and [s.label for s in ds.samples("train")] == labels
    with pytest.raises(DatasetError, match=r"no column 'image' \(it has: picture, kind\); set image_column"):
        create_dataset("hf", str(tmp_path / "one"), label_column="kind")
    with pytest.raises(DatasetError, match="dataset imagefolder has no named columns"):
        create_dataset("imagefolder", str(tmp_path), image_column="picture")


def test_hf_round_trip_through_synscale_shards(saved_dict, tmp_path, capsys):
    out = tmp_path / "set"
    args = ["shards", "hf", "--root", str(saved_dict), "--split", "test", "--image-size", "4", "--out", str(out)]
    assert main(args) == 0
    manifest = read_manifest(out)
    assert manifest["key"].tolist() == [f"test-{i:07d}" for i in range(6)]
    assert manifest["class_name"].tolist() == ["red", "red", "green", "green", "blue", "blue"]
    assert read_labels(out).names == tuple(NAMES)
    images, labels, _ = load_arrays(out)
    assert images.shape == (6, 3, 4, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    for img, label, j in zip(images, labels, [4, 5] * 3, strict=True):
        assert (img.transpose(1, 2, 0) == colour(label, j)).all()
    assert main(args) == 0 and "holds this set already" in capsys.readouterr().out


def hub_cache(tmp_path: Path, configs: dict[str, int] | None = None) -> Path:
    """A datasets cache holding `synscale-test/tiny-colors` as load_dataset leaves a hub dataset there
    (`<owner>___<name>/<config>/<version>/<hash>/` with arrow files and dataset_info.json); `configs`: the
    configurations and their training images per class (default: one, `default`, with 4)."""
    import shutil

    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    cache = tmp_path / "cache"
    (cache / "synscale-test___tiny-colors").mkdir(parents=True)
    for config, n_train in (configs or {"default": 4}).items():
        files = {}
        for split, (n, offset) in {"train": (n_train, 0), "validation": (2, n_train)}.items():
            files[split] = str(tmp_path / f"{config}-{split}.parquet")
            hf_dataset(*colour_images(n, offset)).to_parquet(files[split])
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
        builder = Parquet(cache_dir=str(tmp_path / "build"), dataset_name="tiny-colors", config_name=config,
                          hash="0123abcd", data_files=files, features=features)
        builder.download_and_prepare()
        built = next((tmp_path / "build" / "tiny-colors").glob(f"{config}-*"))
        shutil.move(str(built), cache / "synscale-test___tiny-colors" / config)
    return cache


def test_hf_hub_name_read_offline_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hub_cache(tmp_path)))
    ds = create_dataset("hf", "synscale-test/tiny-colors", image_size=2)
    assert ds.splits() == ["train", "validation"] and ds.labels.names == tuple(NAMES)
    assert [s.label for s in ds.samples("validation")] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DatasetError, match=r"synscale-test/absent: not a directory here, nor a dataset in the Hugging "
                       r"Face datasets cache .*datasets.load_dataset\('synscale-test/absent'\)"):
        create_dataset("hf", "synscale-test/absent")


def test_hf_hub_dataset_with_several_configurations_is_named_by_one(tmp_path, monkeypatch):
    """A hub dataset cached under two configurations: `name:config` reads that one; the bare name is one line
    naming the configurations there, as is a configuration the cache does not hold."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hub_cache(tmp_path, {"small": 1, "large": 3})))
    for config, n in (("small", 1), ("large", 3)):
        ds = create_dataset("hf", f"synscale-test/tiny-colors:{config}")
        assert [s.label for s in ds.samples("train")] == [0] * n + [1] * n + [2] * n
    assert (create_dataset("hf", "synscale-test/tiny-colors:small").fingerprint()
            != create_dataset("hf", "synscale-test/tiny-colors:large").fingerprint())
    with pytest.raises(DatasetError, match=r"^synscale-test/tiny-colors: the Hugging Face datasets cache .* holds "
                       r"several configurations of it \(large, small\); name one, e\.g\. synscale-test/tiny-colors:large$"):
        create_dataset("hf", "synscale-test/tiny-colors")
    with pytest.raises(DatasetError, match=r"^synscale-test/tiny-colors:medium"):
        create_dataset("hf", "synscale-test/tiny-colors:medium")


# ---------------------------------------------------------------------------------------------------
# worker processes: the same set, byte for byte


def test_workers_write_the_same_bytes_as_one_process(tiny_fmnist, saved_dict, tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):  # JPEGs of several sizes, resized and centre-cropped
        (tmp_path / "jpegs" / "train" / cls).mkdir(parents=True)
        for i in range(40):
            h, w = (int(v) for v in rng.integers(12, 40, 2))
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            image.save(tmp_path / "jpegs" / "train" / cls / f"{i}.jpg")
    sources = {"fmnist": (create_dataset("fashion-mnist", root=str(tiny_fmnist)), "test", 0),
               "hf": (create_dataset("hf", str(saved_dict), image_size=4), "train", 0),
               "fmnist-limit": (create_dataset("fashion-mnist", root=str(tiny_fmnist), image_size=14), "train", 700),
               "imagefolder": (create_dataset("imagefolder", str(tmp_path / "jpegs"), image_size=10), "train", 0)}
    for name, (ds, split, limit) in sources.items():
        one, two = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
        n1 = write_dataset_split(ds, split, one, shard_size=150, progress=False, limit=limit, workers=1)
        n2 = write_dataset_split(ds, split, two, shard_size=150, progress=False, limit=limit, workers=2)
        assert n1 == n2 == (limit or ds.count(split))
        files = sorted(p.name for p in one.iterdir())
        assert files == sorted(p.name for p in two.iterdir()) and "arrays.npy" in files
        for f in files:
            assert (one / f).read_bytes() == (two / f).read_bytes(), (name, f)
    assert [k for k, _, _ in iter_samples(tmp_path / "fmnist-2")] == [f"test-{i:07d}" for i in range(500)]


def test_a_bad_image_in_a_worker_is_the_same_one_line(tmp_path):
    root = tmp_path / "folder"
    for cls in ("cat", "dog"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(70):
            Image.fromarray(np.full((6, 6, 3), i, np.uint8)).save(root / "train" / cls / f"{i:02d}.png")
    (root / "train" / "dog" / "33.png").write_bytes(b"not a png")
    ds = create_dataset("imagefolder", str(root))
    for workers in (1, 2):
        with pytest.raises(DatasetError, match=r"dog/33.png: not a readable image"):
            write_dataset_split(ds, "train", tmp_path / f"out{workers}", 50, progress=False, workers=workers)


def test_the_compute_estimate_counts_an_hf_datasets_classes(saved_dict, tmp_path):
    from synscale.config import find_study, load_study
    from synscale.study.estimate import classes

    cfg = load_study(find_study("fashion-mnist"), "smoke", ["data.dataset=hf", f"data.root={saved_dict}"])
    assert classes(cfg) == (3, f"the label set of {saved_dict}")
    missing = load_study(find_study("fashion-mnist"), "smoke", ["data.dataset=hf", f"data.root={tmp_path / 'none'}"])
    assert classes(missing)[0] == 1000  # not on this machine: the plan assumes ImageNet-1k


def test_an_hf_dataset_as_an_ood_set_in_the_studys_label_space(saved_dict, tmp_path):
    """[[evaluate.sets]] with dataset = "hf": its classes map by name into the study's (here another order and
    one more class), from the split named, with renamed columns; its identity is the dataset's own."""
    from synscale.config import OODSetConfig
    from synscale.data.ood import fingerprint, ood_samples
    from synscale.labels import LabelSet

    study = LabelSet(("blue", "other", "red", "green"))
    got = [(s.label, tuple(np.asarray(s.image)[0, 0])) for s in ood_samples(study, str(saved_dict), dataset="hf")]
    assert [g[0] for g in got] == [2, 2, 3, 3, 0, 0]  # test split: 2 red, 2 green, 2 blue, in the study's indices
    assert got[0][1] == colour(0, 4) and got[-1][1] == colour(2, 5)
    odd = tmp_path / "odd"
    hf_dataset(*colour_images(1), image_column="img", label_column="y").save_to_disk(str(odd))
    spec = OODSetConfig(name="odd", root=str(odd), dataset="hf", split="train", image_column="img", label_column="y")
    spec.check()
    samples = list(ood_samples(study, spec.root, dataset="hf", split="train", image_size=4,
                               columns={"image_column": "img", "label_column": "y"}))
    assert [s.label for s in samples] == [2, 3, 0] and np.asarray(samples[0].image).shape == (4, 4, 3)
    assert fingerprint(str(odd), "hf", {"image_column": "img", "label_column": "y"}) != fingerprint(str(saved_dict), "hf")
    with pytest.raises(ValueError, match="no named columns"):
        OODSetConfig(name="w", root=str(odd), dataset="webdataset", image_column="img").check()
    with pytest.raises(DatasetError, match="not among the study's classes"):
        list(ood_samples(LabelSet(("red", "green")), str(saved_dict), dataset="hf"))


def test_in_captions_prompts_from_an_hf_dataset_with_named_columns(tmp_path):
    """`synscale prompts --data hf` reads the columns it is told (--image-column / --label-column), as `shards`
    and a study's data tables do; the captions come from a file keyed by the dataset's sample keys."""
    import pandas as pd

    images, labels = colour_images(3)
    hf_dataset(images, labels, image_column="picture", label_column="kind").save_to_disk(str(tmp_path / "one"))
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    keys = [s.key for s in create_dataset("hf", str(tmp_path / "one"), image_column="picture",
                                          label_column="kind").samples("train")]
    pd.DataFrame({"key": keys, "caption": [f"swatch number {i}" for i in range(len(keys))]}).to_csv(
        tmp_path / "captions.csv", index=False)
    args = ["prompts", "--labels", str(tmp_path / "names.txt"), "--strategy", "in-captions", "--data", "hf",
            "--data-root", str(tmp_path / "one"), "--captioner", f"file:{tmp_path / 'captions.csv'}", "--per-class", "2",
            "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--image-column", "picture", "--label-column", "kind"]) == 0
    prompts = pd.read_csv(tmp_path / "p.csv")
    assert len(prompts) == 6 and set(prompts.class_index) == {0, 1, 2}
    for row in prompts.itertuples():  # each class's prompts carry that class's images' captions
        number = int(row.prompt.rsplit(" ", 1)[1])
        assert row.prompt.startswith(NAMES[row.class_index]) and labels[number] == row.class_index
    assert main(args) == 2  # the default columns are not there: one line, exit 2


def test_dirty_pairs_are_skipped_within_an_error_budget_and_recorded(tmp_path, capsys):
    """img2dataset shards with an empty caption, an image that does not decode and a Latin-1 caption among 400
    pairs: skipped and recorded within the default budget of caption sets (1%), each with its shard, key and
    reason; with a budget of 0, the first stops the write with its own line; past the budget, one line that counts
    them; --limit counts readable pairs."""
    import pandas as pd

    from synscale.cli import main
    from synscale.data.shards import read_manifest
    from test_study_clip import _laion

    _laion(tmp_path / "laion", 400, bad={3: "no caption", 7: "unreadable image", 12: "latin-1"})
    root, first = str(tmp_path / "laion") + "/{00000..00001}.tar", tmp_path / "laion" / "00000.tar"
    assert main(["shards", "img2dataset", "--root", root, "--out", str(tmp_path / "ok"), "--shard-size", "50"]) == 0
    assert "wrote 397 samples" in capsys.readouterr().out
    skipped = pd.read_parquet(tmp_path / "ok" / "skipped.parquet")
    assert skipped.reason.tolist() == ["no caption", "unreadable image", "caption not UTF-8"]
    assert skipped["sample"].tolist() == [f"{first}: sample '00000{i:04d}'" for i in (3, 7, 12)]
    assert "not UTF-8 text (invalid continuation byte at byte 5)" in skipped.message.iloc[2]
    assert len(read_manifest(tmp_path / "ok")) == 397 and "000000003" not in set(read_manifest(tmp_path / "ok").key)
    assert main(["shards", "img2dataset", "--root", root, "--out", str(tmp_path / "lim"), "--limit", "10",
                 "--max-bad-fraction", "0.2"]) == 0
    assert len(read_manifest(tmp_path / "lim")) == 10 and len(pd.read_parquet(tmp_path / "lim" / "skipped.parquet")) == 2
    assert main(["shards", "img2dataset", "--root", root, "--out", str(tmp_path / "strict"), "--max-bad-fraction", "0"]) == 2
    err = capsys.readouterr().err
    assert "sample '000000003' has no caption" in err and "let a share of bad samples be skipped: --max-bad-fraction" in err
    assert not (tmp_path / "strict").exists()  # nothing half-written
    assert main(["shards", "img2dataset", "--root", root, "--out", str(tmp_path / "over"), "--max-bad-fraction",
                 "0.01", "--limit", "100"]) == 2
    assert "3 of the 103 samples read could not be read (no caption: 1, unreadable image: 1, caption not UTF-8: 1), " \
           "more than --max-bad-fraction = 0.01 allows" in capsys.readouterr().err


def test_a_labelled_webdataset_sample_that_is_not_what_it_says_is_one_line(tmp_path, capsys):
    """A .cls that is not an integer and a .json that is not JSON: skipped under a budget, one line without."""
    import io
    import tarfile

    import numpy as np
    import pandas as pd
    from PIL import Image

    from synscale.cli import main

    with tarfile.open(tmp_path / "train-00000.tar", "w") as tar:
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(buf, format="PNG")
            cls = b"cat" if i == 2 else str(i % 2).encode()
            files = [("png", buf.getvalue()), ("cls", cls)] + ([("json", b"{not json")] if i == 4 else [])
            for ext, data in files:
                info = tarfile.TarInfo(f"k{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (tmp_path / "classnames.txt").write_text("a\nb\n")
    assert main(["shards", "webdataset", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "sample 'k2' has label 'cat', not an integer" in capsys.readouterr().err
    assert main(["shards", "webdataset", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--max-bad-fraction", "0.5"]) == 0
    assert pd.read_parquet(tmp_path / "o" / "skipped.parquet").reason.tolist() == ["bad label", "unreadable json"]
