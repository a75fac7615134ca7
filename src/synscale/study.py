"""Expand a study into stages and run them: real shards (and, per `[[synthetic]]` configuration, a
generated set) -> nested subsets -> train -> evaluate on the real test set; per configuration a test set
and its metrics (synscale.metrics) -> results tables -> fits -> report. Every step is a stage on disk (see `synscale.stage`), so a study
that is run again skips what is complete and redoes what was interrupted.

Workdir layout:
    W/stages/<kind>/<id>/        stage outputs (content-addressed)
    W/results/*.parquet          the tables that fits and the report read
    W/report/index.html          the report
    W/study.json                 the resolved config of the last run
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synscale.config import GENERATION_RUN_ONLY, ClipSyntheticConfig, ConfigError, StudyConfig, to_dict
from synscale.stage import StageResult, run_stage


@dataclass(frozen=True)
class TrainedModel:
    source: str  # "real", or the synthetic configuration's or mix's name
    config: str
    scale: int  # training images
    stage: StageResult
    real_images: int = 0  # of which real
    run: int = 0  # repeat index (train.seed + run)
    task: str = "classification"  # or "clip" (a contrastive model, evaluated zero-shot)
    synthetic_images: int | None = None  # None: scale - real_images (CLIP's mixed pairs: every caption has both)


@dataclass
class Log:
    """Study progress on stderr: one line per stage, cached ones marked."""

    quiet: bool = False
    t0: float = field(default_factory=time.time)

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def stage(self, what: str, res: StageResult) -> None:
        secs = res.info()["wall_seconds"]
        self(f"{what}: {'cached' if res.skipped else f'done in {secs:.1f}s'}  ({res.kind}/{res.id})")


class ArrayCache:
    """Decoded sets kept in memory for the length of a run (small images only)."""

    def __init__(self) -> None:
        self._sets: dict[Path, tuple[Any, Any, dict[str, int], Any]] = {}

    def get(self, set_dir: Path, keys: list[str] | None = None, captions: bool = False) -> tuple[Any, ...]:
        """(images, labels), or (images, labels, captions) of the set or of `keys` of it."""
        import numpy as np

        from synscale.data.shards import load_arrays, read_captions

        if set_dir not in self._sets:
            images, labels, all_keys = load_arrays(set_dir)
            texts = read_captions(set_dir)
            self._sets[set_dir] = (images, labels, {k: i for i, k in enumerate(all_keys)},
                                   None if texts is None else np.asarray(texts, dtype=object))
        images, labels, pos, texts = self._sets[set_dir]
        idx = slice(None) if keys is None else [pos[k] for k in keys]
        if not captions:
            return images[idx], labels[idx]
        if texts is None:
            raise ValueError(f"{set_dir}: the set has no captions")
        return images[idx], labels[idx], texts[idx]


# ---------------------------------------------------------------------------------------------------
# Stages


def real_shards(cfg: StudyConfig, workdir: Path, split: str, log: Log) -> StageResult:
    return dataset_shards(workdir, cfg.data.dataset, cfg.data.root, cfg.data.image_size, cfg.data.shard_size, split, log)


def dataset_shards(workdir: Path, dataset: str, root: str, image_size: int, shard_size: int, split: str, log: Log,
                   what: str = "real shards", limit: int = 0) -> StageResult:
    """A dataset split (its first `limit` samples; 0: all) written as synscale shards."""
    from synscale.data.datasets import create_dataset
    from synscale.data.shards import write_dataset_split

    ds = create_dataset(dataset, root, image_size)
    params = {"dataset": dataset, "root": root, "image_size": image_size, "shard_size": shard_size, "split": split,
              **({"limit": limit} if limit else {})}
    res = run_stage(workdir, "shards", params, {"source": ds.fingerprint()},
                    lambda out: write_dataset_split(ds, split, out, shard_size, progress=not log.quiet, limit=limit))
    log.stage(f"{what} [{split}]", res)
    return res


def probe_sets(cfg: StudyConfig, workdir: Path, log: Log) -> list[tuple[Any, StageResult, StageResult]]:
    """(probe config, train shards, test shards) of every `[[evaluate.probes]]` downstream set."""
    return [(p, *(dataset_shards(workdir, p.dataset, p.root, p.image_size, cfg.data.shard_size, split, log, f"probe {p.name}")
                  for split in (p.train_split, p.test_split))) for p in cfg.evaluate.probes]


def probe(cfg: StudyConfig, model_stage: StageResult, pc: Any, train_set: StageResult, test_set: StageResult,
          log: Log, train_cfg: Any = None) -> StageResult:
    """A linear probe of `model_stage`'s features (a CLIP model's: its image tower's) on a downstream set
    (synscale.evaluate.probe)."""
    import dataclasses

    tc = train_cfg or cfg.train

    def fn(out: Path) -> None:
        import pandas as pd

        from synscale.evaluate.classification import summarize
        from synscale.evaluate.probe import fit_linear_probe, probe_examples
        from synscale.labels import LabelSet
        from synscale.metrics.features import extract, load_reference

        meta = json.loads((model_stage.path / "train.json").read_text())
        ref = load_reference("trained", "", meta["num_classes"], None, "auto", trained=model_stage, train_cfg=to_dict(tc))
        ref.autocast = None  # probe features in float32
        tr = extract(ref, train_set.path, progress=False)
        te = extract(ref, test_set.path, progress=False)
        names = LabelSet.load(test_set.path / "labels.json").names
        lp = fit_linear_probe(tr.feats, tr.labels, len(names), pc.c, pc.max_iter, device=str(ref.device))
        ex = probe_examples(lp, te.feats, te.labels)
        overall, per_class = summarize(ex, names)
        pd.DataFrame(ex).to_parquet(out / "examples.parquet", index=False)
        per_class.to_parquet(out / "per_class.parquet", index=False)
        (out / "summary.json").write_text(json.dumps({**overall, "lbfgs_iterations": lp.iterations}, indent=1))

    res = run_stage(model_stage.root, "probe", {"probe": dataclasses.asdict(pc)},
                    {"model": model_stage.id, "train": train_set.id, "test": test_set.id}, fn)
    log.stage(f"linear probe on {pc.name}", res)
    return res


def subset(set_stage: StageResult, scale: int, seed: int, log: Log, order: str = "class") -> StageResult:
    """The nested subset of `scale` samples: class-balanced (synscale.data.subsets), or with `order =
    "caption"` the first `scale` captions of a pair set (synscale.data.pairs.caption_subset)."""
    import pandas as pd

    from synscale.data.pairs import caption_subset
    from synscale.data.shards import read_manifest
    from synscale.data.subsets import subset_keys
    from synscale.labels import LabelSet

    def fn(out: Path) -> None:
        manifest = read_manifest(set_stage.path)
        if order == "caption":
            keys = caption_subset(manifest, scale, seed)
        else:
            keys = subset_keys(manifest, scale, len(LabelSet.load(set_stage.path / "labels.json")), seed)
        pd.DataFrame({"key": keys}).to_parquet(out / "subset.parquet", index=False)

    params = {"scale": scale, "order_seed": seed, **({"order": order} if order != "class" else {})}
    return run_stage(set_stage.root, "subset", params, {"set": set_stage.id}, fn)


def train(cfg: StudyConfig, set_stage: StageResult, sub: StageResult, scale: int, cache: ArrayCache, log: Log, name: str,
          extra: list[tuple[StageResult, StageResult]] = (), train_cfg: Any = None,
          real_prob: float | None = None) -> StageResult:
    """Train `train_cfg` (default: `[train]`) on `sub`'s keys of `set_stage` (plus each (set, subset) of
    `extra`: mixed sets; with `real_prob`, CLIP's mixed pairs) for the schedule's iterations at `scale`.
    In this process, or under torchrun when train.nproc > 1. Resumable: an interrupted stage continues
    from its newest checkpoint."""
    from synscale.config import train_identity

    tc = train_cfg or cfg.train
    parts = [(set_stage, sub), *extra]

    def fn(out: Path) -> None:
        import shutil

        from synscale.data.shards import read_labels
        from synscale.train.launch import make_source, make_spec, run_spec, torchrun

        labels = read_labels(set_stage.path)
        spec = make_spec(to_dict(tc), [(s.path, u.path / "subset.parquet") for s, u in parts],
                         len(labels) if labels else 0, scale, out, real_prob)
        if tc.nproc > 1:
            log(f"train {name} D={scale}: torchrun, {tc.nproc} processes")
            (out / "spec.json").write_text(json.dumps({**spec, "progress": not log.quiet}, indent=1))
            torchrun(out / "spec.json", tc.nproc)
        else:  # small sets are decoded once per run for all scales (the cache)
            source = make_source(spec["parts"], tc.loader, real_prob,
                                 arrays=lambda s, k: cache.get(s, k, captions=tc.task == "contrastive"))
            run_spec(spec, source, progress=not log.quiet, desc=f"train {name} D={scale}")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)

    inputs = {"set": set_stage.id, "subset": sub.id}
    for i, (s, u) in enumerate(extra):
        inputs |= {f"set{i + 1}": s.id, f"subset{i + 1}": u.id}
    params = {"train": train_identity(tc), "scale": scale, **({"real_prob": real_prob} if real_prob is not None else {})}
    res = run_stage(set_stage.root, "train", params, inputs, fn, resumable=True)
    log.stage(f"train {name} D={scale}", res)
    return res


def load_model(train_stage: StageResult, cfg_train: dict[str, Any]) -> Any:
    from synscale.train.models import load_trained

    return load_trained(train_stage.path, cfg_train)[0]


def eval_source(eval_set: StageResult, cache: ArrayCache) -> Any:
    """The decoded set in memory where it has an array cache (small images), else read from its shards."""
    from synscale.train.data import ArraySource, ShardSource

    if (eval_set.path / "arrays.npy").exists():
        return ArraySource(*cache.get(eval_set.path))
    return ShardSource([(eval_set.path, None)])


def evaluate(cfg: StudyConfig, model_stage: StageResult, eval_set: StageResult, eval_name: str, cache: ArrayCache, log: Log,
             class_subset: list[int] | None = None, train_cfg: Any = None, head: StageResult | None = None) -> StageResult:
    """Loss and top-1 of a trained model on an evaluation set (centre crop as trained; optionally with the
    logits restricted to `class_subset`, the model's classes that the set covers). A CLIP model
    (`train_cfg` contrastive) is evaluated zero-shot with the class text features of `head`."""
    tc = train_cfg or cfg.train

    def fn(out: Path) -> None:
        import pandas as pd

        from synscale.evaluate.classification import predict, summarize
        from synscale.labels import LabelSet
        from synscale.train.engine import resolve_device

        model = load_model(model_stage, to_dict(tc))
        if head is not None:
            from safetensors.torch import load_file

            from synscale.train.clip import ZeroShotClassifier

            model = ZeroShotClassifier(model, load_file(str(head.path / "head.safetensors"))["weight"])
        ex = predict(model, None, None, tc.eval_batch_size, tc.crop, class_subset,
                     source=eval_source(eval_set, cache), workers=tc.workers,
                     device=resolve_device(tc.device))
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


def synthetic_set(cfg: StudyConfig, syn: Any, train_set: StageResult, log: Log, what: str = "") -> StageResult:
    """Generate `syn`'s class-balanced set at the real data's resolution and channels (resumable)."""
    import dataclasses
    import math

    from synscale.labels import LabelSet
    from synscale.prompts.strategies import make_context, make_prompts

    labels = LabelSet.load(train_set.path / "labels.json")
    per_class = syn.per_class or math.ceil(max(cfg.scales) / len(labels))
    resolution, channels = _image_format(train_set)
    captions = None
    if syn.strategy == "in-captions":
        from synscale.data.datasets import create_dataset
        from synscale.prompts.captioners import captions_per_class

        ds = create_dataset(cfg.data.dataset, cfg.data.root, cfg.data.image_size)
        captions = captions_per_class(ds, cfg.data.train_split, syn.captioner, pool=200, seed=syn.seed,
                                      local_files_only=not syn.allow_download)
    prompts = make_prompts(syn.strategy, make_context(labels, cfg.data.dataset, captions=captions), per_class, syn.seed)
    params = {"synthetic": {k: v for k, v in dataclasses.asdict(syn).items() if k not in GENERATION_RUN_ONLY},
              "per_class": per_class, "resolution": resolution, "channels": channels, "prompts": _prompts_hash(prompts)}
    return _generate(syn, prompts, labels, resolution, channels, params, train_set, {"labels": train_set.id}, log,
                     what or syn.name)


def _image_format(set_stage: StageResult) -> tuple[int, int]:
    """(side, channels) of a set's first image: what generated images are brought to."""
    from synscale.data.shards import decode_png, iter_samples

    first = decode_png(next(iter_samples(set_stage.path))[1])
    return first.shape[0], 1 if first.ndim == 2 else first.shape[2]


def _prompts_hash(prompts: Any) -> int:
    import pandas as pd

    return int(pd.util.hash_pandas_object(prompts[["index", "prompt", "seed"]], index=False).sum())


def _generate(g: Any, prompts: Any, labels: Any, resolution: int, channels: int, params: dict[str, Any],
              parent: StageResult, inputs: dict[str, str], log: Log, what: str) -> StageResult:
    """The resumable `generate` stage of a generation config `g` (synscale.config.GenerationConfig)."""
    from synscale.generate.runner import GeneratorSpec, generate_set

    spec = GeneratorSpec("diffusers", {
        "model": g.model, "steps": g.steps, "scheduler": g.scheduler, "dtype": g.dtype, "resolution": resolution,
        "channels": channels, "height": g.size or None, "width": g.size or None,
        "local_files_only": not g.allow_download, "pipeline_kwargs": g.pipeline_kwargs}, threads=g.threads)

    def fn(out: Path) -> None:
        generate_set(spec, prompts, labels, out, g.guidance, g.batch_size, g.shard_size, progress=not log.quiet,
                     executor=g.executor, ray_actors=g.ray_actors, ray_num_cpus=g.ray_cpus, ray_num_gpus=g.ray_gpus)

    res = run_stage(parent.root, "generate", params, inputs, fn, resumable=True)
    log.stage(f"generate {what} ({len(prompts):,} images)", res)
    return res


def shift_sets(cfg: StudyConfig, train_set: StageResult, test_set: StageResult, cache: ArrayCache,
               log: Log) -> list[tuple[str, StageResult]]:
    """The shifted copies of the real test set that `evaluate.shifts` names (synscale.data.shifts)."""
    from synscale.data.shifts import HARD

    out = []
    for name in cfg.evaluate.shifts:
        model = None
        if name == HARD:  # the images a separate real-trained model (the metrics' reference) gets wrong
            from synscale.metrics.run import trained_reference

            model = trained_reference(cfg, train_set, cache, log)
        inputs = {"set": test_set.id, **({"model": model.id} if model else {})}
        res = run_stage(test_set.root, "shift", {"shift": name, "seed": cfg.evaluate.shift_seed}, inputs,
                        lambda out_dir, name=name, model=model: _write_shift(cfg, name, model, test_set, cache, out_dir))
        log.stage(f"shifted test set [{name}]", res)
        out.append((name, res))
    return out


def _write_shift(cfg: StudyConfig, name: str, model: StageResult | None, test_set: StageResult, cache: ArrayCache,
                 out: Path) -> None:
    from synscale.data.shards import ShardWriter, read_manifest
    from synscale.data.shifts import SHIFTS, hard_subset
    from synscale.evaluate.classification import predict
    from synscale.labels import LabelSet

    images, labels = cache.get(test_set.path)
    keys = read_manifest(test_set.path)["key"].tolist()
    if model is not None:
        pred = predict(load_model(model, to_dict(cfg.train)), images, labels, cfg.train.eval_batch_size, cfg.train.crop)["pred"]
        idx = hard_subset(pred, labels)
        images, labels, keys = images[idx], labels[idx], [keys[i] for i in idx]
    else:
        images = SHIFTS.get(name)(images, cfg.evaluate.shift_seed)
    with ShardWriter(out, LabelSet.load(test_set.path / "labels.json"), cfg.data.shard_size) as w:
        for key, img, y in zip(keys, images, labels, strict=True):
            w.write(key, img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), int(y), {"shift": name})


