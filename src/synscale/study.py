"""A study as a plan of stages (synscale.plan), run by an executor (synscale.executors), then its results
tables, fits and report.

`build_plan(cfg, workdir)` expands a study config, without running anything and without torch, into
nodes: real shards (and, per `[[synthetic]]` configuration — written or expanded from `[[grid]]` tables,
synscale.grid — a generated set) -> nested subsets -> train -> evaluate on the real test set, its shifts,
the OOD sets and by linear probes; with `curves = ["best", "worst"]` a `select` node that picks them from
the grid's validation losses and the picked configurations' models at the other scales; per configuration
its metrics; CLIP's pairs, models and zero-shot evaluations. Each node calls one stage function of
its package (synscale.data.stages, .prompts.stages, .generate.stages, .train.stages, .evaluate.stages,
.metrics.run); `run_study` hands the plan to an executor and writes the results tables (synscale.results),
the fits and the report. Every node is a stage on disk (see `synscale.stage`), so a study that is run
again skips what is complete and redoes what was interrupted.

Workdir layout:
    W/stages/<kind>/<id>/        stage outputs (content-addressed)
    W/plan/                      the plan and each node's state (synscale status W)
    W/results/*.parquet          the tables that fits and the report read
    W/report/index.html          the report
    W/study.json                 the resolved config of the last run
    W/study.lock                 held by the study running here, with its name, identity, processes and hosts
Paths written into these files are relative to W where they point inside it (synscale.workdir): a workdir
can be moved.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synscale.atomic import read_json, write_text
from synscale.config import ConfigError, StudyConfig, study_identity, to_dict
from synscale.metrics import TEST_SEED_OFFSET
from synscale.modelref import is_builtin
from synscale.plan import Context, Needs, Plan
from synscale.registry import Registry
from synscale.stage import StageResult
from synscale.train.stages import load_model  # noqa: F401 (the study's trained models: load_model(stage, train))

# ---------------------------------------------------------------------------------------------------
# Node functions: fn(ctx, *input stages, **args) -> StageResult, each one stage function of a package.


def _shards(ctx: Context, data: Any, split: str, what: str = "real shards", dataset: str = "", root: str = "",
            image_size: int = 0, columns: dict[str, str] | None = None) -> StageResult:
    """A split of the study's dataset, or of `dataset` (a probe's or zero-shot set's, with its `columns`) in the
    same shard size."""
    from synscale.data.stages import dataset_shards, real_shards

    if not dataset:
        return real_shards(data, ctx.workdir, split, ctx.log, what)
    return dataset_shards(ctx.workdir, dataset, root, image_size, data.shard_size, split, ctx.log, what,
                          columns=columns)


def _subset(ctx: Context, set_stage: StageResult, scale: int, seed: int, order: str = "class") -> StageResult:
    from synscale.data.stages import subset

    return subset(set_stage, scale, seed, ctx.log, order)


def _reference_subset(ctx: Context, train_set: StageResult, seed: int) -> StageResult:
    from synscale.data.stages import subset
    from synscale.metrics.run import reference_scale

    return subset(train_set, reference_scale(train_set), seed, ctx.log)


def _train(ctx: Context, set_stage: StageResult, sub: StageResult, *extra: StageResult, tc: Any, scale: int, name: str,
           real_prob: float | None = None) -> StageResult:
    from synscale.train.stages import train

    pairs = list(zip(extra[::2], extra[1::2], strict=True))
    return train(tc, set_stage, sub, scale, ctx.cache, ctx.log, name, pairs, real_prob)


def _train_reference(ctx: Context, train_set: StageResult, sub: StageResult, tc: Any) -> StageResult:
    from synscale.metrics.run import reference_scale
    from synscale.train.stages import train

    return train(tc, train_set, sub, reference_scale(train_set), ctx.cache, ctx.log, "reference")


def _select(ctx: Context, *evals: StageResult, names: list[str], eval_set: str = "val") -> StageResult:
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


def _train_picked(ctx: Context, pick: StageResult, real: StageResult | None, *sets: StageResult, which: str,
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


def _evaluate(ctx: Context, model: StageResult, eval_set: StageResult, head: StageResult | None, tc: Any,
              eval_name: str, ood: bool = False) -> StageResult:
    from synscale.data.stages import ood_class_subset
    from synscale.evaluate.stages import evaluate

    return evaluate(tc, model, eval_set, eval_name, ctx.cache, ctx.log, ood_class_subset(eval_set) if ood else None, head)


def _probe(ctx: Context, model: StageResult, p_train: StageResult, p_test: StageResult, tc: Any, pc: Any) -> StageResult:
    from synscale.evaluate.stages import probe

    return probe(tc, model, pc, p_train, p_test, ctx.log)


def _zero_shot_head(ctx: Context, model: StageResult, eval_set: StageResult, tc: Any, templates: str) -> StageResult:
    from synscale.evaluate.stages import zero_shot_head

    return zero_shot_head(model, tc, eval_set, templates, ctx.log)


def _shift(ctx: Context, test_set: StageResult, model: StageResult | None, name: str, seed: int, tc: Any,
           shard_size: int) -> StageResult:
    from synscale.evaluate.stages import shift_set

    return shift_set(name, seed, test_set, model, tc, shard_size, ctx.cache, ctx.log)


def _ood(ctx: Context, train_set: StageResult, spec: Any, image_size: int, shard_size: int) -> StageResult:
    from synscale.data.stages import ood_set

    return ood_set(spec, train_set, image_size, shard_size, ctx.log)


def _captions(ctx: Context, train_set: StageResult, captioner: str, seed: int, allow_download: bool) -> StageResult:
    from synscale.prompts.stages import caption_pool

    return caption_pool(train_set, captioner, seed, not allow_download, ctx.log)


def _generate(ctx: Context, train_set: StageResult, captions: StageResult | None, syn: Any, data: Any, max_scale: int,
              what: str = "", test_per_class: int = 0) -> StageResult:
    """`syn`'s training set, or with `test_per_class` its metrics test set (other seeds); `captions`: the
    in-captions strategy's caption pool."""
    from synscale.generate.stages import synthetic_set

    if test_per_class:
        from synscale.metrics.run import synthetic_test_config

        syn = synthetic_test_config(syn, test_per_class)
    return synthetic_set(syn, train_set, data, max_scale, ctx.log, what, captions)


