"""A study as a plan: a graph of stage nodes, built without running anything (and without torch), run by an
executor (synscale.study.executors: `local` in this process, `ray` on a Ray cluster).

A node names the stage kind it produces, the nodes whose stages it reads (its `inputs`, by name), the stage
function that runs it, `fn(ctx, *, <inputs>, <args>) -> StageResult` (every stage function of every package
has that one signature), and what it needs (CPUs, GPUs, processes).
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
from synscale.stage import Context


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
    fn: Callable[..., Any]  # a stage function: fn(ctx, *, <inputs by name>, <args>) -> StageResult
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> a node's key, None, or a tuple of keys
    args: dict[str, Any] = field(default_factory=dict)
    needs: Needs = Needs()
    info: dict[str, Any] = field(default_factory=dict)  # for the dry-run: images, iterations, ...

    @property
    def deps(self) -> tuple[str | None, ...]:
        """The keys of the nodes whose stages it reads, in the order of its inputs (a tuple input's in turn)."""
        return tuple(k for v in self.inputs.values() for k in (v if isinstance(v, tuple) else (v,)))

    def call(self, ctx: Context, deps: list[Any]) -> Any:
        """Run its stage function on `deps`, the stages of its deps in order (None where a dep is None)."""
        given, kw = iter(deps), {}
        for name, v in self.inputs.items():
            kw[name] = tuple(next(given) for _ in v) if isinstance(v, tuple) else next(given)
        return self.fn(ctx, **kw, **self.args)


class Plan:
    def __init__(self, identity: str = "") -> None:
        self.nodes: dict[str, Node] = {}
        self.identity = identity  # the study's (synscale.config.study_identity): which runs' stages the journal shares

    def add(self, key: str, kind: str, fn: Callable[..., Any], inputs: dict[str, Any] | None = None,
            needs: Needs = Needs(), info: dict[str, Any] | None = None, **args: Any) -> str:
        """Add a node (once: a second add of the same key returns the first; the same stage is needed
        twice, e.g. the real-trained reference of the metrics and of the hard shift). `inputs` name the keys
        that add returned (or a tuple of them); a None input is passed to `fn` as None."""
        if key in self.nodes:
            return key
        node = Node(key, kind, fn, dict(inputs or {}), args, needs, info or {})
        missing = [d for d in node.deps if d is not None and d not in self.nodes]
        if missing:
            raise ValueError(f"plan node {key!r}: unknown dependencies {missing}")
        self.nodes[key] = node
        return key

    def __len__(self) -> int:
        return len(self.nodes)

    def counts(self) -> Counter[str]:
        return Counter(n.kind for n in self.nodes.values())

    def describe(self) -> list[dict[str, Any]]:
        """The nodes as plain data (plan.json)."""
        return [{"index": i, "key": n.key, "kind": n.kind, "deps": [d for d in n.deps if d is not None],
                 "needs": asdict(n.needs), "info": n.info} for i, n in enumerate(self.nodes.values())]


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


def new_context(workdir: str | Path, quiet: bool = False) -> Context:
    """A stage context with an array cache of its own (one per process, kept across its stages)."""
    from synscale.data.cache import ArrayCache

    return Context(Path(workdir), quiet, ArrayCache())


def run_node(node: Node, index: int, ctx: Context, deps: list[Any], journal: Journal | None) -> Any:
    """Run one node (in whichever process the executor chose), journalling its state."""
    if journal is not None:  # the GPUs the process may use: those Ray assigned, or a local worker's own
        journal.record(index, node.key, state="running", start=time.time(), host=socket.gethostname(), pid=os.getpid(),
                       gpus=os.environ.get("CUDA_VISIBLE_DEVICES"), stage=None)  # its stage: known when done
    try:
        res = node.call(ctx, deps)
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
