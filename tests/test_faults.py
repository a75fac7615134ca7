"""Faults: SIGKILL at random points of every stage kind and of a whole study, then resume (tests/faults.py runs
them); a full disk; a diverged run; an out-of-memory batch; checkpoints, manifests and results edited by hand;
a workdir another study used. The final outputs must equal an uninterrupted run's, and nothing partial may
ever be taken as complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HERE = Path(__file__).parent
KILLS = int(os.environ.get("SYNSCALE_FAULT_KILLS", "10"))  # per stage kind; the slow sweep raises it


@pytest.fixture(scope="module")
def fault_fmnist(tiny_fmnist, tmp_path_factory):
    """1,000 train / 200 test images of the real Fashion-MNIST (a prefix of tiny_fmnist)."""
    from conftest import write_idx

    from synscale.data.datasets import read_idx

    out = tmp_path_factory.mktemp("fmnist-faults")
    for split, n in (("train", 1000), ("t10k", 200)):
        for part in ("images-idx3", "labels-idx1"):
            name = f"{split}-{part}-ubyte.gz"
            write_idx(out / name, read_idx(tiny_fmnist / name)[:n])
    return out


def fault_study(tmp: Path, tiny_fmnist: Path) -> Path:
    p = tmp / "faults.toml"
    p.write_text(f"""name = "faults"
