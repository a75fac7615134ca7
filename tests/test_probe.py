"""Linear probes (appendix A.3): the L-BFGS logistic regression against scikit-learn, and probes of every
trained model on a downstream ImageFolder set inside a study."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests_helpers import NO_SYNTHETIC
from synscale.data.datasets import read_idx
from synscale.evaluate.probe import fit_linear_probe, probe_examples


def test_linear_probe_matches_scikit_learn_lbfgs():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 1.5
    y, yt = rng.integers(0, 5, 500), rng.integers(0, 5, 200)
    x, xt = centers[y] + rng.normal(size=(500, 16)), centers[yt] + rng.normal(size=(200, 16))
    for c in (1.0, 0.05):
        ours = fit_linear_probe(x, y, 5, c=c, max_iter=500)
        sk = LogisticRegression(C=c, solver="lbfgs", max_iter=500, tol=1e-10).fit(x, y)
        assert np.abs(ours.predict_proba(xt) - sk.predict_proba(xt)).max() < 1e-4
        assert np.abs(ours.weight.T - sk.coef_).max() < 1e-3 and ours.iterations <= 500
    ex = probe_examples(ours, xt, yt)
    assert np.allclose(ex["loss"], -np.log(sk.predict_proba(xt)[np.arange(200), yt]), atol=1e-4)
    assert (ex["pred"] == sk.predict(xt)).all()
    with pytest.raises(ValueError, match="needs training examples"):
        fit_linear_probe(np.zeros((0, 3)), np.zeros(0), 2)


@pytest.fixture(scope="module")
def footwear(tiny_fmnist, tmp_path_factory):
    """A downstream ImageFolder task cut from real Fashion-MNIST: footwear (sandal, sneaker, ankle boot)
    against everything else."""
    root = tmp_path_factory.mktemp("footwear")
    images = read_idx(tiny_fmnist / "train-images-idx3-ubyte.gz")
    labels = read_idx(tiny_fmnist / "train-labels-idx1-ubyte.gz")
    for split, idx in (("train", range(0, 400)), ("test", range(2600, 2900))):
        for i in idx:
            cls = "footwear" if labels[i] in (5, 7, 9) else "other"
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(root / split / cls / f"{i:05d}.png")
    return root


def test_study_probes_every_model_on_a_downstream_set(tiny_fmnist, footwear, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from synscale.cli import main
    from synscale.metrics.features import extract, load_reference
    from tests_helpers import stage_dirs

    args = ["study", "fashion-mnist", "--size", "smoke", "-q", "--workdir", str(tmp_path), "--set", f"data.root={tiny_fmnist}",
            "--set", "scales=[1000, 2000]", "--set", "train.schedule.zero_scale=700", "--set", "train.schedule.iters_per_doubling=60", *NO_SYNTHETIC,
            "--set", "metrics.per_class=0", "--set", "evaluate.shifts=[]",
            "--set", f'evaluate.probes=[{{name = "footwear", root = "{footwear}"}}]']
    assert main(args) == 0
    scaling = pd.read_parquet(tmp_path / "results" / "scaling.parquet")
    probes = scaling[scaling.eval_set == "probe:footwear"]
    assert probes.scale.tolist() == [1000, 2000] and (probes.top1 > 0.85).all() and (probes.n_eval == 300).all()
    assert "probe:footwear" in set(pd.read_parquet(tmp_path / "results" / "fits.parquet").eval_set)
    # the probe's result equals scikit-learn's on the same features of the same model
    (probe_dir,) = [d for d in stage_dirs(tmp_path, "probe")
                    if json.loads((d / "stage.json").read_text())["inputs"]["model"] == probes.iloc[1].train_stage]
    model = tmp_path / "stages" / "train" / probes.iloc[1].train_stage
    info = json.loads((model / "stage.json").read_text())

    class Stage:
        path, id = model, probes.iloc[1].train_stage

    ref = load_reference("trained", "", 10, None, "cpu", trained=Stage, train_cfg=info["params"]["train"])
    inputs = json.loads((probe_dir / "stage.json").read_text())["inputs"]
    tr, te = (extract(ref, tmp_path / "stages" / "shards" / inputs[k], progress=False) for k in ("train", "test"))
    sk = LogisticRegression(C=1.0, max_iter=500).fit(tr.feats, tr.labels)
    ex = pd.read_parquet(probe_dir / "examples.parquet")
    assert (ex.label.to_numpy() == te.labels).all()
    assert (ex.pred.to_numpy() == sk.predict(te.feats)).mean() > 0.99
    assert probes.iloc[1].top1 == pytest.approx((sk.predict(te.feats) == te.labels).mean(), abs=0.01)
