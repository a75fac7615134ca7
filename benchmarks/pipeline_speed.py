"""synscale's generate path against the diffusers pipeline as commonly used and as tuned by hand, on the paper's
architectures with random weights (benchmarks/architectures.py: Stable Diffusion 1.5, aMUSEd-256, DeepFloyd IF
stage I), end to end: prompt encoding, sampling, decoding, PNG encoding and writing.

  plain     the pipeline as commonly used: `pipe(prompts, generator=...)` in half precision on a GPU (float32
            on a CPU), batch 8, each returned PIL image saved as a PNG file (aMUSEd: one generator per call);
  tuned     the pipeline tuned by hand: bfloat16 on a GPU, batch 64, channels-last, torch.compile of the
            denoiser and of the decoder, NumPy output, PNG files (on a CPU: float32, and `--batch`);
  per-image aMUSEd only: one pipeline call per image (its pipeline takes one random generator per call, so
            this is how each image gets its own seed without synscale's batched loop);
  synscale  `generate_set` with the device's defaults (synscale.generate.tuning), writing shards + manifest.
  step-per-image, step-batched
            aMUSEd only: synscale's masked-token loop alone (no writing), its scheduler step taken image by image
            (the loop before its step was batched) and once per sampling step for the batch (today's); the
            two must give the same images, and their ratio is the batched step's gain.

Every mode warms up on one batch first (loading and compiling are not timed) and then generates the same
`--images` prompts (class-name prompts over 100 classes) with guidance. Prints images/s per mode and the
ratios to `plain` and to `tuned`.

    .venv/bin/python benchmarks/pipeline_speed.py --arch sd15                  # CPU: 64 px, 4 steps, 16 images
    .venv/bin/python benchmarks/pipeline_speed.py --arch amused                # + per-image
    .venv/bin/python benchmarks/pipeline_speed.py --arch if
    .venv/bin/python benchmarks/pipeline_speed.py --arch sd15 --images 1024    # GPU: 256 px, 50 steps
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

GPU = {"sd15": {"size": 256, "steps": 50}, "amused": {"size": 256, "steps": 12}, "if": {"size": 64, "steps": 50}}
CPU = {"sd15": {"size": 64, "steps": 4}, "amused": {"size": 64, "steps": 4}, "if": {"size": 32, "steps": 4}}


def prompts_and_seeds(n: int, first: int = 0) -> tuple[list[str], list[int]]:
    """Class-name prompts over 100 classes; the warm-up batch takes other classes (`first` = 100), so that the
    timed run encodes each of its prompts once, as a whole run does."""
    return [f"a photo of a class-{first + i % 100} object" for i in range(n)], list(range(n))


def save_pngs(images, out: Path, start: int) -> None:
    from PIL import Image

    for i, img in enumerate(images):
        img = img if isinstance(img, Image.Image) else Image.fromarray((img * 255).round().clip(0, 255).astype("uint8"))
        img.save(out / f"{start + i:08d}.png")


def run_pipeline(pipe, args, prompts, seeds, batch: int, out: Path, per_generator: bool, output_type: str) -> float:
    """Images/s of calling the pipeline in batches of `batch` and saving PNG files (after one warm-up batch)."""
    import torch

    dev = pipe.device

    def call(ps, ss):
        gens = [torch.Generator(dev).manual_seed(s) for s in ss]
        size = {"height": args.size, "width": args.size} if args.arch != "amused" else {}
        return pipe(prompt=ps, num_inference_steps=args.steps, guidance_scale=args.guidance, output_type=output_type,
                    generator=gens if per_generator else gens[0], **size).images

    call(*prompts_and_seeds(batch, 100))  # warm-up: allocator, kernels, compilation
    sync(dev)
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        save_pngs(call(prompts[i : i + batch], seeds[i : i + batch]), out, i)
    sync(dev)
    return len(prompts) / (time.perf_counter() - t0)


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def load(path: Path, dtype, device: str):
    import torch
    from synscale.generate.diffusers_backend import load_pipeline

    pipe = load_pipeline(str(path), getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def mode_plain(args, path, prompts, seeds, out) -> float:
    pipe = load(path, "float16" if args.device == "cuda" else "float32", args.device)
    return run_pipeline(pipe, args, prompts, seeds, 8, out, args.arch != "amused", "pil")


def mode_tuned(args, path, prompts, seeds, out) -> float:
    from synscale.generate.tuning import tune_pipeline

    gpu = args.device == "cuda"
    pipe = load(path, "bfloat16" if gpu else "float32", args.device)
    tune_pipeline(pipe, compile=True, channels_last=True)
    return run_pipeline(pipe, args, prompts, seeds, 64 if gpu else args.batch, out, args.arch != "amused", "np")


def mode_per_image(args, path, prompts, seeds, out) -> float:
    pipe = load(path, "float16" if args.device == "cuda" else "float32", args.device)
    return run_pipeline(pipe, args, prompts, seeds, 1, out, False, "pil")


def mode_synscale(args, path, prompts, seeds, out) -> float:
    import pandas as pd

    from synscale.generate.runner import GeneratorSpec, generate_set
    from synscale.generate.tuning import generation_device, resolve

    tuned = resolve({"dtype": "auto", "batch_size": args.batch if args.device == "cpu" else 0, "compile": "auto",
                     "channels_last": "auto"}, generation_device())
    spec = GeneratorSpec("diffusers", {"model": str(path), "steps": args.steps, **tuned,
                                       "height": None if args.arch == "amused" else args.size,
                                       "width": None if args.arch == "amused" else args.size})
    gen = spec.build()
    gen(*prompts_and_seeds(tuned["batch_size"], 100), args.guidance)  # warm-up (other prompts: none cached)
    df = pd.DataFrame({"index": range(len(prompts)), "class_index": -1, "prompt": prompts, "strategy": "classname",
                       "seed": seeds})
    t0 = time.perf_counter()
    generate_set(spec, df, None, out, args.guidance, tuned["batch_size"], shard_size=1000, progress=False)
    return len(prompts) / (time.perf_counter() - t0)


def _masked_loop(args, path, prompts, seeds, per_image_step: bool) -> float:
    import numpy as np

    from synscale.generate.runner import GeneratorSpec
    from synscale.generate.tuning import generation_device, resolve

    tuned = resolve({"dtype": "auto", "batch_size": args.batch if args.device == "cpu" else 0, "compile": "auto",
                     "channels_last": "auto"}, generation_device())
    gen = GeneratorSpec("diffusers", {"model": str(path), "steps": args.steps, **tuned}).build()
    gen._masked.per_image_step = per_image_step
    b = tuned["batch_size"]
    gen(*prompts_and_seeds(b, 100), args.guidance)  # warm-up
    t0 = time.perf_counter()
    images = [gen(prompts[i : i + b], seeds[i : i + b], args.guidance) for i in range(0, len(prompts), b)]
    rate = len(prompts) / (time.perf_counter() - t0)
    _MASKED_IMAGES[per_image_step] = np.concatenate(images)
    return rate


_MASKED_IMAGES: dict[bool, object] = {}


def mode_step_per_image(args, path, prompts, seeds, out) -> float:
    return _masked_loop(args, path, prompts, seeds, True)


def mode_step_batched(args, path, prompts, seeds, out) -> float:
    return _masked_loop(args, path, prompts, seeds, False)


MODES = {"plain": mode_plain, "tuned": mode_tuned, "per-image": mode_per_image, "synscale": mode_synscale,
         "step-per-image": mode_step_per_image, "step-batched": mode_step_batched}


def main() -> None:
    import torch

    from architectures import pipeline_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=("sd15", "amused", "if"), default="sd15")
    ap.add_argument("--modes", default=None, help="comma-separated (default: plain,tuned,synscale; aMUSEd adds per-image)")
    ap.add_argument("--images", type=int, default=None, help="default: 512 on a GPU, 16 on a CPU")
    ap.add_argument("--size", type=int, default=None, help="generation size (default: GPU 256 px, 64 for IF; CPU smaller)")
    ap.add_argument("--steps", type=int, default=None, help="default: GPU 50 (aMUSEd 12); CPU 4")
    ap.add_argument("--batch", type=int, default=16, help="the CPU batch of `tuned` and `synscale` (GPU: 64)")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--pipelines", default=str(Path(tempfile.gettempdir()) / "synscale-bench-pipelines"),
                    help="where the random-weight pipelines are built once")
    args = ap.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    preset = (GPU if args.device == "cuda" else CPU)[args.arch]
    args.size, args.steps = args.size or preset["size"], args.steps or preset["steps"]
    args.images = args.images or (512 if args.device == "cuda" else 16)
    modes = (args.modes or ("plain,per-image,tuned,synscale,step-per-image,step-batched" if args.arch == "amused"
                            else "plain,tuned,synscale")).split(",")

    if args.arch == "amused" and args.size not in (64, 256):
        raise SystemExit("aMUSEd samples at 256 px (or 64 px: the same layers on 4 x 4 tokens)")
    path = pipeline_dir(args.arch, args.pipelines, args.size)
    prompts, seeds = prompts_and_seeds(args.images)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    print(f"{args.arch}: {args.size} px, {args.steps} steps, guidance {args.guidance:g}, {args.images} images; {dev}; "
          f"torch {torch.__version__}")
    rates = {}
    for mode in modes:
        out = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
        try:
            rates[mode] = MODES[mode](args, path, prompts, seeds, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(f"  {mode:>14}: {rates[mode]:8.2f} images/s", flush=True)
    for base in ("plain", "per-image", "tuned"):
        if base in rates and "synscale" in rates:
            print(f"  synscale / {base}: {rates['synscale'] / rates[base]:.2f}x")
    if "step-per-image" in rates and "step-batched" in rates:
        import numpy as np

        same = np.array_equal(_MASKED_IMAGES[True], _MASKED_IMAGES[False])
        print(f"  masked-token step batched / per image: {rates['step-batched'] / rates['step-per-image']:.2f}x "
              f"(the same images: {same})")


if __name__ == "__main__":
    main()