def _metrics(ctx: Context, train_set: StageResult, test_set: StageResult, trained: StageResult | None,
             generated: StageResult | None, syn_test: StageResult | None, cfg: StudyConfig, name: str) -> StageResult:
    from synscale.metrics.run import metrics_stage, real_test_keys, reference

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


def _pairs(ctx: Context, train_set: StageResult | None, cfg: StudyConfig) -> StageResult:
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


def _clip_generate(ctx: Context, pairs: StageResult, g: Any) -> StageResult:
    from synscale.generate.stages import clip_synthetic_set

    return clip_synthetic_set(g, pairs, ctx.log)


# ---------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class ModelSpec:
    """A trained model as the results tables name it (synscale.results.TrainedModel, before it exists)."""

    source: str
    scale: int
    train: str  # its node
    real_images: int = 0
    run: int = 0
    task: str = "classification"
    synthetic_images: int | None = None
    pick: str | None = None  # source is best / worst: the select node that names the configuration


@dataclass
class StudyPlan:
    """The plan and what the results tables are made of: (model, evaluation name, evaluation node), the
    generated sets (config, node) and the metrics (name, node)."""

    plan: Plan = field(default_factory=Plan)
    train_set: str | None = None  # the real training split's node (None: the study needs none)
    real_sets: dict[str, str] = field(default_factory=dict)  # name -> node of each real set (train, test, CLIP's pairs)
    evals: list[tuple[ModelSpec, str, str]] = field(default_factory=list)
    generated: list[tuple[Any, str]] = field(default_factory=list)
    metrics: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """One way every model of a task is evaluated: on an evaluation set's node (`set_key`; `ood`: its logits
    restricted to the classes it covers; `templates`: a zero-shot set's own), or by a linear probe on a
    downstream set's (train, test) nodes."""

    name: str  # the results' eval_set
    set_key: str | None = None
    ood: bool = False
    templates: str = ""
    probe: Any = None  # synscale.config.ProbeConfig
    probe_sets: tuple[str, str] | None = None
    tasks: tuple[str, ...] = ("classification", "clip")


# The study's evaluations, looked up by name and run in this order for every model: each adds the nodes of
# its sets to the plan and says how models are evaluated on them (none where the study configures none).
EVALUATIONS: Registry[Callable[[Any, StudyConfig, str, str | None], list[Evaluation]]] = Registry("evaluation")


