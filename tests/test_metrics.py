"""Synthetic-data metrics: known answers for every formula, the reference networks (trained, timm
checkpoint, timm pretrained from a local Hugging Face cache), the paper's AlexNet LPIPS and Inception FID
with local stand-in weights, cached and streamed feature extraction, and `synscale metrics`."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synscale.config import MetricsConfig
from synscale.data.datasets import read_idx
from synscale.data.shards import ShardWriter
from synscale.labels import LabelSet
from synscale.metrics import core
from synscale.metrics.core import METRICS, MetricInputs, compute, frechet_distance, prdc, sample_pairs, vendi
from synscale.metrics.features import Features, Reference, extract, feature_stage
from synscale.train.models import create_model

NAMES = tuple(f"class{i}" for i in range(10))
OFFLINE = [n for n in MetricsConfig().names if n not in ("lpips_alex", "fid_inception")]


def cnn_reference(seed: int = 0) -> Reference:
    torch.manual_seed(seed)
    model = create_model("synscale_cnn_small", 10, 1, 28).eval()
    return Reference("test-cnn", model, 28, 1, None, None, None, torch.device("cpu"), None)


@pytest.fixture(scope="module")
def fmnist_test(fmnist_files):
    """The first 20 real Fashion-MNIST test images of each class: uint8 (200, 1, 28, 28), labels."""
    images = read_idx(fmnist_files / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(fmnist_files / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    idx = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(10)])
    return images[idx][:, None], labels[idx]


def inputs(ref, images, labels, real_images, real_labels, **cfg):
    def feats(x, y):
        f, lg = ref.embed(torch.from_numpy(x))
        return Features(f.numpy(), lg.numpy(), y, [str(i) for i in range(len(y))])

    test, real = feats(images, labels), feats(real_images, real_labels)
    return MetricInputs(test, images, real, NAMES, MetricsConfig(**cfg), ref, fd_set=test, fd_real=real)


# ---------------------------------------------------------------------------------------------------
# Formulas


def test_perfect_classifier_has_recognizability_one_and_a_confused_one_less():
    labels = np.repeat(np.arange(10), 5)
    onehot = np.eye(10)[labels].astype(np.float32)
    test = Features(np.zeros((50, 4), np.float32), onehot, labels, [])
    inp = MetricInputs(test, np.zeros((50, 1, 2, 2), np.uint8), test, NAMES, MetricsConfig())
    row, per = METRICS.get("recognizability").fn(inp)
    assert row["recognizability"] == 1.0 and (per["recognizability"] == 1.0).all()
    # class 0's images all predicted as class 1: F1 of class 0 is 0, of class 1 is 2*5/(2*5+5) = 2/3
    test.logits[:5] = np.eye(10)[1]
    row, per = METRICS.get("recognizability").fn(inp)
    assert per["recognizability"][0] == 0 and per["recognizability"][1] == pytest.approx(2 / 3)
    assert row["recognizability"] == pytest.approx((8 + 2 / 3) / 10)


def test_frechet_distance_is_zero_on_itself_and_equals_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12))
    y = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.7
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-8)

    class Identity(torch.nn.Module):
        num_features = 12

        def forward(self, v):
            return v

    fid = FrechetInceptionDistance(feature=Identity())
    fid.update(torch.tensor(x), real=True)
    fid.update(torch.tensor(y), real=False)
    theirs = float(fid.compute())
    assert theirs > 1 and frechet_distance(x, y) == pytest.approx(theirs, abs=1e-3)
    # closed form for two Gaussians with diagonal covariances: |mu|^2 + sum (s1 - s2)^2
    a, b = rng.normal(size=(200_000, 2)) * [1, 2], rng.normal(size=(200_000, 2)) * [3, 2] + [1, 0]
    assert frechet_distance(a, b) == pytest.approx(1 + (1 - 3) ** 2, rel=0.02)


def test_prdc_and_vendi_known_answers():
    from vendi_score import vendi as reference_vendi

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    assert prdc(x, x, 5) == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
    far = prdc(x, x + 100, 5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    inside = prdc(x, x[:100] * 0.3, 5)  # fakes collapsed into the middle: precise, no recall
    assert inside["precision"] == 1.0 and inside["recall"] < 0.5
    assert vendi(np.ones((7, 3))) == pytest.approx(1.0)
    assert vendi(np.eye(6)) == pytest.approx(6.0)
    u = x[:40] / np.linalg.norm(x[:40], axis=1, keepdims=True)
    assert vendi(x[:40]) == pytest.approx(reference_vendi.score_dual(u), rel=1e-6)


def test_sample_pairs_are_distinct_unordered_and_capped():
    rng = np.random.default_rng(0)
    p = sample_pairs(50, 250, rng)
    assert p.shape == (250, 2) and (p[:, 0] < p[:, 1]).all() and len({tuple(r) for r in p}) == 250
    assert len(sample_pairs(5, 250, rng)) == 10 and len(sample_pairs(1, 250, rng)) == 0


# ---------------------------------------------------------------------------------------------------
# Through a reference network


def test_repeated_image_has_zero_diversity_and_lpips_ref(fmnist_test):
    images, labels = fmnist_test
    first = np.array([np.flatnonzero(labels == c)[0] for c in range(10)])
    repeated = images[first][labels]  # every image of a class is that class's first image
    row, table = compute(inputs(cnn_reference(), repeated, labels, images, labels), OFFLINE)
    assert row["diversity"] == pytest.approx(0, abs=1e-6) and row["lpips_ref"] == pytest.approx(0, abs=1e-6)
    assert row["vendi"] == pytest.approx(1, abs=1e-4)
    assert np.allclose(table.diversity, 0, atol=1e-6) and np.allclose(table.lpips_ref, 0, atol=1e-6)


def test_noise_raises_diversity_and_lpips_ref(fmnist_test):
    images, labels = fmnist_test
    rng = np.random.default_rng(0)
    noise = rng.normal(size=images.shape)
    ref = cnn_reference()
    rows = []
    for sigma in (0, 25, 60):
        noisy = np.clip(images + sigma * noise, 0, 255).astype(np.uint8)
        rows.append(compute(inputs(ref, noisy, labels, images, labels), ["diversity", "lpips_ref", "fd"])[0])
    for key in ("diversity", "lpips_ref", "fd"):
        values = [r[key] for r in rows]
        assert values[0] < values[1] < values[2], (key, values)


def test_per_class_values_average_to_the_reported_means(fmnist_test):
    images, labels = fmnist_test
    noisy = np.clip(images + np.random.default_rng(2).normal(0, 30, images.shape), 0, 255).astype(np.uint8)
    row, table = compute(inputs(cnn_reference(), noisy, labels, images, labels, lpips_pairs=40), OFFLINE)
    shared = [c for c in table.columns if c in row]
    assert set(shared) == {"recognizability", "diversity", "fd_class", "lpips_ref", "precision", "recall", "density",
                           "coverage", "vendi"}
    for c in shared:
        assert row[c] == pytest.approx(table[c].mean(), abs=1e-12), c
    assert table.n.tolist() == [20] * 10 and table.class_name.tolist() == list(NAMES)
    assert set(row) == {c for n in OFFLINE for c in METRICS.get(n).columns}


def test_metric_names_are_validated():
    with pytest.raises(ValueError, match="unknown metric 'fidd'"):
        MetricsConfig(names=["fidd"]).check()


def test_the_old_lpips_name_is_refused_with_its_new_name():
    """`lpips` (the reference network's LPIPS-style distance) is `lpips_ref`, so that it cannot be taken for
    the paper's LPIPS (`lpips_alex`); a study file naming the old one gets one line saying what to write."""
    from synscale.schema import ConfigError, from_dict

    assert "lpips_ref" in MetricsConfig().names and "lpips_alex" in MetricsConfig().names
    assert "lpips" not in METRICS and core.RENAMED == {"lpips": "lpips_ref"}
    with pytest.raises(ConfigError, match=r"study.toml: \[metrics\] metric 'lpips' is now 'lpips_ref' .*'lpips_alex'") as e:
        from_dict(MetricsConfig, {"names": ["recognizability", "lpips"]}, "study.toml", "metrics.")
    assert "\n" not in str(e.value)


def test_a_renamed_metric_never_reuses_a_stage_written_under_its_old_name():
    """The metrics stage's id hashes the metric names its files name their columns after: a stage cached
    when `lpips_ref` was `lpips` (its files with the old column) is not the stage of the current names."""
    import dataclasses
    from types import SimpleNamespace

    from synscale.metrics.run import metrics_params
    from synscale.stage import stage_id

    ref = SimpleNamespace(name="test-cnn", precision="fp32")
    new = MetricsConfig()
    old = dataclasses.replace(new, names=[{v: k for k, v in core.RENAMED.items()}.get(n, n) for n in new.names])
    assert "lpips" in old.names
    ids = {stage_id("metrics", metrics_params(mc, ref, None), {}) for mc in (new, old)}
    assert len(ids) == 2


# ---------------------------------------------------------------------------------------------------
# Reference networks


def test_timm_checkpoint_reference_matches_the_model(tmp_path):
    import timm
    from safetensors.torch import save_file

    from synscale.metrics.features import load_reference

    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10).eval()
    save_file(model.state_dict(), str(tmp_path / "ref.safetensors"))
    with pytest.raises(ValueError, match="reference_arch"):
        load_reference(str(tmp_path / "ref.safetensors"), "", 10, None, "cpu")
    ref = load_reference(str(tmp_path / "ref.safetensors"), "test_vit", 10, None, "cpu")
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    feats, logits = ref.embed(x)
    assert ref.input_size == 160 and ref.in_chans == 3 and feats.shape == (4, 64) and logits.shape == (4, 10)
    with torch.no_grad():
        expected = model(ref.prepare(x))
    assert torch.allclose(logits, expected, atol=1e-5)
    assert len(ref.feature_maps(x)) >= 2


