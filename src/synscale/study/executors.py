"""Executors run a plan (synscale.study.plan) and return every node's stage.

- `local` (default): the nodes one after another in this process, in the plan's order; complete stages
  are found on disk and skipped, so an interrupted study resumes where it stopped. With `jobs` > 1, up to
  `jobs` nodes whose inputs are complete run at once, each in a worker process with cores // jobs torch
  threads (small models use two single-threaded processes better than one two-threaded one: the demo's
  generations and trainings go ~1.6x faster on 2 cores) and, on a machine with GPUs, a GPU of its own
  (CUDA_VISIBLE_DEVICES; round robin when there are more jobs than GPUs).
- `ray`: the same plan on a Ray cluster (`address`, or RAY_ADDRESS, or a local instance on this machine).
  Every node whose inputs are complete is a Ray task with the node's CPUs and GPUs, so independent
  generations, trainings and evaluations run at once across the cluster's machines; a task with GPUs runs in
  a process of its own, which sees only the GPUs Ray assigned it and ends with the task. A training run of
  several processes gets a placement group of one bundle (its CPUs and GPUs together on one machine) and
  runs torchrun inside it (torch.distributed, NCCL on GPUs, gloo on CPUs); a node that no machine of the
  cluster can hold is an error before anything runs. Generation with
  `executor = "ray"` keeps its Ray Data path inside its task. The workdir must be a file system that every
  machine mounts at the same path: stage locks make two writers safe, and a task whose worker dies (a
  killed process, a lost machine) is retried, redoing only its stage (a resumable one from its partial
  output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.errors import check_interrupt
from synscale.study.plan import Context, Journal, Plan, new_context, run_node
from synscale.schema import ConfigError

EXECUTORS = ("local", "ray")


def execute(plan: Plan, workdir: str | Path, executor: str = "local", quiet: bool = False,
            **options: Any) -> dict[str, Any]:
    """Run `plan` with the named executor; returns {node key: StageResult}."""
    if executor == "local":
        return run_local(plan, workdir, quiet, **options)
    if executor == "ray":
        return run_ray(plan, workdir, quiet, **options)
    raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")


def run_local(plan: Plan, workdir: str | Path, quiet: bool = False, jobs: int = 1) -> dict[str, Any]:
    if jobs > 1:
        return _run_parallel(plan, workdir, quiet, jobs)
    ctx, journal = new_context(workdir, quiet), Journal(workdir)
    journal.start_plan(plan, "local")
    results: dict[str, Any] = {}
    for i, (key, node) in enumerate(plan.nodes.items()):
        check_interrupt()  # a Ctrl-C that arrived where Python could not raise it (synscale.errors.interrupt)
        results[key] = run_node(node, i, ctx, [results[d] if d else None for d in node.deps], journal)
    return results


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (its own list where it is set, else
    0..n-1 of the GPUs torch sees); [] on a machine without GPUs."""
    import os

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _worker_init(threads: int, t0: float, gpu_queue: Any) -> None:
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    if gpu_queue is not None:  # this worker's GPU, before anything initialises CUDA: every stage here runs on it
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_queue.get()

    os.environ["TQDM_DISABLE"] = "1"  # one process's bars would overwrite another's: stage lines only
    import torch

    torch.set_num_threads(threads)
    _WORKER["t0"] = t0


_WORKER: dict[str, Any] = {}


def _local_node(node: Any, index: int, workdir: str, quiet: bool, deps: list[Any]) -> Any:
    ctx = _CONTEXTS.get((workdir, quiet))
    if ctx is None:
        ctx = _CONTEXTS[(workdir, quiet)] = new_context(workdir, quiet)
        ctx.log.t0 = _WORKER.get("t0", ctx.log.t0)
    return run_node(node, index, ctx, deps, Journal(workdir))