@EVALUATIONS.register("val")
def _val_evaluation(b: Any, cfg: StudyConfig, test: str, train: str | None) -> list[Evaluation]:
    """The real test set."""
    return [Evaluation("val", test)]


@EVALUATIONS.register("shifts")
def _shift_evaluations(b: Any, cfg: StudyConfig, test: str, train: str | None) -> list[Evaluation]:
    """`evaluate.shifts`: shifted copies of the real test set; the hard one is the test images a real-trained
    model (the reference) gets wrong."""
    from synscale.data.shifts import HARD

    out = []
    for name in cfg.evaluate.shifts:
        model = b.reference(train) if name == HARD else None
        out.append(Evaluation(name, b.add(f"shift {name}", "shift", _shift, (test, model), Needs(), tc=cfg.train,
                                          name=name, seed=cfg.evaluate.shift_seed, shard_size=cfg.data.shard_size)))
    return out


@EVALUATIONS.register("sets")
def _ood_evaluations(b: Any, cfg: StudyConfig, test: str, train: str | None) -> list[Evaluation]:
    """`[[evaluate.sets]]`: OOD sets in the study's label space, each on the classes it covers."""
    return [Evaluation(spec.name, b.add(f"OOD set {spec.name}", "ood", _ood, (train or test,), spec=spec,
                                        image_size=cfg.data.image_size, shard_size=cfg.data.shard_size), ood=True)
            for spec in cfg.evaluate.sets]


@EVALUATIONS.register("zero-shot")
def _zero_shot_evaluations(b: Any, cfg: StudyConfig, test: str, train: str | None) -> list[Evaluation]:
    """`[[evaluate.zero_shot]]`: downstream sets that CLIP models classify zero-shot."""
    if not cfg.clip.scales:
        return []
    from synscale.data.datasets import columns_of

    return [Evaluation(z.name, b.shards(z.split, f"zero-shot set {z.name}", dataset=z.dataset, root=z.root,
                                        image_size=z.image_size, columns=columns_of(z)), templates=z.templates,
                       tasks=("clip",))
            for z in cfg.evaluate.zero_shot]


@EVALUATIONS.register("probes")
def _probe_evaluations(b: Any, cfg: StudyConfig, test: str, train: str | None) -> list[Evaluation]:
    """`[[evaluate.probes]]`: linear probes of every model's features on downstream sets."""
    from synscale.data.datasets import columns_of

    return [Evaluation(f"probe:{p.name}", probe=p, probe_sets=tuple(
        b.shards(split, f"probe {p.name}", dataset=p.dataset, root=p.root, image_size=p.image_size,
                 columns=columns_of(p))
        for split in (p.train_split, p.test_split))) for p in cfg.evaluate.probes]


def _train_needs(tc: Any) -> Needs:
    """A training run's needs: a GPU per process where the device asks for (or allows) CUDA, and a CPU for each
    process and each of its loader workers (they are all busy at once)."""
    gpus = 0.0 if tc.device == "cpu" else float(tc.nproc)
    return Needs(cpus=float(tc.nproc * (tc.workers + 1)), gpus=gpus, processes=tc.nproc, gpu_optional=tc.device == "auto",
                 why=f"nproc = {tc.nproc} processes of workers = {tc.workers} loader workers each")


def _eval_needs(tc: Any) -> Needs:
    return Needs(cpus=1.0, gpus=0.0 if tc.device == "cpu" else 1.0, gpu_optional=tc.device == "auto")


def _gen_needs(g: Any) -> Needs:
    if g.executor == "ray":  # the task only drives Ray Data, whose actors take the generation's resources
        return Needs(cpus=0.0, actor_cpus=g.ray_cpus, actor_gpus=g.ray_gpus, why=f"ray_cpus = {g.ray_cpus:g}, "
                     f"ray_gpus = {g.ray_gpus:g} per generator actor")
    return Needs(cpus=1.0, gpus=0.0 if is_builtin(g.model) else 1.0, gpu_optional=True)


