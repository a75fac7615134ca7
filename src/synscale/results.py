"""A study's results tables, from its evaluation and generation stages: scaling.parquet (one row per
trained model x evaluation set), scaling_per_class.parquet, scaling_examples.parquet and generation.parquet.
The fits, the per-class analysis and the report read these tables only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synscale.config import ClipSyntheticConfig
from synscale.stage import StageResult


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