def ood_sets(cfg: StudyConfig, train_set: StageResult, log: Log) -> list[tuple[str, StageResult, list[int] | None]]:
    """Every `[[evaluate.sets]]` set written as shards in the study's label space, with its class subset."""
    import dataclasses

    from synscale.data.ood import fingerprint, write_ood_set
    from synscale.data.shards import decode_png, iter_samples
    from synscale.labels import LabelSet

    labels = LabelSet.load(train_set.path / "labels.json")
    first = decode_png(next(iter_samples(train_set.path))[1])
    size, channels = max(first.shape[:2]), 1 if first.ndim == 2 else 3
    out = []
    for spec in cfg.evaluate.sets:
        params = {"set": dataclasses.asdict(spec), "image_size": cfg.data.image_size or size, "channels": channels,
                  "shard_size": cfg.data.shard_size}
        res = run_stage(train_set.root, "ood", params, {"labels": train_set.id, "files": fingerprint(spec.root)},
                        lambda o, spec=spec: write_ood_set(labels, spec, cfg.data.image_size or size, channels, o,
                                                           cfg.data.shard_size))
        subset = json.loads((res.path / "ood.json").read_text())["class_subset"]
        log.stage(f"OOD set {spec.name}" + (f" ({len(subset)} classes)" if subset else ""), res)
        out.append((spec.name, res, subset))
    return out


