"""The training engine: sources and step batches, recipes, kill-and-resume, torchrun with 2 processes,
gradient accumulation, bf16, class-subset evaluation."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from synscale.config import ConfigError, ScheduleConfig, TrainConfig, load_study
from synscale.data.datasets import read_idx
from synscale.data.shards import ShardWriter, load_arrays
from synscale.errors import DataError
from synscale.labels import LabelSet
from synscale.train.data import ArraySource, SampleAugment, ShardSource, StepBatches, step_loader
from synscale.train.launch import make_spec

ROOT = Path(__file__).resolve().parents[1]
FM = LabelSet(("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))
TINY_VIT = {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def fm_set(fmnist_files, tmp_path_factory) -> Path:
    """600 real Fashion-MNIST images as synscale shards of 250 (three tars) with the array cache."""
    out = tmp_path_factory.mktemp("fm-set")
    images = read_idx(fmnist_files / "train-images-idx3-ubyte.gz")[:600]
    labels = read_idx(fmnist_files / "train-labels-idx1-ubyte.gz")[:600]
    with ShardWriter(out, FM, shard_size=250) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            w.write(f"s{i:05d}", img, int(y))
    return out


def test_shard_source_reads_exactly_the_decoded_images(fm_set):
    images, labels, keys = load_arrays(fm_set)
    src = ShardSource([(fm_set, None)])
    idx = np.array([0, 249, 250, 599, 17])
    assert np.array_equal(src.take(idx), images[idx]) and np.array_equal(src.labels, labels)
    assert src.shape == (1, 28, 28) and (fm_set / "tar_index.parquet").exists()
    # two parts (a mixed set): key lists in their order, concatenated
    two = ShardSource([(fm_set, keys[10:13]), (fm_set, [keys[500], keys[2]])])
    assert np.array_equal(two.take(np.arange(5)), images[[10, 11, 12, 500, 2]])
    assert two.labels.tolist() == labels[[10, 11, 12, 500, 2]].tolist()
    with pytest.raises(DataError, match="not in its shards"):
        ShardSource([(fm_set, ["nope"])])


def test_step_batches_do_not_depend_on_workers_or_processes(fm_set):
    aug = SampleAugment((2, 15), 24, True)
    src = ShardSource([(fm_set, None)])
    one = StepBatches(src, 32, seed=3, augment=aug)
    inline = list(step_loader(one, 2, 6, workers=0))
    pooled = list(step_loader(one, 2, 6, workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(inline, pooled, strict=True))
    thirds = list(step_loader(one, 2, 6, workers=3))  # each step's batch split 10 + 11 + 11 over three workers
    assert len(thirds) == 4 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                    for a, b in zip(inline, thirds, strict=True))
    assert [len(one.part(2, k, 3)[0]) for k in range(3)] == [10, 11, 11]
    assert inline[0][0].shape == (32, 1, 24, 24) and inline[0][0].dtype == torch.uint8
    assert not torch.equal(inline[0][0], inline[1][0])
    # the two processes of a 2-process run read the halves of the same global batch
    halves = [StepBatches(src, 32, 3, aug, rank=r, world=2)[4] for r in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), inline[2][0])
    # memory and shards give the same batches
    mem = StepBatches(ArraySource(*load_arrays(fm_set)[:2]), 32, 3, aug)
    assert torch.equal(mem[2][0], inline[0][0])


def test_sample_augment_known_answers():
    img = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    crop = SampleAugment(crop=5)
    out = crop(img, seed=1)
    windows = {(t, l) for t in range(4) for l in range(4) if np.array_equal(img[:, t:t + 5, l:l + 5], out)}
    assert out.shape == (3, 5, 5) and len(windows) == 1
    flips = [np.array_equal(SampleAugment(flip=True)(img, s), img[:, :, ::-1]) for s in range(40)]
    assert 10 < sum(flips) < 30 and not all(flips)
    ra = SampleAugment(randaugment=(2, 15))
    assert np.array_equal(ra(img, 5), ra(img, 5))
    assert sum(not np.array_equal(ra(img, s), img) for s in range(20)) >= 10
    with pytest.raises(ValueError, match="crop 9 is larger"):
        SampleAugment(crop=9)(img, 0)


def test_paper_recipe_is_table_a1(tmp_path):
    from synscale.train.recipes import load_recipe, recipe_names
    from synscale.train.schedule import total_iters, warmup_iters

    assert {"paper-vit-b16", "miniature-cnn", "miniature-vit"} <= set(recipe_names())
    study = tmp_path / "s.toml"
    study.write_text('name = "x"\nscales = [1000000, 2000000, 4000000]\n[train]\nrecipe = "paper-vit-b16"\n')
    t = load_study(study).train
    assert (t.model, t.batch_size, t.lr, t.weight_decay, t.betas, t.loss) == ("vit_base_patch16_224", 4096, 3e-3, 0.1,
                                                                            [0.9, 0.999], "bce")
    assert (t.mixup, t.randaugment, t.crop, t.augment, t.precision) == (0.5, [2, 15], 224, "flip", "bf16")
    assert t.model_kwargs == {"drop_rate": 0.1, "drop_path_rate": 0.1}
    assert [(total_iters(d, t.schedule), warmup_iters(d, t.schedule)) for d in (10**6, 2 * 10**6, 4 * 10**6)] == [
        (95_000, 10_000), (190_000, 20_000), (285_000, 30_000)]
    # the study's keys override the recipe's; model_kwargs merge
    study.write_text('name = "x"\nscales = [1000000]\n[train]\nrecipe = "paper-vit-b16"\nlr = 1e-3\nnproc = 8\n'
                     'accum_steps = 1\nmodel_kwargs = { img_size = 192 }\n')
    t = load_study(study).train
    assert (t.lr, t.nproc, t.batch_size // t.nproc, t.mixup) == (1e-3, 8, 512, 0.5)
    assert t.model_kwargs == {"drop_rate": 0.1, "drop_path_rate": 0.1, "img_size": 192}
    assert load_study(study, overrides=["train.recipe=miniature-cnn"]).train.model == "synscale_cnn_small"
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; known: miniature-cnn"):
        load_study(study, overrides=["train.recipe=nope"])
    with pytest.raises(ConfigError, match="must divide by nproc"):
        load_study(study, overrides=["train.nproc=3"])
    assert load_recipe("miniature-cnn")["schedule"] == {"zero_scale": 700, "iters_per_doubling": 350, "warmup_per_doubling": 35}


def test_recipes_command(capsys):
    from synscale.cli import main

    assert main(["recipes"]) == 0
    assert "paper-vit-b16" in capsys.readouterr().out
    assert main(["recipes", "paper-vit-b16"]) == 0
    assert "randaugment = [2, 15]" in capsys.readouterr().out


def _vit_cfg(**kw) -> TrainConfig:
    base = dict(model="vit_tiny_patch16_224", model_kwargs=dict(TINY_VIT), batch_size=32, lr=3e-3, loss="bce",
                randaugment=[2, 9], crop=24, augment="flip", checkpoint_every=0,
                schedule=ScheduleConfig(zero_scale=300, iters_per_doubling=12, warmup_per_doubling=2))
    return TrainConfig(**{**base, **kw})


def _launch(spec_path: Path, env: dict[str, str] | None = None, nproc: int = 1) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1
           else [sys.executable]) + ["-m", "synscale.train.launch", str(spec_path)]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def _spec(tmp: Path, name: str, cfg: TrainConfig, fm_set: Path) -> Path:
    import dataclasses

    out = tmp / name
    out.mkdir()
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(make_spec(dataclasses.asdict(cfg), [(str(fm_set), None)], 10, 600, out)))
    return path


def test_sigkill_at_a_step_then_resume_equals_an_uninterrupted_run(fm_set, tmp_path):
    """The paper's recipe in miniature (ViT, BCE, Mixup, RandAugment, crops, dropout, stochastic depth),
    from shards in a worker process; killed by SIGKILL after step 17, resumed from the step-14 checkpoint."""
    cfg = _vit_cfg(mixup=0.5, model_kwargs={**TINY_VIT, "drop_rate": 0.1, "drop_path_rate": 0.1}, loader="stream",
                   workers=1, checkpoint_every=7,
                   schedule=ScheduleConfig(zero_scale=300, iters_per_doubling=23, warmup_per_doubling=3))
    whole = _launch(_spec(tmp_path, "whole", cfg, fm_set))
    assert whole.returncode == 0, whole.stderr
    spec = _spec(tmp_path, "killed", cfg, fm_set)
    killed = _launch(spec, {"SYNSCALE_KILL_AT_STEP": "17"})
    assert killed.returncode == -signal.SIGKILL
    ckpt = tmp_path / "killed" / "checkpoints"
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 14 and not (tmp_path / "killed" / "model.safetensors").exists()
    assert sorted(p.name for p in (ckpt / "step-00000014").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "rng-0.safetensors", "state.json"]
    resumed = _launch(spec)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((tmp_path / d / "train.json").read_text()) for d in ("whole", "killed"))
    assert ma["loss_curve"] == mb["loss_curve"] and (ma["resumed_from_step"], mb["resumed_from_step"]) == (0, 14)
    assert ma["steps"] == 23 and ma["model_img_size"] == 24 and ma["img_size"] == 28


@pytest.mark.parametrize("randaugment_on", ["loader", "device"])
def test_torchrun_two_processes_train_the_same_model_as_one(fm_set, tmp_path, randaugment_on):
    """DistributedDataParallel on gloo: 2 processes x 16 images = one process x 32 (a model without batch
    statistics or dropout, so the gradients are the same up to float summation order), with RandAugment in the
    loader or on the device."""
    cfg = _vit_cfg(randaugment_on=randaugment_on)
    one = _launch(_spec(tmp_path, "one", cfg, fm_set))
    assert one.returncode == 0, one.stderr
    two = _launch(_spec(tmp_path, "two", cfg, fm_set), nproc=2)
    assert two.returncode == 0, two.stderr
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert json.loads((tmp_path / "two" / "train.json").read_text())["processes"] == 2


def test_gradient_accumulation_equals_the_full_batch(fm_set):
    from synscale.train.classifier import train_classifier

    src = ArraySource(*load_arrays(fm_set)[:2])
    cfg = _vit_cfg(loss="ce", randaugment=[], schedule=ScheduleConfig(zero_scale=300, iters_per_doubling=6,
                                                                      warmup_per_doubling=1))
    full = train_classifier(None, None, 10, cfg, 600, source=src)
    accum = train_classifier(None, None, 10, TrainConfig(**{**cfg.__dict__, "accum_steps": 4}), 600, source=src)
    assert np.allclose(full.losses, accum.losses, rtol=1e-5)  # the logged loss is the full batch's mean
    a, b = full.model.state_dict(), accum.model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4  # same steps up to summation order


def test_bf16_autocast_trains_like_fp32(fm_set):
    from synscale.train.classifier import train_classifier

    src = ArraySource(*load_arrays(fm_set)[:2])
    cfg = _vit_cfg(randaugment=[], loss="ce", schedule=ScheduleConfig(zero_scale=150, iters_per_doubling=50,
                                                                       warmup_per_doubling=3))
    fp32 = train_classifier(None, None, 10, cfg, 600, source=src)
    bf16 = train_classifier(None, None, 10, TrainConfig(**{**cfg.__dict__, "precision": "bf16"}), 600, source=src)
    assert len(bf16.losses) == 2 and bf16.losses[-1] < 0.9 * np.log(10)  # below chance level (ln 10)
    assert abs(bf16.losses[-1] - fp32.losses[-1]) < 0.05 * fp32.losses[-1]  # the same training, at lower precision
    a, b = fp32.model.state_dict(), bf16.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # ... which did run in bf16


def test_class_subset_evaluation_planted():
    """4 classes, an evaluation set covering classes 1 and 3: class 0's big logit must not count."""
    from synscale.evaluate.classification import predict

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 4, bias=True))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 1.0, 0.0, 2.0]))
    images = np.zeros((2, 1, 1, 1), np.uint8)
    labels = np.array([3, 1])
    full = predict(model, images, labels)
    assert full["pred"].tolist() == [0, 0]
    sub = predict(model, images, labels, class_subset=np.array([1, 3]))
    assert sub["pred"].tolist() == [3, 3]
    # restricted softmax over logits (1, 2): -log(e^2 / (e^1 + e^2)) and -log(e^1 / (e^1 + e^2))
    expect = [np.log1p(np.exp(-1.0)), np.log1p(np.exp(1.0))]
    assert np.allclose(sub["loss"], expect, atol=1e-6)
    with pytest.raises(ValueError, match="not in the class subset"):
        predict(model, images, np.array([2, 1]), class_subset=np.array([1, 3]))


