"""One training run from a JSON spec, on one process or under torchrun.

    python -m synscale.train.launch SPEC.json                                  # one process
    torchrun --nproc_per_node 8 -m synscale.train.launch SPEC.json             # 8 GPUs, one node
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_endpoint HOST:PORT ... -m synscale.train.launch SPEC.json

A spec names the training sets (synscale set directories, each with an optional parquet of keys: the
nested subset), the `[train]` table (its `task`: classification or contrastive), the data scale and the
output directory; with `mix`, the two parts are the real and synthetic images of the same captions
(CLIP's mixed pairs, synscale.train.data.MixedPairs). The study writes one per train stage and launches
torchrun itself when `train.nproc > 1`; `synscale train` writes one from the command line. Process 0
writes `model.safetensors` and `train.json` into `out`; checkpoints go to `out/checkpoints` and a rerun
of the same spec resumes from the newest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synscale.atomic import clear_partials, read_json, replacing, write_text
from synscale.errors import ConfigError
from synscale.train.rank_errors import clear_rank_errors, raise_rank_errors, rank_error


def make_spec(train: dict[str, Any], parts: list[tuple[str, str | None]], num_classes: int, scale: int, out: str | Path,
              real_prob: float | None = None) -> dict[str, Any]:
    """A training run's spec; `real_prob`: the parts are (real, synthetic) images of the same captions,
    each caption taking its real one with this probability."""
    if train.get("task", "classification") == "classification" and num_classes < 2:
        from synscale.schema import ConfigError

        raise ConfigError(f"{parts[0][0]}: {num_classes} class(es); a classifier needs a labelled set of at least 2 classes")
    spec = {"train": train, "parts": [[str(s), str(k) if k else None] for s, k in parts], "num_classes": num_classes,
            "scale": scale, "out": str(out)}
    if real_prob is not None:
        spec["mix"] = {"real_prob": real_prob}
    return spec


def in_memory(loader: str, set_dirs: list[Path]) -> bool:
    """Whether `train.loader` means decoded arrays in RAM: `memory`, or `auto` where every set has its
    array cache (images of at most 64 px)."""
    from synscale.data.shards import array_cache

    return loader == "memory" or (loader == "auto" and all(array_cache(s) is not None for s in set_dirs))


def groups(parts: list[Any], real_prob: float | None) -> list[list[Any]]:
    """The parts of a run's sources: one group, or with `real_prob` (mixed pairs) the real and the synthetic one."""
    if real_prob is None:
        return [list(parts)]
    if len(parts) != 2:
        raise ConfigError(f"mixed pairs take two sets (real, synthetic), got {len(parts)}")
    return [list(parts[:1]), list(parts[1:])]


def make_source(parts: list[tuple[str | Path, str | Path | None]], loader: str, real_prob: float | None = None,
                arrays: Any = None, index: list[str] | None = None) -> Any:
    """ArraySource of the decoded sets (loader memory, or auto where every set has its array cache),
    else a ShardSource that decodes in the loader's workers; with `real_prob`, MixedPairs of the two.
    `arrays(set_dir, keys)`: (images, labels[, captions]) of a set's keys in memory (default: decoded from
    its array cache; the study passes the arrays it keeps for all of a run's scales). `index`: the directories
    where the run's launcher saved each group's loader index (save_indexes), memory-mapped here."""
    import pandas as pd

    from synscale.data.shards import captions_for, load_arrays
    from synscale.train.data import MixedPairs, ShardSource, concat_arrays

    memory = in_memory(loader, [Path(s) for s, _ in parts])
    arrays = arrays or (lambda s, k: (*load_arrays(s, k)[:2], captions_for(s, k)))
    sources = []
    for i, group in enumerate(groups(parts, real_prob)):
        if memory:
            keyed = [(Path(s), pd.read_parquet(k)["key"].tolist() if k else None) for s, k in group]
            sources.append(concat_arrays([arrays(s, k) for s, k in keyed]))
        elif index:
            from synscale.data.index import LoaderIndex

            sources.append(ShardSource(index=LoaderIndex.load(index[i])))
        else:
            sources.append(ShardSource(group))
    return sources[0] if real_prob is None else MixedPairs(sources[0], sources[1], real_prob)