def scaling_curve(cfg: StudyConfig, train_set: StageResult, test_set: StageResult, source: str,
                  cache: ArrayCache, log: Log, shifted: list[tuple[str, StageResult]] = (),
                  probes: list[tuple[Any, StageResult, StageResult]] = (),
                  ood: list[tuple[str, StageResult, list[int] | None]] = (),
                  mix: tuple[Any, StageResult] | None = None) -> list[tuple[TrainedModel, str, StageResult]]:
    """Nested subsets of `train_set` at every scale (with `mix` = (MixConfig, real set): real + synthetic), a
    model on each, evaluated on the real test set (`val`), on every shifted copy of it and OOD set, and by a
    linear probe on every downstream set."""
    evals = []
    for scale in cfg.scales:
        for run in range(cfg.repeats):
            rc = cfg if run == 0 else dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + run))
            name = source if cfg.repeats == 1 else f"{source} run {run}"
            if mix is None:
                tr = train(rc, train_set, subset(train_set, scale, rc.data.order_seed, log), scale, cache, log, name)
                tm = TrainedModel(source, source, scale, tr, scale if source == "real" else 0, run)
            else:
                mc, real_set = mix
                n_real, n_syn = mc.counts(scale)
                parts = [(s, subset(s, n, rc.data.order_seed, log)) for s, n in ((real_set, n_real), (train_set, n_syn)) if n]
                tr = train(rc, *parts[0], n_real + n_syn, cache, log, f"{name} ({n_real} real + {n_syn} synthetic)",
                           extra=parts[1:])
                tm = TrainedModel(source, source, n_real + n_syn, tr, n_real, run)
            for eval_name, eval_set in [("val", test_set), *shifted]:
                evals.append((tm, eval_name, evaluate(rc, tr, eval_set, eval_name, cache, log)))
            for eval_name, eval_set, class_subset in ood:
                evals.append((tm, eval_name, evaluate(rc, tr, eval_set, eval_name, cache, log, class_subset)))
            for pc, p_train, p_test in probes:
                evals.append((tm, f"probe:{pc.name}", probe(rc, tr, pc, p_train, p_test, log)))
    return evals


