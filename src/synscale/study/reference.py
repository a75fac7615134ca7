"""The reference networks, where the study layer composes packages: the real data (data) trained with the study's
recipe (train) as the metrics' reference network (metrics) or as the classifier that judges a built-in
text-to-image model's images (generate.quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synscale.schema import ConfigError, to_dict
from synscale.stage import StageResult

if TYPE_CHECKING:
    from synscale.metrics.features import Reference


def reference_scale(train_set: Any) -> int:
    """The size of the largest class-balanced subset of a training set (all of it for Fashion-MNIST)."""
    from synscale.data.shards import read_manifest

    counts = read_manifest(train_set.path).groupby("label").size()
    return int(counts.min()) * len(counts)


def trained_reference(cfg: Any, train_set: Any, cache: Any, log: Any) -> StageResult:
    """The study's recipe trained on the largest class-balanced subset of the real training set (all of it
    for Fashion-MNIST): the `trained` reference network, a cached train stage."""
    from synscale.data.stages import subset
    from synscale.train.stages import train

    scale = reference_scale(train_set)
    return train(cfg.train, train_set, subset(train_set, scale, cfg.data.order_seed, log), scale, cache, log, "reference")


def reference(cfg: Any, train_set: Any, cache: Any, log: Any, trained: StageResult | None = None) -> Reference:
    """The metrics' reference network (`metrics.reference`); a `trained` one is `trained` where given, else
    the trained_reference stage (run here)."""
    from synscale.labels import LabelSet
    from synscale.metrics.features import load_reference

    mc = cfg.metrics
    if mc.reference == "trained" and trained is None:
        trained = trained_reference(cfg, train_set, cache, log)
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
    from synscale.data.cache import ArrayCache
    from synscale.generate.quality import Reference
    from synscale.data.stages import real_shards
    from synscale.labels import LabelSet
    from synscale.progress import Log
    from synscale.train.stages import load_model

    cfg = load_study(find_study("fashion-mnist"), overrides=[f"data.root={json.dumps(data_root)}"])
    log, cache = Log(quiet), ArrayCache()
    workdir = Path(workdir)
    train_set = real_shards(cfg.data, workdir, cfg.data.train_split, log)
    test_set = real_shards(cfg.data, workdir, cfg.data.test_split, log)
    tr = trained_reference(cfg, train_set, cache, log)  # all 60,000 images for Fashion-MNIST
    images, labels = cache.get(test_set.path)
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
    from synscale.data.cache import ArrayCache
    from synscale.data.stages import real_shards
    from synscale.metrics.run import SetRef, metrics_stage, test_keys
    from synscale.progress import Log

    mc = cfg.metrics
    if mc.per_class == 0:
        raise ConfigError("metrics.per_class is 0: nothing to measure")
    log = Log(quiet)
    sets = {}
    for role, given, split in (("train", real_train, cfg.data.train_split), ("val", real_val, cfg.data.test_split)):
        sets[role] = SetRef.of(given, workdir) if given else real_shards(cfg.data, workdir, split, log)
    test = SetRef.of(set_dir, workdir)
    ref = reference(cfg, sets["train"], ArrayCache(), log)
    name = name or test.path.resolve().name
    st = metrics_stage(mc, ref, name, test=test, test_keys=test_keys(test.path, mc.per_class, mc.seed),
                       real_val=sets["val"], fd_set=test, real_train=sets["train"], quiet=quiet)
    log.stage(f"metrics {name}", st)
    return st
