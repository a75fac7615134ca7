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
            text = formats[c].format(v) if c in formats else str(v)
            cells.append(f'<td class="{"l" if c in left else ""}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


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
<section id="points"><h2>Every trained model</h2>
{_table(curve_table, {"loss": "{:.4f}", "top1": "{:.4f}", "scale": "{:,}"}, left=("source", "config", "eval_set"))}
</section>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