# ---------------------------------------------------------------------------------------------------
# CLIP (paper section 5): real, synthetic and mixed pairs at scales counted in captions, evaluated zero-shot


def clip_pairs(cfg: StudyConfig, train_set: StageResult | None, workdir: Path, log: Log) -> StageResult:
    """The real pairs, as many as the largest CLIP scale needs: img2dataset shards, or the study's real
    training images captioned (the first of them in the caption order, so the subsets are nested)."""
    from synscale.data.pairs import caption_order
    from synscale.data.shards import read_manifest
    from synscale.prompts.captioners import captioned_pairs

    pc, need = cfg.clip.pairs, cfg.clip.pairs.limit or max(cfg.clip.scales)
    if pc.dataset == "img2dataset":
        return dataset_shards(workdir, "img2dataset", pc.root, pc.image_size, cfg.data.shard_size, "train", log,
                              "real pairs", limit=need)
    assert train_set is not None
    keys = caption_order(read_manifest(train_set.path)["key"].tolist(), cfg.clip.order_seed)
    if need > len(keys):
        raise ConfigError(f"clip.scales: {need:,} captions needed but the real training split has {len(keys):,} images; "
                          "lower clip.scales (or clip.pairs.limit)")
    if pc.captioner == "attributes" and _image_format(train_set)[1] != 1:
        raise ConfigError("clip.pairs.captioner = 'attributes' reads grayscale images (an object on a dark background); "
                          "for colour images give captions (file:<csv>) or an image-to-text model (hf:<model>)")
    params = {"captioner": pc.captioner, "pairs": need, "order_seed": cfg.clip.order_seed}
    inputs = {"set": train_set.id}
    if pc.captioner.startswith("file:"):  # the captions themselves, so an edited file is not mistaken for the old one
        from synscale.data.datasets import file_digest

        inputs["captions"] = file_digest(Path(pc.captioner[5:]))
    res = run_stage(train_set.root, "pairs", params, inputs,
                    lambda out: captioned_pairs(train_set.path, keys[:need], pc.captioner, out, cfg.data.shard_size,
                                                not pc.allow_download, progress=not log.quiet))
    log.stage(f"real pairs ({need:,} captioned images)", res)
    return res


