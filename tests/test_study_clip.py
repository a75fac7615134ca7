"""CLIP in a study, through the CLI: the miniature's captioned pairs, and a CLIP-only study on LAION-style
img2dataset shards (local stand-ins) with zero-shot evaluation on a class-folder set."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from synscale.cli import main

CLIP_SMOKE = ["--set", "clip.scales=[200, 400, 800]", "--set", "clip.train.schedule.epochs=2",
              "--set", 'clip.synthetic=[{name = "clip-synthetic", model = "builtin:latent-diffusion", guidance = 1.5, '
                       'steps = 2, batch_size = 200}]']


def _subset_keys(workdir: Path, train_stage: str) -> tuple[list[str], ...]:
    inputs = json.loads((workdir / "stages" / "train" / train_stage / "stage.json").read_text())["inputs"]
    return tuple(pd.read_parquet(workdir / "stages" / "subset" / inputs[k] / "subset.parquet")["key"].tolist()
                 for k in ("subset", "subset1") if k in inputs)


def test_the_miniatures_clip_real_synthetic_and_mixed(tiny_fmnist, tmp_path, capsys):
    w = tmp_path / "w"
    args = ["study", "fashion-mnist", "--size", "smoke", "--quiet", "--workdir", str(w), "--set", f"data.root={tiny_fmnist}",
            *CLIP_SMOKE, "--set", "scales=[]", "--set", "evaluate.shifts=[\"sketch\"]"]
    assert main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "CLIP sources: clip-real, clip-synthetic, clip-mixed (9 models" in plan and "study fashion-mnist:" not in plan
    assert main(args) == 0
    res = w / "results"
    s = pd.read_parquet(res / "scaling.parquet")
    assert set(s.task) == {"clip"} and sorted(s.eval_set.unique()) == ["sketch", "val"]
    assert s[s.eval_set == "val"].groupby("source", sort=False)["scale"].apply(list).to_dict() == {
        "clip-real": [200, 400, 800], "clip-synthetic": [200, 400, 800], "clip-mixed": [200, 400, 800]}
    top = s[(s.eval_set == "val") & (s.scale == 800)].set_index("source")
    assert top.loc["clip-real", ["real_images", "synthetic_images"]].tolist() == [800, 0]
    assert top.loc["clip-synthetic", ["real_images", "synthetic_images"]].tolist() == [0, 800]
    assert top.loc["clip-mixed", ["real_images", "synthetic_images"]].tolist() == [800, 800]
    assert (s.n_eval[s.eval_set == "val"] == 500).all() and (s.loss > 0).all()
    # the three sources at one scale train on the same captions; smaller scales inside larger ones
    real, syn, mixed = (_subset_keys(w, st) for st in top.train_stage)
    assert real[0] == syn[0] == mixed[0] == mixed[1] and len(real[0]) == 800
    small = _subset_keys(w, s[(s.source == "clip-real") & (s.scale == 200)].train_stage.iloc[0])[0]
    assert set(small) < set(real[0])
    # synthetic pairs: one image per real caption, under the real pair's key, with its caption as prompt
    gen = [p for p in (w / "stages" / "generate").iterdir() if (p / "manifest.parquet").exists()]
    pairs = [p for p in (w / "stages" / "pairs").iterdir() if (p / "manifest.parquet").exists()]
    g, r = pd.read_parquet(gen[0] / "manifest.parquet"), pd.read_parquet(pairs[0] / "manifest.parquet")
    assert len(g) == len(r) == 800 and g.key.tolist() == r.key.tolist() and g.caption.tolist() == r.caption.tolist()
    assert (g.prompt == g.caption).all() and (g.guidance_scale == 1.5).all() and (g.label == r.label).all()
    # one zero-shot head per model, shared by the sets of the same classes
    assert len(list((w / "stages" / "zeroshot").glob("*/head.safetensors"))) == 9
    fits = pd.read_parquet(res / "fits.parquet")
    assert set(fits.task) == {"clip"} and len(fits) == 6 and (fits.d_ref == 800).all()
    assert (fits.loss_at_max_lo <= fits.loss_at_max).all() and (fits.loss_at_max <= fits.loss_at_max_hi).all()
    html = (w / "report" / "index.html").read_text()
    assert 'id="fig-8"' in html and 'id="table-1"' in html and 'id="clip-fits"' in html
    assert "CLIP, zero-shot on the real test set" in html
    # a second run finds every stage complete
    before = {p: p.stat().st_mtime_ns for p in (w / "stages").rglob("model.safetensors")}
    assert main(args) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (w / "stages").rglob("model.safetensors")}
    # one CLIP by hand on the pair set, at a scale of its captions, mixed with the synthetic pairs
    out = tmp_path / "one"
    assert main(["train", str(pairs[0]), str(gen[0]), "--clip", "--mix-real-prob", "0.5", "--scale", "300", "--out", str(out),
                 "--set", "clip.train.schedule.epochs=1"]) == 0
    assert "trained synscale-clip-mini on 300 captions for 2 steps" in capsys.readouterr().out
    assert len(pd.read_parquet(out / "subset.parquet")) == 300  # the first 300 of the 800 pairs' caption order
    assert json.loads((out / "spec.json").read_text())["mix"] == {"real_prob": 0.5}


def _laion(root: Path, n: int, bad: dict[int, str] | None = None) -> None:
    """img2dataset-style shards: 28-px RGB images of bright (cat) or dark (dog) noise, captioned; `bad`: sample i of
    the first shard made "no caption", "unreadable image" or "latin-1" (a caption that is not UTF-8)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir()
    for s in range(2):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(n // 2):
                key, cat = f"{s:05d}{i:04d}", (i + s) % 2 == 0
                img = rng.integers(120, 255, (28, 28, 3)) if cat else rng.integers(0, 120, (28, 28, 3))
                buf = io.BytesIO()
                Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
                text = f"a {'bright cat' if cat else 'dark dog'} photo number {i}"
                png, txt = buf.getvalue(), text.encode()
                how = (bad or {}).get(i) if s == 0 else None
                png = png[:40] if how == "unreadable image" else png
                txt = b"" if how == "no caption" else "a café photo".encode("latin-1") if how == "latin-1" else txt
                for ext, data in (("png", png), ("txt", txt), ("json", b'{"status": "success"}')):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_clip_only_study_on_img2dataset_shards(tmp_path, capsys):
    """LAION's path with local stand-ins: pairs from a brace pattern of shards, a CLIP-only study (no
    classifier), zero-shot on an ImageFolder test split with its own class names."""
    from PIL import Image

    _laion(tmp_path / "laion", 120, bad={3: "no caption", 7: "unreadable image"})  # LAION is dirty
    for split, n in (("train", 2), ("test", 20)):
        for c, lo in (("cat", 120), ("dog", 0)):
            (tmp_path / "folders" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((28, 28, 3), lo + 60 + i, np.uint8)).save(tmp_path / "folders" / split / c / f"{i}.png")
    (tmp_path / "cats").mkdir()
    shutil.copytree(tmp_path / "folders" / "test" / "cat", tmp_path / "cats" / "cat")
    study = tmp_path / "laion.toml"
    study.write_text(f'''name = "laion-miniature"
scales = []
[data]
dataset = "imagefolder"
root = "{tmp_path / 'folders'}"
[[evaluate.sets]]
name = "cats-only"
root = "{tmp_path / 'cats'}"
[[evaluate.zero_shot]]
name = "zs-folders"
dataset = "imagefolder"
root = "{tmp_path / 'folders'}"
split = "train"
templates = "openai"
[[evaluate.probes]]
name = "folders"
root = "{tmp_path / 'folders'}"
[clip]
scales = [40, 80]
templates = "simple"
[clip.pairs]
dataset = "img2dataset"
root = "{tmp_path / 'laion'}/{{00000..00001}}.tar"
max_bad_fraction = 0.05
[clip.train]
recipe = "miniature-clip"
batch_size = 20
schedule.epochs = 2
[[clip.synthetic]]
name = "clip-sd"
model = "builtin:latent-diffusion"
steps = 2
batch_size = 40
[[clip.mix]]
name = "clip-sd+real"
synthetic = "clip-sd"
''')
    w = tmp_path / "w"
    assert main(["study", str(study), "--workdir", str(w), "--quiet"]) == 0
    everything = pd.read_parquet(w / "results" / "scaling.parquet")
    assert set(everything.eval_set) == {"val", "cats-only", "zs-folders", "probe:folders"} and len(everything) == 24
    assert (everything[everything.eval_set == "zs-folders"].n_eval == 4).all()  # a downstream set: its own split
    s = everything[everything.eval_set == "val"]
    assert set(s.source) == {"clip-real", "clip-sd", "clip-sd+real"} and len(s) == 6 and (s.n_eval == 40).all()
    # an OOD set of one class: its logits restricted to that class; a linear probe on the image tower's features
    cats = everything[everything.eval_set == "cats-only"]
    assert (cats.n_eval == 20).all() and (cats.top1 == 1).all() and (cats.loss.abs() < 1e-6).all()
    assert (everything[everything.eval_set == "probe:folders"].n_eval == 40).all()
    pairs = next(p.parent for p in (w / "stages" / "shards").glob("*/stage.json") if "img2dataset" in p.read_text())
    m = pd.read_parquet(pairs / "manifest.parquet")
    assert len(m) == 80 and (m.label == -1).all() and m.caption.str.startswith("a ").all()  # the first 80 good pairs
    assert "000000003" not in set(m.key) and m.key.iloc[-1] == "000010021"  # 2 skipped, so 2 more read
    skipped = pd.read_parquet(pairs / "skipped.parquet")
    assert skipped.reason.tolist() == ["no caption", "unreadable image"] and skipped['sample'].iloc[0].endswith("'000000003'")
    meta = json.loads((w / "results" / "meta.json").read_text())
    assert meta["skipped"]["real pairs"]["skipped"] == 2 and meta["skipped"]["real pairs"]["samples"] == 80
    report = (w / "report" / "index.html").read_text()
    assert "Samples skipped" in report and "real pairs: 2 of 82 samples (no caption: 1, unreadable image: 1)" in report
    gen = next((w / "stages" / "generate").glob("*/manifest.parquet")).parent
    assert pd.read_parquet(gen / "manifest.parquet").key.tolist() == m.key.tolist() and not (gen / "labels.json").exists()
    assert 'id="fig-8"' in (w / "report" / "index.html").read_text()
    # a cached set made under a larger budget is not reused under a smaller one
    strict = study.read_text().replace("max_bad_fraction = 0.05", "max_bad_fraction = 0.01")
    study.write_text(strict)
    assert main(["study", str(study), "--workdir", str(w), "--quiet"]) == 2
    assert "skipped 2 unreadable samples of 82, more than clip.pairs.max_bad_fraction = 0.01 allows" in capsys.readouterr().err
    bad = study.read_text().replace('root = "' + str(tmp_path / "laion"), 'root = "' + str(tmp_path / "nowhere"))
    study.write_text(bad)
    assert main(["study", str(study), "--workdir", str(tmp_path / "w2"), "--quiet"]) == 2
