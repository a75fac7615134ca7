"""Feature-extraction speed of the metrics, through the code path `synscale metrics` runs
(synscale.metrics.features: a set on disk -> reference network -> pre-logit features and logits).

CPU (the miniature): the 10,000 real Fashion-MNIST test images through the study's reference CNN.

    .venv/bin/python benchmarks/metrics_speed.py                 # target: 10k 28x28 images in <= 20 s

It times (1) the network alone on in-memory images, (2) extraction from the set's decoded-array cache,
(3) extraction streamed from the PNG shards in DataLoader workers, and (4) the cached `features` stage
(extract + write), and prints seconds, images/s and the ratio to the target.

GPU (the paper's scale): N random-content 256-px RGB images written as shards, read through a ViT-B/16
(random weights from a local safetensors checkpoint; the same cost as pretrained ones) under bf16
autocast, optionally compiled:

    python benchmarks/metrics_speed.py --gpu --images 50000 --size 256 --arch vit_base_patch16_224 --compile
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_S = 20.0  # seconds for 10k 28x28 images on the 2-core CPU


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def report(what: str, n: int, secs: float, target: float | None = None) -> None:
    ratio = f"  ({target / secs:.1f}x the target's speed)" if target else ""
    print(f"{what:<46} {secs:8.2f} s  {n / secs:10.0f} img/s{ratio}", flush=True)


def cpu(args: argparse.Namespace) -> None:
    import torch

    from synscale.data.datasets import create_dataset
    from synscale.data.shards import write_dataset_split
    from synscale.metrics.features import Reference, extract, feature_stage
    from synscale.train.models import create_model

    tmp = Path(tempfile.mkdtemp(prefix="synscale-bench-"))
    try:
        ds = create_dataset("fashion-mnist", args.data_root)
        write_dataset_split(ds, "test", tmp / "set", shard_size=10000, progress=False, limit=args.images or 0)
        model = create_model(args.arch, 10, 1, 28)
        ref = Reference("bench", model.eval(), 28, 1, None, None, None, torch.device("cpu"), None)
        images = np.load(tmp / "set" / "arrays.npy")
        n = len(images)
        ref.embed(torch.from_numpy(images[:500]))  # warm-up

        def network_only() -> None:
            for i in range(0, n, args.batch_size):
                ref.embed(torch.from_numpy(images[i : i + args.batch_size]))

        report("network alone (in-memory uint8)", n, timed(network_only)[1])
        report("extract from the decoded-array cache", n, timed(extract, ref, tmp / "set", None, args.batch_size, progress=False)[1])
        shutil.copytree(tmp / "set", tmp / "png", ignore=shutil.ignore_patterns("arrays.npy"))
        report(f"extract streamed from PNG shards ({args.workers} workers)", n,
               timed(extract, ref, tmp / "png", None, args.batch_size, workers=args.workers, progress=False)[1])
        _, secs = timed(feature_stage, tmp / "w", ref, tmp / "set", None, args.batch_size, False)
        report("features stage (extract + write, as the study)", n, secs, TARGET_S * n / 10000)
        print(f"target: 10,000 images in <= {TARGET_S:.0f} s -> {'met' if secs <= TARGET_S * n / 10000 else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_random_set(out: Path, n: int, size: int, workers: int, encoding: Any = None) -> None:
    """n smooth random RGB images with mild noise (PNG sizes like photos'), written by `workers` processes
    as shard groups and merged into one set (one manifest); `encoding`: a synscale.data.encoding.ImageEncoding
    (default PNG)."""
    import multiprocessing as mp

    import pandas as pd

    from synscale.labels import LabelSet

    per = -(-n // workers)
    jobs = [(out, w, w * per, min(n, (w + 1) * per), size, encoding) for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.starmap(_write_part, jobs)
    pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).to_parquet(out / "manifest.parquet", index=False)
    for p in parts:
        p.unlink()
    LabelSet(tuple(f"class{c}" for c in range(1000))).save(out / "labels.json")


def _write_part(out: Path, w: int, start: int, stop: int, size: int, encoding: Any = None) -> Path:
    import torch

    from synscale.data.encoding import ImageEncoding
    from synscale.data.shards import ShardWriter
    from synscale.labels import LabelSet

    torch.set_num_threads(1)  # one process per core: no oversubscription
    part = out / f"part{w}"
    gen = torch.Generator().manual_seed(w)
    with ShardWriter(part, LabelSet(tuple(f"class{c}" for c in range(1000))), shard_size=2500, prefix=f"p{w:02d}",
                     encoding=encoding or ImageEncoding("png")) as wr:
        for i in range(start, stop):
            low = torch.rand(1, 3, 8, 8, generator=gen) * 255
            img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
            img = (img + torch.randn(img.shape, generator=gen) * 4).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
            wr.write(f"{i:08d}", img.numpy(), i % 1000)
    for tar in part.glob("*.tar"):
        tar.rename(out / tar.name)
    (part / "manifest.parquet").rename(out / f"manifest-{w}.parquet")
    shutil.rmtree(part)
    return out / f"manifest-{w}.parquet"


def gpu(args: argparse.Namespace) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from synscale.metrics.features import load_reference

    tmp = Path(tempfile.mkdtemp(prefix="synscale-bench-"))
    try:
        _, secs = timed(write_random_set, tmp / "set", args.images, args.size, args.workers)
        report(f"write {args.size}-px PNG shards ({args.workers} processes)", args.images, secs)
        torch.manual_seed(0)
        save_file(timm.create_model(args.arch).state_dict(), str(tmp / "ref.safetensors"))
        for compile in (False, True) if args.compile else (False,):
            ref = load_reference(str(tmp / "ref.safetensors"), args.arch, 1000, None, args.device, compile=compile)
            _gpu_run(args, ref, tmp / "set", " compiled" if compile else "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gpu_run(args: argparse.Namespace, ref: object, set_dir: Path, tag: str) -> None:
    import torch

    from synscale.metrics.features import extract

    x = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), dtype=torch.uint8, device=ref.device)
    sync = torch.cuda.synchronize if ref.device.type == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up (and compilation)
        ref.embed(x)
    sync()
    reps = max(1, args.images // args.batch_size)

    def network_only() -> None:
        for _ in range(reps):
            ref.embed(x)
        sync()

    report(f"{args.arch}{tag} {ref.precision} alone (uint8 on device)", reps * args.batch_size, timed(network_only)[1])
    if not tag:
        from synscale.metrics.features import iter_batches

        def loader_only() -> int:
            return sum(len(x.to(ref.device, non_blocking=True)) for _, x, _ in iter_batches(set_dir, None, args.batch_size, args.workers))

        n, secs = timed(loader_only)
        report(f"loader alone: decode + to device ({args.workers} workers)", n, secs)
    f, secs = timed(extract, ref, set_dir, None, args.batch_size, workers=args.workers, progress=False)
    report(f"extract{tag} streamed from shards ({args.workers} workers)", len(f.keys), secs)
    where = torch.cuda.get_device_name() if ref.device.type == "cuda" else "cpu"
    print(f"features: {f.feats.shape} {f.feats.dtype}, logits {f.logits.shape}; {where}")


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the GPU benchmark (random 256-px set, ViT-B)")
    ap.add_argument("--arch", default=None, help="timm architecture (default: synscale_cnn_small / vit_base_patch16_224)")
    ap.add_argument("--images", type=int, default=None, help="images in the set (default: --gpu 50,000; the CPU: "
                    "the 10,000 test images; fewer to check that it runs)")
    ap.add_argument("--size", type=int, default=256, help="--gpu: image side")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=max(1, min(15, (os.cpu_count() or 2) - 1)))
    ap.add_argument("--compile", action="store_true", help="--gpu: also measure the torch.compiled network")
    ap.add_argument("--device", default="cuda", help="--gpu: the device (cpu runs the same path, slowly)")
    ap.add_argument("--data-root", default="", help="Fashion-MNIST files (default: Debian's)")
    args = ap.parse_args()
    args.arch = args.arch or ("vit_base_patch16_224" if args.gpu else "synscale_cnn_small")
    if args.gpu and args.images is None:
        args.images = 50000
    gpu(args) if args.gpu else cpu(args)


if __name__ == "__main__":
    main()
