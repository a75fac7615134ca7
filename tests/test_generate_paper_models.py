"""The paper's text-to-image models as a GPU run would load them, with tiny configs of every component a real
pipeline carries: safety checkers (training data is generated without them unless a study keeps them; then a
flagged image is generated again, never written black under its label), DeepFloyd IF's cascade (stage I, the
stage II super-resolution pipeline that takes stage I's embeddings, Stable Diffusion's x4 upscaler as stage III)
and Muse's guidance convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synscale.cli import main
from synscale.data.shards import load_arrays, read_manifest
from tiny_pipelines import (calibrate_if_checker, if_checker_scores, tiny_deepfloyd_if, tiny_if_superresolution,
                            tiny_sd_upscaler, tiny_stable_diffusion)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper-models")
    return {"sd-flags-all": tiny_stable_diffusion(root / "sd", safety="all"), "if": tiny_deepfloyd_if(root / "if"),
            "if-ii": tiny_if_superresolution(root / "if-ii"), "x4": tiny_sd_upscaler(root / "x4")}


def generate(model: Path, out: Path, *extra: str, per_class: int = 2) -> list[str]:
    return ["generate", "--model", str(model), "--out", str(out), "--per-class", str(per_class), "--steps", "2",
            "--batch-size", "4", "--shard-size", "8", "--guidance", "2", "-q", *extra]


# ---------------------------------------------------------------------------------------------------
# Safety checkers


def test_a_pipeline_is_loaded_without_its_safety_checker_by_default(models, tmp_path, capsys):
    """The checker flags every image: generated as training data by default, none of them is black; a study
    that keeps the checker gets one line once a prompt's every seed is flagged."""
    import torch
    from diffusers import StableDiffusionPipeline

    from synscale.generate.diffusers_backend import DiffusersGenerator

    sd = models["sd-flags-all"]
    as_shipped = StableDiffusionPipeline.from_pretrained(sd)
    images = as_shipped(["a Bag", "a Coat"], num_inference_steps=2, output_type="np",
                        generator=[torch.Generator().manual_seed(s) for s in (1, 2)])
    assert images.nsfw_content_detected == [True, True] and images.images.max() == 0  # what a GPU run got
    gen = DiffusersGenerator(str(sd), steps=2)
    assert gen.pipe.safety_checker is None and not gen._checkers
    assert main(generate(sd, tmp_path / "set")) == 0
    arrays, _, _ = load_arrays(tmp_path / "set")
    assert all(img.max() > 0 for img in arrays)  # not one black image
    assert "safety_regenerated" not in read_manifest(tmp_path / "set")
    assert main(generate(sd, tmp_path / "kept", "--safety-checker")) == 2
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("synscale: error:")]
    assert len(line) == 1 and "Traceback" not in err and "the safety checker flagged all 10 images of prompt" in line[0]
    assert "safety_checker = false" in err


def test_a_kept_safety_checker_regenerates_what_it_flags_and_counts_it(models, tmp_path):
    """IF's checker set to flag the top quarter of a set's images: with the checker kept, those samples are
    generated again with their next seeds (written, never black, under their labels), the others are the same
    images as without it, and each sample records its seed and how often it was regenerated."""
    from synscale.generate.safety import safety_seed

    checked = tiny_deepfloyd_if(tmp_path / "if-checked", safety=True)
    plain = tmp_path / "plain"
    assert main(generate(checked, plain, "--per-class", "3", "--resolution", "0")) == 0
    images, _, keys = load_arrays(plain)
    margin = calibrate_if_checker(checked, images.transpose(0, 2, 3, 1), flag_fraction=0.25)
    assert margin > 1e-4
    kept = tmp_path / "kept"
    assert main(generate(checked, kept, "--per-class", "3", "--resolution", "0", "--safety-checker")) == 0
    m = read_manifest(kept).set_index("key")
    p = read_manifest(plain).set_index("key")
    again, twice = np.asarray(m.loc[keys, "safety_regenerated"]), np.asarray(if_checker_scores(checked, images.transpose(0, 2, 3, 1)))
    flagged = twice > 0.5
    assert flagged.sum() == round(0.25 * len(keys)) and ((again > 0) == flagged).all()
    for key, n in zip(keys, again, strict=True):
        assert m.loc[key, "seed"] == safety_seed(int(p.loc[key, "seed"]), int(n))
    new, _, _ = load_arrays(kept, keys)
    assert np.array_equal(new[~flagged], images[~flagged]) and all(not np.array_equal(a, b) for a, b in
                                                                    zip(new[flagged], images[flagged], strict=True))
    assert (np.asarray(if_checker_scores(checked, new.transpose(0, 2, 3, 1))) <= 0.5).all()  # what is written passes
    assert all(img.max() > 0 for img in new) and (m.loc[keys, "label"].to_numpy() == p.loc[keys, "label"].to_numpy()).all()
    # the count reaches the results and the report
    from synscale.config import SyntheticConfig
    from synscale.report.html import _generation_section
    from synscale.results import collect_generation
    from synscale.stage import StageResult

    syn = SyntheticConfig(name="if-kept", model=str(checked), safety_checker=True)
    collect_generation([(syn, StageResult("generate", "x", kept, False))], tmp_path / "results")
    row = pd.read_parquet(tmp_path / "results" / "generation.parquet").iloc[0]
    assert row.safety_checker and row.safety_regenerated == again.sum() > 0
    html = _generation_section(pd.read_parquet(tmp_path / "results" / "generation.parquet"))
    assert f"{again.sum()} flagged image(s) were generated again" in html and "safety_regenerated" in html


