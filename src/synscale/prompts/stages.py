"""The captioning stages of a study (see synscale.stage): the captions that in-captions prompts draw from (a
pool of real training images per class, captioned), and CLIP's real pairs made from a labelled training set,
its first images in the caption order, each with a caption by a captioner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.schema import ConfigError
from synscale.stage import Context, StageResult, run_stage


def captioned_pairs_stage(ctx: Context, *, train: StageResult, pc: Any, need: int, order_seed: int,
                          shard_size: int) -> StageResult:
    """The first `need` images of the labelled set `train` in the caption order (so the subsets are nested),
    captioned by `pc.captioner` (synscale.config.PairsConfig)."""
    from synscale.data.pairs import caption_order
    from synscale.data.shards import read_manifest
    from synscale.data.stages import image_format
    from synscale.prompts.captioners import captioned_pairs

    train_set, log = train, ctx.log

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


CAPTION_POOL = 200  # real training images per class whose captions the in-captions prompts draw from


def caption_pool(ctx: Context, *, train: StageResult, captioner: str, seed: int, allow_download: bool = False,
                 pool: int = CAPTION_POOL) -> StageResult:
    """The in-captions strategy's captions: up to `pool` real training images per class (the first of each class in
    the nested-subset order, synscale.prompts.captioners.caption_keys), each captioned by `captioner`, as
    `captions.parquet` (key, label, caption, in that order). A stage of its own, run once per captioner and seed
    with the captioner's resources (an `hf:` model's GPU) and cached: a study used to caption every in-captions
    configuration on every run before it knew whether its set was already generated. The images are read from the
    real training shards and captioned in batches, never held whole (200 per class of ImageNet is 39 GB decoded).
    `allow_download`: an hf: captioner may be fetched."""
    train_set, log, local_files_only = train, ctx.log, not allow_download
    params = {"captioner": captioner, "pool": pool, "seed": seed}
    inputs = {"set": train_set.id}
    if captioner.startswith("file:"):  # the captions themselves, so an edited file is not mistaken for the old one
        from synscale.data.datasets import file_digest

        inputs["captions"] = file_digest(Path(captioner[5:]))
    res = run_stage(train_set.root, "captions", params, inputs,
                    lambda out: _write_pool(train_set.path, captioner, pool, seed, local_files_only, out, log.quiet))
    log.stage(f"captions of real images ({captioner})", res)
    return res


def _write_pool(set_dir: Path, captioner: str, pool: int, seed: int, local_files_only: bool, out: Path,
                quiet: bool) -> None:
    import pandas as pd

    from synscale.data.shards import read_labels, read_manifest
    from synscale.prompts.captioners import caption_keys, check_file_keys

    manifest = read_manifest(set_dir)[["key", "label"]]
    labels = read_labels(set_dir)
    if labels is None:
        raise ConfigError(f"{set_dir}: in-captions needs a labelled real training set")
    keys = caption_keys(manifest, len(labels), pool, seed)
    texts = _caption_batches(set_dir, keys, captioner, local_files_only, quiet)
    check_file_keys(captioner, texts, keys)
    label_of = manifest.set_index("key")["label"]
    pd.DataFrame({"key": keys, "label": label_of.loc[keys].to_numpy(), "caption": texts}).to_parquet(
        out / "captions.parquet", index=False)


def _caption_batches(set_dir: Path, keys: list[str], captioner: str, local_files_only: bool, quiet: bool,
                     batch: int = 256) -> list[str | None]:
    """Captions of `keys` of a set (in their order), its images decoded and captioned `batch` at a time."""
    import numpy as np

    from synscale.data.shards import decode_png, iter_samples
    from synscale.progress import bar
    from synscale.prompts.captioners import caption_images

    if captioner.startswith("file:"):
        return caption_images(captioner, None, keys)
    model = None
    if captioner.startswith("hf:"):
        from synscale.prompts.hf_backends import ImageToTextCaptioner

        model = ImageToTextCaptioner(captioner[3:], local_files_only=local_files_only)
    found: dict[str, str | None] = {}
    pending: list[tuple[str, Any]] = []

    def flush() -> None:
        texts = caption_images(captioner, np.stack([im for _, im in pending]), [k for k, _ in pending], model=model)
        found.update(zip([k for k, _ in pending], texts, strict=True))
        pending.clear()

    with bar(total=len(keys), desc="captions", unit="img", disable=quiet) as progress:
        for key, png, _ in iter_samples(set_dir, keys):
            pending.append((key, decode_png(png, f"{set_dir}: sample {key!r}")))
            if len(pending) == batch:
                progress.update(len(pending))
                flush()
        if pending:
            progress.update(len(pending))
            flush()
    return [found[k] for k in keys]


def read_caption_pool(captions: StageResult) -> dict[int, list[str]]:
    """Class index -> the captions of its real images, from a caption_pool stage."""
    import pandas as pd

    from synscale.prompts.captioners import by_class

    table = pd.read_parquet(captions.path / "captions.parquet")
    return by_class(table["label"].tolist(), table["caption"].tolist())