def clip_synthetic_set(g: Any, pairs: StageResult, log: Log) -> StageResult:
    """`[[clip.synthetic]]` `g`: an image for every caption of the real pairs, under the same keys."""
    import dataclasses

    from synscale.data.shards import read_labels, read_manifest
    from synscale.prompts.strategies import caption_prompts

    prompts = caption_prompts(read_manifest(pairs.path), g.seed)
    resolution, channels = _image_format(pairs)
    params = {"clip_synthetic": {k: v for k, v in dataclasses.asdict(g).items() if k not in GENERATION_RUN_ONLY},
              "resolution": resolution, "channels": channels, "prompts": _prompts_hash(prompts)}
    return _generate(g, prompts, read_labels(pairs.path), resolution, channels, params, pairs, {"pairs": pairs.id},
                     log, g.name)


def zero_shot_head(model_stage: StageResult, train_cfg: Any, eval_set: StageResult, templates: str,
                   log: Log) -> StageResult:
    """A CLIP model's class text features for an evaluation set's class names (synscale.train.clip)."""
    from synscale.data.shards import read_labels
    from synscale.train.clip import zero_shot_names
    from synscale.train.templates import load_templates

    labels = read_labels(eval_set.path)
    if labels is None:
        raise ValueError(f"{eval_set.path}: zero-shot evaluation needs a labelled set (class names)")
    names = zero_shot_names(labels.names, labels.wnids)
    texts = load_templates(templates)

    def fn(out: Path) -> None:
        from safetensors.torch import save_file

        from synscale.train.clip import class_text_features
        from synscale.train.engine import resolve_device

        clip = load_model(model_stage, to_dict(train_cfg))
        weight = class_text_features(clip, train_cfg.model, names, texts, resolve_device(train_cfg.device))
        save_file({"weight": weight.cpu().contiguous()}, str(out / "head.safetensors"))

    res = run_stage(model_stage.root, "zeroshot", {"names": names, "templates": texts}, {"model": model_stage.id}, fn)
    if not res.skipped:
        log.stage(f"zero-shot classifier ({len(names)} classes x {len(texts)} templates)", res)
    return res


