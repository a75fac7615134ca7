"""The study's node functions: fn(ctx, *input stages, **args) -> StageResult, each one stage function of a package
(synscale.data.stages, .prompts.stages, .generate.stages, .train.stages, .evaluate.stages, .metrics.run); the
plan (synscale.study.build) names them, an executor (synscale.study.executors) calls them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.config import ConfigError, StudyConfig
from synscale.study.plan import Context
from synscale.stage import StageResult

# ---------------------------------------------------------------------------------------------------
# Node functions: fn(ctx, *input stages, **args) -> StageResult, each one stage function of a package.


def shards(ctx: Context, data: Any, split: str, what: str = "real shards", dataset: str = "", root: str = "",
            image_size: int = 0, columns: dict[str, str] | None = None) -> StageResult:
    """A split of the study's dataset, or of `dataset` (a probe's or zero-shot set's, with its `columns`) in the
    same shard size."""
    from synscale.data.stages import dataset_shards, real_shards

    if not dataset:
        return real_shards(data, ctx.workdir, split, ctx.log, what)
    return dataset_shards(ctx.workdir, dataset, root, image_size, data.shard_size, split, ctx.log, what,
                          columns=columns)


def subset(ctx: Context, set_stage: StageResult, scale: int, seed: int, order: str = "class") -> StageResult:
    from synscale.data.stages import subset

    return subset(set_stage, scale, seed, ctx.log, order)


def reference_subset(ctx: Context, train_set: StageResult, seed: int) -> StageResult:
    from synscale.data.stages import subset
    from synscale.study.reference import reference_scale

    return subset(train_set, reference_scale(train_set), seed, ctx.log)


def train(ctx: Context, set_stage: StageResult, sub: StageResult, *extra: StageResult, tc: Any, scale: int, name: str,
           real_prob: float | None = None) -> StageResult:
    from synscale.train.stages import train

    pairs = list(zip(extra[::2], extra[1::2], strict=True))
    return train(tc, set_stage, sub, scale, ctx.cache, ctx.log, name, pairs, real_prob)


def train_reference(ctx: Context, train_set: StageResult, sub: StageResult, tc: Any) -> StageResult:
    from synscale.study.reference import reference_scale
    from synscale.train.stages import train

    return train(tc, train_set, sub, reference_scale(train_set), ctx.cache, ctx.log, "reference")


def select(ctx: Context, *evals: StageResult, names: list[str], eval_set: str = "val") -> StageResult:
    """The best and worst configurations: the lowest and highest mean loss (over runs) of `evals`, each the
    `eval_set` evaluation of the configuration `names[i]` at the study's largest scale."""
    from synscale.stage import run_stage

    def fn(out: Path) -> None:
        losses: dict[str, list[float]] = {}
        for name, ev in zip(names, evals, strict=True):
            losses.setdefault(name, []).append(read_json(ev.path / "summary.json")["loss"])
        mean = {n: sum(v) / len(v) for n, v in losses.items()}
        best, worst = min(mean, key=mean.get), max(mean, key=mean.get)
        (out / "pick.json").write_text(json.dumps({"best": best, "worst": worst, "eval_set": eval_set,
                                                   "loss": mean}, indent=1))

    res = run_stage(ctx.workdir, "select", {"eval_set": eval_set, "names": names}, {f"{i}": e.id for i, e in
                                                                                     enumerate(evals)}, fn)
    pick = read_json(res.path / "pick.json")
    ctx.log(f"best configuration {pick['best']}, worst {pick['worst']} ({eval_set} loss at the largest scale)")
    return res


def picked(pick: StageResult, which: str) -> str:
    """The configuration a select stage picked as `which` (best / worst)."""
    return read_json(pick.path / "pick.json")[which]


def train_picked(ctx: Context, pick: StageResult, real: StageResult | None, *sets: StageResult, which: str,
                  names: list[str], tc: Any, n_real: int, n_syn: int, seed: int, label: str) -> StageResult:
    """A model on the picked configuration's set (`sets[i]` is `names[i]`'s): `n_syn` of its images, plus
    `n_real` real ones (a mix); the same stage a curve of that configuration by name would train."""
    from synscale.data.stages import subset
    from synscale.train.stages import train

    name = picked(pick, which)
    gen = sets[names.index(name)]
    parts = [(s, subset(s, n, seed, ctx.log)) for s, n in ((real, n_real), (gen, n_syn)) if n]
    (s0, sub0), extra = parts[0], parts[1:]
    return train(tc, s0, sub0, n_real + n_syn, ctx.cache, ctx.log, label.format(name=name), extra)


def evaluate(ctx: Context, model: StageResult, eval_set: StageResult, head: StageResult | None, tc: Any,
              eval_name: str, ood: bool = False) -> StageResult:
    from synscale.data.stages import ood_class_subset
    from synscale.evaluate.stages import evaluate

    return evaluate(tc, model, eval_set, eval_name, ctx.cache, ctx.log, ood_class_subset(eval_set) if ood else None, head)