def _run_parallel(plan: Plan, workdir: str | Path, quiet: bool, jobs: int) -> dict[str, Any]:
    """Up to `jobs` ready nodes at once in worker processes (spawned: the parent may hold torch threads),
    generations first, then in plan order; the first node error is raised (running nodes finish their stage)."""
    import os
    import signal

    import sys

    # workers stopped by Ctrl-C or SIGTERM leave semaphores that multiprocessing's resource tracker frees, with a
    # warning at exit; the tracker (started with the pool) takes our warning options: keep the one-line ending
    if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    workdir = str(Path(workdir).resolve())
    journal = Journal(workdir)
    journal.start_plan(plan, f"local ({jobs} jobs)")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    from synscale.errors import interrupt

    before = signal.signal(signal.SIGTERM, interrupt)  # SIGTERM stops the workers too, as Ctrl-C does
    try:
        return _parallel_loop(plan, workdir, quiet, jobs, threads, journal)
    finally:
        signal.signal(signal.SIGTERM, before)


def _parallel_loop(plan: Plan, workdir: str, quiet: bool, jobs: int, threads: int, journal: Journal) -> dict[str, Any]:
    import multiprocessing
    import time
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    keys = list(plan.nodes)
    results: dict[str, Any] = {}
    running: dict[Any, str] = {}
    submitted: set[str] = set()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(threads, time.time(), _gpu_queue(context, jobs))) as pool:
        try:
            while len(results) < len(keys):
                check_interrupt()
                ready = [(i, key) for i, key in enumerate(keys) if key not in submitted
                         and all(d is None or d in results for d in plan.nodes[key].deps)]
                # generations first: the longest stages, and what most of the others wait for
                for i, key in sorted(ready, key=lambda r: (plan.nodes[r[1]].kind != "generate", r[0])):
                    node = plan.nodes[key]
                    fut = pool.submit(_local_node, node, i, workdir, quiet, [results[d] if d else None for d in node.deps])
                    running[fut] = key
                    submitted.add(key)
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    results[running.pop(fut)] = fut.result()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop now; every stage is atomic or resumable
            _stop_workers(pool)
            raise
        finally:
            for fut in running:
                fut.cancel()
    return results


def _gpu_queue(context: Any, jobs: int) -> Any:
    """On a machine with GPUs, a queue from which each of the `jobs` workers takes its own (round robin when there
    are more workers than GPUs): without it every worker's stages ran on cuda:0. None without GPUs."""
    gpus = visible_gpus()
    if not gpus:
        return None
    queue = context.Queue()
    for j in range(jobs):
        queue.put(gpus[j % len(gpus)])
    return queue


