import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from synscale.data.datasets import DatasetError, create_dataset
from synscale.data.shards import ShardWriter, decode_png, iter_samples, load_arrays, read_manifest, write_dataset_split
from synscale.data.subsets import per_class_counts, subset_keys
from synscale.labels import LabelSet


def test_fashion_mnist_reads_debian_files(fmnist_files):
    ds = create_dataset("fashion-mnist")
    assert ds.labels.names[0] == "T-shirt/top" and ds.labels.names[9] == "Ankle boot"
    assert ds.count("train") == 60000 and ds.count("test") == 10000
    first = next(ds.samples("test"))
    assert first.image.shape == (28, 28) and first.image.dtype == np.uint8 and first.label == 9  # t10k[0] is an ankle boot


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match="data.root"):
        create_dataset("fashion-mnist", root=str(tmp_path))
    import synscale.data.datasets as d

    old = d.DEBIAN_FASHION_MNIST
    d.DEBIAN_FASHION_MNIST = tmp_path / "absent"
    try:
        with pytest.raises(DatasetError, match="apt-get install -y dataset-fashion-mnist"):
            d.FashionMNIST()
    finally:
        d.DEBIAN_FASHION_MNIST = old


def test_shard_round_trip_is_byte_identical(tiny_fmnist, tmp_path):
    ds = create_dataset("fashion-mnist", root=str(tiny_fmnist))
    n = write_dataset_split(ds, "test", tmp_path / "a", shard_size=200, progress=False)
    assert n == 500
    assert sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    # pixels and labels come back exactly, in order, with the manifest agreeing with the per-sample json
    source = list(ds.samples("test"))
    back = list(iter_samples(tmp_path / "a"))
    assert [k for k, _, _ in back] == [s.key for s in source]
    for s, (key, png, meta) in zip(source, back, strict=True):
        assert np.array_equal(decode_png(png), s.image) and meta["label"] == s.label and meta["key"] == key
    manifest = read_manifest(tmp_path / "a")
    assert manifest["key"].tolist() == [s.key for s in source]
    assert manifest["class_name"].iloc[0] == ds.labels.names[source[0].label]
    # the same samples written again give the same bytes (deterministic tars and PNGs)
    write_dataset_split(ds, "test", tmp_path / "b", shard_size=200, progress=False)
    for name in ("shard-00000.tar", "shard-00002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the in-memory loader, with and without the decoded-array cache, agrees with the source
    images, labels, keys = load_arrays(tmp_path / "a")
    (tmp_path / "a" / "arrays.npy").unlink()
    images2, labels2, _ = load_arrays(tmp_path / "a", keys=keys[::-1])
    assert images.shape == (500, 1, 28, 28) and np.array_equal(images[:, 0], np.stack([s.image for s in source]))
    assert np.array_equal(images2, images[::-1]) and np.array_equal(labels2, labels[::-1])


def test_shard_png_bytes_read_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    labels = LabelSet(("a", "b"))
    imgs = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    with ShardWriter(tmp_path, labels, shard_size=2) as w:
        for i, im in enumerate(imgs):
            w.write(f"s{i}", im, i % 2, {"prompt": f"p{i}"})
    for i, (key, png, meta) in enumerate(iter_samples(tmp_path)):
        buf = io.BytesIO()
        Image.fromarray(imgs[i]).save(buf, format="PNG", compress_level=6)
        assert png == buf.getvalue() and meta["prompt"] == f"p{i}" and key == f"s{i}"
    with tarfile.open(tmp_path / "shard-00000.tar") as t:
        assert [m.name for m in t] == ["s0.png", "s0.json", "s1.png", "s1.json"]
        assert all(m.mtime == 0 and m.uid == 0 for m in t)
    with pytest.raises(ValueError, match="duplicate"):
        with ShardWriter(tmp_path / "x", labels) as w:
            w.write("k", imgs[0], 0)
            w.write("k", imgs[0], 0)


def test_tar_out_writes_the_bytes_tarfile_writes(tmp_path):
    from synscale.data.shards import TarOut

    rng = np.random.default_rng(2)
    members = [("a.png", b""), ("b.json", b"x" * 512), ("c" * 95 + ".png", b"y" * 513)]  # empty, one block, a long name
    members += [(f"s{i:04d}.png", rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes())
                for i in range(40)]
    ours = TarOut(tmp_path / "ours.tar")
    with tarfile.open(tmp_path / "tarfile.tar", "w", format=tarfile.USTAR_FORMAT) as theirs:
        for name, data in members:
            ours.add(name, data)
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
            theirs.addfile(info, io.BytesIO(data))
    ours.close()
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "tarfile.tar").read_bytes()


def test_imagefolder_and_webdataset_sources(tmp_path):
    import webdataset as wds

    rng = np.random.default_rng(1)
    root = tmp_path / "folder"
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("n01440764", "n01443537"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(root / split / cls / f"im{i}.png")
    (root / "classnames.txt").write_text("tench\ngoldfish\n")
    ds = create_dataset("imagefolder", root=str(root), image_size=16)
    assert ds.labels.names == ("tench", "goldfish") and ds.labels.wnids == ("n01440764", "n01443537")
    samples = list(ds.samples("train"))
    assert len(samples) == 6 and [s.label for s in samples] == [0, 0, 0, 1, 1, 1]
    assert samples[0].image.size == (16, 16)
    n = write_dataset_split(ds, "val", tmp_path / "val-shards", 100, progress=False)
    assert n == 4 and load_arrays(tmp_path / "val-shards")[0].shape == (4, 3, 16, 16)

    # existing webdataset shards written by the webdataset library itself
    wroot = tmp_path / "wds"
    wroot.mkdir()
    (wroot / "classnames.txt").write_text("cat\ndog\n")
    pngs = []
    with wds.TarWriter(str(wroot / "train-000000.tar")) as sink:
        for i in range(4):
            im = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            pngs.append(im)
            sink.write({"__key__": f"sample{i:03d}", "png": Image.fromarray(im), "cls": i % 2})
    wsrc = create_dataset("webdataset", root=str(wroot))
    got = list(wsrc.samples("train"))
    assert [s.label for s in got] == [0, 1, 0, 1]
    assert all(np.array_equal(np.asarray(s.image), p) for s, p in zip(got, pngs, strict=True))
    with pytest.raises(DatasetError, match="no split folder"):
        list(ds.samples("test"))


def test_subsets_nested_and_balanced():
    import pandas as pd

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 300)
    rng.shuffle(labels)
    manifest = pd.DataFrame({"key": [f"k{i}" for i in range(len(labels))], "label": labels})
    previous: set[str] = set()
    for scale in (10, 95, 100, 1000, 1003, 2999, 3000):
        keys = subset_keys(manifest, scale, 10, seed=3)
        assert len(keys) == scale
        counts = manifest.set_index("key").loc[keys, "label"].value_counts().reindex(range(10), fill_value=0)
        assert counts.max() - counts.min() <= 1  # balanced
        assert list(counts) == list(per_class_counts(scale, 10))
        assert previous <= set(keys)  # nested
        previous = set(keys)
    # the order depends on keys, not on row order; another seed gives another order
    shuffled = manifest.sample(frac=1.0, random_state=1)
    assert set(subset_keys(shuffled, 100, 10, seed=3)) == set(subset_keys(manifest, 100, 10, seed=3))
    assert set(subset_keys(manifest, 100, 10, seed=4)) != set(subset_keys(manifest, 100, 10, seed=3))
    with pytest.raises(ValueError, match="largest balanced scale of this set is 3000"):
        subset_keys(manifest, 3010, 10)