scales = [100, 200]
[data]
root = "{tiny_fmnist}"
reference_size = 1000
shard_size = 500
[train]
recipe = "miniature-cnn"
batch_size = 32
checkpoint_every = 10
schedule = {{zero_scale = 50, iters_per_doubling = 25, warmup_per_doubling = 3}}
[metrics]
per_class = 5
test_from = "training"
[fit]
bootstrap = 50
saturating_bootstrap = 10
[[synthetic]]
name = "ld"
model = "builtin:latent-diffusion"
steps = 2
batch_size = 50
shard_size = 100
""")
    return p


def run_plans(lanes: list[list[dict]], out: Path, timeout: int = 1800) -> dict:
    """Run plans at once (one tests/faults.py process each: the machine's cores), each job in order; their
    results together."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    procs = []
    for i, jobs in enumerate(lanes):
        (out / f"plan{i}.json").write_text(json.dumps(jobs))
        procs.append(subprocess.Popen([sys.executable, str(HERE / "faults.py"), str(out / f"plan{i}.json"),
                                       str(out / f"result{i}.json")], env=env, stderr=subprocess.PIPE, text=True))
    res = {}
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        res |= json.loads((out / f"result{i}.json").read_text())
    for name, r in res.items():
        assert r["code"] == 0, (name, (out / f"{name}.log").read_text()[-3000:])
    return res


def chain(name: str, argv: list[str], ref: str, seed: int, factor: float = 1.0, resumable: bool = False) -> dict:
    return {"name": name, "argv": argv, "kills": KILLS, "delay": f"x{factor}:{ref}", "seed": seed, "resumable": resumable}


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def no_leftovers(d: Path) -> None:
    left = [p for p in d.rglob("*") if p.name.startswith((".tmp-", ".partial-")) or ".inprogress" in p.name
            or p.name.endswith((".rows.json", ".tmp")) or "-new-" in p.name]
    assert not left, left


def only_own_files(d: Path) -> None:
    """A finished set or training run holds its own files only: nothing hidden (a killed writer's `.tmp`)."""
    hidden = [p for p in d.rglob(".*")]
    assert not hidden, hidden


def frames(results: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for p in sorted(results.glob("*.parquet")):
        df = pd.read_parquet(p)
        out[p.name] = df.drop(columns=[c for c in ("set_path",) if c in df])
    return out


def assert_same_tables(a: Path, b: Path) -> None:
    fa, fb = frames(a), frames(b)
    assert fa.keys() == fb.keys() and fa
    for name in fa:
        pd.testing.assert_frame_equal(fa[name], fb[name], obj=name)
    assert json.loads((a / "findings.json").read_text()) == json.loads((b / "findings.json").read_text())


# the files a resumable command writes whole and renames into place (killed at each, they are left as `.NAME.PID.tmp`)
GEN_RENAMES = (".generate.json", ".shard-00002.rows.json", ".arrays.npy", ".manifest.parquet")
TRAIN_RENAMES = (".latest.json", ".model.safetensors")


def at_replace(name: str, argv: list[str], at: str) -> dict:
    """The command's first run SIGKILLed as it renames the file it wrote whole, `at`..., into place; then run again."""
    return {"name": name, "argv": argv, "kills": 1, "delay": 600, "first_env": {"SYNSCALE_FAULT_KILL_AT_REPLACE": at}}


at_replace.DELAY = 506.653  # the timer's kill of a first run (seed 0, delay 600): never reached, the rename kills first


@pytest.fixture(scope="module")
def killed(tmp_path_factory, fault_fmnist):
    """Every stage kind killed at KILLS random points and resumed, beside its uninterrupted run."""
    t = tmp_path_factory.mktemp("faults")
    study = str(fault_study(t, fault_fmnist))
    shards = ["shards", "fashion-mnist", "--root", str(fault_fmnist), "--split", "train", "--limit", "600",
              "--shard-size", "120"]
    gen = ["generate", "--model", "builtin:latent-diffusion", "--steps", "2", "--per-class", "10", "--shard-size", "20",
           "--batch-size", "20", "-q"]
    train = ["train", str(t / "ref" / "shards"), "--study", study, "--scale", "200"]
    # the study's workdir: its real shards and reference network are there, the metrics stage of a new set is not
    metrics = ["metrics", str(t / "ref" / "gen"), "--study", study, "-q"]
    study_cmd = ["study", study, "-q", "--jobs", "1"]
    lane_a = [
        {"name": "study-ref", "argv": [*study_cmd, "--workdir", str(t / "ref" / "study")]},
        {**chain("study", [*study_cmd, "--workdir", str(t / "kill" / "study")], "study-ref", 1, resumable=True),
         "workdir": str(t / "kill" / "study")},
        # the study's trainings to do again, the first killed at a step with a checkpoint behind it
        {"copy": [str(t / "ref" / "study"), str(t / "kill" / "step")]},
        {"remove": [str(t / "kill" / "step" / d) for d in ("stages/train", "results", "report")]},
        {"name": "study-step", "argv": [*study_cmd, "--workdir", str(t / "kill" / "step")], "kills": 1, "delay": 600,
         "first_env": {"SYNSCALE_KILL_AT_STEP": "14"}},
        {"copy": [str(t / "ref" / "study"), str(t / "ref" / "fit")]},
        {"copy": [str(t / "ref" / "study"), str(t / "kill" / "fit")]},
        {"name": "fit-ref", "argv": ["fit", str(t / "ref" / "fit"), "--bootstrap", "40"]},
        chain("fit", ["fit", str(t / "kill" / "fit"), "--bootstrap", "40"], "fit-ref", 6),
    ]
    lane_b = [
        {"name": "shards-ref", "argv": [*shards, "--out", str(t / "ref" / "shards")]},
        chain("shards", [*shards, "--out", str(t / "kill" / "shards")], "shards-ref", 2, 1.2),
        {"name": "gen-ref", "argv": [*gen, "--out", str(t / "ref" / "gen")]},
        chain("gen", [*gen, "--out", str(t / "kill" / "gen")], "gen-ref", 3, resumable=True),
        *[at_replace(f"gen-at-{at}", [*gen, "--out", str(t / "at" / f"gen-{at}")], at) for at in GEN_RENAMES],
        {"name": "train-ref", "argv": [*train, "--out", str(t / "ref" / "train")]},
        chain("train", [*train, "--out", str(t / "kill" / "train")], "train-ref", 4, resumable=True),
        *[at_replace(f"train-at-{at}", [*train, "--out", str(t / "at" / f"train-{at}")], at) for at in TRAIN_RENAMES],
        {"wait": str(t / "study-ref.done")},
        {"copy": [str(t / "ref" / "study"), str(t / "ref" / "mw")]},
        {"copy": [str(t / "ref" / "study"), str(t / "kill" / "mw")]},
        {"name": "metrics-ref", "argv": [*metrics, "--workdir", str(t / "ref" / "mw"), "--out", str(t / "ref" / "m.json")]},
        chain("metrics", [*metrics, "--workdir", str(t / "kill" / "mw"), "--out", str(t / "kill" / "m.json")],
              "metrics-ref", 5),
        {"copy": [str(t / "ref" / "study"), str(t / "ref" / "report")]},
        {"copy": [str(t / "ref" / "study"), str(t / "kill" / "report")]},
        {"name": "report-ref", "argv": ["report", str(t / "ref" / "report")]},
        chain("report", ["report", str(t / "kill" / "report")], "report-ref", 7),
    ]
    return t, run_plans([lane_a, lane_b], t)


def test_kill_counts(killed):
    """Every chain killed its command KILLS times before it ended."""
    _, res = killed
    for name in ("study", "shards", "gen", "train", "metrics", "fit", "report"):
        assert res[name]["killed"] == KILLS, (name, res[name])


def test_study_killed_mid_training_resumes_from_its_checkpoint(killed):
    """The study's trainings done again, SIGKILL at step 14 of the first (its checkpoint of step 10 written): the
    rerun continues that model from step 10 and the study's results are the uninterrupted run's."""
    t, res = killed
    assert res["study-step"]["killed"] == 1
    resumed = [json.loads(p.read_text())["resumed_from_step"] for p in (t / "kill" / "step").glob("stages/train/*/train.json")]
    assert sorted(resumed)[-1] == 10 and resumed.count(0) == len(resumed) - 1
    assert_same_tables(t / "ref" / "study" / "results", t / "kill" / "step" / "results")


def test_killed_study_equals_uninterrupted(killed):
    t, _ = killed
    ref, got = t / "ref" / "study", t / "kill" / "study"
    no_leftovers(got)
    assert_same_tables(ref / "results", got / "results")
    stages = lambda w: sorted(p.relative_to(w) for p in (w / "stages").glob("*/[!.]*"))  # noqa: E731
    assert stages(ref) == stages(got)
    for d in (got / "stages").glob("*/[!.]*"):
        assert (d / "stage.json").exists()
    from synscale.data.shards import read_manifest, verify_set

    for kind in ("shards", "generate"):  # the real and synthetic sets, byte for byte, nothing lost or twice
        for d in (got / "stages" / kind).glob("[!.]*"):
            only_own_files(d)
            mine, theirs = files(d), files(ref / d.relative_to(got))
            mine.pop("stage.json"), theirs.pop("stage.json")
            assert mine == theirs and verify_set(d) == len(read_manifest(d)) and read_manifest(d).key.is_unique


def test_killed_shards_and_generation_are_byte_identical(killed):
    from synscale.data.shards import read_manifest, verify_set

    t, _ = killed
    for kind, n in (("shards", 600), ("gen", 100)):
        ref, got = t / "ref" / kind, t / "kill" / kind
        no_leftovers(got)
        only_own_files(got)
        assert files(ref) == files(got), kind
        m = read_manifest(got)
        assert verify_set(got) == n and m.key.is_unique  # nothing lost, nothing twice


def test_killed_as_a_file_is_renamed_into_place_leaves_nothing_behind(killed):
    """Killed with a file written whole but not yet renamed into place (the generated set's command record, a
    shard's rows, the array cache, the manifest; a checkpoint's pointer, the trained model), the command run again
    gives the uninterrupted run's files and nothing else: no `.tmp` of the killed run is kept or taken as done."""
    t, res = killed
    for at in GEN_RENAMES:
        got = t / "at" / f"gen-{at}"
        assert res[f"gen-at-{at}"]["delays"] == [at_replace.DELAY], at  # its first run was killed, at the rename
        only_own_files(got)
        assert files(t / "ref" / "gen") == files(got), at
    ref = t / "ref" / "train"
    for at in TRAIN_RENAMES:
        got = t / "at" / f"train-{at}"
        assert res[f"train-at-{at}"]["delays"] == [at_replace.DELAY], at  # its first run was killed, at the rename
        only_own_files(got)
        assert (ref / "model.safetensors").read_bytes() == (got / "model.safetensors").read_bytes(), at


def test_killed_training_and_metrics_equal_uninterrupted(killed):
    t, _ = killed
    ref, got = t / "ref" / "train", t / "kill" / "train"
    assert (ref / "model.safetensors").read_bytes() == (got / "model.safetensors").read_bytes()
    a, b = (json.loads((d / "train.json").read_text()) for d in (ref, got))
    for k in ("images_per_s", "resumed_from_step"):
        a.pop(k), b.pop(k)
    assert a == b
    assert json.loads((t / "ref" / "m.json").read_text()) == json.loads((t / "kill" / "m.json").read_text())
    no_leftovers(t / "kill" / "mw")


def test_killed_fit_and_report_equal_uninterrupted(killed):
    t, _ = killed
    assert_same_tables(t / "ref" / "fit" / "results", t / "kill" / "fit" / "results")
    no_leftovers(t / "kill" / "fit")
    page = lambda w: [ln for ln in (w / "report" / "index.html").read_text().splitlines()  # noqa: E731
                      if not ln.startswith("<p class=\"muted\">Built ")]
    assert page(t / "ref" / "report") == page(t / "kill" / "report")
    assert not list((t / "kill" / "report").glob(".report-*")) and not list((t / "kill" / "report").glob(".results-*"))


# ---- a full disk


def in_small_disk(tmp: Path, command: str) -> str:
    """Run a shell command with a 1 MiB tmpfs mounted at tmp/disk (a private mount namespace: nothing to
    clean up); its output. Skips where the machine allows no mount."""
    disk = tmp / "disk"
    disk.mkdir()
    ns = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    probe = subprocess.run([*ns, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {disk}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no tmpfs mount here ({' '.join(ns)}: {probe.stderr.strip()})")
    script = f"mount -t tmpfs -o size=1m tmpfs {disk} && {command}; echo rc=$?; find {disk} | sort"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "TQDM_DISABLE": "1"}
    return subprocess.run([*ns, "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300).stdout


def test_disk_full_stops_with_one_line_and_nothing_complete(tmp_path, fault_fmnist):
    py = f"{sys.executable} -m synscale"
    out = in_small_disk(tmp_path, f"{py} shards fashion-mnist --root {fault_fmnist} --split train --out "
                                  f"{tmp_path}/disk/set 2>{tmp_path}/err1; {py} study {fault_study(tmp_path, fault_fmnist)} "
                                  f"--workdir {tmp_path}/disk/w -q 2>{tmp_path}/err2")
    assert "rc=1" in out, out
    for err in ("err1", "err2"):
        text = (tmp_path / err).read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("synscale: error:")]
        assert len(lines) == 1 and "No space left on device" in lines[0] and "free space" in lines[0], text
        assert "Traceback" not in text
    listed = out.split("rc=1", 1)[1]
    assert "manifest.parquet" not in listed and "stage.json" not in listed  # nothing is complete
    assert f"{tmp_path}/disk/set\n" not in listed  # the set never appeared, not even in part


# ---- a diverged run, an edited checkpoint, an out-of-memory batch


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, fault_fmnist):
    from synscale.cli import main

    d = tmp_path_factory.mktemp("small")
    assert main(["shards", "fashion-mnist", "--root", str(fault_fmnist), "--split", "train", "--limit", "400",
                 "--out", str(d / "set")]) == 0
    return d / "set", fault_study(d, fault_fmnist)


def train_cli(set_dir: Path, study: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(set_dir), "--study", str(study), "--out", str(out), *extra]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(small_set, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    from synscale.cli import main

    set_dir, study = small_set
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("SYNSCALE_NAN_AT_STEP", "25")
    assert main(train_cli(set_dir, study, tmp_path / "m")) == 2
    err = capsys.readouterr().err
    assert "training loss became nan by step 30; lower train.lr" in err and "step-00000020" in err and "is kept" in err
    latest = json.loads((tmp_path / "m" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 20
    weights = load_file(str(tmp_path / "m" / "checkpoints" / latest["dir"] / "model.safetensors"))
    assert all(np.isfinite(v.numpy()).all() for v in weights.values())
    assert not (tmp_path / "m" / "model.safetensors").exists()  # no model of a diverged run
    monkeypatch.delenv("SYNSCALE_NAN_AT_STEP")
    assert main(train_cli(set_dir, study, tmp_path / "m")) == 0  # resumes from step 20
    assert json.loads((tmp_path / "m" / "train.json").read_text())["resumed_from_step"] == 20


def _edit_checkpoint(ckpt: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    model = ckpt / "model.safetensors"
    tensors = load_file(str(model))
    if how == "missing-tensor":
        tensors.pop(sorted(tensors)[0])
        save_file(tensors, str(model))
    elif how == "wrong-shape":
        k = sorted(tensors)[0]
        tensors[k] = tensors[k].reshape(-1)[:1].clone()
        save_file(tensors, str(model))
    elif how == "truncated":
        model.write_bytes(model.read_bytes()[:100])
    elif how == "optimizer-missing":
        (ckpt / "optimizer.safetensors").unlink()
    elif how == "latest-garbage":
        (ckpt.parent / "latest.json").write_text("{not json")


@pytest.mark.parametrize("how", ["missing-tensor", "wrong-shape", "truncated", "optimizer-missing", "latest-garbage"])
def test_edited_checkpoint_is_named(how, small_set, tmp_path, monkeypatch, capsys):
    from synscale.cli import main

    set_dir, study = small_set
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("SYNSCALE_NAN_AT_STEP", "25")  # stops the run with checkpoints of steps 10 and 20
    assert main(train_cli(set_dir, study, tmp_path / "m")) == 2
    monkeypatch.delenv("SYNSCALE_NAN_AT_STEP")
    capsys.readouterr()
    _edit_checkpoint(tmp_path / "m" / "checkpoints" / "step-00000020", how)
    assert main(train_cli(set_dir, study, tmp_path / "m")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "delete" in err and "checkpoints" in err, err
    assert ("latest.json" if how == "latest-garbage" else "step-00000020") in err


def test_checkpoints_of_another_run_are_not_resumed(small_set, tmp_path, monkeypatch, capsys):
    from synscale.cli import main

    set_dir, study = small_set
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("SYNSCALE_NAN_AT_STEP", "25")
    assert main(train_cli(set_dir, study, tmp_path / "m")) == 2
    monkeypatch.delenv("SYNSCALE_NAN_AT_STEP")
    capsys.readouterr()
    assert main(train_cli(set_dir, study, tmp_path / "m", "--set", "train.weight_decay=0.123")) == 2
    assert "holds the checkpoints of another run" in capsys.readouterr().err


def test_out_of_memory_names_the_batch_size(small_set, tmp_path):
    """A real allocation failure: the address space capped (SYNSCALE_MEMORY_LIMIT_MB) 16 MB above its size when
    training starts, a batch of 400 that needs more."""
    set_dir, study = small_set
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "SYNSCALE_MEMORY_LIMIT_MB": "16",
           "PYTHONPATH": str(HERE.parent / "src")}
    res = subprocess.run([sys.executable, "-m", "synscale", *train_cli(set_dir, study, tmp_path / "m", "--set",
                                                                       "train.batch_size=400")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "out of memory on cpu at train.batch_size = 400" in res.stderr and "lower train.batch_size" in res.stderr


# ---- what another study, or a hand, left in the workdir


def test_reused_workdir_keeps_nothing_of_the_other_study(killed, tmp_path, fault_fmnist):
    """A workdir another study wrote (a configuration this one does not have, a table it does not write): the
    results and the report have only this study's."""
    from synscale.cli import main

    t, _ = killed
    w = tmp_path / "w"
    shutil.copytree(t / "ref" / "study", w)
    ghost = pd.read_parquet(w / "results" / "metrics.parquet").assign(config="ghost")
    ghost.to_parquet(w / "results" / "metrics.parquet")
    (w / "results" / "metrics_extra.parquet").write_bytes(b"old")
    study = fault_study(tmp_path, fault_fmnist)
    assert main(["study", str(study), "--workdir", str(w), "-q", "--set", "synthetic=[]", "--set", "metrics.per_class=0"]) == 0
    results = w / "results"
    assert sorted(p.name for p in results.glob("metrics*")) == []
    for p in results.glob("*.parquet"):
        df = pd.read_parquet(p)
        for col in ("config", "source"):
            if col in df:
                assert set(df[col]) <= {"real"}, (p.name, set(df[col]))
    assert "ghost" not in (w / "report" / "index.html").read_text()


@pytest.mark.parametrize("sig,jobs", [("SIGTERM", "2"), ("SIGINT", "1")])
def test_sigterm_and_sigint_end_with_one_line(sig, jobs, tmp_path, fault_fmnist):
    import signal
    import time

    study = fault_study(tmp_path, fault_fmnist)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(HERE.parent / "src")}
    # SIGINT as a terminal's Ctrl-C delivers it (a shell's background job, e.g. CI's, inherits it ignored)
    proc = subprocess.Popen([sys.executable, "-m", "synscale", "study", str(study), "--workdir", str(tmp_path / "w"),
                             "-q", "--jobs", jobs], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "w" / "stages").glob("shards/[!.]*/stage.json")):
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == ("synscale: interrupted; complete stages are kept: rerun the same command "
                                            "to resume") and "Traceback" not in err, err


@pytest.mark.slow
def test_kill_sweep():
    """The larger sweep: every stage kind and the whole study killed at 40 random points each."""
    env = {**os.environ, "SYNSCALE_FAULT_KILLS": "40"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", str(Path(__file__)), "-k", "killed or kill_counts"],
                         env=env, capture_output=True, text=True, timeout=7200)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_set_replaced_in_place_never_keeps_the_old_cache(tmp_path, capsys):
    """The all-black set replaced by a noise set in the same --out: refused without --overwrite; with it, the
    images read back (from the array cache and from the shards) are the noise, never the old black ones."""
    from bad_inputs import image_folder

    from synscale.cli import main
    from synscale.data.shards import load_arrays, verify_set

    black = image_folder(tmp_path / "black", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3})
    for p in black.rglob("*.png"):
        from PIL import Image

        Image.new("RGB", (8, 8)).save(p)
    noise = image_folder(tmp_path / "noise", {"a": [(8, 8)] * 3, "b": [(8, 8)] * 3})
    out = tmp_path / "set"
    assert main(["shards", "imagefolder", "--root", str(black), "--out", str(out)]) == 0
    assert load_arrays(out)[0].max() == 0
    assert main(["shards", "imagefolder", "--root", str(noise), "--out", str(out)]) == 2
    assert "holds a set" in capsys.readouterr().err
    assert main(["shards", "imagefolder", "--root", str(noise), "--out", str(out), "--overwrite"]) == 0
    assert load_arrays(out)[0].max() > 200 and verify_set(out) == 6
    (out / "arrays.npy").unlink()  # and decoded from the shards
    assert load_arrays(out)[0].max() > 200


def test_an_interrupt_python_could_not_raise_still_ends_the_run(tmp_path, fault_fmnist, monkeypatch):
    """A Ctrl-C whose KeyboardInterrupt arrives inside a callback Python swallows ("Exception ignored in ...": an
    import's module-lock callback, a finaliser) is recorded by synscale's handler and ends the run at the next
    stage with the interrupted line and 130, instead of being lost while the study goes on."""
    import signal

    from synscale.cli import main

    study = fault_study(tmp_path, fault_fmnist)

    class Swallowed:
        def __del__(self):  # the signal handler runs here, and Python only prints what it raised
            signal.raise_signal(signal.SIGINT)

    from synscale.study import executors

    run_node = executors.run_node
    calls = []

    def first_then_interrupt(*a, **kw):
        out = run_node(*a, **kw)
        if not calls:
            calls.append(1)
            Swallowed()  # collected at once: the KeyboardInterrupt is swallowed, the signal recorded
        return out

    monkeypatch.setattr(executors, "run_node", first_then_interrupt)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
    try:
        code = main(["study", str(study), "--workdir", str(tmp_path / "w"), "-q"])
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130 and len(calls) == 1
    done = list((tmp_path / "w" / "stages").glob("*/[!.]*/stage.json"))
    assert len(done) == 1  # the first stage, complete; nothing after it ran
