"""The closed loop (issue 30): per-class curves from planted losses, the whole budget spent with its floor and caps,
moves off the best candidate kept only where they paid, prompts of nested rounds, near-duplicates on thumbnails, and
a whole study with an adaptive source, its uniform control and a retrieval control, whose round killed as it
generated resumes to the same images."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synscale.analysis.allocate import ClassCurve, allocate, fit_class_curves, spend

HERE = Path(__file__).parent


def _curve(ci, a, k, config="g", k_lo=math.nan, classes=2, d_ref=1000.0):
    return ClassCurve(ci, config, k, -math.log(a), d_ref, classes, k_lo)


def test_class_curves_recover_planted_slopes_with_intervals_that_cover_them():
    """Per-example losses drawn around L = a (C n / D)^-k per class (exponential, mean L): the fit's k is within its
    bootstrap interval of the truth, the interval is narrow with 4,000 examples a class, and a (config, class) seen
    at one count only gets no curve."""
    rng = np.random.default_rng(0)
    classes, d_ref, per = 2, 100.0, 4000
    planted = {("g1", 0): (2.0, 0.5), ("g1", 1): (1.0, 0.1), ("g2", 0): (1.5, 0.8)}
    labels = np.repeat(np.arange(classes), per)
    obs, examples = [], {}
    for j, n in enumerate((10, 20, 40, 80)):
        loss = np.empty(len(labels))
        for c in range(classes):
            a, k = planted[("g1", c)]
            loss[labels == c] = rng.exponential(a * (classes * n / d_ref) ** -k, per)
        examples[f"m{j}"] = (loss, labels)
        obs += [{"config": "g1", "class_index": c, "n": n, "model": f"m{j}"} for c in range(classes)]
        loss2 = loss.copy()
        a, k = planted[("g2", 0)]
        loss2[labels == 0] = rng.exponential(a * (classes * n / d_ref) ** -k, per)
        examples[f"h{j}"] = (loss2, labels)
        obs.append({"config": "g2", "class_index": 0, "n": n, "model": f"h{j}"})
    obs.append({"config": "g2", "class_index": 1, "n": 10, "model": "h0"})  # one count: no curve
    fits = fit_class_curves(pd.DataFrame(obs), examples, classes, d_ref, n_boot=300, seed=1)
    got = {(r.config, r.class_index): r for r in fits.itertuples()}
    assert set(got) == set(planted)
    for key, (a, k) in planted.items():
        r = got[key]
        assert r.k_lo <= k <= r.k_hi and r.k_hi - r.k_lo < 0.15, (key, r)
        assert abs(r.perf_at_DI + math.log(a)) < 0.1


def test_the_whole_budget_is_spent_with_floor_and_cap():
    """Class 1's k interval reaches 0: it is only brought to its floor; class 0 scales but is capped at 150; what
    neither takes is spread evenly over the classes (each by its fallback configuration), so the budget is spent
    to the image."""
    curves = [_curve(0, 2.0, 0.5, k_lo=0.3), _curve(1, 1.0, 0.2, k_lo=-0.1)]
    out = spend(curves, {(0, "g"): 50, (1, "g"): 10}, 203, 10, {0: "g", 1: "g"}, floor={0: 0, 1: 30},
                cap={0: 150, 1: 10_000}).set_index("class_index")
    assert out.added.sum() == 203
    assert out.added[0] == 100 + (203 - 100 - 20 + 1) // 2  # to its cap, then half the even spread (rounded up)
    assert out.added[1] == 20 + (203 - 100 - 20) // 2
    assert "evenly" in out.why[0] and "evenly" in out.why[1]


def test_a_class_without_images_starts_with_the_configuration_that_forecasts_lowest():
    """A class with no images comes first, by the configuration whose forecast at one step is lowest (not the first
    name): its images are not split between configurations it will not keep."""
    curves = [_curve(0, 3.0, 0.4, "a"), _curve(0, 1.0, 0.4, "b"), _curve(1, 1.0, 0.4, "a")]
    out = allocate(curves, {(1, "a"): 100}, budget=10, step=10)
    got = {(r.class_index, r.config): r.added for r in out.itertuples()}
    assert got == {(0, "a"): 0, (0, "b"): 10, (1, "a"): 0}


def test_a_move_that_did_not_pay_is_rejected():
    """A class a round drew by another candidate keeps that candidate only where its loss in the round's model is
    below what the best candidate's own curve forecasts at the same count."""
    from synscale.study.adaptive import _rejected_moves

    labels = np.repeat([0, 1], 100)
    fits = pd.DataFrame({"config": ["p", "p"], "class_index": [0, 1], "k": [0.5, 0.5], "perf_at_DI": [0.0, 0.0]})
    # best candidate's forecast at n = 50 (C = 2, D = 100): (2 * 50 / 100)^-0.5 = 1.0
    loss = np.where(labels == 0, 1.5, 0.5)  # class 0 worse than forecast, class 1 better
    obs = pd.DataFrame([{"config": "q", "class_index": 0, "n": 50, "model": "r0", "source": "round 1"},
                        {"config": "q", "class_index": 1, "n": 50, "model": "r0", "source": "round 1"},
                        {"config": "q", "class_index": 0, "n": 50, "model": "p0", "source": "pilot"}])
    assert _rejected_moves(obs, {"r0": (loss, labels), "p0": (loss, labels)}, fits, "p", 2, 100.0) == {(0, "q")}


