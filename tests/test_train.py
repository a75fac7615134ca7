import numpy as np
import pytest
import torch

from synscale.config import ScheduleConfig, TrainConfig
from synscale.train.classifier import flip_shift, train_classifier
from synscale.train.data import batch_indices
from synscale.train.models import create_model


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("synscale_cnn_small", {}),
        ("synscale_cnn_base", {}),
        ("vit_tiny_patch16_224", {"patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}),
        ("resnet10t", {}),
    ],
)
def test_timm_models_by_name(name, kwargs):
    model = create_model(name, num_classes=7, in_chans=1, img_size=28, **kwargs)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'vit_nonexistent'"):
        create_model("vit_nonexistent", 10, 1, 28)


def test_data_order_is_a_function_of_step():
    a = [batch_indices(100, 32, s, seed=1) for s in range(7)]
    b = [batch_indices(100, 32, s, seed=1) for s in range(7)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    epoch0 = torch.cat(a[:3])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
    assert not torch.equal(a[0], a[3])  # a new permutation each epoch


def test_each_epochs_order_is_computed_once_and_shared_through_a_file(tmp_path, monkeypatch):
    """EpochOrder gives batch_indices' very indices; above ORDER_SHARED samples the first process writes the epoch's
    permutation and the others (a second instance, a pickled copy as a loader worker gets) memory-map it."""
    import pickle

    from synscale.train import data

    plain = data.EpochOrder(1000, 64, seed=5)
    for s in range(40):  # 15 steps an epoch: nearly three epochs
        assert np.array_equal(plain.indices(s), batch_indices(1000, 64, s, seed=5).numpy()), s
    monkeypatch.setattr(data, "ORDER_SHARED", 100)
    first = data.EpochOrder(1000, 64, seed=5, directory=tmp_path / "order")
    assert np.array_equal(first.indices(20), batch_indices(1000, 64, 20, seed=5).numpy())
    assert sorted(p.name for p in (tmp_path / "order").glob("*.npy")) == ["order-5-1000-1.npy"]
    other = pickle.loads(pickle.dumps(first))
    assert other._epoch == -1  # a worker's copy starts empty, then maps the file
    assert np.array_equal(other.indices(21), batch_indices(1000, 64, 21, seed=5).numpy())
    assert isinstance(other._perm, np.memmap) and other._perm.dtype == np.int32
    for s in range(22, 70):
        assert np.array_equal(first.indices(s), batch_indices(1000, 64, s, seed=5).numpy()), s
    assert sorted(p.name for p in (tmp_path / "order").glob("*.npy")) == ["order-5-1000-3.npy", "order-5-1000-4.npy"]


def test_flip_shift_moves_and_flips_pixels():
    x = torch.full((64, 1, 8, 8), -1.0)
    x[:, :, 3, 2] = 1.0  # one bright pixel
    out = flip_shift(x, torch.Generator().manual_seed(0))
    pos = [tuple(np.argwhere(o[0].numpy() == 1.0)[0]) for o in out if (o == 1.0).any()]
    assert len(pos) == 64 and len(set(pos)) > 5  # every image keeps its pixel, at various places
    assert all(1 <= r <= 5 for r, _ in pos)  # shifted by at most 2 rows


def test_training_a_timm_model_on_a_planted_task():
    """Class = which half of the image is bright; a few steps of a timm ResNet learn it."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    images = rng.integers(0, 60, (256, 1, 16, 16)).astype(np.uint8)
    images[labels == 0, :, :8] += 150
    images[labels == 1, :, 8:] += 150
    cfg = TrainConfig(model="resnet10t", lr=3e-3, batch_size=64, augment="none",
                      schedule=ScheduleConfig(zero_scale=128, iters_per_doubling=40, warmup_per_doubling=4))
    result = train_classifier(images, labels, 2, cfg, scale=256)
    assert result.steps == 40 and result.losses[-1] < 0.2
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 127.5 - 1
        acc = (result.model(x).argmax(1).numpy() == labels).mean()
    assert acc > 0.95


def test_streamed_training_reads_more_shards_than_the_open_file_limit(fmnist_files, tmp_path):
    """A set of 300 shards streamed by `synscale train` in a process allowed 256 open files (the 8M and 64M sets of
    the paper's grid hold ~1,000 shards per loader worker): each process keeps a bounded number of shards open."""
    import resource
    import subprocess
    import sys

    from synscale.data.datasets import FASHION_MNIST_CLASSES, read_idx
    from synscale.data.shards import ShardWriter
    from synscale.labels import LabelSet
    from synscale.train.data import MAX_OPEN_SHARDS
    from tests_helpers import NO_SYNTHETIC

    images = read_idx(fmnist_files / "train-images-idx3-ubyte.gz")[:300]
    labels = read_idx(fmnist_files / "train-labels-idx1-ubyte.gz")[:300]
    with ShardWriter(tmp_path / "set", LabelSet(FASHION_MNIST_CLASSES), shard_size=1, cache_arrays=False) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            w.write(f"s{i:05d}", img, int(y))
    assert len(list((tmp_path / "set").glob("shard-*.tar"))) == 300 > 256 > MAX_OPEN_SHARDS
    cmd = [sys.executable, "-m", "synscale", "train", str(tmp_path / "set"), "--out", str(tmp_path / "model"),
           "--set", "train.loader=stream", "--set", "train.batch_size=100", "--set", "train.tensorboard=false",
           *NO_SYNTHETIC, "--set", "scales=[300]", "--set", "data.scales=[]",
           "--set", "train.schedule={zero_scale=150, iters_per_doubling=6, warmup_per_doubling=1}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    assert run.returncode == 0, run.stderr
    assert "for 6 steps" in run.stdout  # 6 steps of 100: every image read at least once