class _Builder:
    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg, self.sp = cfg, StudyPlan()
        self.add = self.sp.plan.add

    def shards(self, split: str, what: str = "real shards", **kw: Any) -> str:
        """A split of the study's dataset, or with `dataset=`, `root=`, `image_size=`, `columns=` of another one."""
        return self.add(f"{what} [{split}]", "shards", _shards, data=self.cfg.data, split=split, what=what, **kw)

    def subset(self, set_key: str, scale: int, seed: int, order: str = "class") -> str:
        return self.add(f"subset {scale} of {set_key} (seed {seed}{', ' + order if order != 'class' else ''})", "subset",
                        _subset, (set_key,), scale=scale, seed=seed, order=order)

    def reference(self, train: str) -> str:
        """The real-trained reference (metrics, hard shift): the whole class-balanced training set."""
        sub = self.add("subset reference", "subset", _reference_subset, (train,), seed=self.cfg.data.order_seed)
        ref = self.cfg.data.reference_size  # about the reference's size (the data says exactly, when it runs)
        info = _train_info(ref, self.cfg.train) if ref else {}
        return self.add("train reference", "train", _train_reference, (train, sub), _train_needs(self.cfg.train),
                        info, tc=self.cfg.train)

    def captions(self, train: str, syn: Any, seed: int | None = None) -> str | None:
        """An in-captions configuration's caption pool (one node per captioner and seed, shared), else None."""
        if syn.strategy != "in-captions":
            return None
        seed = syn.seed if seed is None else seed
        gpu = syn.captioner.startswith("hf:")
        return self.add(f"captions {syn.captioner} seed={seed}", "captions", _captions, (train,),
                        Needs(cpus=1.0, gpus=1.0 if gpu else 0.0, gpu_optional=gpu), captioner=syn.captioner, seed=seed,
                        allow_download=syn.allow_download)

    def train(self, tc: Any, parts: list[tuple[str, str]], scale: int, name: str,
              real_prob: float | None = None) -> str:
        deps = tuple(k for pair in parts for k in pair)
        return self.add(f"train {name} D={scale}", "train", _train, deps, _train_needs(tc), _train_info(scale, tc),
                        tc=tc, scale=scale, name=name, real_prob=real_prob)

    def evaluations(self, model: ModelSpec, tc: Any, evals: list[Evaluation]) -> None:
        for e in (e for e in evals if model.task in e.tasks):
            if e.probe is not None:
                ev = self.add(f"probe {model.train} on {e.probe.name}", "probe", _probe, (model.train, *e.probe_sets),
                              _eval_needs(tc), tc=tc, pc=e.probe)
                self.sp.evals.append((model, e.name, ev))
                continue
            head = None
            if model.task == "clip":
                head = self.add(f"zero-shot head of {model.train} for {e.name}", "zeroshot", _zero_shot_head,
                                (model.train, e.set_key), _eval_needs(tc), tc=tc,
                                templates=e.templates or self.cfg.clip.templates)
            ev = self.add(f"evaluate {model.train} on {e.name}", "evaluate", _evaluate, (model.train, e.set_key, head),
                          _eval_needs(tc), tc=tc, eval_name=e.name, ood=e.ood)
            self.sp.evals.append((model, e.name, ev))


def build_plan(cfg: StudyConfig) -> StudyPlan:
    """Every stage of `cfg` as a plan node, in the order the local executor runs them."""
    from synscale.data.shifts import HARD

    b = _Builder(cfg)
    captioned = bool(cfg.clip.scales) and cfg.clip.pairs.dataset == "captioned"
    need_train = bool(cfg.scales) or captioned or HARD in cfg.evaluate.shifts
    train = b.sp.train_set = b.shards(cfg.data.train_split) if need_train else None
    test = b.shards(cfg.data.test_split)
    b.sp.real_sets = {"real training split": train, "real test split": test} if train else {"real test split": test}
    evals = [e for _, fn in EVALUATIONS.entries() for e in fn(b, cfg, test, train)]
    if cfg.scales:
        _classifier_curves(b, cfg, train, evals)
    if cfg.clip.scales:
        _clip_curves(b, cfg, train, evals)
    from synscale.estimate import node_seconds

    for key, secs in node_seconds(b.sp, cfg).items():  # each node's estimated seconds (synscale.estimate)
        b.sp.plan.nodes[key].info["est_seconds"] = secs
    b.sp.plan.identity = study_identity(cfg)
    return b.sp