def test_item_prompts_nest_whatever_a_class_holds():
    """Image i of class c has the same prompt, seed and key whether a round asks for 3 or 10 images of its class,
    and whatever other classes it asks for: the rounds' sets nest."""
    from synscale.labels import named_label_set
    from synscale.prompts.strategies import item_prompts, make_context

    ctx = make_context(named_label_set("fashion-mnist"), "fashion-mnist")
    few = item_prompts("clip-templates-7", ctx, [(2, i) for i in range(3)], seed=5, key_prefix="g0-")
    more = item_prompts("clip-templates-7", ctx, [(7, 0), *[(2, i) for i in range(10)]], seed=5, key_prefix="g0-")
    pd.testing.assert_frame_equal(few, more[more.class_index == 2].head(3).reset_index(drop=True))
    assert more.key.is_unique and more["index"].is_unique and few.key.tolist() == ["g0-c2-0", "g0-c2-1", "g0-c2-2"]


def test_near_duplicates_match_a_brute_force_search_at_any_block_size():
    from synscale.data.retrieval import near_duplicates

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(70, 8)).astype(np.float32)
    pool = np.concatenate([rng.normal(size=(300, 8)), ref[:5] + 0.01 * rng.normal(size=(5, 8))]).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    brute = (unit(pool) @ unit(ref).T).max(1) >= 0.99
    assert brute[-5:].all() and brute.sum() < 20
    for chunk in (7, 64, 1000):
        np.testing.assert_array_equal(near_duplicates(pool, ref, 0.99, chunk=chunk), brute)


# ---------------------------------------------------------------------------------------------------
# A whole study


def _pool(tiny_fmnist: Path, out: Path, planted: int) -> Path:
    """An unlabelled pool: 400 training images past the ones the study's real curve takes, plus `planted` exact
    copies of test images."""
    from synscale.data.datasets import read_idx
    from synscale.data.shards import ShardWriter

    train = read_idx(tiny_fmnist / "train-images-idx3-ubyte.gz")[-400:]
    test = read_idx(tiny_fmnist / "t10k-images-idx3-ubyte.gz")[:planted]
    with ShardWriter(out, None, 1000) as w:
        for i, img in enumerate(train):
            w.write(f"pool-{i}", img, -1)
        for i, img in enumerate(test):
            w.write(f"dup-{i}", img, -1)
    return out


def _weights(path: Path) -> Path:
    """A randomly initialised miniature CLIP as a user's open_clip weights file (safetensors)."""
    import torch
    from safetensors.torch import save_file

    from synscale.train.clip import create_clip

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in create_clip("synscale-clip-mini").state_dict().items()}, str(path))
    return path


