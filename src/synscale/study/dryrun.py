"""What `synscale study FILE --dry-run` prints: the study's runs per scale, its plan's stages and their cost, and
the checks a run makes before its first stage."""

from __future__ import annotations

import sys

from synscale.config import StudyConfig


def print_checks(cfg: StudyConfig) -> int:
    """The checks a run makes before its first stage: 0 when all pass, else 2 (one line per problem)."""
    from synscale.study.preflight import problems

    found = problems(cfg)
    if not found:
        print("\nchecks: the data, every model and evaluation set the study names are there and load")
        return 0
    print(f"\nchecks: {len(found)} problem(s); the study would stop before its first stage:", file=sys.stderr)
    for line in found:
        print(f"synscale: error: {line}", file=sys.stderr)
    return 2


def print_plan(cfg: StudyConfig) -> None:
    if cfg.scales:
        print(f"study {cfg.name}: dataset {cfg.data.dataset}, model {cfg.train.model}, batch {cfg.train.batch_size}")
        sources = cfg.classifier_sources()
        every = sorted({s for n in sources for s in cfg.source_scales(n) + cfg.holdout_scales(n)})
        _print_runs(every, cfg.train, "scale", "images seen")
        models = sum(len(cfg.source_scales(n)) + len(cfg.holdout_scales(n)) for n in sources)
        own = "" if all(cfg.source_scales(n) == cfg.scales for n in sources) else ", by each source's scales"
        print(f"sources: {len(sources)} ({models} models in all{own})")
        print(f"  real: scales {_scale_text(cfg.source_scales('real'))}{_held_text(cfg, 'real')}")
        for syn in cfg.synthetic:
            print(f"  {syn.name}: {syn.model}, {syn.strategy}, guidance {syn.guidance:g}, {syn.steps or 'default'} steps, "
                  f"{'per_class ' + str(syn.per_class) if syn.per_class else 'enough images for the largest scale'}"
                  f"; scales {_scale_text(cfg.source_scales(syn.name))}{_held_text(cfg, syn.name)}")
        _print_loop(cfg)
    cc = cfg.clip
    if cc.scales:
        pairs = (f"{cfg.data.dataset} {cfg.data.train_split} captioned by {cc.pairs.captioner}" if cc.pairs.dataset == "captioned"
                 else f"img2dataset shards {cc.pairs.root}")
        print(f"\nCLIP: {cc.train.model}, batch {cc.train.batch_size}; real pairs: {pairs}; zero-shot templates {cc.templates}")
        if cc.small_scales():
            _print_runs(cc.small_scales(), cc.train, "captions", "pairs seen")
        if cc.large_scales():
            print(f"from {cc.large_from:,} captions: {cc.train_large.model}, batch {cc.train_large.batch_size}")
            _print_runs(cc.large_scales(), cc.train_large, "captions", "pairs seen")
        sources = cc.sources()
        evals = 1 + len(cfg.evaluate.shifts) + len(cfg.evaluate.sets) + len(cfg.evaluate.zero_shot)
        print(f"CLIP sources: {', '.join(sources)} ({len(sources) * len(cc.scales)} models, each evaluated zero-shot on "
              f"{evals} set(s))")
        for g in cc.synthetic:
            print(f"  {g.name}: {g.model} regenerates the {max(cc.scales):,} captions' images at guidance {g.guidance:g}, "
                  f"{g.steps or 'default'} steps")
        for m in cc.mix:
            print(f"  {m.name}: each caption takes its real image with probability {m.real_prob:g}, else its {m.synthetic} image")


def _print_loop(cfg: StudyConfig) -> None:
    """The [[adaptive]] and [[retrieved]] sources: what each round generates and trains, the pilot, the controls."""
    for a in cfg.adaptive:
        rounds = ", ".join(f"{s - p:,} images to {s:,}" for p, s in zip([0, *a.scales], a.scales, strict=False))
        print(f"  {a.name}: {len(a.scales)} round(s) ({rounds}) from {len(a.candidates)} candidate(s) "
              f"({', '.join(a.candidates)}), each piloted at {_scale_text(cfg.pilot_scales(a))} (validation only); "
              f"{'poor' if a.regenerate == 'poor' else 'all'} classes may move off the best candidate")
        print(f"  {a.uniform}: the pilot's best candidate, class-balanced, at {_scale_text(a.scales)} (the control)")
    for r in cfg.retrieved:
        clip = "the study's CLIP on real pairs" if r.clip == "study" else r.clip
        pool = "the training split less the real curve's images" if r.pool == "train" else r.pool
        print(f"  {r.name}: retrieved by {clip} from {pool} ({r.strategy} prompts; near-duplicates of the evaluation "
              f"sets, thumbnails correlating at {r.dedup:g} or above, dropped); scales {_scale_text(cfg.source_scales(r.name))}")


def _held_text(cfg: StudyConfig, source: str) -> str:
    held = cfg.holdout_scales(source)
    return f"; held out of the fits, to check forecasts ([forecast]): {_scale_text(held)}" if held else ""


def print_stages(cfg: StudyConfig) -> None:
    """The plan's stages per kind (synscale.study.build_plan) and what they will cost (synscale.study.estimate)."""
    from synscale.study.estimate import print_estimate
    from synscale.study import build_plan

    sp = build_plan(cfg)
    counts = sp.plan.counts()
    print(f"\nplan: {len(sp.plan)} stages ({', '.join(f'{k} {n}' for k, n in counts.items())}); "
          "`synscale status W` shows their states while the study runs")
    print_estimate(sp, cfg)


def _scale_text(scales: list[int]) -> str:
    return ", ".join(f"{s / 1e6:g}M" if s >= 100_000 else f"{s:,}" for s in scales)


def _print_runs(scales: list[int], train: object, what: str, seen: str) -> None:
    """One line per data scale: steps, warm-up, samples through the model, epochs."""
    from synscale.train.schedule import floored, run_length, samples_seen

    print(f"{what:>10} {'iters':>8} {'warmup':>7} {seen:>12} {'epochs':>7}")
    total = 0
    for s in scales:
        it, wu = run_length(s, train)
        n = samples_seen(s, train)
        total += n
        floor = f"  (schedule.min_epochs floor: the log-scale rule gives {'none' if s <= train.schedule.zero_scale else 'fewer'})" \
            if floored(s, train) else ""  # type: ignore[attr-defined]
        print(f"{s:>10,} {it:>8,} {wu:>7,} {n:>12,} {n / s:>7.1f}{floor}")
    print(f"total {seen.split()[0]} through the model: {total:,} per source (one model per scale)")
