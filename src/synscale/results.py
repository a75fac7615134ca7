"""A study's results tables, from its evaluation and generation stages: scaling.parquet (one row per
trained model x evaluation set), scaling_per_class.parquet, scaling_examples.parquet and generation.parquet.
The fits, the per-class analysis and the report read these tables only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synscale.atomic import read_json
from synscale.config import ClipSyntheticConfig
from synscale.errors import DataError
from synscale.modelref import builtin_family
from synscale.stage import StageResult
from synscale.workdir import relative

# the columns each reader of a results table depends on (a table without one was edited, or is not synscale's)
REQUIRED = {
    "scaling": ("source", "config", "scale", "eval_set", "loss", "top1"),
    "holdout": ("source", "config", "scale", "eval_set", "loss", "top1"),
    "scaling_per_class": ("config", "eval_set", "scale", "class_index", "class_name", "loss"),
    "scaling_examples": ("source", "config", "eval_set", "scale", "example_loss"),
    "generation": ("config", "model", "strategy", "guidance_scale"),
    "metrics": ("config",),
    "metrics_per_class": ("config", "class_index"),
    "fits": ("source", "config", "eval_set", "k"),
    "per_class": ("config", "eval_set", "class_name", "k"),
    "correlations": ("config",),
    "predictions": ("config",),
}


METRIC_TABLES = ("metrics", "metrics_per_class", "per_class")  # tables with a column per metric


def current_names(df: Any, table: str) -> Any:
    """A table written by an older synscale, with its renamed metrics under their current names (synscale.
    metrics.core.RENAMED: `lpips` -> `lpips_ref`): a column of the metric tables, a value of correlations'
    `metric`. A table that already has the new name keeps it. A curves table from before CLIP had curves of its
    own gets its `task` column (classification)."""
    from synscale.metrics.core import RENAMED

    if table in ("scaling", "holdout", "scaling_per_class") and "task" not in df.columns and len(df):
        df = df.assign(task="classification")  # written before CLIP had curves of its own: every row a classifier's
    if table in METRIC_TABLES:
        old = {o: n for o, n in RENAMED.items() if o in df.columns and n not in df.columns}
        return df.rename(columns=old) if old else df
    if table == "correlations" and "metric" in df.columns and df["metric"].isin(list(RENAMED)).any():
        return df.assign(metric=df["metric"].replace(RENAMED))
    return df


def read_table(path: str | Path, empty_ok: bool = True) -> Any:
    """A results table (None when absent), checked: readable, with the columns its readers use; `empty_ok`
    False: a table without rows is an error too. Errors name the file and what to do. Every reader of the
    results tables (analysis, findings, report, `synscale fit`) reads them here, so a table written by an
    older synscale comes with its renamed columns under their current names (current_names)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return None
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable results table ({str(e).splitlines()[0]}); rerun the study "
                        "(its complete stages are reused) to write it again") from None
    missing = [c for c in REQUIRED.get(path.stem, ()) if c not in df.columns]
    if missing and len(df):  # an empty table (nothing to fit) may have no columns
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (edited by hand?); rerun the study "
                        "(its complete stages are reused) to write it again")
    if not empty_ok and not len(df):
        raise DataError(f"{path}: no rows: the study evaluated no model (check its scales and sources); rerun it")
    return current_names(df, path.stem)


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
    holdout: bool = False  # a held-out anchor ([forecast]): its rows go to holdout.parquet, which no fit reads

def collect_results(evals: list[tuple[TrainedModel, str, StageResult]], results_dir: Path) -> None:
    """Write scaling.parquet, scaling_per_class.parquet and scaling_examples.parquet from eval stages, and
    holdout.parquet (the scaling rows of the held-out anchors, which only score forecasts) where there are any."""
    import pandas as pd

    rows, per_class, examples, held = [], [], [], []
    seen: dict[str, float] = {}  # a model's samples, read once for all its evaluations
    for tm, eval_name, ev in evals:
        ident = {"source": tm.source, "config": tm.config, "scale": tm.scale, "eval_set": eval_name, "run": tm.run}
        summary = read_json(ev.path / "summary.json")
        syn = tm.scale - tm.real_images if tm.synthetic_images is None else tm.synthetic_images
        if tm.stage.id not in seen:
            seen[tm.stage.id] = samples_seen(tm.stage, tm.scale)
        (held if tm.holdout else rows).append({
            **ident, "task": tm.task, "real_images": tm.real_images, "synthetic_images": syn,
            "samples_seen": seen[tm.stage.id], "loss": summary["loss"], "top1": summary["top1"],
            "n_eval": summary["n"], "train_stage": tm.stage.id, "eval_stage": ev.id})
        if tm.holdout:
            continue
        pc = pd.read_parquet(ev.path / "per_class.parquet")
        per_class.append(pc.assign(**ident, task=tm.task)[[*ident, "task", "class_index", "class_name", "loss", "top1", "n"]])
        ex = pd.read_parquet(ev.path / "examples.parquet")
        examples.append({**ident, "example_loss": ex["loss"].to_numpy(), "label": ex["label"].to_numpy()})
    results_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(results_dir / "scaling.parquet", index=False)
    if held:
        pd.DataFrame(held).to_parquet(results_dir / "holdout.parquet", index=False)
    pd.concat(per_class, ignore_index=True).to_parquet(results_dir / "scaling_per_class.parquet", index=False)
    pd.DataFrame(examples).to_parquet(results_dir / "scaling_examples.parquet", index=False)


