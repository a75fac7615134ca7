"""A study run: its plan handed to an executor, then its results tables, fits and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synscale.atomic import write_text
from synscale.config import ConfigError, StudyConfig, study_identity, to_dict
from synscale.stage import StageResult
from synscale.study.build import StudyPlan, build_plan
from synscale.study.nodes import picked


def run_study(cfg: StudyConfig, workdir: str | Path, quiet: bool = False, executor: str = "local",
              **executor_options: Any) -> Path:
    """Run every stage of `cfg` in `workdir` with `executor` (synscale.study.executors); returns the report's path.
    The run holds the workdir's study lock throughout (synscale.workdir): a run of another study there at the
    same time is refused (WorkdirBusy), one of the same study shares the work."""
    from synscale.study.preflight import check_study
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
    from synscale.study.executors import execute
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
                                   m.synthetic_images, m.holdout), name, done[ev]))
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
        if sp.loop:
            from synscale.results import collect_loop

            collect_loop([(source, done[k]) for source, k in sp.loop], results)
        train_set = done[sp.train_set] if sp.train_set else None
        d_ref = cfg.data.reference_size or (_set_size(train_set) if train_set else 0)
        d_ref_clip = cfg.clip.reference_size or max(cfg.clip.scales, default=0)
        meta = {"study": cfg.name, "d_ref": d_ref, "d_ref_clip": d_ref_clip,
                "samples_d_ref": _samples_at(cfg, d_ref, d_ref_clip),
                "real_train_path": relative(train_set.path, workdir) if train_set else None,
                "skipped": _skipped(sp, done, workdir), "loops": loops(cfg)}
        (results / "meta.json").write_text(json.dumps(meta, indent=1))
        return analyse(results, reference_sizes(meta), cfg.fit)["fits"]


def loops(cfg: StudyConfig) -> list[dict[str, Any]]:
    """meta.json's record of the closed loop: per [[adaptive]] source its name, its uniform control's, its round
    scales and the [[retrieved]] sources measured at all of them (synscale.analysis.loop)."""
    return [{"adaptive": a.name, "uniform": a.uniform, "scales": a.scales,
             "retrieved": [r.name for r in cfg.retrieved if set(a.scales) <= set(cfg.source_scales(r.name))]}
            for a in cfg.adaptive]


def _samples_at(cfg: StudyConfig, d_ref: int, d_ref_clip: int) -> dict[str, int]:
    """The samples the study's recipes would put through a model at D_I, per task (the forecasts' power law in
    samples seen reads the loss there off it)."""
    from synscale.train.schedule import samples_seen

    out = {}
    if cfg.scales and d_ref:
        out["classification"] = samples_seen(d_ref, cfg.train)
    if cfg.clip.scales and d_ref_clip:
        out["clip"] = samples_seen(d_ref_clip, cfg.clip.train_for(d_ref_clip))
    return out


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
