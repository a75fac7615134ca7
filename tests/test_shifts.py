"""The miniature's OOD shifts: deterministic, documented transforms, and the hard subset in a study."""

import json

import numpy as np
import pandas as pd
import pytest

from tests_helpers import NO_SYNTHETIC
from synscale.config import ConfigError, load_study, find_study
from synscale.data.datasets import read_idx
from synscale.data.shifts import SHIFTS, hard_subset, rendition, sketch, v2


@pytest.fixture(scope="module")
def images(fmnist_files):
    return read_idx(fmnist_files / "t10k-images-idx3-ubyte.gz")[:64][:, None]


@pytest.mark.parametrize("name", SHIFTS.names())
def test_shifts_are_deterministic_and_keep_shape(images, name):
    a, b = SHIFTS.get(name)(images, 3), SHIFTS.get(name)(images, 3)
    assert a.dtype == np.uint8 and a.shape == images.shape and np.array_equal(a, b)
    assert not np.array_equal(a, images)
    rgb = SHIFTS.get(name)(np.repeat(images, 3, axis=1), 3)
    assert rgb.shape == (64, 3, 28, 28)


def test_random_shifts_depend_on_the_seed(images):
    for fn in (rendition, v2):
        assert not np.array_equal(fn(images, 0), fn(images, 1))
    assert np.array_equal(sketch(images, 0), sketch(images, 1))  # no randomness in an edge map


def test_sketch_known_answers():
    flat = np.full((1, 1, 8, 8), 200, np.uint8)
    assert (sketch(flat) == 0).all()  # no edges: black
    step = np.zeros((1, 1, 8, 8), np.uint8)
    step[..., 4:] = 255  # a vertical edge between columns 3 and 4
    e = sketch(step)[0, 0]
    assert e.max() == 255 and (e[:, [3, 4]] == 255).all() and (e[:, [0, 1, 6, 7]] == 0).all()


def test_rendition_is_one_of_three_documented_renditions(images):
    out = rendition(images, 0)
    x = images.astype(np.float32)
    mean = x.mean((1, 2, 3), keepdims=True)
    low = np.clip(np.round(mean + 0.35 * (x - mean)), 0, 255).astype(np.uint8)
    kinds = []
    for i in range(len(images)):
        match = [np.array_equal(out[i], c[i]) for c in (images & 0xC0, 255 - images, low)]
        assert any(match), i
        kinds.append(match.index(True))
    assert set(kinds) == {0, 1, 2}


def test_v2_identity_parameters_would_keep_the_image(images):
    # the affine keeps most of the content: correlation with the original stays high
    out = v2(images, 0).astype(float)
    corr = [np.corrcoef(out[i].ravel(), images[i].ravel().astype(float))[0, 1] for i in range(len(images))]
    assert np.median(corr) > 0.6 and min(corr) < 0.99


def test_hard_subset_and_shift_validation():
    assert hard_subset(np.array([0, 1, 2, 1]), np.array([0, 2, 2, 0])).tolist() == [1, 3]
    with pytest.raises(ConfigError, match="unknown shift 'sketchy'"):
        load_study(find_study("fashion-mnist"), overrides=["evaluate.shifts=['sketchy']"])


def test_study_evaluates_every_model_on_the_shifts(tiny_fmnist, tmp_path):
    """A tiny study: every model on val and the four shifts; `a` holds exactly the test images that the
    reference network misclassifies."""
    from synscale.cli import main
    from synscale.data.shards import load_arrays, read_manifest
    from synscale.evaluate.classification import predict
    from synscale.study import load_model
    from tests_helpers import stage_dirs

    args = ["study", "fashion-mnist", "--size", "smoke", "-q", "--workdir", str(tmp_path), "--set", f"data.root={tiny_fmnist}",
            "--set", "scales=[1000, 2000]", "--set", "train.schedule.zero_scale=700", "--set", "train.schedule.iters_per_doubling=60", *NO_SYNTHETIC,
            "--set", "metrics.per_class=0"]
    assert main(args) == 0
    scaling = pd.read_parquet(tmp_path / "results" / "scaling.parquet")
    assert sorted(scaling.eval_set.unique()) == ["a", "rendition", "sketch", "v2", "val"]
    assert len(scaling) == 2 * 5
    fits = pd.read_parquet(tmp_path / "results" / "fits.parquet")
    assert sorted(fits.eval_set) == ["a", "rendition", "sketch", "v2", "val"]
    val = scaling[scaling.eval_set == "val"].set_index("scale").loss
    for shift in ("sketch", "a"):  # harder than the unshifted test set
        assert (scaling[scaling.eval_set == shift].set_index("scale").loss > val).all(), shift
    shifts = {json.loads((d / "stage.json").read_text())["params"]["shift"]: d for d in stage_dirs(tmp_path, "shift")}
    (test_dir,) = stage_dirs(tmp_path, "shards", split="test")
    ref_id = json.loads((shifts["a"] / "stage.json").read_text())["inputs"]["model"]
    ref_dir = tmp_path / "stages" / "train" / ref_id
    images, labels, keys = load_arrays(test_dir)
    info = json.loads((ref_dir / "stage.json").read_text())
    pred = predict(load_model(_Stage(ref_dir), info["params"]["train"]), images, labels)["pred"]
    wrong = [k for k, p, y in zip(keys, pred, labels) if p != y]
    assert read_manifest(shifts["a"])["key"].tolist() == wrong and 0 < len(wrong) < len(keys) / 2
    assert np.array_equal(load_arrays(shifts["sketch"])[0], sketch(images, 0))


class _Stage:
    def __init__(self, path):
        self.path = path
