"""A study config as a plan of nodes (synscale.study.plan), built without running anything and without torch."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from synscale.config import StudyConfig, study_identity
from synscale.metrics import TEST_SEED_OFFSET, synthetic_test_config
from synscale.modelref import is_builtin
from synscale.study.plan import Needs, Plan

from synscale.evaluate.registry import EVALUATIONS, Evaluation
from synscale.data import stages as data_stages
from synscale.evaluate import stages as eval_stages
from synscale.generate import stages as generate_stages
from synscale.prompts import stages as prompt_stages
from synscale.study import nodes, reference
from synscale.train import stages as train_stages

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
    holdout: bool = False  # trained past the curve only to check forecasts ([forecast]; results/holdout.parquet)


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
    loop: list[tuple[str, str]] = field(default_factory=list)  # (source, node) of each allocation and retrieval


def _train_needs(tc: Any) -> Needs:
    """A training run's needs: a GPU per process where the device asks for (or allows) CUDA, and a CPU for each
    process and each of its loader workers (they are all busy at once). A run across machines (nodes > 1) asks
    nothing of its own: Ray Train places its ranks on the cluster (synscale.train.ray_train)."""
    if tc.nodes > 1:
        return Needs(cpus=0.0, why=f"Ray Train places nodes * nproc = {tc.nodes * tc.nproc} ranks")
    from synscale.train.config import rank_resources

    rank = rank_resources(tc)
    return Needs(cpus=tc.nproc * rank["CPU"], gpus=tc.nproc * rank["GPU"], processes=tc.nproc, gpu_optional=tc.device == "auto",
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
        return self.add(f"{what} [{split}]", "shards", data_stages.shards, data=self.cfg.data, split=split, what=what,
                        **kw)

    def subset(self, set_key: str, scale: int, seed: int, order: str = "class") -> str:
        return self.add(f"subset {scale} of {set_key} (seed {seed}{', ' + order if order != 'class' else ''})", "subset",
                        data_stages.subset, {"set_stage": set_key}, scale=scale, seed=seed, order=order)

    def shift_set(self, test: str, model: str | None, name: str) -> str:
        """A shifted copy of the real test set (`model`: the real-trained reference, for the hard shift)."""
        cfg = self.cfg
        return self.add(f"shift {name}", "shift", eval_stages.shift_set, {"test": test, "model": model}, Needs(),
                        tc=cfg.train, name=name, seed=cfg.evaluate.shift_seed, shard_size=cfg.data.shard_size)

    def ood_set(self, base: str, spec: Any) -> str:
        """An `[[evaluate.sets]]` set in the label space of the set `base`."""
        return self.add(f"OOD set {spec.name}", "ood", data_stages.ood_set, {"base": base}, spec=spec,
                        image_size=self.cfg.data.image_size, shard_size=self.cfg.data.shard_size)

    def reference(self, train: str) -> str:
        """The real-trained reference (metrics, hard shift): the whole class-balanced training set."""
        sub = self.add("subset reference", "subset", reference.reference_subset, {"train": train},
                       seed=self.cfg.data.order_seed)
        ref = self.cfg.data.reference_size  # about the reference's size (the data says exactly, when it runs)
        info = _train_info(ref, self.cfg.train) if ref else {}
        return self.add("train reference", "train", reference.train_reference, {"train": train, "subset": sub},
                        _train_needs(self.cfg.train), info, tc=self.cfg.train)

    def captions(self, train: str, syn: Any, seed: int | None = None) -> str | None:
        """An in-captions configuration's caption pool (one node per captioner and seed, shared), else None."""
        if syn.strategy != "in-captions":
            return None
        seed = syn.seed if seed is None else seed
        gpu = syn.captioner.startswith("hf:")
        return self.add(f"captions {syn.captioner} seed={seed}", "captions", prompt_stages.caption_pool, {"train": train},
                        Needs(cpus=1.0, gpus=1.0 if gpu else 0.0, gpu_optional=gpu), captioner=syn.captioner, seed=seed,
                        allow_download=syn.allow_download)

    def train(self, tc: Any, parts: list[tuple[str, str]], scale: int, name: str,
              real_prob: float | None = None) -> str:
        flat = tuple(k for pair in parts for k in pair)
        return self.add(f"train {name} D={scale}", "train", train_stages.train, {"parts": flat}, _train_needs(tc),
                        _train_info(scale, tc), tc=tc, scale=scale, name=name, real_prob=real_prob)

    def evaluations(self, model: ModelSpec, tc: Any, evals: list[Evaluation], record: bool = True) -> None:
        """Every evaluation of `evals` the model's task takes, in the results tables unless `record` is False (a
        pilot model of an adaptive source, which only its allocation reads)."""
        for e in (e for e in evals if model.task in e.tasks):
            if e.probe is not None:
                p_train, p_test = e.probe_sets
                ev = self.add(f"probe {model.train} on {e.probe.name}", "probe", eval_stages.probe,
                              {"model": model.train, "train": p_train, "test": p_test}, _eval_needs(tc), tc=tc, pc=e.probe)
                if record:
                    self.sp.evals.append((model, e.name, ev))
                continue
            head = None
            if model.task == "clip":
                head = self.add(f"zero-shot head of {model.train} for {e.name}", "zeroshot", eval_stages.zero_shot_head,
                                {"model": model.train, "eval_set": e.set_key}, _eval_needs(tc), tc=tc,
                                templates=e.templates or self.cfg.clip.templates)
            ev = self.add(f"evaluate {model.train} on {e.name}", "evaluate", eval_stages.evaluate,
                          {"model": model.train, "eval_set": e.set_key, "head": head}, _eval_needs(tc), tc=tc,
                          eval_name=e.name, ood=e.ood)
            if record:
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
    if cfg.scales and (cfg.adaptive or cfg.retrieved):
        _loop_sources(b, cfg, train, test, evals)
    from synscale.study.estimate import node_seconds

    for key, secs in node_seconds(b.sp, cfg).items():  # each node's estimated seconds (synscale.study.estimate)
        b.sp.plan.nodes[key].info["est_seconds"] = secs
    b.sp.plan.identity = study_identity(cfg)
    return b.sp


