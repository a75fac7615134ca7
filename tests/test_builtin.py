"""The built-in latent-diffusion family: trained by the CLI (a few steps here), saved as safetensors,
assembled around MiniLM into a real StableDiffusionPipeline, sampled through the generator protocol."""

import json

import numpy as np
import pytest

from synscale.cli import main


@pytest.fixture(scope="module")
def weights(tiny_fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("ld") / "weights"
    assert main(["generator", "train", "--out", str(out), "--data-root", str(tiny_fmnist), "--limit", "500",
                 "--vae-steps", "3", "--unet-steps", "3", "--batch-size", "16", "--per-strategy", "2", "-q"]) == 0
    return out


def test_training_writes_safetensors_and_config(weights):
    assert sorted(p.name for p in weights.iterdir()) == ["family.json", "unet.safetensors", "vae.safetensors"]
    info = json.loads((weights / "family.json").read_text())
    assert info["family"] == "latent-diffusion" and info["images"] == 500 and info["unet_steps"] == 3
    assert info["config"]["scaling_factor"] > 0 and info["config"]["scaling_factor"] != 1.0


def test_builtin_pipeline_through_the_generator_protocol(weights):
    from diffusers import StableDiffusionPipeline

    from synscale.generate.diffusers_backend import DiffusersGenerator

    gen = DiffusersGenerator(f"builtin:latent-diffusion@{weights}", steps=3, resolution=28, channels=1,
                             height=32, width=32)
    assert isinstance(gen.pipe, StableDiffusionPipeline)
    assert type(gen.pipe.text_encoder).__name__ == "BertModel"  # frozen MiniLM
    a = gen(["Sandal", "a photo of a Bag"], [1, 2], guidance_scale=2.0)
    assert a.shape == (2, 28, 28, 1) and a.dtype == np.uint8
    assert np.array_equal(a, gen(["Sandal", "a photo of a Bag"], [1, 2], guidance_scale=2.0))
    assert not np.array_equal(a, gen(["Sandal", "a photo of a Bag"], [1, 2], guidance_scale=5.0))


def test_missing_weights_say_how_to_train(tmp_path):
    from synscale.generate.builtin import load_latent_diffusion

    with pytest.raises(FileNotFoundError, match="synscale generator train --family latent-diffusion"):
        load_latent_diffusion(tmp_path)
