"""Images as a user has them (16-bit PNGs, a camera's rotated JPEG, transparent palettes) decode to the pixels a
viewer shows, through every source (synscale.data.decode); sample keys accept any file tree and never collide
(synscale.data.keys); a classnames.txt names any class folders."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synscale.cli import main
from synscale.data.datasets import create_dataset, iter_webdataset, shard_urls
from synscale.data.decode import decode_image, header_size
from synscale.data.keys import KEY_BYTES, escape, image_folder_keys, sample_key
from synscale.data.shards import iter_samples, read_labels, read_manifest
from synscale.errors import BadSample, DataError, UserError

H, W = 16, 8  # every test image decodes to 8 x 16 px (width x height), so that a set holds them at native size
GREY16 = np.array([0, 0x8000, 0xFFFF, 0x80FF, 0x0100, 0x01FF, 0x7FFF, 0x4000], np.uint16)  # one row, repeated
GREY8 = np.array([0, 128, 255, 128, 1, 1, 127, 64], np.uint8)  # known answers: the high byte


def png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG of a uint16 array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, written chunk by chunk (no
    image library writes 16-bit colour PNGs here)."""
    arr = np.asarray(arr, dtype=">u2")
    h, w = arr.shape[:2]
    colour_type = {2: 0, 3: 2, 4: 6}[arr.ndim if arr.ndim == 2 else arr.shape[2]]
    raw = b"".join(b"\0" + arr[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def user_images(d: Path) -> dict[str, np.ndarray]:
    """The images of the tests, written in d, each file name -> the RGB pixels it must decode to."""
    d.mkdir(parents=True, exist_ok=True)
    grey = np.tile(GREY16, (H, 1))
    Image.fromarray(grey).save(d / "grey16.png")  # Pillow writes a uint16 array as a 16-bit grey PNG (I;16)
    rgb = np.stack([grey, grey[:, ::-1], np.full_like(grey, 0x3412)], -1)
    png16(d / "rgb16.png", rgb)
    # a camera's JPEG: stored 16 wide, 8 high, black left half; orientation 6 = turn 90 degrees clockwise
    stored = np.zeros((W, H, 3), np.uint8)
    stored[:, H // 2:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(d / "exif6.jpg", exif=exif, quality=95)
    upright = np.asarray(Image.open(d / "exif6.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_270))
    # a palette PNG whose entry 1 is transparent: it shows white
    pal = Image.new("P", (W, H))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.putdata([x % 3 for _ in range(H) for x in range(W)])
    pal.save(d / "palette.png", transparency=1)
    shown = np.array([[255, 0, 0], [255, 255, 255], [0, 0, 255]], np.uint8)[np.arange(W) % 3]
    return {
        "grey16.png": np.repeat(np.tile(GREY8, (H, 1))[..., None], 3, -1),
        "rgb16.png": np.stack([np.tile(GREY8, (H, 1)), np.tile(GREY8[::-1], (H, 1)), np.full((H, W), 0x34, np.uint8)], -1),
        "exif6.jpg": upright,
        "palette.png": np.broadcast_to(shown, (H, W, 3)),
    }


def stored_pixels(set_dir: Path) -> dict[str, np.ndarray]:
    """file (or caption) -> the pixels a set holds for it, decoded from its shards' PNGs."""
    return {(meta.get("file") or meta["caption"]).split("/")[-1]: np.asarray(Image.open(io.BytesIO(png)))
            for _, png, meta in iter_samples(set_dir)}


def test_user_images_decode_to_what_a_viewer_shows(tmp_path):
    expected = user_images(tmp_path)
    for name, want in expected.items():
        got = np.asarray(decode_image(tmp_path / name, name))
        assert got.shape == (H, W, 3) and np.array_equal(got, want), name
        assert header_size(tmp_path / name, name) == (W, H), name  # the rotated JPEG's too
    upright = np.asarray(decode_image(tmp_path / "exif6.jpg", "x")).mean(axis=(1, 2))
    assert upright[: H // 2 - 1].max() < 10 and upright[H // 2 + 1:].min() > 245  # the black half is now on top
    assert np.asarray(decode_image(tmp_path / "grey16.png", "x"))[0, 1].tolist() == [128, 128, 128]  # 0x8000


def test_alpha_is_composited_over_white_and_deep_modes_are_scaled(tmp_path):
    rgba = np.array([[[0, 0, 0, 255], [0, 0, 0, 0], [0, 0, 0, 128], [200, 100, 50, 255]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.asarray(decode_image(tmp_path / "rgba.png", "x")).tolist() == [
        [[0, 0, 0], [255, 255, 255], [127, 127, 127], [200, 100, 50]]]
    Image.fromarray(np.array([[0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert np.asarray(decode_image(tmp_path / "f.tif", "x"))[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0, 0x8000, 0xFFFF]], np.int32)).save(tmp_path / "i.tif")
    assert np.asarray(decode_image(tmp_path / "i.tif", "x"))[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0, 255.0]], np.float32)).save(tmp_path / "f255.tif")
    with pytest.raises(BadSample, match=r"f255.tif: floating-point pixel values from 0 to 255; synscale reads"):
        decode_image(tmp_path / "f255.tif", str(tmp_path / "f255.tif"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(BadSample, match=r"bad.png: not a readable image \(not an image format"):
        decode_image((tmp_path / "bad.png").read_bytes(), "bad.png")


def test_ordinary_images_decode_to_the_same_pixels_as_before(tmp_path):
    """8-bit RGB, grey and palette PNGs, JPEGs (colour, grey, CMYK) and opaque RGBA: what convert("RGB") gave."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).quantize(16).save(tmp_path / "pal.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    Image.fromarray(rgb[..., 1]).save(tmp_path / "grey.jpg")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.dstack([rgb, np.full((12, 10), 255, np.uint8)])).save(tmp_path / "opaque.png")
    for p in sorted(tmp_path.iterdir()):
        before = np.asarray(Image.open(p).convert("RGB"))
        assert np.array_equal(np.asarray(decode_image(p, p.name)), before), p.name
        assert np.array_equal(np.asarray(decode_image(p.read_bytes(), p.name)), before), p.name


def test_imagefolder_shards_hold_the_decoded_pixels(tmp_path):
    expected = user_images(tmp_path / "images" / "train" / "photos")
    assert main(["shards", "imagefolder", "--root", str(tmp_path / "images"), "--out", str(tmp_path / "set")]) == 0
    got = stored_pixels(tmp_path / "set")
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        assert np.array_equal(got[name], want), name


def _pairs_tar(path: Path, files: dict[str, bytes]) -> Path:
    """An img2dataset-style shard: for each file `<i>.<ext>` its bytes as sample `00000000i` and a caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, (name, data) in enumerate(files.items()):
            for member, body in ((f"{i:09d}.{name.rsplit('.', 1)[1]}", data), (f"{i:09d}.txt", name.encode())):
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return path


def test_img2dataset_shards_hold_the_decoded_pixels(tmp_path):
    expected = user_images(tmp_path / "files")
    _pairs_tar(tmp_path / "laion" / "00000.tar", {n: (tmp_path / "files" / n).read_bytes() for n in expected})
    assert main(["shards", "img2dataset", "--root", str(tmp_path / "laion"), "--out", str(tmp_path / "set")]) == 0
    got = stored_pixels(tmp_path / "set")  # keyed by caption: the file's name
    for name, want in expected.items():
        assert np.array_equal(got[name], want), name


def test_an_hf_dataset_of_16_bit_images_is_scaled(tmp_path):
    datasets = pytest.importorskip("datasets")
    expected = user_images(tmp_path / "files")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [{"bytes": (tmp_path / "files" / n).read_bytes(), "path": None} for n in ("grey16.png", "exif6.jpg")]
    datasets.Dataset.from_dict({"image": images, "label": [0, 1]}, features=features).save_to_disk(str(tmp_path / "hf"))
    samples = list(create_dataset("hf", str(tmp_path / "hf")).samples("train"))
    assert np.array_equal(np.asarray(samples[0].image), expected["grey16.png"])
    assert np.array_equal(np.asarray(samples[1].image), expected["exif6.jpg"])


# ---- keys


def test_keys_escape_what_webdataset_splits_on_and_keep_ordinary_names():
    assert escape("n01440764_10026") == "n01440764_10026" and escape("a b-c") == "a b-c"
    assert escape("img.001") == "img%2E001" and escape("a/b") == "a%2Fb" and escape("50%") == "50%25"
    assert escape("x~y\n") == "x%7Ey%0A" and escape("a_b", "_") == "a%5Fb"
    assert sample_key("train-d.v1/x_1") == "train-d%2Ev1%2Fx_1" and sample_key("000000001") == "000000001"
    long = sample_key("train-" + "é" * 200)
    assert len(long.encode()) <= KEY_BYTES and "." not in long and "%%" in long
    assert long != sample_key("train-" + "é" * 201)
    # an ordinary tree keeps the keys it had: <split>-<class>_<stem>
    files = [("n01440764", "n01440764_10026.JPEG"), ("golden_retriever", "1.png"), ("cat", "0.png")]
    assert image_folder_keys("train-", files, ["cat", "golden_retriever", "n01440764"]) == [
        "train-n01440764_n01440764_10026", "train-golden_retriever_1", "train-cat_0"]


def tricky_tree(root: Path) -> dict[str, str]:
    """A split whose names the old keys refused or merged; file -> its class folder."""
    files = {"cat/img.001.png": "cat", "cat/0.png": "cat", "cat/0.jpg": "cat", "st.bernard/x.png": "st.bernard",
             "a/b_c.png": "a", "a_b/c.png": "a_b", "a/" + "long" * 60 + ".png": "a", "a/50%.png": "a"}
    for i, rel in enumerate(files):
        (root / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)).save(root / "train" / rel)
    return files


def test_any_file_tree_is_written_with_distinct_keys_and_the_right_labels(tmp_path):
    files = tricky_tree(tmp_path / "images")
    assert main(["shards", "imagefolder", "--root", str(tmp_path / "images"), "--out", str(tmp_path / "set")]) == 0
    m = read_manifest(tmp_path / "set")
    assert sorted(m.file) == sorted(files) and m.key.is_unique
    folders = read_labels(tmp_path / "set").names
    assert folders == ("a", "a_b", "cat", "st.bernard")
    assert all(folders[label] == files[f] for f, label in zip(m.file, m.label, strict=True))
    key = dict(zip(m.file, m.key, strict=True))
    assert [key[f] for f in ("a/b_c.png", "a_b/c.png", "cat/img.001.png", "cat/0.png", "cat/0.jpg",
                             "st.bernard/x.png", "a/50%.png")] == [
        "train-a_b_c", "train-a%5Fb_c", "train-cat_img%2E001", "train-cat_0~png", "train-cat_0~jpg",
        "train-st%2Ebernard_x", "train-a_50%25"]
    # each PNG holds its own image, and the webdataset library reads the keys back whole
    for (k, png, meta), i in zip(iter_samples(tmp_path / "set"), range(len(m)), strict=True):
        assert np.asarray(Image.open(io.BytesIO(png)))[0, 0, 0] == 10 * list(files).index(meta["file"])
    read = [s["__key__"] for s in iter_webdataset(shard_urls(str(tmp_path / "set")))]
    assert read == m.key.tolist()


def test_webdataset_keys_with_slashes_and_dots_stay_apart(tmp_path):
    """`d.v1/x_1` and `d_v1/x/1` both became `train-d_v1_x_1`."""
    (tmp_path / "wds").mkdir()
    (tmp_path / "wds" / "classnames.txt").write_text("cat\ndog\n")
    with tarfile.open(tmp_path / "wds" / "train-000.tar", "w") as tar:
        for i, key in enumerate(("d.v1/x_1", "d_v1/x/1")):
            buf = io.BytesIO()
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(buf, format="PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert main(["shards", "webdataset", "--root", str(tmp_path / "wds"), "--split", "train", "--out",
                 str(tmp_path / "set")]) == 0
    m = read_manifest(tmp_path / "set")
    assert m.key.tolist() == ["train-d%2Ev1%2Fx_1", "train-d_v1%2Fx%2F1"] and m.label.tolist() == [0, 1]
    assert m.source_key.tolist() == ["d.v1/x_1", "d_v1/x/1"]


def test_ood_folder_keys_follow_the_same_rule(tmp_path):
    from synscale.data.ood import ood_samples
    from synscale.labels import LabelSet

    for rel in ("Bag/0.000116_digital clock.jpg", "Bag/1.png", "Bag_x/1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / rel)
    samples = list(ood_samples(LabelSet(("Bag", "Bag_x", "Coat")), str(tmp_path)))
    assert [(s.key, s.label, s.meta["file"]) for s in samples] == [
        ("Bag_0%2E000116_digital clock", 0, "Bag/0.000116_digital clock.jpg"), ("Bag_1", 0, "Bag/1.png"),
        ("Bag%5Fx_1", 1, "Bag_x/1.png")]


# ---- class names


def two_splits(root: Path, classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    for split in ("test", "train"):
        for i, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.full((4, 4, 3), 50 * i, np.uint8)).save(root / split / c / "0.png")
    return root


def test_classnames_txt_names_class_folders_that_are_not_wnids(tmp_path):
    root = two_splits(tmp_path / "images")
    (root / "classnames.txt").write_text("house cat\nGolden Retriever\n")
    for split in ("test", "train"):  # 'test' sorts first: it was the split the folders were said not to be in
        assert main(["shards", "imagefolder", "--root", str(root), "--split", split, "--out",
                     str(tmp_path / split)]) == 0
        m = read_manifest(tmp_path / split)
        assert m.class_name.tolist() == ["house cat", "Golden Retriever"] and m.label.tolist() == [0, 1]
        assert m.file.tolist() == ["cat/0.png", "dog/0.png"]
    assert json.loads((tmp_path / "train" / "labels.json").read_text())["names"] == ["house cat", "Golden Retriever"]


def test_a_classnames_txt_that_does_not_fit_its_folders_is_a_user_error(tmp_path):
    root = two_splits(tmp_path / "images")
    (root / "classnames.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError, match=r"classnames.txt: 3 names for 2 class folders \(cat, dog\); write one name"):
        create_dataset("imagefolder", str(root))
    (root / "classnames.txt").write_text("pet\n\npet\n")
    with pytest.raises(DataError, match=r"classnames.txt: 'pet' is on lines 1 and 3; give each class folder its own"):
        create_dataset("imagefolder", str(root))
    wnids = two_splits(tmp_path / "in", ("n01440764", "n01443537"))
    (wnids / "classnames.txt").write_text("fish\nfish\n")  # wnids tell them apart (ImageNet's names repeat two)
    assert create_dataset("imagefolder", str(wnids)).labels.names == ("fish", "fish")
    assert issubclass(DataError, UserError)


def test_a_split_with_a_class_folder_the_first_lacks_says_which_and_what_to_do(tmp_path):
    root = two_splits(tmp_path / "images")
    (root / "train" / "emu").mkdir()
    ds = create_dataset("imagefolder", str(root))
    with pytest.raises(UserError, match=r"class folders \['emu'\] are not in split 'test', whose class folders are "
                                        r"the classes \(2: cat, dog\); add them to .*test or remove them here"):
        ds.count("train")


def test_file_names_that_are_not_utf8_are_written(tmp_path):
    import os

    root = tmp_path / "images"
    for folder, name in ((b"ch\xe2t", b"caf\xe9.png"), (b"dog", b"ok.png")):
        try:
            (root / "train" / os.fsdecode(folder)).mkdir(parents=True)
        except OSError:
            pytest.skip("this file system takes UTF-8 names only")
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "train" / os.fsdecode(folder) / os.fsdecode(name))
    assert main(["shards", "imagefolder", "--root", str(root), "--out", str(tmp_path / "set")]) == 0
    m = read_manifest(tmp_path / "set")
    assert m.key.tolist() == ["train-ch%E2t_caf%E9", "train-dog_ok"]
    assert m.file.tolist() == ["ch\\xe2t/caf\\xe9.png", "dog/ok.png"] and m.class_name.tolist() == ["ch\\xe2t", "dog"]
