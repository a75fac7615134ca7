"""The cores this process may use, and the one resolver of a device setting ("auto", "cpu", "cuda", "cuda:1", ...) for training, metrics, captioners
and generators: "auto" is a GPU where torch sees one, else the CPU; a GPU asked for where there is none is one
line (a ConfigError), not CUDA's traceback later. Light: torch is imported when a setting is resolved."""

from __future__ import annotations

from synscale.errors import ConfigError


def resolve_device(name: str = "auto", local_rank: int | None = None) -> str:
    """The device `name` means here, as torch names it; `local_rank`: the GPU of a process of a torchrun."""
    import torch

    cuda = torch.cuda.is_available()
    if name.startswith("cuda") and not cuda:
        raise ConfigError(f"device {name!r}, but torch sees no GPU here (CUDA_VISIBLE_DEVICES, the driver, a CPU-only "
                          "torch); set the device to auto or cpu")
    if name in ("auto", "cuda"):
        if not cuda:
            return "cpu"
        return f"cuda:{local_rank}" if local_rank is not None else "cuda"
    return name


def cores() -> int:
    """The CPU cores this process may use (its affinity where the system says, else the machine's)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
