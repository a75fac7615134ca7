"""Everything a study can know before its first stage, checked at plan time (`synscale study`, `--dry-run`
and `run_study`): each problem one ConfigError naming the study key and the fix, instead of a failure hours
in, after the real-data models are trained.

Checked: the dataset (it opens, its splits exist, at least two classes, enough images per class for the
largest real scale, images of one size where they are kept at native size), every classifier and reference
model name (timm or synscale's), every text-to-image model (`builtin:<family>[@<weights>]`, a diffusers
pipeline directory with a readable `model_index.json` and its parts, or a hub id that is cached or may be
downloaded), schedulers and dtypes, OOD and zero-shot evaluation sets and their class subsets. The study file's
own keys, types, strategies and recipes are validated when it is loaded (synscale.config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.errors import UserError
from synscale.generate.tuning import DTYPES
from synscale.modelref import builtin_family, is_builtin
from synscale.schema import ConfigError

SIZE_SAMPLE = 64  # images whose headers are read to find mixed sizes before the shards stage


def check_study(cfg: Any) -> None:
    """Raise ConfigError with the first problem found in `cfg` (a synscale.config.StudyConfig)."""
    found = problems(cfg)
    if found:
        raise ConfigError(found[0])


def problems(cfg: Any) -> list[str]:
    """Every problem found in `cfg`, one line each (each check runs on its own, so one problem does not hide
    the next: the dry-run lists them all)."""
    checks = []
    if cfg.scales:
        from synscale.train.models import check_model_name

        checks += [lambda: _check_data(cfg), lambda: check_model_name(cfg.train.model, "train.model")]
    if cfg.clip.scales:
        checks.append(lambda: _check_clip_pairs(cfg))
    if cfg.clip.scales and cfg.clip.pairs.dataset == "img2dataset":
        from synscale.data.datasets import create_dataset

        pc = cfg.clip.pairs
        checks.append(lambda: create_dataset("img2dataset", pc.root, pc.image_size))
    for g in [*cfg.synthetic, *(cfg.clip.synthetic if cfg.clip.scales else [])]:
        checks.append(lambda g=g: check_generator(g.model, g.scheduler, g.dtype, g.allow_download, f"synthetic {g.name!r}"))
        checks.append(lambda g=g: check_cascade(g, f"synthetic {g.name!r}"))
    checks.append(lambda: _check_evaluations(cfg))
    checks += [lambda r=r: _check_retrieved(r) for r in (cfg.retrieved if cfg.scales else [])]
    checks.append(lambda: _check_metric_weights(cfg.metrics))
    checks.append(lambda: _check_attribute_captioner(cfg))
    found: list[str] = []
    for check in checks:
        try:
            check()
        except (UserError, FileNotFoundError) as e:
            if str(e) not in found:  # a grid's configurations share their model
                found.append(str(e))
    return found


def _check_retrieved(rc: Any) -> None:
    """A [[retrieved]] source's pool (a synscale set, where it is not the training split) and open_clip weights."""
    if rc.pool != "train" and not (Path(rc.pool).expanduser() / "manifest.parquet").is_file():
        raise ConfigError(f"retrieved {rc.name!r}: pool {rc.pool!r} is not a synscale set (no manifest.parquet); give "
                          'a set directory (synscale shards --out DIR makes one from images), or "train"')
    if rc.clip.startswith("open_clip:"):
        weights = Path(rc.clip.split(":", 2)[2]).expanduser()
        if not weights.is_file():
            raise ConfigError(f"retrieved {rc.name!r}: clip weights {str(weights)!r}: no such file")
        if weights.suffix == ".safetensors":
            check_safetensors([weights], f"retrieved {rc.name!r}: clip weights", "give an open_clip state dict")


