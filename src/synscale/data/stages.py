"""The data stages of a study (see synscale.stage): a dataset split written as shards, a nested subset of a
set, an OOD evaluation set in a study's label space. Each has the one stage signature, fn(ctx, *, <input stages>,
<params>) -> StageResult."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.data.encoding import ImageEncoding
from synscale.schema import identity
from synscale.stage import Context, StageResult, run_stage


def dataset_shards(ctx: Context, *, dataset: str, root: str, image_size: int, shard_size: int, split: str,
                   what: str = "real shards", limit: int = 0, columns: dict[str, str] | None = None,
                   max_bad_fraction: float = 0.0, budget_key: str = "data.max_bad_fraction",
                   encoding: ImageEncoding = ImageEncoding()) -> StageResult:
    """A dataset split (its first `limit` readable samples; 0: all) written as synscale shards. `columns`: the
    image_column / label_column that differ from the defaults (synscale.data.datasets.columns_of). A large
    split is decoded in worker processes (synscale.data.shards.default_workers); they change no byte of the
    set, so they are not in the stage's params. Samples that cannot be read are skipped up to `max_bad_fraction`
    (named `budget_key` in errors) and recorded in the set; the budget is a check, not part of the set's identity:
    a set made under a larger budget than the study's now is an error, not reused. `encoding`: how the set stores
    its images (synscale.data.encoding; a lossy format is in the set's identity, `auto` and `png` are not)."""
    from synscale.data.datasets import create_dataset
    from synscale.data.shards import skipped_record, write_dataset_split

    columns = columns or {}
    ds = create_dataset(dataset, root, image_size, **columns)
    params = shards_params(dataset, root, image_size, shard_size, split, limit, columns, encoding)
    res = run_stage(ctx.workdir, "shards", params, {"source": ds.fingerprint()},
                    lambda out: write_dataset_split(ds, split, out, shard_size, progress=not ctx.log.quiet, limit=limit,
                                                    workers=0, max_bad_fraction=max_bad_fraction, budget_key=budget_key,
                                                    encoding=encoding))
    record = skipped_record(res.path)
    n = record["skipped"]
    if n > max_bad_fraction * (n + record["samples"]):
        from synscale.schema import ConfigError

        raise ConfigError(f"{what} [{split}]: the set {res.path} skipped {n:,} unreadable samples of {n + record['samples']:,}, "
                          f"more than {budget_key} = {max_bad_fraction:g} allows; raise it, or delete {res.path} to "
                          "write the set again")
    skipped = f" (skipped {n:,} unreadable: {', '.join(f'{r} {c:,}' for r, c in record['reasons'].items())})" if n else ""
    ctx.log.stage(f"{what} [{split}]{skipped}", res)
    return res


CAPTION_SETS_MAX_BAD = 0.01  # the default error budget of image-text pairs (img2dataset): web crawls hold a few bad ones


def shards_params(dataset: str, root: str, image_size: int, shard_size: int, split: str, limit: int,
                  columns: dict[str, str], encoding: ImageEncoding = ImageEncoding()) -> dict[str, Any]:
    """What decides a dataset split's shards (beside the source's own fingerprint): a shards stage's params, and
    what `synscale shards` records beside the set it writes."""
    return {"dataset": dataset, "root": root, "image_size": image_size, "shard_size": shard_size, "split": split,
            **({"limit": limit} if limit else {}), **columns, **encoding.params()}


def shards_to_dir(dataset: str, root: str, image_size: int, shard_size: int, split: str, out: Path, *, limit: int = 0,
                  columns: dict[str, str] | None = None, workers: int = 0, max_bad_fraction: float | None = None,
                  overwrite: bool = False, encoding: ImageEncoding = ImageEncoding()) -> tuple[int, int] | None:
    """`synscale shards`: a dataset split written as synscale shards into the directory `out` (whole, or killed: not
    at all), with `shards.json` recording what decides it; None where `out` holds this set already. Returns (samples
    written, samples skipped as unreadable). `max_bad_fraction` None: image-text pairs may skip a few
    (CAPTION_SETS_MAX_BAD), labelled sets none."""
    from synscale.data.datasets import create_dataset
    from synscale.data.shards import check_out_dir, skipped_record, write_dataset_split
    from synscale.stage import building_dir

    columns = columns or {}
    ds = create_dataset(dataset, root, image_size, **columns)
    budget = max_bad_fraction if max_bad_fraction is not None else (CAPTION_SETS_MAX_BAD if ds.labels is None else 0.0)
    made = {**shards_params(dataset, root, image_size, shard_size, split, limit, columns, encoding), "limit": limit,
            "source": ds.fingerprint(), **({"max_bad_fraction": budget} if budget else {})}
    record = out / "shards.json"
    if not overwrite and (out / "manifest.parquet").exists() and record.exists() and read_json(record) == made:
        return None  # the same command again: the set is there
    check_out_dir(out, overwrite)
    with building_dir(out) as tmp:  # the set appears whole, or (killed) not at all; a rerun starts again
        n = write_dataset_split(ds, split, tmp, shard_size, limit=limit, workers=workers, max_bad_fraction=budget,
                                encoding=encoding)
        (tmp / "shards.json").write_text(json.dumps(made, indent=1))
    return n, skipped_record(out)["skipped"]


def shards(ctx: Context, *, data: Any, split: str, what: str = "real shards", dataset: str = "", root: str = "",
           image_size: int = 0, columns: dict[str, str] | None = None) -> StageResult:
    """A split of a study's dataset (synscale.config.DataConfig `data`) as shards, or with `dataset` a split of
    another one (a probe's or zero-shot set's, `root`, `image_size`, its `columns`) in the study's shard size."""
    from synscale.data.datasets import columns_of

    if dataset:
        return dataset_shards(ctx, dataset=dataset, root=root, image_size=image_size, shard_size=data.shard_size,
                              split=split, what=what, columns=columns)
    return dataset_shards(ctx, dataset=data.dataset, root=data.root, image_size=data.image_size,
                          shard_size=data.shard_size, split=split, what=what, columns=columns_of(data),
                          max_bad_fraction=data.max_bad_fraction,
                          encoding=ImageEncoding(data.image_format, data.image_quality))


def subset(ctx: Context, *, set_stage: StageResult, scale: int, seed: int, order: str = "class") -> StageResult:
    """The nested subset of `scale` samples: class-balanced (synscale.data.subsets), or with `order =
    "caption"` the first `scale` captions of a pair set (synscale.data.pairs.caption_subset)."""
    params = {"scale": scale, "order_seed": seed, **({"order": order} if order != "class" else {})}
    return run_stage(set_stage.root, "subset", params, {"set": set_stage.id},
                     lambda out: write_subset(set_stage.path, scale, seed, order, out / "subset.parquet"))


def key_subset(ctx: Context, *, set_stage: StageResult, keys: list[str], why: str) -> StageResult:
    """A subset stage of `set_stage` that holds exactly `keys`, in that order and repeats included (a class drawn
    more than once: synscale.study.adaptive's balanced rounds); `why` names the rule that chose them."""
    import hashlib

    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]

    def fn(out: Path) -> None:
        import pandas as pd

        pd.DataFrame({"key": keys}).to_parquet(out / "subset.parquet", index=False)

    return run_stage(set_stage.root, "subset", {"keys": digest, "n": len(keys), "rule": why}, {"set": set_stage.id}, fn)