def launch(spec: dict[str, Any], nproc: int, source: Any = None, progress: bool = True,
           desc: str = "train", nodes: int = 1) -> dict[str, Any]:
    """Run a training spec in this process, with `nproc` > 1 under torchrun, or with `nodes` > 1 as `nproc * nodes`
    ranks on the Ray cluster through Ray Train (synscale.train.ray_train); the loader index is built once, here,
    for every rank to memory-map. Returns the run's record (train.json)."""
    if nproc <= 1 and nodes <= 1:
        return run_spec(spec, source, progress=progress, desc=desc)
    out = Path(spec["out"])
    spec = save_indexes(spec, out)
    write_text(out / "spec.json", json.dumps({**spec, "progress": progress}, indent=1))
    if nodes > 1:
        from synscale.train.ray_train import ray_train

        ray_train(out / "spec.json", nproc * nodes, ray_rank)
    else:
        torchrun(out / "spec.json", nproc)
    return read_json(out / "train.json")


def train_sets(train: dict[str, Any], sets: list[str], out: Path, scale: int = 0, order: str = "class",
               order_seed: int = 0, real_prob: float | None = None) -> tuple[dict[str, Any], int]:
    """`synscale train`: recipe `train` (a TrainConfig as a dict) on whole sets, or with `scale` on the nested
    subset of `scale` samples of the one set (or of both pair sets with `real_prob`, CLIP's mixed pairs), subsets
    in `order` with `order_seed` as a study makes them; returns (the run's record, the scale trained at)."""
    from synscale.data.shards import read_labels, read_manifest
    from synscale.data.stages import write_subset

    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(sets[0])
    parts: list[tuple[str, str | None]] = [(s, None) for s in sets]
    n = len(read_manifest(sets[0])) if real_prob is not None else sum(len(read_manifest(s)) for s in sets)
    if scale:
        try:
            with replacing(out / "subset.parquet") as tmp:  # under torchrun every process writes it: atomically
                write_subset(Path(sets[0]), scale, order_seed, order, tmp)
        except ValueError as e:
            raise ConfigError(f"{sets[0]}: {e}") from None
        parts, n = [(s, str(out / "subset.parquet")) for s in sets], scale
    spec = make_spec(train, parts, len(labels) if labels else 0, n, out, real_prob)
    if train["nproc"] <= 1 and train.get("nodes", 1) <= 1:
        write_text(out / "spec.json", json.dumps(spec, indent=1))  # under torchrun every process writes it
    return launch(spec, train["nproc"], nodes=train.get("nodes", 1)), n


