"""What a plan will cost, before it runs: images generated, training iterations and samples, bytes stored and
device-hours per stage kind, from throughput constants. Each constant says the device it holds for and where
it was measured (a benchmark of this project, with the figure recorded in the docs), or that it is assumed;
`synscale study FILE --dry-run` prints them beside the totals. Nothing here imports torch or reads data
beyond listing a class-folder tree that exists.

A device-hour is one GPU (or, for the CPU rates, one 2-core CPU machine) for an hour; a run over N GPUs is
counted as N times shorter (linear scaling, assumed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synscale.modelref import BUILTIN, builtin_family


@dataclass(frozen=True)
class Rate:
    per_second: float  # images per second on one device
    device: str
    source: str  # "measured: ..." or "assumed: ..."
    steps: int = 0  # sampling steps it was measured at (generation: the time scales with the steps)


# Sampling, images/s, by pipeline family (synscale.generate); the key is found in the model's path or name.
GENERATION = {
    "builtin:latent-diffusion": Rate(140.0, "2-core CPU", "measured: benchmarks/generate_speed.py, 28 px, guidance 2, "
                                                          "5 steps (docs/generate.md)", 5),
    "builtin:pixel-diffusion": Rate(10.8, "2-core CPU", "measured: benchmarks/generate_speed.py, 28 px, guidance 2, "
                                                        "10 steps (docs/generate.md)", 10),
    "builtin:masked-token": Rate(21.0, "2-core CPU", "measured: benchmarks/generate_speed.py, 28 px, guidance 2, "
                                                     "8 steps, batched (docs/generate.md)", 8),
    "stable-diffusion": Rate(2.7, "H100", "measured: SD 1.5 (random weights), 512 px, 50 steps, fp16, batch 8, eager "
                                          "(measured once; docs/cluster.md)", 50),
    "deepfloyd-if": Rate(1.0, "H100", "assumed: stage I and stage II (the grid's cascade), about 2.7x SD 1.5's cost (not measured)"),
    "amused": Rate(20.0, "H100", "assumed: 12 masked-token decoding steps at 256 px (not measured)", 12),
}
FAMILY_NAMES = {"stable-diffusion": ("stable-diffusion", "sd", "sdxl"), "deepfloyd-if": ("deepfloyd", "if-i", "if"),
                "amused": ("amused", "muse")}

# Training, images/s per device, by recipe (the miniature ones, whose models are shaped for 28 px) or model name
# (timm or open_clip); evaluation is forward only.
TRAIN = {
    "vit_base_patch16_224": Rate(2557.0, "H100", "measured: timm ViT-B/16, 224 px, bf16, batch 256, eager "
                                                 "(docs/training.md; 3,262 compiled)"),
    "miniature-cnn": Rate(9000.0, "2-core CPU", "measured: miniature-cnn, 28 px (docs/design.md)"),
    "miniature-vit": Rate(649.0, "2-core CPU", "measured: benchmarks/train_speed.py, miniature-vit end to end "
                                               "(docs/training.md)"),
    "ViT-B-16": Rate(1970.0, "H100", "assumed: the ViT-B/16 image tower's rate with 30% more for the text tower "
                                     "(not measured)"),
    "ViT-L-14": Rate(600.0, "H100", "assumed: about 4.3x ViT-B/16's cost (not measured)"),
    "miniature-clip": Rate(3000.0, "2-core CPU", "assumed: miniature-clip (not measured)"),
}
COMPILED_SPEEDUP = 3262.0 / 2557.0  # measured for ViT-B/16 on the H100 (docs/training.md)
EVAL_SPEEDUP = 3.0  # forward only against forward + backward (assumed)

# Evaluation set sizes the dry-run cannot count: the preset OOD sets and ImageNet's validation split.
SET_SIZES = {"imagenet-a": 7500, "imagenet-r": 30000, "imagenet-sketch": 50889, "imagenet-v2": 10000,
             "fashion-mnist": 10000, "imagenet-val": 50000}
# bytes of a stored image over its raw pixels, by format: PNG assumed for natural images (0.60 measured on the
# loader benchmark's smooth-random 256-px images), JPEG and WebP at quality 95 measured there
# (benchmarks/train_speed.py --per-core, docs/performance.md)
FORMAT_RATIO = {"png": 0.5, "jpeg": 0.13, "webp": 0.105}
TAR_OVERHEAD = 1536  # two tar members per sample (header + padding) and the JSON (measured on the demo's shards)


def family(model: str) -> str:
    builtin = builtin_family(model)
    if builtin:
        fam = BUILTIN + builtin[0]
        return fam if fam in GENERATION else "builtin:latent-diffusion"
    name = Path(model.rstrip("/")).name.lower()
    for fam, keys in FAMILY_NAMES.items():
        if any(k in name.replace("_", "-").split("-") or name.startswith(k) for k in keys):
            return fam
    return "stable-diffusion"  # an unknown pipeline is costed as SD 1.5 (said in the output)


def train_rate(tc: Any) -> Rate | None:
    rate = TRAIN.get(tc.recipe) if tc.recipe.startswith("miniature-") else TRAIN.get(tc.model)
    if rate is None:
        return None
    return Rate(rate.per_second * (COMPILED_SPEEDUP if tc.compile and rate.device == "H100" else 1.0), rate.device,
                rate.source)


@dataclass
class KindCost:
    stages: int = 0
    images: int = 0  # generated (generate), seen in training (train), evaluated (evaluate, probe, metrics)
    iterations: int = 0
    hours: float = 0.0
    unknown: int = 0  # stages without a rate or a size
    devices: set[str] | None = None
    sources: set[str] | None = None

    def add(self, images: int | None, rate: Rate | None, iterations: int = 0, speedup: float = 1.0) -> None:
        self.stages += 1
        self.iterations += iterations
        if images is None or rate is None:
            self.unknown += 1
            return
        self.images += images
        self.hours += images / (rate.per_second * speedup) / 3600
        self.devices = (self.devices or set()) | {rate.device}
        self.sources = (self.sources or set()) | {rate.source}


def classes(cfg: Any) -> tuple[int, str]:
    """(classes, how known) of the study's label set."""
    if cfg.data.dataset == "fashion-mnist":
        return 10, "Fashion-MNIST"
    base = Path(cfg.data.root) / cfg.data.train_split
    if cfg.data.dataset == "imagefolder":  # folders counted, not listed (ImageNet holds 1.28M files)
        if base.is_dir():
            return sum(1 for d in base.iterdir() if d.is_dir()), f"class folders of {base}"
    elif cfg.data.root and Path(cfg.data.root).expanduser().exists():  # hf, webdataset: their label set is cheap
        from synscale.data.datasets import columns_of, create_dataset
        from synscale.errors import UserError

        try:
            ds = create_dataset(cfg.data.dataset, cfg.data.root, cfg.data.image_size, **columns_of(cfg.data))
            return len(ds.labels), f"the label set of {cfg.data.root}"
        except (UserError, OSError, ValueError):
            pass  # preflight names the problem; the estimate falls back
    return 1000, "assumed ImageNet-1k: the data is not on this machine"