def _study(tmp: Path, tiny_fmnist: Path) -> Path:
    pool = _pool(tiny_fmnist, tmp / "pool", planted=20)
    weights = _weights(tmp / "clip.safetensors")
    p = tmp / "loop.toml"
    p.write_text(f"""name = "loop"
scales = [100, 200]
curves = []
[data]
root = "{tiny_fmnist}"
reference_size = 3000
shard_size = 500
[train]
recipe = "miniature-cnn"
batch_size = 32
schedule = {{zero_scale = 50, iters_per_doubling = 20, warmup_per_doubling = 2}}
[evaluate]
shifts = []
[metrics]
per_class = 0
[fit]
bootstrap = 50
saturating_bootstrap = 10
[generation]
steps = 2
batch_size = 50
shard_size = 40
[[synthetic]]
name = "ld"
model = "builtin:latent-diffusion"
strategy = "classname"
[[synthetic]]
name = "mt"
model = "builtin:masked-token"
strategy = "classname"
[[adaptive]]
name = "adaptive"
candidates = ["ld", "mt"]
pilot = [100, 200]
scales = [100, 200]
regenerate = "all"
bootstrap = 50
[[retrieved]]
name = "retrieved"
clip = "open_clip:synscale-clip-mini:{weights}"
pool = "{pool}"
strategy = "classname"
""")
    return p


def _run(plan: list[dict], out: Path) -> dict:
    (out / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, str(HERE / "faults.py"), str(out / "plan.json"), str(out / "result.json")],
                          env={**__import__("os").environ, "PYTHONPATH": str(HERE.parent / "src")},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def _round_sets(workdir: Path) -> dict[str, list[str]]:
    out = {}
    for p in (workdir / "stages" / "round").glob("*/round.json"):
        r = json.loads(p.read_text())
        out[f"{r['arm']} {r['round']}"] = [s["id"] for s in r["sets"]]
    return out


def test_an_adaptive_study_with_its_controls_and_a_killed_round_that_resumes_exactly(tiny_fmnist, tmp_path):
    """The study runs the pilot, two rounds of each arm and the retrieval control; the results hold the allocation,
    the comparison at equal images and the images to uniform's final loss; the report shows the section and its
    three figures. A copy with the rounds' generated sets removed, killed as its first round's first shard lands,
    resumes to byte-identical sets and the same losses."""
    study = _study(tmp_path, tiny_fmnist)
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["study", str(study), "--quiet", "--workdir"]
    res = _run([{"name": "ref", "argv": [*argv, str(a)], "kills": 0}], tmp_path)
    assert res["ref"]["code"] == 0, (tmp_path / "ref.log").read_text()[-3000:]

    results = a / "results"
    alloc = pd.read_parquet(results / "allocation.parquet")
    for arm in ("adaptive", "uniform"):
        mine = alloc[alloc.arm == arm]
        totals = mine.groupby("round").added.sum().tolist()
        assert totals == [100, 100], (arm, totals)  # every image of each round's budget, no more
    assert (alloc[alloc.arm == "uniform"].groupby(["round", "class_index"]).added.sum() == 10).all()
    loop = pd.read_parquet(results / "loop.parquet")
    assert loop.scale.tolist() == [100, 200] and loop[["adaptive_loss", "uniform_loss", "retrieved_loss"]].notna().all().all()
    assert (loop.gain_vs_uniform_lo <= loop.gain_vs_uniform).all() and (loop.gain_vs_uniform <= loop.gain_vs_uniform_hi).all()
    target = pd.read_parquet(results / "loop_target.parquet").set_index("curve")
    assert target.at["uniform", "images"] == 200 and target.at["uniform", "how"] == "measured"
    scaling = pd.read_parquet(results / "scaling.parquet")
    assert {"adaptive", "adaptive-uniform", "retrieved"} <= set(scaling.source)

    retrieved = pd.read_parquet(results / "retrieval.parquet")
    assert not retrieved.key.str.startswith("dup-").any()  # the planted copies of test images are never taken
    assert (retrieved.groupby("class_index").size() == 20).all()
    info = json.loads(next((a / "stages" / "retrieved").glob("*/retrieval.json")).read_text())
    assert info["duplicates"] >= 20 and info["images"] == 200

    page = (a / "report" / "index.html").read_text()
    assert 'id="loop"' in page and "Where generation pays" in page
    for name in ("figa_allocation", "figu_loop_curves", "figt_images_to_target"):
        assert list((a / "report").glob(f"{name}.*")), name

    sets = _round_sets(a)
    assert set(sets) == {"adaptive 0", "adaptive 1", "uniform 0", "uniform 1"}
    assert set(sets["adaptive 0"]) <= set(sets["adaptive 1"])  # nested: round 2's set holds round 1's
    deltas = sorted({s for ids in sets.values() for s in ids})
    shutil.copytree(a, b, symlinks=True)
    for d in ["round", *[f"generate/{s}" for s in deltas]]:
        shutil.rmtree(b / "stages" / d)
    res = _run([{"name": "killed", "argv": [*argv, str(b)], "kills": 1, "delay": 900, "workdir": str(b),
                 "first_env": {"SYNSCALE_FAULT_KILL_AT_REPLACE": "shard-"}}], tmp_path)
    assert res["killed"]["killed"] == 1 and res["killed"]["landed"] == ["generate"], res
    assert res["killed"]["code"] == 0, (tmp_path / "killed.log").read_text()[-3000:]
    assert _round_sets(b) == sets
    for s in deltas:
        for name in ("manifest.parquet", "arrays.npy"):
            assert (b / "stages" / "generate" / s / name).read_bytes() == (a / "stages" / "generate" / s / name).read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(b / "results" / "loop.parquet"), loop)