def _classifier_curves(b: _Builder, cfg: StudyConfig, train: str, evals: list[Evaluation]) -> None:
    """Per source (real, each synthetic configuration, each mix): nested subsets at every scale and run, a
    model on each, evaluated on every set and probe; then the metrics of every configuration."""
    generated: dict[str, str] = {}

    def curve(source: str, set_key: str, mix: Any = None) -> None:
        # a configuration trained at one scale only (the grid's) is evaluated on the real test set, as in the
        # paper's tables A4-A6; curves on every set (the picked best / worst get theirs in _picked_curves)
        one = source != "real" and len(cfg.source_scales(source)) == 1 and len(cfg.scales) > 1
        sets = [e for e in evals if e.name == "val"] if one else evals
        for scale, run in itertools.product(cfg.source_scales(source), range(cfg.repeats)):
            tc = _run_train(cfg, run)
            name = source if cfg.repeats == 1 else f"{source} run {run}"
            seed = cfg.data.order_seed
            if mix is None:
                tr = b.train(tc, [(set_key, b.subset(set_key, scale, seed))], scale, name)
                model = ModelSpec(source, scale, tr, scale if source == "real" else 0, run)
            else:
                n_real, n_syn = mix.counts(scale)
                parts = [(s, b.subset(s, n, seed)) for s, n in ((train, n_real), (set_key, n_syn)) if n]
                tr = b.train(tc, parts, n_real + n_syn, f"{name} ({n_real} real + {n_syn} synthetic)")
                model = ModelSpec(source, n_real + n_syn, tr, n_real, run)
            b.evaluations(model, tc, sets)

    curve("real", train)
    for syn in cfg.synthetic:
        generated[syn.name] = b.add(f"generate {syn.name}", "generate", _generate, (train, b.captions(train, syn)),
                                    _gen_needs(syn), syn=syn, data=cfg.data, max_scale=max(cfg.source_scales(syn.name)))
        b.sp.generated.append((syn, generated[syn.name]))
        curve(syn.name, generated[syn.name])
    pick = _picked_curves(b, cfg, train, generated, evals)
    for mc in cfg.mix:
        if mc.synthetic in generated:
            curve(mc.name, generated[mc.synthetic], mix=mc)
        else:
            _picked_mix(b, cfg, train, generated, evals, pick, mc)
    if not cfg.metrics.per_class:
        return
    trained = b.reference(train) if cfg.metrics.reference == "trained" else None
    test = b.shards(cfg.data.test_split)
    mneeds = Needs(cpus=1.0, gpus=1.0, gpu_optional=True)
    b.sp.metrics.append(("real", b.add("metrics real", "metrics", _metrics, (train, test, trained, None, None), mneeds,
                                       cfg=cfg, name="real")))
    for syn in cfg.synthetic:
        syn_test = None if cfg.metrics.test_from == "training" else b.add(
            f"generate test set of {syn.name}", "generate", _generate,
            (train, b.captions(train, syn, syn.seed + TEST_SEED_OFFSET)), _gen_needs(syn), syn=syn, data=cfg.data,
            max_scale=max(cfg.source_scales(syn.name)), what=f"test set of {syn.name}", test_per_class=cfg.metrics.per_class)
        b.sp.metrics.append((syn.name, b.add(f"metrics {syn.name}", "metrics", _metrics,
                                             (train, test, trained, generated[syn.name], syn_test), mneeds,
                                             cfg=cfg, name=syn.name)))


def _picked_curves(b: _Builder, cfg: StudyConfig, train: str, generated: dict[str, str],
                   evals: list[Evaluation]) -> str | None:
    """`curves = ["best", "worst"]`: a select node over the candidates' validation losses at the largest
    scale, then models of the picked configurations at every other scale (and run)."""
    from synscale.grid import PICKS, candidates

    picks = [p for p in PICKS if p in cfg.curves]
    if not picks and not any(m.synthetic in PICKS for m in cfg.mix):
        return None
    top, names = max(cfg.scales), [c.name for c in candidates(cfg)]
    vals = [(m.source, ev) for m, e, ev in b.sp.evals if m.scale == top and e == "val" and m.source in names
            and m.task == "classification"]
    pick = b.add("select best and worst", "select", _select, tuple(ev for _, ev in vals), Needs(cpus=0.0),
                 names=[n for n, _ in vals])
    sets = tuple(generated[n] for n in names)
    for which, scale, run in itertools.product(picks, cfg.scales, range(cfg.repeats)):
        tc = _run_train(cfg, run)
        label = "{name}" + (f" run {run}" if cfg.repeats > 1 else "") + f" D={scale} ({which})"
        tr = b.add(f"train {which} D={scale}" + (f" run {run}" if cfg.repeats > 1 else ""), "train", _train_picked,
                   (pick, None, *sets), _train_needs(tc),
                   {"scale": scale, "iterations": 0, "samples": 0} if scale == top else _train_info(scale, tc),
                   which=which, names=names, tc=tc,
                   n_real=0, n_syn=scale, seed=cfg.data.order_seed, label=label)
        # at the largest scale the model is the grid's (a cached stage here), evaluated on val already
        on = [e for e in evals if e.name != "val"] if scale == top else evals
        b.evaluations(ModelSpec(which, scale, tr, 0, run, pick=pick), tc, on)
    return pick


