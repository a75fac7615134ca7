"""The workdir as a user handles it: `synscale status` checked against the stages on disk, a workdir moved
(`mv W W2`), and one study at a time (W/study.lock). Every test works on a copy of the session's finished study
(conftest.finished_study), so none runs a study from scratch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from synscale.cli import main
from synscale.config import load_study, study_identity
from synscale.study.plan import Journal
from synscale.study.status import node_states, summary

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "TQDM_DISABLE": "1"}


def _copy(finished: Path, to: Path) -> Path:
    shutil.copytree(finished, to, symlinks=True)
    return to


def _status_rows(out: str) -> dict[str, list[str]]:
    """`synscale status` lines by kind: [done, running, pending, failed, stopped, ...]."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].isdigit():
            rows[parts[0]] = parts[1:]
    return rows


def _models(w: Path) -> dict[Path, int]:
    return {p.relative_to(w): p.stat().st_mtime_ns for p in (w / "stages" / "train").rglob("model.safetensors")}


# ---- status reads the stages


def _node_stage(w: Path, key: str) -> Path:
    return w / "stages" / next(n["stage"] for n in Journal(w).nodes() if n["key"] == key)


def test_status_counts_a_stage_done_only_where_it_is_complete_on_disk(finished_study, tmp_path, capsys):
    w = _copy(finished_study, tmp_path / "w")
    nodes = Journal(w).nodes()
    trains = [n for n in nodes if n["kind"] == "train"]
    assert all(n["state"] == "done" for n in nodes) and len(trains) == 5  # real and synthetic at 200, 400; reference
    shutil.rmtree(_node_stage(w, "train real D=400"))  # deleted
    (_node_stage(w, "train tiny-sd-cfg2-w2s D=200") / "stage.json").unlink()  # incomplete (a run would redo it)
    states = {n["key"]: n for n in node_states(w)}
    assert states["train real D=400"]["state"] == "pending" and states["train real D=400"]["gone"]
    assert states["train tiny-sd-cfg2-w2s D=200"]["state"] == "pending"
    assert sum(n["state"] == "done" for n in states.values()) == len(nodes) - 2
    row = summary(list(states.values()))["train"]
    assert (row["done"], row["pending"]) == (3, 2)
    assert row["left_s"] == pytest.approx(row["seconds"] / 3 * 2) and row["left_s"] > 0  # the time left follows
    assert main(["status", str(w)]) == 0
    out = capsys.readouterr().out
    assert _status_rows(out)["train"][:5] == ["3", "0", "2", "0", "0"]
    assert _status_rows(out)["total"][0] == str(len(nodes) - 2)
    assert "pending: 2 stage(s) the journal records done are not complete" in out and "train real D=400" in out


def test_status_counts_the_stages_an_earlier_run_of_the_study_made(finished_study, synthetic_study_file, tmp_path,
                                                                   capsys):
    """A rerun starts its journal afresh: the stages the earlier run of the same study made that are complete on
    disk are done from the start (they are reused), not pending until the run reaches them; another study's are
    not known."""
    from synscale.study import build_plan

    w = _copy(finished_study, tmp_path / "w")
    shutil.rmtree(_node_stage(w, "train real D=400"))
    n = len(Journal(w).nodes())
    Journal(w).start_plan(build_plan(load_study(synthetic_study_file)).plan, "local")  # what a rerun does first
    assert main(["status", str(w)]) == 0
    out = capsys.readouterr().out
    assert _status_rows(out)["train"][:5] == ["4", "0", "1", "0", "0"] and _status_rows(out)["total"][0] == str(n - 1)
    assert "not complete" not in out  # this run has not said it is done: it is simply pending
    other = load_study(synthetic_study_file, overrides=["fit.bootstrap=20"])
    Journal(w).start_plan(build_plan(other).plan, "local")
    assert main(["status", str(w)]) == 0
    assert _status_rows(capsys.readouterr().out)["total"][0] == "0"


# ---- a moved workdir


def test_a_moved_workdir_keeps_its_report_status_and_stages(finished_study, synthetic_study_file, tmp_path, capsys):
    w = _copy(finished_study, tmp_path / "w")
    meta = json.loads((w / "results" / "meta.json").read_text())
    gen = pd.read_parquet(w / "results" / "generation.parquet")
    # what the results name inside the workdir, they name relative to it
    assert re.fullmatch(r"stages/shards/[0-9a-f]{16}", meta["real_train_path"])
    assert all(re.fullmatch(r"stages/shards/[0-9a-f]{16}", s["path"]) for s in meta["skipped"].values())
    assert gen.set_path.str.fullmatch(r"stages/generate/[0-9a-f]{16}").all()
    w2 = tmp_path / "moved"
    w.rename(w2)  # mv W W2
    assert main(["report", str(w2)]) == 0
    _check_report(w2, "tiny-sd-cfg2-w2s")
    assert main(["status", str(w2)]) == 0
    rows = _status_rows(capsys.readouterr().out)
    assert rows["total"][0] == str(len(Journal(w2).nodes())) and rows["train"][:5] == ["5", "0", "0", "0", "0"]
    # a workdir an older synscale wrote (absolute paths), moved since: its stages are found here
    meta_old = {**meta, "real_train_path": str(w / meta["real_train_path"])}
    (w2 / "results" / "meta.json").write_text(json.dumps(meta_old))
    gen.assign(set_path=[str(w / p) for p in gen.set_path]).to_parquet(w2 / "results" / "generation.parquet")
    assert main(["report", str(w2)]) == 0
    _check_report(w2, "tiny-sd-cfg2-w2s")
    # run again where it now is: every stage reused, nothing trained again
    before = _models(w2)
    assert main(["study", str(synthetic_study_file), "--workdir", str(w2), "-q"]) == 0
    assert all(n["cached"] for n in Journal(w2).nodes()) and _models(w2) == before and len(before) == 5
    assert json.loads((w2 / "results" / "meta.json").read_text())["real_train_path"] == meta["real_train_path"]