def _stop_workers(pool: Any) -> None:
    """Terminate a process pool's workers (their running stages stay incomplete on disk and resume)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    for proc in procs:
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.join(timeout=10)


# ---------------------------------------------------------------------------------------------------
# Ray

_CONTEXTS: dict[tuple[str, bool], Context] = {}  # per worker process: its array cache lives across tasks


def _ray_node(node: Any, index: int, workdir: str, quiet: bool, deps: list[Any]) -> Any:
    ctx = _CONTEXTS.get((workdir, quiet))
    if ctx is None:
        ctx = _CONTEXTS[(workdir, quiet)] = new_context(workdir, quiet)
    return run_node(node, index, ctx, deps, Journal(workdir))


def run_ray(plan: Plan, workdir: str | Path, quiet: bool = False, address: str | None = None, retries: int = 3,
            num_cpus: int | None = None) -> dict[str, Any]:
    """Every ready node a Ray task; returns when all are complete, or raises the first node's error (the
    other running tasks are cancelled; their stages resume on the next run)."""
    from synscale.extras import require

    require("ray", "--executor ray")
    import ray

    from synscale.ray_init import init_ray

    workdir = str(Path(workdir).resolve())
    started = not ray.is_initialized()
    if started:  # address None: RAY_ADDRESS joins a cluster, else a local instance on this machine
        init_ray(address, num_cpus, quiet)
    try:
        cluster_gpus = ray.cluster_resources().get("GPU", 0) > 0
        check_placement(plan, cluster_gpus, _machines(ray))
        journal = Journal(workdir)
        journal.start_plan(plan, "ray")
        return _ray_loop(ray, plan, workdir, quiet, retries, cluster_gpus, journal)
    finally:
        if started:
            ray.shutdown()


def _ray_loop(ray: Any, plan: Plan, workdir: str, quiet: bool, retries: int, cluster_gpus: bool,
              journal: Journal) -> dict[str, Any]:
    """Submit every node whose inputs are complete until all are done. A node with GPUs runs in a worker process
    of its own that exits after it (max_calls=1): a reused worker would keep the first GPU it was given, and the
    pipelines and CUDA context it loaded there. Every placement group is removed when its node ends, whatever
    the ending (done, failed, cancelled)."""
    remote_cpu, remote_gpu = ray.remote(_ray_node), ray.remote(max_calls=1)(_ray_node)
    keys = list(plan.nodes)
    results: dict[str, Any] = {}
    running: dict[Any, tuple[str, Any]] = {}
    submitted: set[str] = set()
    try:
        while len(results) < len(keys):
            check_interrupt()
            for i, key in enumerate(keys):
                node = plan.nodes[key]
                if key in submitted or not all(d is None or d in results for d in node.deps):
                    continue
                opts, group = _task_options(node.needs, cluster_gpus, retries)
                remote = remote_gpu if opts["num_gpus"] else remote_cpu
                ref = remote.options(**opts).remote(node, i, workdir, quiet, [results[d] if d else None for d in node.deps])
                running[ref] = (key, group)
                submitted.add(key)
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                key, group = running.pop(ref)
                try:
                    results[key] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    raise (e.cause if isinstance(e.cause, Exception) else e) from None
                finally:
                    if group is not None:
                        ray.util.remove_placement_group(group)
    finally:
        for ref, (_, group) in running.items():
            ray.cancel(ref, force=True)
            if group is not None:
                ray.util.remove_placement_group(group)
    return results


def _machines(ray: Any) -> list[dict[str, float]]:
    """The CPUs and GPUs of every live machine of the cluster."""
    return [{"CPU": n["Resources"].get("CPU", 0.0), "GPU": n["Resources"].get("GPU", 0.0)}
            for n in ray.nodes() if n.get("Alive")]


def check_placement(plan: Plan, cluster_gpus: bool, machines: list[dict[str, float]]) -> None:
    """Every node's resources (and each generator actor's) fit on one machine of the cluster: Ray would otherwise
    wait forever for a placement group or a task it cannot place, without a word. Raises ConfigError naming the
    node, what it asks for and why, and the largest machine."""
    if not machines:
        return
    for key, node in plan.nodes.items():
        n = node.needs
        gpus = n.gpus if (cluster_gpus or not n.gpu_optional) else 0.0
        for cpus, gpus_, what in ((n.cpus, gpus, ""), (n.actor_cpus, n.actor_gpus, " per generator actor")):
            if (cpus or gpus_) and not any(m["CPU"] >= cpus and m["GPU"] >= gpus_ for m in machines):
                big = max(machines, key=lambda m: (m["GPU"], m["CPU"]))
                raise ConfigError(f"{key}: needs {gpus_:g} GPU(s) and {cpus:g} CPU(s) on one machine{what}"
                                  f"{f' ({n.why})' if n.why else ''}, but the cluster's largest machine has "
                                  f"{big['GPU']:g} GPU(s) and {big['CPU']:g} CPU(s); lower them (train: nproc or "
                                  "workers, with accum_steps to keep the batch) or add a larger machine")


def _task_options(needs: Any, cluster_gpus: bool, retries: int) -> tuple[dict[str, Any], Any]:
    """Ray task options of a node's needs, and the placement group of a multi-process run (or None)."""
    gpus = needs.gpus if (cluster_gpus or not needs.gpu_optional) else 0.0
    opts: dict[str, Any] = {"num_cpus": needs.cpus, "num_gpus": gpus, "max_retries": retries, "retry_exceptions": False}
    if needs.processes <= 1:
        return opts, None
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = {"CPU": needs.cpus, **({"GPU": gpus} if gpus else {})}
    group = placement_group([bundle], strategy="STRICT_PACK")
    opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0,
                                                                   placement_group_capture_child_tasks=True)
    return opts, group
