"""Decoded sets kept in memory for the length of a process (small images only): every scale's training
run and every evaluation of a study reads the same arrays once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.errors import DataError


class ArrayCache:
    """Decoded sets kept in memory for the length of a run (small images only)."""

    def __init__(self) -> None:
        self._sets: dict[Path, tuple[Any, Any, dict[str, int], Any]] = {}

    def get(self, set_dir: Path, keys: list[str] | None = None, captions: bool = False) -> tuple[Any, ...]:
        """(images, labels), or (images, labels, captions) of the set or of `keys` of it."""
        import numpy as np

        from synscale.data.shards import load_arrays, read_captions

        if set_dir not in self._sets:
            images, labels, all_keys = load_arrays(set_dir)
            texts = read_captions(set_dir)
            self._sets[set_dir] = (images, labels, {k: i for i, k in enumerate(all_keys)},
                                   None if texts is None else np.asarray(texts, dtype=object))
        images, labels, pos, texts = self._sets[set_dir]
        idx = slice(None) if keys is None else [pos[k] for k in keys]
        if not captions:
            return images[idx], labels[idx]
        if texts is None:
            raise DataError(f"{set_dir}: the set has no captions")
        return images[idx], labels[idx], texts[idx]