def image_shape(cfg: Any) -> tuple[int, int]:
    """(side, channels) of the study's stored images."""
    side = cfg.data.image_size or (28 if cfg.data.dataset == "fashion-mnist" else 256)
    return side, 1 if cfg.data.dataset == "fashion-mnist" else 3


def image_bytes(side: int, channels: int, fmt: str = "png") -> float:
    """Disk bytes of one stored sample: its image (PNG, JPEG or WebP: FORMAT_RATIO), its tar members' headers and
    padding and its JSON, and for small images (synscale.data.shards.ARRAY_CACHE_MAX_SIDE) its copy in the set's
    decoded-array cache."""
    from synscale.data.shards import ARRAY_CACHE_MAX_SIDE

    raw = side * side * channels
    return raw * FORMAT_RATIO[fmt] + TAR_OVERHEAD + (raw if side <= ARRAY_CACHE_MAX_SIDE else 0)


def stored_format(image_format: str, dataset: str) -> str:
    """The format a real set's images take: a lossy one as asked; `auto` keeps img2dataset's JPEGs (their bytes
    are the set's where img2dataset already resized them), else PNG."""
    if image_format in ("jpeg", "webp"):
        return image_format
    return "jpeg" if image_format == "auto" and dataset == "img2dataset" else "png"


def _eval_size(cfg: Any, set_name: str) -> int | None:
    spec = next((s for s in cfg.evaluate.sets if s.name == set_name), None)
    if spec is not None:
        return SET_SIZES.get(spec.preset)
    if set_name == "val" or set_name in cfg.evaluate.shifts:
        return SET_SIZES["fashion-mnist"] if cfg.data.dataset == "fashion-mnist" else SET_SIZES["imagenet-val"]
    return None


def node_work(node: Any, cfg: Any, n_classes: int) -> tuple[int | None, Rate | None, float]:
    """(images, rate, speed-up) of one plan node: what it generates, sees in training or evaluates; None
    where the plan cannot tell (a downstream set's size, a model without a rate); (0, None, 1) for the
    kinds this does not cost (shards, subsets, heads: small beside the others)."""
    a = node.args
    if node.kind == "generate":
        g = a.get("syn") or a.get("g")
        if "g" in a:  # CLIP: one image per caption
            n = cfg.clip.pairs.limit or max(cfg.clip.scales)
        else:
            n = (g.per_class or math.ceil(a["max_scale"] / n_classes)) * n_classes
        return (n, *_generation_rate(g))
    if node.kind == "round":  # an adaptive round's images, at its slowest candidate's rate (an upper bound)
        rate, speedup = min((_generation_rate(g) for g in a["syns"]), key=lambda r: r[0].per_second * r[1])
        return node.info["images"], rate, speedup
    if node.kind == "train":
        return node.info.get("samples"), train_rate(a["tc"]), 1.0
    if node.kind == "evaluate":
        return _eval_size(cfg, a["eval_name"]), train_rate(a["tc"]), EVAL_SPEEDUP
    if node.kind == "metrics":
        return cfg.metrics.per_class * n_classes, train_rate(cfg.train), EVAL_SPEEDUP
    if node.kind == "probe":  # the downstream sets' sizes are not known before they are written
        return None, None, 1.0
    return 0, None, 1.0


