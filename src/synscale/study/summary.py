"""What a finished study prints on the terminal (the rest is in the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.atomic import read_json


def print_summary(workdir: Path) -> None:
    """The study's results on the terminal: the grid at its largest scale, the curves, the fits on the real
    test set, the per-class categories, the k predictor and the six findings (the rest is in the report)."""
    from synscale.results import read_table

    results = workdir / "results"
    scaling = read_table(results / "scaling.parquet", empty_ok=False)
    fits = read_table(results / "fits.parquet")
    if scaling is None or fits is None:
        raise FileNotFoundError(f"{results}: no scaling.parquet / fits.parquet: run the study (or synscale fit) first")
    val = scaling[scaling.eval_set == "val"]
    others = sorted(set(scaling.eval_set) - {"val"})
    print("\nloss (top-1) on the real test set (val)" + (f"; {', '.join(others)} are in the report" if others else "")
          + ": each curve per scale (CLIP: captions)")
    for task, t in val.groupby("task", sort=False):
        _print_curves(task, t, read_table(results / "metrics.parquet"))
    print("\nEquation 2 fits on val (linear_until: the power law holds up to this scale; break_at: it breaks there):")
    cols = [c for c in ("task", "source", "k", "k_lo", "k_hi", "perf_at_DI", "r2", "n_points", "linear_until", "break_at")
            if c in fits]
    shown = fits[fits.eval_set == "val"][cols].copy()
    for c in ("linear_until", "break_at"):
        if c in shown:
            shown[c] = ["–" if v != v else f"{int(v):,}" for v in shown[c]]
    print(shown.to_string(index=False, float_format="%.4f"))
    if (results / "analysis.json").exists():
        _print_analysis(read_json(results / "analysis.json"))
    if (results / "findings.json").exists():
        from synscale.analysis.findings import format_findings

        print("\nthe paper's findings on this run (W/results/findings.json, the report's last section):")
        for line in format_findings(read_json(results / "findings.json")):
            print("  " + line)


def _print_curves(task: str, t: Any, metrics: Any) -> None:
    """A task's curves (loss and top-1 per scale) and its grid at the largest scale, best first."""
    per = t.groupby(["source", "scale"], sort=False).agg(loss=("loss", "mean"), top1=("top1", "mean")).reset_index()
    counts = per.groupby("source", sort=False).size()
    curves = per[per.source.isin(counts[counts > 1].index)]
    if len(curves):
        cell = curves.assign(v=[f"{r.loss:.3f} ({r.top1:.2f})" for r in curves.itertuples()])
        table = cell.pivot(index="source", columns="scale", values="v").reindex(counts[counts > 1].index).fillna("")
        print(f"[{task}]\n" + table.to_string())
    configs = set(t.loc[(t.real_images == 0) & (t.source != "real"), "source"]) if task == "classification" else set()
    top = per.scale[per.source.isin(configs)].max() if configs else 0
    grid = per[per.source.isin(configs) & (per.scale == top)].sort_values("loss")  # every configuration
    if len(grid) > 1:
        if metrics is not None:
            grid = grid.merge(metrics[[c for c in ("config", "recognizability", "diversity") if c in metrics]],
                              left_on="source", right_on="config", how="left").drop(columns="config")
        print(f"\n[{task}] the grid at {int(grid.scale.max()):,} images, best first:\n"
              + grid.drop(columns="scale").to_string(index=False, float_format="%.3f"))


def _print_analysis(info: dict[str, Any]) -> None:
    """The forecasts' checks, the per-class categories and the k predictor's skill (analysis.json)."""
    from synscale.analysis.forecast import check_lines

    lines = check_lines(info.get("forecasts", {}))
    if lines:
        print("\nforecasts checked (W/results/forecast_checks.parquet; the report's forecasts section):")
        print("\n".join("  " + line for line in lines))
    loop = info.get("loop", {}).get("lines", [])
    if loop:
        print("\nwhere generation pays (W/results/loop.parquet, allocation.parquet; the report's loop section):")
        print("\n".join("  " + line for line in loop))
    for config, cats in info.get("categories", {}).items():
        if config != "real":
            print(f"\nper-class categories of {config} (val): "
                  + "; ".join(f"{c}: {', '.join(cats[c]) or 'none'}" for c in ("scaling", "easy", "poor")))
    for level, what in (("class", "k_c per class, leave-one-configuration-out"),
                        ("config", "k per configuration, leave-one-out")):
        pred = info.get("predictor", {}).get(level, {})
        if "mae" in pred:
            print(f"\n{what} from recognizability + diversity: MAE {pred['mae']:.4f} vs {pred['mae_mean']:.4f} "
                  f"predicting the mean (skill {pred['skill']:+.3f}, {pred['n']} rows)")