def test_whether_a_checker_ran_is_part_of_a_sets_identity_only_for_models_that_have_one(models):
    from synscale.config import SyntheticConfig
    from synscale.generate.safety import has_checker
    from synscale.generate.stages import identity

    assert has_checker(str(models["sd-flags-all"])) is True and has_checker(str(models["if"])) is False
    assert has_checker("builtin:latent-diffusion") is False
    sd = SyntheticConfig(name="x", model=str(models["sd-flags-all"]))
    assert identity(sd)["safety_checker"] is False
    assert identity(SyntheticConfig(name="x", model=str(models["sd-flags-all"]), safety_checker=True))["safety_checker"]
    assert "safety_checker" not in identity(SyntheticConfig(name="x", model=str(models["if"])))
    assert set(identity(SyntheticConfig(name="x", model="builtin:latent-diffusion"))) == set(
        identity(SyntheticConfig(name="x", model="builtin:latent-diffusion", upscale=[]))) and not {
        "safety_checker", "upscale", "guidance_convention"} & set(identity(SyntheticConfig(name="x", model="builtin:pixel-diffusion")))


# ---------------------------------------------------------------------------------------------------
# IF's cascade


def test_the_if_cascade_runs_stage_ii_on_stage_one_as_deepfloyd_does(models):
    """Stage II takes stage I's images and T5 embeddings and each image's generator where stage I left it: the images
    of diffusers' own two-call recipe, 32 px (stage I's 16 x 2); each image its prompt's and seed's alone."""
    import torch
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    from synscale.generate.diffusers_backend import DiffusersGenerator

    prompts, seeds = ["a Bag", "a photo of a Coat", "a Sandal"], [4, 5, 6]
    gen = DiffusersGenerator(str(models["if"]), steps=2, pipeline_kwargs={"clean_caption": False},
                             upscale=[{"model": str(models["if-ii"]), "steps": 3, "guidance": 3.0}])
    ours = gen(prompts, seeds, 2.0)
    assert ours.shape == (3, 32, 32, 3) and gen.id.endswith(f" + IFSuperResolutionPipeline:{models['if-ii']}")
    one = IFPipeline.from_pretrained(models["if"], safety_checker=None)
    two = IFSuperResolutionPipeline.from_pretrained(models["if-ii"], text_encoder=None)
    embeds = [one.encode_prompt([p], do_classifier_free_guidance=True, clean_caption=False) for p in prompts]
    pe, ne = torch.cat([e[0] for e in embeds]), torch.cat([e[1] for e in embeds])
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    low = one(prompt_embeds=pe, negative_prompt_embeds=ne, generator=gens, num_inference_steps=2, guidance_scale=2.0,
              output_type="pt").images
    high = two(image=low, prompt_embeds=pe, negative_prompt_embeds=ne, generator=gens, num_inference_steps=3,
               guidance_scale=3.0, output_type="np").images
    assert np.abs(np.round(high * 255).astype(int) - ours.astype(int)).max() <= 1
    alone = gen(prompts[1:2], seeds[1:2], 2.0)
    assert np.abs(alone[0].astype(int) - ours[1].astype(int)).max() <= 1
    unguided = DiffusersGenerator(str(models["if"]), steps=2, pipeline_kwargs={"clean_caption": False},
                                  upscale=[{"model": str(models["if-ii"]), "steps": 3, "guidance": 1.0}])
    assert not np.array_equal(unguided(prompts, seeds, 2.0), ours)  # stage II's own guidance counts


