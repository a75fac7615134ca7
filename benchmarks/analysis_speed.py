"""How long `synscale fit` and `synscale report` take on an ImageNet-sized results directory.

Simulates W/results for C classes x configurations x scales (per-example losses gamma-distributed
around planted per-class power laws, as tests/tests_helpers.simulate_results does), then times the
analysis (fits with bootstrap CIs, breaks, saturating fits, per-class fits, correlations, predictor)
and the report, and prints the figures.

    python benchmarks/analysis_speed.py                       # 1000 classes, 5 configs, 6 scales, 50 examples/class
    python benchmarks/analysis_speed.py --classes 100 --bootstrap 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--configs", type=int, default=5, help="configurations including real")
    ap.add_argument("--scales", type=int, default=6)
    ap.add_argument("--per-class", type=int, default=50, help="evaluation examples per class")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--saturating-bootstrap", type=int, default=200)
    args = ap.parse_args()

    from tests_helpers import simulate_results

    from synscale.analysis.run import analyse
    from synscale.config import FitConfig
    from synscale.report.html import write_report

    rng = np.random.default_rng(0)
    names = ["real", *[f"syn-{i}" for i in range(1, args.configs)]]
    ks = {n: list(rng.uniform(0.05, 0.5, args.classes)) for n in names}
    perfs = {n: list(rng.uniform(-0.5, 2.0, args.classes)) for n in names}
    scales = tuple(int(s) for s in np.geomspace(130_000, 1_300_000 * 3, args.scales).round(-3))
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        t = time.perf_counter()
        simulate_results(w / "results", ks, perfs, [f"class {i}" for i in range(args.classes)], scales=scales,
                         d_ref=1_300_000, per_class_eval=args.per_class)
        t_sim = time.perf_counter() - t
        fc = FitConfig(bootstrap=args.bootstrap, saturating_bootstrap=args.saturating_bootstrap)
        t = time.perf_counter()
        tables = analyse(w / "results", 1_300_000, fc)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        write_report(w, "benchmark")
        t_report = time.perf_counter() - t
        size = (w / "report" / "index.html").stat().st_size
    curves = len(tables["fits"])
    class_curves = len(tables["per_class"])
    print(f"results: {args.classes} classes x {args.configs} configurations x {args.scales} scales x 2 eval sets, "
          f"{args.per_class} examples per class ({args.classes * args.per_class:,} per evaluation); simulated in {t_sim:.1f} s")
    print(f"synscale fit:    {t_fit:7.1f} s  ({curves} curves, {class_curves:,} per-class curves, "
          f"{args.bootstrap} bootstrap replicates; {1000 * t_fit / class_curves:.2f} ms per per-class curve)")
    print(f"synscale report: {t_report:7.1f} s  (index.html {size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
