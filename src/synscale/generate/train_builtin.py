"""`synscale generator train`: train a built-in family on real images with captions from every prompt
strategy, so that every strategy is in the model's vocabulary.

latent-diffusion: (1) the autoencoder (L1 reconstruction + 1e-6 KL), (2) the latents' scale (1 / std),
(3) the UNet (epsilon prediction, uniform timesteps, cosine noise schedule) on MiniLM token embeddings
of a prompt drawn for each image from its class's pool; 10% of conditions are the empty prompt
(conditioning dropout), which is what classifier-free guidance needs at sampling time.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from synscale.generate import builtin
from synscale.progress import bar

UNCOND_PROB = 0.1


def prompt_pool(class_names: tuple[str, ...], dataset: str, captions: dict[int, list[str]] | None,
                per_strategy: int, seed: int) -> list[list[str]]:
    """Per class, prompts from every strategy (in-captions only where captions are given)."""
    from synscale.labels import LabelSet
    from synscale.prompts.strategies import PROMPTS, make_context, make_prompts

    ctx = make_context(LabelSet(class_names), dataset, captions=captions)
    pool: list[list[str]] = [[] for _ in class_names]
    for name in PROMPTS.names():
        if name == "in-captions" and not captions:
            continue
        df = make_prompts(name, ctx, per_strategy, seed)
        for c, text in zip(df.class_index, df.prompt, strict=True):
            pool[c].append(text)
    return pool


def _to_model_range(images: np.ndarray, size: int) -> Any:
    """uint8 (N, 1, H, W) -> float (N, 1, size, size) in [-1, 1] (bicubic resize, as sampling resizes back)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return x


def _cosine_lr(opt: Any, step: int, total: int, lr: float, warmup: int) -> None:
    value = lr * (step + 1) / warmup if step < warmup else lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for g in opt.param_groups:
        g["lr"] = value


def train_latent_diffusion(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], out: str | Path,
                           dataset: str = "fashion-mnist", captions: dict[int, list[str]] | None = None,
                           vae_steps: int = 1000, unet_steps: int = 5000, batch_size: int = 128, lr: float = 1e-3,
                           seed: int = 0, per_strategy: int = 20, progress: bool = True) -> Path:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = builtin.LatentDiffusionConfig()
    vae, unet = builtin.build_parts(cfg)
    x = _to_model_range(images, cfg.image_size)

    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    for step in bar(range(vae_steps), desc="train autoencoder", unit="step", disable=not progress):
        _cosine_lr(opt, step, vae_steps, lr, max(1, vae_steps // 20))
        xb = x[torch.from_numpy(rng.integers(0, len(x), batch_size))]
        post = vae.encode(xb).latent_dist
        loss = (vae.decode(post.sample()).sample - xb).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    vae.eval()
    with torch.inference_mode():
        latents = torch.cat([vae.encode(x[i : i + 512]).latent_dist.mean for i in range(0, len(x), 512)])
    scale = float(1.0 / latents.std())
    cfg = replace(cfg, scaling_factor=scale)
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale

    tok, enc = builtin.minilm()
    pool = prompt_pool(class_names, dataset, captions, per_strategy, seed)
    flat = [p for ps in pool for p in ps]
    offsets = np.cumsum([0] + [len(ps) for ps in pool])
    emb = torch.cat([builtin.encode_text(tok, enc, flat[i : i + 256]) for i in range(0, len(flat), 256)])
    uncond = builtin.encode_text(tok, enc, [""])[0]
    sched = builtin.noise_scheduler(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    unet.train()
    labels_t = np.asarray(labels)
    for step in bar(range(unet_steps), desc="train UNet", unit="step", disable=not progress):
        _cosine_lr(opt, step, unet_steps, lr, max(1, unet_steps // 20))
        idx = rng.integers(0, len(latents), batch_size)
        c = labels_t[idx]
        pick = offsets[c] + (rng.random(batch_size) * (offsets[c + 1] - offsets[c])).astype(int)
        ctx = emb[torch.from_numpy(pick)]
        drop = torch.from_numpy(rng.random(batch_size) < UNCOND_PROB)
        ctx = torch.where(drop[:, None, None], uncond[None], ctx)
        z = latents[torch.from_numpy(idx)]
        noise = torch.randn_like(z)
        t = torch.randint(0, cfg.train_timesteps, (batch_size,))
        loss = torch.nn.functional.mse_loss(unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=ctx).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    meta = {"trained_on": dataset, "images": int(len(images)), "vae_steps": vae_steps, "unet_steps": unet_steps,
            "batch_size": batch_size, "lr": lr, "seed": seed, "prompts_per_strategy": per_strategy}
    return builtin.save(out, cfg, vae, unet, meta)