def zero_shot_sets(cfg: StudyConfig, workdir: Path, test_set: StageResult, shifted: list[tuple[str, StageResult]],
                   ood: list[tuple[str, StageResult, list[int] | None]],
                   log: Log) -> list[tuple[str, StageResult, list[int] | None, str]]:
    """(name, set, class subset, templates) of every zero-shot evaluation: the real test set (`val`), its
    shifts, the OOD sets and the `[[evaluate.zero_shot]]` downstream sets."""
    t = cfg.clip.templates
    out = [("val", test_set, None, t), *((n, s, None, t) for n, s in shifted), *((n, s, c, t) for n, s, c in ood)]
    for z in cfg.evaluate.zero_shot:
        shards = dataset_shards(workdir, z.dataset, z.root, z.image_size, cfg.data.shard_size, z.split, log,
                                f"zero-shot set {z.name}")
        out.append((z.name, shards, None, z.templates or t))
    return out


def clip_curves(cfg: StudyConfig, pairs: StageResult, zs: list[tuple[str, StageResult, list[int] | None, str]],
                probes: list[tuple[Any, StageResult, StageResult]], cache: ArrayCache,
                log: Log) -> tuple[list[tuple[TrainedModel, str, StageResult]], list[tuple[Any, StageResult]]]:
    """A CLIP model per source (real, each synthetic, each mix), caption scale and run (`repeats`, with
    clip.train.seed + run), evaluated zero-shot on every set of `zs` and by linear probes. Returns the
    evaluations and the synthetic pair sets."""
    from synscale.data.shards import read_manifest

    cc = cfg.clip
    have = len(read_manifest(pairs.path))
    if have < max(cc.scales):
        raise ConfigError(f"clip.scales: the largest scale needs {max(cc.scales):,} captions but the real pairs have "
                          f"{have:,} ({pairs.path}); lower clip.scales")
    generated = {g.name: clip_synthetic_set(g, pairs, log) for g in cc.synthetic}
    curves = ([(cc.real, pairs, None, None)] if cc.real else []) + [(n, st, None, None) for n, st in generated.items()]
    curves += [(m.name, pairs, generated[m.synthetic], m.real_prob) for m in cc.mix]
    evals = []
    for (name, set_stage, mixed_in, real_prob), scale, run in itertools.product(curves, cc.scales, range(cfg.repeats)):
        tc = dataclasses.replace(cc.train, seed=cc.train.seed + run)
        extra = [(mixed_in, subset(mixed_in, scale, cc.order_seed, log, "caption"))] if mixed_in is not None else []
        tr = train(cfg, set_stage, subset(set_stage, scale, cc.order_seed, log, "caption"), scale, cache, log,
                   name if cfg.repeats == 1 else f"{name} run {run}", extra, train_cfg=tc, real_prob=real_prob)
        real = scale if set_stage is pairs else 0
        tm = TrainedModel(name, name, scale, tr, real, run, task="clip", synthetic_images=scale if extra else scale - real)
        for eval_name, eval_set, class_subset, templates in zs:
            head = zero_shot_head(tr, tc, eval_set, templates, log)
            evals.append((tm, eval_name, evaluate(cfg, tr, eval_set, eval_name, cache, log, class_subset, tc, head)))
        for pc, p_train, p_test in probes:
            evals.append((tm, f"probe:{pc.name}", probe(cfg, tr, pc, p_train, p_test, log, tc)))
    return evals, [(g, generated[g.name]) for g in cc.synthetic]