def _picked_mix(b: _Builder, cfg: StudyConfig, train: str, generated: dict[str, str], evals: list[Evaluation],
                pick: str | None, mc: Any) -> None:
    """A `[[mix]]` whose synthetic part is the picked best / worst configuration."""
    from synscale.grid import candidates

    names = [c.name for c in candidates(cfg)]
    sets = tuple(generated[n] for n in names)
    for scale, run in itertools.product(cfg.source_scales(mc.name), range(cfg.repeats)):
        tc = _run_train(cfg, run)
        n_real, n_syn = mc.counts(scale)
        label = f"{mc.name}" + (f" run {run}" if cfg.repeats > 1 else "") + f" ({n_real} real + {n_syn} {{name}})"
        tr = b.add(f"train {mc.name} D={n_real + n_syn}" + (f" run {run}" if cfg.repeats > 1 else ""), "train",
                   _train_picked, (pick, train, *sets), _train_needs(tc), _train_info(n_real + n_syn, tc),
                   which=mc.synthetic, names=names, tc=tc, n_real=n_real, n_syn=n_syn, seed=cfg.data.order_seed,
                   label=label)
        b.evaluations(ModelSpec(mc.name, n_real + n_syn, tr, n_real, run), tc, evals)


def _run_train(cfg: StudyConfig, run: int) -> Any:
    """The classifier recipe of repeat `run`: train.seed + run (run 0 is the recipe as written)."""
    return cfg.train if run == 0 else dataclasses.replace(cfg.train, seed=cfg.train.seed + run)


def _train_info(scale: int, tc: Any) -> dict[str, Any]:
    from synscale.train.schedule import run_length, samples_seen

    return {"scale": scale, "iterations": run_length(scale, tc)[0], "samples": samples_seen(scale, tc)}


def _clip_curves(b: _Builder, cfg: StudyConfig, train: str | None, evals: list[Evaluation]) -> None:
    """A CLIP model per source (real, each synthetic, each mix), caption scale and run (`repeats`, with
    clip.train.seed + run), evaluated zero-shot on the study's sets and the `[[evaluate.zero_shot]]` sets,
    and by linear probes."""
    cc = cfg.clip
    pairs = b.add("real pairs", "pairs" if cc.pairs.dataset == "captioned" else "shards", _pairs,
                  (train if cc.pairs.dataset == "captioned" else None,), cfg=cfg)
    b.sp.real_sets["real pairs"] = pairs
    generated = {}
    for g in cc.synthetic:
        generated[g.name] = b.add(f"generate {g.name}", "generate", _clip_generate, (pairs,), _gen_needs(g),
                                  g=g)
        b.sp.generated.append((g, generated[g.name]))
    curves = ([(cc.real, pairs, None, None)] if cc.real else []) + [(n, k, None, None) for n, k in generated.items()]
    curves += [(m.name, pairs, generated[m.synthetic], m.real_prob) for m in cc.mix]
    for (name, set_key, mixed_in, real_prob), scale, run in itertools.product(curves, cc.scales, range(cfg.repeats)):
        tc = cc.train_for(scale)
        tc = dataclasses.replace(tc, seed=tc.seed + run)
        extra = [(mixed_in, b.subset(mixed_in, scale, cc.order_seed, "caption"))] if mixed_in is not None else []
        parts = [(set_key, b.subset(set_key, scale, cc.order_seed, "caption")), *extra]
        tr = b.train(tc, parts, scale, name if cfg.repeats == 1 else f"{name} run {run}", real_prob)
        real = scale if set_key == pairs else 0
        model = ModelSpec(name, scale, tr, real, run, "clip", scale if extra else scale - real)
        b.evaluations(model, tc, evals)


# ---------------------------------------------------------------------------------------------------


