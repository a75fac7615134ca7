"""A study as a plan run by executors: the plan is built without torch, the local and Ray executors give the
same results tables, Ray runs independent stages at once and retries a stage whose worker is killed, and
`synscale status` reads the journal."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests_helpers import NO_SYNTHETIC
from synscale.cli import main


def tiny_study(root: Path, workdir: Path, *extra: str) -> list[str]:
    return ["study", "fashion-mnist", "--size", "smoke", "--quiet", "--workdir", str(workdir),
            "--set", f"data.root={root}", "--set", "scales=[1000, 2500]", "--set", "train.schedule.zero_scale=700",
            "--set", "train.schedule.iters_per_doubling=100", *NO_SYNTHETIC,
            "--set", 'evaluate.shifts=["a"]', *extra]


def test_plan_is_built_without_torch_and_in_dependency_order():
    code = """
import sys
from synscale.config import find_study, load_study
from synscale.study import build_plan
import json
sp = build_plan(load_study(find_study("fashion-mnist")))
seen = set()
for key, node in sp.plan.nodes.items():
    assert all(d is None or d in seen for d in node.deps), key
    seen.add(key)
print(json.dumps({"counts": dict(sp.plan.counts()), "torch": "torch" in sys.modules}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    counts = out["counts"]
    # 16 grid configurations at 500 (val only) + real, best, worst and the scarce-real mix at 5 scales (best and
    # worst at 500 are the grid's models, found cached and evaluated on the 4 shifts) + the real curve held out at
    # 4,000 and 60,000 ([forecast]: on val + 4 shifts, and at 60,000, the reference network's scale, on val + 3) +
    # the real-trained reference + 3 x 4 CLIP models; curves and CLIP on val + 4 shifts; each CLIP through a
    # zero-shot head per set; metrics per
    # configuration (on its training images) and real; one select stage picks best and worst; one caption pool for
    # the in-captions configurations (the attribute captioner, seed 0). Subsets: real 5 + 2 held out,
    # the grid's 16, the reference, CLIP's 4 real and 4 synthetic caption subsets (the picked and mixed models
    # take theirs inside their train node: which set is known when the select stage has run). The closed loop
    # (docs/adaptive.md): 4 candidates piloted at 100 and 250 (their 400 is the grid's; val only), 3 rounds of an
    # allocation, each arm's generation and model (on val + 4 shifts), and the retrieved set's curve at 3 scales
    # (its pool leaves out the real curve's 4,000-image subset, a node already there)
    assert counts == {"shards": 2, "shift": 4, "subset": 5 + 2 + 16 + 1 + 8 + 8 + 3,
                      "train": 16 + 5 + 2 + 10 + 5 + 1 + 12 + 8 + 6 + 3,
                      "evaluate": 16 + 5 * (5 + 8 + 5) + 2 * 4 + 5 + 4 + 60 + 8 + 6 * 5 + 3 * 5, "generate": 16 + 1,
                      "metrics": 17, "pairs": 1, "zeroshot": 60, "select": 1, "captions": 1, "allocate": 3, "round": 6,
                      "retrieved": 1}
    assert out["torch"] is False  # no torch


def test_ray_executor_matches_local_runs_stages_at_once_and_retries_a_killed_worker(tiny_fmnist, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task of 1 CPU: CPU kernels sum in an order that depends on the threads
    try:
        assert main(tiny_study(tiny_fmnist, tmp_path / "local")) == 0
    finally:
        torch.set_num_threads(threads)

    check_tensorboard(tmp_path / "local")

    workdir = tmp_path / "ray"
    killed: dict[str, int] = {}

    def kill_a_training_worker() -> None:  # SIGKILL the process running the largest real model, mid-stage
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            for p in (workdir / "plan" / "nodes").glob("*.json"):
                try:
                    n = json.loads(p.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                if n["key"] == "train real D=2500" and n["state"] == "running" and time.time() - n["start"] > 1.0:
                    os.kill(n["pid"], signal.SIGKILL)
                    killed[n["key"]] = n["pid"]
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_training_worker, daemon=True)
    killer.start()
    import ray

    # a local instance that declares 2 GPUs (none is there): Ray assigns their ids and sets CUDA_VISIBLE_DEVICES
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        assert main(tiny_study(tiny_fmnist, workdir, "--executor", "ray")) == 0
        assert not ray.util.placement_group_table()  # none left behind
    finally:
        ray.shutdown()
    killer.join(timeout=1)
    assert killed, "the training worker was never seen running"

    for name in ("scaling.parquet", "scaling_per_class.parquet", "fits.parquet", "metrics.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local" / "results" / name),
                                      pd.read_parquet(workdir / "results" / name), check_exact=True)
    nodes = [json.loads(p.read_text()) for p in (workdir / "plan" / "nodes").glob("*.json")]
    assert len(nodes) == len(json.loads((workdir / "plan" / "plan.json").read_text())["nodes"]) == 14
    assert all(n["state"] == "done" for n in nodes)
    retried = next(n for n in nodes if n["key"] == "train real D=2500")
    assert retried["pid"] != killed["train real D=2500"]  # another worker redid the stage
    # every stage with a GPU ran in a process of its own that saw exactly the one id Ray assigned it
    plan = {n["key"]: n for n in json.loads((workdir / "plan" / "plan.json").read_text())["nodes"]}
    on_gpu = [n for n in nodes if plan[n["key"]]["needs"]["gpus"] > 0]
    assert len(on_gpu) >= 8 and all(n["gpus"] in ("0", "1") for n in on_gpu)
    assert len({n["pid"] for n in on_gpu}) == len(on_gpu)
    assert not {n["pid"] for n in on_gpu} & {n["pid"] for n in nodes if n not in on_gpu}
    at_once = [(a, b) for a in on_gpu for b in on_gpu if a is not b and a["start"] < b["start"] < a["end"]]
    assert all(a["gpus"] != b["gpus"] for a, b in at_once)
    trains = sorted((n["start"], n["end"]) for n in nodes if n["key"].startswith("train"))
    assert any(b[0] < a[1] for a, b in zip(trains, trains[1:])), trains  # two trainings at once
    assert not list((workdir / "stages" / "train").glob(".partial-*"))


def test_local_jobs_run_stages_at_once_in_worker_processes_with_the_same_results(tiny_fmnist, tmp_path):
    """--jobs 2 on 2 cores: two worker processes of one torch thread each, the same tables as one process of one
    thread, two trainings at once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(tiny_study(tiny_fmnist, tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)
    workdir = tmp_path / "two"
    with pytest.MonkeyPatch.context() as mp:  # a machine whose GPUs 3 and 5 are this process's
        mp.setenv("CUDA_VISIBLE_DEVICES", "3,5")
        assert main(tiny_study(tiny_fmnist, workdir, "--jobs", "2")) == 0
    if (os.cpu_count() or 1) != 2:
        pytest.skip("bit-equality needs 1 thread per worker: a machine of 2 cores")
    for name in ("scaling.parquet", "scaling_per_class.parquet", "fits.parquet", "metrics.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "results" / name),
                                      pd.read_parquet(workdir / "results" / name), check_exact=True)
    plan = json.loads((workdir / "plan" / "plan.json").read_text())
    assert plan["executor"] == "local (2 jobs)"
    nodes = [json.loads(p.read_text()) for p in (workdir / "plan" / "nodes").glob("*.json")]
    assert all(n["state"] == "done" for n in nodes) and len({n["pid"] for n in nodes}) == 2
    gpu_of = {}
    for n in nodes:  # each worker on its own GPU, all of its stages there
        assert gpu_of.setdefault(n["pid"], n["gpus"]) == n["gpus"]
    assert sorted(gpu_of.values()) == ["3", "5"]
    trains = sorted((n["start"], n["end"]) for n in nodes if n["key"].startswith("train"))
    assert any(b[0] < a[1] for a, b in zip(trains, trains[1:])), trains  # two trainings at once
    assert main(tiny_study(tiny_fmnist, workdir, "--jobs", "0")) == 2  # one clear error


def check_tensorboard(workdir: Path) -> None:
    """The study's TensorBoard events hold the results tables' numbers and each model's logged losses."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val = pd.read_parquet(workdir / "results" / "scaling.parquet").query("eval_set == 'val'")
    acc = EventAccumulator(str(workdir / "tensorboard" / "scaling" / "classification" / "real"))
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars("val/loss")]
    assert [s for s, _ in points] == val.scale.tolist()
    assert [v for _, v in points] == pytest.approx(val.loss.tolist(), rel=1e-6)
    for _, row in val.iterrows():
        meta = json.loads((workdir / "stages" / "train" / row.train_stage / "train.json").read_text())
        acc = EventAccumulator(str(workdir / "tensorboard" / "train" / "classification" / f"real D={row.scale}"))
        acc.Reload()
        assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(meta["loss_curve"], rel=1e-6)
        assert acc.Scalars("train/loss")[-1].step == meta["steps"]
        assert {"train/lr", "train/images_per_s"} <= set(acc.Tags()["scalars"])


def test_status_reads_the_journal(tiny_fmnist, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert main(["status", str(workdir)]) == 2  # no plan yet: one line, no traceback
    assert "no plan here" in capsys.readouterr().err
    # a study that fails at a stage (a captions file that captions none of the images: found when the pairs are
    # made): the journal says which, with the error
    captions = tmp_path / "captions.csv"
    captions.write_text("key,caption\nnot-a-sample,a shirt\n")
    bad = tiny_study(tiny_fmnist, workdir, "--set", "clip.scales=[2000]", "--set", f'clip.pairs.captioner="file:{captions}"',
                     "--set", "scales=[]",
                     "--set", "evaluate.shifts=[]")
    assert main(bad) == 2
    assert "captions.csv: no caption for" in capsys.readouterr().err
    assert main(["status", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "failed: real pairs" in out and "no caption for" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip().startswith(("shards", "pairs", "train"))}
    assert lines["shards"][1:6] == ["2", "0", "0", "0", "0"]  # done, running, pending, failed, stopped
    assert lines["pairs"][1:6] == ["0", "0", "0", "1", "0"]
    assert lines["train"][1:6] == ["0", "0", "3", "0", "0"]  # the real, synthetic and mixed CLIP models
    assert lines["train"][7].startswith("~")  # none done yet: the plan's own estimate


def _processes_of(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            out.append(int(p.name))
    return out


def _wait(cond, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_a_cancelled_or_killed_ray_task_takes_its_torchrun_ranks_with_it(fmnist_files, tmp_path):
    """A 2-process training (torchrun, gloo) in a Ray task: cancelled (Ctrl-C's KeyboardInterrupt in the task), and
    with its worker SIGKILLed (a lost process), no rank is left running (they held GPUs and wrote checkpoints)."""
    import dataclasses

    import ray

    from synscale.config import ScheduleConfig, TrainConfig
    from synscale.data.datasets import FASHION_MNIST_CLASSES, read_idx
    from synscale.data.shards import ShardWriter
    from synscale.labels import LabelSet
    from synscale.train.launch import make_spec, torchrun

    images = read_idx(fmnist_files / "train-images-idx3-ubyte.gz")[:100]
    labels = read_idx(fmnist_files / "train-labels-idx1-ubyte.gz")[:100]
    with ShardWriter(tmp_path / "set", LabelSet(FASHION_MNIST_CLASSES)) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            w.write(f"s{i:05d}", img, int(y))
    cfg = TrainConfig(batch_size=20, nproc=2, device="cpu", checkpoint_every=0, tensorboard=False,
                      schedule=ScheduleConfig(zero_scale=50, iters_per_doubling=100000, warmup_per_doubling=10))
    specs = []
    for name in ("cancelled", "killed"):
        (tmp_path / name).mkdir()
        specs.append(tmp_path / f"{name}.json")
        specs[-1].write_text(json.dumps(make_spec(dataclasses.asdict(cfg), [(str(tmp_path / "set"), None)], 10, 100,
                                                  tmp_path / name)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(max_calls=1)(torchrun)
        for spec, how in zip(specs, ("cancel", "kill"), strict=True):
            ref = task.options(num_cpus=1).remote(spec, 2)
            assert _wait(lambda: len(_processes_of(str(spec))) == 3, 120), "torchrun and its 2 ranks never ran"
            if how == "cancel":
                ray.cancel(ref)
            else:
                launcher = min(_processes_of(str(spec)))  # torchrun started first
                worker = int(Path(f"/proc/{launcher}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(worker, signal.SIGKILL)
            assert _wait(lambda: not _processes_of(str(spec)), 30), (how, _processes_of(str(spec)))
    finally:
        ray.shutdown()


def test_a_run_no_machine_can_hold_is_refused_before_anything_runs(tiny_fmnist, tmp_path, capsys):
    """train.nproc = 2 on a cluster whose machines have one GPU each would wait for its placement group forever."""
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        assert main(tiny_study(tiny_fmnist, tmp_path / "w", "--executor", "ray", "--set", "train.nproc=2")) == 2
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert "needs 2 GPU(s) and 2 CPU(s) on one machine (nproc = 2 processes of workers = 0 loader workers each)" in err
    assert "largest machine has 1 GPU(s) and 2 CPU(s)" in err and not (tmp_path / "w" / "stages").exists()