def test_timm_pretrained_reference_from_a_local_hub_cache_maps_imagenet_classes(tmp_path, monkeypatch):
    """`timm:<name>` reads the Hugging Face cache (a stand-in with random weights here) and picks the
    study's classes out of the 1000 ImageNet logits by WordNet id."""
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    from synscale.metrics.features import load_reference

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="no local weights for timm:test_vit.r160_in1k"):
        load_reference("timm:test_vit.r160_in1k", "", 3, ("n01440764", "n01443537", "n01484850"), "cpu")
    torch.manual_seed(0)
    model = timm.create_model("test_vit.r160_in1k").eval()
    snap = tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file(model.state_dict(), str(snap / "model.safetensors"))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    wnids = ("n01484850", "n01440764")  # ImageNet classes 2 and 0
    ref = load_reference("timm:test_vit.r160_in1k", "", 2, wnids, "cpu")
    assert ref.class_index == [2, 0] and ref.mean == model.pretrained_cfg["mean"]
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        full = model(ref.prepare(x))
    assert torch.allclose(ref.embed(x)[1], full[:, [2, 0]], atol=1e-5)
    with pytest.raises(ValueError, match="without WordNet ids"):
        load_reference("timm:test_vit.r160_in1k", "", 2, None, "cpu")
    # what load_reference compiles on CUDA is the forward pass embed calls (compiling the module compiled
    # nothing: embed calls its methods, not its forward): traced here by dynamo (eager backend, no codegen)
    import torch._dynamo as dynamo

    dynamo.reset()
    dynamo.utils.counters.clear()
    ref.compiled = torch.compile(ref.forward, backend="eager")
    assert torch.allclose(ref.embed(x)[1], full[:, [2, 0]], atol=1e-5)
    assert dynamo.utils.counters["stats"]["unique_graphs"] >= 1


