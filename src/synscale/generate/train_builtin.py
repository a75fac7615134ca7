"""`synscale generator train`: train a built-in family on real images with captions from every prompt
strategy, so that every strategy is in the model's vocabulary.

Every family is conditioned on the frozen MiniLM embeddings of a prompt drawn, for each training image,
from its class's pool (all strategies; in-captions from the attribute captioner); 10% of conditions are
the empty prompt (conditioning dropout), which is what classifier-free guidance needs at sampling time.
The saved denoiser / transformer is the exponential moving average of its weights.

- latent-diffusion: (1) the autoencoder (L1 reconstruction + 1e-6 KL), (2) the latents' scale
  (1 / std), (3) the UNet (epsilon prediction, uniform timesteps, cosine noise schedule) on latents.
- pixel-diffusion: the UNet alone, the same objective on 32 px pixels in [-1, 1].
- masked-token: (1) the VQ tokenizer (L1 reconstruction + commitment loss, pixels in [0, 1] as aMUSEd
  decodes them), (2) the transformer: a cosine-scheduled fraction of tokens replaced by [MASK], cross
  entropy on the masked ones (MaskGIT / Muse).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from synscale.errors import ConfigError
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


class PromptBank:
    """The family's MiniLM embeddings of every pooled prompt, computed once; a random prompt of the right class
    per training image, or the empty prompt with probability UNCOND_PROB (conditioning dropout)."""

    def __init__(self, pool: list[list[str]], family: str) -> None:
        import torch

        tok, enc = builtin.minilm()
        flat = [p for ps in pool for p in ps]
        self.offsets = np.cumsum([0] + [len(ps) for ps in pool])
        chunks = [_as_tuple(builtin.encode_text(tok, enc, flat[i : i + 256], family)) for i in range(0, len(flat), 256)]
        self.emb = tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))
        self.uncond = tuple(e[0] for e in _as_tuple(builtin.encode_text(tok, enc, [""], family)))

    def sample(self, classes: np.ndarray, rng: np.random.Generator) -> tuple[Any, ...]:
        import torch

        lo, hi = self.offsets[classes], self.offsets[classes + 1]
        pick = torch.from_numpy(lo + (rng.random(len(classes)) * (hi - lo)).astype(int))
        drop = torch.from_numpy(rng.random(len(classes)) < UNCOND_PROB)
        return tuple(torch.where(drop.view(-1, *[1] * (e.dim() - 1)), u[None], e[pick])
                     for e, u in zip(self.emb, self.uncond, strict=True))


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return x if isinstance(x, tuple) else (x,)


def _loop(params: Any, steps: int, lr: float, desc: str, progress: bool, loss_fn: Any, ema_of: Any = None,
          ema_decay: float = 0.999) -> None:
    """AdamW with the training engine's warm-up + cosine rule (synscale.train.schedule.lr_at) on
    `loss_fn(step)`; keeps an EMA of `ema_of`'s weights and copies it in at the end."""
    import torch
    from diffusers.training_utils import EMAModel

    from synscale.train.schedule import lr_at

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = EMAModel(ema_of.parameters(), decay=ema_decay, use_ema_warmup=True, power=0.75) if ema_of is not None else None
    for step in bar(range(steps), desc=desc, unit="step", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, steps, max(1, steps // 20))
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.step(ema_of.parameters())
    if ema is not None:
        ema.copy_to(ema_of.parameters())


def train_autoencoder(vae: Any, x: Any, steps: int, batch_size: int, lr: float, rng: np.random.Generator,
                      progress: bool) -> Any:
    """AutoencoderKL: L1 reconstruction + 1e-6 KL; returns it in eval mode."""
    import torch

    vae.train()

    def loss(_: int) -> Any:
        xb = x[torch.from_numpy(rng.integers(0, len(x), batch_size))]
        post = vae.encode(xb).latent_dist
        return (vae.decode(post.sample()).sample - xb).abs().mean() + 1e-6 * post.kl().mean()

    _loop(vae.parameters(), steps, lr, "train autoencoder", progress, loss)
    return vae.eval()


def train_vq(vq: Any, x: Any, steps: int, batch_size: int, lr: float, rng: np.random.Generator, progress: bool) -> Any:
    """VQModel: L1 reconstruction + the quantizer's codebook/commitment loss; returns it in eval mode."""
    import torch

    vq.train()

    def loss(_: int) -> Any:
        xb = x[torch.from_numpy(rng.integers(0, len(x), batch_size))]
        quant, vq_loss, _ = vq.quantize(vq.encode(xb).latents)
        rec = vq.decoder(vq.post_quant_conv(quant))
        return (rec - xb).abs().mean() + vq_loss

    _loop(vq.parameters(), steps, lr, "train VQ tokenizer", progress, loss)
    return vq.eval()


def train_denoiser(unet: Any, targets: Any, labels: np.ndarray, bank: PromptBank, sched: Any, steps: int,
                   batch_size: int, lr: float, rng: np.random.Generator, progress: bool = True) -> Any:
    """Epsilon prediction at uniform timesteps on (latents or pixels) `targets`; returns the EMA weights."""
    import torch

    unet.train()
    labels = np.asarray(labels)
    n_t = sched.config.num_train_timesteps

    def loss(_: int) -> Any:
        idx = rng.integers(0, len(targets), batch_size)
        (ctx,) = bank.sample(labels[idx], rng)
        z = targets[torch.from_numpy(idx)]
        noise = torch.randn_like(z)
        t = torch.randint(0, n_t, (batch_size,))
        pred = unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=ctx).sample[:, : z.shape[1]]
        return torch.nn.functional.mse_loss(pred, noise)

    _loop(unet.parameters(), steps, lr, "train denoiser", progress, loss, ema_of=unet)
    return unet.eval()


def train_token_transformer(transformer: Any, tokens: Any, labels: np.ndarray, bank: PromptBank, cfg: Any, steps: int,
                            batch_size: int, lr: float, rng: np.random.Generator, progress: bool = True) -> Any:
    """Masked-token prediction (cosine masking schedule, loss on masked tokens); returns the EMA weights."""
    import torch

    transformer.train()
    labels = np.asarray(labels)
    # what AmusedPipeline passes at sampling: width, height, crop (0, 0), aesthetic score 6
    micro = torch.tensor([[cfg.image_size, cfg.image_size, 0, 0, 6]], dtype=torch.float32)

    def loss(_: int) -> Any:
        idx = rng.integers(0, len(tokens), batch_size)
        pooled, hidden = bank.sample(labels[idx], rng)
        ids = tokens[torch.from_numpy(idx)]
        ratio = torch.cos(torch.rand(batch_size) * math.pi / 2).clamp(min=1e-3)
        mask = torch.rand(ids.shape) < ratio[:, None, None]
        inp = torch.where(mask, cfg.mask_token_id, ids)
        logits = transformer(inp, encoder_hidden_states=hidden, pooled_text_emb=pooled, micro_conds=micro.expand(batch_size, -1))
        ce = torch.nn.functional.cross_entropy(logits, ids, reduction="none")
        return (ce * mask).sum() / mask.sum().clamp(min=1)

    _loop(transformer.parameters(), steps, lr, "train transformer", progress, loss, ema_of=transformer)
    return transformer.eval()


def _load_captioned(dataset: str, data_root: str, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict]:
    from synscale.data.datasets import create_dataset
    from synscale.prompts.captioners import captions_per_class

    ds = create_dataset(dataset, data_root)
    samples = list(ds.samples("train"))[: limit or None]
    images = np.stack([s.image for s in samples])
    if images.ndim == 3:
        images = images[:, None]
    else:
        images = images.transpose(0, 3, 1, 2)
    labels = np.array([s.label for s in samples])
    captions = captions_per_class(ds, "train", "attributes", pool=200, seed=seed)
    return images, labels, ds.labels.names, captions


def train_family(family: str, out: str | Path, dataset: str = "fashion-mnist", data_root: str = "", limit: int = 0,
                 ae_steps: int | None = None, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 seed: int = 0, per_strategy: int = 20, progress: bool = True) -> Path:
    """Train `family` from scratch on `dataset`'s training split and save it to `out`. Deterministic given the
    seed and thread count. Defaults (None: steps, batch size, lr) are the ones the shipped weights used."""
    import torch

    defaults = TRAINING_DEFAULTS[family]
    ae_steps = defaults["ae_steps"] if ae_steps is None else ae_steps
    steps = defaults["steps"] if steps is None else steps
    lr = defaults["lr"] if lr is None else lr
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    images, labels, names, captions = _load_captioned(dataset, data_root, limit, seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = builtin.FAMILIES.get(family).config()
    parts = builtin.build_parts(family, cfg)
    bank = PromptBank(prompt_pool(names, dataset, captions, per_strategy, seed), family)
    if family == "latent-diffusion":
        x = _to_model_range(images, cfg.image_size)
        vae = train_autoencoder(parts["vae"], x, ae_steps, batch_size, lr, rng, progress)
        with torch.inference_mode():
            latents = torch.cat([vae.encode(x[i : i + 512]).latent_dist.mean for i in range(0, len(x), 512)])
        scale = float(1.0 / latents.std())
        cfg = replace(cfg, scaling_factor=scale)
        vae.register_to_config(scaling_factor=scale)
        train_denoiser(parts["unet"], latents * scale, labels, bank, builtin.noise_scheduler(cfg.train_timesteps), steps,
                       batch_size, lr, rng, progress)
    elif family == "pixel-diffusion":
        x = _to_model_range(images, cfg.image_size)
        train_denoiser(parts["unet"], x, labels, bank, builtin.noise_scheduler(cfg.train_timesteps), steps, batch_size,
                       lr, rng, progress)
    elif family == "masked-token":
        x = _to_model_range(images, cfg.image_size).add(1).div(2)
        vq = train_vq(parts["vqvae"], x, ae_steps, batch_size, lr, rng, progress)
        with torch.inference_mode():
            tokens = torch.cat([vq.quantize(vq.encode(x[i : i + 512]).latents)[2][2].view(len(x[i : i + 512]), -1)
                                for i in range(0, len(x), 512)])
        side = cfg.image_size // 2 ** (len(cfg.vq_channels) - 1)
        train_token_transformer(parts["transformer"], tokens.view(-1, side, side), labels, bank, cfg, steps, batch_size,
                                lr, rng, progress)
    else:
        raise ConfigError(f"unknown built-in family {family!r}; known: {', '.join(builtin.FAMILIES.names())}")
    meta = {"trained_on": dataset, "images": int(len(images)), "ae_steps": ae_steps, "steps": steps,
            "batch_size": batch_size, "lr": lr, "seed": seed, "prompts_per_strategy": per_strategy,
            "torch_threads": torch.get_num_threads(),
            "command": f"synscale generator train --family {family} --ae-steps {ae_steps} --steps {steps} "
                       f"--batch-size {batch_size} --lr {lr} --seed {seed} --per-strategy {per_strategy}"}
    return builtin.save(out, family, cfg, parts, meta)


# The settings that produced the shipped weights (`synscale generator train --family F` uses them).
# Sized for a 2-core CPU: latent-diffusion ~26 min, pixel-diffusion ~19 min, masked-token ~15 min.
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "latent-diffusion": {"ae_steps": 1000, "steps": 2500, "batch_size": 128, "lr": 1e-3},
    "pixel-diffusion": {"ae_steps": 0, "steps": 1000, "batch_size": 64, "lr": 1e-3},
    "masked-token": {"ae_steps": 600, "steps": 1500, "batch_size": 64, "lr": 1e-3},
}
