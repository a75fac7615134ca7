"""`W/report/index.html`: a static, self-contained page rebuilt from `W/results/*.parquet` alone."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from synscale.report.figures import scaling_curves

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%}.muted{color:#777;font-size:.9em}
"""


def _table(df: Any, formats: dict[str, str], left: tuple[str, ...] = ()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c in df.columns:
            v = row[c]
            missing = v is None or (isinstance(v, float) and v != v)
            text = "–" if missing else formats[c].format(v) if c in formats else str(v)
            cells.append(f'<td class="{"l" if c in left else ""}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metrics_section(results: Path, scaling: Any) -> str:
    """Tables A4-A6 of the paper: per configuration, loss and top-1 at the largest scale beside the
    metrics of its test set."""
    import pandas as pd

    if not (results / "metrics.parquet").exists():
        return ""
    m = pd.read_parquet(results / "metrics.parquet")
    if not len(m):
        return ""
    val = scaling[scaling.eval_set == "val"]
    top = int(val.scale.max()) if len(val) else 0
    at = val[val.scale == top].set_index("config")[["loss", "top1"]]
    gen = pd.read_parquet(results / "generation.parquet").set_index("config") if (results / "generation.parquet").exists() else None
    cols = ["recognizability", "diversity", "fd", "fd_class", "lpips", "precision", "recall", "density", "coverage",
            "vendi", "lpips_alex", "fid_inception"]
    cols = [c for c in cols if c in m and m[c].notna().any()]
    table = m.set_index("config")[cols].join(at, how="left")
    if gen is not None and len(gen):
        table = gen[["strategy", "guidance_scale"]].join(table, how="right")
    table = table.reset_index().rename(columns={"loss": f"loss@{top:,}", "top1": f"top1@{top:,}", "guidance_scale": "cfg"})
    order = ["config", *[c for c in ("strategy", "cfg") if c in table], f"loss@{top:,}", f"top1@{top:,}", *cols]
    table = table[order]
    fmt = {c: "{:.3f}" for c in table.columns if c not in ("config", "strategy")}
    fmt.update({"cfg": "{:g}", "fd": "{:.2f}", "fd_class": "{:.2f}", "fid_inception": "{:.2f}"})
    missing = [c for c in ("lpips_alex", "fid_inception") if c not in cols]
    note = (f" {' and '.join(missing)} (the paper's AlexNet LPIPS and Inception FID) are left out: their pretrained weights "
            "are not on this machine (docs/metrics.md says where to put them)." if missing else "")
    return f"""<section id="metrics"><h2>Recognizability, diversity, FD and LPIPS</h2>
<p>Per configuration (as tables A4–A6 of the paper), loss and top-1 on the real validation set at {top:,} training images
beside the metrics of the configuration's own test set ({int(m.n_test.iloc[0]):,} images, read through the reference network
{html.escape(str(m.reference.iloc[0]))}): recognizability = mean per-class F1; diversity = mean per-class standard deviation of
L2-normalised features; fd = Fréchet distance to the real validation set in the reference network's feature space;
fd_class = per-class FD against real training images (appendix G.4); lpips = mean distance of random same-class pairs
in the reference network's normalised feature maps (higher: more varied); precision/recall/density/coverage and
Vendi per class. The row <code>real</code> is a sample of the real validation set measured the same way.{note}</p>
{_table(table, fmt, left=("config", "strategy"))}
</section>"""


def write_report(workdir: str | Path, title: str) -> Path:
    import pandas as pd

    workdir = Path(workdir)
    results, out = workdir / "results", workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    scaling = pd.read_parquet(results / "scaling.parquet")
    fits = pd.read_parquet(results / "fits.parquet")
    fig_paths = scaling_curves(scaling, fits, out / "fig_scaling")

    fit_table = fits.assign(
        k_ci=[f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(fits.k_lo, fits.k_hi, strict=True)],
        scales=[f"{a:,}–{b:,}" for a, b in zip(fits.min_scale, fits.max_scale, strict=True)],
    )[["source", "config", "eval_set", "k", "k_ci", "perf_at_DI", "r2", "n_points", "scales"]]
    d_ref = int(fits.d_ref.iloc[0]) if len(fits) else 0
    fit_table = fit_table.rename(columns={"k_ci": "k 95% CI" , "perf_at_DI": f"−log L({d_ref:,})", "r2": "R²"})
    curve_table = scaling[["source", "config", "eval_set", "scale", "loss", "top1"]].sort_values(["source", "eval_set", "scale"])
    gen_section = ""
    if (results / "generation.parquet").exists():
        gen = pd.read_parquet(results / "generation.parquet")
        if len(gen):
            gen_table = gen[["config", "model", "family", "strategy", "guidance_scale", "steps", "images"]]
            gen_section = f"""<section id="generation"><h2>Synthetic training sets</h2>
<p>Each synthetic source is one set generated at its guidance scale (class-balanced, one seed per image), of which
nested class-balanced subsets give the scales above.</p>
{_table(gen_table, {"guidance_scale": "{:g}", "images": "{:,}"}, left=("config", "model", "family", "strategy"))}
</section>"""

    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>synscale report: {html.escape(title)}</title><style>{CSS}</style></head><body>
<h1>synscale report: {html.escape(title)}</h1>
<p class="muted">Built {time.strftime('%Y-%m-%d %H:%M')} from {html.escape(str(results))}.</p>
<section id="scaling"><h2>Scaling curves</h2>
<p>Loss on the evaluation set against the number of training images, in log-log space, with the fit of
Equation 2: log L = −k (log D − log D<sub>I</sub>) − (−log L<sub>D<sub>I</sub></sub>), D<sub>I</sub> = {d_ref:,}.</p>
{_img(fig_paths[0], "scaling curves")}
</section>
<section id="fits"><h2>Scaling ability and performance at D<sub>I</sub></h2>
<p>k is the scaling ability (larger: loss falls faster with more data); −log L(D<sub>I</sub>) the performance at
D<sub>I</sub> (larger is better); the interval is a bootstrap over evaluation examples.</p>
{_table(fit_table, {"k": "{:.4f}", f"−log L({d_ref:,})": "{:.4f}", "R²": "{:.4f}"}, left=("source", "config", "eval_set", "k 95% CI"))}
</section>
{gen_section}
{_metrics_section(results, scaling)}
<section id="points"><h2>Every trained model</h2>
{_table(curve_table, {"loss": "{:.4f}", "top1": "{:.4f}", "scale": "{:,}"}, left=("source", "config", "eval_set"))}
</section>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
