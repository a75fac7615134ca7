"""The report's section on forecasts and the exchange rate (synscale.analysis.forecast): how far each fitted law
can be trusted beyond its data, by backtests, and how many real images an image of each curve is worth."""

from __future__ import annotations

import math
from typing import Any

from synscale.report.parts import esc, table


def section(results: Any, info: dict[str, Any], figs: str) -> str:
    from synscale.analysis.forecast import LABELS
    from synscale.results import read_table

    cal, ex = read_table(results / "forecast_calibration.parquet"), read_table(results / "exchange.parquet")
    fc = info.get("forecasts", {})
    conf = fc.get("confidence", 0.9)
    head = f"""<section id="forecasts"><h2>Forecasts and the exchange rate</h2>
<p>Every curve is fitted on its first scales and forecasts the larger scales it was trained at (backtests) with three
forecasters: the power law of Equation 2 in D, the saturating form, and the power law in the samples the recipe put
through the model (its steps times its batch, which knows the schedule). The forecast errors (log loss) by horizon,
the ratio of the forecast point to the largest fitted one in the forecaster's own axis, give the half-width of a
{conf:.0%} forecast interval at that horizon (<code>fit.forecast_confidence</code>), and its coverage is checked on
each backtest with intervals computed without its own curve. Models trained past the curves only to check them
(<code>[forecast] holdout</code>) score the forecasts where the backtests do not reach. The exchange rate r of a
curve at a scale D is the real scale at which the real curve reaches the same loss, over D: inside the real curve's
trained range read off it, outside forecast by its power law with the calibrated interval. docs/analysis.md has the
method.</p>"""
    rows = ex[ex.eval_set == "val"] if ex is not None and len(ex) else ex
    ex_html = table(rows.drop(columns=["task", "eval_set"]), {"loss": "{:.4f}", "real_scale": "{:,.0f}", "rate": "{:.3f}",
                                                                 "rate_lo": "{:.3f}", "rate_hi": "{:.3f}"},
                    left=("source", "how"), table_id="exchange") if rows is not None and len(rows) else ""
    rest = f"""{_checks_html(read_table(results / "forecast_checks.parquet"), conf)}
{figs}
{ex_html}
{_class_rates_html(read_table(results / "exchange_per_class.parquet"), ex)}
</section>"""
    if cal is None or not len(cal):
        return (f'{head}\n<p class="missing">No curve has enough scales to backtest (four or more: a law fitted on '
                f'three forecasting a fourth), so no interval is calibrated.</p>\n{rest}')
    cov = "; ".join(f"the {esc(LABELS.get(f, f))}: {c['coverage']:.0%} of {c['judged']:,} backtests inside" if c["judged"]
                    else f"the {esc(LABELS.get(f, f))}: no backtest could be judged" for f, c in fc.get("coverage", {}).items()
                    if c.get("coverage") is not None and not (isinstance(c["coverage"], float) and math.isnan(c["coverage"])))
    better = fc.get("better", {})
    wins = {f: sum(v == f for v in better.values()) for f in LABELS}
    better_html = ("<p>Which forecaster backtests best (median |log error| over the backtests all made), per curve: "
                   + ", ".join(f"the {LABELS[f]} on {n}" for f, n in wins.items()) + ".</p>" if better else "")
    cal_t = cal.rename(columns={"half_width": "half-width (log)", "judged": "judged (others' intervals)"})
    return f"""{head}
<p>Coverage of the {conf:.0%} intervals (leave one curve out): {cov or "not measurable"}.</p>{better_html}
{table(cal_t, {"horizon": "×{:.0f}", "half-width (log)": "{:.3f}", "coverage": "{:.0%}"}, left=("forecaster",),
       table_id="forecast-calibration")}
{rest}"""


