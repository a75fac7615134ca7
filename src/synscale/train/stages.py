"""The training stage of a study (see synscale.stage): a recipe trained on nested subsets of sets, in this
process or under torchrun, resumable from its newest checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.schema import to_dict
from synscale.stage import Context, StageResult, run_stage
from synscale.train.config import TrainConfig, train_identity


def train(ctx: Context, *, parts: tuple[StageResult, ...], tc: TrainConfig, scale: int, name: str,
          real_prob: float | None = None) -> StageResult:
    """Train `tc` on the keys of each (set, subset) of `parts` (set, subset, set, subset, ...: more than one pair is
    a mixed set; with `real_prob`, CLIP's mixed pairs) for the schedule's iterations at `scale`. In this process
    (small sets decoded once per process, ctx.cache), under torchrun when tc.nproc > 1, or across machines through
    Ray Train when tc.nodes > 1. Resumable: an
    interrupted stage continues from its newest checkpoint."""
    pairs = list(zip(parts[::2], parts[1::2], strict=True))
    set_stage, sub = pairs[0]
    cache, log = ctx.cache, ctx.log

    def fn(out: Path) -> None:
        import shutil

        from synscale.data.shards import read_labels
        from synscale.train.launch import launch, make_source, make_spec

        labels = read_labels(set_stage.path)
        spec = make_spec(to_dict(tc), [(s.path, u.path / "subset.parquet") for s, u in pairs],
                         len(labels) if labels else 0, scale, out, real_prob)
        source = None
        if tc.nodes > 1:
            log(f"train {name} D={scale}: Ray Train, {tc.nodes} machines x {tc.nproc} processes")
        elif tc.nproc > 1:
            log(f"train {name} D={scale}: torchrun, {tc.nproc} processes")
        else:
            source = make_source(spec["parts"], tc.loader, real_prob,
                                 arrays=lambda s, k: cache.get(s, k, captions=tc.task == "contrastive"))
        launch(spec, tc.nproc, source, progress=not log.quiet, desc=f"train {name} D={scale}", nodes=tc.nodes)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for index in [*out.glob("loader-index-*"), *out.glob(".loader-index-*")]:  # and their locks
            if index.is_dir():
                shutil.rmtree(index, ignore_errors=True)
            else:
                index.unlink(missing_ok=True)

    inputs = {"set": set_stage.id, "subset": sub.id}
    for i, (s, u) in enumerate(pairs[1:]):
        inputs |= {f"set{i + 1}": s.id, f"subset{i + 1}": u.id}
    params = {"train": identity(tc, scale), "scale": scale, **({"real_prob": real_prob} if real_prob is not None else {})}
    res = run_stage(set_stage.root, "train", params, inputs, fn, resumable=True)
    log.stage(f"train {name} D={scale}", res)
    return res


def identity(tc: TrainConfig, scale: int) -> dict[str, Any]:
    """The recipe as it enters a train stage's id at `scale`: a min_epochs floor that does not set the run's
    length there changes nothing, so it stays out (the ids of runs above the floor are as without it)."""
    from synscale.train.schedule import floored

    ident = train_identity(tc)
    if not floored(scale, tc):
        ident["schedule"].pop("min_epochs", None)
    return ident


def load_model(train_stage: StageResult, cfg_train: dict[str, Any]) -> Any:
    """The trained network of a train stage, in eval mode."""
    from synscale.train.models import load_trained

    return load_trained(train_stage.path, cfg_train)[0]
