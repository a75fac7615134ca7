"""A study as a plan: a graph of stage nodes, built without running anything (and without torch), run by an
executor (synscale.study.executors: `local` in this process, `ray` on a Ray cluster).

A node names the stage kind it produces, the nodes whose stages it reads (`deps`), a module-level function
that runs it, `fn(ctx, *dep_results, **args) -> StageResult`, and what it needs (CPUs, GPUs, processes).
Its stage id is the content hash of synscale.stage, computed when it runs, so a plan over an existing
workdir finds the stages that are complete. Nodes are kept in the order they were added, which is a
topological order (a node's deps are added before it): the local executor runs them in that order.

While a plan runs, every node's state is journalled under `W/plan/` (synscale.study.plan.Journal): `plan.json`
(the nodes and the study's identity) and `nodes/<n>.json` (running, done or failed, with start and end times,
host, process and stage id), which `synscale status W` reads beside the stages themselves (synscale.study.status).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synscale.atomic import read_json


@dataclass(frozen=True)
class Needs:
    """What one run of a node takes: CPUs and GPUs (for all its processes together, on one machine) and processes
    (a torch.distributed run of `processes` workers, kept together on one node); a node that generates on Ray Data
    also starts actors of `actor_cpus` and `actor_gpus` each. `why` says which settings ask for it."""

    cpus: float = 1.0
    gpus: float = 0.0
    processes: int = 1
    gpu_optional: bool = False  # device auto: GPUs where the cluster has them, else the CPUs
    actor_cpus: float = 0.0
    actor_gpus: float = 0.0
    why: str = ""


@dataclass(frozen=True)
class Node:
    key: str  # unique in its plan, readable: "train real D=1000"
    kind: str  # the stage kind it produces (synscale.stage)
    fn: Callable[..., Any]
    deps: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)
    needs: Needs = Needs()
    info: dict[str, Any] = field(default_factory=dict)  # for the dry-run: images, iterations, ...


class Plan:
    def __init__(self, identity: str = "") -> None:
        self.nodes: dict[str, Node] = {}
        self.identity = identity  # the study's (synscale.config.study_identity): which runs' stages the journal shares

    def add(self, key: str, kind: str, fn: Callable[..., Any], deps: tuple[str | None, ...] = (),
            needs: Needs = Needs(), info: dict[str, Any] | None = None, **args: Any) -> str:
        """Add a node (once: a second add of the same key returns the first; the same stage is needed
        twice, e.g. the real-trained reference of the metrics and of the hard shift). `deps` are keys that
        add returned; a None dep is passed to `fn` as None."""
        if key in self.nodes:
            return key
        missing = [d for d in deps if d is not None and d not in self.nodes]
        if missing:
            raise ValueError(f"plan node {key!r}: unknown dependencies {missing}")
        self.nodes[key] = Node(key, kind, fn, tuple(deps), args, needs, info or {})
        return key

    def __len__(self) -> int:
        return len(self.nodes)

    def counts(self) -> Counter[str]:
        return Counter(n.kind for n in self.nodes.values())

    def describe(self) -> list[dict[str, Any]]:
        """The nodes as plain data (plan.json)."""
        return [{"index": i, "key": n.key, "kind": n.kind, "deps": [d for d in n.deps if d is not None],
                 "needs": asdict(n.needs), "info": n.info} for i, n in enumerate(self.nodes.values())]


@dataclass
class Context:
    """What a node runs with in one process: the workdir, the study log and the process's array cache."""

    workdir: Path
    quiet: bool = False

    def __post_init__(self) -> None:
        from synscale.data.cache import ArrayCache
        from synscale.progress import Log

        self.workdir = Path(self.workdir)
        self.log = Log(self.quiet)
        self.cache = ArrayCache()
        self.memo: dict[Any, Any] = {}  # objects a process builds once for several nodes (the metrics' reference)


class Journal:
    """Node states of a plan in a workdir: W/plan/plan.json and one small JSON file per node, each written
    whole (temporary file + rename), so readers never see half a record and writers on several hosts of a
    shared file system never write the same file at once (one node runs in one place)."""

    def __init__(self, workdir: str | Path) -> None:
        self.dir = Path(workdir) / "plan"

    def start_plan(self, plan: Plan, executor: str) -> None:
        """Journal a new run of `plan`: the earlier run's states go; where it was a run of the same study (the
        plan's identity), each node it finished keeps its stage id, pending, so `synscale status` counts the
        stages that are still complete as done before this run reaches them."""
        (self.dir / "nodes").mkdir(parents=True, exist_ok=True)
        made = self._stages_made(plan.identity)
        for stale in (self.dir / "nodes").glob("*.json"):  # states of an earlier run of (maybe) another plan
            stale.unlink()
        _write_json(self.dir / "plan.json", {"executor": executor, "started": time.time(), "identity": plan.identity,
                                             "nodes": plan.describe()})
        for i, key in enumerate(plan.nodes):
            if key in made:
                self.record(i, key, state="pending", stage=made[key])

    def _stages_made(self, identity: str) -> dict[str, str]:
        """{node key: stage} of the nodes the journalled run finished, where it ran the study `identity`."""
        if not identity:
            return {}
        try:
            if read_json(self.dir / "plan.json").get("identity") != identity:
                return {}
            return {n["key"]: n["stage"] for n in self.nodes() if n.get("stage")}
        except (OSError, ValueError, KeyError):  # no earlier run, or a record cut short: nothing to keep
            return {}

    def record(self, index: int, key: str, **state: Any) -> None:
        path = self.dir / "nodes" / f"{index}.json"
        old = read_json(path, default={})
        _write_json(path, {**old, "key": key, **state})

    def nodes(self) -> list[dict[str, Any]]:
        """plan.json's nodes, each with its recorded state (pending where none)."""
        plan = read_json(self.dir / "plan.json")
        out = []
        for n in plan["nodes"]:
            p = self.dir / "nodes" / f"{n['index']}.json"
            out.append({**n, "state": "pending", **(read_json(p, default={}))})
        return out


def run_node(node: Node, index: int, ctx: Context, deps: list[Any], journal: Journal | None) -> Any:
    """Run one node (in whichever process the executor chose), journalling its state."""
    if journal is not None:  # the GPUs the process may use: those Ray assigned, or a local worker's own
        journal.record(index, node.key, state="running", start=time.time(), host=socket.gethostname(), pid=os.getpid(),
                       gpus=os.environ.get("CUDA_VISIBLE_DEVICES"), stage=None)  # its stage: known when done
    try:
        res = node.fn(ctx, *deps, **node.args)
    except BaseException as e:
        if journal is not None:
            journal.record(index, node.key, state="failed", end=time.time(), error=f"{type(e).__name__}: {e}"[:2000])
        raise
    if journal is not None:
        journal.record(index, node.key, state="done", end=time.time(), stage=f"{res.kind}/{res.id}",
                       cached=bool(res.skipped))
    return res


def _write_json(path: Path, obj: Any) -> None:
    from synscale.atomic import write_text

    write_text(path, json.dumps(obj, indent=1, default=str))
