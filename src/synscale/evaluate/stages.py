"""The evaluation stages of a study (see synscale.stage): a trained model on an evaluation set (a CLIP model
zero-shot, through its class text features), a linear probe on a downstream set, and the shifted copies of
the real test set. Each takes and returns stage directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.errors import ConfigError
from synscale.schema import identity, to_dict
from synscale.stage import Context, StageResult, run_stage
from synscale.train.stages import load_model


def eval_source(eval_set: StageResult, cache: Any) -> Any:
    """The decoded set in memory where it has an array cache (small images), else read from its shards."""
    from synscale.data.shards import array_cache
    from synscale.train.data import ArraySource, ShardSource

    if array_cache(eval_set.path) is not None:
        return ArraySource(*cache.get(eval_set.path))
    return ShardSource([(eval_set.path, None)])


def evaluate(ctx: Context, *, model: StageResult, eval_set: StageResult, head: StageResult | None = None, tc: Any,
             eval_name: str, ood: bool = False) -> StageResult:
    """Loss and top-1 of a model trained with `tc` on an evaluation set (centre crop as trained; with `ood`, the
    logits restricted to the model's classes that the OOD set covers). A CLIP model (`tc` contrastive) is
    evaluated zero-shot with the class text features of `head`."""
    from synscale.data.stages import ood_class_subset

    model_stage, cache, log = model, ctx.cache, ctx.log
    class_subset = ood_class_subset(eval_set) if ood else None

    def fn(out: Path) -> None:
        import pandas as pd

        from synscale.evaluate.classification import predict, summarize
        from synscale.labels import LabelSet
        from synscale.train.engine import resolve_device

        net = load_model(model_stage, to_dict(tc))
        if head is not None:
            from safetensors.torch import load_file

            from synscale.train.clip import ZeroShotClassifier

            net = ZeroShotClassifier(net, load_file(str(head.path / "head.safetensors"))["weight"])
        ex = predict(net, None, None, tc.eval_batch_size, tc.crop, class_subset,
                     source=eval_source(eval_set, cache), workers=tc.workers,
                     device=resolve_device(tc.device), progress=not log.quiet, desc=f"evaluate on {eval_name}")
        overall, per_class = summarize(ex, LabelSet.load(eval_set.path / "labels.json").names)
        pd.DataFrame(ex).to_parquet(out / "examples.parquet", index=False)
        per_class.to_parquet(out / "per_class.parquet", index=False)
        (out / "summary.json").write_text(json.dumps(overall, indent=1))

    params = {"eval_set": eval_name, "batch_size": tc.eval_batch_size, "crop": tc.crop,
              **({"class_subset": class_subset} if class_subset is not None else {})}
    inputs = {"model": model_stage.id, "set": eval_set.id, **({"head": head.id} if head is not None else {})}
    res = run_stage(model_stage.root, "evaluate", params, inputs, fn)
    log.stage(f"evaluate on {eval_name}" + (" (zero-shot)" if head is not None else ""), res)
    return res


def probe(ctx: Context, *, model: StageResult, train: StageResult, test: StageResult, tc: Any, pc: Any) -> StageResult:
    """A linear probe (synscale.config.ProbeConfig `pc`) of the features of a model trained with `tc` (a
    CLIP model's: its image tower's) on a downstream set's `train` and `test` splits (synscale.evaluate.probe)."""
    model_stage, train_set, test_set, log = model, train, test, ctx.log

    def fn(out: Path) -> None:
        import pandas as pd

        from synscale.evaluate.classification import summarize
        from synscale.evaluate.probe import fit_linear_probe, probe_examples
        from synscale.labels import LabelSet
        from synscale.metrics.features import extract, load_reference

        meta = read_json(model_stage.path / "train.json")
        ref = load_reference("trained", "", meta["num_classes"], None, "auto", trained=model_stage, train_cfg=to_dict(tc))
        ref.autocast = None  # probe features in float32
        tr = extract(ref, train_set.path, progress=not log.quiet)
        te = extract(ref, test_set.path, progress=not log.quiet)
        names = LabelSet.load(test_set.path / "labels.json").names
        lp = fit_linear_probe(tr.feats, tr.labels, len(names), pc.c, pc.max_iter, device=str(ref.device))
        ex = probe_examples(lp, te.feats, te.labels)
        overall, per_class = summarize(ex, names)
        pd.DataFrame(ex).to_parquet(out / "examples.parquet", index=False)
        per_class.to_parquet(out / "per_class.parquet", index=False)
        (out / "summary.json").write_text(json.dumps({**overall, "lbfgs_iterations": lp.iterations}, indent=1))

    res = run_stage(model_stage.root, "probe", {"probe": identity(pc)},
                    {"model": model_stage.id, "train": train_set.id, "test": test_set.id}, fn)
    log.stage(f"linear probe on {pc.name}", res)
    return res


def zero_shot_head(ctx: Context, *, model: StageResult, eval_set: StageResult, tc: Any, templates: str) -> StageResult:
    """A CLIP model's class text features for an evaluation set's class names (synscale.train.clip)."""
    model_stage, log = model, ctx.log
    from synscale.data.shards import read_labels
    from synscale.train.clip import zero_shot_names
    from synscale.train.templates import load_templates

    labels = read_labels(eval_set.path)
    if labels is None:
        raise ConfigError(f"{eval_set.path}: zero-shot evaluation needs a labelled set (class names)")
    names = zero_shot_names(labels.names, labels.wnids)
    texts = load_templates(templates)

    def fn(out: Path) -> None:
        from safetensors.torch import save_file

        from synscale.train.clip import class_text_features
        from synscale.train.engine import resolve_device

        clip = load_model(model_stage, to_dict(tc))
        weight = class_text_features(clip, tc.model, names, texts, resolve_device(tc.device))
        save_file({"weight": weight.cpu().contiguous()}, str(out / "head.safetensors"))

    res = run_stage(model_stage.root, "zeroshot", {"names": names, "templates": texts}, {"model": model_stage.id}, fn)
    if not res.skipped:
        log.stage(f"zero-shot classifier ({len(names)} classes x {len(texts)} templates)", res)
    return res


def shift_set(ctx: Context, *, test: StageResult, model: StageResult | None = None, name: str, seed: int, tc: Any,
              shard_size: int) -> StageResult:
    """A shifted copy of the real test set `test` (synscale.data.shifts): `name`'s transform with `seed`, or for the
    hard shift the test images that `model` (a real-trained model, trained with `tc`) gets wrong."""
    test_set, cache, log = test, ctx.cache, ctx.log
    inputs = {"set": test_set.id, **({"model": model.id} if model else {})}
    res = run_stage(test_set.root, "shift", {"shift": name, "seed": seed}, inputs,
                    lambda out: _write_shift(name, seed, model, tc, test_set, shard_size, cache, out))
    log.stage(f"shifted test set [{name}]", res)
    return res


def _write_shift(name: str, seed: int, model: StageResult | None, tc: Any, test_set: StageResult, shard_size: int,
                 cache: Any, out: Path) -> None:
    from synscale.data.shards import ShardWriter, read_manifest
    from synscale.data.shifts import SHIFTS, hard_subset
    from synscale.evaluate.classification import predict
    from synscale.labels import LabelSet

    images, labels = cache.get(test_set.path)
    keys = read_manifest(test_set.path)["key"].tolist()
    if model is not None:
        pred = predict(load_model(model, to_dict(tc)), images, labels, tc.eval_batch_size, tc.crop)["pred"]
        idx = hard_subset(pred, labels)
        images, labels, keys = images[idx], labels[idx], [keys[i] for i in idx]
    else:
        images = SHIFTS.get(name)(images, seed)
    with ShardWriter(out, LabelSet.load(test_set.path / "labels.json"), shard_size) as w:
        for key, img, y in zip(keys, images, labels, strict=True):
            w.write(key, img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), int(y), {"shift": name})
