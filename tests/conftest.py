"""Shared fixtures: a small Fashion-MNIST stand-in cut from the real Debian files (a prefix of each
split, written as gzipped IDX like the originals), so stage and CLI tests run in seconds."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from synscale.data.datasets import DEBIAN_FASHION_MNIST, read_idx

ROOT = Path(__file__).resolve().parents[1]


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_files() -> Path:
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Debian's dataset-fashion-mnist is required: apt-get install -y dataset-fashion-mnist")
    return DEBIAN_FASHION_MNIST


@pytest.fixture(scope="session")
def tiny_fmnist(fmnist_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 train / 500 test images of the real Fashion-MNIST, same file layout."""
    out = tmp_path_factory.mktemp("fmnist-tiny")
    for split, n in (("train", 3000), ("t10k", 500)):
        images = read_idx(fmnist_files / f"{split}-images-idx3-ubyte.gz")[:n]
        labels = read_idx(fmnist_files / f"{split}-labels-idx1-ubyte.gz")[:n]
        write_idx(out / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(out / f"{split}-labels-idx1-ubyte.gz", labels)
    return out


SYNTHETIC_STUDY = """
name = "tiny-synthetic"
scales = [200, 400]
[data]
dataset = "fashion-mnist"
root = "{root}"
reference_size = 60000

[train]
batch_size = 64

[train.schedule]
zero_scale = 100
iters_per_doubling = 20
warmup_per_doubling = 2

[fit]
bootstrap = 50

[[synthetic]]
name = "tiny-sd-cfg2-w2s"
model = "{model}"
strategy = "word2sen"
guidance = 2.0
steps = 1
size = 16
batch_size = 20
shard_size = 100
"""


@pytest.fixture(scope="session")
def synthetic_study_file(tiny_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study of real data and one synthetic configuration that a tiny (random) Stable Diffusion pipeline
    generates, at scales 200 and 400, with its metrics."""
    from tiny_pipelines import tiny_stable_diffusion

    tmp = tmp_path_factory.mktemp("study")
    model = tiny_stable_diffusion(tmp / "pipe")
    path = tmp / "study.toml"
    path.write_text(SYNTHETIC_STUDY.format(root=tiny_fmnist, model=model))
    return path


@pytest.fixture(scope="session")
def finished_study(synthetic_study_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir in which synthetic_study_file ran to the end (stages, results, sample grids, report), made once
    per session (~15 s on 2 cores): tests read it, or change a copy of it."""
    from synscale.cli import main

    work = tmp_path_factory.mktemp("finished") / "w"
    assert main(["study", str(synthetic_study_file), "--workdir", str(work), "-q"]) == 0
    return work
