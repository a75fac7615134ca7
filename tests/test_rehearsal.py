"""The rehearsal of paper scale (benchmarks/rehearse_paper_scale.py) at its real counts: 1,000 classes, a real
training split in 1,500 shards, the grid's three families as it names them on a Ray instance with declared GPUs,
and 2,000,000 captions through the CLIP loader for two epochs under an open-file limit below their 2,000 shards.
About 30 minutes on 2 cores: `pytest -m slow tests/test_rehearsal.py`."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_paper_scale_rehearsal(tmp_path):
    from rehearse_paper_scale import main

    out = main(["all", "--workdir", str(tmp_path), "--json", str(tmp_path / "figures.json")])
    grid, captions = out["grid"], out["captions"]
    assert grid["classes"] == 1000 and grid["real_train_shards"] == 1500 and grid["per_class_rows"] == 1000
    assert grid["gpu_stages"] >= 20 and grid["gpu_stage_processes"] == grid["gpu_stages"]  # no process served two
    assert grid["gpu_ids"] == ["0", "1"]
    assert grid["safety_regenerated"]["sd-classname-cfg2"] > 0  # flagged images generated again, none written black
    assert "+ IFSuperResolutionPipeline:" in grid["generators"]["imagen-incaptions-cfg1.5"]
    assert grid["guidance_convention"]["muse-incaptions-cfg0.3"] == "muse" and grid["caption_pools"] == 2
    train = captions["train"]
    assert captions["captions"] == 2_000_000 and captions["shards"] == 2000 > train["open_file_limit"]
    assert train["processes"] == 2 and train["steps"] == math.ceil(2 * 2_000_000 / 4096)
    # the index is memory-mapped, not held per process: a rank's loader at 2M captions holds ~0.35 GB of its own
    # (the interpreter, torch, the token cache); the pandas index and Python captions it replaces took 0.58 GB a million
    assert captions["at"]["full"]["loader"]["anonymous_mb"] < 600
