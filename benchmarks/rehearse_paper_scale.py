"""A rehearsal of the paper's two grids at their real counts, with tiny models and tiny images, on a CPU.

The defects that would wreck a GPU run of `studies/imagenet-sd.toml` or `studies/laion-clip.toml` show at real
counts, not real sizes. This runs their structure through synscale's own code paths and prints what it measured:

  grid      studies/imagenet-sd.toml's structure: 1,000 classes of 8-px images, the real training split in 1,500
            shards streamed by the loader, a grid
            of the three families as the study names them: Stable Diffusion (its safety checker kept, set to flag
            a share of the images: they are generated again), in-captions from an image-to-text captioner (a
            stage of its own), DeepFloyd IF's cascade (stage I + stage II) and Muse's guidance convention (0.3 =
            diffusers' 1.3); run by the Ray executor on a local instance that declares GPUs (each GPU stage in a
            process of its own). Real diffusers pipelines and a real captioner with tiny configs.
  captions  studies/laion-clip.toml's data path: a pair set of --captions captions (default 2,000,000) in shards of
            1,000 (2,000 shards: past a 1,024 open-file limit), its nested caption subset, the loader index built
            once (time, peak memory), and CLIP trained on it for two epochs by torchrun with 2 gloo ranks, which
            memory-map the index (each rank's anonymous memory measured while it runs); the caption-token cache
            (65,536) is smaller than the captions.

Figures are per million captions where that is what scales, with the extrapolation to LAION-400M's 371M.

    python benchmarks/rehearse_paper_scale.py                     # both parts (~15 min on 2 cores)
    python benchmarks/rehearse_paper_scale.py captions --captions 2000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_pipelines: real diffusers pipelines with tiny configs
LAION = 371_000_000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", nargs="?", choices=("all", "grid", "captions"), default="all")
    p.add_argument("--captions", type=int, default=2_000_000, help="pairs in the caption set (>= 2M for the rehearsal)")
    p.add_argument("--classes", type=int, default=1000, help="classes of the grid's label set")
    p.add_argument("--epochs", type=float, default=2.0, help="CLIP epochs over the caption set (0: measure the data "
                   "path only)")
    p.add_argument("--workdir", default=None, help="keep everything here (default: a temporary directory, removed)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="synscale-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, {_machine()}"}
    try:
        if args.part in ("all", "grid"):
            out["grid"] = rehearse_grid(work / "grid", args.classes)
        if args.part in ("all", "captions"):
            out["captions"] = rehearse_captions(work / "captions", args.captions, args.epochs)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def _machine() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


# ---------------------------------------------------------------------------------------------------
# The supervised grid's structure


GRID_STUDY = """name = "rehearsal-imagenet-sd"
scales = [{n2}]
[models]
sd = "{sd}"
imagen = "{imagen}"
imagen_ii = "{imagen_ii}"
muse = "{muse}"
captioner = "hf:{captioner}"
[data]
dataset = "imagefolder"
root = "{root}"
test_split = "val"
shard_size = 2
scales = [{n1}, {n2}]
[train]
batch_size = 100
loader = "stream"
schedule = {{ zero_scale = {n0}, iters_per_doubling = 4, warmup_per_doubling = 1 }}
[metrics]
per_class = 1
names = ["recognizability", "diversity", "fd"]
[fit]
bootstrap = 20
saturating_bootstrap = 0
[generation]
steps = 2
batch_size = 100
shard_size = 1000
[[synthetic]]
name = "sd-classname-cfg2"
model = "${{models.sd}}"
strategy = "classname"
guidance = 2
safety_checker = true
[[synthetic]]
name = "sd-incaptions-cfg2"
model = "${{models.sd}}"
strategy = "in-captions"
guidance = 2
captioner = "${{models.captioner}}"
[[synthetic]]
name = "imagen-incaptions-cfg1.5"
model = "${{models.imagen}}"
strategy = "in-captions"
guidance = 1.5
captioner = "${{models.captioner}}"
pipeline_kwargs = {{ clean_caption = false }}
[[synthetic.upscale]]
model = "${{models.imagen_ii}}"
guidance = 4
steps = 2
[[synthetic]]
name = "muse-incaptions-cfg0.3"
model = "${{models.muse}}"
strategy = "in-captions"
guidance = 0.3
guidance_convention = "muse"
captioner = "${{models.captioner}}"
"""


def _imagefolder(root: Path, classes: int) -> None:
    """`classes` classes of 8-px RGB images: 3 per class for training, 1 for validation, each class its own colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        base = rng.integers(0, 256, 3)
        for split, n in (("train", 3), ("val", 1)):
            d = root / split / f"class{c:04d}"
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(base + rng.integers(-20, 21, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")


def _models(d: Path) -> dict[str, Path]:
    """Tiny real pipelines: SD with a safety checker set to flag about a third of its images (calibrated on them),
    IF stage I and stage II, aMUSEd, and an image-to-text captioner."""
    import torch

    from tiny_pipelines import (tiny_amused, tiny_deepfloyd_if, tiny_if_superresolution, tiny_image_captioner,
                                tiny_stable_diffusion)

    from safetensors.torch import load_file, save_file

    from synscale.generate.diffusers_backend import DiffusersGenerator
    from synscale.generate.safety import SafetyChecker

    sd = tiny_stable_diffusion(d / "sd", safety="all")
    images = DiffusersGenerator(str(sd), steps=2)([f"class{i:04d}" for i in range(60)], list(range(60)), 2.0)
    checker = SafetyChecker.load(str(sd), torch.float32, "cpu")
    with torch.no_grad():  # its first concept's threshold set so that a sixth of these images flag (the others never)
        pixels = checker.feature_extractor(list(images), return_tensors="pt").pixel_values
        emb = checker.module.visual_projection(checker.module.vision_model(pixels)[1])
        emb, concept = emb / emb.norm(dim=1, keepdim=True), checker.module.concept_embeds[:1]
        cos = (emb @ (concept / concept.norm(dim=1, keepdim=True)).T).flatten().sort().values
    state = load_file(str(sd / "safety_checker" / "model.safetensors"))
    state["concept_embeds_weights"][:] = 10.0
    state["concept_embeds_weights"][0] = float((cos[49] + cos[50]) / 2)
    save_file(state, str(sd / "safety_checker" / "model.safetensors"))
    return {"sd": sd, "imagen": tiny_deepfloyd_if(d / "if"), "imagen_ii": tiny_if_superresolution(d / "if-ii"),
            "muse": tiny_amused(d / "muse"), "captioner": tiny_image_captioner(d / "captioner")}


def rehearse_grid(work: Path, classes: int) -> dict[str, Any]:
    """The supervised grid's structure at `classes` classes, run by the Ray executor with 2 declared GPUs."""
    import ray

    from synscale.cli import main as synscale

    work.mkdir(parents=True, exist_ok=True)
    _imagefolder(work / "imagenet", classes)
    models = _models(work / "models")
    study = work / "study.toml"
    study.write_text(GRID_STUDY.format(root=work / "imagenet", n0=classes // 2, n1=classes, n2=2 * classes,
                                       **{k: str(v) for k, v in models.items()}))
    t0 = time.time()
    ray.init(num_cpus=os.cpu_count(), num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        code = synscale(["study", str(study), "--workdir", str(work / "w"), "--executor", "ray", "--quiet"])
    finally:
        ray.shutdown()
    if code:
        raise SystemExit(f"the grid rehearsal failed (exit {code}); see {work / 'w' / 'plan'}")
    return _grid_figures(work / "w", classes, time.time() - t0)


def _grid_figures(w: Path, classes: int, seconds: float) -> dict[str, Any]:
    import pandas as pd

    gen = pd.read_parquet(w / "results" / "generation.parquet").set_index("config")
    nodes = [json.loads(p.read_text()) for p in (w / "plan" / "nodes").glob("*.json")]
    plan = {n["key"]: n for n in json.loads((w / "plan" / "plan.json").read_text())["nodes"]}
    on_gpu = [n for n in nodes if plan[n["key"]]["needs"]["gpus"] > 0]
    per_class = pd.read_parquet(w / "results" / "per_class.parquet")
    train = next(p for p in (w / "stages" / "shards").iterdir() if (p / "stage.json").exists()
                 and json.loads((p / "stage.json").read_text())["params"]["split"] == "train")
    return {"classes": classes, "real_train_shards": len(list(train.glob("shard-*.tar"))), "seconds": round(seconds, 1),
            "stages": len(nodes), "gpu_stages": len(on_gpu), "gpu_stage_processes": len({n["pid"] for n in on_gpu}),
            "gpu_ids": sorted({n["gpus"] for n in on_gpu}),
            "safety_regenerated": {c: int(gen.loc[c, "safety_regenerated"]) for c in gen.index},
            "guidance_convention": gen["guidance_convention"].to_dict(),
            "generators": gen["generator"].to_dict(), "per_class_rows": len(per_class),
            "caption_pools": len([p for p in (w / "stages" / "captions").iterdir() if not p.name.startswith(".")])}


# ---------------------------------------------------------------------------------------------------
# The CLIP grid's data path


def _manifest(set_dir: Path) -> Any:
    from synscale.data.shards import manifest_table

    return manifest_table(set_dir, ["key"])


def _pairs(out: Path, n: int) -> float:
    """A pair set of `n` 14-px grayscale images with LAION-like captions (~60 characters), in shards of 1,000."""
    import numpy as np

    from synscale.data.shards import ShardWriter

    words = ("a photo of the red blue small large old new dog cat car tree house river on with near bright dark "
             "street beach mountain city").split()
    rng = np.random.default_rng(0)
    t = time.time()
    img = np.zeros((14, 14), np.uint8)
    with ShardWriter(out, None, shard_size=1000, cache_arrays=False) as w:
        for i in range(n):
            img[i % 14, (i // 14) % 14] = i % 251
            caption = " ".join(words[j] for j in rng.integers(0, len(words), 8)) + f" no. {i}"
            w.write(f"{i:09d}", img, -1, {"caption": caption})
    return time.time() - t


def _measured(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh Python (the figures of one step alone): its printed JSON, wall seconds, peak RSS above
    the interpreter and its imports."""
    t = time.time()
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "seconds": round(time.time() - t, 1)}


STEP = """
import json, sys, time
from pathlib import Path
def rss(field="VmRSS"):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field + ":")).split()[1]) / 1024
def anonymous():
    return int(next(l for l in open("/proc/self/smaps_rollup") if l.startswith("Anonymous:")).split()[1]) / 1024
import numpy, pandas, pyarrow, pyarrow.parquet as pq, pyarrow.compute
from synscale.data import index, pairs, shards
{imports}
base, anon = rss(), anonymous()
if __name__ == "__main__":
    t = time.time()
    {body}
    print(json.dumps({{"step_seconds": round(time.time() - t, 2),
                      "peak_mb": round(rss("VmHWM") - base),
                      "anonymous_mb": round(anonymous() - anon)}}))
"""

SUBSET = """keys = pairs.caption_subset(shards.manifest_table(Path(sys.argv[1]), ["key"]), int(sys.argv[2]), 0)
    pq.write_table(pyarrow.table({"key": keys}), Path(sys.argv[3]))"""
TAR_INDEX = """(Path(sys.argv[1]) / "tar_index.parquet").unlink(missing_ok=True); index.tar_index(Path(sys.argv[1]))"""
BUILD = """index.build_index([(Path(sys.argv[1]), sys.argv[2])]).save(Path(sys.argv[3]))"""
# what a rank's loader holds: the memory-mapped index, 50 steps of 4,096 captions read with their tokens and images
LOADER_IMPORTS = """from synscale.train.clip import CaptionTokens
from synscale.train.data import SampleAugment, ShardSource, StepBatches"""
LOADER = """src = ShardSource(index=index.LoaderIndex.load(Path(sys.argv[1])))
    batches = StepBatches(src, 4096, 0, SampleAugment(), targets=CaptionTokens("synscale-clip-mini"))
    for step in range(0, 50 * max(1, len(src) // 4096 // 50), max(1, len(src) // 4096 // 50)):
        batches[step]"""


def _step(body: str, *args: str, imports: str = "") -> dict[str, Any]:
    return _measured(STEP.format(body=body, imports=imports), *args)


def rehearse_captions(work: Path, n: int, epochs: float) -> dict[str, Any]:
    """Write the pair set, then each step of a CLIP run on it alone, measured at n and n / 2 captions (per million:
    the difference, so that what does not grow with the captions is left out), and CLIP trained on all of it."""
    work.mkdir(parents=True, exist_ok=True)
    pairs = work / "pairs"
    if (pairs / "manifest.parquet").exists() and len(_manifest(pairs)) == n:
        write_s = float("nan")  # a --workdir that holds the set already
    else:
        shutil.rmtree(pairs, ignore_errors=True)
        write_s = _pairs(pairs, n)
    tar = _step(TAR_INDEX, str(pairs))  # first: the builds below read the set's cached tar index
    at: dict[str, dict[str, Any]] = {}
    for label, scale in (("half", n // 2), ("full", n)):
        sub, idx = work / f"subset-{label}.parquet", work / f"index-{label}"
        shutil.rmtree(idx, ignore_errors=True)
        at[label] = {"subset": _step(SUBSET, str(pairs), str(scale), str(sub)),
                     "build_index": _step(BUILD, str(pairs), str(sub), str(idx)),
                     "loader": _step(LOADER, str(idx), imports=LOADER_IMPORTS)}
    train = _train(work, pairs, epochs) if epochs else {"index_mb": sum(
        f.stat().st_size for f in (work / "index-full").iterdir()) / 2**20}
    per_m = (n - n // 2) / 1e6
    slope = {f"{step}_{what}": round((at["full"][step][k] - at["half"][step][k]) / per_m, 2)
             for step in ("subset", "build_index", "loader") for what, k in (("seconds", "step_seconds"),
                                                                              ("peak_mb", "peak_mb"))}
    slope["loader_anonymous_mb"] = round((at["full"]["loader"]["anonymous_mb"] - at["half"]["loader"]["anonymous_mb"])
                                         / per_m, 2)
    slope["tar_index_seconds"] = round(tar["step_seconds"] / (n / 1e6), 2)
    slope["tar_index_peak_mb"] = round(tar["peak_mb"] / (n / 1e6))
    slope["index_files_mb"] = round(train["index_mb"] / (n / 1e6), 1)
    return {"captions": n, "shards": len(list(pairs.glob("shard-*.tar"))), "write_seconds": round(write_s, 1),
            "at": at, "tar_index": tar, "train": train, "per_million": slope,
            "at_371M": {k.replace("_mb", "_gb").replace("_seconds", "_minutes"):
                        round(v * LAION / 1e6 / (1024 if k.endswith("_mb") else 60), 1) for k, v in slope.items()}}


def _train(work: Path, pairs: Path, epochs: float) -> dict[str, Any]:
    """CLIP on the whole set for `epochs` by `synscale train --clip --nproc 2` (gloo on the CPU), under an open-file
    limit below the set's shards; each rank's anonymous memory sampled while it runs."""
    out = work / "clip"
    cmd = [sys.executable, "-m", "synscale", "train", str(pairs), "--clip", "--out", str(out), "--nproc", "2",
           "--set", "clip.train.batch_size=4096", "--set", f"clip.train.schedule.epochs={epochs}",
           "--set", "clip.train.schedule.warmup_by_scale=[[0, 20]]", "--set", "clip.train.loader=stream",
           "--set", "clip.train.workers=0", "--set", "clip.train.checkpoint_every=0",
           "--set", "clip.train.tensorboard=false", "--set", "clip.train.model_kwargs={force_image_size=14}"]
    shards = len(list(pairs.glob("shard-*.tar")))
    limit = min(1024, shards - 1)
    t = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, max((_anonymous(pid) for pid in _ranks(str(out / "spec.json"))), default=0.0))
        time.sleep(1.0)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(stderr[-3000:])
    meta = json.loads((out / "train.json").read_text())
    index_mb = sum(f.stat().st_size for f in (out / "loader-index-0").iterdir()) / 2**20
    return {"seconds": round(time.time() - t, 1), "steps": meta["steps"], "processes": meta["processes"],
            "images_per_s": round(meta["images_per_s"]), "open_file_limit": limit, "shards": shards,
            "rank_anonymous_mb": round(peak), "index_mb": round(index_mb), "final_loss": round(meta["loss_curve"][-1], 3)}


def _ranks(marker: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "synscale.train.launch" in cmd and marker in cmd and "torch.distributed.run" not in cmd:
                out.append(int(p.name))
    return out


def _anonymous(pid: int) -> float:
    """A process's anonymous memory (MB): what it holds itself, not the pages of files it maps."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


if __name__ == "__main__":
    main()
