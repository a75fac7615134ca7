"""Training input pipeline vs training step: does the GPU (or CPU) ever wait for images?

Through the code path every `train` stage runs (synscale.train: ShardSource -> StepBatches in DataLoader
workers -> train_classifier), on a set of random-content PNG shards it writes first (or `--set DIR`):

  1. loader      images/s of the input pipeline alone: read + decode + per-sample augmentation
                 (RandAugment, random crop, flip) in `--workers` processes, moved to the device;
  2. step        images/s of the training step alone on tensors already on the device (forward, loss,
                 backward, AdamW), the figure ENV-NOTES quotes for ViT-B/16 (3262 img/s compiled on an H100);
  3. end to end  images/s of train_classifier streaming from the shards.

It prints the three and the ratios loader/step and end-to-end/step (the goal: end to end >= 90% of step).

`--per-core` answers the GPU question on a CPU: one loader process (one core, one thread) reads the same
smooth-random 256-px images stored as PNG, as JPEG and as WebP (quality 95), and it prints per format the bytes per
image, the milliseconds per image of each part of the paper-vit-b16 recipe's loader (read + decode, the 224-px
crop and flip, RandAugment(2, 15)), the images/s per core and the cores an 8-GPU node needs to feed
ViT-B/16 at 3,262 images/s per GPU (the compiled rate measured on an H100).

    python benchmarks/train_speed.py --per-core             # 2,000 images per format

    python benchmarks/train_speed.py                        # CPU: the miniature-vit recipe on 28-px images
    python benchmarks/train_speed.py --gpu --images 20000 --workers 14 --compile   # paper-vit-b16 on 256 px
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="the paper-vit-b16 recipe on 256-px images (needs CUDA)")
    p.add_argument("--recipe", default=None, help="default: miniature-vit (CPU) / paper-vit-b16 (--gpu)")
    p.add_argument("--images", type=int, default=None, help="set size (default 4000 CPU / 20000 GPU)")
    p.add_argument("--size", type=int, default=None, help="image side (default 28 CPU / 256 GPU)")
    p.add_argument("--set", default=None, help="an existing synscale set to read instead of writing one")
    p.add_argument("--batch", type=int, default=None, help="per-step batch (default: 256 CPU / 512 GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 30 CPU / 60 GPU)")
    p.add_argument("--workers", type=int, default=None, help="loader worker processes (default 2 CPU / 14 GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="override the recipe's")
    p.add_argument("--model", default=None, help="another timm model than the recipe's (e.g. to time the loader "
                                                 "of the paper recipe on a CPU with a small network)")
    p.add_argument("--per-core", action="store_true", help="the loader's images/s per core, PNG against JPEG shards")
    args = p.parse_args()
    if args.per_core:
        per_core(args.images or 2000, args.size or 256)
        return

    import torch

    from synscale.config import ScheduleConfig, TrainConfig, from_dict
    from synscale.train.recipes import load_recipe

    gpu = args.gpu
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA")
    recipe = args.recipe or ("paper-vit-b16" if gpu else "miniature-vit")
    n = args.images or (20000 if gpu else 4000)
    size = args.size or (256 if gpu else 28)
    batch = args.batch or (512 if gpu else 256)
    steps = args.steps or (60 if gpu else 30)
    workers = args.workers if args.workers is not None else (14 if gpu else 2)
    table = {**load_recipe(recipe), "batch_size": batch, "accum_steps": 1, "workers": workers, "compile": args.compile,
             "loader": "stream", "checkpoint_every": 0}
    if args.model:
        table |= {"model": args.model, "model_kwargs": {}}
    if args.precision:
        table["precision"] = args.precision
    table["schedule"] = {"zero_scale": n // 2, "iters_per_doubling": steps + 2, "warmup_per_doubling": 1}
    cfg: TrainConfig = from_dict(TrainConfig, table, f"recipe {recipe}", "train.")
    device = torch.device("cuda" if gpu else "cpu")
    cfg = dataclasses.replace(cfg, device=device.type)
    print(f"recipe {recipe}: {cfg.model}, batch {batch}, crop {cfg.crop or size}, {cfg.precision}, "
          f"randaugment {cfg.randaugment}, {workers} workers, {'compiled' if cfg.compile else 'eager'}, on {device}",
          flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="synscale-train-bench-"))
    try:
        if args.set:
            set_dir = Path(args.set)
        else:
            from metrics_speed import write_random_set

            set_dir = tmp / "set"
            set_dir.mkdir()
            t0 = time.perf_counter()
            write_random_set(set_dir, n, size, max(1, min(workers, 16)))
            print(f"wrote {n:,} random {size}-px PNGs in {time.perf_counter() - t0:.1f} s", flush=True)
        run(cfg, set_dir, steps, device, ScheduleConfig)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


GPU_RATE = 3262.0  # ViT-B/16 images/s on one H100, compiled (docs/training.md)
GPUS = 8


def per_core(n: int, size: int) -> None:
    """One loader core, PNG against JPEG-95 shards of the same images: each part of the loader's time per image."""
    import torch

    from metrics_speed import write_random_set

    from synscale.data.encoding import ImageEncoding
    from synscale.train.data import ShardSource
    from synscale.train.recipes import load_recipe

    torch.set_num_threads(1)
    recipe = load_recipe("paper-vit-b16")
    crop, ra = recipe.get("crop", 224), tuple(recipe.get("randaugment", (2, 15)))
    tmp = Path(tempfile.mkdtemp(prefix="synscale-loader-bench-"))
    print(f"one loader process, one thread; {n:,} smooth-random {size}-px RGB images per format; paper-vit-b16's "
          f"loader: crop {crop}, flip, RandAugment{ra}", flush=True)
    rows = {}
    try:
        for fmt in ("png", "jpeg", "webp"):
            d = tmp / fmt
            d.mkdir()
            write_random_set(d, n, size, 2, ImageEncoding(fmt, 95))
            src = ShardSource([(d, None)])
            kb = sum(p.stat().st_size for p in d.glob("*.tar")) / len(src) / 1024
            rows[fmt] = {"kb": kb, **_loader_parts(src, crop, ra)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = f"{'format':<8}{'KB/image':>10}{'decode ms':>11}{'crop+flip':>11}{'RandAug':>9}"
    print(head + f"{'RandAugment in the loader':>30}{'RandAugment on the device':>30}")
    print(" " * len(head) + f"{'img/s/core':>15}{'cores, ' + str(GPUS) + ' GPUs':>15}" * 2)
    ips = {}
    for fmt, r in rows.items():
        loader = 1000 / (r["decode"] + r["crop_flip"] + r["randaugment"])
        device = 1000 / (r["decode"] + r["crop_flip"])
        ips[fmt] = (loader, device)
        print(f"{fmt:<8}{r['kb']:>10.1f}{r['decode']:>11.2f}{r['crop_flip']:>11.2f}{r['randaugment']:>9.2f}"
              f"{loader:>15.0f}{GPUS * GPU_RATE / loader:>15.0f}{device:>15.0f}{GPUS * GPU_RATE / device:>15.0f}")
    base = ips["png"][0]
    print(f"against today's loader (PNG, RandAugment in the loader, {base:.0f} img/s/core): JPEG {ips['jpeg'][0] / base:.2f}x, "
          f"PNG + device RandAugment {ips['png'][1] / base:.2f}x, JPEG + device RandAugment {ips['jpeg'][1] / base:.2f}x")
    raw = size * size * 3 / 1024
    for fmt in ("jpeg", "webp"):
        print(f"{fmt.upper()}/PNG bytes {rows[fmt]['kb'] / rows['png']['kb']:.2f}x, decode "
              f"{rows['png']['decode'] / rows[fmt]['decode']:.2f}x faster")
    print("bytes over raw pixels: " + ", ".join(f"{fmt} {r['kb'] / raw:.3f}" for fmt, r in rows.items()))
    _order_cost(64_000_000, 4096)
    batch_ms = _device_randaugment_ms(crop, ra)
    print(f"RandAugment on the device, here the CPU (batch of 256 {crop}-px images, {torch.get_num_threads()} thread): "
          f"{batch_ms:.2f} ms per image of the training process's time")


def _order_cost(n: int, batch: int, steps: int = 20) -> None:
    """Seconds a loader process spends on a step's data order at n samples: the permutation every step (before
    EpochOrder) against each epoch's permutation once (EpochOrder), amortized over the epoch's n / batch steps."""
    import numpy as np

    from synscale.train.data import EpochOrder, batch_indices

    t0 = time.perf_counter()
    before = batch_indices(n, batch, 0, 0).numpy()
    every_step = time.perf_counter() - t0
    order = EpochOrder(n, batch, 0)
    t0 = time.perf_counter()
    first = order.indices(0)
    once = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        order.indices(s)
    per_step = (time.perf_counter() - t0) / steps
    assert np.array_equal(first, before)
    amortized = once / order.per_epoch + per_step
    print(f"data order at {n / 1e6:.0f}M samples, batch {batch:,}: {every_step:.2f} s every step recomputed (before); "
          f"EpochOrder {once:.2f} s once an epoch + {per_step * 1e3:.2f} ms a step = {amortized * 1e3:.2f} ms a step over "
          f"the epoch's {order.per_epoch:,} steps ({every_step / amortized:,.0f}x less)")


def _device_randaugment_ms(crop: int, ra: tuple[int, ...], batch: int = 256) -> float:
    """Milliseconds per image of synscale.train.randaugment on a batch in this process (the CPU: an upper bound
    of what a GPU spends)."""
    import numpy as np
    import torch

    from synscale.train.randaugment import rand_augment

    x = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8)
    seeds = np.arange(batch, dtype=np.uint64) * 7 + 1
    rand_augment(x, seeds, *ra)
    t0 = time.perf_counter()
    for rep in range(3):
        rand_augment(x, seeds + np.uint64(rep), *ra)
    return (time.perf_counter() - t0) / 3 / batch * 1000


