"""The paper's text-to-image architectures with random weights, built offline from their published configs
and saved as diffusers pipeline directories, for speed benchmarks (benchmarks/pipeline_speed.py).

- `sd15`: Stable Diffusion 1.5 — UNet2DConditionModel (320/640/1280/1280, 2 layers per block, cross-attention
  768, 8 heads), AutoencoderKL (128/256/512/512, 4 latent channels), CLIP ViT-L/14 text encoder (12 layers,
  768 wide, 77 tokens), PNDM scheduler (scaled-linear betas 0.00085-0.012): 860M + 84M + 123M parameters.
- `amused`: aMUSEd-256 — UVit2DModel (diffusers' defaults: 1024 wide, 22 layers, codebook 8192, aMUSEd's
  scale; at 64 px on a CPU the same layers on 4 x 4 tokens), VQModel (128/256/256/512/768, 64 latent channels, 8192 codes, f = 16), CLIP ViT-L/14 text encoder
  with projection, AmusedScheduler.
- `if`: DeepFloyd IF stage I at the IF-I-M scale as diffusers builds it (64 px pixels; a UNet of
  192/384/576/768 channels with cross-attention on T5 tokens). The text encoder is a small T5 (6 layers,
  512 wide) instead of T5-XXL (4.7B parameters, 19 GB in float32: beyond this machine's memory); synscale
  encodes each distinct prompt once, so the text encoder is outside the per-image cost that is measured.

The tokenizer is a byte-level CLIP tokenizer (tests/tiny_pipelines.py): every text tokenizes without
CLIP's vocabulary files; the embedding tables keep their published sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}


def _tokenizer(out: Path):
    from tiny_pipelines import tiny_clip_tokenizer

    return tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))


def sd15(out: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _tokenizer(out)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        latent_channels=4, sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L, bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                                        pad_token_id=len(tok) - 1))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def amused(out: Path, tokens: int = 16) -> Path:
    """aMUSEd-256 (16 x 16 tokens); `tokens` 4 gives the same layers at 64 px (the CPU benchmark's size)."""
    import torch
    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok = _tokenizer(out)
    torch.manual_seed(0)
    transformer = UVit2DModel(sample_size=tokens)  # diffusers' defaults: aMUSEd's transformer
    vq = VQModel(in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512, 768), layers_per_block=2,
                 down_block_types=("DownEncoderBlock2D",) * 5, up_block_types=("UpDecoderBlock2D",) * 5,
                 latent_channels=64, num_vq_embeddings=8192, lookup_from_codebook=True, force_upcast=True,
                 mid_block_add_attention=False, sample_size=16 * tokens)
    text = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L, bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                                                      pad_token_id=len(tok) - 1))
    pipe = AmusedPipeline(vqvae=vq, tokenizer=tok, text_encoder=text, transformer=transformer,
                          scheduler=AmusedScheduler(mask_token_id=8255))
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def deepfloyd_if(out: Path) -> Path:
    import torch
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    tok = _tokenizer(out)
    torch.manual_seed(0)
    text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                                   pad_token_id=len(tok) - 1))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=3, out_channels=6, block_out_channels=(192, 384, 576, 768), layers_per_block=3,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                          "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=512, attention_head_dim=64,
        encoder_hid_dim=512, addition_embed_type="text", addition_embed_type_num_heads=64,
        resnet_time_scale_shift="scale_shift", class_embed_type=None, act_fn="gelu", only_cross_attention=False)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="learned_range", thresholding=True,
                          dynamic_thresholding_ratio=0.95, sample_max_value=1.5, clip_sample=True)
    pipe = IFPipeline(tokenizer=tok, text_encoder=text, unet=unet, scheduler=sched, safety_checker=None,
                      feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


BUILDERS = {"sd15": sd15, "amused": amused, "if": deepfloyd_if}


def pipeline_dir(arch: str, root: str | Path, size: int) -> Path:
    """The architecture's pipeline directory under `root`, built once. aMUSEd samples at its transformer's
    size: 256 px, or 64 px (4 x 4 tokens) when `size` is 64."""
    small = arch == "amused" and size == 64
    out = Path(root) / (arch + ("-64" if small else ""))
    if not (out / "model_index.json").exists():
        BUILDERS[arch](out, tokens=4) if small else BUILDERS[arch](out)
    return out
