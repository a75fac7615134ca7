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


def tiny_clip_vision_config(**kw):
    from transformers import CLIPConfig

    return CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 37, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "vocab_size": 99},
                      vision_config={"hidden_size": 16, "intermediate_size": 37, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 16},
                      projection_dim=16, **kw)


def tiny_feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def tiny_sd_safety_checker(flag_all: bool):
    """Stable Diffusion's checker (a CLIP vision tower scored against 17 concept and 3 special-care embeddings) with
    random weights; `flag_all`: every concept's threshold below any cosine, so every image is flagged."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(tiny_clip_vision_config())
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(-10.0 if flag_all else 10.0)
        checker.special_care_embeds_weights.fill_(10.0)
    return checker


def tiny_stable_diffusion(out: Path, safety: str | None = None) -> Path:
    """A latent-diffusion pipeline (VAE + text-conditioned UNet), 16 px, saved to `out`; `safety = "all"`: with a
    safety checker (and its feature extractor) that flags every image."""
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
    checker = tiny_sd_safety_checker(flag_all=True) if safety == "all" else None
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=checker, feature_extractor=tiny_feature_extractor() if checker else None,
                                   requires_safety_checker=checker is not None)
    pipe.save_pretrained(out)
    return out


def tiny_if_safety_checker(bias: float = 0.0):
    """DeepFloyd IF's checker (a CLIP vision tower with an NSFW and a watermark head, each > 0.5 flags) with random
    weights; `bias` moves the NSFW head's score (tests calibrate it on their images: calibrate_if_checker)."""
    import torch
    from diffusers.pipelines.deepfloyd_if.safety_checker import IFSafetyChecker

    torch.manual_seed(0)
    checker = IFSafetyChecker(tiny_clip_vision_config())
    with torch.no_grad():
        checker.p_head.bias.fill_(bias)
        checker.w_head.bias.fill_(-100.0)  # no watermarks
    return checker


def _load_if_checker(pipe_dir: Path):
    """IF's checker as saved (IFSafetyChecker.from_pretrained fails under transformers 5: it never calls post_init)."""
    from diffusers.pipelines.deepfloyd_if.safety_checker import IFSafetyChecker
    from safetensors.torch import load_file
    from transformers import CLIPConfig

    checker = IFSafetyChecker(CLIPConfig.from_pretrained(pipe_dir / "safety_checker"))
    checker.load_state_dict(load_file(str(pipe_dir / "safety_checker" / "model.safetensors")))
    return checker.eval()


def if_checker_scores(pipe_dir: Path, images) -> list[float]:
    """The NSFW head's score of uint8 images (N, H, W, 3) under the IF pipeline's saved checker."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor

    checker = _load_if_checker(pipe_dir)
    fe = CLIPImageProcessor.from_pretrained(pipe_dir / "feature_extractor")
    pixels = fe([Image.fromarray(np.asarray(im)) for im in images], return_tensors="pt").pixel_values
    with torch.no_grad():
        return checker.p_head(checker.vision_model(pixels)[0]).flatten().tolist()


def calibrate_if_checker(pipe_dir: Path, images, flag_fraction: float) -> float:
    """Set the IF pipeline's checker so that it flags the `flag_fraction` of `images` with the highest scores (its
    threshold halfway between two scores, away from either); returns the margin to the nearest score."""
    import numpy as np
    from safetensors.torch import save_file

    scores = np.sort(if_checker_scores(pipe_dir, images))
    k = len(scores) - max(1, round(flag_fraction * len(scores)))
    cut = (scores[k - 1] + scores[k]) / 2
    checker = _load_if_checker(pipe_dir)
    checker.p_head.bias.data += 0.5 - cut
    save_file(checker.state_dict(), str(pipe_dir / "safety_checker" / "model.safetensors"))
    return float((scores[k] - scores[k - 1]) / 2)


def tiny_deepfloyd_if(out: Path, safety: bool = False) -> Path:
    """A pixel-diffusion pipeline (IF stage I: text-conditioned UNet on 16 px pixels), saved to `out`; `safety`: with
    IF's safety checker, its feature extractor and watermarker (the checker uncalibrated: calibrate_if_checker)."""
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
    from diffusers.pipelines.deepfloyd_if.watermark import IFWatermarker

    pipe = IFPipeline(tokenizer=tok, text_encoder=text, unet=unet, scheduler=sched,
                      safety_checker=tiny_if_safety_checker() if safety else None,
                      feature_extractor=tiny_feature_extractor() if safety else None,
                      watermarker=IFWatermarker() if safety else None, requires_safety_checker=safety)
    pipe.save_pretrained(out)
    return out


def tiny_if_superresolution(out: Path) -> Path:
    """IF's stage II (IFSuperResolutionPipeline): a UNet on the noised, upscaled stage-I image and its own sample,
    conditioned on the noise level and on stage I's T5 embeddings (32-d, as tiny_deepfloyd_if's), 32 px; saved
    without a text encoder, as DeepFloyd runs it after stage I."""
    import torch
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline, UNet2DConditionModel

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=6, out_channels=6, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
                                mid_block_type="UNetMidBlock2DSimpleCrossAttn",
                                up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
                                cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=8, norm_num_groups=8,
                                addition_embed_type="text", addition_embed_type_num_heads=2,
                                resnet_time_scale_shift="scale_shift", act_fn="gelu", class_embed_type="timestep")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                          thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon")
    noising = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    pipe = IFSuperResolutionPipeline(tokenizer=tok, text_encoder=None, unet=unet, scheduler=sched,
                                     image_noising_scheduler=noising, safety_checker=None, feature_extractor=None,
                                     watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def tiny_sd_upscaler(out: Path) -> Path:
    """Stable Diffusion's x4 upscaler (IF's stage III): a UNet on VAE latents beside the low-resolution image,
    conditioned on its noise level and on its own CLIP text encoder; 4x the input's size."""
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_clip_tokenizer(out.parent / (out.name + "-tokenizer"))
    torch.manual_seed(0)
    n = len(tok)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=n, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, max_position_embeddings=77, bos_token_id=n - 2,
                                        eos_token_id=n - 1, pad_token_id=n - 1))
    unet = UNet2DConditionModel(sample_size=32, in_channels=7, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8, num_class_embeds=400)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, norm_num_groups=8)
    pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                          low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"),
                                          max_noise_level=350)
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