def _curve(b: _Builder, cfg: StudyConfig, train: str, evals: list[Evaluation], source: str, set_key: str,
           mix: Any = None) -> None:
    """One classifier curve: a nested subset of `set_key` at each scale and run (a mix: real + synthetic), a model
    on each, evaluated on every set and probe; and the source's held-out anchors (`[forecast]`)."""
    from synscale.data.shifts import HARD

    # a configuration trained at one scale only (the grid's) is evaluated on the real test set, as in the
    # paper's tables A4-A6; curves on every set (the picked best / worst get theirs in _picked_curves)
    one = source != "real" and len(cfg.source_scales(source)) == 1 and len(cfg.scales) > 1
    sets = [e for e in evals if e.name == "val"] if one else evals
    held = [(s, True) for s in cfg.holdout_scales(source)] if mix is None else []
    for (scale, holdout), run in itertools.product([(s, False) for s in cfg.source_scales(source)] + held,
                                                   range(cfg.repeats)):
        tc = _run_train(cfg, run)
        name = source if cfg.repeats == 1 else f"{source} run {run}"
        seed = cfg.data.order_seed
        if mix is None:
            tr = b.train(tc, [(set_key, b.subset(set_key, scale, seed))], scale, name)
            model = ModelSpec(source, scale, tr, scale if source == "real" else 0, run, holdout=holdout)
            if holdout and source == "real" and scale == cfg.data.reference_size:
                # the reference network itself, which picked the hard shift's images: not judged on them
                b.evaluations(model, tc, [e for e in sets if e.name != HARD])
                continue
        else:
            n_real, n_syn = mix.counts(scale)
            parts = [(s, b.subset(s, n, seed)) for s, n in ((train, n_real), (set_key, n_syn)) if n]
            tr = b.train(tc, parts, n_real + n_syn, f"{name} ({n_real} real + {n_syn} synthetic)")
            model = ModelSpec(source, n_real + n_syn, tr, n_real, run)
        b.evaluations(model, tc, sets)


