"""CLIP: the contrastive task on the training engine, pair sets (img2dataset shards through the webdataset
library, captioned sets, synthetic and mixed pairs), zero-shot evaluation, and CLIP in a study."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synscale.config import ScheduleConfig, TrainConfig
from synscale.data.datasets import FASHION_MNIST_CLASSES, DatasetError, create_dataset, read_idx
from synscale.data.pairs import caption_subset
from synscale.data.shards import ShardWriter, read_manifest, write_dataset_split
from synscale.labels import LabelSet
from synscale.prompts.captioners import captioned_pairs
from synscale.train.data import ArraySource, MixedPairs, SampleAugment, StepBatches
from synscale.train.launch import make_spec

FM = LabelSet(FASHION_MNIST_CLASSES)


def _clip_cfg(**kw) -> TrainConfig:
    base = dict(task="contrastive", model="synscale-clip-mini", batch_size=32, lr=2e-3, weight_decay=0.1, betas=[0.9, 0.98],
                eps=1e-6, augment="none", checkpoint_every=0,
                schedule=ScheduleConfig(kind="epochs", epochs=2, warmup_by_scale=[[0, 2]]))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pairs(fmnist_files, tmp_path_factory) -> Path:
    """256 real Fashion-MNIST training images with attribute captions, as a synscale pair set."""
    root = tmp_path_factory.mktemp("pairs")
    images = read_idx(fmnist_files / "train-images-idx3-ubyte.gz")[:256]
    labels = read_idx(fmnist_files / "train-labels-idx1-ubyte.gz")[:256]
    with ShardWriter(root / "set", FM, shard_size=100) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            w.write(f"s{i:05d}", img, int(y))
    keys = read_manifest(root / "set")["key"].tolist()
    captioned_pairs(root / "set", keys, "attributes", root / "pairs", shard_size=100, progress=False)
    return root / "pairs"


def test_captioned_pairs_and_nested_caption_subsets(pairs):
    m = read_manifest(pairs)
    assert len(m) == 256 and (m.shard.nunique() == 3)
    first = m.iloc[0]
    assert first.caption.startswith(f"{first.class_name}, a ") and first.caption.endswith("item on a black background")
    small, large = caption_subset(m, 50, seed=3), caption_subset(m, 120, seed=3)
    assert len(set(small)) == 50 and set(small) <= set(large) and large[:50] == small
    assert caption_subset(m, 50, seed=4) != small  # the order is the seed's
    with pytest.raises(ValueError, match="needs 300 captions but the set has 256"):
        caption_subset(m, 300)


# ---------------------------------------------------------------------------------------------------
# zero-shot


def test_zero_shot_classifier_equals_open_clip(tmp_path):
    """Our class text features (templates averaged after normalising, normalised again) are open_clip's."""
    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from synscale.train.clip import class_text_features, create_clip, tokenizer
    from synscale.train.templates import load_templates

    torch.manual_seed(0)
    model = create_clip("synscale-clip-mini").eval()
    names = list(FASHION_MNIST_CLASSES) + ["a longer class name, with a comma"]
    ours = class_text_features(model, "synscale-clip-mini", names, load_templates("openai"), classes_per_batch=4)
    theirs = open_clip.build_zero_shot_classifier(model, tokenizer("synscale-clip-mini"), names, OPENAI_IMAGENET_TEMPLATES,
                                                  num_classes_per_batch=5)
    assert ours.shape == (11, 64) and torch.allclose(ours, theirs.T, atol=1e-6)
    assert torch.allclose(ours.norm(dim=1), torch.ones(11), atol=1e-6)
    assert len(load_templates("openai")) == 80 and len(load_templates("simple")) == 7
    (tmp_path / "t.txt").write_text("a {} here\nthe {c} there\n")
    assert load_templates(str(tmp_path / "t.txt")) == ["a {} here", "the {} there"]
    (tmp_path / "bad.txt").write_text("no slot\n")
    with pytest.raises(ValueError, match="needs exactly one, {}"):
        load_templates(str(tmp_path / "bad.txt"))


class _PlantedTower(torch.nn.Module):
    """An image tower whose features are planted per image (image i: row i of `feats`), with CLIP's
    learned temperature parameter: the zero-shot head under test reads `encode_image` and `logit_scale`."""

    def __init__(self, feats: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.feats = feats
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(tau)))

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        idx = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()  # the image's first pixel holds its index
        f = self.feats[idx]
        return f / f.norm(dim=1, keepdim=True) if normalize else f


