"""The study layer's own stage functions, where a stage composes packages: the choice of the grid's best and
worst configurations and their models, the metrics of a configuration (the reference network judging a set) and
CLIP's real pairs (the reference network's own: synscale.study.reference). They have the one stage signature,
fn(ctx, *, <input stages>, <params>) -> StageResult, as every package's stage function has; the plan
(synscale.study.build) names either kind directly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.config import ConfigError, StudyConfig
from synscale.stage import Context, StageResult


def select(ctx: Context, *, evals: tuple[StageResult, ...], names: list[str], eval_set: str = "val") -> StageResult:
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


def train_picked(ctx: Context, *, pick: StageResult, real: StageResult | None, sets: tuple[StageResult, ...],
                 which: str, names: list[str], tc: Any, n_real: int, n_syn: int, seed: int, label: str) -> StageResult:
    """A model on the picked configuration's set (`sets[i]` is `names[i]`'s): `n_syn` of its images, plus
    `n_real` real ones (a mix); the same stage a curve of that configuration by name would train."""
    from synscale.data.stages import subset
    from synscale.train.stages import train

    name = picked(pick, which)
    gen = sets[names.index(name)]
    parts = tuple(x for s, n in ((real, n_real), (gen, n_syn)) if n
                  for x in (s, subset(ctx, set_stage=s, scale=n, seed=seed)))
    return train(ctx, parts=parts, tc=tc, scale=n_real + n_syn, name=label.format(name=name))


def metrics(ctx: Context, *, train: StageResult, test: StageResult, trained: StageResult | None,
            generated: StageResult | None, syn_test: StageResult | None, cfg: StudyConfig, name: str) -> StageResult:
    """A configuration's metrics (`generated` None: the real data's), judged by the study's reference network
    (`trained`, or `metrics.reference`; built once per process)."""
    from synscale.metrics.run import metrics_stage, real_test_keys
    from synscale.study.reference import reference

    train_set, test_set = train, test
    key = ("reference", trained.id if trained else cfg.metrics.reference)
    ref = ctx.memo.get(key)
    if ref is None:
        ref = ctx.memo[key] = reference(ctx, cfg, train_set, trained)
    mc = cfg.metrics
    if generated is None:  # the real data
        st = metrics_stage(ctx, test=test_set, real_val=test_set, fd_set=train_set, real_train=train_set, mc=mc, ref=ref,
                           name="real", test_keys=real_test_keys(test_set, mc.per_class, mc.seed))
    elif syn_test is None:  # metrics.test_from = "training": a class-balanced sample of its training set
        from synscale.metrics.run import test_keys

        st = metrics_stage(ctx, test=generated, real_val=test_set, fd_set=generated, real_train=train_set, mc=mc, ref=ref,
                           name=name, test_keys=test_keys(generated.path, mc.per_class, mc.seed))
    else:
        st = metrics_stage(ctx, test=syn_test, real_val=test_set, fd_set=generated, real_train=train_set, mc=mc, ref=ref,
                           name=name, test_keys=None)
    ctx.log.stage(f"metrics {name}", st)
    return st


def pairs(ctx: Context, *, train: StageResult | None, cfg: StudyConfig) -> StageResult:
    """CLIP's real pairs, as many as the largest CLIP scale needs: img2dataset shards, or the study's real
    training images (`train`) captioned."""
    from synscale.data.shards import read_manifest

    pc, cc = cfg.clip.pairs, cfg.clip
    need = pc.limit or max(cc.scales)
    if pc.dataset == "img2dataset":
        from synscale.data.encoding import ImageEncoding
        from synscale.data.stages import dataset_shards

        res = dataset_shards(ctx, dataset="img2dataset", root=pc.root, image_size=pc.image_size,
                             shard_size=cfg.data.shard_size, split="train", what="real pairs", limit=need,
                             max_bad_fraction=pc.max_bad_fraction, budget_key="clip.pairs.max_bad_fraction",
                             encoding=ImageEncoding(pc.image_format, pc.image_quality))
    else:
        from synscale.prompts.stages import captioned_pairs_stage

        res = captioned_pairs_stage(ctx, train=train, pc=pc, need=need, order_seed=cc.order_seed,
                                    shard_size=cfg.data.shard_size)
    have = len(read_manifest(res.path))
    if have < max(cc.scales):
        raise ConfigError(f"clip.scales: the largest scale needs {max(cc.scales):,} captions but the real pairs have "
                          f"{have:,} ({res.path}); lower clip.scales")
    return res
