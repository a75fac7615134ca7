"""RandAugment on the training device (synscale.train.randaugment): each op against timm's PIL op at the same
magnitude, the draws' distribution, batches equal to single images, and a run split over processes augmenting
each image as one process does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synscale.train import randaugment as R

TIMM = pytest.importorskip("timm.data.auto_augment")


def _image(channels: int, side: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.stack([np.sin(6 * x + i) * 60 + np.cos(5 * y * (i + 1)) * 40 + 128 for i in range(channels)], -1)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", R.OPS)
def test_each_op_is_timms_op(name, channels):
    img = _image(channels)
    level_fn = TIMM.LEVEL_TO_ARG[name]
    args = level_fn(10, TIMM._HPARAMS_DEFAULT) if level_fn else ()
    if name in R.GEOMETRIC:
        args = (abs(args[0]),)  # the positive sign; ours is given as +1 below
    fill = (124, 116, 104) if channels == 3 else 0
    want = np.asarray(TIMM.NAME_TO_OP[name](Image.fromarray(img), *args, fillcolor=fill, resample=Image.BILINEAR),
                      dtype=float)
    t = torch.from_numpy(img.reshape(*img.shape[:2], channels)).permute(2, 0, 1)[None].float()
    got = R._apply(name, t, 1.0, torch.ones(1))[0].permute(1, 2, 0).numpy().reshape(want.shape)
    diff = np.abs(got - want)
    assert diff.mean() < 1.0 and np.mean(diff > 2) < 0.02, (diff.mean(), np.mean(diff > 2))
    if name not in R.GEOMETRIC:  # the pixel ops are PIL's within one grey level
        assert diff.max() <= 1


def test_draws_are_uniform_over_the_ops_and_fixed_by_the_seed():
    seeds = np.arange(30000, dtype=np.uint64) * 7 + 12345
    ops, sign = R.draws(seeds, 2)
    counts = np.bincount(ops.ravel(), minlength=len(R.OPS))
    expected = ops.size / len(R.OPS)
    assert np.all(np.abs(counts - expected) < 0.06 * expected), counts
    assert abs((sign > 0).mean() - 0.5) < 0.01 and set(np.unique(sign)) == {-1.0, 1.0}
    again, _ = R.draws(seeds[::-1].copy(), 2)
    assert np.array_equal(again[::-1], ops)  # a seed's draws do not depend on its neighbours
    assert not np.array_equal(ops[:, 0], ops[:, 1])


def test_a_batch_is_augmented_as_its_images_one_by_one():
    x = torch.from_numpy(np.stack([_image(3, seed=i) for i in range(24)])).permute(0, 3, 1, 2).contiguous()
    seeds = np.arange(24, dtype=np.uint64) * 1_000_003 + 5
    whole = R.rand_augment(x, seeds, 2, 15)
    assert whole.dtype == torch.uint8 and whole.shape == x.shape
    for i in (0, 7, 23):
        assert torch.equal(whole[i : i + 1], R.rand_augment(x[i : i + 1], seeds[i : i + 1], 2, 15))
    changed = (whole.float() - x.float()).abs().mean(dim=(1, 2, 3))
    assert (changed > 1).float().mean() > 0.6  # most images are changed (Solarize at magnitude 10 is a no-op)


def test_a_run_over_two_processes_augments_each_image_as_one_process_does():
    from synscale.train.config import TrainConfig
    from synscale.train.data import ArraySource, SampleAugment, StepBatches
    from synscale.train.engine import device_randaugment

    images = np.stack([_image(3, side=28, seed=i) for i in range(64)]).transpose(0, 3, 1, 2)
    src = ArraySource(np.ascontiguousarray(images), np.arange(64) % 10)
    cfg = TrainConfig(randaugment=[2, 15], randaugment_on="device", augment="flip", crop=24, seed=3)
    aug = SampleAugment((), 24, True)
    one = device_randaugment(StepBatches(src, 32, 3, aug)[5][0], cfg, 5, 0)
    halves = [device_randaugment(StepBatches(src, 32, 3, aug, rank=r, world=2)[5][0], cfg, 5, r) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), one)
    assert not torch.equal(one, device_randaugment(StepBatches(src, 32, 3, aug)[5][0], cfg, 6, 0))


def test_device_randaugment_enters_the_id_and_refuses_flip_shift():
    from synscale.errors import ConfigError
    from synscale.schema import from_dict
    from synscale.train.config import TrainConfig, train_identity

    loader = TrainConfig(randaugment=[2, 15], augment="flip")
    device = TrainConfig(randaugment=[2, 15], augment="flip", randaugment_on="device")
    assert "randaugment_on" not in train_identity(loader) and train_identity(device)["randaugment_on"] == "device"
    with pytest.raises(ConfigError, match="randaugment_on = 'device' runs after the loader's crop and flip"):
        from_dict(TrainConfig, {"randaugment": [2, 15], "randaugment_on": "device"}, "recipe", "train.")