def _classifier_curves(b: _Builder, cfg: StudyConfig, train: str, evals: list[Evaluation]) -> None:
    """Per source (real, each synthetic configuration, each mix) its curve (_curve); then the metrics of every
    configuration."""
    generated: dict[str, str] = {}

    def curve(source: str, set_key: str, mix: Any = None) -> None:
        _curve(b, cfg, train, evals, source, set_key, mix)

    curve("real", train)
    for syn in cfg.synthetic:
        generated[syn.name] = b.add(f"generate {syn.name}", "generate", generate_stages.synthetic_set,
                                    {"train": train, "captions": b.captions(train, syn)}, _gen_needs(syn), syn=syn,
                                    data=cfg.data, max_scale=max(cfg.source_scales(syn.name) + cfg.holdout_scales(syn.name)))
        b.sp.generated.append((syn, generated[syn.name]))
        curve(syn.name, generated[syn.name])
    pick = _picked_curves(b, cfg, train, generated, evals)
    for mix in cfg.mix:
        if mix.synthetic in generated:
            curve(mix.name, generated[mix.synthetic], mix=mix)
        else:
            _picked_mix(b, cfg, train, generated, evals, pick, mix)
    if not cfg.metrics.per_class:
        return
    trained = b.reference(train) if cfg.metrics.reference == "trained" else None
    test = b.shards(cfg.data.test_split)
    mneeds = Needs(cpus=1.0, gpus=1.0, gpu_optional=True)
    def metrics(name: str, generated_set: str | None, syn_test: str | None) -> str:
        return b.add(f"metrics {name}", "metrics", nodes.metrics, {"train": train, "test": test, "trained": trained,
                     "generated": generated_set, "syn_test": syn_test}, mneeds, cfg=cfg, name=name)

    b.sp.metrics.append(("real", metrics("real", None, None)))
    for syn in cfg.synthetic:
        syn_test = None if cfg.metrics.test_from == "training" else b.add(
            f"generate test set of {syn.name}", "generate", generate_stages.synthetic_set,
            {"train": train, "captions": b.captions(train, syn, syn.seed + TEST_SEED_OFFSET)}, _gen_needs(syn),
            syn=synthetic_test_config(syn, cfg.metrics.per_class), data=cfg.data,
            max_scale=max(cfg.source_scales(syn.name)), what=f"test set of {syn.name}")
        b.sp.metrics.append((syn.name, metrics(syn.name, generated[syn.name], syn_test)))


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
    pick = b.add("select best and worst", "select", nodes.select, {"evals": tuple(ev for _, ev in vals)},
                 Needs(cpus=0.0), names=[n for n, _ in vals])
    sets = tuple(generated[n] for n in names)
    for which, scale, run in itertools.product(picks, cfg.scales, range(cfg.repeats)):
        tc = _run_train(cfg, run)
        label = "{name}" + (f" run {run}" if cfg.repeats > 1 else "") + f" D={scale} ({which})"
        tr = b.add(f"train {which} D={scale}" + (f" run {run}" if cfg.repeats > 1 else ""), "train", nodes.train_picked,
                   {"pick": pick, "real": None, "sets": sets}, _train_needs(tc),
                   {"scale": scale, "iterations": 0, "samples": 0} if scale == top else _train_info(scale, tc),
                   which=which, names=names, tc=tc,
                   n_real=0, n_syn=scale, seed=cfg.data.order_seed, label=label)
        # at the largest scale the model is the grid's (a cached stage here), evaluated on val already
        on = [e for e in evals if e.name != "val"] if scale == top else evals
        b.evaluations(ModelSpec(which, scale, tr, 0, run, pick=pick), tc, on)
    return pick


def _picked_mix(b: _Builder, cfg: StudyConfig, train: str, generated: dict[str, str], evals: list[Evaluation],
                pick: str | None, mix: Any) -> None:
    """A `[[mix]]` whose synthetic part is the picked best / worst configuration."""
    from synscale.grid import candidates

    names = [c.name for c in candidates(cfg)]
    sets = tuple(generated[n] for n in names)
    for scale, run in itertools.product(cfg.source_scales(mix.name), range(cfg.repeats)):
        tc = _run_train(cfg, run)
        n_real, n_syn = mix.counts(scale)
        label = f"{mix.name}" + (f" run {run}" if cfg.repeats > 1 else "") + f" ({n_real} real + {n_syn} {{name}})"
        tr = b.add(f"train {mix.name} D={n_real + n_syn}" + (f" run {run}" if cfg.repeats > 1 else ""), "train",
                   nodes.train_picked, {"pick": pick, "real": train, "sets": sets}, _train_needs(tc),
                   _train_info(n_real + n_syn, tc),
                   which=mix.synthetic, names=names, tc=tc, n_real=n_real, n_syn=n_syn, seed=cfg.data.order_seed,
                   label=label)
        b.evaluations(ModelSpec(mix.name, n_real + n_syn, tr, n_real, run), tc, evals)


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
    pairs = b.add("real pairs", "pairs" if cc.pairs.dataset == "captioned" else "shards", nodes.pairs,
                  {"train": train if cc.pairs.dataset == "captioned" else None}, cfg=cfg)
    b.sp.real_sets["real pairs"] = pairs
    generated = {}
    for g in cc.synthetic:
        generated[g.name] = b.add(f"generate {g.name}", "generate", generate_stages.clip_synthetic_set,
                                  {"pairs": pairs}, _gen_needs(g), g=g)
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