def test_train_command_on_a_nested_subset(fm_set, tmp_path, capsys):
    from synscale.cli import main

    out = tmp_path / "run"
    assert main(["train", str(fm_set), "--out", str(out), "--scale", "400", "--set", "scales=[400]",
                 "--set", "train.recipe=miniature-vit",
                 "--set", "train.model_kwargs={patch_size=4, embed_dim=32, depth=1, num_heads=2}",
                 "--set", "train.schedule.zero_scale=200", "--set", "train.schedule.warmup_per_doubling=1",
                 "--set", "train.schedule.iters_per_doubling=8"]) == 0
    meta = json.loads((out / "train.json").read_text())
    assert (meta["steps"], meta["train_images"], meta["model_img_size"]) == (8, 400, 24)
    assert len(pd.read_parquet(out / "subset.parquet")) == 400 and (out / "model.safetensors").exists()
    assert "trained vit_tiny_patch16_224 on 400 images for 8 steps" in capsys.readouterr().out
    assert main(["train", str(fm_set), str(fm_set), "--out", str(out), "--scale", "400"]) == 2  # --scale takes one set


def test_a_loader_index_is_built_once_saved_and_memory_mapped(fm_set, tmp_path):
    """A run's loader index (shards, offsets, labels, captions as flat arrays) from key lists, pyarrow arrays or a
    subset.parquet, saved and memory-mapped by another process: the same samples as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synscale.data.index import LoaderIndex, build_index, tar_index

    images, labels, keys = load_arrays(fm_set)
    pick = [keys[500], keys[2], keys[251]]
    pq.write_table(pa.table({"key": pick}), tmp_path / "subset.parquet")
    for chosen in (pick, pa.array(pick), str(tmp_path / "subset.parquet")):
        index = build_index([(fm_set, chosen), (fm_set, None)])
        assert index.labels.tolist() == labels[[500, 2, 251]].tolist() + labels.tolist() and index.texts is None
    index.save(tmp_path / "index")
    mapped = LoaderIndex.load(tmp_path / "index")
    assert isinstance(mapped.offset, np.memmap) and mapped.paths == index.paths
    src = ShardSource(index=mapped)
    assert np.array_equal(src.take(np.arange(3)), images[[500, 2, 251]]) and len(src) == 603
    assert np.array_equal(src.take(np.arange(3, 603)), images)
    t = tar_index(fm_set)
    assert t.column_names == ["key", "shard", "offset", "size"] and t["key"].to_pylist() == keys


def test_the_tar_header_scan_gives_tarfiles_offsets(fm_set, tmp_path):
    """synscale's own tars are read from their USTAR headers; a tar with long (GNU / PAX) names goes to tarfile."""
    import tarfile

    from synscale.data.index import _scan_with_tarfile, scan_tar

    for shard in sorted(fm_set.glob("shard-*.tar")):
        assert scan_tar(shard) == _scan_with_tarfile(shard)
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"long-{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            for name, data in ((f"{'k' * 120}.png", b"x" * 700), ("short.png", b"y" * 10), ("short.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        keys, offsets, sizes = scan_tar(path)
        assert keys == ["k" * 120, "short"] and sizes == [700, 10]
        with open(path, "rb") as f:
            f.seek(offsets[0])
            assert f.read(700) == b"x" * 700


