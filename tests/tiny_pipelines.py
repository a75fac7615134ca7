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
