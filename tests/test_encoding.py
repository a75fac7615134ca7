"""How a set stores its images (synscale.data.encoding): img2dataset's JPEGs kept byte for byte where they already
are the set's pixels (and re-encoded as PNG where they are not), JPEG and WebP re-encoding at a recorded quality
that enters the set's identity, the training loader reading every format, and the array cache for small sets only."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synscale.cli import main
from synscale.data import shards as shards_mod
from synscale.data.encoding import ImageEncoding, decode_stored
from synscale.data.shards import iter_samples, iter_tar_samples, read_manifest
from synscale.data.stages import dataset_shards, shards_params
from synscale.errors import ConfigError, DataError
from synscale.study.plan import new_context
from synscale.train.data import ShardSource

SIDE = 32


def photo(seed: int, side: int = SIDE, mode: str = "RGB") -> Image.Image:
    """A smooth picture with some texture (gradients and blobs, plus noise): what JPEG is made for."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    chans = [np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) + np.cos(5 * y * rng.uniform(0.5, 2)) for _ in range(3)]
    arr = np.stack(chans, -1) * 50 + 128 + rng.normal(0, 6, (side, side, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.convert(mode)


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pairs_shard(path: Path, images: list[bytes], ext: str = "jpg") -> Path:
    """An img2dataset shard: sample i is `<i>.<ext>` with its bytes and `<i>.txt` "caption i"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, data in enumerate(images):
            for member, body in ((f"{i:09d}.{ext}", data), (f"{i:09d}.txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return path


def members(set_dir: Path) -> dict[str, tuple[str, bytes]]:
    """caption -> (extension of the stored image, its bytes)."""
    out = {}
    for shard in sorted(set_dir.glob("shard-*.tar")):
        for _, files in iter_tar_samples(shard):
            ext = next(e for e in ("png", "jpg", "webp") if e in files)
            out[json.loads(files["json"])["caption"]] = (ext, files[ext])
    return out


def test_img2dataset_jpegs_are_kept_as_they_came(tmp_path):
    sources = [jpeg_bytes(photo(i)) for i in range(6)]
    sources.append(jpeg_bytes(photo(6, mode="L")))  # a grey JPEG: the set is RGB, so it is stored as PNG
    pairs_shard(tmp_path / "laion" / "00000.tar", sources)
    for fmt in ("auto", "png"):
        assert main(["shards", "img2dataset", "--root", str(tmp_path / "laion"), "--out", str(tmp_path / fmt),
                     "--image-format", fmt]) == 0
    kept, png = members(tmp_path / "auto"), members(tmp_path / "png")
    for i, src in enumerate(sources[:6]):
        assert kept[f"caption {i}"] == ("jpg", src)  # the very bytes img2dataset wrote
        assert png[f"caption {i}"][0] == "png"
    assert kept["caption 6"][0] == "png"
    # the same pixels either way, as the training loader reads them, and the same identity
    a, b = ShardSource([(tmp_path / "auto", None)]), ShardSource([(tmp_path / "png", None)])
    for i in range(len(sources)):
        assert a.get(i).shape == (3, SIDE, SIDE) and np.array_equal(a.get(i), b.get(i))
    record = {f: json.loads((tmp_path / f / "shards.json").read_text()) for f in ("auto", "png")}
    assert "image_format" not in record["auto"] and "image_format" not in record["png"]
    assert sum(len(d) for _, d in kept.values()) < 0.6 * sum(len(d) for _, d in png.values())


def test_resized_images_are_not_kept(tmp_path):
    pairs_shard(tmp_path / "laion" / "00000.tar", [jpeg_bytes(photo(i, side=48)) for i in range(3)])
    assert main(["shards", "img2dataset", "--root", str(tmp_path / "laion"), "--out", str(tmp_path / "s"),
                 "--image-size", str(SIDE)]) == 0
    assert {ext for ext, _ in members(tmp_path / "s").values()} == {"png"}
    assert {decode_stored(d).shape for _, d in members(tmp_path / "s").values()} == {(SIDE, SIDE, 3)}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt,ext", [("jpeg", "jpg"), ("webp", "webp")])
def test_lossy_formats_reencode_at_their_quality_and_enter_the_id(tmp_path, fmt, ext):
    pairs_shard(tmp_path / "pairs" / "00000.tar", [png_bytes(photo(i)) for i in range(12)], ext="png")
    ctx = new_context(tmp_path / "w", quiet=True)
    common = dict(dataset="img2dataset", root=str(tmp_path / "pairs"), image_size=0, shard_size=50, split="train")
    lossless = dataset_shards(ctx, **common)
    lossy = dataset_shards(ctx, **common, encoding=ImageEncoding(fmt, 90))
    assert lossy.id != lossless.id  # a lossy set is another set
    assert dataset_shards(ctx, **common, encoding=ImageEncoding("png")).id == lossless.id  # auto and png: the same
    assert shards_params(**common, limit=0, columns={}, encoding=ImageEncoding(fmt, 90))["image_quality"] == 90
    exact = {k: decode_stored(b) for k, b, _ in iter_samples(lossless.path)}
    stored = list(iter_samples(lossy.path))
    assert len(stored) == 12 and {ext} == {e for e, _ in members(lossy.path).values()}
    err = [np.abs(decode_stored(b).astype(int) - exact[k]).mean() for k, b, _ in stored]
    assert 0 < np.mean(err) < 6  # lossy, but close at quality 90
    assert ShardSource([(lossy.path, None)]).get(0).shape == (3, SIDE, SIDE)  # the loader reads it as it reads PNG
    worse = dataset_shards(ctx, **common, encoding=ImageEncoding(fmt, 20))
    err20 = [np.abs(decode_stored(b).astype(int) - exact[k]).mean() for k, b, _ in iter_samples(worse.path)]
    assert np.mean(err20) > np.mean(err)


def test_jpeg_keeps_grey_images_grey_and_webp_refuses_them(tmp_path, tiny_fmnist):
    ctx = new_context(tmp_path / "w", quiet=True)
    common = dict(dataset="fashion-mnist", root=str(tiny_fmnist), image_size=0, shard_size=50, split="train", limit=20)
    res = dataset_shards(ctx, **common, encoding=ImageEncoding("jpeg", 95))
    assert ShardSource([(res.path, None)]).get(3).shape == (1, 28, 28)
    with pytest.raises(DataError, match="image_format webp stores colour images only.*use jpeg or png"):
        dataset_shards(ctx, **common, encoding=ImageEncoding("webp", 95))


def test_the_array_cache_is_for_small_sets_only(tmp_path, tiny_fmnist, monkeypatch):
    ctx = new_context(tmp_path / "w", quiet=True)
    common = dict(dataset="fashion-mnist", root=str(tiny_fmnist), image_size=0, shard_size=50, split="train")
    small = dataset_shards(ctx, **common, limit=10)
    assert (small.path / "arrays.npy").exists()
    monkeypatch.setattr(shards_mod, "ARRAY_CACHE_MAX_BYTES", 28 * 28 * 10)  # ten images
    big = dataset_shards(ctx, **common, limit=11)
    assert not (big.path / "arrays.npy").exists() and len(read_manifest(big.path)) == 11


def test_bad_formats_are_one_line():
    with pytest.raises(ConfigError, match="image_format 'gif': one of auto, png, jpeg, webp"):
        ImageEncoding("gif")
    with pytest.raises(ConfigError, match="image_quality 0: from 1 to 100"):
        ImageEncoding("jpeg", 0)