def test_stage_iii_and_a_cascade_study_set(models, tmp_path):
    """IF stage I -> II -> Stable Diffusion's x4 upscaler: 128-px images; `synscale generate --upscale` and a study's
    [[synthetic.upscale]] write sets of the cascade, whose id is not stage I's."""
    from synscale.config import SyntheticConfig, UpscaleConfig
    from synscale.generate.diffusers_backend import DiffusersGenerator
    from synscale.generate.stages import identity

    gen = DiffusersGenerator(str(models["if"]), steps=2, pipeline_kwargs={"clean_caption": False},
                             upscale=[{"model": str(models["if-ii"]), "steps": 2}, {"model": str(models["x4"]), "steps": 2}])
    assert gen(["a Bag"], [1], 2.0).shape == (1, 128, 128, 3)
    assert main(generate(models["if"], tmp_path / "set", "--upscale", f"{models['if-ii']},steps=2,guidance=4",
                         "--resolution", "0")) == 0
    images, _, _ = load_arrays(tmp_path / "set")
    assert images.shape == (20, 3, 32, 32)
    m = read_manifest(tmp_path / "set")
    assert m.generator.iloc[0].endswith(f"+ IFSuperResolutionPipeline:{models['if-ii']}")
    base = SyntheticConfig(name="x", model=str(models["if"]))
    up = SyntheticConfig(name="x", model=str(models["if"]), upscale=[UpscaleConfig(str(models["if-ii"]), steps=2)])
    assert identity(up)["upscale"] == [{"model": str(models["if-ii"]), "guidance": None, "steps": 2, "noise_level": None}]
    assert "upscale" not in identity(base)


# ---------------------------------------------------------------------------------------------------
# Guidance conventions


def test_muse_guidance_is_stated_in_its_own_convention(models, tmp_path, capsys):
    """The paper's Muse guidance t (0.1-1) is diffusers' 1 + t: with guidance_convention = "muse", 0.3 samples what
    diffusers' 1.3 does; without it, a guidance below 1 (no effect: every pipeline guides only above 1) is refused
    before anything runs."""
    from synscale.config import load_study
    from synscale.generate.diffusers_backend import DiffusersGenerator
    from synscale.schema import ConfigError

    if_dir = str(models["if"])
    muse = DiffusersGenerator(if_dir, steps=2, guidance_convention="muse", pipeline_kwargs={"clean_caption": False})
    plain = DiffusersGenerator(if_dir, steps=2, pipeline_kwargs={"clean_caption": False})
    assert np.array_equal(muse(["a Bag"], [3], 0.3), plain(["a Bag"], [3], 1.3))
    assert not np.array_equal(muse(["a Bag"], [3], 0.3), muse(["a Bag"], [3], 0.1))
    with pytest.raises(ConfigError, match="guidance 0.3 has no effect in diffusers' convention"):
        load_study("studies/fashion-mnist.toml", overrides=["curves=[]", "mix=[]", "retrieved=[]", "adaptive=[]", "grid=[]",
                                                             'synthetic=[{name="m", model="builtin:masked-token", guidance=0.3}]'])
    assert main(generate(models["if"], tmp_path / "s", "--guidance", "0.5")) == 2
    assert "guidance 0.5 has no effect" in capsys.readouterr().err
    assert main(generate(models["if"], tmp_path / "m", "--guidance", "0.5", "--guidance-convention", "muse")) == 0
    assert (read_manifest(tmp_path / "m").guidance_convention == "muse").all()


def test_the_paper_grid_states_muse_guidance_in_its_convention_and_runs_if_stage_ii():
    from synscale.config import effective_guidance, find_study, load_study

    cfg = load_study(find_study("imagenet-sd"))
    muse = [c for c in cfg.synthetic if c.name.startswith("muse-")]
    assert [c.guidance for c in muse] == [0.1, 0.3, 0.5, 1.0] and {c.guidance_convention for c in muse} == {"muse"}
    assert len({effective_guidance(c.guidance, c.guidance_convention) for c in muse}) == 4  # four sets, not one
    imagen = [c for c in cfg.synthetic if c.name.startswith("imagen-")]
    assert len(imagen) == 3 and all(len(c.upscale) == 1 and c.upscale[0].model == cfg.models["imagen_ii"] for c in imagen)
    assert all(not c.upscale for c in cfg.synthetic if not c.name.startswith("imagen-"))


def test_prompt_embeddings_are_kept_within_a_byte_budget(models):
    """Mostly distinct prompts (in-captions) fill the embedding cache: it keeps at most embed_cache_bytes (was 65,536
    entries: 7.7 GB of Stable Diffusion's, 41 GB of IF's on the GPU), and the images are the same."""
    from synscale.generate.diffusers_backend import DiffusersGenerator

    prompts = [f"a Bag, item number {i}" for i in range(12)]
    small = DiffusersGenerator(str(models["if"]), steps=2, embed_cache_bytes=3 * 77 * 32 * 4,
                               pipeline_kwargs={"clean_caption": False})
    large = DiffusersGenerator(str(models["if"]), steps=2, pipeline_kwargs={"clean_caption": False})
    a, b = small(prompts, list(range(12)), 2.0), large(prompts, list(range(12)), 2.0)
    assert np.array_equal(a, b)
    assert len(small._embeds) == 3 and small._embeds.total <= 3 * 77 * 32 * 4 and len(large._embeds) == 12
