"""Studies that train under torchrun, evaluate on an OOD folder set with a class subset, and mix real and
synthetic training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests_helpers import NO_HOLDOUT, NO_SYNTHETIC
from synscale.cli import main
from synscale.data.datasets import read_idx

SMOKE = ["--size", "smoke", "--quiet"]
NO_EXTRAS = ["--set", "evaluate.shifts=[]", "--set", "metrics.per_class=0"]
VIT = ["--set", "train.recipe=miniature-vit", "--set", "train.mixup=0.0", "--set",
       "train.model_kwargs={patch_size=4, embed_dim=32, depth=1, num_heads=2, drop_rate=0.0, drop_path_rate=0.0}"]


def test_study_trains_under_torchrun_like_one_process(tiny_fmnist, tmp_path):
    """train.nproc = 2: every train stage runs under torchrun (gloo, 2 CPU processes) and is evaluated."""
    args = ["study", "fashion-mnist", *SMOKE, *NO_EXTRAS, *VIT, "--set", f"data.root={tiny_fmnist}",
            *NO_SYNTHETIC, "--set", "scales=[1000, 2000]", "--set", "train.schedule.zero_scale=700", "--set", "train.schedule.iters_per_doubling=60",
            "--set", "train.randaugment=[]"]
    assert main([*args, "--workdir", str(tmp_path / "one")]) == 0
    assert main([*args, "--workdir", str(tmp_path / "two"), "--set", "train.nproc=2"]) == 0
    one, two = (pd.read_parquet(tmp_path / w / "results" / "scaling.parquet") for w in ("one", "two"))
    assert two["scale"].tolist() == [1000, 2000] and (two["top1"] > 0.2).all()  # a 1-block ViT, 31 and 91 steps
    assert two["loss"].iloc[1] < two["loss"].iloc[0]
    # the same training up to float summation order, which a ViT at lr 3e-3 amplifies over 60 steps (so does a
    # change of thread count); tests/test_engine.py checks the weights after 12 steps
    assert np.allclose(one["loss"], two["loss"], rtol=0.05)
    meta = [json.loads(p.read_text()) for p in (tmp_path / "two" / "stages" / "train").glob("*/train.json")]
    assert sorted(m["processes"] for m in meta) == [2, 2] and all(m["model_img_size"] == 24 for m in meta)


def _ood_folder(fmnist_files: Path, root: Path, classes: dict[str, int], per_class: int = 15) -> None:
    images = read_idx(fmnist_files / "t10k-images-idx3-ubyte.gz")[5000:]
    labels = read_idx(fmnist_files / "t10k-labels-idx1-ubyte.gz")[5000:]
    for name, c in classes.items():
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(255 - images[i]).save(root / name / f"{i}.png")  # inverted: out of distribution


def test_ood_folder_with_class_subset_and_real_synthetic_mixing(tiny_fmnist, fmnist_files, tmp_path):
    ood = tmp_path / "ood"
    _ood_folder(fmnist_files, ood, {"Trouser": 1, "Sneaker": 7, "Bag": 8})
    work = tmp_path / "w"
    syn = '[{name="ld-cfg2", model="builtin:latent-diffusion", guidance=2.0, steps=2, batch_size=250}]'
    assert main(["study", "fashion-mnist", *SMOKE, *NO_EXTRAS, "--workdir", str(work), "--set", f"data.root={tiny_fmnist}",
                 "--set", "scales=[1000, 2000]", "--set", "train.schedule.zero_scale=700",
                 "--set", f"synthetic={syn}", "--set", "retrieved=[]", "--set", "adaptive=[]", "--set", "grid=[]", "--set", "curves=[]",
                 "--set", 'mix=[{name="mix25", synthetic="ld-cfg2", real_fraction=0.25}]',
                 "--set", f'evaluate.sets=[{{name="inverted3", root="{ood}"}}]']) == 0
    res = pd.read_parquet(work / "results" / "scaling.parquet")
    assert res.groupby("eval_set").size().to_dict() == {"val": 6, "inverted3": 6}
    assert res[res.eval_set == "val"].groupby("source")["scale"].apply(list).to_dict() == {
        "real": [1000, 2000], "ld-cfg2": [1000, 2000], "mix25": [1000, 2000]}

    # the OOD set: relabelled into the study's classes, logits restricted to the three it covers
    (ood_stage,) = (d for d in (work / "stages" / "ood").iterdir() if not d.name.startswith("."))
    assert json.loads((ood_stage / "ood.json").read_text())["class_subset"] == [1, 7, 8]
    per_class = pd.read_parquet(work / "results" / "scaling_per_class.parquet")
    assert set(per_class[per_class.eval_set == "inverted3"]["class_name"]) == {"Trouser", "Sneaker", "Bag"}
    row = res[(res.eval_set == "inverted3") & (res.source == "real") & (res.scale == 2000)].iloc[0]
    ex = pd.read_parquet(work / "stages" / "evaluate" / row.eval_stage / "examples.parquet")
    assert set(ex["pred"]) <= {1, 7, 8} and len(ex) == 45
    # recompute the restricted loss by hand from the trained model and the folder's images
    from synscale.study import StageResult, load_model

    info = json.loads((work / "stages" / "train" / row.train_stage / "stage.json").read_text())
    model = load_model(StageResult("train", row.train_stage, work / "stages" / "train" / row.train_stage, True),
                       info["params"]["train"])
    losses = []
    for name, c in (("Bag", 8), ("Sneaker", 7), ("Trouser", 1)):
        for p in sorted((ood / name).iterdir()):
            x = torch.from_numpy(np.array(Image.open(p))).float().div(127.5).sub(1)[None, None]
            with torch.no_grad():
                logits = model(x)[0, [1, 7, 8]]
            losses.append(float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([[1, 7, 8].index(c)]))))
    assert abs(np.mean(losses) - row.loss) < 1e-4

    # the mixed models: a quarter real, nested subsets of both sets
    mix = res[(res.source == "mix25") & (res.eval_set == "val")].set_index("scale")
    assert mix[["real_images", "synthetic_images"]].to_dict("list") == {"real_images": [250, 500],
                                                                        "synthetic_images": [750, 1500]}
    val = res[res.eval_set == "val"]
    assert (val[val.source == "real"].synthetic_images == 0).all() and (val[val.source == "ld-cfg2"].real_images == 0).all()
    stage = json.loads((work / "stages" / "train" / mix.loc[2000, "train_stage"] / "stage.json").read_text())
    assert set(stage["inputs"]) == {"set", "subset", "set1", "subset1"}
    subsets = {k: len(pd.read_parquet(work / "stages" / "subset" / stage["inputs"][k] / "subset.parquet"))
               for k in ("subset", "subset1")}
    assert subsets == {"subset": 500, "subset1": 1500}
    gen = json.loads((work / "stages" / "subset" / stage["inputs"]["subset1"] / "stage.json").read_text())
    assert gen["inputs"]["set"] == stage["inputs"]["set1"] != stage["inputs"]["set"]
    meta = json.loads((work / "stages" / "train" / mix.loc[2000, "train_stage"] / "train.json").read_text())
    assert meta["train_images"] == 2000


def test_repeated_seeds_give_runs_that_the_fits_resample(tiny_fmnist, tmp_path):
    """repeats = 2: two models per scale (train.seed, train.seed + 1); run 0 is the model a single-run study
    trains (same stage), and the fits' bootstrap redraws the runs."""
    args = ["study", "fashion-mnist", *SMOKE, *NO_EXTRAS, "--set", f"data.root={tiny_fmnist}", *NO_SYNTHETIC,
            "--set", "scales=[1000, 1500, 2500]", "--set", "train.schedule.zero_scale=700", "--set", "fit.bootstrap=200",
            *NO_HOLDOUT]
    work = tmp_path / "w"
    assert main([*args, "--workdir", str(work), "--set", "repeats=2"]) == 0
    res = pd.read_parquet(work / "results" / "scaling.parquet")
    val = res[res.eval_set == "val"].sort_values(["scale", "run"])
    assert val[["scale", "run"]].values.tolist() == [[1000, 0], [1000, 1], [1500, 0], [1500, 1], [2500, 0], [2500, 1]]
    assert val.train_stage.nunique() == 6 and (val.groupby("scale").loss.nunique() == 2).all()  # seeds differ
    fit = pd.read_parquet(work / "results" / "fits.parquet").set_index("eval_set").loc["val"]
    assert fit.runs == 2 and fit.k_lo < fit.k < fit.k_hi
    means = val.groupby("scale").loss.mean().to_numpy()
    slope = np.polyfit(np.log([1000, 1500, 2500]), np.log(means), 1)[0]
    assert fit.k == pytest.approx(-slope)  # the point fit is on the mean over runs
    pc = pd.read_parquet(work / "results" / "per_class.parquet")
    assert len(pc[pc.eval_set == "val"]) == 10
    # run 0 is the single-run study's model: the same stage, reused
    assert main([*args, "--workdir", str(work)]) == 0
    single = pd.read_parquet(work / "results" / "scaling.parquet")
    assert set(single.train_stage) == set(val[val.run == 0].train_stage)
