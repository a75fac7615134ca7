"""The generation stages of a study (see synscale.stage): a synthetic training set per `[[synthetic]]`
configuration (class-balanced prompts) and CLIP's synthetic pairs (one image per real caption). Both are
the resumable `generate` stage, in this process or on Ray Data (synscale.generate.runner)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from synscale.schema import identity as config_identity
from synscale.generate.runner import prompts_hash
from synscale.stage import Context, StageResult, run_stage


def synthetic_set(ctx: Context, *, train: StageResult, captions: StageResult | None = None, syn: Any, data: Any,
                  max_scale: int, what: str = "") -> StageResult:
    """Generate `syn`'s (synscale.config.SyntheticConfig) class-balanced set, enough for `max_scale` images
    unless syn.per_class says, at the resolution and channels of the real set `train` (resumable). `data`: the
    study's synscale.config.DataConfig; `captions`: the in-captions strategy's caption pool of its training images
    (synscale.prompts.stages.caption_pool)."""
    train_set, log = train, ctx.log
    from synscale.data.stages import image_format
    from synscale.labels import LabelSet
    from synscale.prompts.strategies import make_context, make_prompts

    labels = LabelSet.load(train_set.path / "labels.json")
    per_class = syn.per_class or math.ceil(max_scale / len(labels))
    resolution, channels = image_format(train_set)
    pool = None
    if syn.strategy == "in-captions":
        from synscale.prompts.stages import read_caption_pool

        if captions is None:
            raise ValueError(f"{syn.name}: in-captions needs its caption pool stage")
        pool = read_caption_pool(captions)
    prompts = make_prompts(syn.strategy, make_context(labels, data.dataset, captions=pool), per_class, syn.seed)
    params = {"synthetic": identity(syn),
              "per_class": per_class, "resolution": resolution, "channels": channels, "prompts": prompts_hash(prompts)}
    return generate_stage(syn, prompts, labels, resolution, channels, params, train_set, {"labels": train_set.id}, log,
                          what or syn.name)


def clip_synthetic_set(ctx: Context, *, pairs: StageResult, g: Any) -> StageResult:
    """`[[clip.synthetic]]` `g`: an image for every caption of the real pairs, under the same keys."""
    log = ctx.log
    from synscale.data.shards import read_labels, read_manifest
    from synscale.data.stages import image_format
    from synscale.prompts.strategies import caption_prompts

    prompts = caption_prompts(read_manifest(pairs.path), g.seed)
    resolution, channels = image_format(pairs)
    params = {"clip_synthetic": identity(g),
              "resolution": resolution, "channels": channels, "prompts": prompts_hash(prompts)}
    return generate_stage(g, prompts, read_labels(pairs.path), resolution, channels, params, pairs, {"pairs": pairs.id},
                          log, g.name)


def identity(g: Any) -> dict[str, Any]:
    """What of a generation config `g` decides its set's bytes: its keys by their declared rule (synscale.schema:
    not where it runs), with the tuned settings resolved for the device that generates (synscale.generate.tuning);
    safety_checker, added later, is in the id only where it differs from its default, except in the id of every
    set whose pipeline (or an upscaler of its cascade) has one, or may have one (synscale.generate.safety): such
    sets made before checkers were left out held black images under their labels."""
    from synscale.generate.safety import has_checker
    from synscale.generate.tuning import identity, settings_of

    keys = config_identity(g)
    if any(has_checker(m) is not False for m in (g.model, *(u.model for u in g.upscale))):
        keys["safety_checker"] = g.safety_checker
    return identity({**keys, **settings_of(g)})


def generate_stage(g: Any, prompts: Any, labels: Any, resolution: int, channels: int, params: dict[str, Any],
                   parent: StageResult, inputs: dict[str, str], log: Any, what: str) -> StageResult:
    """The resumable `generate` stage of a generation config `g` (synscale.config.GenerationConfig)."""
    from synscale.generate.runner import generate_set, generator_spec

    spec = generator_spec(g, resolution, channels)

    def fn(out: Path) -> None:
        generate_set(spec, prompts, labels, out, g.guidance, spec.kwargs["batch_size"], g.shard_size, progress=not log.quiet,
                     executor=g.executor, ray_actors=g.ray_actors, ray_num_cpus=g.ray_cpus, ray_num_gpus=g.ray_gpus)

    res = run_stage(parent.root, "generate", params, inputs, fn, resumable=True)
    log.stage(f"generate {what} ({len(prompts):,} images)", res)
    return res
