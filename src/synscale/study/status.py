"""`synscale status W`: a study's plan with each stage's state, the compute its stages took per kind and
what is left, from the journal the executors keep (synscale.study.plan.Journal) checked against the stages on disk
(synscale.stage: complete, and each stage.json's wall seconds)."""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from synscale.atomic import alive, read_json
from synscale.study.plan import Journal
from synscale.schema import ConfigError
from synscale.stage import STAGE_FILE, complete

STATES = ("done", "running", "pending", "failed", "stopped")


def node_states(workdir: Path) -> list[dict[str, Any]]:
    """The plan's nodes with their states. A node is `done` where its stage is complete on disk, by the rule a
    run reuses a stage by (synscale.stage.complete): one the journal records done whose stage was deleted (or
    left incomplete) is `pending`, marked `gone` (the next run makes it again), and one whose stage an earlier
    run of the same study made (the journal keeps its id) is `done` before this run reaches it. A `running` node
    whose process on this host is gone is `stopped` (killed, or its study was interrupted: rerun the study to
    resume it). A done node carries its stage's wall seconds."""
    journal = Journal(workdir)
    if not (journal.dir / "plan.json").exists():
        raise ConfigError(f"{workdir}: no plan here (W/plan/plan.json); run a study with --workdir {workdir} first")
    host = socket.gethostname()
    nodes = journal.nodes()
    for n in nodes:
        if n["state"] == "running" and n.get("host") == host and not alive(n.get("pid", -1)):
            n["state"] = "stopped"
        stage = workdir / "stages" / n["stage"] if n.get("stage") else None
        if stage is not None and complete(stage):
            n["state"], n["wall_seconds"] = "done", _wall_seconds(stage)
        elif n["state"] == "done":
            n["state"], n["gone"] = "pending", True
    return nodes


def _wall_seconds(stage: Path) -> float:
    try:
        return float(read_json(stage / STAGE_FILE)["wall_seconds"])
    except (OSError, ValueError, KeyError):  # a stage.json edited by hand: its time is unknown
        return 0.0


def summary(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage kind: nodes in each state, seconds its stages took (cached ones included: the compute the
    study's results rest on), and the seconds left: the kind's mean so far times the stages not done, or
    before one is done the plan's estimate (synscale.study.estimate; `planned` True), None where it has none."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {**{s: 0 for s in STATES}, "seconds": 0.0})
    planned: dict[str, list[float | None]] = defaultdict(list)  # the plan's estimates of the stages not done
    for n in nodes:
        row = out[n["kind"]]
        row[n["state"]] += 1
        row["seconds"] += n.get("wall_seconds", 0.0)
        if n["state"] != "done":
            planned[n["kind"]].append(n.get("info", {}).get("est_seconds"))
    for kind, row in out.items():
        todo, est = len(planned[kind]), planned[kind]
        row["planned"] = bool(todo) and not row["done"] and None not in est
        if not todo:
            row["left_s"] = 0.0
        elif row["done"]:
            row["left_s"] = row["seconds"] / row["done"] * todo
        else:
            row["left_s"] = sum(est) if row["planned"] else None
    return dict(out)


def print_status(workdir: Path) -> None:
    nodes = node_states(workdir)
    plan = read_json(Journal(workdir).dir / "plan.json")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(plan["started"]))
    print(f"{workdir}: {len(nodes)} stages, executor {plan['executor']}, started {started}")
    rows = summary(nodes)
    print(f"{'kind':>10} {'done':>5} {'running':>8} {'pending':>8} {'failed':>7} {'stopped':>8} {'spent':>10} {'left (est.)':>12}")
    for kind, r in rows.items():
        left = "?" if r["left_s"] is None else ("~" if r["planned"] else "") + _hms(r["left_s"])
        print(f"{kind:>10} {r['done']:>5} {r['running']:>8} {r['pending']:>8} {r['failed']:>7} {r['stopped']:>8} "
              f"{_hms(r['seconds']):>10} {left:>12}")
    spent = sum(r["seconds"] for r in rows.values())
    left = [r["left_s"] for r in rows.values()]
    print(f"{'total':>10} {sum(r['done'] for r in rows.values()):>5} {'':>8} {'':>8} {'':>7} {'':>8} {_hms(spent):>10} "
          f"{('?' if None in left else _hms(sum(left))):>12}")
    if any(r["planned"] for r in rows.values()):
        print("~: the plan's estimate (synscale study --dry-run's rates), until a stage of the kind is done here")
    gone = [n for n in nodes if n.get("gone")]
    if gone:
        some = ", ".join(n["key"] for n in gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
        print(f"pending: {len(gone)} stage(s) the journal records done are not complete in {workdir / 'stages'} "
              f"(deleted?): {some}; the next run of the study makes them again")
    for state in ("running", "failed", "stopped"):
        for n in (n for n in nodes if n["state"] == state):
            since = f" since {time.strftime('%H:%M:%S', time.localtime(n['start']))}" if n.get("start") else ""
            gpus = f", GPU {n['gpus']}" if n.get("gpus") else ""
            where = f" on {n['host']} (pid {n['pid']}{gpus})" if n.get("host") else ""
            print(f"{state}: {n['key']}{since}{where}" + (f": {n['error']}" if n.get("error") else ""))


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