def probe(ctx: Context, model: StageResult, p_train: StageResult, p_test: StageResult, tc: Any, pc: Any) -> StageResult:
    from synscale.evaluate.stages import probe

    return probe(tc, model, pc, p_train, p_test, ctx.log)


def zero_shot_head(ctx: Context, model: StageResult, eval_set: StageResult, tc: Any, templates: str) -> StageResult:
    from synscale.evaluate.stages import zero_shot_head

    return zero_shot_head(model, tc, eval_set, templates, ctx.log)


def shift(ctx: Context, test_set: StageResult, model: StageResult | None, name: str, seed: int, tc: Any,
           shard_size: int) -> StageResult:
    from synscale.evaluate.stages import shift_set

    return shift_set(name, seed, test_set, model, tc, shard_size, ctx.cache, ctx.log)


def ood(ctx: Context, train_set: StageResult, spec: Any, image_size: int, shard_size: int) -> StageResult:
    from synscale.data.stages import ood_set

    return ood_set(spec, train_set, image_size, shard_size, ctx.log)


def captions(ctx: Context, train_set: StageResult, captioner: str, seed: int, allow_download: bool) -> StageResult:
    from synscale.prompts.stages import caption_pool

    return caption_pool(train_set, captioner, seed, not allow_download, ctx.log)


def generate(ctx: Context, train_set: StageResult, captions: StageResult | None, syn: Any, data: Any, max_scale: int,
              what: str = "", test_per_class: int = 0) -> StageResult:
    """`syn`'s training set, or with `test_per_class` its metrics test set (other seeds); `captions`: the
    in-captions strategy's caption pool."""
    from synscale.generate.stages import synthetic_set

    if test_per_class:
        from synscale.metrics.run import synthetic_test_config

        syn = synthetic_test_config(syn, test_per_class)
    return synthetic_set(syn, train_set, data, max_scale, ctx.log, what, captions)


def metrics(ctx: Context, train_set: StageResult, test_set: StageResult, trained: StageResult | None,
             generated: StageResult | None, syn_test: StageResult | None, cfg: StudyConfig, name: str) -> StageResult:
    from synscale.metrics.run import metrics_stage, real_test_keys
    from synscale.study.reference import reference

    key = ("reference", trained.id if trained else cfg.metrics.reference)
    ref = ctx.memo.get(key)
    if ref is None:
        ref = ctx.memo[key] = reference(cfg, train_set, ctx.cache, ctx.log, trained)
    mc = cfg.metrics
    if generated is None:  # the real data
        st = metrics_stage(mc, ref, "real", test=test_set, test_keys=real_test_keys(test_set, mc.per_class, mc.seed),
                           real_val=test_set, fd_set=train_set, real_train=train_set, quiet=ctx.log.quiet)
    elif syn_test is None:  # metrics.test_from = "training": a class-balanced sample of its training set
        from synscale.metrics.run import test_keys

        st = metrics_stage(mc, ref, name, test=generated, test_keys=test_keys(generated.path, mc.per_class, mc.seed),
                           real_val=test_set, fd_set=generated, real_train=train_set, quiet=ctx.log.quiet)
    else:
        st = metrics_stage(mc, ref, name, test=syn_test, test_keys=None, real_val=test_set, fd_set=generated,
                           real_train=train_set, quiet=ctx.log.quiet)
    ctx.log.stage(f"metrics {name}", st)
    return st


def pairs(ctx: Context, train_set: StageResult | None, cfg: StudyConfig) -> StageResult:
    """CLIP's real pairs, as many as the largest CLIP scale needs: img2dataset shards, or the study's real
    training images captioned."""
    from synscale.data.shards import read_manifest

    pc, cc = cfg.clip.pairs, cfg.clip
    need = pc.limit or max(cc.scales)
    if pc.dataset == "img2dataset":
        from synscale.data.stages import dataset_shards

        res = dataset_shards(ctx.workdir, "img2dataset", pc.root, pc.image_size, cfg.data.shard_size, "train", ctx.log,
                             "real pairs", limit=need, max_bad_fraction=pc.max_bad_fraction,
                             budget_key="clip.pairs.max_bad_fraction")
    else:
        from synscale.prompts.stages import captioned_pairs_stage

        res = captioned_pairs_stage(train_set, pc, need, cc.order_seed, cfg.data.shard_size, ctx.log)
    have = len(read_manifest(res.path))
    if have < max(cc.scales):
        raise ConfigError(f"clip.scales: the largest scale needs {max(cc.scales):,} captions but the real pairs have "
                          f"{have:,} ({res.path}); lower clip.scales")
    return res


def clip_generate(ctx: Context, pairs: StageResult, g: Any) -> StageResult:
    from synscale.generate.stages import clip_synthetic_set

    return clip_synthetic_set(g, pairs, ctx.log)