def run_study(cfg: StudyConfig, workdir: str | Path, quiet: bool = False, executor: str = "local",
              **executor_options: Any) -> Path:
    """Run every stage of `cfg` in `workdir` with `executor` (synscale.executors); returns the report's path.
    The run holds the workdir's study lock throughout (synscale.workdir): a run of another study there at the
    same time is refused (WorkdirBusy), one of the same study shares the work."""
    from synscale.preflight import check_study
    from synscale.workdir import study_lock

    check_study(cfg)  # every model, data and evaluation set the study names, before any stage runs
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"{workdir}: is a file, not a directory; choose another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    with study_lock(workdir, cfg.name, study_identity(cfg)):  # another study running here: WorkdirBusy
        return _run_locked(cfg, workdir, quiet, executor, **executor_options)


def _run_locked(cfg: StudyConfig, workdir: Path, quiet: bool, executor: str, **executor_options: Any) -> Path:
    """run_study's work, under the workdir's study lock."""
    from synscale.executors import execute
    from synscale.progress import Log
    from synscale.report.html import write_report
    from synscale.train.events import write_study_events

    write_text(workdir / "study.json", json.dumps(to_dict(cfg), indent=1))
    log = Log(quiet)
    sp = build_plan(cfg)
    done = execute(sp.plan, workdir, executor, quiet, **executor_options)
    evals = _trained_models(sp, done)
    if write_study_events(workdir / "tensorboard", evals):
        log(f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")
    elif cfg.train.tensorboard and evals:
        from synscale.extras import install_line

        log(f"TensorBoard events not written (no tensorboard package): {install_line('tracking')}")
    fits = _write_results(cfg, sp, done, evals, workdir)
    results = workdir / "results"
    log(f"fits: {len(fits)} row(s) -> {results / 'fits.parquet'} (and per_class, correlations, predictions)")
    log(f"findings: the paper's six, tested -> {results / 'findings.json'}")
    report = write_report(workdir, cfg.name)
    log(f"report -> {report}")
    return report


def _trained_models(sp: StudyPlan, done: dict[str, Any]) -> list[tuple[Any, str, StageResult]]:
    """(trained model, evaluation set, evaluation stage) of every evaluation the study ran, once each."""
    from synscale.results import TrainedModel

    evals, seen = [], set()
    for m, name, ev in sp.evals:
        source = picked(done[m.pick], m.source) if m.pick else m.source
        if (source, m.scale, m.run, name, m.task) in seen:  # best == worst, or a picked curve that was there
            continue
        seen.add((source, m.scale, m.run, name, m.task))
        evals.append((TrainedModel(source, source, m.scale, done[m.train], m.real_images, m.run, m.task,
                                   m.synthetic_images), name, done[ev]))
    return evals


def _write_results(cfg: StudyConfig, sp: StudyPlan, done: dict[str, Any], evals: list[Any], workdir: Path) -> Any:
    """W/results from this study's stages only (a workdir another study used keeps none of its tables),
    analysed, and put in place whole; returns the fits."""
    from synscale.analysis.run import analyse, reference_sizes
    from synscale.results import collect_generation, collect_results
    from synscale.stage import building_dir
    from synscale.workdir import relative

    with building_dir(workdir / "results") as results:
        collect_results(evals, results)
        collect_generation([(g, done[k]) for g, k in sp.generated], results)
        if sp.metrics:
            from synscale.metrics.run import collect_metrics

            collect_metrics([(name, done[k]) for name, k in sp.metrics], results)
        train_set = done[sp.train_set] if sp.train_set else None
        meta = {"study": cfg.name, "d_ref": cfg.data.reference_size or (_set_size(train_set) if train_set else 0),
                "d_ref_clip": cfg.clip.reference_size or max(cfg.clip.scales, default=0),
                "real_train_path": relative(train_set.path, workdir) if train_set else None,
                "skipped": _skipped(sp, done, workdir)}
        (results / "meta.json").write_text(json.dumps(meta, indent=1))
        return analyse(results, reference_sizes(meta), cfg.fit)["fits"]


def _skipped(sp: StudyPlan, done: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """What writing each real set skipped (synscale.data.shards.skipped_record), with where the set is (relative
    to the workdir)."""
    from synscale.data.shards import skipped_record
    from synscale.workdir import relative

    return {name: {**skipped_record(done[key].path), "path": relative(done[key].path, workdir)}
            for name, key in sp.real_sets.items()}


def _set_size(set_stage: StageResult) -> int:
    from synscale.data.shards import read_manifest

    return len(read_manifest(set_stage.path))
