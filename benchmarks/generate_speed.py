"""Sampling speed of the built-in text-to-image families, through the code path `synscale generate` runs
(DiffusersGenerator: 28x28 grayscale outputs, classifier-free guidance on, the family's default steps).

    .venv/bin/python benchmarks/generate_speed.py                       # default family, class-name prompts
    .venv/bin/python benchmarks/generate_speed.py --family pixel-diffusion --images 200
    .venv/bin/python benchmarks/generate_speed.py --prompts word2sen     # every prompt distinct

Prints images/s and its ratio to the target (100 images/s on a 2-core CPU for the default family). For the
masked-token family it also times the scheduler's own step image by image (the path before the batched step,
synscale.generate.masked) on the same prompts and seeds, checks the images are the same, and prints the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TARGET = 100.0


def main() -> None:
    import torch

    from synscale.data.datasets import FASHION_MNIST_CLASSES
    from synscale.generate import builtin
    from synscale.generate.diffusers_backend import DiffusersGenerator
    from synscale.labels import LabelSet
    from synscale.prompts.strategies import make_context, make_prompts

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default=builtin.DEFAULT_FAMILY, choices=builtin.FAMILIES.names())
    ap.add_argument("--weights", default=None, help="weights dir (default: the shipped ones)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=0, help="0: the family's default")
    ap.add_argument("--prompts", default="classname", help="prompt strategy (classname repeats 10 prompts)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = f"builtin:{args.family}" + (f"@{args.weights}" if args.weights else "")
    t0 = time.perf_counter()
    gen = DiffusersGenerator(model, steps=args.steps, resolution=28, channels=1)
    load_s = time.perf_counter() - t0
    ctx = make_context(LabelSet(FASHION_MNIST_CLASSES), "fashion-mnist")
    df = make_prompts(args.prompts, ctx, max(1, args.images // 10), 0)
    prompts, seeds = list(df.prompt)[: args.images], list(range(args.images))
    gen(prompts[:8], seeds[:8], args.guidance)  # warm-up (allocator, kernels); not timed

    def timed() -> tuple[float, list[np.ndarray]]:
        t0, out = time.perf_counter(), []
        for i in range(0, len(prompts), args.batch_size):
            imgs = gen(prompts[i : i + args.batch_size], seeds[i : i + args.batch_size], args.guidance)
            assert imgs.shape[1:] == (28, 28, 1) and imgs.dtype == np.uint8
            out.append(imgs)
        return time.perf_counter() - t0, out

    dt, images = timed()
    rate = len(prompts) / dt
    print(f"family {args.family}, {gen.steps} steps, guidance {args.guidance:g}, prompts {args.prompts}, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"pipeline load {load_s:.1f} s; {len(prompts)} images in {dt:.2f} s = {rate:.1f} images/s "
          f"({rate / TARGET:.2f}x the {TARGET:.0f} images/s target)")
    if getattr(gen, "_masked", None) is not None:  # the masked-token loop: its step batched against per image
        gen._masked.per_image_step = True
        before, old = timed()
        gen._masked.per_image_step = False
        same = all(np.array_equal(a, b) for a, b in zip(images, old, strict=True))
        print(f"masked-token scheduler step per image (before): {len(prompts) / before:.1f} images/s; batched: "
              f"{rate:.1f} images/s ({before / dt:.2f}x); the same images: {same}")


if __name__ == "__main__":
    main()
