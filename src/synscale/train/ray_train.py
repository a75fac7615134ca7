"""One training run across machines: Ray Train's `TorchTrainer` runs the spec's ranks on the Ray cluster
(`train.nodes` > 1: `nproc` processes per machine, `nproc * nodes` in all).

Ray Train starts one worker per rank where the cluster has room (a GPU each where the recipe runs on CUDA, and a
CPU for the rank and each of its loader workers), sets up torch.distributed (NCCL on GPUs, gloo on CPUs) and the
RANK / LOCAL_RANK / WORLD_SIZE environment torchrun would set; each worker then runs the same
`synscale.train.launch.run_spec` as a torchrun rank does. So checkpoints, resume and determinism are the engine's,
unchanged: the ranks checkpoint into the run's `out/checkpoints` (which every machine must see: shared storage),
and when a worker dies Ray Train restarts the worker group (at most MAX_FAILURES times), whose ranks resume from
the newest checkpoint. A rank that stops on a user error leaves its one line beside the spec, as under torchrun.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from collections.abc import Callable

from synscale.atomic import read_json
from synscale.errors import ConfigError
from synscale.train.rank_errors import clear_rank_errors, raise_rank_errors

MAX_FAILURES = 2  # worker-group restarts of one run (each resumes from the newest checkpoint)


def worker_needs(train: dict[str, Any]) -> dict[str, float]:
    """What one rank of the spec's `train` table asks of a machine (synscale.train.config.rank_resources)."""
    from synscale.schema import from_dict
    from synscale.train.config import TrainConfig, rank_resources

    return rank_resources(from_dict(TrainConfig, train, "training spec", "train."))


def ray_train(spec_path: Path, world: int, rank_fn: Callable[[dict[str, Any]], None]) -> None:
    """Run the spec at `spec_path` as `world` ranks on the Ray cluster (joining it where this process has not), each
    rank `rank_fn({"spec": path})` in a Ray Train worker (synscale.train.launch.ray_rank)."""
    import ray

    if not ray.is_initialized():
        try:
            ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
        except ConnectionError:
            raise ConfigError("train.nodes > 1 runs on a Ray cluster, and none is running here: start one (ray start "
                              "--head, then ray start --address=HEAD:6379 on each machine; docs/cluster.md) or set "
                              "train.nodes = 1") from None
    spec = read_json(spec_path)
    need = worker_needs(spec["train"])
    use_gpu = need["GPU"] > 0
    _check_room(ray, world, need)
    clear_rank_errors(spec_path, world)  # a user error left by an earlier try of this spec
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(spec["out"])
    store = out / "ray-train"
    trainer = TorchTrainer(
        rank_fn, train_loop_config={"spec": str(spec_path)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=world, use_gpu=use_gpu, resources_per_worker={"CPU": need["CPU"]}),
        run_config=RunConfig(name="run", storage_path=str(store.resolve()),
                             failure_config=FailureConfig(max_failures=MAX_FAILURES)))
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray's failure types vary by version; the ranks' errors come first
        raise_rank_errors(spec_path, world)
        raise RuntimeError(f"Ray Train run of {world} ranks failed after {MAX_FAILURES} restarts: {e}") from None
    raise_rank_errors(spec_path, world)
    if getattr(result, "error", None) is not None:
        raise RuntimeError(f"Ray Train run of {world} ranks failed: {result.error}")
    shutil.rmtree(store, ignore_errors=True)


def _check_room(ray: Any, world: int, need: dict[str, float]) -> None:
    """The cluster can hold the run's ranks: Ray Train would otherwise wait for them without a word."""
    machines = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = sum(int(min(m.get("CPU", 0.0) // need["CPU"], m.get("GPU", 0.0) // need["GPU"] if need["GPU"] else 1e9))
               for m in machines)
    if fits < world:
        raise ConfigError(f"train.nodes * nproc = {world} ranks, each asking {need['CPU']:g} CPU(s) (train.workers + 1)"
                          f"{' and a GPU' if need['GPU'] else ''}, but the Ray cluster's {len(machines)} machine(s) hold "
                          f"{fits}; add machines, or lower train.nodes, nproc or workers")
