"""One training run across two machines through Ray Train (train.nodes = 2): on a local Ray cluster of two nodes
(ray.cluster_utils.Cluster, one CPU each, so each node holds one rank; gloo), the run's loss curve and weights
equal a one-machine two-process torchrun run's within float tolerance, and a rank killed mid-run is restarted by
Ray Train and resumes from the last checkpoint to the very weights of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synscale.config import ScheduleConfig, TrainConfig
from synscale.data.datasets import read_idx
from synscale.data.shards import ShardWriter
from synscale.labels import LabelSet
from synscale.train.engine import KILL_AT_STEP, KILL_ONCE
from synscale.train.launch import launch, make_spec

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train")

CFG = TrainConfig(model="vit_tiny_patch16_224", model_kwargs={"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2},
                  batch_size=32, lr=3e-3, loss="bce", randaugment=[2, 9], crop=24, augment="flip", checkpoint_every=5,
                  device="cpu", tensorboard=False,
                  schedule=ScheduleConfig(zero_scale=300, iters_per_doubling=12, warmup_per_doubling=2))


@pytest.fixture(scope="module")
def fm_set(fmnist_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fm-set")
    images = read_idx(fmnist_files / "train-images-idx3-ubyte.gz")[:600]
    labels = read_idx(fmnist_files / "train-labels-idx1-ubyte.gz")[:600]
    names = tuple(f"c{i}" for i in range(10))
    with ShardWriter(out, LabelSet(names), shard_size=250) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            w.write(f"s{i:05d}", img, int(y))
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each; the job's workers carry the kill hook, armed only while its marker is absent."""
    from ray.cluster_utils import Cluster

    marker = tmp_path_factory.mktemp("kill") / "killed"
    marker.touch()  # disarmed
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False,
             runtime_env={"env_vars": {KILL_AT_STEP: "8", KILL_ONCE: str(marker), "OMP_NUM_THREADS": "1"}})
    try:
        assert sorted(n["Resources"]["CPU"] for n in ray.nodes() if n["Alive"]) == [1.0, 1.0]
        yield marker
    finally:
        ray.shutdown()
        c.shutdown()


def _spec(tmp: Path, name: str, fm_set: Path, **kw) -> dict:
    out = tmp / name
    out.mkdir()
    return make_spec(dataclasses.asdict(dataclasses.replace(CFG, **kw)), [(str(fm_set), None)], 10, 600, out)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_two_nodes_train_what_two_local_processes_train_and_a_killed_rank_resumes(cluster, fm_set, tmp_path):
    spec = _spec(tmp_path, "torchrun", fm_set, nproc=2)
    (tmp_path / "torchrun" / "spec.json").write_text(json.dumps(spec))
    ref = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "synscale.train.launch", str(tmp_path / "torchrun" / "spec.json")],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    whole = launch(_spec(tmp_path, "ray", fm_set, nodes=2), 1, progress=False, nodes=2)
    assert whole["processes"] == 2 and whole["resumed_from_step"] == 0 and whole["steps"] == 12
    torchrun = json.loads((tmp_path / "torchrun" / "train.json").read_text())
    assert np.allclose(whole["loss_curve"], torchrun["loss_curve"], rtol=1e-4)
    a, b = _weights(tmp_path / "ray"), _weights(tmp_path / "torchrun")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert not (tmp_path / "ray" / "ray-train").exists()  # Ray Train's own store is not kept

    cluster.unlink()  # armed: the first rank to reach step 8 is killed; Ray Train restarts the group
    resumed = launch(_spec(tmp_path, "killed", fm_set, nodes=2), 1, progress=False, nodes=2)
    assert cluster.exists() and resumed["resumed_from_step"] == 5
    c = _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert np.allclose(resumed["loss_curve"], whole["loss_curve"], rtol=1e-9, atol=0)  # every rank's window resumed


def test_a_cluster_too_small_for_the_run_is_one_line(cluster, fm_set, tmp_path):
    from synscale.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.nodes \* nproc = 4 ranks, each asking 1 CPU.*hold 2; add machines"):
        launch(_spec(tmp_path, "big", fm_set, nodes=2, nproc=2), 2, progress=False, nodes=2)
