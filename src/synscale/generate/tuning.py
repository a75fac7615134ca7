"""How a pipeline runs where it runs: per-device defaults of the generation settings, and the tuned path.

Four settings decide a generator's speed: `dtype`, `batch_size`, `compile` and `channels_last`. Each may be
"auto" (`batch_size` 0), resolved by the device that generates (`DEFAULTS`): on a GPU half precision
(bfloat16), batches of 64 across prompts and classes, channels-last memory and `torch.compile` of the
denoiser and of the decoder; on a CPU float32, batches of 16 and neither of the others (compiling costs
more than it saves on the built-in models, and the built-in latent family has its own CPU tuning,
synscale.generate.builtin.tune_for_cpu). The resolved values are part of a set's identity (they change
its floats), except `compile` and `channels_last` when off: a set made before they existed keeps its id.

Compiled modules see static shapes: every call is padded to the run's batch size with copies of its last
prompt and seed (their images dropped), so the smaller last batch of a shard never triggers a recompile.
Padding never changes an image's neighbours between runs: batches sit at fixed offsets (runner.py).
"""

from __future__ import annotations

from typing import Any

AUTO = "auto"
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": {"dtype": "bfloat16", "batch_size": 64, "compile": True, "channels_last": True},
    "cpu": {"dtype": "float32", "batch_size": 16, "compile": False, "channels_last": False},
}
TUNED = tuple(DEFAULTS["cpu"])
DENOISERS = ("unet", "transformer")  # a pipeline's denoiser (Stable Diffusion, IF: unet; aMUSEd, PixArt: transformer)
DECODERS = ("vae", "vqvae")  # its latent decoder, if any (pixel diffusion has none)


def generation_device(executor: str = "local", ray_gpus: float = 0.0) -> str:
    """The kind of device that generates: a Ray actor with GPUs, or this process's."""
    if executor == "ray":
        return "cuda" if ray_gpus > 0 else "cpu"
    from synscale.device import resolve_device

    return resolve_device("auto")


def resolve(settings: dict[str, Any], device: str) -> dict[str, Any]:
    """`settings` with dtype/batch_size/compile/channels_last set to `device`'s defaults where "auto" (or 0)."""
    base = DEFAULTS["cuda" if device.startswith("cuda") else "cpu"]
    out = dict(settings)
    for key, default in base.items():
        if key in out and out[key] in (AUTO, 0, None) and not isinstance(out[key], bool):
            out[key] = default
    return out


def settings_of(g: Any) -> dict[str, Any]:
    """A generation config's (synscale.config.GenerationConfig) tuned settings, resolved for the device that
    will generate it."""
    return resolve({k: getattr(g, k) for k in TUNED}, generation_device(g.executor, g.ray_gpus))


def identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings as a set's identity records them: `compile` / `channels_last` only when on."""
    return {k: v for k, v in resolved.items() if not (k in ("compile", "channels_last") and v is False)}


def tune_pipeline(pipe: Any, compile: bool, channels_last: bool) -> list[str]:
    """Channels-last memory and/or `torch.compile` (static shapes) for the pipeline's denoiser and decoder, in
    place. Returns what was done, e.g. ["unet: channels-last", "unet: compiled", "vae.decode: compiled"]."""
    import torch

    done = []
    for name in DENOISERS + DECODERS:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        if channels_last:
            module.to(memory_format=torch.channels_last)
            done.append(f"{name}: channels-last")
        if compile and name in DENOISERS:
            setattr(pipe, name, torch.compile(module, dynamic=False))
            done.append(f"{name}: compiled")
        elif compile:  # the decoder: only its decode() runs at sampling time
            module.decode = torch.compile(module.decode, dynamic=False)
            done.append(f"{name}.decode: compiled")
    return done


def pad_batch(prompts: list[str], seeds: list[int], size: int) -> tuple[list[str], list[int], int]:
    """Prompts and seeds padded to `size` with copies of the last (static shapes for compiled modules); returns
    them and how many are real."""
    n = len(prompts)
    if not size or n >= size:
        return prompts, seeds, n
    return prompts + [prompts[-1]] * (size - n), seeds + [seeds[-1]] * (size - n), n
