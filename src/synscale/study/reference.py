"""The reference networks, where the study layer composes packages: the real data (data) trained with the study's
recipe (train) as the metrics' reference network (metrics) or as the classifier that judges a built-in
text-to-image model's images (generate.quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synscale.schema import ConfigError, to_dict
from synscale.stage import Context, StageResult

if TYPE_CHECKING:
    from synscale.metrics.features import Reference


def reference_scale(train_set: Any) -> int:
    """The size of the largest class-balanced subset of a training set (all of it for Fashion-MNIST)."""
    from synscale.data.shards import read_manifest

    counts = read_manifest(train_set.path).groupby("label").size()
    return int(counts.min()) * len(counts)


def reference_subset(ctx: Context, *, train: StageResult, seed: int) -> StageResult:
    """The largest class-balanced subset of the real training set: what the reference network trains on."""
    from synscale.data.stages import subset

    return subset(ctx, set_stage=train, scale=reference_scale(train), seed=seed)


def train_reference(ctx: Context, *, train: StageResult, subset: StageResult, tc: Any) -> StageResult:
    """The study's recipe on the reference subset: the real-trained reference network (metrics, hard shift)."""
    from synscale.train.stages import train as train_stage

    return train_stage(ctx, parts=(train, subset), tc=tc, scale=reference_scale(train), name="reference")


def trained_reference(ctx: Context, cfg: Any, train_set: Any) -> StageResult:
    """The study's recipe trained on the largest class-balanced subset of the real training set (all of it
    for Fashion-MNIST): the `trained` reference network, a cached train stage (the plan's reference_subset and
    train_reference nodes make the same two stages)."""
    sub = reference_subset(ctx, train=train_set, seed=cfg.data.order_seed)
    return train_reference(ctx, train=train_set, subset=sub, tc=cfg.train)


def reference(ctx: Context, cfg: Any, train_set: Any, trained: StageResult | None = None) -> Reference:
    """The metrics' reference network (`metrics.reference`); a `trained` one is `trained` where given, else
    the trained_reference stage (run here)."""
    from synscale.labels import LabelSet
    from synscale.metrics.features import load_reference

    mc, log = cfg.metrics, ctx.log
    if mc.reference == "trained" and trained is None:
        trained = trained_reference(ctx, cfg, train_set)
    labels = LabelSet.load(Path(train_set.path) / "labels.json")
    try:
        ref = load_reference(mc.reference, mc.reference_arch, len(labels), labels.wnids, mc.device, mc.compile,
                             mc.allow_download, trained if mc.reference == "trained" else None, to_dict(cfg.train))
    except ValueError as e:  # a reference that does not fit the study: a config error, not a crash
        raise ConfigError(f"metrics.reference {mc.reference!r}: {e}") from None
    log(f"metrics reference: {ref.name} on {ref.device} ({ref.precision})")
    return ref


def reference_classifier(workdir: str | Path, data_root: str = "", quiet: bool = False) -> Any:
    """A classifier with the fashion-mnist study's training recipe, trained on the whole real training set
    (a cached stage in `workdir`). `data_root`: Fashion-MNIST's files (default: Debian's)."""
    from synscale.config import find_study, load_study
    from synscale.data.stages import shards
    from synscale.generate.quality import Reference
    from synscale.labels import LabelSet
    from synscale.study.plan import new_context
    from synscale.train.stages import load_model

    cfg = load_study(find_study("fashion-mnist"), overrides=[f"data.root={json.dumps(data_root)}"])
    ctx = new_context(workdir, quiet)
    train_set = shards(ctx, data=cfg.data, split=cfg.data.train_split)
    test_set = shards(ctx, data=cfg.data, split=cfg.data.test_split)
    tr = trained_reference(ctx, cfg, train_set)  # all 60,000 images for Fashion-MNIST
    images, labels = ctx.cache.get(test_set.path)
    return Reference(load_model(tr, to_dict(cfg.train)), images, labels, LabelSet.load(test_set.path / "labels.json").names)


def evaluate_family(model: str, guidances: list[float], per_class: int, workdir: str | Path, strategy: str = "classname",
                    steps: int = 0, seed: int = 0, grid: str | Path | None = None, grid_per_class: int = 8,
                    data_root: str = "", quiet: bool = False) -> Any:
    """`synscale generator eval`: `model`'s images at each guidance judged by the reference classifier trained in
    `workdir` (synscale.generate.quality.evaluate_family)."""
    from synscale.generate import quality

    ref = reference_classifier(workdir, data_root, quiet)
    return quality.evaluate_family(model, guidances, per_class, ref, strategy, steps, seed, grid, grid_per_class, quiet)


def measure_set(cfg: Any, set_dir: Path, workdir: Path, name: str | None = None, real_train: str | None = None,
                real_val: str | None = None, quiet: bool = False) -> StageResult:
    """`synscale metrics`: the study's metrics of any set directory against the real data (`real_train` /
    `real_val`: set directories; "": the study's splits, written as stages in `workdir`), a cached stage."""
    from synscale.data.stages import shards
    from synscale.metrics.run import SetRef, metrics_stage, test_keys
    from synscale.study.plan import new_context

    mc = cfg.metrics
    if mc.per_class == 0:
        raise ConfigError("metrics.per_class is 0: nothing to measure")
    ctx = new_context(workdir, quiet)
    log = ctx.log
    sets = {}
    for role, given, split in (("train", real_train, cfg.data.train_split), ("val", real_val, cfg.data.test_split)):
        sets[role] = SetRef.of(given, workdir) if given else shards(ctx, data=cfg.data, split=split)
    test = SetRef.of(set_dir, workdir)
    ref = reference(ctx, cfg, sets["train"])
    name = name or test.path.resolve().name
    st = metrics_stage(ctx, test=test, real_val=sets["val"], fd_set=test, real_train=sets["train"], mc=mc, ref=ref,
                       name=name, test_keys=test_keys(test.path, mc.per_class, mc.seed))
    log.stage(f"metrics {name}", st)
    return st
