"""Real diffusers pipelines with tiny configs and random weights, built offline for tests.

The CLIP tokenizer gets a byte-level vocabulary (256 byte symbols, their word-final forms, and the two
special tokens) with no merges: every text tokenizes, without downloading CLIP's vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path


def tiny_clip_tokenizer(out: Path):
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return CLIPTokenizer.from_pretrained(out)  # not CLIPTokenizer(vocab_file=...): transformers 5 ignores those


def tiny_stable_diffusion(out: Path) -> Path:
    """A latent-diffusion pipeline (VAE + text-conditioned UNet), 16 px, saved to `out`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    torch.manual_seed(0)
    n = len(tok)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=n, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77, bos_token_id=n - 2,
                                        eos_token_id=n - 1, pad_token_id=n - 1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, sample_size=16, norm_num_groups=8)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def tiny_deepfloyd_if(out: Path) -> Path:
    """A pixel-diffusion pipeline (IF stage I: text-conditioned UNet on 16 px pixels), saved to `out`."""
    import torch
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    torch.manual_seed(0)
    text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   pad_token_id=len(tok) - 1))
    unet = UNet2DConditionModel(sample_size=16, in_channels=3, out_channels=6, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
                                mid_block_type="UNetMidBlock2DSimpleCrossAttn",
                                up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
                                cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=8, norm_num_groups=8,
                                addition_embed_type="text", addition_embed_type_num_heads=2, resnet_time_scale_shift="scale_shift",
                                act_fn="gelu")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                          thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon")
    pipe = IFPipeline(tokenizer=tok, text_encoder=text, unet=unet, scheduler=sched, safety_checker=None,
                      feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def tiny_amused(out: Path) -> Path:
    """A masked-token pipeline (VQ tokenizer + UViT transformer, aMUSEd/Muse-style), saved to `out`."""
    import torch
    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    torch.manual_seed(0)
    n = len(tok)
    transformer = UVit2DModel(hidden_size=8, use_bias=False, hidden_dropout=0.0, cond_embed_dim=8, micro_cond_encode_dim=2,
                              micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=32, codebook_size=8,
                              in_channels=8, block_out_channels=8, num_res_blocks=1, downsample=True, upsample=True,
                              block_num_heads=1, num_hidden_layers=1, num_attention_heads=1, attention_dropout=0.0,
                              intermediate_size=8, layer_norm_eps=1e-06, ln_elementwise_affine=True)
    vqvae = VQModel(act_fn="silu", block_out_channels=[8], down_block_types=["DownEncoderBlock2D"], in_channels=3,
                    latent_channels=8, layers_per_block=1, norm_num_groups=8, num_vq_embeddings=8, out_channels=3,
                    sample_size=8, up_block_types=["UpDecoderBlock2D"], mid_block_add_attention=False,
                    lookup_from_codebook=True)
    text = CLIPTextModelWithProjection(CLIPTextConfig(bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
                                                      hidden_size=8, intermediate_size=37, num_attention_heads=4,
                                                      num_hidden_layers=2, vocab_size=n, projection_dim=8))
    pipe = AmusedPipeline(vqvae=vqvae, tokenizer=tok, text_encoder=text, transformer=transformer,
                          scheduler=AmusedScheduler(mask_token_id=31))
    pipe.save_pretrained(out)
    return out


def tiny_t5(out: Path) -> Path:
    """A seq2seq language model (T5 architecture, random weights) with its tokenizer, saved to `out`."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    n = len(tok)
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=n, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                                        pad_token_id=n - 1, eos_token_id=n - 1, decoder_start_token_id=n - 2)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_image_captioner(out: Path) -> Path:
    """An image-to-text model (ViT encoder + GPT-2 decoder) with image processor and tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTImageProcessor, ViTModel, VisionEncoderDecoderModel

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    n = len(tok)
    torch.manual_seed(0)
    enc = ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32))
    dec = GPT2LMHeadModel(GPT2Config(vocab_size=n, n_embd=16, n_layer=1, n_head=2, add_cross_attention=True,
                                     bos_token_id=n - 2, eos_token_id=n - 1))
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.pad_token_id = n - 2, n - 1
    model.save_pretrained(out)
    tok.save_pretrained(out)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(out)
    return out