def _check_data(cfg: Any) -> None:
    from synscale.data.datasets import columns_of, create_dataset
    from synscale.data.subsets import per_class_counts

    from synscale.registry import UnknownName

    d = cfg.data
    try:
        ds = create_dataset(d.dataset, d.root, d.image_size, **columns_of(d))
    except UnknownName as e:
        raise ConfigError(f"data.dataset: {e}") from None
    splits = ds.splits()
    for key, split in (("data.train_split", d.train_split), ("data.test_split", d.test_split)):
        if splits and split not in splits:
            raise ConfigError(f"{key}: dataset {d.dataset} has no split {split!r} (it has: {', '.join(splits)})")
    n_classes = len(ds.labels)
    if n_classes < 2:
        raise ConfigError(f"data: dataset {d.dataset} ({d.root or 'default root'}) has {n_classes} class; a classifier "
                          "needs at least 2 (one folder per class)")
    counts = ds.class_counts(d.train_split)  # None: a source that cannot count without reading every image
    if counts is not None:
        for largest, who, fix in _real_needs(cfg):
            need = per_class_counts(largest, n_classes)
            short = [c for c in range(n_classes) if counts[c] < need[c]]
            if short:
                c = short[0]
                raise ConfigError(f"{who} needs {largest:,} real images, {need[c]} of class {ds.labels.names[c]!r}, "
                                  f"the {d.train_split} split has {counts[c]}; the largest balanced scale is "
                                  f"{min(counts) * n_classes:,}: {fix}")
    sizes = None if d.image_size else ds.image_sizes(d.train_split, SIZE_SAMPLE)
    if sizes:
        if len(set(sizes.values())) > 1:
            (f1, s1), (f2, s2) = [next((f, s) for f, s in sizes.items() if s == v) for v in list(dict.fromkeys(sizes.values()))[:2]]
            raise ConfigError(f"data.image_size: images of several sizes at native size ({f1}: {s1[0]}x{s1[1]}, "
                              f"{f2}: {s2[0]}x{s2[1]}); set data.image_size to resize and centre-crop them")


def _real_needs(cfg: Any) -> list[tuple[int, str, str]]:
    """(real images, who needs them, the fix) of the real curve's largest scale, its held-out models' and every
    [[mix]]'s real part, largest first: each is a nested class-balanced subset of the training split."""
    out = [(max(cfg.source_scales("real")), "scales: the real curve's largest scale", "lower data.scales (or scales)")]
    if cfg.holdout_scales("real"):
        out.append((max(cfg.holdout_scales("real")), "forecast.holdout: the real curve's largest held-out scale",
                    "lower forecast.holdout, or set it to [] to train no held-out models"))
    for m in cfg.mix:
        for s in cfg.source_scales(m.name):
            real = m.counts(s)[0]
            out.append((real, f"[[mix]] {m.name!r} at scale {s:,}", "lower its real_images (or real_fraction)"))
    return sorted(out, key=lambda r: -r[0])


def _check_clip_pairs(cfg: Any) -> None:
    """CLIP's largest scale has its captions: within clip.pairs.limit, and within the real split that captioned
    pairs are made of."""
    pc, largest = cfg.clip.pairs, max(cfg.clip.scales)
    if pc.limit and pc.limit < largest:
        raise ConfigError(f"clip.pairs.limit {pc.limit:,} is below the largest of clip.scales ({largest:,} captions); "
                          "raise the limit (0: as many as the largest scale needs) or lower clip.scales")
    if pc.dataset == "captioned":
        from synscale.data.datasets import columns_of, create_dataset

        d = cfg.data
        n = create_dataset(d.dataset, d.root, d.image_size, **columns_of(d)).count(d.train_split)
        if n is not None and n < largest:
            raise ConfigError(f"clip.scales: the largest scale needs {largest:,} captioned images, the {d.train_split} "
                              f"split of {d.dataset} has {n:,}; lower clip.scales")


def _check_attribute_captioner(cfg: Any) -> None:
    """The built-in `attributes` captioner reads grayscale images: a study that captions colour images with it
    (an in-captions configuration, or CLIP's captioned pairs) is told before it starts."""
    users = [f"[[synthetic]] {g.name!r} captioner" for g in cfg.synthetic if cfg.scales and g.strategy == "in-captions"
             and g.captioner == "attributes"]
    if cfg.clip.scales and cfg.clip.pairs.dataset == "captioned" and cfg.clip.pairs.captioner == "attributes":
        users.append("clip.pairs.captioner")
    if not users:
        return
    from synscale.data.datasets import columns_of, create_dataset

    d = cfg.data
    sample = next(iter(create_dataset(d.dataset, d.root, d.image_size, **columns_of(d)).samples(d.train_split)), None)
    if sample is None:
        return
    import numpy as np

    img = sample.image  # a numpy array or a PIL image (synscale.data.datasets.Sample)
    channels = (img.shape[2] if img.ndim == 3 else 1) if isinstance(img, np.ndarray) else len(img.getbands())
    if channels != 1:
        raise ConfigError(f"{users[0]}: the built-in 'attributes' captioner reads grayscale images, {d.dataset}'s have "
                          f"{channels} channels; caption them with a model ('hf:<image-to-text model>') or from a file "
                          "('file:<captions.csv|jsonl>')")