def test_zero_shot_loss_on_a_hand_computed_three_class_case():
    """Three classes with features e1, e2, e3; an image with feature (3, 4, 0) (cos 0.6, 0.8, 0) and tau = 10:
    logits (6, 8, 0); as class 1 its loss is log(1 + e^-2 + e^-8), as class 0 log(e^6 + e^8 + 1) - 6."""
    from synscale.evaluate.classification import predict
    from synscale.train.clip import ZeroShotClassifier

    feats = torch.tensor([[3.0, 4.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    head = ZeroShotClassifier(_PlantedTower(feats, tau=10.0), torch.eye(3))
    images = np.zeros((3, 1, 2, 2), np.uint8)
    images[:, 0, 0, 0] = [0, 1, 2]
    ex = predict(head, images, np.array([1, 0, 2]))
    expect = [math.log1p(math.exp(-2) + math.exp(-8)), math.log(math.exp(6) + math.exp(8) + 1) - 6,
              math.log(2 * math.exp(0) + math.exp(10)) - 10]
    assert np.allclose(ex["loss"], expect, atol=1e-5) and ex["pred"].tolist() == [1, 1, 2]


# ---------------------------------------------------------------------------------------------------
# mixed pairs


def _marked(n: int, mark: int, texts: list[str]) -> ArraySource:
    """Images whose pixel (0, 0) is the caption's index and pixel (0, 1) says real (0) or synthetic (255)."""
    images = np.zeros((n, 1, 2, 2), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    images[:, 0, 0, 1] = mark
    return ArraySource(images, np.arange(n), texts)


@pytest.mark.parametrize("real_prob", [0.5, 0.2])
def test_mixed_pairs_draw_the_proportion_and_keep_each_captions_images(real_prob):
    texts = [f"caption {i}" for i in range(200)]
    mixed = MixedPairs(_marked(200, 0, texts), _marked(200, 255, texts), real_prob)
    batches = StepBatches(mixed, 64, seed=7, augment=SampleAugment())
    real_drawn, seen = [], set()
    for step in range(300):
        x, y = batches[step]
        assert torch.equal(x[:, 0, 0, 0].long(), y)  # every image is its caption's own
        real = x[:, 0, 0, 1] == 0
        real_drawn.append(real.float().mean().item())
        seen |= {(int(i), bool(r)) for i, r in zip(y, real, strict=True)}
    assert abs(np.mean(real_drawn) - real_prob) < 0.01  # 19,200 draws: sd 0.0036 at p = 0.5
    assert {i for i, r in seen if r} == {i for i, r in seen if not r} == set(range(200))  # both images of every caption
    # a function of (seed, step, position): the same draws again, and each process of two takes its half
    assert torch.equal(batches[17][0], StepBatches(mixed, 64, seed=7, augment=SampleAugment())[17][0])
    halves = [StepBatches(mixed, 64, 7, SampleAugment(), rank=r, world=2)[17][0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), batches[17][0])
    with pytest.raises(ValueError, match="same captions"):
        MixedPairs(_marked(200, 0, texts), _marked(200, 255, texts[::-1]))


# ---------------------------------------------------------------------------------------------------
# img2dataset shards through the webdataset library


def _jpeg(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 12, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write_laion(root: Path, bad: bool) -> None:
    """Two shards as img2dataset writes them: <key>.jpg, <key>.txt, <key>.json; with `bad`, sample
    000010004 has no caption (no .txt, none in its .json)."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(2):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(5):
                key = f"{s:05d}{i:04d}"
                files = {"jpg": _jpeg(40 * i + s), "json": json.dumps({"key": key, "url": f"http://x/{key}.jpg"}).encode()}
                if not (bad and key == "000010004"):
                    files["txt"] = f"photo {key} of a thing".encode()
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_laion_style_shards_read_through_webdataset(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    _write_laion(good, bad=False)
    _write_laion(bad, bad=True)
    piped = "pipe:cat " + str(good) + "/{00000..00001}.tar"  # any URL the webdataset library opens
    for root in (str(good), str(good) + "/{00000..00001}.tar", piped):  # a directory, a brace pattern, a pipe
        ds = create_dataset("img2dataset", root, image_size=6)
        samples = list(ds.samples("train"))
        assert [s.key for s in samples] == [f"{s:05d}{i:04d}" for s in range(2) for i in range(5)]
        assert samples[3].meta["caption"] == "photo 000000003 of a thing" and samples[3].label == -1
        assert samples[3].image.size == (6, 6)
    n = write_dataset_split(create_dataset("img2dataset", str(good)), "train", tmp_path / "set", shard_size=4,
                            progress=False, limit=7)
    m = read_manifest(tmp_path / "set")
    assert n == 7 and m.caption.tolist()[:2] == ["photo 000000000 of a thing", "photo 000000001 of a thing"]
    assert (m.label == -1).all() and not (tmp_path / "set" / "labels.json").exists()
    for root in (str(bad), str(bad) + "/{00000..00001}.tar"):
        with pytest.raises(DatasetError, match=r"00001\.tar: sample '000010004' has no caption"):
            list(create_dataset("img2dataset", root).samples("train"))
    with pytest.raises(DatasetError, match="no such shard"):
        create_dataset("img2dataset", str(good) + "/{00000..00002}.tar").fingerprint()


def test_labelled_webdataset_with_a_split_pattern(tmp_path):
    """The class-labelled `webdataset` dataset reads `{split}` brace patterns through the library."""
    for split, n in (("train", 3), ("val", 2)):
        with tarfile.open(tmp_path / f"{split}-00000.tar", "w") as tar:
            for i in range(n):
                for ext, data in (("jpg", _jpeg(50 * i)), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"k{i}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    ds = create_dataset("webdataset", str(tmp_path) + "/{split}-{00000..00000}.tar")
    val = list(ds.samples("val"))
    assert [(s.key, s.label) for s in val] == [("val-k0", 0), ("val-k1", 1)] and ds.labels.names == ("cat", "dog")
    assert [s.label for s in create_dataset("webdataset", str(tmp_path)).samples("train")] == [0, 1, 0]


# ---------------------------------------------------------------------------------------------------
# training: the engine with the contrastive task


def test_clip_accumulation_gives_the_full_batch_gradient(pairs):
    """Gradient accumulation caches the step's features, so 4 micro-batches give the full batch's gradient:
    one step's gradients, from the engine's accumulation, equal the full batch's to float rounding."""
    from synscale.data.shards import captions_for, load_arrays
    from synscale.train.clip import ContrastiveTask
    from synscale.train.engine import Dist, _accumulate

    images, labels, keys = load_arrays(pairs)
    src = ArraySource(images, labels, captions_for(pairs, keys))
    cfg = _clip_cfg()
    task = ContrastiveTask(cfg)
    torch.manual_seed(0)
    model = task.build_model(src, Dist())
    idx = np.arange(32)
    inputs = task.inputs(torch.from_numpy(images[idx]), task.targets()(src, idx), 0, torch.device("cpu"))
    grads, losses = [], []
    for split in (1, 4):
        model.zero_grad(set_to_none=True)
        losses.append(_accumulate(task, model, model, inputs, split, 32, contextlib.nullcontext(), False).item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    full, accum = grads
    assert full.keys() == accum.keys() and all(g.abs().max() > 0 for g in full.values())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] > 0
    for name in full:
        assert (full[name] - accum[name]).abs().max() <= 1e-4 * full[name].abs().max() + 1e-9, name
    # a micro-batch's loss against its own pairs only (no cached features) gives another gradient
    model.zero_grad(set_to_none=True)
    for chunk in zip(*(t.tensor_split(4) for t in inputs), strict=True):
        task.loss(model, chunk, 0, None, contextlib.nullcontext(), None)[0].backward()
    assert max((p.grad - full[n]).abs().max() / full[n].abs().max() for n, p in model.named_parameters()) > 1e-2


def test_clip_trains_and_accumulation_equals_the_full_batch(pairs):
    """Trained with 4 micro-batches per step, the model is the full batch's: the same logged losses, and the
    weights apart by a small fraction of what training moved them (AdamW divides by the gradient's size, so
    float rounding that differs between the two, and between CPUs, grows over the steps: 1.7e-4 at most on
    one element on an AMD EPYC, where training moved the weights by up to ~5e-2)."""
    from synscale.data.shards import captions_for, load_arrays
    from synscale.train.clip import ContrastiveTask
    from synscale.train.engine import Dist, train

    images, labels, keys = load_arrays(pairs)
    src = ArraySource(images, labels, captions_for(pairs, keys))
    cfg = _clip_cfg(schedule=ScheduleConfig(kind="epochs", epochs=3, warmup_by_scale=[[0, 2]]))
    torch.manual_seed(cfg.seed)  # the engine's initial weights
    start = ContrastiveTask(cfg).build_model(src, Dist()).state_dict()
    full = train(ContrastiveTask(cfg), cfg, src, 256)
    accum = train(ContrastiveTask(cfg), TrainConfig(**{**cfg.__dict__, "accum_steps": 4}), src, 256)
    assert full.steps == 24 and len(full.losses) == 1  # 3 epochs of 256 captions in batches of 32
    assert np.allclose(full.losses, accum.losses, rtol=1e-5)
    a, b = full.model.state_dict(), accum.model.state_dict()
    apart = math.sqrt(sum(((a[k] - b[k]).double() ** 2).sum().item() for k in a))
    moved = math.sqrt(sum(((a[k] - start[k]).double() ** 2).sum().item() for k in a))
    assert moved > 1 and apart < 1e-2 * moved, (apart, moved)
    assert 0 < full.model.logit_scale.item() <= math.log(100)
    with pytest.raises(ValueError, match="needs captions"):
        train(ContrastiveTask(cfg), cfg, ArraySource(images, labels), 256)


def test_train_ids_of_clip_with_accumulation_changed_with_its_temperature_gradient():
    """Only a contrastive run with accum_steps > 1 trains another model since the temperature's gradient was
    corrected: only its id gains a key."""
    from synscale.train.config import train_identity

    def ident(**kw):
        return train_identity(TrainConfig(**{**_clip_cfg().__dict__, **kw}))

    assert ident(accum_steps=2) == {**ident(accum_steps=2, task="classification"), "task": "contrastive",
                                    "temperature_gradient": "full-batch"}
    assert "temperature_gradient" not in ident() and "temperature_gradient" not in ident(accum_steps=2, task="classification")


def _launch(spec_path: Path, env: dict[str, str] | None = None, nproc: int = 1) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1
           else [sys.executable]) + ["-m", "synscale.train.launch", str(spec_path)]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def _spec(tmp: Path, name: str, cfg: TrainConfig, parts: list, real_prob: float | None = None) -> Path:
    import dataclasses

    out = tmp / name
    out.mkdir()
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(make_spec(dataclasses.asdict(cfg), parts, 10, 256, out, real_prob)))
    return path


def _without_key_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights without the key part of attention's input bias: softmax over keys does not change when
    a constant is added to every key's score, so its true gradient is zero and Adam turns the rounding
    noise it gets into steps of random sign, which differ with the summation order of the gradients."""
    out = dict(state)
    for k, v in state.items():
        if k.endswith("attn.in_proj_bias"):
            d = len(v) // 3
            out[k] = torch.cat([v[:d], v[2 * d:]])
    return out


def test_clip_torchrun_two_processes_equal_one(pairs, tmp_path):
    """2 processes x 16 pairs, features gathered with their gradients = one process x 32 (this one)."""
    from synscale.train.launch import make_source, run_spec

    cfg = _clip_cfg()
    two = _launch(_spec(tmp_path, "two", cfg, [(str(pairs), None)]), nproc=2)
    assert two.returncode == 0, two.stderr
    spec = json.loads(_spec(tmp_path, "one", cfg, [(str(pairs), None)]).read_text())
    run_spec(spec, make_source([(str(pairs), None)], cfg.loader), progress=False)
    a, b = (_without_key_bias(load_file(str(tmp_path / d / "model.safetensors"))) for d in ("one", "two"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    meta = json.loads((tmp_path / "two" / "train.json").read_text())
    assert (meta["task"], meta["processes"], meta["steps"], meta["captions"]) == ("contrastive", 2, 16, 256)


def test_clip_sigkill_then_resume_equals_an_uninterrupted_run(pairs, tmp_path):
    """Mixed pairs streamed from shards in a worker; killed after step 11, resumed from the step-10 checkpoint."""
    cfg = _clip_cfg(checkpoint_every=5, loader="stream", workers=1)
    parts = [(str(pairs), None), (str(pairs), None)]  # the same images as "synthetic": the draws still count
    whole = _launch(_spec(tmp_path, "whole", cfg, parts, real_prob=0.5))
    assert whole.returncode == 0, whole.stderr
    spec = _spec(tmp_path, "killed", cfg, parts, real_prob=0.5)
    killed = _launch(spec, {"SYNSCALE_KILL_AT_STEP": "11"})
    assert killed.returncode == -signal.SIGKILL
    ckpt = tmp_path / "killed" / "checkpoints"
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 10
    resumed = _launch(spec)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((tmp_path / d / "train.json").read_text()) for d in ("whole", "killed"))
    assert ma["loss_curve"] == mb["loss_curve"] and (ma["resumed_from_step"], mb["resumed_from_step"]) == (0, 10)


def test_clip_recipes_are_table_a3(tmp_path):
    from synscale.config import load_study
    from synscale.train.recipes import recipe_names
    from synscale.train.schedule import run_length

    assert {"paper-clip-s", "paper-clip-l", "miniature-clip"} <= set(recipe_names())
    study = tmp_path / "s.toml"
    study.write_text('name = "x"\nscales = []\n[clip]\nscales = [1000000, 2000000, 4000000]\n[clip.train]\n'
                     'recipe = "paper-clip-s"\n')
    t = load_study(study).clip.train
    assert (t.task, t.model, t.batch_size, t.lr, t.weight_decay, t.betas, t.eps) == (
        "contrastive", "ViT-B-16", 8192, 1e-3, 0.5, [0.9, 0.98], 1e-8)
    # 32 epochs at every scale; warm-up 600 / 1200 / 2000 steps at 1M / 2M / 4M captions
    assert [run_length(d, t) for d in (10**6, 2 * 10**6, 4 * 10**6, 64 * 10**6)] == [
        (3907, 600), (7813, 1200), (15625, 2000), (250000, 2000)]
    large = load_study(study, overrides=["clip.train.recipe=paper-clip-l"]).clip.train
    assert (large.batch_size, large.lr, large.weight_decay, large.eps) == (32768, 5e-4, 0.2, 1e-6)
    assert run_length(128 * 10**6, large) == (125000, 2000)


def test_clip_trains_through_the_cli_with_a_token_cache_smaller_than_its_captions(pairs, tmp_path):
    """`synscale train --clip` whose loader keeps the tokens of 8 captions, fewer than the set's distinct captions:
    every batch still gets its tokens (a cache that emptied itself when full used to lose the tokens of a
    caption of the same batch: a KeyError), and the model is the one a cache of every caption trains."""
    from synscale.cli import main
    from synscale.train.clip import CaptionTokens

    assert read_manifest(pairs).caption.nunique() > 8
    common = ["train", str(pairs), "--clip", "--set", "clip.train.batch_size=32", "--set", "clip.train.schedule.epochs=1",
              "--set", "clip.train.checkpoint_every=0", "--set", "clip.train.tensorboard=false"]
    assert main([*common, "--out", str(tmp_path / "small"), "--set", "clip.train.token_cache=8"]) == 0
    assert main([*common, "--out", str(tmp_path / "large")]) == 0
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("small", "large"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    tokens = CaptionTokens("synscale-clip-mini", cache_size=8)
    src = ArraySource(np.zeros((256, 1, 28, 28), np.uint8), np.zeros(256), read_manifest(pairs).caption.tolist())
    for start in range(0, 256, 32):
        tokens(src, np.arange(start, start + 32))
        assert len(tokens._cache) <= 8


def test_clip_ranks_memory_map_the_loader_index_built_once_before_them(pairs, tmp_path):
    """`synscale train --clip --nproc 2` streaming its shards: the launcher builds the loader index (captions as one
    buffer) once and both ranks memory-map it; the model is the one process's, streaming the same shards."""
    from synscale.cli import main

    common = ["train", str(pairs), "--clip", "--set", "clip.train.batch_size=32", "--set", "clip.train.schedule.epochs=1",
              "--set", "clip.train.checkpoint_every=0", "--set", "clip.train.tensorboard=false",
              "--set", "clip.train.loader=stream"]
    assert main([*common, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    spec = json.loads((tmp_path / "two" / "spec.json").read_text())
    assert spec["index"] == [str(tmp_path / "two" / "loader-index-0")]
    assert (tmp_path / "two" / "loader-index-0" / "text_data.npy").exists()
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    a, b = (_without_key_bias(load_file(str(tmp_path / d / "model.safetensors"))) for d in ("one", "two"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