def _generation_rate(g: Any) -> tuple[Rate, float]:
    """A generation config's measured rate and its speed-up from fewer steps than the rate was measured at."""
    rate = GENERATION[family(g.model)]
    return rate, (rate.steps / g.steps) if g.steps and rate.steps else 1.0


def node_seconds(sp: Any, cfg: Any) -> dict[str, float | None]:
    """Each node's estimated seconds on its rate's device (None: unknown; 0: not costed)."""
    n_classes = classes(cfg)[0]
    out: dict[str, float | None] = {}
    for key, node in sp.plan.nodes.items():
        images, rate, speedup = node_work(node, cfg, n_classes)
        out[key] = 0.0 if images == 0 else None if images is None or rate is None else images / (rate.per_second * speedup)
    return out


def estimate(sp: Any, cfg: Any) -> dict[str, Any]:
    """Per stage kind a KindCost, with the study's total images generated and bytes stored."""
    n_classes, _ = classes(cfg)
    costs: dict[str, KindCost] = {}
    generated = 0
    for node in sp.plan.nodes.values():
        c = costs.setdefault(node.kind, KindCost())
        images, rate, speedup = node_work(node, cfg, n_classes)
        if images == 0 and rate is None:
            c.stages += 1
            continue
        if node.kind in ("generate", "round"):
            generated += images
        c.add(images, rate, node.info.get("iterations", 0), speedup)
    side, channels = image_shape(cfg)
    test = _eval_size(cfg, "val") or 0
    real = test * (1 + len(cfg.evaluate.shifts))  # the test split and its shifted copies
    if sp.train_set:
        real += cfg.data.reference_size or (60000 if cfg.data.dataset == "fashion-mnist" else 0)
    real_format = stored_format(cfg.data.image_format, cfg.data.dataset)
    stored = generated * image_bytes(side, channels) + real * image_bytes(side, channels, real_format)
    if cfg.clip.scales:  # the real pairs (their synthetic images are counted above)
        pc = cfg.clip.pairs
        pairs = pc.limit or max(cfg.clip.scales)
        own = pc.dataset == "img2dataset" and pc.image_size
        stored += pairs * (image_bytes(pc.image_size, 3, stored_format(pc.image_format, pc.dataset)) if own
                           else image_bytes(side, channels))
    return {"kinds": costs, "generated": generated, "bytes": stored, "classes": classes(cfg)}


def print_estimate(sp: Any, cfg: Any) -> None:
    est = estimate(sp, cfg)
    n, how = est["classes"]
    print(f"\ncompute (estimated; {n} classes: {how}):")
    print(f"{'kind':>10} {'stages':>7} {'images':>15} {'iterations':>12} {'device-hours':>13}  device")
    total, sources, unknown = 0.0, set(), 0
    for kind, c in est["kinds"].items():
        if not c.devices and not c.unknown:
            continue
        hours = f"{c.hours:,.1f}" + ("+?" if c.unknown else "")
        print(f"{kind:>10} {c.stages:>7,} {c.images:>15,} {c.iterations:>12,} {hours:>13}  "
              f"{', '.join(sorted(c.devices or {'?'}))}")
        total += c.hours
        sources |= c.sources or set()
        unknown += c.unknown
    print(f"{'total':>10} {'':>7} {'':>15} {'':>12} {total:>13,.1f}" + (f"  (+ {unknown} stage(s) without a rate or "
                                                                           "a set size: not counted)" if unknown else ""))
    print(f"images generated: {est['generated']:,}; image sets stored (generated and real shards, array caches; "
          f"not models or features): ~{_bytes(est['bytes'])}")
    longest = longest_run(sp, cfg)
    if longest:
        print(longest)
    print("rates:")
    for s in sorted(sources):
        print(f"  {s}")


def longest_run(sp: Any, cfg: Any, machines: tuple[int, ...] = (1, 2, 4, 8)) -> str:
    """The longest training run's device-hours and its wall time on 1, 2, 4, 8 machines of train.nproc devices each
    (train.nodes; linear scaling, assumed); "" where the plan trains nothing it can cost."""
    secs = {k: v for k, v in node_seconds(sp, cfg).items() if v and sp.plan.nodes[k].kind == "train"}
    if not secs:
        return ""
    key = max(secs, key=secs.__getitem__)
    tc = sp.plan.nodes[key].args["tc"]
    hours = secs[key] / 3600
    walls = ", ".join(f"{m}: {_duration(hours / (m * tc.nproc))}" for m in machines)
    return (f"longest training run: {key}: {_duration(hours)} on one device; wall time on machines of nproc = "
            f"{tc.nproc} device(s) each (train.nodes; linear scaling, assumed) {walls}")


def _duration(hours: float) -> str:
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"