def check_generator(model: str, scheduler: str, dtype: str, allow_download: bool, where: str) -> None:
    """A text-to-image model that will load: a built-in family (and its weights), a pipeline directory, or a
    hub id that is in the local cache (or may be downloaded)."""
    from synscale.generate.diffusers_backend import BUILTIN_PIPELINES, SCHEDULERS, scheduler_problem

    if scheduler not in SCHEDULERS:
        raise ConfigError(f"{where}: unknown scheduler {scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"{where}: unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if is_builtin(model):
        _check_builtin(model, where)
        pipeline = BUILTIN_PIPELINES[builtin_family(model)[0]]
    elif Path(model).expanduser().exists() or model.startswith(("/", ".", "~")):
        pipeline = check_pipeline_dir(Path(model).expanduser(), where)
    elif not allow_download and not _hub_cached(model):
        raise ConfigError(f"{where}: model {model!r} is not a pipeline directory here, nor a hub id in the local "
                          "cache; give a diffusers pipeline directory, builtin:<family>, or set allow_download = true")
    else:
        return  # a hub id: its pipeline class is known once it loads (the generator checks the scheduler then)
    problem = scheduler_problem(pipeline, scheduler)
    if problem:
        raise ConfigError(f"{where}: {problem}")


def check_cascade(g: Any, where: str) -> None:
    """A generation config's upscale stages are pipeline directories (or hub ids) after a pipeline they can follow,
    and a kept safety checker is one the model has (synscale.generate.safety)."""
    from synscale.generate.safety import has_checker

    if g.upscale and is_builtin(g.model):
        raise ConfigError(f"{where}: upscale: the built-in families are not cascades; leave upscale out")
    for i, u in enumerate(g.upscale):
        check_generator(u.model, "default", g.dtype, g.allow_download, f"{where} upscale[{i}]")
    if g.safety_checker and not any(has_checker(m) is not False for m in (g.model, *(u.model for u in g.upscale))):
        raise ConfigError(f"{where}: safety_checker = true, but {g.model} has no safety checker to keep; leave it out")


def _check_builtin(model: str, where: str) -> None:
    from synscale.extras import MissingExtra, require
    from synscale.generate.builtin import FAMILIES, WEIGHTS_DIR

    try:
        require("builtin", f"model {model!r}")
    except MissingExtra as e:
        raise ConfigError(f"{where}: {e}") from None
    family, weights = builtin_family(model)
    if family not in FAMILIES.names():
        raise ConfigError(f"{where}: unknown built-in family {family!r} in {model!r}; choose from "
                          f"{', '.join(FAMILIES.names())}")
    path = Path(weights) if weights else WEIGHTS_DIR / family
    info = path / "family.json"
    if not info.exists():
        raise ConfigError(f"{where}: no built-in {family} weights in {path} (no family.json): train them with "
                          f"`synscale generator train --family {family} --out DIR`")
    try:
        got = json.loads(info.read_text()).get("family")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: {info} is not readable JSON ({e}); train the weights again") from None
    if got != family:
        raise ConfigError(f"{where}: {path} holds {got} weights, not {family}")
    check_safetensors(sorted(path.glob("*.safetensors")), where, "train the weights again or restore them")


def check_pipeline_dir(path: Path, where: str) -> str:
    """A diffusers pipeline directory: `model_index.json` readable, naming its class, with every part's folder.
    Returns the pipeline's class name."""
    if not path.is_dir():
        raise ConfigError(f"{where}: no pipeline directory {path}")
    index = path / "model_index.json"
    if not index.exists():
        raise ConfigError(f"{where}: {path} is not a diffusers pipeline directory (no model_index.json); give "
                          "the directory `pipeline.save_pretrained(...)` wrote")
    try:
        spec = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: {index} is not readable JSON ({e})") from None
    if not isinstance(spec, dict) or "_class_name" not in spec:
        raise ConfigError(f"{where}: {index} names no pipeline class (_class_name)")
    for part, value in spec.items():
        if part.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if not (path / part).is_dir():
            raise ConfigError(f"{where}: {path} lacks the folder of its part {part!r} ({value[1]}) that "
                              "model_index.json lists")
        check_safetensors(sorted((path / part).glob("*.safetensors")), where, "download or save the pipeline again")
    return str(spec["_class_name"])


def check_safetensors(files: list[Path], where: str, fix: str) -> None:
    """Each safetensors file's header is readable and the file holds every byte the header lists (a truncated
    or damaged download is found now, not when the model loads after hours of other stages). Reads headers only."""
    import struct

    for f in files:
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n)) if n < 1 << 30 else None
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            whole = f.stat().st_size >= 8 + n + max(ends, default=0)
        except (OSError, ValueError, struct.error, TypeError, KeyError, IndexError, AttributeError):
            whole = False
        if not whole:
            raise ConfigError(f"{where}: {f} is not whole safetensors weights (cut short or damaged); {fix}")


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:  # an id the hub library rejects
        return False