def save_indexes(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """The spec with its streamed sources' loader indexes built here, once, and saved in `out/loader-index-<i>`
    for its processes to memory-map (synscale.data.index): a run's ranks used to build the same index at once,
    each holding it whole. Memory-loader runs are left as they are."""
    from synscale.data.index import build_index
    from synscale.schema import from_dict
    from synscale.train.config import TrainConfig

    cfg: TrainConfig = from_dict(TrainConfig, spec["train"], "training spec", "train.")
    real_prob = spec.get("mix", {}).get("real_prob")
    if in_memory(cfg.loader, [Path(s) for s, _ in spec["parts"]]):
        return spec
    dirs = []
    for i, group in enumerate(groups(spec["parts"], real_prob)):
        dirs.append(str(out / f"loader-index-{i}"))
        build_index([(s, k) for s, k in group]).save(dirs[-1])
    return {**spec, "index": dirs}


def run_spec(spec: dict[str, Any], source: Any = None, progress: bool = True, desc: str = "train") -> dict[str, Any]:
    """Train as the spec says (resuming from out/checkpoints); process 0 writes the model and train.json."""
    import torch
    from safetensors.torch import save_file

    from synscale.schema import from_dict
    from synscale.train.config import TrainConfig
    from synscale.progress import bar
    from synscale.train.engine import Dist, train
    from synscale.train.events import TrainEvents
    from synscale.train.schedule import run_length
    from synscale.train.tasks import create_task

    cfg: TrainConfig = from_dict(TrainConfig, spec["train"], "training spec", "train.")
    out = Path(spec["out"])
    dist = Dist.from_env()
    if source is None:
        source = make_source([(s, k) for s, k in spec["parts"]], cfg.loader, spec.get("mix", {}).get("real_prob"),
                             index=spec.get("index"))
    task = create_task(cfg, num_classes=spec["num_classes"])
    steps = run_length(spec["scale"], cfg)[0]
    if dist.rank == 0:  # what a killed run left half-written (its files are written whole or not at all)
        for d in (out, out / "checkpoints"):
            clear_partials(d)
    _claim_checkpoints(out / "checkpoints", spec, dist.rank)
    events = TrainEvents(out / "tensorboard") if cfg.tensorboard and dist.rank == 0 else None
    try:
        with bar(total=steps, desc=desc, unit="step", disable=not progress or dist.rank != 0) as pbar:
            result = train(task, cfg, source, spec["scale"], pbar, ckpt_dir=out / "checkpoints", events=events)
    finally:
        if events is not None:
            events.close()
    meta = {
        "task": cfg.task, "steps": result.steps, "warmup": result.warmup, "loss_curve": result.losses, "scale": spec["scale"],
        **task.meta(source), "in_chans": int(source.shape[0]), "img_size": int(source.shape[1]),
        "model_img_size": int(cfg.crop or source.shape[1]), "train_images": len(source), "processes": dist.world,
        "torch_threads": torch.get_num_threads(), "resumed_from_step": result.resumed_from,
        "images_per_s": result.images_per_s,
    }
    if dist.rank == 0:  # each file whole or not at all; train.json last: a run with it is complete
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        with replacing(out / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        write_text(out / "train.json", json.dumps(meta, indent=1))
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return meta


def _claim_checkpoints(ckpt_dir: Path, spec: dict[str, Any], rank: int) -> None:
    """Checkpoints are resumed only by the run that wrote them: `run.json` holds the spec's identity (sets,
    recipe, scale), and a directory holding another run's checkpoints is an error, not a silent resume. A set
    that is a stage enters the identity by its stage id, not its path, so a training of a workdir that was moved
    (or named by another path) resumes; checkpoints an older synscale claimed by the paths resume where those
    paths are the same."""
    from synscale.errors import DataError

    run_id = _run_id(spec, _part_ref)
    marker = ckpt_dir / "run.json"
    if marker.exists():
        if read_json(marker).get("run") not in (run_id, _run_id(spec, lambda p: p)):
            raise DataError(f"{ckpt_dir}: holds the checkpoints of another run (other sets, recipe or scale); choose "
                            f"another --out, or delete {ckpt_dir} to train from the start")
        return
    if (ckpt_dir / "latest.json").exists():
        raise DataError(f"{ckpt_dir}: holds checkpoints of an unknown run (no run.json); delete it to train from the start")
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text(marker, json.dumps({"run": run_id}))


def _run_id(spec: dict[str, Any], ref: Callable[[str], str]) -> str:
    """A training run's identity: its spec without where it writes and how fast it runs, each part's set and
    subset file named by `ref`."""
    import hashlib

    from synscale.schema import OUT, keys_by_rule
    from synscale.train.config import TrainConfig

    run_only = keys_by_rule(TrainConfig, OUT)
    ident = {**spec, "out": None, "progress": None, "index": None,
             "parts": [[ref(s), ref(k) if k else None] for s, k in spec["parts"]],
             "train": {k: v for k, v in spec["train"].items() if k not in run_only}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _part_ref(path: str) -> str:
    """A set (or its subset file) as a run's identity names it: one in a stage by the stage's id and the path
    within it, any other by its absolute path."""
    from synscale.stage import STAGE_FILE, complete

    p = Path(path)
    for d in (p, p.parent):
        if complete(d):
            within = p.relative_to(d).as_posix()
            return f"stage:{read_json(d / STAGE_FILE)['id']}" + ("" if within == "." else f"/{within}")
    return str(p.resolve())


def torchrun(spec_path: Path, nproc: int) -> None:
    """Run the spec in `nproc` local processes with torchrun (standalone rendezvous).

    torchrun runs in a session of its own and dies with the process that started it (Linux: PR_SET_PDEATHSIG), and
    each rank with torchrun (synscale.train.launch.main): a Ray task cancelled or killed, or a local worker stopped,
    takes every rank with it instead of leaving them holding GPUs and writing the checkpoints a retry resumes from.
    An interrupted wait (Ctrl-C, a Ray cancellation) ends torchrun's process group and each rank's (torchrun starts
    every rank in a session of its own): SIGTERM, then SIGKILL."""
    import signal
    import time

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "synscale.train.launch", str(spec_path)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    clear_rank_errors(spec_path, nproc)  # a user error left by an earlier run of this spec
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=die_with_parent)
    ignored = _hear_interrupts()
    try:
        while (code := proc.poll()) is None:  # short waits: Ray's cancellation (an interrupt of the main thread)
            time.sleep(0.2)                  # reaches Python only between them, never inside a blocking wait
    except BaseException:
        _end_group(proc, signal.SIGTERM, wait=10.0)
        raise
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_rank_errors(spec_path, nproc)  # a rank stopped on a user error (a crop larger than the images, a damaged set)
    if code:
        raise RuntimeError(f"torchrun with {nproc} processes failed (exit {code}): {' '.join(cmd)}")


def _hear_interrupts() -> bool:
    """While torchrun runs, SIGINT raises KeyboardInterrupt even where this process inherited it ignored (a worker
    of a Ray started from a shell's background job, or a study run as one): Ray cancels a task by an interrupt of
    its main thread, which Python drops while SIGINT is ignored, and the ranks would then run on. Returns whether it
    was ignored (the caller puts that back)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return True
    return False


def _end_group(proc: subprocess.Popen, sig: int, wait: float) -> None:
    """Signal torchrun's process group and each rank's (torchrun starts every rank in a session of its own), and
    SIGKILL what is left after `wait` seconds."""
    import signal
    import time

    groups = [proc.pid, *_child_pids(proc.pid)]  # the ranks' groups: their pids (each leads its own session)
    for s, grace in ((sig, wait), (signal.SIGKILL, 5.0)):
        for pgid in groups:
            try:
                os.killpg(pgid, s)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline:
            if proc.poll() is not None and not any(_group_alive(g) for g in groups):
                return
            time.sleep(0.1)


def _child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc; [] elsewhere)."""
    return [p for p, _, ppid, _ in _processes() if ppid == pid]


def _group_alive(pgid: int) -> bool:
    """Whether a process group has a live member (zombies, which hold nothing, do not count)."""
    return any(group == pgid and state != "Z" for _, state, _, group in _processes())


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc/<pid>/stat ([] without /proc)."""
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(p.name), fields[0], int(fields[1]), int(fields[2])))
        except (OSError, ValueError, IndexError):
            continue
    return out


def die_with_parent() -> None:
    """Have the calling process receive SIGTERM when its parent dies (Linux; elsewhere nothing): run in a child
    between fork and exec (preexec_fn), or by a process about itself."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    if "LOCAL_RANK" in os.environ:  # a rank under torchrun: it ends with torchrun, however torchrun ends
        parent = os.getppid()
        die_with_parent()
        if os.getppid() != parent:  # torchrun died before the request was in place
            return 1
    from synscale.errors import UserError

    spec = json.loads(Path(argv[0]).read_text())
    try:
        run_spec(spec, progress=spec.get("progress", True) and int(os.environ.get("RANK", 0)) == 0)
    except UserError as e:  # the launcher says it, as one line, where torchrun was started; exit 0 keeps torchrun
        if "LOCAL_RANK" not in os.environ:  # from printing its own report of a failed child over it
            raise
        write_text(rank_error(Path(argv[0]), int(os.environ.get("RANK", 0))), str(e))
    return 0


def ray_rank(config: dict[str, Any]) -> None:
    """One rank of a run across machines, in a Ray Train worker (synscale.train.ray_train): the spec run as a
    torchrun rank runs it, with the rank's environment from Ray Train's context."""
    import ray.train

    from synscale.errors import UserError

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(ctx.get_world_size()), LOCAL_RANK=str(ctx.get_local_rank()))
    spec_path = Path(config["spec"])
    try:
        run_spec(json.loads(spec_path.read_text()), progress=False)
    except UserError as e:
        write_text(rank_error(spec_path, rank), str(e))


if __name__ == "__main__":
    raise SystemExit(main())
