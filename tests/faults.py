"""Fault injection: run `synscale` commands and SIGKILL them at random points, then resume.

    python tests/faults.py PLAN.json RESULT.json

PLAN.json is a list of jobs, run in order ({"copy": [src, dst]} copies a directory between jobs, {"remove": [paths]}
deletes directories; {"wait": path} waits for a file that another plan, run at the same time, writes): {"name", "argv" (a synscale command line), "kills" (0: run once to the
end: an uninterrupted reference), "delay" (seconds: kills land uniformly in [0, delay]; or "x<name>" for that
multiple of job <name>'s wall time), "seed", "env" (extra environment variables), "resumable" (true: each delay is the
startup plus a random share of what is left, and each kill lowers what is left by what the killed run did, so
that the kills spread over the whole run),
"first_env" (variables of the first run only: e.g. SYNSCALE_KILL_AT_STEP, a kill at a chosen training step;
SYNSCALE_FAULT_KILL_AT_REPLACE=PREFIX, a kill as the run renames a file it wrote whole, `.PREFIX...`, into place),
"workdir" (a study's: each kill records what the study was doing, from what it left unfinished)}. A job with kills runs its command,
SIGKILLs it after a random delay, runs it again, ..., until `kills` runs were killed before they ended, then once
more to the end. A run that ends before its delay lowers the bound of the next delays to its wall time (a resumed
study has less left to do). Every run is a
fork of this process (synscale imported once, torch on one thread so that every run computes the same bytes),
with its output in RESULT's directory as <name>.log. RESULT.json records, per job: the delays, how many runs were
killed before they ended, the exit code of the final run and the wall seconds of an uninterrupted one.
The checks of the outputs are in tests/test_faults.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path


STARTUP = 1.0  # seconds a forked run takes before it works on what is left (its checks, the skipped stages)


def _child(argv: list[str], log: Path, env: dict[str, str]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    code = 1
    at = os.environ.pop("SYNSCALE_FAULT_KILL_AT_REPLACE", "")
    if at:  # SIGKILL as the run renames a file whose written name starts with `at` into place (written whole)
        replace = os.replace

        def killing_replace(src, dst, *a, **k):
            if Path(src).name.startswith(at):
                os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst, *a, **k)

        os.replace = killing_replace
    try:
        import torch

        torch.set_num_threads(1)
        from synscale.cli import main

        code = main(argv)
    except BaseException as e:  # a traceback in the log, a failing exit code
        import traceback

        traceback.print_exception(e)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(argv: list[str], log: Path, env: dict[str, str], kill_after: float | None = None) -> tuple[int | None, float]:
    """(exit code, None when killed; wall seconds) of one forked run."""
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        _child(argv, log, env)
    if kill_after is not None:
        deadline = t0 + kill_after
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return (None if code == -signal.SIGKILL else code), time.time() - t0  # a SIGKILL of its own too
            time.sleep(min(0.01, max(0.0, deadline - time.time())))
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return (None if code == -signal.SIGKILL else code), time.time() - t0


def _caught_in(workdir: Path, since: float) -> str:
    """What a killed study was doing: the kinds of the stages that run left unfinished (or the results / the
    report it was building; "start" when neither: its checks, its plan, the stages it skipped)."""
    def fresh(d: Path) -> bool:  # written to by that run (its newest file or folder)
        return max(p.stat().st_mtime for p in [d, *d.rglob("*")]) >= since - 0.01

    kinds = sorted({p.parent.name for p in workdir.glob("stages/*/.*")
                    if p.name.startswith((".tmp-", ".partial-")) and fresh(p)})
    kinds += [d for d in ("results", "report") if any(fresh(p) for p in workdir.glob(f".{d}-new-*"))]
    return "+".join(kinds) or "start"


def main(plan_path: str, result_path: str) -> None:
    os.environ["TQDM_DISABLE"] = "1"
    import importlib

    # imported once, before the forks: each run then starts in a fraction of a second
    for module in ("torch", "timm", "diffusers.pipelines.pipeline_utils", "diffusers.models", "transformers", "scipy.optimize", "matplotlib.pyplot", "pyarrow.parquet",
                   "synscale.cli", "synscale.study", "synscale.generate.builtin", "synscale.generate.diffusers_backend",
                   "synscale.train.launch", "synscale.metrics.run", "synscale.analysis.run", "synscale.report.html"):
        importlib.import_module(module)

    plan = json.loads(Path(plan_path).read_text())
    out_dir = Path(result_path).parent
    results: dict[str, dict] = {}
    for job in plan:
        if "copy" in job:  # {"copy": [src, dst]}: a finished workdir as the start of the next job
            import shutil

            shutil.copytree(*job["copy"], symlinks=True)
            continue
        if "remove" in job:  # {"remove": [paths]}: e.g. a copied workdir's train stages, to be done again
            import shutil

            for p in job["remove"]:
                shutil.rmtree(p)
            continue
        if "wait" in job:  # {"wait": path}: a file that another plan (run at the same time) writes
            deadline = time.time() + 1800
            while not Path(job["wait"]).exists() and time.time() < deadline:
                time.sleep(0.1)
            continue
        name, argv, env = job["name"], job["argv"], job.get("env", {})
        log = out_dir / f"{name}.log"
        rng = random.Random(job.get("seed", 0))
        delay = job.get("delay", 0)
        if isinstance(delay, str):  # "x0.8:ref" -> 0.8 x the wall time of job "ref"
            factor, _, ref = delay[1:].partition(":")
            delay = float(factor) * results[ref]["wall"]
        delays, killed, finished_early, bound, failed, landed = [], 0, 0, delay, None, []
        while killed < job.get("kills", 0) and len(delays) < 6 * job["kills"]:
            if job.get("resumable"):  # stratified: each kill a random share of what is left, the next ones after it
                left = job["kills"] - killed
                d = rng.uniform(0.0, min(STARTUP, bound)) + rng.uniform(0.0, 2 * max(0.0, bound - STARTUP) / (left + 1))
            else:
                d = rng.uniform(0.0, bound)
            first = {**env, **job.get("first_env", {})} if not delays else env
            started = time.time()
            code, wall = run(argv, log, first, kill_after=d)
            delays.append(round(d, 3))
            if code is None:
                killed += 1
                if "workdir" in job:
                    landed.append(_caught_in(Path(job["workdir"]), started))
                if job.get("resumable"):  # what a resumed run has left is shorter by about what this one did
                    bound = max(1.0, bound - d + STARTUP)
            elif code != 0:
                failed = code
                break
            else:  # it finished first: what is left to do (e.g. only the results and the report) is shorter
                finished_early += 1
                bound = min(bound, wall)
        code, wall = run(argv, log, env)
        results[name] = {"delays": delays, "killed": killed, "finished_early": finished_early,
                         "code": code if failed is None else failed, "wall": wall, "landed": landed}
        Path(result_path).write_text(json.dumps(results, indent=1))
        (out_dir / f"{name}.done").write_text(str(code))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
