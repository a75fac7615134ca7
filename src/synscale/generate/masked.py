"""Batched masked-token sampling (aMUSEd / Muse) with one random stream per image.

diffusers' `AmusedPipeline` takes a single `torch.Generator` for its whole batch, so an image would depend
on which images shared its batch; synscale used to call it once per image. This loop reuses the
pipeline's parts (text encoder, transformer, scheduler, VQ decoder) and runs the transformer and the
decoder on the whole batch, but takes each image's random draws (the token sampling and the Gumbel noise
of the re-masking) from that image's own generator, exactly as a one-image pipeline call would: the same
images as the per-image calls (tests/test_builtin.py), many times faster.

The scheduler's step runs once per sampling step for the whole batch (`batched_step`): each image's draws are
taken from its generator first, in the order and with the shapes a one-image `AmusedScheduler.step` takes them
(`torch.multinomial` of one sample is the exponential race argmax(p / q), q ~ Exp(1) of the probabilities'
shape; the re-masking noise is uniform of the confidences' shape), and everything else is one tensor op over
the batch, with no wait on the device (the scheduler's step looks its timestep up with `nonzero()` and compares
it with 0 on the host; here the loop's index says both). `per_image_step = True` keeps the scheduler's own
step, image by image (the benchmark's "before").
"""

from __future__ import annotations

from typing import Any

import numpy as np


class MaskedTokenSampler:
    """Samples an `AmusedPipeline` in batches; prompt encodings are cached per prompt (each encoded alone,
    as the one-image call encodes it), at most `cache_bytes` of them."""

    def __init__(self, pipe: Any, device: str, cache_bytes: int = 1 << 30, per_image_step: bool = False) -> None:
        from synscale.lru import LRU

        self.pipe, self.device, self.per_image_step = pipe, device, per_image_step
        self._embeds: LRU[str, tuple[Any, Any]] = LRU(cache_bytes, cost=lambda e: sum(t.numel() * t.element_size()
                                                                                     for t in e))

    def _encode(self, prompt: str) -> tuple[Any, Any]:
        """The prompt's (pooled, hidden) text embeddings, from a cache of at most `cache_bytes`."""
        hit = self._embeds.get(prompt)
        if hit is None:
            p = self.pipe
            ids = p.tokenizer([prompt], return_tensors="pt", padding="max_length", truncation=True,
                              max_length=p.tokenizer.model_max_length).input_ids.to(self.device)
            out = p.text_encoder(ids, return_dict=True, output_hidden_states=True)
            hit = (out.text_embeds, out.hidden_states[-2])
            self._embeds.put(prompt, hit)
        return hit

    def __call__(self, prompts: list[str], seeds: list[int], guidance_scale: float, steps: int,
                 aesthetic_score: int = 6, crop: tuple[int, int] = (0, 0), temperature: Any = (2, 0)) -> np.ndarray:
        """Images as float32 NHWC in [0, 1] (what the pipeline returns with output_type="np")."""
        import torch

        p, dev = self.pipe, self.device
        gens = [torch.Generator(dev).manual_seed(int(s)) for s in seeds]
        n = len(prompts)
        with torch.inference_mode():
            enc = [self._encode(q) for q in prompts]
            pooled = torch.cat([e[0] for e in enc])
            hidden = torch.cat([e[1] for e in enc])
            cfg = guidance_scale > 1.0
            if cfg:
                neg_pooled, neg_hidden = self._encode("")
                pooled = torch.cat([neg_pooled.expand(n, -1), pooled])
                hidden = torch.cat([neg_hidden.expand(n, *neg_hidden.shape[1:]), hidden])
            size = p.transformer.config.sample_size * p.vae_scale_factor
            micro = torch.tensor([size, size, crop[0], crop[1], aesthetic_score], device=dev, dtype=hidden.dtype)
            micro = micro.unsqueeze(0).expand(2 * n if cfg else n, -1)
            side = size // p.vae_scale_factor
            latents = torch.full((n, side, side), p.scheduler.config.mask_token_id, dtype=torch.long, device=dev)
            p.scheduler.set_timesteps(steps, temperature, dev)
            for k, timestep in enumerate(p.scheduler.timesteps):
                logits = p.transformer(torch.cat([latents] * 2) if cfg else latents, micro_conds=micro,
                                       pooled_text_emb=pooled, encoder_hidden_states=hidden)
                if cfg:
                    uncond, cond = logits.chunk(2)
                    logits = uncond + guidance_scale * (cond - uncond)
                if self.per_image_step:
                    latents = torch.cat([p.scheduler.step(model_output=logits[i:i + 1], timestep=timestep,
                                                          sample=latents[i:i + 1], generator=gens[i]).prev_sample
                                         for i in range(n)])
                else:
                    latents = batched_step(p.scheduler, logits, latents, k, gens)
            out = p.vqvae.decode(latents, force_not_quantize=True,
                                 shape=(n, side, side, p.vqvae.config.latent_channels)).sample.clip(0, 1)
            return p.image_processor.postprocess(out, "np")


