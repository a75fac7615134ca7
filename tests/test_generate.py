"""Generation with a real (tiny) diffusers pipeline loaded from disk: the protocol, the sharded
runner, and kill-and-resume byte identity."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synscale.cli import main
from synscale.data.shards import load_arrays, read_manifest
from tiny_pipelines import tiny_amused, tiny_deepfloyd_if, tiny_stable_diffusion


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "pipe")


def test_diffusers_backend_seeds_guidance_and_resize(sd_dir):
    from synscale.generate.diffusers_backend import DiffusersGenerator

    gen = DiffusersGenerator(str(sd_dir), steps=3, height=16, width=16, resolution=28, channels=1)
    assert gen.id.startswith("diffusers:StableDiffusionPipeline:")
    a = gen(["a Sandal", "a Bag", "a Coat"], [1, 2, 3], guidance_scale=2.0)
    assert a.shape == (3, 28, 28, 1) and a.dtype == np.uint8
    again = gen(["a Sandal", "a Bag", "a Coat"], [1, 2, 3], guidance_scale=2.0)
    assert np.array_equal(a, again)  # deterministic given seeds
    alone = gen(["a Bag"], [2], guidance_scale=2.0)
    assert np.abs(alone[0].astype(int) - a[1].astype(int)).max() <= 1  # image i regenerated alone
    assert not np.array_equal(gen(["a Bag"], [5], 2.0), alone)  # another seed, another image
    assert not np.array_equal(gen(["a Bag"], [2], 6.0), alone)  # guidance changes the image
    ddim = DiffusersGenerator(str(sd_dir), steps=3, scheduler="dpm-solver++", height=16, width=16)
    assert type(ddim.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert ddim(["x"], [0], 1.0).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="unknown scheduler"):
        DiffusersGenerator(str(sd_dir), scheduler="nope")


@pytest.mark.parametrize(
    "build,kind,kwargs",
    [
        (tiny_stable_diffusion, "StableDiffusionPipeline", {}),  # latent diffusion
        (tiny_deepfloyd_if, "IFPipeline", {"clean_caption": False}),  # pixel diffusion
        (tiny_amused, "AmusedPipeline", {}),  # masked tokens
    ],
)
def test_three_pipeline_families_built_saved_and_reloaded(build, kind, kwargs, tmp_path):
    from synscale.generate.diffusers_backend import DiffusersGenerator

    path = build(tmp_path / "pipe")
    assert (path / "model_index.json").exists()
    gen = DiffusersGenerator(str(path), steps=2, height=16, width=16, resolution=20, pipeline_kwargs=kwargs)
    assert gen.id == f"diffusers:{kind}:{path}"
    a = gen(["a photo of a Sandal", "a Bag"], [7, 8], guidance_scale=2.0)
    assert a.shape == (2, 20, 20, 3) and a.dtype == np.uint8 and a.std() > 0
    assert np.array_equal(a, gen(["a photo of a Sandal", "a Bag"], [7, 8], guidance_scale=2.0))
    alone = gen(["a Bag"], [8], guidance_scale=2.0)
    assert np.abs(alone[0].astype(int) - a[1].astype(int)).max() <= 1


def gen_args(sd_dir: Path, out: Path) -> list[str]:
    return ["generate", "--model", str(sd_dir), "--out", str(out), "--per-class", "6", "--steps", "2",
            "--image-size", "16", "--resolution", "28", "--channels", "1", "--batch-size", "4", "--shard-size", "12",
            "--guidance", "2.0", "--strategy", "word2sen", "-q"]


def test_generate_set_manifest_and_balance(capsys, sd_dir, tmp_path):
    out = tmp_path / "set"
    assert main(gen_args(sd_dir, out)) == 0
    m = read_manifest(out)
    assert len(m) == 60 and m.groupby("label").size().tolist() == [6] * 10
    assert set(m.columns) >= {"key", "label", "class_name", "prompt", "strategy", "seed", "generator",
                              "guidance_scale", "steps", "shard"}
    assert (m.guidance_scale == 2.0).all() and (m.steps == 2).all() and (m.strategy == "word2sen").all()
    assert json.loads((out / "generate.json").read_text())["size"] == 16  # --image-size, under the marker's old key
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shard-{i:05d}.tar" for i in range(5)]
    images, labels, keys = load_arrays(out)
    assert images.shape == (60, 1, 28, 28) and keys == m.key.tolist()
    row = m.iloc[0]
    assert row.class_name in row.prompt  # word2sen sentences contain the class name
    assert not list(out.glob(".*inprogress")) and not list(out.glob("*.rows.json"))
    assert main([*gen_args(sd_dir, out), "--seed", "9"]) == 2  # one line, no traceback
    assert "other settings" in capsys.readouterr().err


def test_ray_executor_equals_local_executor(sd_dir, tmp_path):
    """Two generator actors with half a CPU each on a local Ray instance write the same bytes."""
    import ray

    local, distributed = tmp_path / "local", tmp_path / "ray"
    common = ["--threads", "1"]
    assert main([*gen_args(sd_dir, local), *common]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        assert main([*gen_args(sd_dir, distributed), *common, "--executor", "ray", "--ray-actors", "2",
                     "--ray-cpus", "0.5"]) == 0
    finally:
        ray.shutdown()
    names = sorted(p.name for p in local.glob("*.tar"))
    assert len(names) == 5 and names == sorted(p.name for p in distributed.glob("*.tar"))
    for name in names:
        assert (local / name).read_bytes() == (distributed / name).read_bytes(), name
    pd.testing.assert_frame_equal(read_manifest(local), read_manifest(distributed))


def test_thread_limit_is_restored(sd_dir, tmp_path):
    import torch

    before = torch.get_num_threads()
    assert main([*gen_args(sd_dir, tmp_path / "t"), "--threads", "1"]) == 0
    assert torch.get_num_threads() == before


def test_generate_from_a_prompt_file_with_in_captions(sd_dir, tiny_fmnist, tmp_path):
    prompts = tmp_path / "p.parquet"
    assert main(["prompts", "--strategy", "in-captions", "--per-class", "2", "--data-root", str(tiny_fmnist),
                 "--out", str(prompts)]) == 0
    out = tmp_path / "set"
    assert main(["generate", "--model", str(sd_dir), "--prompts", str(prompts), "--out", str(out), "--steps", "1",
                 "--image-size", "16", "--batch-size", "5", "--shard-size", "10", "-q"]) == 0
    m = read_manifest(out)
    assert len(m) == 20 and (m.strategy == "in-captions").all()
    assert m.prompt.str.endswith("item on a black background").all()
    assert m.prompt.tolist() == pd.read_parquet(prompts).prompt.tolist()


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])  # compiling: ~80 s cold
def test_tuned_path_compiled_channels_last_padded(sd_dir, compiled):
    """Channels-last memory and (slow) torch.compile of the UNet and the VAE decoder with every call padded to
    the batch: the same images as the plain path within the documented tolerance (1/255), and a short call
    (the last batch of a shard, padded with copies of its last prompt) gives the images the full batch gives."""
    from synscale.generate.diffusers_backend import DiffusersGenerator

    kw = {"steps": 2, "height": 16, "width": 16}
    tuned = DiffusersGenerator(str(sd_dir), compile=compiled, channels_last=True, batch_size=4, **kw)
    assert tuned.tuned == (["unet: channels-last", "unet: compiled", "vae: channels-last", "vae.decode: compiled"]
                           if compiled else ["unet: channels-last", "vae: channels-last"])
    plain = DiffusersGenerator(str(sd_dir), compile="auto", channels_last="auto", **kw)
    assert plain.tuned == [] and plain.dtype == "float32"  # "auto" on a CPU: the plain path
    prompts, seeds = ["a Sandal", "a Bag", "a Coat", "a Shirt"], [1, 2, 3, 4]
    full = tuned(prompts, seeds, 2.0)
    assert full.shape == (4, 16, 16, 3)
    assert np.abs(full.astype(int) - plain(prompts, seeds, 2.0).astype(int)).max() <= 1
    short = tuned(prompts[:3], seeds[:3], 2.0)  # padded to 4 when compiled
    assert short.shape == (3, 16, 16, 3) and np.abs(short.astype(int) - full[:3].astype(int)).max() <= 1
    alone = tuned(prompts[1:2], seeds[1:2], 2.0)
    assert np.abs(alone[0].astype(int) - full[1].astype(int)).max() <= 1


@pytest.mark.parametrize("compiled", ["off", pytest.param("on", marks=pytest.mark.slow)])
def test_tuned_set_resumes_byte_identical(sd_dir, tmp_path, compiled):
    """A set made on the tuned path (channels-last, PNGs written on the writer thread while the next batch
    samples; slow: compiled, last batches padded) and the same set resumed from what a run killed after its
    first shard leaves: byte for byte equal."""
    import shutil

    tuned = ["--compile", compiled, "--channels-last", "on", "--batch-size", "4", "--shard-size", "6"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main([*gen_args(sd_dir, whole), *tuned, "--per-class", "2"]) == 0
    resumed.mkdir()
    for name in ("generate.json", "shard-00000.tar"):
        shutil.copy(whole / name, resumed / name)
    first = read_manifest(whole).query("shard == 'shard-00000.tar'").to_json(orient="records")
    (resumed / "shard-00000.rows.json").write_text(first)
    kept = (resumed / "shard-00000.tar").stat().st_ino
    assert main([*gen_args(sd_dir, resumed), *tuned, "--per-class", "2"]) == 0
    names = sorted(p.name for p in whole.glob("*.tar"))
    assert names == [f"shard-{i:05d}.tar" for i in range(4)]  # 20 images: 6 + 6 + 6 + 2 (last batches padded)
    assert (resumed / "shard-00000.tar").stat().st_ino == kept  # resumed: the finished shard was kept
    for name in names:
        assert (whole / name).read_bytes() == (resumed / name).read_bytes(), name
    pd.testing.assert_frame_equal(read_manifest(whole), read_manifest(resumed))


def test_loading_a_pipeline_is_quiet(sd_dir, capfd):
    """A pipeline directory loads under the current argument names, through accelerate's low-memory path,
    without the libraries' progress bars or notices (nothing a user has to act on)."""
    import warnings

    import torch
    from diffusers.utils import is_accelerate_available

    from synscale.generate.diffusers_backend import load_pipeline

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_pipeline(str(sd_dir), torch.float32)
    out, err = capfd.readouterr()
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
    assert out == "" and err == "", (out, err)
    assert is_accelerate_available() and type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.dtype == torch.float32 and not any(p.is_meta for p in pipe.unet.parameters())
    from diffusers.utils import logging as df_logging

    assert df_logging.is_progress_bar_enabled()  # the libraries' settings are restored after the load