def collect_loop(stages: list[tuple[str, StageResult]], results_dir: Path) -> None:
    """The closed loop's records (synscale.study.adaptive, synscale.study.retrieve): allocation.parquet (every
    round's allocation of both arms, with the source's name) and allocation_curves.parquet (the per-class curves
    each round allocated by) from the allocate stages, retrieval.parquet from the retrieved sets."""
    import pandas as pd

    tables: dict[str, list[Any]] = {"allocation": [], "allocation_curves": [], "retrieval": []}
    for source, st in stages:
        if st.kind == "allocate":
            primary = read_json(st.path / "decision.json")["primary"]
            tables["allocation"].append(pd.read_parquet(st.path / "allocation.parquet").assign(source=source,
                                                                                                primary=primary))
            tables["allocation_curves"].append(pd.read_parquet(st.path / "curves.parquet").assign(source=source))
        else:
            tables["retrieval"].append(pd.read_parquet(st.path / "retrieval.parquet").assign(source=source))
    for name, parts in tables.items():
        if parts:
            pd.concat(parts, ignore_index=True).to_parquet(results_dir / f"{name}.parquet", index=False)


def samples_seen(train_stage: StageResult, scale: int) -> float:
    """The samples a trained model saw: its run's steps (train.json) times its batch (synscale.train.schedule);
    NaN where the stage does not say."""
    from synscale.train.schedule import samples_of

    run, stage = read_json(train_stage.path / "train.json", default={}), read_json(train_stage.path / "stage.json",
                                                                                   default={})
    batch = stage.get("params", {}).get("train", {}).get("batch_size")
    return float(samples_of(int(run["steps"]), int(batch), scale)) if "steps" in run and batch else float("nan")


def collect_generation(generated: list[tuple[Any, StageResult]], results_dir: Path) -> None:
    """generation.parquet: per synthetic configuration, its model, family, strategy, guidance scale, steps,
    number of images and the set's directory (shards + manifest.parquet; `set_path`, relative to the workdir:
    synscale.workdir.resolve reads it)."""
    import pandas as pd

    from synscale.data.shards import read_manifest

    rows = []
    for syn, stage in generated:
        m = read_manifest(stage.path)
        model = syn.model
        builtin = builtin_family(model)
        family = builtin[0] if builtin else m["generator"].iloc[0].split(":")[1]
        captions = isinstance(syn, ClipSyntheticConfig)  # CLIP's synthetic pairs: one image per caption
        regenerated = m["safety_regenerated"] if "safety_regenerated" in m else None
        rows.append({"config": syn.name, "model": model, "family": family, "generator": m["generator"].iloc[0],
                     "strategy": "captions" if captions else syn.strategy, "guidance_scale": float(syn.guidance),
                     "guidance_convention": syn.guidance_convention,
                     "steps": int(m["steps"].iloc[0]), "images": len(m),
                     "per_class": 0 if captions else int(m.groupby("label").size().min()), "seed": syn.seed,
                     "safety_checker": regenerated is not None,
                     "safety_regenerated": int(regenerated.sum()) if regenerated is not None else 0,
                     "set_path": relative(stage.path, stage.root), "stage": stage.id,
                     "task": "clip" if captions else "classification"})
    results_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=GENERATION_COLUMNS).to_parquet(results_dir / "generation.parquet", index=False)


# generation.parquet: `safety_regenerated` counts the images a kept safety checker flagged (each generated again
# with the sample's next seed; synscale.generate.safety)
GENERATION_COLUMNS = ["config", "model", "family", "generator", "strategy", "guidance_scale", "guidance_convention",
                      "steps", "images", "per_class", "seed", "safety_checker", "safety_regenerated", "set_path", "stage",
                      "task"]