# ---------------------------------------------------------------------------------------------------
# Results tables


def collect_results(evals: list[tuple[TrainedModel, str, StageResult]], results_dir: Path) -> None:
    """Write scaling.parquet, scaling_per_class.parquet and scaling_examples.parquet from eval stages."""
    import pandas as pd

    rows, per_class, examples = [], [], []
    for tm, eval_name, ev in evals:
        ident = {"source": tm.source, "config": tm.config, "scale": tm.scale, "eval_set": eval_name, "run": tm.run}
        summary = json.loads((ev.path / "summary.json").read_text())
        syn = tm.scale - tm.real_images if tm.synthetic_images is None else tm.synthetic_images
        rows.append({**ident, "task": tm.task, "real_images": tm.real_images, "synthetic_images": syn,
                     "loss": summary["loss"], "top1": summary["top1"], "n_eval": summary["n"],
                     "train_stage": tm.stage.id, "eval_stage": ev.id})
        pc = pd.read_parquet(ev.path / "per_class.parquet")
        per_class.append(pc.assign(**ident, task=tm.task)[[*ident, "task", "class_index", "class_name", "loss", "top1", "n"]])
        ex = pd.read_parquet(ev.path / "examples.parquet")
        examples.append({**ident, "example_loss": ex["loss"].to_numpy(), "label": ex["label"].to_numpy()})
    results_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(results_dir / "scaling.parquet", index=False)
    pd.concat(per_class, ignore_index=True).to_parquet(results_dir / "scaling_per_class.parquet", index=False)
    pd.DataFrame(examples).to_parquet(results_dir / "scaling_examples.parquet", index=False)


def collect_generation(generated: list[tuple[Any, StageResult]], results_dir: Path) -> None:
    """generation.parquet: per synthetic configuration, its model, family, strategy, guidance scale, steps,
    number of images and the set's directory (shards + manifest.parquet)."""
    import pandas as pd

    from synscale.data.shards import read_manifest

    rows = []
    for syn, stage in generated:
        m = read_manifest(stage.path)
        model = syn.model
        family = model[len("builtin:"):].partition("@")[0] if model.startswith("builtin:") else m["generator"].iloc[0].split(":")[1]
        captions = isinstance(syn, ClipSyntheticConfig)  # CLIP's synthetic pairs: one image per caption
        rows.append({"config": syn.name, "model": model, "family": family, "generator": m["generator"].iloc[0],
                     "strategy": "captions" if captions else syn.strategy, "guidance_scale": float(syn.guidance),
                     "steps": int(m["steps"].iloc[0]), "images": len(m),
                     "per_class": 0 if captions else int(m.groupby("label").size().min()), "seed": syn.seed,
                     "set_path": str(stage.path.resolve()), "stage": stage.id,
                     "task": "clip" if captions else "classification"})
    results_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["config", "model", "family", "generator", "strategy", "guidance_scale", "steps", "images",
                                "per_class", "seed", "set_path", "stage", "task"]).to_parquet(results_dir / "generation.parquet",
                                                                                              index=False)