def _check_report(w: Path, config: str) -> None:
    """The report has the configuration's sample grid, and every file it refers to exists."""
    page = (w / "report" / "index.html").read_text()
    assert f'alt="samples of {config}"' in page and "missing-samples" not in page and f"{config}: its set" not in page
    assert (w / "report" / "samples" / f"{config}.png").stat().st_size > 1000
    refs = set(re.findall(r'(?:src|href)="([^"#]+)"', page))
    local = [r for r in refs if not r.startswith(("data:", "http:", "https:"))]
    assert local and all((w / "report" / r).exists() for r in local), local


def test_a_moved_workdir_resumes_an_interrupted_training(finished_study, synthetic_study_file, tmp_path, monkeypatch,
                                                         capsys):
    """A training stopped half-way (its checkpoints in .partial-<id>) resumes after `mv W W2`: its checkpoints
    name their sets by stage id, not by path (they were "another run's checkpoints" before)."""
    w = _copy(finished_study, tmp_path / "w")
    stage = _node_stage(w, "train real D=400")
    shutil.rmtree(stage)
    run = ["study", str(synthetic_study_file), "-q", "--set", "train.checkpoint_every=10"]
    monkeypatch.setenv("SYNSCALE_NAN_AT_STEP", "25")  # the run stops at step 30, its checkpoint of step 20 kept
    assert main([*run, "--workdir", str(w)]) == 2
    assert "training loss became nan" in capsys.readouterr().err
    assert (stage.parent / f".partial-{stage.name}" / "checkpoints" / "run.json").exists()
    monkeypatch.delenv("SYNSCALE_NAN_AT_STEP")
    w2 = tmp_path / "moved"
    w.rename(w2)
    assert main([*run, "--workdir", str(w2)]) == 0, capsys.readouterr().err
    assert json.loads((w2 / "stages" / "train" / stage.name / "train.json").read_text())["resumed_from_step"] == 20


# ---- one study at a time


HOLD = """
import sys
from synscale.workdir import study_lock
with study_lock(sys.argv[1], sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    sys.stdin.read()
"""


def _holder(w: Path, name: str, identity: str) -> subprocess.Popen:
    """Another process that holds the workdir's study lock as a run of study `name` would, until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(w), name, identity], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_study_is_refused_while_one_runs_and_may_start_once_it_is_killed(finished_study, synthetic_study_file,
                                                                                tmp_path, capsys):
    w = _copy(finished_study, tmp_path / "w")
    written = (w / "study.json").stat().st_mtime_ns
    proc = _holder(w, "other-study", "0123456789abcdef")
    try:
        assert main(["study", str(synthetic_study_file), "--workdir", str(w), "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"synscale: error: {w}: another study, 'other-study' (identity 0123456789abcdef), is running in this "
            f"workdir (pid {proc.pid} on {socket.gethostname()}, since ")
        assert err[0].endswith("); wait for it, or use another --workdir")
        assert (w / "study.json").stat().st_mtime_ns == written  # nothing of the refused run was written
        assert main(["report", str(w)]) == 0 and main(["status", str(w)]) == 0  # readers take no lock
    finally:
        proc.kill()  # SIGKILL: the kernel releases its lock
        proc.wait()
    assert main(["study", str(synthetic_study_file), "--workdir", str(w), "-q"]) == 0
    record = json.loads((w / "study.lock").read_text())
    cfg = load_study(synthetic_study_file)
    assert (record["study"], record["identity"], record["holders"]) == (cfg.name, study_identity(cfg), [])


def test_the_same_study_runs_while_another_run_of_it_holds_the_lock(finished_study, synthetic_study_file, tmp_path):
    w = _copy(finished_study, tmp_path / "w")
    cfg = load_study(synthetic_study_file)
    proc = _holder(w, cfg.name, study_identity(cfg))
    try:
        assert main(["study", str(synthetic_study_file), "--workdir", str(w), "-q"]) == 0
        record = json.loads((w / "study.lock").read_text())
        assert [h["pid"] for h in record["holders"]] == [proc.pid]  # this run joined, and left
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0


RACE = """
import sys, time
from synscale.errors import WorkdirBusy
from synscale.workdir import study_lock
start = float(sys.argv[3])
while time.time() < start:
    pass
try:
    with study_lock(sys.argv[1], sys.argv[2], sys.argv[2]):
        print("held", flush=True)
        time.sleep(0.5)
except WorkdirBusy:
    print("busy", flush=True)
"""


def test_two_different_studies_started_at_once_never_both_run(tmp_path):
    """Two processes of two studies that take the lock at the same moment: one runs, the other is refused,
    every time."""
    for round_ in range(4):
        w = tmp_path / f"w{round_}"
        w.mkdir()
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(w), name, str(start)], stdout=subprocess.PIPE,
                                  text=True, env=ENV) for name in ("study-a", "study-b")]
        outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
        assert outs == ["busy", "held"], outs


def test_a_killed_holder_leaves_nothing_that_blocks(tmp_path):
    """SIGKILL mid-run: the next study, of another identity, takes the workdir at once."""
    from synscale.workdir import study_lock

    proc = _holder(tmp_path, "killed-study", "k" * 16)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with study_lock(tmp_path, "next-study", "n" * 16):
        record = json.loads((tmp_path / "study.lock").read_text())
    assert record["study"] == "next-study" and [h["pid"] for h in record["holders"]] == [os.getpid()]