def _check_metric_weights(metrics: Any) -> None:
    """Weights the study names for the paper's LPIPS / FID exist, and so do the packages that run them."""
    from synscale.extras import MissingExtra, require

    for key in ("alexnet_weights", "inception_weights"):
        given = getattr(metrics, key)
        if not given or not metrics.per_class:
            continue
        if not Path(given).expanduser().exists():
            raise ConfigError(f"metrics.{key}: {given} does not exist; give the weights file, or leave it empty")
        try:
            require("paper-metrics", f"metrics.{key}")
        except MissingExtra as e:
            raise ConfigError(str(e)) from None


def _check_evaluations(cfg: Any) -> None:
    from synscale.data.datasets import columns_of, create_dataset
    from synscale.data.ood import class_subset

    labels = None
    for s in cfg.evaluate.sets:
        if s.dataset == "hf" and not s.preset:  # a save_to_disk directory or a hub name in the cache
            try:
                create_dataset("hf", s.root, s.image_size, **columns_of(s))
            except UserError as e:
                raise ConfigError(f"evaluate.sets {s.name!r}: {e}") from None
        elif not Path(s.root).exists():
            raise ConfigError(f"evaluate.sets {s.name!r}: root {s.root} does not exist")
        if s.class_subset not in ("auto", "all") and not Path(s.class_subset).is_file():
            raise ConfigError(f"evaluate.sets {s.name!r}: class_subset {s.class_subset!r} is not auto, all or a file "
                              "of wnids or class names")
        if cfg.scales and s.class_subset != "all":  # its classes must be the study's
            labels = labels or create_dataset(cfg.data.dataset, cfg.data.root, cfg.data.image_size,
                                              **columns_of(cfg.data)).labels
            try:
                class_subset(labels, s.class_subset, s.preset, [])
            except UserError as e:
                raise ConfigError(f"evaluate.sets {s.name!r}: {e}") from None
    for p in cfg.evaluate.probes:
        _open(p, f"evaluate.probes {p.name!r}")
    if cfg.clip.scales:
        for z in cfg.evaluate.zero_shot:
            labels = _open(z, f"evaluate.zero_shot {z.name!r}").labels
            if labels is None or len(labels) < 2:
                raise ConfigError(f"evaluate.zero_shot {z.name!r}: {z.root or z.dataset} has "
                                  f"{len(labels) if labels is not None else 'no'} class names; zero-shot "
                                  "classification needs a labelled set of 2 or more classes")


def _open(table: Any, key: str) -> Any:
    """The dataset an evaluation table names, opened; a problem with it names the table."""
    from synscale.data.datasets import columns_of, create_dataset

    try:
        return create_dataset(table.dataset, table.root, table.image_size, **columns_of(table))
    except UserError as e:
        raise ConfigError(f"{key}: {e}") from None