# ---------------------------------------------------------------------------------------------------
# The paper's LPIPS and FID where their weights exist (stand-in weights written here)


def test_alexnet_lpips_equals_the_lpips_package_on_the_same_weights(tmp_path, monkeypatch, fmnist_test):
    import lpips
    import torchvision

    from synscale.metrics.pretrained import ALEXNET_FILE, alexnet_lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert alexnet_lpips("") is None  # no weights: the metric is NaN, nothing is downloaded
    torch.manual_seed(0)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "hub" / "checkpoints" / ALEXNET_FILE)
    ours = alexnet_lpips("")
    images, _ = fmnist_test
    a, b = images[:8], images[8:16]
    theirs = lpips.LPIPS(net="alex", verbose=False)  # loads the same file through torchvision
    x = lambda v: torch.nn.functional.interpolate(torch.from_numpy(v).float().div(127.5).sub(1).expand(-1, 3, -1, -1),
                                                  size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = theirs(x(a), x(b)).flatten().numpy()
    assert np.allclose(ours(a, b), expected, atol=1e-6) and (expected > 0).all()
    assert np.allclose(ours(a, a), 0, atol=1e-7)


def write_set(path: Path, images: np.ndarray, labels: np.ndarray, arrays: bool = True) -> Path:
    with ShardWriter(path, LabelSet(NAMES), shard_size=64, cache_arrays=arrays) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            w.write(f"{i:06d}", img[0], int(y))
    return path


def test_inception_fid_with_local_weights_equals_torchmetrics(tmp_path, fmnist_test):
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from torchmetrics.image.fid import FrechetInceptionDistance

    from synscale.metrics.pretrained import inception_fid

    images, labels = fmnist_test
    real_dir = write_set(tmp_path / "real", images[::10], labels[::10])
    # a stand-in for the FID Inception weights: the architecture with random weights (building it
    # without its weights is the one thing patched here, to write the file)
    torch.manual_seed(0)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        blank = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(blank.state_dict(), weights)
    fake = np.clip(images[5::10].astype(int) + 40, 0, 255).astype(np.uint8)
    ours = inception_fid(str(weights), fake, real_dir, batch_size=8)
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    fid.update(torch.from_numpy(images[::10]).expand(-1, 3, -1, -1).contiguous(), real=True)
    fid.update(torch.from_numpy(fake).expand(-1, 3, -1, -1).contiguous(), real=False)
    assert ours == pytest.approx(float(fid.compute()), rel=1e-4) and ours > 0


def test_unavailable_pretrained_metrics_are_nan(tmp_path, monkeypatch, fmnist_test):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    images, labels = fmnist_test
    inp = inputs(cnn_reference(), images, labels, images, labels)
    inp.real_dir = write_set(tmp_path / "real", images, labels)
    row, table = compute(inp, ["lpips_alex", "fid_inception"])
    assert math.isnan(row["lpips_alex"]) and math.isnan(row["fid_inception"]) and table.lpips_alex.isna().all()


# ---------------------------------------------------------------------------------------------------
# Extraction and stages


def test_streamed_extraction_equals_in_memory_and_is_cached(tmp_path, fmnist_test):
    images, labels = fmnist_test
    ref = cnn_reference()
    cached = write_set(tmp_path / "a", images, labels)
    streamed = write_set(tmp_path / "b", images, labels, arrays=False)
    keys = [f"{i:06d}" for i in range(199, -1, -3)]
    a = extract(ref, cached, keys, batch_size=32, progress=False)
    b = extract(ref, streamed, keys, batch_size=32, workers=2, progress=False)
    assert a.keys == b.keys == keys and (a.labels == labels[[int(k) for k in keys]]).all()
    assert np.allclose(a.feats, b.feats, atol=1e-5) and np.allclose(a.logits, b.logits, atol=1e-5)
    f1 = feature_stage(tmp_path / "w", ref, cached, keys, progress=False)
    stages = list((tmp_path / "w" / "stages" / "features").glob("[!.]*"))
    before = stages[0].stat().st_mtime_ns
    f2 = feature_stage(tmp_path / "w", ref, cached, keys, progress=False)
    assert np.array_equal(f1.feats, f2.feats) and stages[0].stat().st_mtime_ns == before
    assert len(list((tmp_path / "w" / "stages" / "features").glob("[!.]*"))) == 1


def test_metrics_cli_on_real_and_noise_sets(tiny_fmnist, tmp_path, capsys):
    """`synscale metrics` on any set: real images score as recognizable and close to the real data; pure
    noise does not."""
    from synscale.cli import main

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    noise = write_set(tmp_path / "noise", rng.integers(0, 256, (300, 1, 28, 28), dtype=np.uint8), labels)
    real_imgs = read_idx(tiny_fmnist / "train-images-idx3-ubyte.gz")[:, None]
    real_lbls = read_idx(tiny_fmnist / "train-labels-idx1-ubyte.gz")
    idx = np.concatenate([np.flatnonzero(real_lbls == c)[-30:] for c in range(10)])
    real = write_set(tmp_path / "real", real_imgs[idx], real_lbls[idx])
    common = ["--size", "smoke", "-q", "-w", str(tmp_path / "w"), "--set", f"data.root={tiny_fmnist}",
              "--set", "train.schedule.iters_per_doubling=80", "--set", "metrics.per_class=25"]
    out = {}
    for name, path in (("noise", noise), ("real", real)):
        assert main(["metrics", str(path), *common, "--out", str(tmp_path / f"{name}.json")]) == 0
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
        per_class = pd.read_json(tmp_path / f"{name}_per_class.json")
        assert len(per_class) == 10 and (per_class.n == 25).all()
        assert out[name]["recognizability"] == pytest.approx(per_class.recognizability.mean())
    assert "recognizability" in capsys.readouterr().out
    assert out["real"]["recognizability"] > 0.6 > 0.2 > out["noise"]["recognizability"]
    assert out["real"]["fd"] < out["noise"]["fd"] / 5 and out["real"]["fd_class"] < out["noise"]["fd_class"]
    assert out["real"]["precision"] > out["noise"]["precision"]
    assert math.isnan(out["real"]["lpips_alex"])  # no AlexNet weights here
    assert len(list((tmp_path / "w" / "stages" / "train").glob("[!.]*"))) == 1  # the reference, trained once


def test_speed_benchmark_script_runs(fmnist_files):
    """benchmarks/metrics_speed.py: the CPU figures on the 10k test images, and the GPU path's code
    (shard writing in processes, checkpoint reference, streamed extraction) run small on the CPU."""
    import subprocess
    import sys

    from conftest import ROOT

    script = str(ROOT / "benchmarks" / "metrics_speed.py")
    out = subprocess.run([sys.executable, script, "--images", "2000"], capture_output=True, text=True, check=True,
                         timeout=300).stdout  # the figures in docs/metrics.md are of all 10,000
    assert "features stage (extract + write, as the study)" in out and "target: 10,000 images in <= 20 s" in out
    out = subprocess.run([sys.executable, script, "--gpu", "--device", "cpu", "--images", "120", "--size", "40",
                          "--arch", "test_vit", "--batch-size", "40", "--workers", "2"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "loader alone" in out and "features: (120, 64) float32, logits (120, 1000); cpu" in out


def test_metrics_cli_errors(tiny_fmnist, tmp_path, capsys):
    from synscale.cli import main

    common = ["--size", "smoke", "-q", "-w", str(tmp_path / "w"), "--set", f"data.root={tiny_fmnist}",
              "--set", "train.schedule.iters_per_doubling=20"]
    assert main(["metrics", str(tmp_path / "nothing"), *common]) == 2
    assert "is not a synscale set" in capsys.readouterr().err
    one = write_set(tmp_path / "set", np.zeros((10, 1, 28, 28), np.uint8), np.arange(10))
    ckpt = tmp_path / "ref.safetensors"
    ckpt.write_bytes(b"")
    assert main(["metrics", str(one), *common, "--set", f"metrics.reference={ckpt}"]) == 2
    assert "set metrics.reference_arch" in capsys.readouterr().err
    assert main(["metrics", str(one), *common, "--set", "metrics.names=['fid']"]) == 2
    assert "unknown metric 'fid'" in capsys.readouterr().err