def _loop_sources(b: _Builder, cfg: StudyConfig, train: str, test: str, evals: list[Evaluation]) -> None:
    """Every `[[adaptive]]` source with its uniform control (_adaptive), then every `[[retrieved]]` source: a set
    retrieved from the pool (synscale.study.retrieve) with a curve like any source's."""
    from synscale.study import retrieve

    generated = {syn.name: key for syn, key in b.sp.generated if syn in cfg.synthetic}
    for a in cfg.adaptive:
        _adaptive(b, cfg, train, evals, generated, a)
    real_top = [s for s in cfg.source_scales("real") + cfg.holdout_scales("real") if s != cfg.data.reference_size]
    for rc in cfg.retrieved:
        exclude = b.subset(train, max(real_top), cfg.data.order_seed) if rc.pool == "train" and real_top else None
        clip, clip_tc = None, cfg.clip.train_for(max(cfg.clip.scales)) if cfg.clip.scales else cfg.train
        if rc.clip == "study":
            clip = next(m.train for m, _, _ in b.sp.evals if m.task == "clip" and m.source == cfg.clip.real
                        and m.scale == max(cfg.clip.scales) and m.run == 0)
        ood = tuple(dict.fromkeys(e.set_key for e in evals if e.ood and e.set_key))
        node = b.add(f"retrieve {rc.name}", "retrieved", retrieve.retrieve,
                     {"train": train, "exclude": exclude, "clip": clip, "eval_sets": (test, *ood)},
                     Needs(cpus=1.0, gpus=1.0, gpu_optional=True), rc=rc, clip_tc=clip_tc, dataset=cfg.data.dataset,
                     size=max(cfg.source_scales(rc.name)), shard_size=cfg.data.shard_size, templates=cfg.clip.templates)
        b.sp.loop.append((rc.name, node))
        _curve(b, cfg, train, evals, rc.name, node)


def _adaptive(b: _Builder, cfg: StudyConfig, train: str, evals: list[Evaluation], generated: dict[str, str],
              a: Any) -> None:
    """An adaptive source's plan: each candidate's pilot models (validation only, not in the results), then per
    round an allocation, each arm's generation (adaptive, uniform) and its model on every evaluation set."""
    from synscale.study import adaptive

    tc, val = cfg.train, [e for e in evals if e.name == "val"]
    syns = tuple(next(s for s in cfg.synthetic if s.name == n) for n in a.candidates)
    pilot = []
    for syn, scale in itertools.product(syns, cfg.pilot_scales(a)):
        gen = generated[syn.name]
        tr = b.train(tc, [(gen, b.subset(gen, scale, cfg.data.order_seed))], scale, syn.name)
        b.evaluations(ModelSpec(syn.name, scale, tr), tc, val, record=False)
        pilot.append(_val_node(b, tr))
    caps = tuple(b.captions(train, s) for s in syns)
    needs = [_gen_needs(s) for s in syns]
    gen_needs = Needs(cpus=max(n.cpus for n in needs), gpus=max(n.gpus for n in needs),
                      gpu_optional=all(n.gpu_optional for n in needs), actor_cpus=max(n.actor_cpus for n in needs),
                      actor_gpus=max(n.actor_gpus for n in needs))
    allocs: list[str] = []
    model_evals: list[str] = []
    prev: dict[str, str | None] = {arm: None for arm in adaptive.ARMS}
    for r, scale in enumerate(a.scales):
        alloc = b.add(f"allocate {a.name} round {r + 1}", "allocate", adaptive.allocate_round,
                      {"pilot": tuple(pilot), "previous": tuple(allocs), "evals": tuple(model_evals)}, Needs(cpus=1.0),
                      ac=a, candidates=list(a.candidates), pilot_scales=cfg.pilot_scales(a), round=r)
        allocs.append(alloc)
        b.sp.loop.append((a.name, alloc))
        for arm, source in zip(adaptive.ARMS, (a.name, a.uniform), strict=True):
            prev[arm] = b.add(f"generate {source} round {r + 1}", "round", adaptive.generate_round,
                              {"train": train, "captions": caps, "allocation": alloc, "previous": prev[arm]}, gen_needs,
                              {"images": scale - (a.scales[r - 1] if r else 0)}, syns=syns, data=cfg.data, arm=arm,
                              round=r, name=a.name)
            tr = b.add(f"train {source} D={scale}", "train", adaptive.train_round, {"round": prev[arm]},
                       _train_needs(tc), _train_info(scale, tc), tc=tc, scale=scale, name=source)
            b.evaluations(ModelSpec(source, scale, tr), tc, evals)
            if arm == "adaptive":
                model_evals.append(_val_node(b, tr))


def _val_node(b: _Builder, train_node: str) -> str:
    """The key of a model's evaluation on the real test set ("val")."""
    key = f"evaluate {train_node} on val"
    if key not in b.sp.plan.nodes:
        raise ValueError(f"plan: no validation evaluation of {train_node!r}")
    return key
