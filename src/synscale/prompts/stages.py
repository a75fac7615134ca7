"""The captioning stage of a study (see synscale.stage): CLIP's real pairs made from a labelled training
set, its first images in the caption order, each with a caption by a captioner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.schema import ConfigError
from synscale.stage import StageResult, run_stage


def captioned_pairs_stage(train_set: StageResult, pc: Any, need: int, order_seed: int, shard_size: int,
                          log: Any) -> StageResult:
    """The first `need` images of `train_set` in the caption order (so the subsets are nested), captioned by
    `pc.captioner` (synscale.config.PairsConfig)."""
    from synscale.data.pairs import caption_order
    from synscale.data.shards import read_manifest
    from synscale.data.stages import image_format
    from synscale.prompts.captioners import captioned_pairs

    keys = caption_order(read_manifest(train_set.path)["key"].tolist(), order_seed)
    if need > len(keys):
        raise ConfigError(f"clip.scales: {need:,} captions needed but the real training split has {len(keys):,} images; "
                          "lower clip.scales (or clip.pairs.limit)")
    if pc.captioner == "attributes" and image_format(train_set)[1] != 1:
        raise ConfigError("clip.pairs.captioner = 'attributes' reads grayscale images (an object on a dark background); "
                          "for colour images give captions (file:<csv>) or an image-to-text model (hf:<model>)")
    params = {"captioner": pc.captioner, "pairs": need, "order_seed": order_seed}
    inputs = {"set": train_set.id}
    if pc.captioner.startswith("file:"):  # the captions themselves, so an edited file is not mistaken for the old one
        from synscale.data.datasets import file_digest

        inputs["captions"] = file_digest(Path(pc.captioner[5:]))
    res = run_stage(train_set.root, "pairs", params, inputs,
                    lambda out: captioned_pairs(train_set.path, keys[:need], pc.captioner, out, shard_size,
                                                not pc.allow_download, progress=not log.quiet))
    log.stage(f"real pairs ({need:,} captioned images)", res)
    return res