def study_metrics(cfg: StudyConfig, train_set: StageResult, test_set: StageResult,
                  generated: list[tuple[Any, StageResult]], cache: ArrayCache, log: Log) -> list[tuple[str, StageResult]]:
    """A metrics stage for the real data and for every synthetic configuration (see synscale.metrics.run)."""
    from synscale.metrics.run import metrics_stage, real_test_keys, reference, synthetic_test_config

    mc = cfg.metrics
    ref = reference(cfg, train_set, cache, log)
    st = metrics_stage(mc, ref, "real", test_set, real_test_keys(test_set, mc.per_class, mc.seed), test_set,
                       train_set, train_set, log.quiet)
    log.stage("metrics real", st)
    out = [("real", st)]
    for syn, gen in generated:
        test = synthetic_set(cfg, synthetic_test_config(syn, mc.per_class), train_set, log, f"test set of {syn.name}")
        st = metrics_stage(mc, ref, syn.name, test, None, test_set, gen, train_set, log.quiet)
        log.stage(f"metrics {syn.name}", st)
        out.append((syn.name, st))
    return out


# ---------------------------------------------------------------------------------------------------


def run_study(cfg: StudyConfig, workdir: str | Path, quiet: bool = False) -> Path:
    """Run every stage of `cfg` in `workdir`; returns the report's path."""
    from synscale.analysis.run import analyse, reference_sizes
    from synscale.data.shifts import HARD
    from synscale.report.html import write_report

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "study.json").write_text(json.dumps(to_dict(cfg), indent=1))
    log = Log(quiet)
    cache = ArrayCache()
    captioned = bool(cfg.clip.scales) and cfg.clip.pairs.dataset == "captioned"
    need_train = bool(cfg.scales) or captioned or HARD in cfg.evaluate.shifts
    train_set = real_shards(cfg, workdir, cfg.data.train_split, log) if need_train else None
    test_set = real_shards(cfg, workdir, cfg.data.test_split, log)
    shifted = shift_sets(cfg, train_set, test_set, cache, log)
    probes = probe_sets(cfg, workdir, log)
    ood = ood_sets(cfg, train_set or test_set, log)
    evals, generated, metrics = [], [], []
    if cfg.scales:
        evals += scaling_curve(cfg, train_set, test_set, "real", cache, log, shifted, probes, ood)
        for syn in cfg.synthetic:
            generated.append((syn, synthetic_set(cfg, syn, train_set, log)))
            evals += scaling_curve(cfg, generated[-1][1], test_set, syn.name, cache, log, shifted, probes, ood)
        sets = {syn.name: stage for syn, stage in generated}
        for mc in cfg.mix:
            evals += scaling_curve(cfg, sets[mc.synthetic], test_set, mc.name, cache, log, shifted, probes, ood,
                                   mix=(mc, train_set))
        metrics = study_metrics(cfg, train_set, test_set, generated, cache, log) if cfg.metrics.per_class else []
    clip_generated = []
    if cfg.clip.scales:
        zs = zero_shot_sets(cfg, workdir, test_set, shifted, ood, log)
        clip_evals, clip_generated = clip_curves(cfg, clip_pairs(cfg, train_set, workdir, log), zs, probes, cache, log)
        evals += clip_evals
    results = workdir / "results"
    collect_results(evals, results)
    collect_generation(generated + clip_generated, results)
    if metrics:
        from synscale.metrics.run import collect_metrics

        collect_metrics(metrics, results)
    meta = {"study": cfg.name, "d_ref": cfg.data.reference_size or (_set_size(train_set) if train_set else 0),
            "d_ref_clip": cfg.clip.reference_size or max(cfg.clip.scales, default=0)}
    (results / "meta.json").write_text(json.dumps(meta, indent=1))
    fits = analyse(results, reference_sizes(meta), cfg.fit)["fits"]
    log(f"fits: {len(fits)} row(s) -> {results / 'fits.parquet'} (and per_class, correlations, predictions)")
    report = write_report(workdir, cfg.name)
    log(f"report -> {report}")
    return report


def _set_size(set_stage: StageResult) -> int:
    from synscale.data.shards import read_manifest

    return len(read_manifest(set_stage.path))
