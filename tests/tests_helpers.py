"""Small helpers shared by tests."""

import json
from pathlib import Path


def stage_dirs(workdir: Path, kind: str, **params: object) -> list[Path]:
    """Complete stage directories of `kind` whose params include `params`."""
    out = []
    for d in sorted((workdir / "stages" / kind).glob("[!.]*")):
        p = json.loads((d / "stage.json").read_text())["params"]
        if all(p.get(k) == v for k, v in params.items()):
            out.append(d)
    return out


def simulate_results(results: Path, class_k: dict[str, list[float]], class_perf: dict[str, list[float]],
                     class_names: list[str], scales=(500, 1000, 2000, 4000, 8000), d_ref: float = 60000,
                     per_class_eval: int = 200, noise: float = 0.3, seed: int = 0,
                     recognizability: dict[str, list[float]] | None = None, shifted: bool = True) -> dict:
    """A W/results directory as a study writes it, with planted per-class k_c and -log L_c(D_I): every
    example's loss is gamma-distributed around its class's Equation 2 curve. Configuration 'real' is real
    data; the others are synthetic (family 'latent-diffusion', strategy 'classnames', cfg 2, 4, ...)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    results.mkdir(parents=True, exist_ok=True)
    n_cls = len(class_names)
    labels = np.repeat(np.arange(n_cls), per_class_eval)
    rows, pcs, exs, mrows, mpcs, gens = [], [], [], [], [], []
    for ci, config in enumerate(class_k):
        ks, perfs = np.asarray(class_k[config]), np.asarray(class_perf[config])
        for eval_set in ("val", "sketch") if shifted else ("val",):
            for s in scales:
                means = np.exp(-ks * (np.log(s) - np.log(d_ref)) - perfs) * (1.3 if eval_set == "sketch" else 1.0)
                loss = rng.gamma(1 / noise, means[labels] * noise)
                top1 = (rng.random(len(labels)) < np.exp(-loss)).astype(float)
                ident = {"source": config, "config": config, "scale": int(s), "eval_set": eval_set}
                rows.append({**ident, "real_images": int(s) if config == "real" else 0,
                             "synthetic_images": 0 if config == "real" else int(s), "loss": float(loss.mean()),
                             "top1": float(top1.mean()), "n_eval": len(labels), "train_stage": "t", "eval_stage": "e"})
                for c in range(n_cls):
                    m = labels == c
                    pcs.append({**ident, "class_index": c, "class_name": class_names[c], "loss": float(loss[m].mean()),
                                "top1": float(top1[m].mean()), "n": int(m.sum())})
                exs.append({**ident, "example_loss": loss, "label": labels})
        rec = np.asarray(recognizability[config]) if recognizability else np.clip(0.5 + ks, 0, 1)
        div = np.clip(0.6 + 0.02 * rng.normal(size=n_cls), 0, 1)
        mrows.append({"config": config, "recognizability": float(rec.mean()), "diversity": float(div.mean()),
                      "fd": float(rng.uniform(1, 30)), "lpips_ref": float(rng.uniform(0.3, 0.6)), "n_test": 50 * n_cls,
                      "reference": "simulated"})
        for c in range(n_cls):
            mpcs.append({"config": config, "class_index": c, "class_name": class_names[c], "recognizability": float(rec[c]),
                         "diversity": float(div[c]), "fd_class": float(rng.uniform(1, 30)), "lpips_ref": float(rng.uniform(0.3, 0.6))})
        if config != "real":
            gens.append({"config": config, "model": "builtin:latent-diffusion", "family": "latent-diffusion",
                         "generator": "builtin:latent-diffusion", "strategy": "classnames", "guidance_scale": float(2 * ci),
                         "steps": 20, "images": max(scales), "per_class": max(scales) // n_cls, "seed": 0,
                         "set_path": "-", "stage": "g"})
    pd.DataFrame(rows).to_parquet(results / "scaling.parquet", index=False)
    pd.DataFrame(pcs).to_parquet(results / "scaling_per_class.parquet", index=False)
    pd.DataFrame(exs).to_parquet(results / "scaling_examples.parquet", index=False)
    pd.DataFrame(mrows).to_parquet(results / "metrics.parquet", index=False)
    pd.DataFrame(mpcs).to_parquet(results / "metrics_per_class.parquet", index=False)
    pd.DataFrame(gens).to_parquet(results / "generation.parquet", index=False)
    (results / "meta.json").write_text(json.dumps({"study": "simulated", "d_ref": d_ref}))
    return {"d_ref": d_ref}


# --set overrides that leave a study without synthetic configurations (no grid, no best/worst curves, no mix).
# Tests that set scales of thousands also set train.schedule.zero_scale=700 (the smoke size's 50 suits its own
# 100-400): the log-scale rule then gives them the short runs they were written for.
NO_SYNTHETIC = ("--set", "curves=[]", "--set", "mix=[]", "--set", "retrieved=[]", "--set", "adaptive=[]",
                "--set", "grid=[]", "--set", "synthetic=[]")
# the demo's held-out models (4,000 and 60,000 real images) are more than the tests' small copies of the data hold
NO_HOLDOUT = ("--set", "forecast.holdout=[]")