def _checks_html(checks: Any, conf: float) -> str:
    """The held-out anchors against the forecasts: a sentence per anchor on the real test set, and the table."""
    from synscale.analysis.forecast import GOAL_ERROR, LABELS

    if checks is None or not len(checks):
        return ('<p>No held-out anchor: <code>[forecast] holdout = [scales]</code> trains the real curve past its '
                'fitted range to check the forecasts (the demo holds out ×10 and D<sub>I</sub>).</p>')
    val = checks[checks.eval_set == "val"]
    said = []
    for (source, scale), g in val.groupby(["source", "scale"], sort=False):
        best, pl = g.loc[g.log_error.abs().idxmin()], g[g.forecaster == "power_law"]
        eq2 = (f"; Equation 2's power law in D forecast {pl.forecast.iloc[0]:.3f} (log error {pl.log_error.iloc[0]:+.2f})"
               if len(pl) and best.forecaster != "power_law" else "")
        said.append(f"{esc(str(source))} at {int(scale):,} (×{best.scale_ratio:,.0f} its largest scale) measured "
                    f"{best.measured:.3f}; the closest forecast, the {esc(LABELS[best.forecaster])}'s, was "
                    f"{best.forecast:.3f} (log error {best.log_error:+.2f}, "
                    f"{'within' if abs(best.log_error) <= GOAL_ERROR else 'outside'} ±{GOAL_ERROR:.2f}){eq2}")
    inside = int(checks.inside.sum())
    shown = checks.drop(columns=["task", "max_horizon"]).assign(forecaster=[LABELS[f] for f in checks.forecaster])
    return (f"<h3>Checked by held-out models</h3><p>{'; '.join(said)}. Over every evaluation set, {inside} of "
            f"{len(checks)} held-out losses fall inside their {conf:.0%} intervals (where <i>supported</i> is False the "
            "horizon is past the backtests and the interval's width extrapolated).</p>"
            + table(shown, {"scale": "{:,}", "scale_ratio": "×{:,.0f}", "horizon": "×{:,.1f}", "forecast": "{:.3f}",
                            "lo": "{:.3f}", "hi": "{:.3f}", "measured": "{:.3f}", "log_error": "{:+.3f}"},
                    left=("source", "eval_set", "forecaster"), table_id="forecast-checks"))


def _class_rates_html(pc: Any, ex: Any) -> str:
    """Per class, what an image of the synthetic curve worth the most at its largest scale (on val) is worth: the
    classes where it is worth most and least, where the real class curve reads or supports it."""
    if pc is None or not len(pc) or ex is None or not len(ex):
        return ""
    top = ex[(ex.task == "classification") & (ex.eval_set == "val") & (ex.real_images == 0) & (ex.rate > 0)]
    if not len(top):
        return ""
    best = top[top.scale == top.scale.max()].sort_values("rate", ascending=False).iloc[0]
    mine = pc[(pc.source == best.source) & (pc.eval_set == "val") & (pc.scale == best.scale) &
              (pc.how != "beyond the backtests") & (pc.rate > 0)].sort_values("rate", ascending=False)
    if len(mine) < 2:
        return ""
    n = min(3, len(mine) // 2)
    fmt = lambda rows: ", ".join(f"{esc(str(r.class_name))} ({r.rate:.2f})" for r in rows.itertuples())  # noqa: E731
    left = len(pc[(pc.source == best.source) & (pc.eval_set == "val") & (pc.scale == best.scale)]) - len(mine)
    return (f"<p>Per class (<code>exchange_per_class.parquet</code>), an image of {esc(str(best.source))} at "
            f"{int(best.scale):,} images is worth most for {fmt(mine.head(n))} and least for {fmt(mine.tail(n))} "
            f"real images of the class" + (f"; {left} class(es) are past what the backtests support" if left else "")
            + ".</p>")


def summary_item(results: Any, exclude: set[str] = frozenset()) -> str:
    """The summary's line on what the best synthetic curve's images are worth at its largest scale ("" if none);
    the curves of `exclude` (the closed loop's) left out."""
    from synscale.results import read_table

    ex = read_table(results / "exchange.parquet")
    if ex is None or not len(ex):
        return ""
    ex = ex[(ex.task == "classification") & (ex.eval_set == "val") & (ex.real_images == 0) & (ex.rate > 0)
            & ~ex.source.isin(exclude)]
    if not len(ex):
        return ""
    top = ex[ex.scale == ex.scale.max()].sort_values("rate", ascending=False).iloc[0]
    iv = f" [{top.rate_lo:.2f}, {top.rate_hi:.2f}]" if math.isfinite(top.rate_lo) else ""
    how = "read off the real curve" if top.how == "interpolated" else (
        "forecast by the real power law" if top.how == "forecast" else "past what the backtests support")
    text = (f"At {int(top.scale):,} images, one image of <b>{esc(str(top.source))}</b> is worth <b>{top.rate:.2f}</b>"
            f"{iv} real images ({how}): the real curve reaches its loss with {top.real_scale:,.0f} images")
    scaling = read_table(results / "scaling.parquet")
    from synscale.analysis.forecast import rate_forecast

    later = 10 * int(top.scale)
    ahead = rate_forecast(scaling, "classification", str(top.source), "val", later) if scaling is not None else None
    if ahead is not None and math.isfinite(ahead):
        text += (f"; the power laws of both curves forecast {ahead:.2f} at {later:,} (×10 past both, further than the "
                 "backtests reach: a direction, not a calibrated number)")
    return text + "."