def _loader_parts(src, crop: int, ra: tuple[int, ...], n: int = 400, repeats: int = 3) -> dict[str, float]:  # noqa: ANN001
    """Milliseconds per image of the loader's parts, through its own code (SampleAugment, ShardSource.get): the
    best of `repeats` passes over the same `n` images (the first pass also warms the caches and timm's op table)."""
    from synscale.train.data import SampleAugment

    n = min(n, len(src))
    cf, ra_only = SampleAugment((), crop, True), SampleAugment(ra, 0, False)

    def best(fn) -> float:  # noqa: ANN001
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - t0) / n * 1000)
        return min(times), out

    decode, images = best(lambda: [src.get(i) for i in range(n)])
    crop_flip, cropped = best(lambda: [cf(img, i) for i, img in enumerate(images)])
    randaugment, _ = best(lambda: [ra_only(img, i) for i, img in enumerate(cropped)])
    return {"decode": decode, "crop_flip": crop_flip, "randaugment": randaugment}


def run(cfg, set_dir: Path, steps: int, device, ScheduleConfig) -> None:  # noqa: ANN001, N803
    import numpy as np
    import torch

    from synscale.labels import LabelSet
    from synscale.train.classifier import normalize, train_classifier
    from synscale.train.data import SampleAugment, ShardSource, StepBatches, step_loader
    from synscale.train.models import create_model

    source = ShardSource([(set_dir, None)])
    n_cls = len(LabelSet.load(set_dir / "labels.json"))
    c, h, _ = source.shape
    side = cfg.crop or h
    in_loader = () if cfg.randaugment_on == "device" else tuple(cfg.randaugment)  # else in the end-to-end step
    batches = StepBatches(source, cfg.batch_size, cfg.seed, SampleAugment(in_loader, cfg.crop, cfg.augment == "flip"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # 1. the loader alone
    it = iter(step_loader(batches, 0, steps + 3, cfg.workers))
    for _ in range(3):  # workers start, first batches
        next(it)
    t0 = time.perf_counter()
    for xb, _ in it:
        normalize(xb.to(device, non_blocking=True))
    sync()
    loader = steps * cfg.batch_size / (time.perf_counter() - t0)
    print(f"{'loader (decode + augment + to device)':<42} {loader:10.0f} img/s  ({loader / max(1, cfg.workers):.0f} per worker)",
          flush=True)

    # 2. the step alone, on device tensors
    torch.manual_seed(0)
    model = create_model(cfg.model, n_cls, c, side, **cfg.model_kwargs).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    net = torch.compile(model) if cfg.compile else model
    x = torch.randn(cfg.batch_size, c, side, side, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.nn.functional.one_hot(torch.randint(0, n_cls, (cfg.batch_size,), device=device), n_cls).float()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def step() -> None:
        with amp:
            out = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5 if cfg.compile else 3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    step_ips = steps * cfg.batch_size / (time.perf_counter() - t0)
    del model, opt, net

    # 3. end to end: train_classifier streaming from the shards (its images/s excludes the first step)
    scale = len(source)
    r = train_classifier(None, None, n_cls, cfg, scale, source=source)
    e2e = r.images_per_s
    print(f"{'training step (device tensors)':<42} {step_ips:10.0f} img/s")
    print(f"{'end to end (train_classifier, ' + str(r.steps) + ' steps)':<42} {e2e:10.0f} img/s")
    print(f"loader / step = {loader / step_ips:.2f}   end to end / step = {e2e / step_ips:.2f}"
          f"   ({'the step waits for data' if e2e < 0.9 * step_ips else 'the loader keeps up'})")
    print(f"(train losses: {np.round(r.losses, 3).tolist()})")


if __name__ == "__main__":
    main()
