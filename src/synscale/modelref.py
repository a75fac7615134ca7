"""What a `model` key or `--model` flag names: `builtin:<family>[@<weights dir>]` (synscale's own families; the
shipped weights where no directory is given), or a diffusers pipeline (a directory, or a hub id). One parser for
every place that asks (light: no torch, no diffusers)."""

from __future__ import annotations

BUILTIN = "builtin:"


def builtin_family(model: str) -> tuple[str, str] | None:
    """(family, weights directory or "") of `builtin:<family>[@<weights>]`; None for any other model."""
    if not model.startswith(BUILTIN):
        return None
    family, _, weights = model[len(BUILTIN):].partition("@")
    return family, weights


def is_builtin(model: str) -> bool:
    return builtin_family(model) is not None