def batched_step(scheduler: Any, logits: Any, sample: Any, k: int, gens: list[Any]) -> Any:
    """`AmusedScheduler.step` at the k-th of its timesteps for a batch (logits (B, V, H, W), sample (B, H, W)),
    image i drawing from gens[i] exactly as a one-image step does; returns the next sample (B, H, W)."""
    import math

    import torch

    b, v, h, w = logits.shape
    mask_id = scheduler.config.mask_token_id
    sample = sample.reshape(b, h * w)
    probs = logits.reshape(b, v, h * w).permute(0, 2, 1).softmax(dim=-1)
    unknown = sample == mask_id
    device, gen_device = probs.device, gens[0].device
    p = probs.to(gen_device)
    if p.device.type == "cpu" and p.dtype != torch.float32:
        p = p.float()  # as the scheduler: multinomial has no CPU half precision
    race = torch.empty_like(p)
    for i, g in enumerate(gens):  # torch.multinomial(p_i, 1, generator=g) is argmax(p_i / Exp(1)) of g's draws
        race[i].exponential_(1, generator=g)
    pred = (p / race).argmax(dim=-1).to(device)
    pred = torch.where(unknown, pred, sample)
    steps = len(scheduler.timesteps)
    if k == steps - 1:  # timestep 0
        return pred.reshape(b, h, w)
    step_idx = torch.tensor([[k]], device=device)
    ratio = (step_idx + 1) / steps
    if scheduler.config.masking_schedule == "cosine":
        mask_ratio = torch.cos(ratio * math.pi / 2)
    else:
        mask_ratio = 1 - ratio
    mask_len = (h * w * mask_ratio).floor()
    mask_len = torch.min(unknown.sum(dim=-1, keepdim=True) - 1, mask_len)
    mask_len = torch.max(torch.tensor([1], device=device), mask_len)
    selected = torch.gather(probs, -1, pred[:, :, None])[:, :, 0]
    selected = torch.where(unknown, selected, torch.finfo(selected.dtype).max)
    noise = torch.empty((b, h * w), dtype=selected.dtype, device=gen_device)
    for i, g in enumerate(gens):  # the scheduler's gumbel_noise of a (1, H*W) tensor, per image
        noise[i : i + 1] = torch.zeros((1, h * w), dtype=selected.dtype, device=gen_device).uniform_(0, 1, generator=g)
    gumbel = -torch.log((-torch.log(noise.to(device).clamp(1e-20))).clamp(1e-20))
    confidence = torch.log(selected.clamp(1e-20)) + scheduler.temperatures[step_idx] * gumbel
    cut = torch.gather(torch.sort(confidence, dim=-1).values, 1, mask_len.long())
    out = torch.where(confidence < cut, mask_id, pred)
    return out.reshape(b, h, w)
