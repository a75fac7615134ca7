"""Metrics as stages: the reference network, per-set features, and one `metrics` stage per configuration.

A configuration's metrics read three sets: its test set (`metrics.per_class` images per class, generated
apart from its training images with their own seeds; for `real`, a class-balanced sample of the real
validation set, compared with the rest of it), the real validation set (FD, precision/recall/density/coverage, Inception FID), and for
the per-class FD of appendix G.4 up to `metrics.fd_per_class` images per class of the configuration's
training set against as many real training images (disjoint from them for `real`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synscale.atomic import read_json
from synscale.metrics import TEST_SEED_OFFSET
from synscale.metrics.features import Reference, feature_stage, keys_digest, set_identity
from synscale.schema import identity as config_identity
from synscale.stage import Context, StageResult, run_stage


@dataclass(frozen=True)
class SetRef:
    """A set on disk that is not a stage (any synscale set directory), for the metrics stages, which read
    only `path`, `root` and `id` of their sets (a StageResult serves as well)."""

    path: Path
    root: Path  # the work directory whose stages/ cache derived stages
    id: str

    @classmethod
    def of(cls, set_dir: str | Path, root: str | Path) -> SetRef:
        return cls(Path(set_dir), Path(root), set_identity(set_dir))


def ranked_keys(set_dir: Path, per_class: int, seed: int, skip: int = 0) -> list[str]:
    """Up to `per_class` keys of each class (ranks skip .. skip+per_class of a fixed seeded order)."""
    from synscale.data.shards import read_manifest
    from synscale.data.subsets import class_ranks

    ranked = class_ranks(read_manifest(set_dir), seed)
    keep = (ranked["rank"] >= skip) & (ranked["rank"] < skip + per_class)
    return ranked.loc[keep, "key"].tolist()


def test_keys(set_dir: Path, per_class: int, seed: int) -> list[str] | None:
    """A given set's test sample: `per_class` images of each class (None = all, when no class has more)."""
    from synscale.data.shards import read_manifest

    if read_manifest(set_dir).groupby("label").size().max() <= per_class:
        return None
    return ranked_keys(set_dir, per_class, seed + TEST_SEED_OFFSET)


def metrics_params(mc: Any, ref: Any, test_keys: list[str] | None) -> dict[str, Any]:
    """What a metrics stage's id hashes. `mc.names` is in it, and the stage's files name their columns after
    these names, so a renamed metric (`lpips` -> `lpips_ref`) gets a new stage: a stage written under the old
    name is never reused with its old column."""
    return {"metrics": config_identity(mc),
            "reference": ref.name, "precision": ref.precision, "test_keys": keys_digest(test_keys)}


def metrics_stage(ctx: Context, *, test: SetRef | StageResult, real_val: SetRef | StageResult,
                  fd_set: SetRef | StageResult | None, real_train: SetRef | StageResult | None, mc: Any, ref: Reference,
                  name: str, test_keys: list[str] | None) -> StageResult:
    """Compute `mc.names` for one configuration's `test` images (`test_keys` of them; None: all) against the real
    validation set, with the Fréchet distance of `fd_set` (its whole set) and the real training set's nearest
    neighbours, judged by the reference network `ref`; writes summary.json and per_class.parquet."""
    quiet = ctx.log.quiet
    params = metrics_params(mc, ref, test_keys)
    inputs = {"test": test.id, "real_val": real_val.id, "fd_set": fd_set.id if fd_set else "",
              "real_train": real_train.id if real_train else ""}

    def fn(out: Path) -> None:
        from synscale.data.shards import load_arrays
        from synscale.labels import LabelSet
        from synscale.metrics.core import MetricInputs, compute

        feats = feature_stage(test.root, ref, test.path, test_keys, mc.batch_size, not quiet)
        images = load_arrays(test.path, feats.keys)[0]
        real = feature_stage(real_val.root, ref, real_val.path, None, mc.batch_size, not quiet)
        if test.id == real_val.id:  # a sample of the validation set itself: compare with the rest of it
            real = _without(real, set(feats.keys))
        fd_feats = fd_real = None
        if fd_set is not None and real_train is not None and mc.fd_per_class and "fd_class" in mc.names:
            real_keys = ranked_keys(real_train.path, mc.fd_per_class, mc.seed)
            skip = mc.fd_per_class if fd_set.id == real_train.id else 0  # real against disjoint real images
            set_keys = ranked_keys(fd_set.path, mc.fd_per_class, mc.seed, skip)
            fd_feats = feature_stage(fd_set.root, ref, fd_set.path, set_keys, mc.batch_size, not quiet)
            fd_real = feature_stage(real_train.root, ref, real_train.path, real_keys, mc.batch_size, not quiet)
        names = LabelSet.load(test.path / "labels.json").names
        inp = MetricInputs(feats, images, real, names, mc, ref, fd_feats, fd_real, real_val.path)
        row, table = compute(inp, mc.names)
        (out / "summary.json").write_text(json.dumps({"config": name, "reference": ref.name, "n_test": len(feats.keys),
                                                      **row}, indent=1, allow_nan=True))
        table.to_parquet(out / "per_class.parquet", index=False)

    return run_stage(test.root, "metrics", params, inputs, fn)


def _without(f: Any, keys: set[str]) -> Any:
    from synscale.metrics.features import Features

    keep = np.array([k not in keys for k in f.keys])
    return Features(f.feats[keep], f.logits[keep], f.labels[keep], [k for k, m in zip(f.keys, keep, strict=True) if m])


def real_test_keys(val_set: Any, per_class: int, seed: int) -> list[str] | None:
    """The `real` configuration's test set: `per_class` images of each class of the real validation set
    (held out from the reference network's training; its other images are the FD reference)."""
    return test_keys(Path(val_set.path), per_class, seed)


def collect_metrics(stages: list[tuple[str, StageResult]], results_dir: Path) -> Any:
    """metrics.parquet (one row per configuration) and metrics_per_class.parquet."""
    import pandas as pd

    rows, per_class = [], []
    for name, st in stages:
        summary = read_json(st.path / "summary.json")
        rows.append({**summary, "config": name, "stage": st.id})
        per_class.append(pd.read_parquet(st.path / "per_class.parquet").assign(config=name))
    results_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_parquet(results_dir / "metrics.parquet", index=False)
    pc = pd.concat(per_class, ignore_index=True) if per_class else pd.DataFrame()
    pc = pc[["config", *[c for c in pc.columns if c != "config"]]] if len(pc) else pc
    pc.to_parquet(results_dir / "metrics_per_class.parquet", index=False)
    return table