def test_texts_are_compact_and_read_back_whole():
    from synscale.data.index import Texts, same_texts

    words = ["a dog", "", "naïve café ☕", "x" * 300]
    t = Texts.from_strings(words)
    assert len(t) == 4 and t[2] == "naïve café ☕" and t[np.array([3, 0])].tolist() == ["x" * 300, "a dog"]
    assert list(t) == words and t[1:3].tolist() == words[1:3] and t.offsets.dtype == np.int64
    both = Texts.concat([t, Texts.from_strings(["z"])])
    assert list(both) == [*words, "z"] and same_texts(both, np.array([*words, "z"], dtype=object))
    assert not same_texts(t, Texts.from_strings(words[:3] + ["y"]))


def test_a_shared_epoch_order_trains_the_same_and_is_removed_at_the_end(fm_set, tmp_path, monkeypatch):
    """A run whose epochs' orders are shared through files (EpochOrder, forced here for a small set) reads the very
    batches an in-process order gives, and leaves no order files behind."""
    from synscale.train import data
    from synscale.train.classifier import train_classifier

    src = ArraySource(*load_arrays(fm_set)[:2])
    cfg = _vit_cfg(loss="ce", randaugment=[], checkpoint_every=3,
                   schedule=ScheduleConfig(zero_scale=300, iters_per_doubling=6, warmup_per_doubling=1))
    plain = train_classifier(None, None, 10, cfg, 600, source=src)
    monkeypatch.setattr(data, "ORDER_SHARED", 100)
    shared = train_classifier(None, None, 10, cfg, 600, source=src, ckpt_dir=tmp_path / "ckpt")
    assert plain.losses == shared.losses
    assert (tmp_path / "ckpt").is_dir() and not (tmp_path / "ckpt" / "order").exists()