def write_subset(set_dir: Path, scale: int, seed: int, order: str, path: Path) -> None:
    """The keys of a set's nested subset of `scale` samples (`order`: "class", class-balanced; "caption", the first
    `scale` captions) as a parquet file at `path`: what a subset stage holds and `synscale train --scale` trains on.
    ValueError where the set has too few samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synscale.data.pairs import caption_subset
    from synscale.data.shards import manifest_table, read_manifest
    from synscale.data.subsets import subset_keys
    from synscale.labels import LabelSet

    if order == "caption":  # the keys alone, as Arrow: a LAION-scale set's captions would not fit as Python strings
        keys = caption_subset(manifest_table(set_dir, ["key"]), scale, seed)
        pq.write_table(pa.table({"key": keys}), path)
        return
    import pandas as pd

    keys = subset_keys(read_manifest(set_dir), scale, len(LabelSet.load(Path(set_dir) / "labels.json")), seed)
    pd.DataFrame({"key": keys}).to_parquet(path, index=False)


def first_image(set_stage: StageResult) -> Any:
    """A set's first image (H x W or H x W x C uint8)."""
    from synscale.data.shards import decode_png, iter_samples

    return decode_png(next(iter_samples(set_stage.path))[1])


def image_format(set_stage: StageResult) -> tuple[int, int]:
    """(side, channels) of a set's first image: what generated images are brought to."""
    first = first_image(set_stage)
    return first.shape[0], 1 if first.ndim == 2 else first.shape[2]


def ood_set(ctx: Context, *, base: StageResult, spec: Any, image_size: int, shard_size: int) -> StageResult:
    """An `[[evaluate.sets]]` set (synscale.config.OODSetConfig) written as shards in the label space of the set
    `base` (its `ood.json` holds the class subset it covers), at `image_size` (0: the study's images')."""
    train_set, log = base, ctx.log
    from synscale.data.datasets import columns_of
    from synscale.data.ood import fingerprint, write_ood_set
    from synscale.labels import LabelSet

    labels = LabelSet.load(train_set.path / "labels.json")
    first = first_image(train_set)
    size, channels = max(first.shape[:2]), 1 if first.ndim == 2 else 3
    params = {"set": identity(spec), "image_size": image_size or size, "channels": channels, "shard_size": shard_size}
    res = run_stage(train_set.root, "ood", params, {"labels": train_set.id,
                                                    "files": fingerprint(spec.root, spec.dataset, columns_of(spec))},
                    lambda o: write_ood_set(labels, spec, image_size or size, channels, o, shard_size, not log.quiet))
    subset_ = ood_class_subset(res)
    log.stage(f"OOD set {spec.name}" + (f" ({len(subset_)} classes)" if subset_ else ""), res)
    return res


def ood_class_subset(ood_stage: StageResult) -> list[int] | None:
    """The study's classes that an OOD set covers (None: all of them)."""
    return read_json(ood_stage.path / "ood.json")["class_subset"]