@pytest.mark.parametrize("override, message", [
    ('adaptive=[{name = "a", candidates = ["nope"], scales = [400]}]', r"candidates \['nope'\] are not \[\[synthetic\]\]"),
    ('adaptive=[{name = "a", candidates = ["ld-classname-g2"], scales = [400], pilot = [100, 800]}]',
     "pilot scales .* none above candidate 'ld-classname-g2'"),
    ('adaptive=[{name = "real", candidates = ["ld-classname-g2"], scales = [400]}]', "must be non-empty, not 'real'"),
    ('adaptive=[{name = "ld-classname-g2", candidates = ["ld-classname-g2"], scales = [400]}]',
     "names must differ from every other source"),
    ('retrieved=[{name = "r", strategy = "in-captions"}]', 'strategy must be "templates" or a prompt strategy'),
    ('retrieved=[{name = "r", clip = "vit"}]', 'clip must be "study" or "open_clip:ARCH:WEIGHTS"'),
    ("clip.scales=[]", 'clip = "study" needs the study\'s CLIP on real pairs'),
])
def test_bad_loop_settings_are_one_line_errors(override, message):
    from synscale.config import ConfigError, find_study, load_study

    with pytest.raises(ConfigError, match=message) as e:
        load_study(find_study("fashion-mnist"), overrides=[override])
    assert "\n" not in str(e.value)


def test_a_missing_pool_or_clip_weights_are_found_before_any_stage(tmp_path):
    """Preflight names a pool that is not a synscale set and open_clip weights that are not there, one line each."""
    from synscale.config import find_study, load_study
    from synscale.study.preflight import problems

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    cfg = load_study(find_study("fashion-mnist"), overrides=[
        f'retrieved=[{{name = "r", pool = "{tmp_path / "none"}"}}, {{name = "s", clip = "open_clip:synscale-clip-mini:{tmp_path / "w.pt"}"}},'
        f' {{name = "t", clip = "open_clip:synscale-clip-mini:{cut}"}}]'])
    found = [p for p in problems(cfg) if "retrieved" in p]
    assert len(found) == 3 and all("\n" not in p for p in found)
    assert "is not a synscale set" in found[0] and "no such file" in found[1] and "not whole safetensors" in found[2]
