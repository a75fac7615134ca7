"""Nested, class-balanced subsets.

Every sample gets a fixed rank within its class: the order of sha256(f"{seed}:{key}"), which depends
only on the sample's key, not on how the set was written. The subset of size D takes the first n_c(D)
samples of each class, with n_c(D) = D // C, plus one for the first D % C classes. n_c(D) never
decreases as D grows, so every smaller scale is inside every larger one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def per_class_counts(scale: int, num_classes: int) -> np.ndarray:
    base, extra = divmod(scale, num_classes)
    return np.array([base + (1 if c < extra else 0) for c in range(num_classes)])


def class_ranks(manifest: Any, seed: int) -> Any:
    """A copy of the manifest with `rank`, the sample's fixed position within its class."""
    df = manifest[["key", "label"]].copy()
    df["_h"] = [hashlib.sha256(f"{seed}:{k}".encode()).hexdigest() for k in df["key"]]
    df = df.sort_values(["label", "_h"], kind="stable")
    df["rank"] = df.groupby("label").cumcount()
    return df.drop(columns="_h")


def subset_keys(manifest: Any, scale: int, num_classes: int, seed: int = 0) -> list[str]:
    """Keys of the class-balanced subset of size `scale`, sorted by (label, rank)."""
    ranked = class_ranks(manifest, seed)
    need = per_class_counts(scale, num_classes)
    have = ranked.groupby("label").size().reindex(range(num_classes), fill_value=0).to_numpy()
    short = np.flatnonzero(have < need)
    if len(short):
        c = int(short[0])
        from synscale.schema import ConfigError

        raise ConfigError(
            f"scale {scale} needs {need[c]} samples of class {c} but the set has {have[c]}; "
            f"the largest balanced scale of this set is {int(have.min()) * num_classes}: lower the scales"
        )
    keep = ranked["rank"].to_numpy() < need[ranked["label"].to_numpy()]
    return ranked.loc[keep, "key"].tolist()
