import json
import os

import pytest

from synscale.stage import run_stage, stage_id


def test_stage_runs_once_and_records(tmp_path):
    calls = []

    def fn(out):
        calls.append(out)
        (out / "x.txt").write_text("hello")

    a = run_stage(tmp_path, "demo", {"p": 1}, {"src": "abc"}, fn)
    b = run_stage(tmp_path, "demo", {"p": 1}, {"src": "abc"}, fn)
    assert len(calls) == 1 and not a.skipped and b.skipped and a.path == b.path
    assert (a.path / "x.txt").read_text() == "hello"
    info = json.loads((a.path / "stage.json").read_text())
    assert info["params"] == {"p": 1} and info["inputs"] == {"src": "abc"} and info["wall_seconds"] >= 0
    assert "torch" in info["versions"] and info["device"].startswith(("cpu", "cuda"))
    assert a.path == tmp_path / "stages" / "demo" / stage_id("demo", {"p": 1}, {"src": "abc"})


def test_stage_id_depends_on_params_and_inputs_not_key_order():
    base = stage_id("k", {"a": 1, "b": [1, 2]}, {"x": "1"})
    assert base == stage_id("k", {"b": [1, 2], "a": 1}, {"x": "1"})
    assert base != stage_id("k", {"a": 2, "b": [1, 2]}, {"x": "1"})
    assert base != stage_id("k", {"a": 1, "b": [1, 2]}, {"x": "2"})
    assert base != stage_id("other", {"a": 1, "b": [1, 2]}, {"x": "1"})


def test_failed_stage_leaves_nothing_complete_and_is_redone(tmp_path):
    def boom(out):
        (out / "partial").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage(tmp_path, "s", {}, {}, boom)
    base = tmp_path / "stages" / "s"
    assert [p.name for p in base.iterdir() if not p.name.startswith(".")] == []
    assert not any(p.name.startswith(".tmp-") for p in base.iterdir())  # an error gives its space back
    sid = stage_id("s", {}, {})
    (base / f".tmp-{sid}-99999").mkdir()  # what a killed process leaves
    (base / f".tmp-{sid}-99999" / "partial").write_text("half")
    res = run_stage(tmp_path, "s", {}, {}, lambda out: (out / "ok").write_text("1"))
    assert not (res.path / "partial").exists() and (res.path / "ok").exists()
    assert not any(p.name.startswith(".tmp-") for p in base.iterdir())


def test_resumable_stage_keeps_its_partial_work(tmp_path):
    def first(out):
        (out / "part-0").write_text("done")
        raise RuntimeError("killed after part 0")

    with pytest.raises(RuntimeError):
        run_stage(tmp_path, "gen", {"n": 2}, {}, first, resumable=True)
    seen = []

    def second(out):
        seen.append(sorted(p.name for p in out.iterdir()))
        (out / "part-1").write_text("done")

    res = run_stage(tmp_path, "gen", {"n": 2}, {}, second, resumable=True)
    assert seen == [["part-0"]] and sorted(p.name for p in res.path.iterdir()) == ["part-0", "part-1", "stage.json"]
    assert not any(p.name.startswith(".partial-") for p in (tmp_path / "stages" / "gen").iterdir())


def test_clear_partials_removes_what_killed_writers_left(tmp_path):
    """`.NAME.PID.tmp` of a process that is gone is removed; a live writer's (ours included) and the set's own
    files are kept; a file written with `replacing` appears whole, and an error leaves neither file."""
    import subprocess
    import sys

    from synscale.atomic import clear_partials, replacing, write_text

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [f".manifest.parquet.{gone.pid}.tmp", f".arrays.npy.{live.pid}.tmp", f".train.json.{os.getpid()}.tmp",
                 "manifest.parquet", ".lock", f".x.{gone.pid}"]
        for n in names:
            (tmp_path / n).write_text("x")
        assert clear_partials(tmp_path) == [tmp_path / names[0]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    finally:
        live.kill()
        live.wait()
    write_text(tmp_path / "a.json", "{}")
    with pytest.raises(ZeroDivisionError), replacing(tmp_path / "b.json") as tmp:
        tmp.write_text("half")
        1 / 0
    assert (tmp_path / "a.json").read_text() == "{}" and not (tmp_path / "b.json").exists()
    assert not list(tmp_path.glob(".b.json.*"))
