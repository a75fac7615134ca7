"""The report's section on forecasts and the exchange rate (synscale.analysis.forecast): how far each fitted law
can be trusted beyond its data, by backtests, and how many real images an image of each curve is worth."""

from __future__ import annotations

import math
from typing import Any

from synscale.report.parts import esc, table


def section(results: Any, info: dict[str, Any], figs: str) -> str:
    from synscale.results import read_table

    cal, ex = read_table(results / "forecast_calibration.parquet"), read_table(results / "exchange.parquet")
    fc = info.get("forecasts", {})
    conf = fc.get("confidence", 0.9)
    head = f"""<section id="forecasts"><h2>Forecasts and the exchange rate</h2>
<p>Every curve is fitted on its first scales and forecasts the larger scales it was trained at (backtests, the
power law of Equation 2 and the saturating form alike); the forecast errors (log loss) by horizon, the ratio of the
forecast scale to the largest fitted one, give the half-width of a {conf:.0%} forecast interval at that horizon
(<code>fit.forecast_confidence</code>), and its coverage is checked on each backtest with intervals computed
without its own curve. The exchange rate r of a curve at a scale D is the real scale at which the real curve
reaches the same loss, over D: inside the real curve's trained range read off it, outside forecast by its power law
with the calibrated interval. docs/analysis.md has the method.</p>"""
    if cal is None or not len(cal):
        return head + '<p class="missing">No curve has enough scales to backtest (three or more).</p></section>'
    cov = "; ".join(f"{esc(f)}: {c['coverage']:.0%} of {c['judged']:,} backtests inside" if c["judged"] else
                    f"{esc(f)}: no backtest could be judged" for f, c in fc.get("coverage", {}).items()
                    if c.get("coverage") is not None and not (isinstance(c["coverage"], float) and math.isnan(c["coverage"])))
    better = fc.get("better", {})
    wins = {f: sum(v == f for v in better.values()) for f in ("power_law", "saturating")}
    better_html = (f"<p>Which forecaster backtests better (median |log error| over the backtests both made), per curve: "
                   f"the power law on {wins['power_law']}, the saturating form on {wins['saturating']}.</p>"
                   if better else "")
    cal_t = cal.rename(columns={"half_width": "half-width (log)", "judged": "judged (others' intervals)"})
    rows = ex[ex.eval_set == "val"] if ex is not None and len(ex) else ex
    ex_html = table(rows.drop(columns=["task", "eval_set"]), {"loss": "{:.4f}", "real_scale": "{:,.0f}", "rate": "{:.3f}",
                                                                 "rate_lo": "{:.3f}", "rate_hi": "{:.3f}"},
                    left=("source", "how"), table_id="exchange") if rows is not None and len(rows) else ""
    return f"""{head}
<p>Coverage of the {conf:.0%} intervals (leave one curve out): {cov or "not measurable"}.</p>{better_html}
{table(cal_t, {"horizon": "×{:.0f}", "half-width (log)": "{:.3f}", "coverage": "{:.0%}"}, left=("forecaster",),
       table_id="forecast-calibration")}
{figs}
{ex_html}
</section>"""


def summary_item(results: Any) -> str:
    """The summary's line on what the best synthetic curve's images are worth at its largest scale ("" if none)."""
    from synscale.results import read_table

    ex = read_table(results / "exchange.parquet")
    if ex is None or not len(ex):
        return ""
    ex = ex[(ex.task == "classification") & (ex.eval_set == "val") & (ex.real_images == 0) & (ex.rate > 0)]
    if not len(ex):
        return ""
    top = ex[ex.scale == ex.scale.max()].sort_values("rate", ascending=False).iloc[0]
    iv = f" [{top.rate_lo:.2f}, {top.rate_hi:.2f}]" if math.isfinite(top.rate_lo) else ""
    how = "read off the real curve" if top.how == "interpolated" else (
        "forecast by the real power law" if top.how == "forecast" else "past what the backtests support")
    return (f"At {int(top.scale):,} images, one image of <b>{esc(str(top.source))}</b> is worth <b>{top.rate:.2f}</b>{iv} "
            f"real images ({how}): the real curve reaches its loss with {top.real_scale:,.0f} images.")
