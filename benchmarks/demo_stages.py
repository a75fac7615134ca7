"""Where the CPU demo's time goes: wall time by stage kind (from every stage's `stage.json`), and, with
`--profile`, the functions that take it (cProfile of the demo run in one process, `--jobs 1`).

    .venv/bin/python benchmarks/demo_stages.py                         # runs `synscale demo` in a new workdir
    .venv/bin/python benchmarks/demo_stages.py --workdir runs/fashion-mnist-small   # an existing demo workdir
    .venv/bin/python benchmarks/demo_stages.py --profile --top 25     # one process, profiled (~1.3x slower)

Stages that run at once (the demo's two jobs) each count their own wall time, so the kinds' sum exceeds the
demo's wall time; the share column is of that sum.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def stage_times(workdir: Path) -> dict[str, list[float]]:
    """Wall seconds of every complete stage under `workdir`, by kind."""
    out: dict[str, list[float]] = defaultdict(list)
    for f in workdir.rglob("stage.json"):
        rec = json.loads(f.read_text())
        if "wall_seconds" in rec:
            out[rec["kind"]].append(float(rec["wall_seconds"]))
    return out


def print_kinds(times: dict[str, list[float]]) -> str:
    total = sum(sum(v) for v in times.values())
    print(f"{'stage kind':>14} {'stages':>7} {'seconds':>9} {'share':>7}")
    for kind, secs in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        print(f"{kind:>14} {len(secs):>7} {sum(secs):>9.1f} {sum(secs) / total:>7.1%}")
    print(f"{'all':>14} {sum(len(v) for v in times.values()):>7} {total:>9.1f}")
    return max(times, key=lambda k: sum(times[k]))


def main() -> None:
    from synscale.cli import main as synscale

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None, help="an existing demo workdir (default: run the demo in a new one)")
    ap.add_argument("--profile", action="store_true", help="run the demo in one process under cProfile")
    ap.add_argument("--top", type=int, default=20, help="functions to list from the profile")
    args = ap.parse_args()

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="synscale-demo-"))
    if not args.workdir or args.profile:
        argv = ["demo", "--workdir", str(workdir), "-q", *(["--jobs", "1"] if args.profile else [])]
        prof = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        rc = synscale(argv)
        if prof is not None:
            prof.disable()
        print(f"\nsynscale {' '.join(argv)}: exit {rc}, {time.perf_counter() - t0:.0f} s wall\n")
    largest = print_kinds(stage_times(workdir))
    if args.profile:
        print(f"\nlargest kind: {largest}; the profile's top functions by own time (whole run, one process):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
        print("by cumulative time:")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
